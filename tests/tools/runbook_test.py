#!/usr/bin/python3
"""docs/runbook_drift.md, run for real: every ```sh block, in order, in one bash (set -e)
against the real normserve binary with the training endpoint and --live_drift_fraction=1.

The situation of the runbook is staged first: 128 brightness +0.4 Fashion-MNIST test images
(PNG, written with PIL) are served as live traffic through normserve_client, so the live
drift gauges are up (mean shift > 0.5 on the first layer, as the alert needs), and the same
files are the "sample of recent traffic". Then the runbook's commands must: show the
drift, start a session, accumulate 128 images, pass the gate, commit version 2, show a
refusal of an 8-image session (exit 73), show serving on version 2, and roll back
(version 3 with version 1's statistics). Served accuracy on the shifted images must rise
after the commit and return after the rollback.

Environment (CTest): NORMSERVE_BINARY, NORMSERVE_CLI, NORMSERVE_SOURCE_DIR,
PYTHONPATH=build/python.
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
from PIL import Image

from normserve_client import Client, NormserveError

SOURCE = os.environ["NORMSERVE_SOURCE_DIR"]
sys.path.insert(0, os.path.join(SOURCE, "scripts"))
import fashion_recalibration_oracle as oracle  # noqa: E402

MODEL = "fashion_bn_cnn"
TOKEN = "runbook-token-0123456789"
RUNBOOK = os.path.join(SOURCE, "docs/runbook_drift.md")
N_SAMPLE = 128


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sh_blocks(markdown):
    return re.findall(r"^```sh\n(.*?)^```", markdown, flags=re.S | re.M)


def live_mean_shift(metrics_port):
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    values = [float(m) for m in re.findall(
        r'^normserve_live_drift_mean_shift\{[^}]*model="%s"[^}]*\} (\S+)' % MODEL, text, re.M)]
    return max(values) if values else None


class RunbookTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="normserve_runbook_")
        repo = os.path.join(self.tmp, "repo")
        shutil.copytree(os.path.join(SOURCE, "models/repository", MODEL),
                        os.path.join(repo, MODEL))
        self.port, self.metrics_port, self.training_port = free_port(), free_port(), free_port()
        token_file = os.path.join(self.tmp, "token")
        with open(token_file, "w") as f:
            f.write(TOKEN)
        self.log = open(os.path.join(self.tmp, "server.log"), "w+")
        self.proc = subprocess.Popen(
            [os.environ["NORMSERVE_BINARY"], "--host=127.0.0.1", f"--port={self.port}",
             f"--metrics_port={self.metrics_port}", f"--model_repository={repo}",
             f"--training_port={self.training_port}", f"--training_token_file={token_file}",
             f"--training_state_dir={os.path.join(self.tmp, 'state')}",
             "--live_drift_fraction=1"], stdout=self.log, stderr=self.log)
        self.client = Client(f"127.0.0.1:{self.port}", f"127.0.0.1:{self.training_port}",
                             token=TOKEN)
        deadline = time.time() + 60
        while True:
            try:
                self.client.metadata(MODEL)
                break
            except NormserveError:
                self.client._metadata.clear()
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("normserve did not start: " + self.server_log())
                time.sleep(0.1)

    def server_log(self):
        self.log.seek(0)
        return self.log.read()[-4000:]

    def tearDown(self):
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.assertEqual(code, 0)

    def test_every_runbook_command_runs(self):
        # Recent traffic: brightness +0.4 as 8-bit grey PNGs, served live.
        x_test, y_test = oracle.shifted_test_set("brightness")
        sample = os.path.join(self.tmp, "samples", "recent")
        os.makedirs(os.path.join(sample, "a"))
        os.makedirs(os.path.join(sample, "b"))
        pixels = np.round(x_test[:N_SAMPLE, 0] * 255).astype(np.uint8)
        for i in range(N_SAMPLE):
            Image.fromarray(pixels[i], "L").save(os.path.join(sample, "ab"[i % 2], f"{i}.png"))
        traffic = pixels[:, None].astype(np.float32) / 255.0
        for i in range(N_SAMPLE):
            self.client.predict(MODEL, traffic[i:i + 1])
        deadline = time.time() + 30
        while (live_mean_shift(self.metrics_port) or 0) <= 0.5 and time.time() < deadline:
            time.sleep(0.1)
        self.assertGreater(live_mean_shift(self.metrics_port) or 0, 0.5,
                           "the staged traffic must raise the live drift above the alert's 0.5")
        acc_before = (self.client.predict_classes(MODEL, x_test[:2000]) == y_test[:2000]).mean()

        with open(RUNBOOK) as f:
            blocks = sh_blocks(f.read())
        self.assertGreaterEqual(len(blocks), 8)
        env = dict(os.environ, SERVING=f"127.0.0.1:{self.port}",
                   TRAINING=f"127.0.0.1:{self.training_port}",
                   METRICS=f"127.0.0.1:{self.metrics_port}", SAMPLE=sample, MODEL=MODEL,
                   NORMSERVE_TRAINING_TOKEN=TOKEN,
                   PATH=os.path.dirname(os.environ["NORMSERVE_CLI"]) + ":" + os.environ["PATH"])

        def run(script):
            t0 = time.time()
            r = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], env=env,
                               capture_output=True, text=True, timeout=240)
            out = r.stdout + r.stderr
            print(out[-3000:], f"\n({time.time() - t0:.1f} s)", file=sys.stderr)
            self.assertEqual(r.returncode, 0, out + self.server_log())
            return out

        # Everything up to the rollback; the shell's `before` is carried to the last block.
        out = run("\n".join(blocks[:-1]) + '\necho "runbook-before=$before"\n')
        self.assertRegex(out, r'normserve_live_drift_mean_shift\{')
        self.assertIn(f"{N_SAMPLE} files, {N_SAMPLE} accepted", out)
        self.assertIn("exact layer-by-layer statistics", out)
        self.assertIn("quality gate: passed", out)
        self.assertIn(f"published {MODEL} version 2", out)
        self.assertIn("commit exit code 73", out)
        self.assertIn("FAILED_PRECONDITION: quality gate failed", out)
        self.assertIn(f"model {MODEL} version 2", out)
        self.assertIn(f"normserve_training_serving_version{{model=\"{MODEL}\"}} 2", out)
        before = re.search(r"runbook-before=(\d+)", out).group(1)
        self.assertEqual(before, "1")
        acc_v2 = (self.client.predict_classes(MODEL, x_test[:2000]) == y_test[:2000]).mean()

        out = run(blocks[0] + f"\nbefore={before}\n" + blocks[-1])
        self.assertIn(f"published the statistics of {MODEL} version 1 as version 3", out)
        self.assertIn(f"model {MODEL} version 3", out)

        # The commit helped and the rollback undid it (version 3 = version 1's statistics).
        acc_now = (self.client.predict_classes(MODEL, x_test[:2000]) == y_test[:2000]).mean()
        print(f"accuracy on brightness +0.4: v1 {acc_before:.3f}, v2 {acc_v2:.3f}, "
              f"after rollback {acc_now:.3f}", file=sys.stderr)
        self.assertGreater(acc_v2, acc_before + 0.3)
        self.assertEqual(acc_now, acc_before)


if __name__ == "__main__":
    unittest.main(verbosity=2)
