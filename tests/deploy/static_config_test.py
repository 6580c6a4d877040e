#!/usr/bin/python3
"""Structural checks of deploy/ that need no cluster and no container engine.

  - Kubernetes manifests (deploy/k8s): every document parses; the Deployments have native
    gRPC readiness/liveness probes on the serving port; selectors match pod labels;
    referenced ConfigMap, PVCs and Secret volumes exist or are documented; the HPA scales
    the serving Deployment; the training Service is internal (ClusterIP), reaches the
    trainer's training port, and no other Service exposes it; kustomization lists every
    file; ConfigMap keys are variables the entrypoint understands.
  - docker-compose.yml: parses, the three services, every bind-mounted file exists.
  - alerts_test.yml: every alert of alerts.yml fires and later resolves in a unit test.
  - Grafana: dashboards are valid JSON with unique panel ids, the provisioned data
    source uid, grid within 24 columns.
  - Dockerfile: FROM debian:bookworm-slim, the exposed ports, a non-root USER, VOLUMEs,
    HEALTHCHECK through normserve-cli; its runtime packages exist in apt's cache.
  - deploy/entrypoint.sh: environment variables become flags (run with a stand-in binary).

Environment: NORMSERVE_SOURCE_DIR.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

SOURCE = os.environ.get("NORMSERVE_SOURCE_DIR",
                        os.path.join(os.path.dirname(os.path.abspath(__file__)), "../.."))
DEPLOY = os.path.join(SOURCE, "deploy")
K8S = os.path.join(DEPLOY, "k8s")


def read(path):
    with open(path) as f:
        return f.read()


def k8s_docs():
    docs = []
    for path in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
        if os.path.basename(path) == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(read(path)):
            if doc:
                docs.append((os.path.basename(path), doc))
    return docs


def entrypoint_flags():
    text = read(os.path.join(DEPLOY, "entrypoint.sh"))
    m = re.search(r"for f in (.*?); do", text, re.S)
    return set(m.group(1).replace("\\", " ").split())


class KubernetesManifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = k8s_docs()
        cls.by_kind = {}
        for f, d in cls.docs:
            cls.by_kind.setdefault(d["kind"], []).append(d)

    def named(self, kind, name):
        for d in self.by_kind.get(kind, []):
            if d["metadata"]["name"] == name:
                return d
        self.fail(f"no {kind} {name}")

    def test_every_document_has_api_version_kind_name(self):
        for f, d in self.docs:
            with self.subTest(file=f):
                self.assertIn("apiVersion", d)
                self.assertIn("kind", d)
                self.assertTrue(d["metadata"]["name"])

    def test_required_objects(self):
        for kind in ("Deployment", "Service", "ConfigMap", "PersistentVolumeClaim",
                     "HorizontalPodAutoscaler"):
            self.assertIn(kind, self.by_kind, kind)

    def test_kustomization_lists_every_file(self):
        kust = yaml.safe_load(read(os.path.join(K8S, "kustomization.yaml")))
        files = {os.path.basename(p) for p in glob.glob(os.path.join(K8S, "*.yaml"))}
        self.assertEqual(set(kust["resources"]), files - {"kustomization.yaml"})

    def test_deployments(self):
        configmaps = {d["metadata"]["name"] for d in self.by_kind["ConfigMap"]}
        claims = {d["metadata"]["name"] for d in self.by_kind["PersistentVolumeClaim"]}
        known = entrypoint_flags()
        for dep in self.by_kind["Deployment"]:
            name = dep["metadata"]["name"]
            with self.subTest(deployment=name):
                spec = dep["spec"]
                pod = spec["template"]
                for k, v in spec["selector"]["matchLabels"].items():
                    self.assertEqual(pod["metadata"]["labels"].get(k), v, "selector/labels")
                self.assertTrue(pod["spec"]["securityContext"]["runAsNonRoot"])
                c = pod["spec"]["containers"][0]
                ports = {p["name"]: p["containerPort"] for p in c["ports"]}
                self.assertEqual(ports["grpc"], 8001)
                self.assertEqual(ports["metrics"], 8002)
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    self.assertEqual(c[probe]["grpc"]["port"], 8001, probe)
                for ref in c.get("envFrom", []):
                    self.assertIn(ref["configMapRef"]["name"], configmaps)
                for env in c.get("env", []):
                    if env["name"].startswith("NORMSERVE_"):
                        self.assertIn(env["name"][10:].lower(), known, env["name"])
                volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
                for m in c["volumeMounts"]:
                    self.assertIn(m["name"], volumes)
                for v in volumes.values():
                    if "persistentVolumeClaim" in v:
                        self.assertIn(v["persistentVolumeClaim"]["claimName"], claims)
                # The drain (--drain_seconds) fits in the grace period.
                cm = self.named("ConfigMap", "normserve-config")["data"]
                self.assertLess(int(cm["NORMSERVE_DRAIN_SECONDS"]) + 5,
                                pod["spec"]["terminationGracePeriodSeconds"])

    def test_configmap_keys_are_entrypoint_variables(self):
        known = entrypoint_flags()
        for key in self.named("ConfigMap", "normserve-config")["data"]:
            self.assertTrue(key.startswith("NORMSERVE_"), key)
            self.assertIn(key[len("NORMSERVE_"):].lower(), known, key)

    def test_services_select_pods_and_ports(self):
        pods = [d["spec"]["template"] for d in self.by_kind["Deployment"]]
        for svc in self.by_kind["Service"]:
            name = svc["metadata"]["name"]
            with self.subTest(service=name):
                sel = svc["spec"]["selector"]
                matching = [p for p in pods
                            if all(p["metadata"]["labels"].get(k) == v for k, v in sel.items())]
                self.assertTrue(matching, "selects no pod template")
                for port in svc["spec"]["ports"]:
                    target = port["targetPort"]
                    for p in matching:
                        names = {cp["name"] for cp in p["spec"]["containers"][0]["ports"]}
                        self.assertIn(target, names)

    def test_training_service_is_internal_and_only_one(self):
        training = self.named("Service", "normserve-training")
        self.assertEqual(training["spec"].get("type", "ClusterIP"), "ClusterIP")
        self.assertEqual([p["port"] for p in training["spec"]["ports"]], [8003])
        for svc in self.by_kind["Service"]:
            if svc is training:
                continue
            for port in svc["spec"]["ports"]:
                self.assertNotIn(port["targetPort"], ("training", 8003), svc["metadata"]["name"])
        for kind in ("Ingress",):
            self.assertNotIn(kind, self.by_kind)
        trainer = self.named("Deployment", "normserve-trainer")
        self.assertEqual(trainer["spec"]["replicas"], 1)
        self.assertEqual(trainer["spec"]["strategy"]["type"], "Recreate")

    def test_hpa_scales_serving(self):
        hpa = self.by_kind["HorizontalPodAutoscaler"][0]
        ref = hpa["spec"]["scaleTargetRef"]
        self.assertEqual(ref["kind"], "Deployment")
        self.assertEqual(ref["name"], "normserve")
        self.named("Deployment", "normserve")
        self.assertLessEqual(hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"])

    def test_state_claim_is_single_writer(self):
        state = self.named("PersistentVolumeClaim", "normserve-training-state")
        self.assertEqual(state["spec"]["accessModes"], ["ReadWriteOnce"])
        serving = self.named("Deployment", "normserve")
        claims = [v["persistentVolumeClaim"]["claimName"]
                  for v in serving["spec"]["template"]["spec"]["volumes"]
                  if "persistentVolumeClaim" in v]
        self.assertNotIn("normserve-training-state", claims)


class AlertTests(unittest.TestCase):
    def test_every_alert_fires_and_resolves_in_the_unit_tests(self):
        rules = yaml.safe_load(read(os.path.join(DEPLOY, "prometheus/alerts.yml")))
        alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
        tests = yaml.safe_load(read(os.path.join(DEPLOY, "prometheus/alerts_test.yml")))
        fired, resolved_after = {}, {}
        for t in tests["tests"]:
            cases = sorted(t.get("alert_rule_test", []), key=lambda c: int(c["eval_time"][:-1]))
            for c in cases:
                name = c["alertname"]
                if c.get("exp_alerts"):
                    fired.setdefault(name, c["eval_time"])
                elif name in fired:
                    resolved_after[name] = c["eval_time"]
        for a in sorted(alerts):
            with self.subTest(alert=a):
                self.assertIn(a, fired, "never fires in alerts_test.yml")
                self.assertIn(a, resolved_after, "never resolves after firing")


class Compose(unittest.TestCase):
    def test_compose(self):
        doc = yaml.safe_load(read(os.path.join(DEPLOY, "docker-compose.yml")))
        self.assertEqual(set(doc["services"]), {"normserve", "prometheus", "grafana"})
        ns = doc["services"]["normserve"]
        self.assertTrue(os.path.exists(os.path.join(DEPLOY, ns["build"]["context"],
                                                    ns["build"]["dockerfile"])))
        published = " ".join(ns["ports"])
        for p in ("8001:8001", "8002:8002", "127.0.0.1:8003:8003"):
            self.assertIn(p, published)
        known = entrypoint_flags()
        for key in ns["environment"]:
            self.assertIn(key[len("NORMSERVE_"):].lower(), known, key)
        for svc in doc["services"].values():
            for vol in svc.get("volumes", []):
                src = vol.split(":")[0]
                if src.startswith("."):
                    self.assertTrue(os.path.exists(os.path.join(DEPLOY, src)), src)


class Grafana(unittest.TestCase):
    def test_dashboards(self):
        ds = yaml.safe_load(read(os.path.join(DEPLOY, "grafana/provisioning/datasources/prometheus.yml")))
        uid = ds["datasources"][0]["uid"]
        paths = sorted(glob.glob(os.path.join(DEPLOY, "grafana/dashboards/*.json")))
        self.assertGreaterEqual(len(paths), 2)
        uids = set()
        for path in paths:
            with self.subTest(dashboard=os.path.basename(path)):
                d = json.loads(read(path))
                self.assertNotIn(d["uid"], uids)
                uids.add(d["uid"])
                ids = [p["id"] for p in d["panels"]]
                self.assertEqual(len(ids), len(set(ids)))
                for p in d["panels"]:
                    g = p["gridPos"]
                    self.assertLessEqual(g["x"] + g["w"], 24, p["title"])
                    for t in p.get("targets", []):
                        self.assertEqual(t["datasource"]["uid"], uid)
                        self.assertTrue(t["expr"].strip())
        prov = yaml.safe_load(read(os.path.join(DEPLOY, "grafana/provisioning/dashboards/normserve.yml")))
        self.assertEqual(prov["providers"][0]["options"]["path"], "/var/lib/grafana/dashboards")


class Dockerfile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.text = read(os.path.join(SOURCE, "Dockerfile"))
        cls.joined = re.sub(r"\\\n", " ", cls.text)

    def test_structure(self):
        froms = re.findall(r"^FROM\s+(\S+)", self.text, re.M)
        self.assertEqual(froms, ["debian:bookworm-slim", "debian:bookworm-slim"])
        self.assertRegex(self.text, r"(?m)^EXPOSE 8001 8002 8003$")
        user = re.findall(r"^USER\s+(\S+)", self.text, re.M)
        self.assertTrue(user and not user[-1].startswith(("root", "0")))
        self.assertRegex(self.text, r"(?m)^VOLUME .*repository.*state")
        self.assertRegex(self.joined, r"HEALTHCHECK .*CMD normserve-cli .*health")
        self.assertIn("ENTRYPOINT [\"/usr/local/bin/normserve-entrypoint\"]", self.text)

    def test_runtime_packages_exist(self):
        if shutil.which("apt-cache") is None:
            self.skipTest("no apt-cache")
        runtime = self.joined.split("AS runtime", 1)[1]
        m = re.search(r"apt-get install -y --no-install-recommends (.*?)&&", runtime)
        pkgs = m.group(1).split()
        self.assertIn("libgrpc++1.51", pkgs)
        out = subprocess.run(["apt-cache", "policy", *pkgs], capture_output=True, text=True).stdout
        # One "pkg:\n  Installed: ...\n  Candidate: ..." block per known package.
        candidates = dict(re.findall(r"(?m)^(\S+):\n\s+Installed: .*\n\s+Candidate: (\S+)", out))
        for p in pkgs:
            with self.subTest(package=p):
                self.assertIn(p, candidates, "unknown to apt")
                self.assertNotEqual(candidates[p], "(none)")


class Entrypoint(unittest.TestCase):
    def test_environment_becomes_flags(self):
        tmp = tempfile.mkdtemp()
        try:
            script = read(os.path.join(DEPLOY, "entrypoint.sh"))
            fake = os.path.join(tmp, "normserve")
            with open(fake, "w") as f:
                f.write('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
            os.chmod(fake, 0o755)
            ep = os.path.join(tmp, "entrypoint.sh")
            with open(ep, "w") as f:
                f.write(script.replace("/usr/local/bin/normserve ", fake + " "))
            env = {"PATH": os.environ["PATH"], "NORMSERVE_PORT": "9001",
                   "NORMSERVE_WORKERS": "3", "NORMSERVE_STATE_DIR": "/state",
                   "NORMSERVE_TLS_CERT": "", "NORMSERVE_TRAINING_TOKEN": "secret"}
            out = subprocess.run(["sh", ep, "--max_queue=5"], env=env, capture_output=True,
                                 text=True, check=True).stdout.split()
            self.assertTrue(out[0].startswith("--undefok=training_host,training_port,"))
            self.assertIn("live_drift_fraction", out[0])
            self.assertIn("--port=9001", out)
            self.assertIn("--workers=3", out)
            self.assertIn("--training_host=0.0.0.0", out)
            self.assertIn("--training_state_dir=/state/training", out)
            self.assertEqual(out[-1], "--max_queue=5")  # arguments come last and win
            self.assertFalse([a for a in out if a.startswith("--tls_cert")])  # empty: unset
            self.assertFalse([a for a in out if "secret" in a])  # the token stays in the env
        finally:
            shutil.rmtree(tmp)


if __name__ == "__main__":
    unittest.main(verbosity=2)
