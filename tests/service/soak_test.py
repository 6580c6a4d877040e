#!/usr/bin/python3
"""Soak: the real normserve binary under 8 closed-loop normserve.v1 Predict clients for a
long time (default 10 minutes) must not grow and must not slow down.

After the warm-up, resident memory (VmRSS of the server, sampled every second) may grow
by less than 5 % (its largest sample in the last fifth of the run vs its value at the
end of the warm-up) and the median latency of the last fifth may drift by less than 10 %
from the first fifth. Every request must succeed.

Environment: NORMSERVE_BINARY, NORMSERVE_PY_STUBS, NORMSERVE_SOURCE_DIR (set by CTest);
NORMSERVE_SOAK_SECONDS (measured time, default 600), NORMSERVE_SOAK_WARMUP_SECONDS
(default 60), NORMSERVE_SOAK_CLIENTS (default 8), NORMSERVE_SOAK_MODEL (an ONNX file,
default the repository's fashion_bn_cnn; e.g. a ResNet-18 from export_test_models.py).
"""

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import grpc
import numpy as np
import onnx

sys.path.insert(0, os.environ["NORMSERVE_PY_STUBS"])
from normserve.v1 import inference_pb2 as pb  # noqa: E402
from normserve.v1 import inference_pb2_grpc as pb_grpc  # noqa: E402

SOURCE = os.environ["NORMSERVE_SOURCE_DIR"]
SECONDS = float(os.environ.get("NORMSERVE_SOAK_SECONDS", "600"))
WARMUP = float(os.environ.get("NORMSERVE_SOAK_WARMUP_SECONDS", "60"))
CLIENTS = int(os.environ.get("NORMSERVE_SOAK_CLIENTS", "8"))
MODEL = os.environ.get("NORMSERVE_SOAK_MODEL") or os.path.join(
    SOURCE, "models/repository/fashion_bn_cnn/1/model.onnx")
MAX_RSS_GROWTH = 0.05
MAX_LATENCY_DRIFT = 0.10


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def input_spec(path):
    graph = onnx.load(path, load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    first = next(i for i in graph.input if i.name not in inits)
    dims = [d.dim_value if d.dim_value > 0 else 1 for d in first.type.tensor_type.shape.dim]
    return first.name, dims


class SoakTest(unittest.TestCase):
    def test_no_growth_no_drift(self):
        repo = tempfile.mkdtemp(prefix="normserve_soak_")
        os.makedirs(os.path.join(repo, "soak", "1"))
        shutil.copy(MODEL, os.path.join(repo, "soak", "1", "model.onnx"))
        port, metrics_port = free_port(), free_port()
        log = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            [os.environ["NORMSERVE_BINARY"], "--host=127.0.0.1", f"--port={port}",
             f"--metrics_port={metrics_port}", f"--model_repository={repo}"],
            stdout=log, stderr=log)
        try:
            self._soak(proc, port)
        finally:
            proc.terminate()
            code = proc.wait(timeout=60)
            log.seek(0)
            tail = log.read()[-4000:].decode(errors="replace")
            shutil.rmtree(repo, ignore_errors=True)
        self.assertEqual(code, 0, tail)

    def _soak(self, proc, port):
        name, dims = input_spec(MODEL)
        x = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
        request = pb.PredictRequest(model_spec=pb.ModelSpec(name="soak"))
        request.inputs.add(name=name, dtype=pb.DATA_TYPE_FP32, shape=dims, raw_data=x.tobytes())

        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.InferenceServiceStub(channel)
        deadline = time.time() + 120
        while True:
            try:
                stub.Predict(request, timeout=5, wait_for_ready=True)
                break
            except grpc.RpcError as e:
                self.assertLess(time.time(), deadline, f"server never served: {e}")
                time.sleep(0.5)

        start = time.monotonic()
        end = start + WARMUP + SECONDS
        samples = []  # (time since start, latency seconds)
        failures = []
        lock = threading.Lock()

        def client():
            own = pb_grpc.InferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
            while time.monotonic() < end:
                t0 = time.monotonic()
                try:
                    own.Predict(request, timeout=30)
                except grpc.RpcError as e:
                    with lock:
                        failures.append(f"{e.code()}: {e.details()}")
                    continue
                t1 = time.monotonic()
                with lock:
                    samples.append((t1 - start, t1 - t0))

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        rss = []  # (time since start, bytes)
        while time.monotonic() < end:
            self.assertIsNone(proc.poll(), "server exited during the soak")
            rss.append((time.monotonic() - start, rss_bytes(proc.pid)))
            time.sleep(1.0)
        for t in threads:
            t.join()

        self.assertEqual(failures[:5], [], f"{len(failures)} failed requests")
        fifth = SECONDS / 5
        rss_after_warmup = next(b for t, b in rss if t >= WARMUP)
        rss_last = max(b for t, b in rss if t >= WARMUP + SECONDS - fifth)
        growth = rss_last / rss_after_warmup - 1
        first = [lat for t, lat in samples if WARMUP <= t < WARMUP + fifth]
        last = [lat for t, lat in samples if t >= WARMUP + SECONDS - fifth]
        drift = statistics.median(last) / statistics.median(first) - 1
        print(f"soak: {CLIENTS} clients, {SECONDS:.0f} s after {WARMUP:.0f} s warm-up, "
              f"{len(samples)} requests ({len(samples) / (WARMUP + SECONDS):.0f}/s), "
              f"RSS {rss_after_warmup / 2**20:.1f} -> {rss_last / 2**20:.1f} MiB "
              f"({growth * 100:+.2f} %), median latency "
              f"{statistics.median(first) * 1e3:.2f} -> {statistics.median(last) * 1e3:.2f} ms "
              f"({drift * 100:+.2f} %)", flush=True)
        self.assertLess(growth, MAX_RSS_GROWTH, "RSS grew after warm-up")
        self.assertLess(drift, MAX_LATENCY_DRIFT, "median latency drifted up")


if __name__ == "__main__":
    unittest.main()
