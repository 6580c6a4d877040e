#!/usr/bin/python3
"""Joins the JSON lines of bench/run_bench.sh into the comparison table.

  /usr/bin/python3 bench/format_table.py build/bench_results.jsonl

Lines are {"runner": "normserve" | "onnxruntime" | "pytorch_torchscript", "model": ...,
"median_ms": ..., "p90_ms": ..., "round": ..., "precision": "fp32" | "bf16" | "int8"},
{"runner": "conv_peak", "gflops": ...} (the highest of several is used) and an optional
{"runner": "meta", ...}. A model or runner missing from the file shows as "-". Lines
without a precision are fp32. bf16 and int8 lines make a second table against ONNX
Runtime fp32 and ONNX Runtime int8 on the same QDQ file.

With several rounds, latencies are the median over rounds of each round's median (p90),
and a ratio is the median of the per-round ratios (runners of one round ran back to back,
so slow drift of the machine cancels), followed by the range over rounds.
"""

import json
import statistics
import sys

RUNNERS = [("normserve", "normserve"), ("onnxruntime", "ORT"),
           ("pytorch_torchscript", "PyTorch")]


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def _ratio(a, b):
    return None if a is None or b is None or b <= 0 else a / b


def _median_of(rounds, key):
    values = [r[key] for r in rounds.values() if r.get(key) is not None]
    return statistics.median(values) if values else None


def _round_ratio(ns_rounds, peer_rounds):
    """Median and range of normserve / peer medians over the rounds both ran."""
    ratios = [_ratio(ns_rounds[k].get("median_ms"), peer_rounds[k].get("median_ms"))
              for k in ns_rounds if k in peer_rounds]
    ratios = [r for r in ratios if r is not None]
    if not ratios:
        return "-"
    text = f"{statistics.median(ratios):.2f}"
    if len(ratios) > 1:
        text += f" ({min(ratios):.2f}-{max(ratios):.2f})"
    return text


def format_table(records):
    meta = next((r for r in records if r.get("runner") == "meta"), {})
    peaks = [r for r in records if r.get("runner") == "conv_peak"]
    peak = max(peaks, key=lambda r: r["gflops"]) if peaks else None
    by_model = {}  # model -> runner -> round -> record (fp32)
    reduced = {}  # model -> (runner, precision) -> round -> record (every precision)
    for r in records:
        if r.get("runner") in dict(RUNNERS):
            precision = r.get("precision", "fp32")
            reduced.setdefault(r["model"], {}).setdefault(
                (r["runner"], precision), {})[r.get("round", 0)] = r
            if precision == "fp32":
                by_model.setdefault(r["model"], {}).setdefault(r["runner"], {})[r.get("round", 0)] = r
    order = list(meta.get("models", []))  # every requested model, even if all runners failed
    order += [m for m in by_model if m not in order]
    peak_gflops = peak.get("gflops") if peak else None

    header = ["model"] + [f"{label} med/p90 ms" for _, label in RUNNERS]
    header += ["ns/ORT", "ns/PT", "GFLOP/run", "ns GFLOP/s", "% peak"]
    rows = []
    for model in order:
        runs = by_model.get(model, {})
        row = [model]
        for runner, _ in RUNNERS:
            rounds = runs.get(runner, {})
            med, p90 = _median_of(rounds, "median_ms"), _median_of(rounds, "p90_ms")
            row.append("-" if med is None else f"{med:.2f} / {p90:.2f}")
        ns = runs.get("normserve", {})
        row.append(_round_ratio(ns, runs.get("onnxruntime", {})))
        row.append(_round_ratio(ns, runs.get("pytorch_torchscript", {})))
        row.append(_fmt(_median_of(ns, "gflop_per_run"), ".3f"))
        achieved = _median_of(ns, "gflops_achieved")
        row.append(_fmt(achieved, ".1f"))
        pct = _ratio(achieved, peak_gflops)
        row.append("-" if pct is None else f"{100 * pct:.0f}%")
        rows.append(row)

    lines = []
    if meta:
        lines.append(f"batch 1, {meta.get('threads', '?')} threads pinned to CPUs "
                     f"{meta.get('cpus', '?')}, {meta.get('rounds', 1)} round(s) of "
                     f"{meta.get('seconds', '?')} s per runner; "
                     f"{meta.get('cpu_model', '')}")
        lines.append(f"load average before {meta.get('loadavg_before', '?')}, "
                     f"after {meta.get('loadavg_after', '?')}")
    if peak:
        lines.append(f"conv peak (oneDNN 3x3 conv, {peak.get('shape', '')}, "
                     f"{peak.get('implementation', '')}): {peak['gflops']:.1f} GFLOP/s "
                     f"at the median, {peak.get('gflops_best', 0):.1f} at the best run"
                     + (f" (best of {len(peaks)}: "
                        + ", ".join(f"{p['gflops']:.1f}" for p in peaks) + ")"
                        if len(peaks) > 1 else ""))
    else:
        lines.append("conv peak: not measured")
    lines.append("ns/ORT, ns/PT: normserve median / peer median (< 1: normserve faster), median "
                 "over rounds (range); GFLOP/s and % peak: normserve at its median")
    lines += _render(header, rows)
    if any(p != "fp32" for runs in reduced.values() for _, p in runs):
        lines.append("")
        lines += _reduced_table(order, reduced)
    return "\n".join(lines)


def _render(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    out = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    for row in rows:
        out.append("  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                             for i, (c, w) in enumerate(zip(row, widths))))
    return out


# (numerator, denominator, issue 10's target): normserve bf16 and int8 against ONNX Runtime
# fp32 on the float file, and int8 against ONNX Runtime's int8 path on the same QDQ file.
REDUCED_RATIOS = [
    (("normserve", "bf16"), ("onnxruntime", "fp32"), "bf16/ORT", "<= 0.55 on resnet50"),
    (("normserve", "int8"), ("onnxruntime", "fp32"), "int8/ORT", "<= 0.35"),
    (("normserve", "int8"), ("onnxruntime", "int8"), "int8/ORT int8", "<= 0.75"),
]


def _reduced_table(order, reduced):
    columns = [("normserve", "fp32"), ("normserve", "bf16"), ("normserve", "int8"),
               ("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    header = ["model"] + [f"{'ns' if r == 'normserve' else 'ORT'} {p} ms" for r, p in columns]
    header += [label for _, _, label, _ in REDUCED_RATIOS]
    rows = []
    for model in order:
        runs = reduced.get(model, {})
        row = [model]
        for key in columns:
            row.append(_fmt(_median_of(runs.get(key, {}), "median_ms"), ".2f"))
        for num, den, _, _ in REDUCED_RATIOS:
            row.append(_round_ratio(runs.get(num, {}), runs.get(den, {})))
        rows.append(row)
    notes = ["reduced precision: median ms; ratios per round as above (< 1: normserve faster); "
             "int8 = the model quantized by normserve-quantize, the same file for both int8 runners; "
             "issue 10 targets: " + ", ".join(f"{label} {target}"
                                              for _, _, label, target in REDUCED_RATIOS)]
    return notes + _render(header, rows)


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} RESULTS.jsonl")
    with open(sys.argv[1]) as f:
        records = [json.loads(line) for line in f if line.strip()]
    print(format_table(records))


if __name__ == "__main__":
    main()
