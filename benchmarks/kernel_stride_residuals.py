"""What led to the kernel-size factors and the gather pass (session 6), from the calibration alone.

    python benchmarks/kernel_stride_residuals.py [--data benchmarks/data] [--out benchmarks/data/kernel-stride-residuals.md]

1. Per-MAC time of 5x5 and 7x7 layers against 3x3 ones of the same batch, channels, size,
   stride and grouping (pairs within calib-DTYPE.csv).
2. Median of predicted / measured by kernel size and stride for dense convolutions, each
   layer predicted by a 5-fold CV fit of the session-5 form (the axes family with the
   kernel-size factors at 1 and no gather pass), and of the shipped form.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from compare_forms import cross_validate  # noqa: E402
from torch_alpha_profiler.families import LAYER_CLASSES  # noqa: E402
from torch_alpha_profiler.tables import read_layer_table  # noqa: E402

SESSION5 = {**{f"{c}.{p}": 1.0 for c in LAYER_CLASSES for p in ("k5_f", "k7_f")}, "conv1x1.gather": 0.0}


def per_mac_ratios(A, y):
    """{(kind, side): median per-MAC time ratio to the 3x3 layer of the same geometry}."""
    by = collections.defaultdict(dict)
    for i in range(len(y)):
        if A.is_linear[i] or A.K1[i] != A.K2[i]:
            continue
        kind = "depthwise" if A.Cin[i] == A.groups[i] else ("dense" if A.groups[i] == 1 else "grouped")
        by[(kind, A.N[i], A.Cin[i], A.Cout[i], A.Hin[i], A.stride[i], A.groups[i])][A.K1[i]] = y[i]
    out = {}
    for kind in ("dense", "depthwise"):
        for side in (5, 7):
            r = [v[side] / v[3] / (side * side / 9) for k, v in by.items() if k[0] == kind and 3 in v and side in v]
            if r:
                out[(kind, side)] = (len(r), float(np.median(r)))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                                                      "kernel-stride-residuals.md"))
    args = parser.parse_args(argv)
    lines = ["# Kernel size and stride in the calibration (H100)", "",
             "Made by `python benchmarks/kernel_stride_residuals.py` from `calib-DTYPE.csv`.", ""]
    for dtype in ("float32", "bfloat16"):
        table = read_layer_table(os.path.join(args.data, f"calib-{dtype}.csv"))
        A, y = table.arrays, table.time_ms
        lines += [f"## {dtype}", "", "Per-MAC time against the 3x3 layer of the same geometry (median over pairs):", "",
                  "| layers | kernel | pairs | per-MAC ratio |", "|---|---:|---:|---:|"]
        for (kind, side), (n, r) in per_mac_ratios(A, y).items():
            lines.append(f"| {kind} | {side}x{side} | {n} | {r:.2f} |")
        lines += ["", "Dense convolutions, median predicted / measured of a 5-fold CV fit:", "",
                  "| kernel | stride | layers | session-5 form | shipped form |", "|---:|---:|---:|---:|---:|"]
        # each layer predicted by a 5-fold CV fit (compare_forms' folds)
        old, new = (cross_validate(table, "axes", fixed) / y for fixed in (SESSION5, {}))
        dense = ~A.is_linear & (A.groups == 1)
        for k in (1, 3, 5, 7):
            for s in (1, 2):
                m = dense & (A.K1 == k) & (A.K2 == k) & (A.stride == s)
                lines.append(f"| {k}x{k} | {s} | {int(m.sum())} | {np.median(old[m]):.2f} | {np.median(new[m]):.2f} |")
        lines.append("")
        print(dtype, "done", flush=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
