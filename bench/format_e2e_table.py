#!/usr/bin/python3
"""Table of bench/run_e2e_bench.sh: end-to-end gRPC figures next to the in-process engine.

Reads the JSON lines of bench/normserve_loadgen (plus run_e2e_bench.sh's "meta" line) and
prints, per model, every configuration with its ratio to the in-process reference:

- 1 client: p50 latency / in-process p50 latency (target <= 1.05), and the gRPC overhead
  (p50 difference) in microseconds;
- N > 1 clients: throughput / in-process throughput of the server's configuration
  (workers streams x intra-op threads; target >= 0.95).

With the policy sweep's lines (they carry "policy"), instead one row per model, client
count and policy (issue 12): p50/p99, req/s, req/s against the best fixed streams x
threads shape at that client count and against `latency` (today's scheduling), and the
issue's targets for `auto`: 1 client p50 <= 1.05x latency's, 8 clients >= 1.25x latency's
req/s (ResNet-18) and >= 0.95x the best fixed shape's. Several rounds: the median of each
figure over the rounds.

Exit status 0 even when a target is missed (the table says so); 1 on unreadable input.
"""

import json
import statistics
import sys

LATENCY_TARGET = 1.05
THROUGHPUT_TARGET = 0.95
AUTO_LATENCY_TARGET = 1.05
AUTO_VS_LATENCY_TARGET = 1.25
AUTO_VS_BEST_FIXED_TARGET = 0.95
ACCUMULATE_VS_SERVING_TARGET = 0.8


def print_table(table):
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for i, row in enumerate(table):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def _medians(rows):
    """(model, clients, policy) -> median p50, p99, req/s over rounds, summed errors."""
    figures = {}
    for r in rows:
        f = figures.setdefault((r["model"], r["clients"], r["policy"]),
                               {"p50": [], "p99": [], "rps": [], "errors": 0})
        f["p50"].append(r["p50_ms"])
        f["p99"].append(r["p99_ms"])
        f["rps"].append(r["throughput_rps"])
        f["errors"] += r.get("errors", 0)
    return {k: {"p50": statistics.median(v["p50"]), "p99": statistics.median(v["p99"]),
                "rps": statistics.median(v["rps"]), "errors": v["errors"]}
            for k, v in figures.items()}


def training_report(training_rows, serving_rows):
    """Accumulate (one observed forward pass and a durable log append per request) against
    serving's Predict under the same policy and client count (issue 12 item 4)."""
    train, serve = _medians(training_rows), _medians(serving_rows)
    table = [("model", "clients", "policy", "Accumulate p50 ms", "Accumulate req/s",
              "vs serving req/s")]
    verdicts = []
    for key in sorted(train):
        model, n, policy = key
        f = train[key]
        cells = [model, str(n), policy + (" [%d errors]" % f["errors"] if f["errors"] else ""),
                 f"{f['p50']:.3f}", f"{f['rps']:.1f}", "-"]
        if key in serve:
            ratio = f["rps"] / serve[key]["rps"]
            cells[5] = f"{ratio:.3f}x"
            if n == 8 and policy == "auto":
                verdicts.append((f"{model}: Accumulate 8-client req/s {ratio:.3f}x serving's "
                                 f"(target >= {ACCUMULATE_VS_SERVING_TARGET})",
                                 ratio >= ACCUMULATE_VS_SERVING_TARGET))
        table.append(cells)
    print()
    print_table(table)
    print()
    for what, ok in verdicts:
        print(("ok      " if ok else "MISSED  ") + what)


def policy_report(rows):
    """The policy sweep's table; rows are e2e lines with a "policy"."""
    training = [r for r in rows if r.get("api") == "training"]
    rows = [r for r in rows if r.get("api") != "training"]
    figures = {}  # (model, clients, policy) -> lists of figures over rounds
    models, clients_seen, policies = [], [], []
    for r in rows:
        key = (r["model"], r["clients"], r["policy"])
        f = figures.setdefault(key, {"p50": [], "p99": [], "rps": [], "errors": 0})
        f["p50"].append(r["p50_ms"])
        f["p99"].append(r["p99_ms"])
        f["rps"].append(r["throughput_rps"])
        f["errors"] += r.get("errors", 0)
        for seen, value in ((models, r["model"]), (clients_seen, r["clients"]),
                            (policies, r["policy"])):
            if value not in seen:
                seen.append(value)
    med = {k: {"p50": statistics.median(v["p50"]), "p99": statistics.median(v["p99"]),
               "rps": statistics.median(v["rps"]), "errors": v["errors"]}
           for k, v in figures.items()}
    header = ("model", "clients", "policy", "p50 ms", "p99 ms", "req/s", "vs best fixed",
              "vs latency req/s", "vs latency p50")
    table = [header]
    verdicts = []
    for model in models:
        for n in sorted(clients_seen):
            here = {p: med[(model, n, p)] for p in policies if (model, n, p) in med}
            fixed = {p: f for p, f in here.items() if p.startswith("fixed")}
            best = max(fixed, key=lambda p: fixed[p]["rps"]) if fixed else None
            lat = here.get("latency")
            for p, f in here.items():
                cells = [model, str(n), p + (" [%d errors]" % f["errors"] if f["errors"] else ""),
                         f"{f['p50']:.3f}", f"{f['p99']:.3f}", f"{f['rps']:.1f}", "", "", ""]
                if best:
                    cells[6] = f"{f['rps'] / fixed[best]['rps']:.3f}x ({best[6:]})"
                if lat:
                    cells[7] = f"{f['rps'] / lat['rps']:.3f}x"
                    cells[8] = f"{f['p50'] / lat['p50']:.3f}x"
                table.append(cells)
            auto = here.get("auto")
            if auto and lat and n == 1:
                ratio = auto["p50"] / lat["p50"]
                verdicts.append((f"{model}: auto 1-client p50 {ratio:.3f}x latency's "
                                 f"(target <= {AUTO_LATENCY_TARGET})",
                                 ratio <= AUTO_LATENCY_TARGET))
            if auto and n == 8:
                if lat and model == "resnet18":
                    ratio = auto["rps"] / lat["rps"]
                    verdicts.append((f"{model}: auto 8-client req/s {ratio:.3f}x latency's "
                                     f"(target >= {AUTO_VS_LATENCY_TARGET})",
                                     ratio >= AUTO_VS_LATENCY_TARGET))
                if best:
                    ratio = auto["rps"] / fixed[best]["rps"]
                    verdicts.append((f"{model}: auto 8-client req/s {ratio:.3f}x the best fixed "
                                     f"({best[6:]}) (target >= {AUTO_VS_BEST_FIXED_TARGET})",
                                     ratio >= AUTO_VS_BEST_FIXED_TARGET))
    print_table(table)
    print()
    for what, ok in verdicts:
        print(("ok      " if ok else "MISSED  ") + what)
    if training:
        training_report(training, rows)


def main(path):
    rows, meta = [], {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if r.get("runner") == "meta":
                meta = r
            else:
                rows.append(r)
    if not rows:
        print(f"no results in {path}", file=sys.stderr)
        return 1

    if meta:
        print(f"CPU: {meta.get('cpu_model')} ({meta.get('nproc')} CPUs); load average "
              f"before {meta.get('loadavg_before')}, after {meta.get('loadavg_after')}; "
              f"{meta.get('rounds')} round(s) of {meta.get('seconds')} s per configuration")
    policy_rows = [r for r in rows if "policy" in r]
    if policy_rows:
        policy_report(policy_rows)
        return 0
    header = ("model", "configuration", "p50 ms", "p99 ms", "req/s", "vs in-process",
              "target", "")
    table = [header]
    verdicts = []
    models = []
    for r in rows:
        if r["model"] not in models:
            models.append(r["model"])
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        lat_ref = next((r for r in mine if r["runner"] == "inprocess" and r["role"] == "latency"),
                       None)
        thr_ref = next((r for r in mine
                        if r["runner"] == "inprocess" and r["role"] == "throughput"), lat_ref)
        for r in mine:
            p50, p99, rps = r["p50_ms"], r["p99_ms"], r["throughput_rps"]
            cells = [model, "", f"{p50:.3f}", f"{p99:.3f}", f"{rps:.1f}", "", "", ""]
            if r["runner"] == "inprocess":
                cells[1] = (f"in-process {r['streams']} stream(s) x {r['threads']} thread(s)"
                            + {"latency": "", "throughput": " (server config)",
                               "alternative": " (alternative)"}[r["role"]])
                if r["role"] == "alternative" and thr_ref:
                    cells[5] = f"{rps / thr_ref['throughput_rps']:.3f}x req/s of server config"
            else:
                n = r["clients"]
                chan = {"single": "", "per_client": ", channel per client",
                        "shared": ", one shared channel"}[r["channel"]]
                cells[1] = f"gRPC {r['api']}, {n} client{'s' if n > 1 else ''}{chan}"
                if r.get("errors"):
                    cells[1] += f" [{r['errors']} errors]"
                if n == 1 and lat_ref:
                    ratio = p50 / lat_ref["p50_ms"]
                    overhead_us = (p50 - lat_ref["p50_ms"]) * 1e3
                    ok = ratio <= LATENCY_TARGET
                    cells[5] = f"{ratio:.3f}x p50 ({overhead_us:+.0f} us)"
                    cells[6] = f"<= {LATENCY_TARGET:.2f}x"
                    cells[7] = "ok" if ok else "MISSED"
                    verdicts.append((model, "1-client latency", ok))
                elif n > 1 and thr_ref:
                    ratio = rps / thr_ref["throughput_rps"]
                    ok = ratio >= THROUGHPUT_TARGET
                    cells[5] = f"{ratio:.3f}x req/s"
                    cells[6] = f">= {THROUGHPUT_TARGET:.2f}x"
                    cells[7] = "ok" if ok else "MISSED"
                    verdicts.append((model, f"{n}-client throughput ({r['channel']})", ok))
            table.append(cells)

    print_table(table)
    missed = [f"{m}: {what}" for m, what, ok in verdicts if not ok]
    print()
    print("targets: all met" if not missed else "targets missed: " + "; ".join(missed))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: format_e2e_table.py RESULTS.jsonl", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
