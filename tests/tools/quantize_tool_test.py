#!/usr/bin/python3
"""normserve-quantize on the default repository's fashion_bn_cnn: the file it writes is a
QDQ model (int8 weight initializers, QuantizeLinear/DequantizeLinear activations, no
BatchNormalization left) that the ONNX checker accepts; bad flags and files fail with a
message naming them and write nothing. The scales' numbers are QuantizeInt8's, checked by
int8_quantization_test against ONNX Runtime and fp32; this test covers the tool."""

import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx

TOOL = os.environ["NORMSERVE_QUANTIZE"]
SOURCE = os.environ["NORMSERVE_SOURCE_DIR"]
MODEL = os.path.join(SOURCE, "models/repository/fashion_bn_cnn/1/model.onnx")


def run(*args):
    return subprocess.run([TOOL, *args], capture_output=True, text=True, timeout=120)


def main():
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)
            print("FAIL:", what)

    with tempfile.TemporaryDirectory() as d:
        rng = np.random.default_rng(5)
        a = os.path.join(d, "a.npy")
        b = os.path.join(d, "b.npy")
        np.save(a, rng.random((8, 1, 28, 28), dtype=np.float32))
        np.save(b, rng.random((1, 1, 28, 28), dtype=np.float32))
        out = os.path.join(d, "int8.onnx")
        r = run(f"--model={MODEL}", f"--samples={a},{b}", f"--out={out}")
        check(r.returncode == 0, f"quantize exit {r.returncode}: {r.stderr}")
        check("layers with int8 weights" in r.stdout, f"summary line: {r.stdout!r}")
        if r.returncode == 0:
            m = onnx.load(out)
            onnx.checker.check_model(m)
            ops = [n.op_type for n in m.graph.node]
            check(ops.count("QuantizeLinear") >= 4, f"QuantizeLinear nodes: {ops.count('QuantizeLinear')}")
            check("BatchNormalization" not in ops, "BatchNormalization left in the QDQ file")
            int8_weights = [t for t in m.graph.initializer if t.data_type == onnx.TensorProto.INT8]
            check(len(int8_weights) >= 4, f"int8 weight initializers: {len(int8_weights)}")

        # Bad input: a clear message naming what is wrong, exit 1, no file.
        r = run(f"--model={MODEL}", f"--out={out}.x")
        check(r.returncode == 1 and "--samples" in r.stderr, f"missing --samples: {r.stderr!r}")
        bad = os.path.join(d, "bad.npy")
        with open(bad, "wb") as f:
            f.write(b"not an npy file")
        r = run(f"--model={MODEL}", f"--samples={bad}", f"--out={out}.y")
        check(r.returncode == 1 and "bad.npy" in r.stderr, f"bad .npy: {r.stderr!r}")
        check(not os.path.exists(out + ".y"), "a file was written after a failure")
        wrong = os.path.join(d, "wrong.npy")
        np.save(wrong, np.zeros((2, 3, 8, 8), dtype=np.float32))
        r = run(f"--model={MODEL}", f"--samples={wrong}", f"--out={out}.z")
        check(r.returncode == 1, f"wrong input shape accepted: {r.stdout!r} {r.stderr!r}")
        print(r.stderr.strip())

    if failures:
        sys.exit(f"{len(failures)} failure(s)")
    print("ok")


if __name__ == "__main__":
    main()
