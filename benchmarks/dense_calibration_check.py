"""Does a user's `calibrate --dense 15000` give what the shipped profile gives?

    python benchmarks/dense_calibration_check.py [--raw benchmarks/data/fresh-run25/fresh-float32.csv]

Run 25 (`benchmarks/gpu_dense_calibration.sh`) calibrated fp32 from scratch on an H100 with
`--dense 15000`: the plan and 15,000 dense random layers, timed in one run on another machine
than the committed calibration. This refits its layer table here as `calibrate` did (formula,
residual trees, neighbour correction; `fit_profile(..., trees=True)`) and predicts the held-out
layers (accuracy.md), the fresh held-out layers (accuracy-fresh.md) and the models' layers timed
alone without a bias (as in accuracy.md, the held-out layers with theirs: their Linear rows have
one), beside the shipped `h100-fp32`. `calibrate --dense` draws its random layers outside the
plan only, so held-out layers that happen to be among them are left out of both
columns (their count is printed).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def main(argv=None):
    import numpy as np
    from scipy.stats import spearmanr

    from torch_alpha_profiler.calibrate.plan import config_key
    from torch_alpha_profiler.cost import evaluate
    from torch_alpha_profiler.fit import fit_profile
    from torch_alpha_profiler.profile import load_profile
    from torch_alpha_profiler.tables import read_layer_table
    from torch_alpha_profiler.trees import describe

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--raw", default=os.path.join(DATA, "fresh-run25", "fresh-float32.csv"))
    p.add_argument("--profile", default="h100-fp32")
    p.add_argument("--dtype", default="float32")
    args = p.parse_args(argv)

    raw = read_layer_table(args.raw)
    fresh = fit_profile(raw, family="axes", name="run25", trees=True)
    shipped = load_profile(args.profile, warn_device=False)
    seen = {config_key(dict(zip(raw.header, row))) for row in zip(*(raw.columns[h] for h in raw.header))}
    dense = sum(s == "dense" for s in raw.columns["sweep"])
    print(f"refitted {os.path.relpath(args.raw, os.path.dirname(os.path.dirname(DATA)))}: {len(raw)} layers ({dense} dense), "
          f"{describe(fresh.trees)}; shipped profile {args.profile}")
    print("| set | layers | left out (in the run's table) | run 25 refit MAPE % (Spearman) | "
          "shipped MAPE % (Spearman) |")
    print("|---|---:|---:|---:|---:|")
    for label, path in (("held-out layers", f"heldout-{args.dtype}.csv"),
                        ("fresh held-out layers", os.path.join("fresh-validation", f"heldout-{args.dtype}.csv")),
                        ("models' layers, no bias", f"model-layer-times-{args.dtype}.csv")):
        table = read_layer_table(os.path.join(DATA, path))
        rows = [dict(zip(table.header, r)) for r in zip(*(table.columns[h] for h in table.header))]
        # the models' layers were timed with their biases, which the layer fit does not cost
        biased = np.array([label.startswith("models") and r.get("bias", "0") not in ("", "0")
                           for r in rows])
        keep = np.array([config_key(r) not in seen for r in rows]) & ~biased
        cells = []
        for profile in (fresh, shipped):
            pred = evaluate(table.arrays, profile).predicted_ms[keep]
            meas = table.time_ms[keep]
            cells.append(f"{np.mean(np.abs(pred / meas - 1)) * 100:.1f} ({spearmanr(pred, meas)[0]:.3f})")
        left = int((~keep & ~biased).sum())
        print(f"| {label} | {int(keep.sum())} | {left} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
