#!/usr/bin/python3
"""Every PromQL expression of deploy/ evaluated by a real Prometheus scraping the real server.

Starts `normserve` on a temporary copy of models/repository (free loopback ports), sends
predictions (and bad requests, so error codes exist) through the Python stubs, drives the
training endpoint (sessions with accumulated samples, a duplicate, a refused non-finite
sample, a gate-failed then forced commit, a rollback, an int8 commit), then starts
Debian's `prometheus` with deploy's prometheus.yml rewritten to loopback targets and a 1s
scrape/evaluation interval, waits for scrapes, and evaluates through /api/v1/query every expression of
deploy/prometheus/alerts.yml and of every panel of deploy/grafana/dashboards/*.json
(Grafana variables replaced by match-all values). Fails when
  - Prometheus answers an error for an expression,
  - an expression names a metric the server does not export (/metrics and
    /api/v1/label/__name__/values; live-drift metrics only once the server exports any
    of them, see LIVE_DRIFT_REQUIRED), or
  - a label an expression matches on or groups by is not a label of the metrics it uses,
  - a Grafana variable query (label_values) names an unknown metric or label,
  - a dashboard expression whose metrics all have samples returns no series while its
    selectors carry no filter that can legitimately select nothing.

Environment (CTest): NORMSERVE_BINARY, NORMSERVE_PY_STUBS, NORMSERVE_SOURCE_DIR,
PROMETHEUS (default /usr/bin/prometheus), PROMTOOL (default /usr/bin/promtool).
"""

import glob
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import grpc
import yaml

sys.path.insert(0, os.environ["NORMSERVE_PY_STUBS"])
from normserve.v1 import inference_pb2 as ipb  # noqa: E402
from normserve.v1 import inference_pb2_grpc as ipb_grpc  # noqa: E402

SOURCE = os.environ["NORMSERVE_SOURCE_DIR"]
BINARY = os.environ["NORMSERVE_BINARY"]
PROMETHEUS = os.environ.get("PROMETHEUS", "/usr/bin/prometheus")
PROMTOOL = os.environ.get("PROMTOOL", "/usr/bin/promtool")
DEPLOY = os.path.join(SOURCE, "deploy")
TOKEN = "deploy-test-token"
# The server runs with --live_drift_fraction=1: a server without normserve_live_drift_
# metrics is a failure.
LIVE_DRIFT_REQUIRED = True

# Grafana's variables and interval macros, replaced by what a dashboard with "All"
# selected sends.
GRAFANA_MACROS = {
    "$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m",
    "$model": ".*", "$instance": ".*", "$session": ".*", "$layer": ".*",
}

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


def prom_query(base, expr):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        return http_json(url)
    except urllib.error.HTTPError as e:  # 400/422 carry the error as JSON; 503 while starting
        body = e.read().decode(errors="replace")
        try:
            return json.loads(body)
        except ValueError:
            return {"status": "error", "errorType": f"http {e.code}", "error": body.strip()}


# -- the server -------------------------------------------------------------------------

def binary_flags():
    out = subprocess.run([BINARY, "--helpfull"], capture_output=True, text=True).stdout
    return set(re.findall(r"--([a-z_]+) \(", out))


def start_server(tmp, flags):
    repo = os.path.join(tmp, "repository")
    shutil.copytree(os.path.join(SOURCE, "models/repository"), repo)
    ports = {"port": free_port(), "metrics_port": free_port()}
    args = [BINARY, "--host=127.0.0.1", f"--port={ports['port']}",
            f"--metrics_port={ports['metrics_port']}", f"--model_repository={repo}",
            "--intra_op_threads=1", "--workers=2"]
    env = dict(os.environ)
    training = "training_port" in flags
    if training:
        ports["training_port"] = free_port()
        args += ["--training_host=127.0.0.1", f"--training_port={ports['training_port']}",
                 f"--training_state_dir={os.path.join(tmp, 'state')}"]
        if "live_drift_fraction" in flags:
            args.append("--live_drift_fraction=1")
        env["NORMSERVE_TRAINING_TOKEN"] = TOKEN
    log = open(os.path.join(tmp, "normserve.log"), "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, ports, training


def tensor_for(spec, value_fn):
    shape = [1 if d < 0 else d for d in spec.shape]
    n = 1
    for d in shape:
        n *= d
    data = struct.pack(f"<{n}f", *[value_fn(i) for i in range(n)])
    return ipb.Tensor(name=spec.name, dtype=ipb.DATA_TYPE_FP32, shape=shape, raw_data=data)


def drive_serving(channel):
    stub = ipb_grpc.InferenceServiceStub(channel)
    deadline = time.time() + 60
    while True:
        try:
            models = stub.ListModels(ipb.ListModelsRequest(), timeout=2, wait_for_ready=True)
            break
        except grpc.RpcError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    meta = {}
    for m in models.models:
        name = m.name if hasattr(m, "name") else m.model_spec.name
        meta[name] = stub.GetModelMetadata(
            ipb.GetModelMetadataRequest(model_spec=ipb.ModelSpec(name=name)))
    for name, md in meta.items():
        # 40 > the live drift watch's 32-request window minimum, so its gauges exist.
        for k in range(40):
            stub.Predict(ipb.PredictRequest(
                model_spec=ipb.ModelSpec(name=name),
                inputs=[tensor_for(s, lambda i, k=k: ((i * 7 + k) % 13) / 13.0) for s in md.inputs]))
        # A client error (wrong shape) and an unknown model: non-OK codes on the counter.
        try:
            stub.Predict(ipb.PredictRequest(model_spec=ipb.ModelSpec(name=name), inputs=[
                ipb.Tensor(name=md.inputs[0].name, dtype=ipb.DATA_TYPE_FP32, shape=[1, 1],
                           raw_data=b"\0\0\0\0")]))
        except grpc.RpcError:
            pass
    try:
        stub.Predict(ipb.PredictRequest(model_spec=ipb.ModelSpec(name="no_such_model")))
    except grpc.RpcError:
        pass
    return meta


def drive_training(port, meta):
    """A session on every model with BN layers: samples, a duplicate, a refused one, a commit."""
    from normserve.v1 import training_pb2 as tpb
    from normserve.v1 import training_pb2_grpc as tpb_grpc
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = tpb_grpc.TrainingServiceStub(channel)
    auth = [("authorization", f"Bearer {TOKEN}")]
    grpc.channel_ready_future(channel).result(timeout=30)
    for name, md in meta.items():
        if not md.bn_layers:
            continue
        start = stub.StartSession(tpb.StartSessionRequest(model_spec=ipb.ModelSpec(name=name)),
                                  metadata=auth, timeout=30)
        sid = start.session_id
        for k in range(6):
            req = tpb.AccumulateRequest(session_id=sid, request_id=f"r{k}", inputs=[
                tensor_for(s, lambda i, k=k: ((i * 5 + 3 * k) % 11) / 11.0) for s in md.inputs])
            stub.Accumulate(req, metadata=auth, timeout=30)
        stub.Accumulate(req, metadata=auth, timeout=30)  # a retry: counted once (duplicate)
        try:
            stub.Accumulate(tpb.AccumulateRequest(session_id=sid, request_id="nan", inputs=[
                tensor_for(s, lambda i: float("nan")) for s in md.inputs]), metadata=auth, timeout=30)
        except grpc.RpcError:
            pass  # refused: normserve_training_refused_total{reason="non_finite_input"}
        stub.Report(tpb.ReportRequest(session_id=sid), metadata=auth, timeout=60)
    # Leave the other sessions open (their per-session series stay exported) and commit a
    # second session on the first model: commits_total, serving_version, last commit time.
    name = next((n for n, md in meta.items() if md.bn_layers), None)
    if name is not None:
        md = meta[name]

        def session_of_8(stride, modulus):
            """A new session on `name` holding 8 samples of a pattern of its own."""
            sid = stub.StartSession(tpb.StartSessionRequest(model_spec=ipb.ModelSpec(name=name)),
                                    metadata=auth, timeout=30).session_id
            for k in range(8):
                stub.Accumulate(tpb.AccumulateRequest(session_id=sid, request_id=f"c{k}", inputs=[
                    tensor_for(s, lambda i, k=k: ((i * stride + k) % modulus) / modulus)
                    for s in md.inputs]), metadata=auth, timeout=30)
            return sid

        sid = session_of_8(3, 7)
        try:
            stub.Commit(tpb.CommitRequest(session_id=sid), metadata=auth, timeout=120)
        except grpc.RpcError as e:
            # 8 samples rarely pass the quality gate: commits_total{result="gate_failed"};
            # then a forced commit publishes (result="published", last commit time).
            print(f"commit on {name}: {e.code().name}; committing with force")
            stub.Commit(tpb.CommitRequest(session_id=sid, force=True), metadata=auth, timeout=120)
        # Republish version 1: normserve_training_rollbacks_total.
        stub.Rollback(tpb.RollbackRequest(model_spec=ipb.ModelSpec(name=name, version=1)),
                      metadata=auth, timeout=120)
        # An int8 version (forced: the gate on 8 samples is not the point here):
        # normserve_training_int8_*. A CPU without VNNI refuses it, and the int8 panels
        # then fail this test as unexported, which is what they would show there.
        sid = session_of_8(5, 9)
        stub.Commit(tpb.CommitRequest(session_id=sid, force=True, precision="int8"),
                    metadata=auth, timeout=120)
    channel.close()


def exported_names(metrics_port):
    """Metric names on the server's /metrics: sample names and declared families."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, fam, kind = line.split()[:4]
            names.add(fam)
            if kind == "histogram":
                names.update({fam + "_bucket", fam + "_sum", fam + "_count"})
            elif kind == "summary":
                names.update({fam + "_sum", fam + "_count"})
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, 1)[0])
    return names, text


# -- expressions ------------------------------------------------------------------------

def rule_expressions():
    doc = yaml.safe_load(open(os.path.join(DEPLOY, "prometheus/alerts.yml")))
    for group in doc["groups"]:
        for rule in group["rules"]:
            yield f"alert {rule.get('alert') or rule.get('record')}", rule["expr"], False


def dashboard_expressions():
    for path in sorted(glob.glob(os.path.join(DEPLOY, "grafana/dashboards/*.json"))):
        dash = json.load(open(path))
        base = os.path.basename(path)
        for panel in dash["panels"]:
            for t in panel.get("targets", []):
                if t.get("expr"):
                    yield f"{base}: {panel['title']} [{t['refId']}]", t["expr"], True
        for var in dash.get("templating", {}).get("list", []):
            q = var.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            yield f"{base}: variable ${var['name']}", q, True


def substitute(expr):
    for k in sorted(GRAFANA_MACROS, key=len, reverse=True):
        expr = expr.replace(k, GRAFANA_MACROS[k])
    return expr


PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "by", "without", "rate", "increase", "irate",
    "histogram_quantile", "time", "or", "and", "unless", "on", "ignoring", "group_left",
    "group_right", "bool", "offset", "abs", "absent", "label_values", "topk", "bottomk",
    "le", "quantile", "clamp_min", "clamp_max", "vector", "scalar", "humanize", "inf", "nan",
}


def metric_names_in(expr):
    # Drop string literals (label values), then take identifiers that are followed by a
    # selector, a range, or stand alone, and that are not functions or keywords.
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    bare = re.sub(r"\{[^}]*\}", "{}", bare)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", bare):
        word = m.group(1)
        if word.lower() in PROMQL_WORDS or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def selector_labels(expr):
    """(metric, label) pairs of every metric{label op "value"} selector."""
    pairs = set()
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}", expr):
        for lab in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", m.group(2)):
            pairs.add((m.group(1), lab))
    return pairs


def grouping_labels(expr):
    labs = set()
    for m in re.finditer(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        labs.update(x.strip() for x in m.group(1).split(",") if x.strip())
    return labs


def main():
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix="normserve_deploy_")
    flags = binary_flags()
    server, ports, training = start_server(tmp, flags)
    prom = None
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{ports['port']}")
        meta = drive_serving(channel)
        print(f"serving traffic sent to {sorted(meta)}")
        if not training:
            fail("this normserve has no --training_port: the training endpoint is part of "
                 "the server, its metrics are checked")
        else:
            drive_training(ports["training_port"], meta)
            print("training endpoint driven")
        names, text = exported_names(ports["metrics_port"])
        serving_required = {"normserve_requests_total", "normserve_request_duration_seconds_bucket",
                            "normserve_queue_duration_seconds_bucket", "normserve_inflight_requests",
                            "normserve_model_info", "normserve_model_loads_total"}
        missing = serving_required - names
        if missing:
            fail(f"server does not export {sorted(missing)}")
        if training and not any(n.startswith("normserve_training_") for n in names):
            fail("the binary has --training_port but exports no normserve_training_ metric")
        # Live drift (--live_drift_fraction) is checked once the server exports any of its
        # metrics; LIVE_DRIFT_REQUIRED makes its absence a failure.
        live_drift = any(n.startswith("normserve_live_drift_") for n in names)
        if not live_drift:
            msg = ("this normserve exports no normserve_live_drift_ metric with "
                   "--live_drift_fraction=1")
            if LIVE_DRIFT_REQUIRED:
                fail(msg)
            else:
                print(f"NOTE: {msg}: live-drift expressions are checked for errors only")

        def optional(metric):
            return metric.startswith("normserve_live_drift_") and not live_drift

        # Prometheus with deploy's configuration, pointed at loopback.
        prom_port = free_port()
        cfg = yaml.safe_load(open(os.path.join(DEPLOY, "prometheus/prometheus.yml")))
        cfg["global"]["scrape_interval"] = "1s"
        cfg["global"]["evaluation_interval"] = "1s"
        for job in cfg["scrape_configs"]:
            target = {"normserve": f"127.0.0.1:{ports['metrics_port']}",
                      "prometheus": f"127.0.0.1:{prom_port}"}[job["job_name"]]
            job["static_configs"] = [{"targets": [target]}]
        prom_dir = os.path.join(tmp, "prometheus")
        os.makedirs(prom_dir)
        for rf in cfg.get("rule_files", []):
            shutil.copy(os.path.join(DEPLOY, "prometheus", rf), os.path.join(prom_dir, rf))
        cfg_path = os.path.join(prom_dir, "prometheus.yml")
        with open(cfg_path, "w") as f:
            yaml.safe_dump(cfg, f)
        check = subprocess.run([PROMTOOL, "check", "config", cfg_path], capture_output=True, text=True)
        if check.returncode != 0:
            fail("promtool check config (loopback variant): " + check.stdout + check.stderr)
        prom_log = open(os.path.join(tmp, "prometheus.log"), "wb")
        prom = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg_path}", f"--storage.tsdb.path={prom_dir}/data",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            stdout=prom_log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{prom_port}"
        deadline = time.time() + 60
        while True:
            try:
                r = prom_query(base, 'up{job="normserve"} == 1')
                if r["status"] == "success" and r["data"]["result"]:
                    break
            except OSError:
                pass
            if prom.poll() is not None or time.time() > deadline:
                raise RuntimeError("Prometheus never scraped normserve; log: "
                                   + open(os.path.join(tmp, "prometheus.log")).read()[-3000:])
            time.sleep(0.3)
        # rate() needs two samples in its window; traffic between scrapes makes it non-zero.
        for _ in range(3):
            time.sleep(1.2)
            drive_serving(channel)
        time.sleep(2.5)
        tsdb_names = set(http_json(f"{base}/api/v1/label/__name__/values")["data"])
        print(f"prometheus has {len(tsdb_names)} metric names; scraping {ports['metrics_port']}"
              f" after {time.time() - t0:.1f}s")

        # Label keys per metric, from the series Prometheus stored.
        label_keys = {}

        def keys_of(metric):
            if metric not in label_keys:
                url = f"{base}/api/v1/series?" + urllib.parse.urlencode({"match[]": metric})
                keys = set()
                for s in http_json(url)["data"]:
                    keys.update(s.keys())
                label_keys[metric] = keys
            return label_keys[metric]

        checked = empty = 0
        for where, raw, must_have_data in list(rule_expressions()) + list(dashboard_expressions()):
            expr = substitute(raw)
            m = re.fullmatch(r"\s*label_values\(\s*([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s*,\s*(\w+)\s*\)\s*", expr)
            if m:  # a Grafana variable query
                metric, label = m.group(1), m.group(3)
                if metric not in names and metric != "up":
                    if optional(metric):
                        continue
                    fail(f"{where}: {metric} is not exported by the server")
                elif metric in tsdb_names and label not in keys_of(metric):
                    fail(f"{where}: {metric} has no label {label!r} (labels: {sorted(keys_of(metric))})")
                checked += 1
                continue
            r = prom_query(base, expr)
            checked += 1
            if r.get("status") != "success":
                fail(f"{where}: Prometheus error {r.get('errorType')}: {r.get('error')}\n  {expr}")
                continue
            used = metric_names_in(expr)
            for n in sorted(used):
                if n == "up":
                    continue
                if n not in names and n not in tsdb_names:
                    if optional(n):
                        continue
                    fail(f"{where}: names metric {n}, which the server does not export\n  {expr}")
            known = [n for n in used if n in tsdb_names]
            for metric, label in selector_labels(expr):
                if metric in tsdb_names and label not in keys_of(metric):
                    fail(f"{where}: selector {metric}{{{label}...}}: no such label "
                         f"(labels: {sorted(keys_of(metric) - {'__name__'})})")
            group_keys = set().union(*[keys_of(n) for n in known]) if known else set()
            if known and len(known) == len(used):
                for lab in grouping_labels(expr) - {"le"} - group_keys:
                    fail(f"{where}: groups by {lab!r}, a label none of {sorted(known)} has\n  {expr}")
            if not r["data"]["result"]:
                empty += 1
                filtered = re.search(r'code\s*(=~|=|!~)|result\s*=|reason\s*=|>|<|!=|unless', expr)
                if must_have_data and known and len(known) == len(used) and not filtered:
                    fail(f"{where}: no series although every metric has samples\n  {expr}")
        print(f"{checked} expressions evaluated, {empty} with an empty result "
              f"(alert conditions that do not hold, filters on codes that did not occur)")
        # The loaded rules are the deploy rules, healthy.
        rules = http_json(f"{base}/api/v1/rules")["data"]["groups"]
        bad = [r["name"] for g in rules for r in g["rules"] if r.get("health") not in ("ok", "unknown")]
        if bad:
            fail(f"rules unhealthy in Prometheus: {bad}")
        n_rules = sum(len(g["rules"]) for g in rules)
        print(f"prometheus loaded {n_rules} rules; total {time.time() - t0:.1f}s")
    finally:
        if prom is not None:
            prom.send_signal(signal.SIGTERM)
            try:
                prom.wait(timeout=20)
            except subprocess.TimeoutExpired:
                prom.kill()
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=40)
        except subprocess.TimeoutExpired:
            server.kill()
            code = "killed"
        if code != 0:
            fail(f"normserve exited {code} on SIGTERM")
        if failures:
            log = open(os.path.join(tmp, "normserve.log"), errors="replace").read()
            print("--- normserve log (tail) ---\n" + log[-3000:])
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
