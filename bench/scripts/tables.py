#!/usr/bin/env python3
"""Prints the results tables of bench/README.md from a measure.sh output dir.

Usage: bench/scripts/tables.py OUT_DIR

Runs named NAME-1, NAME-2, ... are repeats: they make one row per target
with the median and every run's figure. Other runs make one row per target.
"""
import glob
import json
import os
import re
import statistics
import sys


def reports(out):
    for path in sorted(glob.glob(os.path.join(out, "*", "*", "report.json"))):
        run = os.path.basename(os.path.dirname(os.path.dirname(path)))
        with open(path) as f:
            yield run, json.load(f)


def ratio(report, target):
    for c in report["comparison"]:
        if c["target"] == target:
            return c["service_throughput_ratio"]
    return None


def fmt(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def cpu(t):
    return t["loadgen_cpu_us_per_request"], t.get("target_cpu_us_per_request")


def repeated(groups):
    print("| scenario | target | reserves ok/s (runs) | p50 ms | p99 ms (runs) | service x | "
          "µs/request: generator, target | oversold units | lost holds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, runs in groups.items():
        targets = [t["target"] for t in runs[0]["targets"]]
        for target in targets:
            rows = [t for r in runs for t in r["targets"] if t["target"] == target]
            ok = [t["ops"]["reserve"]["ok_per_s"] for t in rows]
            p50 = [t["ops"]["reserve"]["p50_ms"] for t in rows]
            p99 = [t["ops"]["reserve"]["p99_ms"] for t in rows]
            ratios = [x for x in (ratio(r, target) for r in runs) if x is not None]
            gen = statistics.median(cpu(t)[0] for t in rows)
            own = [cpu(t)[1] for t in rows if cpu(t)[1] is not None]
            oversold = sum(t["audit"]["oversold_units"] for t in rows)
            lost = sum(t["audit"]["lost_acked_holds"] for t in rows)
            print(f"| {name} | {target} | {statistics.median(ok):.0f} ({', '.join(f'{x:.0f}' for x in ok)}) | "
                  f"{statistics.median(p50):.2f} | {statistics.median(p99):.2f} "
                  f"({', '.join(f'{x:.2f}' for x in p99)}) | "
                  f"{fmt(statistics.median(ratios)) if ratios else '1.00'} | "
                  f"{gen:.1f}, {fmt(statistics.median(own), 1) if own else '-'} | {oversold} | {lost} |")


def single(runs):
    print("| run | target | ok/s | reserves ok/s | reserve p50 ms | p95 ms | p99 ms | p99.9 ms | max ms | "
          "errors | oversold units | lost holds | service x |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in runs:
        for t in r["targets"]:
            o = t["ops"]["reserve"]
            x = ratio(r, t["target"])
            print(f"| {name} | {t['target']} | {t['total']['ok_per_s']:.0f} | {o['ok_per_s']:.0f} | "
                  f"{o['p50_ms']:.2f} | {o['p95_ms']:.2f} | {o['p99_ms']:.2f} | {o['p999_ms']:.2f} | "
                  f"{o['max_ms']:.1f} | {100 * t['error_rate']:.2f}% | {t['audit']['oversold_units']} | "
                  f"{t['audit']['lost_acked_holds']} | {fmt(x) if x is not None else '-'} |")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    groups, singles = {}, []
    for run, report in reports(sys.argv[1]):
        m = re.fullmatch(r"(.+)-(\d+)", run)
        if m:
            groups.setdefault(m.group(1), []).append(report)
        else:
            singles.append((run, report))
    if groups:
        repeated(groups)
        print()
    if singles:
        single(singles)


if __name__ == "__main__":
    main()
