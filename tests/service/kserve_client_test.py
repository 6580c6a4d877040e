#!/usr/bin/python3
"""KServe v2 conformance of the real normserve binary, seen from a Python grpcio client.

Starts `normserve` on loopback with a temporary repository holding tiny_bn and the
oracle model bn1d_head (exported by scripts/export_test_models.py with PyTorch reference
outputs), then checks liveness/readiness, metadata, ModelInfer with raw and typed
contents against the PyTorch outputs, the error codes of bad requests, reflection,
health and the Prometheus endpoint (with promtool when installed).

Environment (set by CTest): NORMSERVE_BINARY, NORMSERVE_PY_STUBS (generated stubs),
NORMSERVE_SOURCE_DIR, NORMSERVE_SERVICE_TESTDATA.
"""

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import grpc
import numpy as np

sys.path.insert(0, os.environ["NORMSERVE_PY_STUBS"])
from kserve import grpc_predict_v2_pb2 as pb  # noqa: E402
from kserve import grpc_predict_v2_pb2_grpc as pb_grpc  # noqa: E402
import reflection_v1alpha_pb2 as refl  # noqa: E402
import reflection_v1alpha_pb2_grpc as refl_grpc  # noqa: E402
from google.protobuf import descriptor_pb2  # noqa: E402

SOURCE = os.environ["NORMSERVE_SOURCE_DIR"]
TESTDATA = os.environ.get("NORMSERVE_SERVICE_TESTDATA", "")
ORACLE = os.path.join(TESTDATA, "bn1d_head")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def infer_input(name, shape, datatype="FP32"):
    return pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)


class KServeClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.repo = tempfile.mkdtemp(prefix="normserve_py_")
        for name in ("tiny_bn",):
            os.makedirs(os.path.join(cls.repo, name, "1"))
            shutil.copy(os.path.join(SOURCE, "models/repository", name, "1/model.onnx"),
                        os.path.join(cls.repo, name, "1/model.onnx"))
        cls.has_oracle = os.path.exists(os.path.join(ORACLE, "model.onnx"))
        if cls.has_oracle:
            os.makedirs(os.path.join(cls.repo, "bn1d_head", "1"))
            shutil.copy(os.path.join(ORACLE, "model.onnx"),
                        os.path.join(cls.repo, "bn1d_head/1/model.onnx"))
        cls.port, cls.metrics_port = free_port(), free_port()
        cls.log = tempfile.TemporaryFile()
        cls.proc = subprocess.Popen(
            [os.environ["NORMSERVE_BINARY"], "--host=127.0.0.1", f"--port={cls.port}",
             f"--metrics_port={cls.metrics_port}", f"--model_repository={cls.repo}",
             "--intra_op_threads=1"],
            stdout=cls.log, stderr=cls.log)
        cls.channel = grpc.insecure_channel(f"127.0.0.1:{cls.port}")
        cls.stub = pb_grpc.GRPCInferenceServiceStub(cls.channel)
        deadline = time.time() + 60
        while True:
            try:
                if cls.stub.ServerReady(pb.ServerReadyRequest(), timeout=1,
                                        wait_for_ready=True).ready:
                    break
            except grpc.RpcError:
                pass
            if cls.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("normserve did not become ready:\n" + cls.server_log())
            time.sleep(0.05)

    @classmethod
    def server_log(cls):
        cls.log.seek(0)
        return cls.log.read().decode(errors="replace")

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.proc.send_signal(signal.SIGTERM)
        code = cls.proc.wait(timeout=60)
        shutil.rmtree(cls.repo, ignore_errors=True)
        assert code == 0, f"normserve exited {code} on SIGTERM:\n{cls.server_log()}"

    # -- liveness, readiness, metadata -------------------------------------------------

    def test_live_and_ready(self):
        self.assertTrue(self.stub.ServerLive(pb.ServerLiveRequest()).live)
        self.assertTrue(self.stub.ServerReady(pb.ServerReadyRequest()).ready)
        self.assertTrue(self.stub.ModelReady(pb.ModelReadyRequest(name="tiny_bn")).ready)
        self.assertTrue(
            self.stub.ModelReady(pb.ModelReadyRequest(name="tiny_bn", version="1")).ready)
        self.assertFalse(
            self.stub.ModelReady(pb.ModelReadyRequest(name="tiny_bn", version="2")).ready)
        self.assertFalse(self.stub.ModelReady(pb.ModelReadyRequest(name="nope")).ready)

    def test_server_metadata(self):
        md = self.stub.ServerMetadata(pb.ServerMetadataRequest())
        self.assertEqual(md.name, "normserve")
        self.assertRegex(md.version, r"^\d+\.\d+\.\d+$")

    def test_model_metadata(self):
        md = self.stub.ModelMetadata(pb.ModelMetadataRequest(name="tiny_bn"))
        self.assertEqual(md.name, "tiny_bn")
        self.assertEqual(list(md.versions), ["1"])
        self.assertEqual(md.inputs[0].name, "input")
        self.assertEqual(md.inputs[0].datatype, "FP32")
        self.assertEqual(list(md.inputs[0].shape), [-1, 3, 8, 8])
        self.assertEqual(list(md.outputs[0].shape), [-1, 10])

    # -- inference against the PyTorch oracle --------------------------------------------

    def oracle(self):
        if not self.has_oracle:
            self.skipTest("no oracle export in NORMSERVE_SERVICE_TESTDATA")
        x = np.load(os.path.join(ORACLE, "input_b1.npy")).astype(np.float32)
        y = np.load(os.path.join(ORACLE, "output_b1.npy")).astype(np.float32)
        return x, y

    def test_infer_raw_matches_pytorch(self):
        x, y = self.oracle()
        req = pb.ModelInferRequest(model_name="bn1d_head", id="req-7",
                                   inputs=[infer_input("input", list(x.shape))],
                                   raw_input_contents=[x.astype("<f4").tobytes()])
        resp = self.stub.ModelInfer(req)
        self.assertEqual(resp.model_name, "bn1d_head")
        self.assertEqual(resp.model_version, "1")
        self.assertEqual(resp.id, "req-7")
        self.assertEqual(len(resp.raw_output_contents), 1)
        self.assertEqual(resp.outputs[0].datatype, "FP32")
        self.assertEqual(list(resp.outputs[0].shape), list(y.shape))
        got = np.frombuffer(resp.raw_output_contents[0], dtype="<f4").reshape(y.shape)
        np.testing.assert_allclose(got, y, rtol=1e-3, atol=1e-4)

    def test_infer_typed_matches_pytorch(self):
        x, y = self.oracle()
        inp = infer_input("input", list(x.shape))
        inp.contents.fp32_contents.extend(x.ravel().tolist())
        resp = self.stub.ModelInfer(pb.ModelInferRequest(model_name="bn1d_head", inputs=[inp]))
        self.assertEqual(len(resp.raw_output_contents), 0)
        got = np.array(resp.outputs[0].contents.fp32_contents, dtype=np.float32).reshape(y.shape)
        np.testing.assert_allclose(got, y, rtol=1e-3, atol=1e-4)

    def test_batch_three_matches_pytorch(self):
        if not self.has_oracle:
            self.skipTest("no oracle export")
        x = np.load(os.path.join(ORACLE, "input_b3.npy")).astype(np.float32)
        y = np.load(os.path.join(ORACLE, "output_b3.npy")).astype(np.float32)
        resp = self.stub.ModelInfer(pb.ModelInferRequest(
            model_name="bn1d_head", inputs=[infer_input("input", list(x.shape))],
            raw_input_contents=[x.tobytes()]))
        got = np.frombuffer(resp.raw_output_contents[0], dtype="<f4").reshape(y.shape)
        np.testing.assert_allclose(got, y, rtol=1e-3, atol=1e-4)

    def test_requested_output_by_name(self):
        x = np.ones((1, 3, 8, 8), np.float32)
        req = pb.ModelInferRequest(
            model_name="tiny_bn", inputs=[infer_input("input", [1, 3, 8, 8])],
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="output")],
            raw_input_contents=[x.tobytes()])
        resp = self.stub.ModelInfer(req)
        self.assertEqual([o.name for o in resp.outputs], ["output"])

    # -- errors ------------------------------------------------------------------------

    def assert_code(self, req, code, fragment):
        with self.assertRaises(grpc.RpcError) as ctx:
            self.stub.ModelInfer(req)
        self.assertEqual(ctx.exception.code(), code, ctx.exception.details())
        self.assertIn(fragment, ctx.exception.details())

    def tiny(self, **kw):
        x = np.zeros((1, 3, 8, 8), np.float32)
        args = dict(model_name="tiny_bn", inputs=[infer_input("input", [1, 3, 8, 8])],
                    raw_input_contents=[x.tobytes()])
        args.update(kw)
        return pb.ModelInferRequest(**args)

    def test_bad_requests(self):
        x = np.zeros((1, 3, 8, 8), np.float32)
        self.assert_code(self.tiny(model_name="nope"), grpc.StatusCode.NOT_FOUND,
                         'model "nope" is not loaded')
        self.assert_code(self.tiny(model_version="3"), grpc.StatusCode.NOT_FOUND,
                         "has no version 3")
        self.assert_code(self.tiny(model_version="latest"), grpc.StatusCode.INVALID_ARGUMENT,
                         "not a positive integer")
        # Issue 9 item 8: SimpleAtoi alone took " 1" as version 1.
        self.assert_code(self.tiny(model_version=" 1"), grpc.StatusCode.INVALID_ARGUMENT,
                         'model_version " 1" is not a positive integer')
        # Issue 9 item 6: a 10 KB model name is a short NOT_FOUND, not RESOURCE_EXHAUSTED.
        self.assert_code(self.tiny(model_name="m" * 10240), grpc.StatusCode.NOT_FOUND,
                         "(10240 bytes)")
        self.assert_code(self.tiny(inputs=[infer_input("input", [1, 3, 8, 8], "INT64")]),
                         grpc.StatusCode.INVALID_ARGUMENT, "datatype INT64 is not accepted")
        self.assert_code(self.tiny(inputs=[infer_input("input", [1, 3, 64])]),
                         grpc.StatusCode.INVALID_ARGUMENT, "expected rank 4")
        self.assert_code(self.tiny(inputs=[infer_input("input", [2**62, 3, 8, 8])]),
                         grpc.StatusCode.INVALID_ARGUMENT, "more elements than fit in int64")
        self.assert_code(self.tiny(raw_input_contents=[x.tobytes()[:-1]]),
                         grpc.StatusCode.INVALID_ARGUMENT,
                         'input "input": expected 768 bytes for shape [1,3,8,8] FP32, got 767')
        self.assert_code(self.tiny(raw_input_contents=[]), grpc.StatusCode.INVALID_ARGUMENT,
                         "expected 192 FP32 values for shape [1,3,8,8], got 0")
        self.assert_code(self.tiny(raw_input_contents=[x.tobytes(), x.tobytes()]),
                         grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents has 2 entries")
        bad = x.copy()
        bad[0, 2, 3, 4] = np.inf
        self.assert_code(self.tiny(raw_input_contents=[bad.tobytes()]),
                         grpc.StatusCode.INVALID_ARGUMENT, "element [0,2,3,4] is +Inf")

    # -- reflection, health, metrics ---------------------------------------------------

    def reflect(self, **request):
        stub = refl_grpc.ServerReflectionStub(self.channel)
        responses = list(stub.ServerReflectionInfo(
            iter([refl.ServerReflectionRequest(**request)]), timeout=10))
        self.assertEqual(len(responses), 1)
        return responses[0]

    def test_reflection_lists_and_describes_services(self):
        names = {s.name for s in self.reflect(list_services="").list_services_response.service}
        for service in ("normserve.v1.InferenceService", "inference.GRPCInferenceService",
                        "grpc.health.v1.Health",
                        "grpc.reflection.v1alpha.ServerReflection"):
            self.assertIn(service, names)
        for symbol, file_name in (("normserve.v1.InferenceService", "normserve/v1/inference.proto"),
                                  ("inference.GRPCInferenceService",
                                   "kserve/grpc_predict_v2.proto"),
                                  ("grpc.health.v1.Health", "grpc/health/v1/health.proto")):
            resp = self.reflect(file_containing_symbol=symbol)
            self.assertEqual(resp.WhichOneof("message_response"), "file_descriptor_response",
                             symbol)
            files = [descriptor_pb2.FileDescriptorProto.FromString(b)
                     for b in resp.file_descriptor_response.file_descriptor_proto]
            self.assertIn(file_name, [f.name for f in files])

    def health(self, service):
        # grpc.health.v1 by hand: the request is field 1 (string), the reply field 1
        # (enum); Debian's grpcio has no health stubs and generating grpc/health/v1 for
        # Python would shadow the installed `grpc` package.
        check = self.channel.unary_unary("/grpc.health.v1.Health/Check",
                                         request_serializer=lambda b: b,
                                         response_deserializer=lambda b: b)
        name = service.encode()
        reply = check(b"\x0a" + bytes([len(name)]) + name if name else b"", timeout=10)
        return reply[1] if len(reply) >= 2 and reply[0] == 0x08 else 0

    def test_health(self):
        serving = 1
        self.assertEqual(self.health(""), serving)
        self.assertEqual(self.health("tiny_bn"), serving)
        with self.assertRaises(grpc.RpcError) as ctx:
            self.health("nope")
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_metrics_endpoint(self):
        self.stub.ModelInfer(self.tiny())
        with self.assertRaises(grpc.RpcError):
            self.stub.ModelInfer(self.tiny(model_name="nope"))
        with self.assertRaises(grpc.RpcError):  # refused while decoding: counted too
            self.stub.ModelInfer(self.tiny(model_version="latest"))
        text = urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        for needle in ('normserve_requests_total{code="OK",model="tiny_bn",version="1"}',
                       'normserve_requests_total{code="NOT_FOUND",model="",version=""}',
                       'normserve_requests_total{code="INVALID_ARGUMENT",model="",version=""}',
                       "normserve_request_duration_seconds_bucket",
                       "normserve_compute_duration_seconds_count",
                       "normserve_queue_duration_seconds_sum",
                       "normserve_inflight_requests 0",
                       'normserve_model_loads_total{result="success"}',
                       'normserve_model_info{model="tiny_bn",precision="fp32",version="1"} 1'):
            self.assertIn(needle, text)
        promtool = shutil.which("promtool")
        if promtool:
            check = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                                   capture_output=True, timeout=60)
            self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
            self.assertEqual(check.stdout + check.stderr, b"")


if __name__ == "__main__":
    unittest.main(verbosity=2)
