#!/usr/bin/env python3
"""Time vs N on one GPU: lasp's default kernels, lasp's sm_90a kernels and (when measured in
the same run) the fla peer, with the memory floor drawn (issue 9, item 5).

  python3 bench/plots/sweep_plot.py BENCH_JSON [--fla FLA_JSONL] [--card NAME] --out PNG

BENCH_JSON: lasp_bench --benchmark_out (rows sweep/NxK, perhead/S32K, perhead/S128K for the
default kernels; sweep-sm90/NxK and perhead-sm90/S32K for the sm_90a family). FLA_JSONL:
bench/peers/fla_sweep.py --out. The floor is the fewest HBM bytes of the pass (math.md
section 6, the same count lasp_bench uses) over the copy bandwidth the benchmark measured
(its `copy_GBps` context field, else 4200 GB/s). Shape: B=1, H=16, D=E=128, bf16.
"""
import argparse
import json
import re

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

H, D, E = 16, 128, 128


def floor_ms(n, pas, gbps):
    th = n * H
    fwd = th * 2.0 * (2 * D + 2 * E)
    bwd = th * 2.0 * (4 * D + 3 * E)
    b = fwd if pas == "fwd" else fwd + bwd
    return b / (gbps * 1e9) * 1e3


def parse_lasp(path):
    doc = json.load(open(path))
    gbps = float(doc.get("context", {}).get("copy_GBps", 4200.0))
    rows = {}
    for b in doc["benchmarks"]:
        if not b["name"].endswith("_median"):
            continue
        m = re.match(r"([\w-]+)/(S32K|S128K|N\d+K)/(fwd|bwd|step)", b["name"])
        if not m:
            continue
        tag, shape, pas = m.groups()
        n = {"S32K": 32768, "S128K": 131072}.get(shape) or int(shape[1:-1]) * 1024
        fam = {"sweep": "lasp (default kernels)", "perhead": "lasp (default kernels)",
               "sweep-sm90": "lasp (sm_90a kernels)", "perhead-sm90": "lasp (sm_90a kernels)"}.get(tag)
        if fam:
            rows.setdefault((fam, pas), {})[n] = b["real_time"]  # time_unit ms
    return rows, gbps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bench_json")
    ap.add_argument("--fla")
    ap.add_argument("--card", default="NVIDIA H200")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rows, gbps = parse_lasp(a.bench_json)
    if a.fla:
        for line in open(a.fla):
            r = json.loads(line)
            if r.get("fwd_ms") is not None:
                rows.setdefault(("fla chunk_simple_gla", "fwd"), {})[r["N"]] = r["fwd_ms"]
            if r.get("step_ms") is not None:
                rows.setdefault(("fla chunk_simple_gla", "step"), {})[r["N"]] = r["step_ms"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, pas, title in zip(axes, ["fwd", "step"], ["forward", "forward + backward"]):
        ns = set()
        for (fam, p), pts in sorted(rows.items()):
            if p != pas:
                continue
            xs = sorted(pts)
            ns.update(xs)
            ax.plot(xs, [pts[x] for x in xs], marker="o", label=fam)
        if ns:
            xs = sorted(ns)
            ax.plot(xs, [floor_ms(x, pas, gbps) for x in xs], "k--", label=f"memory floor ({gbps:.0f} GB/s)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("N (tokens), B=1, H=16, D=E=128, bf16, per-head decay")
        ax.set_ylabel("ms")
        ax.set_title(f"{title}, {a.card}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    for (fam, p), pts in sorted(rows.items()):
        print(fam, p, " ".join(f"{n // 1024}K:{pts[n]:.3f}" for n in sorted(pts)))


if __name__ == "__main__":
    main()
