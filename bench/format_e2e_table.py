#!/usr/bin/python3
"""Table of bench/run_e2e_bench.sh: end-to-end gRPC figures next to the in-process engine.

Reads the JSON lines of bench/normserve_loadgen (plus run_e2e_bench.sh's "meta" line) and
prints, per model, every configuration with its ratio to the in-process reference:

- 1 client: p50 latency / in-process p50 latency (target <= 1.05), and the gRPC overhead
  (p50 difference) in microseconds;
- N > 1 clients: throughput / in-process throughput of the server's configuration
  (workers streams x intra-op threads; target >= 0.95).

Exit status 0 even when a target is missed (the table says so); 1 on unreadable input.
"""

import json
import sys

LATENCY_TARGET = 1.05
THROUGHPUT_TARGET = 0.95


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

    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    missed = [f"{m}: {what}" for m, what, ok in verdicts if not ok]
    print()
    print("targets: all met" if not missed else "targets missed: " + "; ".join(missed))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: format_e2e_table.py RESULTS.jsonl", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
