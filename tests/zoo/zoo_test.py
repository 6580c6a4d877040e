#!/usr/bin/python3
"""The torchvision zoo against the engine: exports (cached), runs, judges, tabulates.

    zoo_test.py --models DIR --runner PATH [--subset quick|full] [--doc OUT.md] [--results TSV]
    zoo_test.py --models DIR --runner PATH --doc OUT.md --doc-from TSV   (table only)

Exports the subset with export_zoo.py (cached in DIR; in a process beside this one),
runs zoo_runner once per (model, variant) in its own process (a crash costs one variant, not the run), and compares
with PyTorch: a variant passes when every comparison of it (batch 1 and 3, both sizes for
dynamic H/W) ran with max|got - ref| / max(1e-6, max|ref|) <= 1e-4.

EXPECTED_PASS lists what must pass; any of it failing fails the test. Everything else is
printed as KNOWN-FAILING with its reason; one that starts passing is printed as NEWLY
PASSING (add it to EXPECTED_PASS in the same change, so it cannot silently regress).
"""

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import export_zoo  # noqa: E402  (one list of models and variants, one cache key)
from export_zoo import MODELS, VARIANTS  # noqa: E402

TOLERANCE = 1e-4

# The default-run subset: small, and covering the families issue 8 found refused.
QUICK = {
    "resnet18": list(VARIANTS),
    "mobilenet_v3_large": ["op17_preserve_fold_dynbatch", "op17_eval_fold_dynbatch"],
    "densenet121": ["op17_preserve_fold_dynbatch"],
    "shufflenet_v2_x1_0": ["op17_preserve_fold_dynbatch"],
    "convnext_tiny": ["op17_preserve_fold_dynbatch"],
    "lraspp_mobilenet_v3_large": ["op17_preserve_fold_dynbatch"],
}

# (model, variant) pairs that pass on today's engine (the full run of docs/model_zoo.md):
# every pair except the two PyTorch 1.13 cannot export (AlexNet and VGG's adaptive
# average pool with a dynamic input size).
_EXPORT_FAILS = {("alexnet", "op17_preserve_fold_dynhw"), ("vgg11_bn", "op17_preserve_fold_dynhw")}
EXPECTED_PASS = {(m, v) for m in MODELS for v in VARIANTS} - _EXPORT_FAILS


def selection(subset):
    if subset == "quick":
        return [(m, v) for m, vs in QUICK.items() for v in vs]
    return [(m, v) for m in MODELS for v in VARIANTS]


def is_exported(vdir, model, variant):
    """True once export_zoo.py has written this variant with the current script and spec
    (the same key it stamps; a stale directory from an older script does not count)."""
    key = hashlib.sha256(export_zoo.SCRIPT_BYTES + json.dumps(
        [model, VARIANTS[variant]], sort_keys=True).encode()).hexdigest()[:16]
    try:
        with open(os.path.join(vdir, "STAMP")) as f:
            return f.read() == key
    except OSError:
        return False


def run_variant(runner, vdir):
    """[(label, status, err, compile_ms, run_ms, message)] for one variant directory."""
    env = dict(os.environ, OMP_NUM_THREADS="2")
    try:
        # Run inside the variant's directory: refusals then name "./model.onnx", not a long
        # build path that would eat the 200 characters the runner keeps of a message.
        proc = subprocess.run([os.path.abspath(runner), "."], capture_output=True, text=True,
                              timeout=900, env=env, cwd=vdir)
    except subprocess.TimeoutExpired:
        return [("*", "timeout", float("nan"), 0, 0, "zoo_runner exceeded 900 s")]
    rows = []
    for line in proc.stdout.splitlines():
        f = line.split("\t")
        if len(f) == 6:
            rows.append((f[0], f[1], float(f[2]), float(f[3]), float(f[4]), f[5]))
    if proc.returncode != 0 or not rows:
        tail = (proc.stderr.strip().splitlines() or [""])[-1][:200]
        rows.append(("*", "crashed", float("nan"), 0, 0, "exit %d %s" % (proc.returncode, tail)))
    return rows


def verdict(rows):
    """(passed, worst error, reason) of one variant; passed is None when PyTorch itself
    could not export it (nothing the engine can fix, so neither pass nor failure)."""
    if all(r[1] == "export_refused" for r in rows):
        return None, float("nan"), "PyTorch export: " + rows[0][5]
    worst = max((r[2] for r in rows if r[1] == "ran"), default=float("nan"))
    for label, status, err, _, _, message in rows:
        if status != "ran":
            return False, worst, "%s %s: %s" % (label, status, message)
        if not err <= TOLERANCE:
            return False, worst, "%s: max rel err %.3g > %g" % (label, err, TOLERANCE)
    return True, worst, ""


def results_from_tsv(path):
    """{(model, variant): verdict} from a --results file (the table without a re-run)."""
    rows = {}
    with open(path) as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) == 8:
                m, v, label, status, err, compile_ms, run_ms, message = fields
                rows.setdefault((m, v), []).append(
                    (label, status, float(err), float(compile_ms), float(run_ms), message))
    return {k: verdict(r) for k, r in rows.items()}


def write_doc(path, results, seconds):
    variants = list(VARIANTS)
    reasons = []
    lines = [
        "# Model zoo coverage",
        "",
        "Generated by `tests/zoo/zoo_test.py --subset full`: configure with `-DNORMSERVE_ZOO=ON`,",
        "run `ctest -L '^zoo$'` (the label is a regex; plain `zoo` also matches `zoo_quick`), copy",
        "`build/zoo/model_zoo.md` here. Do not edit by hand. torchvision 0.14 models, random",
        "weights, random BN running statistics; each cell is the worst",
        "max|engine - PyTorch| / max(1e-6, max|PyTorch|) over batch 1 and 3 (and two input sizes",
        "for `dynhw`); pass is <= %g. Wall time of the generating run (exports not yet cached"
        " included): %s." % (TOLERANCE, "%.0f s" % seconds if seconds else "not recorded"),
        "",
        "Variants: opset 13/17, `training` PRESERVE (BN kept in the file) or EVAL (PyTorch folds",
        "BN into Conv), `do_constant_folding` on/off, axes: dynamic batch, static batch 1,",
        "dynamic batch+H+W. Classification at 160x160 (AlexNet, VGG: 224x224; dynhw also",
        "128x128 / 160x160), segmentation ('out' tensor) at 160x160 (dynhw also 192x224).",
        "",
        "| model | " + " | ".join(v.replace("_", " ") for v in variants) + " |",
        "|---|" + "---|" * len(variants),
    ]
    for model in MODELS:
        cells = []
        for v in variants:
            if (model, v) not in results:
                cells.append("")
                continue
            passed, worst, reason = results[(model, v)]
            if passed:
                cells.append("pass %.1e" % worst)
                continue
            reason = re.sub(r'model "[^"]*": ', "", reason)
            if reason not in reasons:
                reasons.append(reason)
            cells.append("%s [%d]" % ("n/a" if passed is None else "**fail**", reasons.index(reason) + 1))
        lines.append("| %s | %s |" % (model, " | ".join(cells)))
    lines += ["", "## Reasons", ""]
    lines += ["%d. %s" % (i + 1, r.replace("|", "/")) for i, r in enumerate(reasons)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", required=True, help="export cache directory")
    parser.add_argument("--runner", required=True)
    parser.add_argument("--subset", choices=["quick", "full"], default="quick")
    parser.add_argument("--doc", help="write the markdown table here")
    parser.add_argument("--results", help="write every comparison as TSV here")
    parser.add_argument("--doc-from", metavar="TSV",
                        help="only write --doc from an earlier --results file (no run)")
    parser.add_argument("--seconds", type=float, help="with --doc-from: the run's wall time")
    args = parser.parse_args()
    if args.doc_from:
        write_doc(args.doc, results_from_tsv(args.doc_from), args.seconds)
        return 0

    pairs = selection(args.subset)
    t0 = time.time()
    # The exporter runs beside the engine: each variant is run as soon as its stamp is
    # written, so the two halves overlap instead of adding up.
    exporter = subprocess.Popen([sys.executable, os.path.join(HERE, "export_zoo.py"), "--out",
                                 args.models, "--select", ",".join("%s/%s" % p for p in pairs)])

    results, regressions, known, newly, unexportable = {}, [], [], [], []
    tsv = []
    t_wait = 0.0
    for model, variant in pairs:
        vdir = os.path.join(args.models, model, variant)
        tw = time.time()
        while not is_exported(vdir, model, variant):
            if exporter.poll() is not None:
                if is_exported(vdir, model, variant):
                    break
                print("export_zoo.py exited %d before %s/%s" % (exporter.returncode, model, variant))
                return 1
            time.sleep(1)
        t_wait += time.time() - tw
        rows = run_variant(args.runner, vdir)
        for r in rows:
            print("%s/%s %s %s err=%.3g compile=%.0fms run=%.0fms %s" % ((model, variant) + r), flush=True)
            tsv.append("\t".join([model, variant] + [str(x) for x in r]))
        passed, worst, reason = verdict(rows)
        results[(model, variant)] = (passed, worst, reason)
        name = "%s/%s" % (model, variant)
        if passed is None:
            unexportable.append("%s: %s" % (name, reason))
        elif (model, variant) in EXPECTED_PASS and not passed:
            regressions.append("%s: %s" % (name, reason))
        elif (model, variant) not in EXPECTED_PASS and not passed:
            known.append("%s: %s" % (name, reason))
        elif (model, variant) not in EXPECTED_PASS:
            newly.append(name)
    if exporter.wait() != 0:
        print("export_zoo.py exited %d" % exporter.returncode)
        return 1
    t_total = time.time() - t0

    print("\n== zoo %s: %d variants in %.0f s (%.0f s of it waiting for exports)" % (
        args.subset, len(pairs), t_total, t_wait))
    for u in unexportable:
        print("NOT EXPORTABLE " + u)
    for k in known:
        print("KNOWN-FAILING " + k)
    for n in newly:
        print("NEWLY PASSING %s (add it to EXPECTED_PASS in tests/zoo/zoo_test.py)" % n)
    for r in regressions:
        print("REGRESSION " + r)
    if args.results:
        with open(args.results, "w") as f:
            f.write("\n".join(tsv) + "\n")
    if args.doc:
        write_doc(args.doc, results, t_total)
    passed = sum(1 for p in results.values() if p[0])
    print("%d of %d variants pass (%d not exportable); %d expected, %d regressions" % (
          passed, len(pairs), len(unexportable),
          sum(1 for p in pairs if p in EXPECTED_PASS), len(regressions)))
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
