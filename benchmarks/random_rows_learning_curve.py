"""How the error on random layers falls as the calibration has more random rows.

    python benchmarks/random_rows_learning_curve.py [--data benchmarks/data] \\
        [--out benchmarks/data/random-rows-learning-curve.md]

The plan's random rows (sweep ``random``: log-uniform configurations, drawn like the held-out
layers of validate_gpu.py) are split into 5 folds. Each fold is predicted by the shipped form
(axes formula x neighbour correction) fitted on every other plan row and on 0, a quarter, half
or all of the other folds' random rows. Only calibration data is used: the held-out and
model-layer sets stay an honest test. This is what plan v5's second draw of random rows rests on.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from torch_alpha_profiler.correction import DEFAULT, of_fit  # noqa: E402
from torch_alpha_profiler.families import get_family  # noqa: E402
from torch_alpha_profiler.fit import fit_parameters  # noqa: E402
from torch_alpha_profiler.layers import take  # noqa: E402
from torch_alpha_profiler.tables import read_layer_table  # noqa: E402

SHARES = (0.0, 0.25, 0.5, 1.0)


def learning_curve(path: str, folds: int = 5, seed: int = 0):
    """{share: (formula APEs, corrected APEs)} over the random rows of calibration CSV ``path``."""
    table = read_layer_table(path)
    with open(path) as f:
        sweeps = np.array([r["sweep"] for r in csv.DictReader(f)])
    family = get_family("axes")
    random_rows, other = np.flatnonzero(sweeps == "random"), np.flatnonzero(sweeps != "random")
    rng = np.random.default_rng(seed)
    fold = rng.integers(0, folds, len(random_rows))
    out = {s: ([], []) for s in SHARES}
    for k in range(folds):
        test = random_rows[fold == k]
        pool = rng.permutation(random_rows[fold != k])
        t = take(table.arrays, test)
        for share in SHARES:
            train = np.concatenate([other, pool[:int(round(share * len(pool)))]])
            a, y = take(table.arrays, train), table.time_ms[train]
            params = fit_parameters(family, a, y)
            base = family.predict_ms(t, params)
            corrected = base * np.exp(of_fit(DEFAULT, family, params, a, y).log_factor(t, family.classify(t)))
            for ape, pred in zip(out[share], (base, corrected)):
                ape.append(np.abs(pred - table.time_ms[test]) / table.time_ms[test] * 100)
    return {s: tuple(np.concatenate(a) for a in v) for s, v in out.items()}, len(random_rows), folds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "data"))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "data",
                                                      "random-rows-learning-curve.md"))
    args = parser.parse_args(argv)
    lines = ["# Random layers: error against the number of random calibration rows", "",
             "Made by `python benchmarks/random_rows_learning_curve.py` from `benchmarks/data/calib-DTYPE.csv` "
             "(H100). The plan's random rows are split into 5 folds; each fold is predicted by the shipped form "
             "fitted on all the other plan rows plus a share of the other folds' random rows (the formula alone, "
             "and with the neighbour correction, whose points are the same training rows). Calibration data "
             "only.", ""]
    for dtype in args.dtypes:
        curve, n, folds = learning_curve(os.path.join(args.data, f"calib-{dtype}.csv"))
        lines += [f"## {dtype} ({n} random rows)", "",
                  "| random rows in each fit | formula MAPE % | shipped (formula x correction) MAPE % | "
                  "median APE % |", "|---:|---:|---:|---:|"]
        for share, (base, corrected) in curve.items():
            lines.append(f"| {int(round(share * n * (folds - 1) / folds))} (share {share:g}) | {base.mean():.1f} | "
                         f"{corrected.mean():.1f} | {np.median(corrected):.1f} |")
            print(dtype, lines[-1], flush=True)
        lines.append("")
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
