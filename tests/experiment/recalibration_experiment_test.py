#!/usr/bin/python3
"""Issue 4 item 10: the Fashion-MNIST recalibration experiment through the gRPC API.

Starts the real `normserve` binary on loopback with a temporary copy of fashion_bn_cnn and
the training endpoint (bearer token file, temporary state dir). For each shifted test set
(clean, contrast x0.3, gaussian noise 0.3, brightness +0.4; definitions and calibration
samples from scripts/fashion_recalibration_oracle.py) it opens a session, sends K batch-1
Accumulate calls with unique request ids, commits with the quality gate on (no force), and
checks:
  * the committed per-channel BN mean/var (ExportModel -> ONNX initializers) equal the
    PyTorch float64 layer-by-layer oracle within 1e-4 relative (the mean relative to
    max(|mean|, std), so that a near-zero mean is not judged against zero);
  * the accuracy of the new serving version over the 10000 shifted test images, via
    Predict, is within 0.5 points of the oracle's accuracy with the same statistics;
  * Rollback to version 1 brings serving back to the frozen statistics and outputs.

Environment (set by CTest): NORMSERVE_BINARY, NORMSERVE_PY_STUBS, NORMSERVE_SOURCE_DIR;
optional NORMSERVE_EXPERIMENT_K (default 256), NORMSERVE_EXPERIMENT_SHIFTS.
"""

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import grpc
import numpy as np
import onnx
import torch
from onnx import numpy_helper

sys.path.insert(0, os.environ["NORMSERVE_PY_STUBS"])
from normserve.v1 import inference_pb2 as inf  # noqa: E402
from normserve.v1 import inference_pb2_grpc as inf_grpc  # noqa: E402
from normserve.v1 import training_pb2 as tr  # noqa: E402
from normserve.v1 import training_pb2_grpc as tr_grpc  # noqa: E402

SOURCE = os.environ["NORMSERVE_SOURCE_DIR"]
sys.path.insert(0, os.path.join(SOURCE, "scripts"))
import fashion_recalibration_oracle as oracle  # noqa: E402

MODEL = "fashion_bn_cnn"
TOKEN = "experiment-token-0123456789"
AUTH = (("authorization", "Bearer " + TOKEN),)
K = int(os.environ.get("NORMSERVE_EXPERIMENT_K", "256"))
SHIFTS = [s for s in os.environ.get("NORMSERVE_EXPERIMENT_SHIFTS",
                                    ",".join(oracle.SHIFTS)).split(",") if s]
STAT_RTOL = 1e-4
ACCURACY_TOLERANCE = 0.005
PREDICT_BATCH = 64  # the model's max_batch_size


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bn_stats_of_onnx(onnx_bytes):
    """{layer prefix: (running_mean, running_var)} of every BatchNormalization node."""
    model = onnx.load_model_from_string(onnx_bytes)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            prefix = node.input[3].rsplit(".running_mean", 1)[0]
            out[prefix] = (inits[node.input[3]].astype(np.float64),
                           inits[node.input[4]].astype(np.float64))
    return out


class RecalibrationExperimentTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.set_num_threads(2)
        cls.tmp = tempfile.mkdtemp(prefix="normserve_experiment_")
        repo = os.path.join(cls.tmp, "repo")
        shutil.copytree(os.path.join(SOURCE, "models/repository", MODEL),
                        os.path.join(repo, MODEL))
        token_file = os.path.join(cls.tmp, "token")
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        cls.port, cls.metrics_port, cls.training_port = free_port(), free_port(), free_port()
        cls.log = tempfile.TemporaryFile()
        cls.proc = subprocess.Popen(
            [os.environ["NORMSERVE_BINARY"], "--host=127.0.0.1", f"--port={cls.port}",
             f"--metrics_port={cls.metrics_port}", f"--model_repository={repo}",
             f"--training_port={cls.training_port}", f"--training_token_file={token_file}",
             f"--training_state_dir={os.path.join(cls.tmp, 'state')}"],
            stdout=cls.log, stderr=cls.log)
        cls.serving = grpc.insecure_channel(f"127.0.0.1:{cls.port}")
        cls.training = grpc.insecure_channel(f"127.0.0.1:{cls.training_port}")
        cls.inference = inf_grpc.InferenceServiceStub(cls.serving)
        cls.trainer = tr_grpc.TrainingServiceStub(cls.training)
        deadline = time.time() + 60
        while True:
            try:
                cls.metadata = cls.inference.GetModelMetadata(
                    inf.GetModelMetadataRequest(model_spec=inf.ModelSpec(name=MODEL)), timeout=2)
                cls.trainer.ListSessions(tr.ListSessionsRequest(), metadata=AUTH, timeout=2)
                break
            except grpc.RpcError as e:
                if cls.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"normserve did not become ready ({e.code()}: "
                                       f"{e.details()}):\n{cls.server_log()}")
                time.sleep(0.1)
        cls.frozen = bn_stats_of_onnx(cls.export(1))

    @classmethod
    def server_log(cls):
        cls.log.seek(0)
        return cls.log.read().decode(errors="replace")[-5000:]

    @classmethod
    def tearDownClass(cls):
        cls.serving.close()
        cls.training.close()
        cls.proc.send_signal(signal.SIGTERM)
        code = cls.proc.wait(timeout=60)
        shutil.rmtree(cls.tmp, ignore_errors=True)
        assert code == 0, f"normserve exited {code} on SIGTERM:\n{cls.server_log()}"

    @classmethod
    def export(cls, version):
        return cls.trainer.ExportModel(tr.ExportModelRequest(
            model_spec=inf.ModelSpec(name=MODEL, version=version)), metadata=AUTH).onnx

    def predict_classes(self, x, version):
        preds = []
        for i in range(0, len(x), PREDICT_BATCH):
            xb = np.ascontiguousarray(x[i:i + PREDICT_BATCH], dtype="<f4")
            resp = self.inference.Predict(inf.PredictRequest(
                model_spec=inf.ModelSpec(name=MODEL, version=version),
                inputs=[inf.Tensor(name="input", dtype=inf.DATA_TYPE_FP32,
                                   shape=list(xb.shape), raw_data=xb.tobytes())]))
            self.assertEqual(resp.model_spec.version, version)
            logits = np.frombuffer(resp.outputs[0].raw_data, dtype="<f4").reshape(len(xb), -1)
            preds.append(logits.argmax(1))
        return np.concatenate(preds)

    def test_input_signature(self):
        self.assertEqual(list(self.metadata.inputs[0].shape), [-1, 1, 28, 28])
        self.assertEqual(len(self.metadata.bn_layers), 6)

    def test_recalibration_matches_oracle(self):
        for shift in SHIFTS:
            with self.subTest(shift=shift, k=K):
                self.run_shift(shift)

    def run_shift(self, shift):
        t0 = time.time()
        calib = oracle.calibration_samples(shift, K)
        x_test, y_test = oracle.shifted_test_set(shift)
        model = oracle.load_model()
        expected = oracle.layerwise_stats(model, calib)
        oracle.EVAL_DTYPE = torch.float32
        oracle_acc = oracle.accuracy(model, x_test, y_test)

        # Every layer must pass the gate with K requests: the BatchNorm1d layer gets one
        # value per request; the relative SEM is at most ~1/sqrt(K) (0.0625 at K=256).
        t_oracle = time.time() - t0
        options = tr.SessionOptions(min_values_per_channel=K, max_relative_sem=0.2)
        session = self.trainer.StartSession(tr.StartSessionRequest(
            model_spec=inf.ModelSpec(name=MODEL), options=options), metadata=AUTH)
        for i in range(K):
            xi = np.ascontiguousarray(calib[i:i + 1], dtype="<f4")
            resp = self.trainer.Accumulate(tr.AccumulateRequest(
                session_id=session.session_id, request_id=f"{shift}-{i}",
                inputs=[inf.Tensor(name="input", dtype=inf.DATA_TYPE_FP32, shape=[1, 1, 28, 28],
                                   raw_data=xi.tobytes())]), metadata=AUTH)
            self.assertFalse(resp.duplicate, f"{shift}: request {i} reported as a duplicate")
            self.assertEqual(resp.requests_accepted, i + 1)
        t_accumulate = time.time() - t0 - t_oracle
        try:
            commit = self.trainer.Commit(tr.CommitRequest(session_id=session.session_id,
                                                          force=False), metadata=AUTH)
        except grpc.RpcError as e:
            self.fail(f"{shift} K={K}: Commit refused ({e.code()}): {e.details()}")
        version = commit.published.version

        got = bn_stats_of_onnx(self.export(version))
        self.assertEqual(sorted(got), sorted(expected))
        for name, s in expected.items():
            mean, var = got[name]
            scale = np.maximum(np.abs(s["mean"]), np.sqrt(s["var"]))
            mean_err = np.abs(mean - s["mean"]) / scale
            var_err = np.abs(var - s["var"]) / s["var"]
            worst = int(np.argmax(np.maximum(mean_err, var_err)))
            self.assertTrue(
                mean_err.max() <= STAT_RTOL and var_err.max() <= STAT_RTOL,
                f"{shift} K={K} layer {name} channel {worst}: committed mean {mean[worst]:.8g} "
                f"var {var[worst]:.8g}, oracle mean {s['mean'][worst]:.8g} var "
                f"{s['var'][worst]:.8g} (relative errors {mean_err.max():.2e}, "
                f"{var_err.max():.2e} > {STAT_RTOL})")

        t_commit = time.time() - t0 - t_oracle - t_accumulate
        t_predict0 = time.time()
        served_acc = float((self.predict_classes(x_test, version) == y_test).mean())
        self.assertLessEqual(
            abs(served_acc - oracle_acc), ACCURACY_TOLERANCE,
            f"{shift} K={K}: served accuracy {served_acc:.4f} of version {version}, oracle "
            f"{oracle_acc:.4f}")

        t_predict = time.time() - t_predict0
        rolled = self.trainer.Rollback(tr.RollbackRequest(
            model_spec=inf.ModelSpec(name=MODEL, version=1)), metadata=AUTH).published.version
        back = bn_stats_of_onnx(self.export(rolled))
        for name, (mean, var) in self.frozen.items():
            np.testing.assert_array_equal(back[name][0], mean, f"{shift}: rollback mean {name}")
            np.testing.assert_array_equal(back[name][1], var, f"{shift}: rollback var {name}")
        frozen_model = oracle.load_model()
        sample = x_test[:256]
        served_frozen = self.predict_classes(sample, rolled)
        self.assertGreaterEqual(
            float((served_frozen == oracle.predictions(frozen_model, sample)).mean()), 0.99,
            f"{shift}: after Rollback to v1 (now v{rolled}) predictions differ from frozen")
        print(f"{shift:10s} K={K}: v{version} served {served_acc:.4f} oracle {oracle_acc:.4f}; "
              f"rollback -> v{rolled} ({time.time() - t0:.0f}s: oracle {t_oracle:.0f}s, {K} "
              f"Accumulate {t_accumulate:.0f}s, commit+export {t_commit:.0f}s, 10000 "
              f"Predict {t_predict:.0f}s)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
