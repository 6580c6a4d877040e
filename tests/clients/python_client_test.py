#!/usr/bin/python3
"""normserve_client (clients/python) against the real binary on loopback.

* predict: numpy in, numpy out, equal to PyTorch's eval-mode fashion_bn_cnn (float64) within
  1e-4 of the output scale;
* the session workflow: start, accumulate (content-hash ids: a repeat is a duplicate),
  report, gate refusal, abort, sessions, export, and UNAUTHENTICATED naming the missing token;
* the README's example (clients/python/examples/recalibrate_fashion.py) recalibrates on
  brightness +0.4 with K=64 and must print the accuracies the PyTorch oracle gives
  (scripts/fashion_recalibration_oracle.py: frozen statistics, then layer-by-layer
  statistics of the same 64 images) within 0.5 points on the first 3000 test images; the
  gain is ~0.37 -> ~0.87 (README, "Recalibration experiment").

Environment (CTest): NORMSERVE_BINARY, NORMSERVE_SOURCE_DIR, PYTHONPATH=build/python.
"""
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

import numpy as np
import onnx
import torch

from normserve_client import Client, NormserveError, content_request_id
import grpc

SOURCE = os.environ["NORMSERVE_SOURCE_DIR"]
sys.path.insert(0, os.path.join(SOURCE, "scripts"))
import fashion_recalibration_oracle as oracle  # noqa: E402

MODEL = "fashion_bn_cnn"
TOKEN = "python-client-token-0123456789"
# Test images the example scores (of 10000; the README's figures use all): keeps the test
# under a minute on a loaded 2-core host while staying well above the 0.5-point tolerance's
# resolution (1 image = 0.03 points).
N_TEST = 3000
EXAMPLE = os.path.join(SOURCE, "clients/python/examples/recalibrate_fashion.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.set_num_threads(2)
        cls.tmp = tempfile.mkdtemp(prefix="normserve_pyclient_")
        repo = os.path.join(cls.tmp, "repo")
        shutil.copytree(os.path.join(SOURCE, "models/repository", MODEL),
                        os.path.join(repo, MODEL))
        cls.token_file = os.path.join(cls.tmp, "token")
        with open(cls.token_file, "w") as f:
            f.write(TOKEN + "\n")
        port, training_port = free_port(), free_port()
        cls.server, cls.training_server = f"127.0.0.1:{port}", f"127.0.0.1:{training_port}"
        cls.log = tempfile.TemporaryFile()
        cls.proc = subprocess.Popen(
            [os.environ["NORMSERVE_BINARY"], "--host=127.0.0.1", f"--port={port}",
             f"--metrics_port={free_port()}", f"--model_repository={repo}",
             f"--training_port={training_port}", f"--training_token_file={cls.token_file}",
             f"--training_state_dir={os.path.join(cls.tmp, 'state')}"],
            stdout=cls.log, stderr=cls.log)
        cls.client = Client(cls.server, cls.training_server, token_file=cls.token_file)
        deadline = time.time() + 60
        while True:
            try:
                cls.client.metadata(MODEL)
                cls.client.sessions()
                break
            except NormserveError:
                if cls.proc.poll() is not None or time.time() > deadline:
                    cls.log.seek(0)
                    raise RuntimeError("normserve did not start:\n" + cls.log.read().decode())
                time.sleep(0.1)
                cls.client._metadata.clear()

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.proc.send_signal(signal.SIGTERM)
        code = cls.proc.wait(timeout=60)
        shutil.rmtree(cls.tmp, ignore_errors=True)
        assert code == 0, f"normserve exited {code}"

    def test_predict_numpy_in_numpy_out_matches_pytorch(self):
        x, _ = oracle.shifted_test_set("clean")
        x = x[:16]
        y, version = self.client.predict(MODEL, x, version=1, return_version=True)
        self.assertEqual(version, 1)
        self.assertEqual(y.dtype, np.float32)
        self.assertEqual(y.shape, (16, 10))
        with torch.no_grad():
            ref = oracle.load_model()(torch.from_numpy(x.astype(np.float64))).numpy()
        scale = np.abs(ref).max()
        self.assertLessEqual(np.abs(y - ref).max(), 1e-4 * scale)

    def test_session_workflow_and_errors(self):
        calib = oracle.calibration_samples("contrast", 8)
        s = self.client.start_session(MODEL, session_id="workflow", min_values_per_channel=10**6)
        self.assertEqual(s.id, "workflow")
        self.assertEqual(len(s.layers), 6)
        self.assertEqual(s.accumulate(calib[:1]).requests_accepted, 1)
        again = s.accumulate(calib[:1].copy())
        self.assertTrue(again.duplicate)
        self.assertEqual(again.requests_accepted, 1)
        self.assertEqual(s.accumulate_each(calib), (7, 1))
        report = s.report(per_channel=True)
        self.assertEqual(report.requests_accepted, 8)
        self.assertFalse(report.gate_passed)
        self.assertEqual(len(report.layers[0].channels_detail), report.layers[0].channels)
        self.assertIn("workflow", [x.session_id for x in self.client.sessions()])
        with self.assertRaises(NormserveError) as e:
            s.commit()
        self.assertEqual(e.exception.code, grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("values per channel", e.exception.details)
        # The refused commit replayed every sample wave by wave; its progress stays readable.
        p = s.progress()
        self.assertEqual((p.operation, p.running), ("commit", False))
        self.assertGreater(p.waves_total, 1)
        self.assertEqual((p.waves_done, p.samples_done, p.samples_total),
                         (p.waves_total, 8, 8))
        self.assertGreater(p.elapsed_seconds, 0)
        s.abort()
        with self.assertRaises(NormserveError) as e:
            s.accumulate(calib[1:2])
        self.assertEqual(e.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(content_request_id(calib[:1]), content_request_id(calib[:1].copy()))
        self.assertNotEqual(content_request_id(calib[:1]), content_request_id(calib[1:2]))

        onnx_bytes = self.client.export(MODEL, 1)
        self.assertEqual(sum(n.op_type == "BatchNormalization"
                             for n in onnx.load_model_from_string(onnx_bytes).graph.node), 6)

        os.environ.pop("NORMSERVE_TRAINING_TOKEN", None)
        with Client(self.server, self.training_server) as anonymous:
            with self.assertRaises(NormserveError) as e:
                anonymous.sessions()
        self.assertEqual(e.exception.code, grpc.StatusCode.UNAUTHENTICATED)
        self.assertIn("NORMSERVE_TRAINING_TOKEN", e.exception.details)

    def test_readme_example_recalibrates_fashion_on_shifted_images(self):
        shift, k = "brightness", 64
        env = dict(os.environ)
        t0 = time.time()
        r = subprocess.run([sys.executable, EXAMPLE, f"--server={self.server}",
                            f"--training_server={self.training_server}",
                            f"--token_file={self.token_file}", f"--shift={shift}", f"--k={k}",
                            f"--test_images={N_TEST}", "--rollback"], env=env, capture_output=True, text=True, timeout=240)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        print(r.stdout, f"({time.time() - t0:.0f} s)", file=sys.stderr)
        acc = [float(a) for a in re.findall(r"accuracy (\d\.\d+) with version", r.stdout)]
        self.assertEqual(len(acc), 2, r.stdout)
        before, after = acc

        # The oracle, on the same images: frozen, then layer-by-layer statistics of the same K.
        x_test, y_test = oracle.shifted_test_set(shift)
        x_test, y_test = x_test[:N_TEST], y_test[:N_TEST]
        recalibrated = oracle.load_model()
        oracle.layerwise_stats(recalibrated, oracle.calibration_samples(shift, k))  # float64
        oracle.EVAL_DTYPE = torch.float32  # the served precision
        oracle_before = oracle.accuracy(oracle.load_model(), x_test, y_test)
        oracle_after = oracle.accuracy(recalibrated, x_test, y_test)
        self.assertLessEqual(abs(before - oracle_before), 0.005, (before, oracle_before))
        self.assertLessEqual(abs(after - oracle_after), 0.005, (after, oracle_after))
        self.assertGreater(after - before, 0.3, r.stdout)
        self.assertIn("rolled back", r.stdout)
        # After the rollback the frozen statistics serve again.
        served = (self.client.predict_classes(MODEL, x_test[:512]) == y_test[:512]).mean()
        frozen = (oracle.predictions(oracle.load_model(), x_test[:512]) == y_test[:512]).mean()
        self.assertLessEqual(abs(served - frozen), 0.01)


if __name__ == "__main__":
    unittest.main(verbosity=2)
