#!/usr/bin/python3
"""The README's "Serving API" examples, run for real against the real normserve binary.

Starts `normserve` on loopback serving the embedded repository (models/repository, what
the README's run command serves), then

- runs the README's ```python block as it is (only `localhost:8001` becomes the test
  server's address) with the generated stubs on PYTHONPATH, and compares what it prints
  with the README's ```text block that follows it;
- runs the README's ```sh block containing `grpcurl` with bash, `grpcurl` on PATH being a
  wrapper that records every invocation: the real grpcurl when it is installed, else
  this file's stand-in (`--as-grpcurl`), which does what grpcurl does and nothing more:
  descriptors from server reflection only (grpc.reflection.v1alpha, no compiled-in API
  stubs), `-d` JSON parsed and answers printed with protobuf's JSON mapping, the method
  called by its full name. Each invocation's output is then checked.

Environment (set by CTest): NORMSERVE_BINARY, NORMSERVE_SOURCE_DIR, NORMSERVE_PY_STUBS
(generated API stubs, for the Python example only), PYTHONPATH with the reflection stubs.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

README_ADDRESS = "localhost:8001"
SECTION = "## Serving API"

# -------------------------------------------------------------------------------------
# grpcurl stand-in
# -------------------------------------------------------------------------------------

# Go's codes.Code.String(), which grpcurl prints.
GO_CODE_NAMES = {
    "OK": "OK", "CANCELLED": "Canceled", "UNKNOWN": "Unknown",
    "INVALID_ARGUMENT": "InvalidArgument", "DEADLINE_EXCEEDED": "DeadlineExceeded",
    "NOT_FOUND": "NotFound", "ALREADY_EXISTS": "AlreadyExists",
    "PERMISSION_DENIED": "PermissionDenied", "RESOURCE_EXHAUSTED": "ResourceExhausted",
    "FAILED_PRECONDITION": "FailedPrecondition", "ABORTED": "Aborted",
    "OUT_OF_RANGE": "OutOfRange", "UNIMPLEMENTED": "Unimplemented", "INTERNAL": "Internal",
    "UNAVAILABLE": "Unavailable", "DATA_LOSS": "DataLoss",
    "UNAUTHENTICATED": "Unauthenticated",
}
STATUS_CODE_OFFSET = 64  # grpcurl exits 64 + the gRPC code on an RPC error


class Reflection:
    """Descriptors fetched from the server's reflection service into a fresh pool."""

    def __init__(self, channel):
        import reflection_v1alpha_pb2 as refl
        import reflection_v1alpha_pb2_grpc as refl_grpc
        from google.protobuf import descriptor_pool
        self._refl = refl
        self._stub = refl_grpc.ServerReflectionStub(channel)
        self.pool = descriptor_pool.DescriptorPool()
        self._added = set()

    def _ask(self, **request):
        responses = list(self._stub.ServerReflectionInfo(
            iter([self._refl.ServerReflectionRequest(**request)]), timeout=10))
        response = responses[0]
        if response.WhichOneof("message_response") == "error_response":
            raise LookupError(response.error_response.error_message)
        return response

    def services(self):
        return sorted(s.name for s in self._ask(list_services="")
                      .list_services_response.service)

    def _add_files(self, serialized):
        from google.protobuf import descriptor_pb2
        files = {}
        for blob in serialized:
            f = descriptor_pb2.FileDescriptorProto.FromString(blob)
            files[f.name] = f

        def add(name):
            if name in self._added:
                return
            if name not in files:
                more = self._ask(file_by_filename=name).file_descriptor_response
                for blob in more.file_descriptor_proto:
                    f = descriptor_pb2.FileDescriptorProto.FromString(blob)
                    files.setdefault(f.name, f)
            for dep in files[name].dependency:
                add(dep)
            self.pool.Add(files[name])
            self._added.add(name)

        for name in list(files):
            add(name)

    def load_symbol(self, symbol):
        response = self._ask(file_containing_symbol=symbol)
        self._add_files(response.file_descriptor_response.file_descriptor_proto)

    def service(self, name):
        self.load_symbol(name)
        return self.pool.FindServiceByName(name)

    def message_class(self, descriptor):
        from google.protobuf import message_factory
        if hasattr(message_factory, "GetMessageClass"):
            return message_factory.GetMessageClass(descriptor)
        return message_factory.MessageFactory(self.pool).GetPrototype(descriptor)


def describe_service(service):
    lines = [f"{service.full_name} is a service:", f"service {service.name} {{"]
    for m in service.methods:
        lines.append(f"  rpc {m.name} ( .{m.input_type.full_name} ) returns "
                     f"( .{m.output_type.full_name} );")
    lines.append("}")
    return "\n".join(lines)


def describe_message(message):
    from google.protobuf.descriptor import FieldDescriptor as F
    scalar = {v: k[len("TYPE_"):].lower() for k, v in vars(F).items()
              if k.startswith("TYPE_") and isinstance(v, int)}
    lines = [f"{message.full_name} is a message:", f"message {message.name} {{"]
    for f in message.fields:
        if f.message_type is not None:
            type_name = "." + f.message_type.full_name
        elif f.enum_type is not None:
            type_name = "." + f.enum_type.full_name
        else:
            type_name = scalar[f.type]
        label = "repeated " if f.label == F.LABEL_REPEATED else ""
        lines.append(f"  {label}{type_name} {f.name} = {f.number};")
    lines.append("}")
    return "\n".join(lines)


def grpcurl_main(argv):
    """The subset of grpcurl the README uses; anything else is refused, so the README
    cannot drift to flags this stand-in would silently ignore."""
    import grpc
    from google.protobuf import json_format

    plaintext, data, positional = False, None, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-plaintext", "--plaintext"):
            plaintext = True
        elif arg in ("-d", "--d"):
            i += 1
            data = argv[i]
        elif arg.startswith("-d=") or arg.startswith("--d="):
            data = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            print(f"grpcurl stand-in: flag {arg} not supported", file=sys.stderr)
            return 2
        else:
            positional.append(arg)
        i += 1
    if not plaintext:
        print("grpcurl stand-in: only -plaintext is supported", file=sys.stderr)
        return 2
    if not positional:
        print("Too few arguments.", file=sys.stderr)
        return 2
    address, rest = positional[0], positional[1:]
    channel = grpc.insecure_channel(address)
    reflection = Reflection(channel)
    try:
        if not rest or rest[0] == "list":
            if len(rest) <= 1:
                print("\n".join(reflection.services()))
            else:
                service = reflection.service(rest[1])
                print("\n".join(m.full_name for m in service.methods))
            return 0
        if rest[0] == "describe":
            symbol = rest[1]
            reflection.load_symbol(symbol)
            try:
                print(describe_service(reflection.pool.FindServiceByName(symbol)))
            except KeyError:
                print(describe_message(reflection.pool.FindMessageTypeByName(symbol)))
            return 0
        method_name = rest[0]
        if "/" in method_name:
            service_name, method = method_name.split("/", 1)
        else:
            service_name, method = method_name.rsplit(".", 1)
        method_desc = reflection.service(service_name).FindMethodByName(method)
        if method_desc is None:
            print(f"Failed to resolve symbol \"{method_name}\"", file=sys.stderr)
            return 1
        request_class = reflection.message_class(method_desc.input_type)
        response_class = reflection.message_class(method_desc.output_type)
        if data == "@":
            data = sys.stdin.read()
        request = request_class()
        if data:
            json_format.Parse(data, request)
        call = channel.unary_unary(f"/{service_name}/{method}",
                                   request_serializer=request_class.SerializeToString,
                                   response_deserializer=response_class.FromString)
        try:
            response = call(request, timeout=30)
        except grpc.RpcError as e:
            print(f"ERROR:\n  Code: {GO_CODE_NAMES[e.code().name]}\n  Message: {e.details()}",
                  file=sys.stderr)
            return STATUS_CODE_OFFSET + e.code().value[0]
        print(json_format.MessageToJson(response, indent=2))
        return 0
    except LookupError as e:
        print(f"Failed to resolve symbol: {e}", file=sys.stderr)
        return 1
    finally:
        channel.close()


def wrapper_main(argv):
    """`grpcurl` on the example's PATH: runs the real one or the stand-in and appends
    {argv, stdout, stderr, code} to $README_GRPCURL_LOG."""
    import io
    import contextlib
    real = os.environ.get("README_GRPCURL_REAL", "")
    stdin = sys.stdin.read() if "@" in argv else ""
    if real:
        p = subprocess.run([real] + argv, input=stdin.encode(), capture_output=True)
        out, err, code = p.stdout.decode(), p.stderr.decode(), p.returncode
    else:
        sys.stdin = io.StringIO(stdin)
        out_buf, err_buf = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out_buf), contextlib.redirect_stderr(err_buf):
            code = grpcurl_main(argv)
        out, err = out_buf.getvalue(), err_buf.getvalue()
    sys.stdout.write(out)
    sys.stderr.write(err)
    with open(os.environ["README_GRPCURL_LOG"], "a") as log:
        log.write(json.dumps({"argv": argv, "stdout": out, "stderr": err, "code": code}) + "\n")
    return code


# -------------------------------------------------------------------------------------
# README parsing
# -------------------------------------------------------------------------------------

def serving_section(readme_text):
    start = readme_text.index(SECTION + "\n")
    end = readme_text.find("\n## ", start + len(SECTION))
    return readme_text[start:end if end >= 0 else len(readme_text)]


def code_blocks(text):
    """(language, body) of every fenced block, in order."""
    return [(m.group(1), m.group(2))
            for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M)]


def grpcurl_commands(sh_block):
    """The grpcurl invocations of a shell block, continuation lines joined."""
    joined = sh_block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip().startswith("grpcurl ")]


# -------------------------------------------------------------------------------------
# The test
# -------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ReadmeExamplesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import grpc
        import reflection_v1alpha_pb2 as refl
        import reflection_v1alpha_pb2_grpc as refl_grpc
        source = os.environ["NORMSERVE_SOURCE_DIR"]
        with open(os.path.join(source, "README.md")) as f:
            cls.section = serving_section(f.read())
        cls.blocks = code_blocks(cls.section)
        cls.port = free_port()
        cls.address = f"127.0.0.1:{cls.port}"
        cls.log = tempfile.TemporaryFile()
        cls.proc = subprocess.Popen(
            [os.environ["NORMSERVE_BINARY"], "--host=127.0.0.1", f"--port={cls.port}",
             "--metrics_port=-1",
             f"--model_repository={os.path.join(source, 'models/repository')}"],
            stdout=cls.log, stderr=cls.log)
        # Ready when reflection answers and tiny_bn is served (health SERVING).
        channel = grpc.insecure_channel(cls.address)
        stub = refl_grpc.ServerReflectionStub(channel)
        check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                    request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)
        deadline = time.time() + 120
        while True:
            try:
                list(stub.ServerReflectionInfo(
                    iter([refl.ServerReflectionRequest(list_services="")]), timeout=2))
                if check(b"\x0a\x07tiny_bn", timeout=2) == b"\x08\x01":
                    break
            except grpc.RpcError:
                pass
            if cls.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("normserve did not become ready:\n" + cls.server_log())
            time.sleep(0.1)
        channel.close()

    @classmethod
    def server_log(cls):
        cls.log.seek(0)
        return cls.log.read().decode(errors="replace")

    @classmethod
    def tearDownClass(cls):
        cls.proc.send_signal(signal.SIGTERM)
        code = cls.proc.wait(timeout=60)
        assert code == 0, f"normserve exited {code} on SIGTERM:\n{cls.server_log()}"

    def localize(self, text):
        self.assertIn(README_ADDRESS, text)
        return text.replace(README_ADDRESS, self.address)

    # -- Python ------------------------------------------------------------------------

    def test_python_example_prints_what_the_readme_says(self):
        langs = [lang for lang, _ in self.blocks]
        self.assertEqual(langs.count("python"), 1, "one ```python block in " + SECTION)
        index = langs.index("python")
        code = self.blocks[index][1]
        self.assertEqual(self.blocks[index + 1][0], "text",
                         "the python block is followed by its output in a ```text block")
        expected = self.blocks[index + 1][1]
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "example.py")
            with open(path, "w") as f:
                f.write(self.localize(code))
            env = dict(os.environ, PYTHONPATH=os.environ["NORMSERVE_PY_STUBS"])
            p = subprocess.run([sys.executable, path], capture_output=True, env=env,
                               timeout=120, cwd=tmp)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        self.assertEqual(p.stdout.decode(), expected)

    # -- grpcurl -----------------------------------------------------------------------

    def run_grpcurl_block(self, real_grpcurl):
        blocks = [body for lang, body in self.blocks if lang == "sh" and "grpcurl " in body]
        self.assertEqual(len(blocks), 1, "one ```sh block with grpcurl in " + SECTION)
        block = blocks[0]
        commands = grpcurl_commands(block)
        with tempfile.TemporaryDirectory() as tmp:
            shim = os.path.join(tmp, "grpcurl")
            with open(shim, "w") as f:
                f.write(f"#!/bin/sh\nexec {sys.executable} {os.path.abspath(__file__)} "
                        "--as-grpcurl-wrapper \"$@\"\n")
            os.chmod(shim, 0o755)
            log = os.path.join(tmp, "grpcurl.jsonl")
            env = dict(os.environ, PATH=tmp + os.pathsep + os.environ.get("PATH", ""),
                       README_GRPCURL_LOG=log, README_GRPCURL_REAL=real_grpcurl or "")
            p = subprocess.run(["bash", "-c", self.localize(block)], capture_output=True,
                               env=env, timeout=300, cwd=tmp)
            with open(log) as f:
                runs = [json.loads(line) for line in f]
        self.assertEqual(len(runs), len(commands),
                         f"every grpcurl line ran once:\n{p.stdout.decode()}\n"
                         f"{p.stderr.decode()}")
        return runs

    def check_grpcurl_runs(self, runs):
        def ok_json(run):
            self.assertEqual(run["code"], 0, run)
            return json.loads(run["stdout"])

        def find(pred):
            found = [r for r in runs if pred(r["argv"])]
            self.assertTrue(found, f"no such grpcurl run in {runs}")
            return found

        # list
        (listing,) = find(lambda a: a[-1] == "list")
        self.assertEqual(listing["code"], 0, listing)
        services = listing["stdout"].split()
        for service in ("normserve.v1.InferenceService", "inference.GRPCInferenceService",
                        "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"):
            self.assertIn(service, services)
        # describe
        (described,) = find(lambda a: "describe" in a)
        self.assertEqual(described["code"], 0, described)
        self.assertIn("normserve.v1.InferenceService is a service:", described["stdout"])
        self.assertRegex(described["stdout"],
                         r"rpc Predict \( \.normserve\.v1\.PredictRequest \) returns "
                         r"\( \.normserve\.v1\.PredictResponse \);")
        # health
        (health,) = find(lambda a: a[-1] == "grpc.health.v1.Health/Check")
        self.assertEqual(ok_json(health), {"status": "SERVING"})
        # metadata, and the unknown model
        metadata_runs = find(lambda a: a[-1].endswith("/GetModelMetadata"))
        good = [r for r in metadata_runs if '"tiny_bn"' in " ".join(r["argv"])]
        bad = [r for r in metadata_runs if '"nope"' in " ".join(r["argv"])]
        self.assertEqual((len(good), len(bad)), (1, 1), metadata_runs)
        md = ok_json(good[0])
        self.assertEqual(md["modelSpec"]["name"], "tiny_bn")
        self.assertEqual(md["inputs"][0]["name"], "input")
        self.assertEqual(md["inputs"][0]["shape"], ["-1", "3", "8", "8"])
        self.assertEqual(md["outputs"][0]["shape"], ["-1", "10"])
        self.assertEqual(bad[0]["code"], STATUS_CODE_OFFSET + 5, bad[0])
        self.assertIn("Code: NotFound", bad[0]["stderr"])
        self.assertIn('model "nope"', bad[0]["stderr"])
        # Predict and ModelInfer on the same input give the same answer.
        (predict,) = find(lambda a: a[-1] == "normserve.v1.InferenceService/Predict")
        answer = ok_json(predict)
        self.assertEqual(answer["modelSpec"], {"name": "tiny_bn", "version": "1"})
        out = answer["outputs"][0]
        self.assertEqual((out["name"], out["dtype"], out["shape"]),
                         ("output", "DATA_TYPE_FP32", ["1", "10"]))
        self.assertEqual(len(out["floatData"]), 10)
        (infer,) = find(lambda a: a[-1] == "inference.GRPCInferenceService/ModelInfer")
        kserve = ok_json(infer)
        self.assertEqual((kserve["modelName"], kserve["modelVersion"]), ("tiny_bn", "1"))
        kout = kserve["outputs"][0]
        self.assertEqual((kout["name"], kout["datatype"], kout["shape"]),
                         ("output", "FP32", ["1", "10"]))
        for a, b in zip(out["floatData"], kout["contents"]["fp32Contents"]):
            self.assertAlmostEqual(a, b, places=5)
        # The README's shown answer starts with the real first value.
        shown = re.search(r'"floatData": \[\s*([-0-9.e]+)', self.section)
        self.assertIsNotNone(shown, "the README shows Predict's floatData")
        self.assertAlmostEqual(float(shown.group(1)), out["floatData"][0], places=4)

    def test_grpcurl_examples_through_reflection(self):
        self.check_grpcurl_runs(self.run_grpcurl_block(real_grpcurl=None))

    def test_grpcurl_examples_with_real_grpcurl(self):
        real = shutil.which("grpcurl")
        if real is None:
            self.skipTest("grpcurl is not installed (not packaged in Debian bookworm)")
        self.check_grpcurl_runs(self.run_grpcurl_block(real_grpcurl=real))

    def test_readme_parsing(self):
        block = 'grpcurl -plaintext -d \'{"a": 1}\' \\\n  localhost:8001 x.Y/Z\nvalues=1\n'
        self.assertEqual(grpcurl_commands(block),
                         ['grpcurl -plaintext -d \'{"a": 1}\'    localhost:8001 x.Y/Z'])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--as-grpcurl":
        sys.exit(grpcurl_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "--as-grpcurl-wrapper":
        sys.exit(wrapper_main(sys.argv[2:]))
    unittest.main(verbosity=2)
