#!/usr/bin/env python3
"""Sums an Nsight Compute raw CSV (`ncu --csv --page raw --print-units base --metrics
gpu__time_duration.sum`) by kernel: where a traced run's GPU time goes, largest first.

    kernels.py TRACE.csv [TOP]
"""
import csv
import sys
from collections import defaultdict


def rows(path):
    with open(path, newline="", errors="replace") as f:
        lines = [line for line in f if line.startswith('"')]
    reader = csv.reader(lines)
    header = next(r for r in reader if "Kernel Name" in r)
    name, duration = header.index("Kernel Name"), header.index("gpu__time_duration.sum")
    for r in reader:
        value = r[duration].replace(",", "") if len(r) > duration else ""
        if value.replace(".", "", 1).isdigit():
            yield r[name], float(value)


def main():
    path, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25
    total, count = defaultdict(float), defaultdict(int)
    for name, ns in rows(path):
        short = name if len(name) <= 110 else name[:107] + "..."
        total[short] += ns
        count[short] += 1
    whole = sum(total.values()) or 1.0
    print(f"| kernel | launches | total ms | mean µs | share |\n|---|---:|---:|---:|---:|")
    for k in sorted(total, key=total.get, reverse=True)[:top]:
        print(f"| `{k}` | {count[k]} | {total[k] / 1e6:.2f} | {total[k] / count[k] / 1e3:.1f} "
              f"| {100 * total[k] / whole:.1f} % |")
    print(f"\n{sum(count.values())} launches, {whole / 1e6:.2f} ms of kernel time in all.")


if __name__ == "__main__":
    main()
