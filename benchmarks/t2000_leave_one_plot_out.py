"""How well does a fit on the paper's T2000 measurements carry to plots it did not see?

    python benchmarks/t2000_leave_one_plot_out.py [--csv ../shared/data/t2000_paper_measurements.csv]
                                                  [--out benchmarks/data/t2000-leave-one-plot-out.md]

The shared file holds five of the paper's experiments ("plot" column), each growing one axis.
Each variant of the paper family is fitted on four plots and predicts the fifth (leave one
plot out), and is fitted on all five (in-sample); the published constants (`t2000-paper`) are
shown beside them, fitted by the authors on all their data. CPU only.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from torch_alpha_profiler.families import get_family  # noqa: E402
from torch_alpha_profiler.fit import fit_parameters  # noqa: E402
from torch_alpha_profiler.layers import take  # noqa: E402
from torch_alpha_profiler.profile import load_profile  # noqa: E402
from torch_alpha_profiler.tables import read_layer_table  # noqa: E402


def variants():
    """(label, family, fixed) of the paper family's fits compared."""
    paper = get_family("paper")
    log = copy.copy(paper)
    log.residual = "log"
    return [("relative error, free per-call overhead (what `alpha-profiler fit` does)", paper, {}),
            ("relative error, no overhead (as in the paper)", paper, {"overhead_ms": 0.0}),
            ("log ratio, free overhead", log, {}),
            ("log ratio, no overhead", log, {"overhead_ms": 0.0})]


def mape(pred, meas):
    return float(np.mean(np.abs(pred - meas) / meas) * 100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", default=os.path.join(HERE, "..", "..", "shared", "data",
                                                      "t2000_paper_measurements.csv"))
    parser.add_argument("--out", default=os.path.join(HERE, "data", "t2000-leave-one-plot-out.md"))
    args = parser.parse_args(argv)
    table = read_layer_table(args.csv)
    plots = np.array(table.columns["plot"])
    names = sorted(set(plots))
    meas = table.time_ms
    published = load_profile("t2000-paper", warn_device=False)
    pred = get_family("paper").predict_ms(table.arrays, published.parameters)
    rows = [("published constants (`t2000-paper`; fitted by the authors on all their data)",
             f"{mape(pred, meas):.1f}", mape(pred, meas),
             [mape(pred[plots == p], meas[plots == p]) for p in names])]
    for label, family, fixed in variants():
        held = np.zeros(len(meas))
        for p in names:
            params = fit_parameters(family, take(table.arrays, plots != p), meas[plots != p], fixed)
            held[plots == p] = family.predict_ms(take(table.arrays, plots == p), params)
        params = fit_parameters(family, table.arrays, meas, fixed)
        rows.append((label, f"{mape(family.predict_ms(table.arrays, params), meas):.1f}", mape(held, meas),
                     [mape(held[plots == p], meas[plots == p]) for p in names]))
    lines = ["# The paper's T2000 data: leave one plot out", "",
             f"Made by `python benchmarks/t2000_leave_one_plot_out.py` from `{os.path.basename(args.csv)}` "
             f"({len(meas)} layers, {len(names)} plots). 'held-out' predicts each plot from a fit on the "
             "others; for the published constants both columns are the same predictions.", "",
             "| paper family | in-sample MAPE % | held-out plot MAPE % | " + " | ".join(names) + " |",
             "|---|---:|---:|" + "---:|" * len(names)]
    for label, insample, held, by_plot in rows:
        lines.append(f"| {label} | {insample} | {held:.1f} | " + " | ".join(f"{v:.1f}" for v in by_plot) + " |")
    lines += ["", "A refit on some plots extrapolates poorly to an experiment that grows another axis "
              "(the kernel-size plot above all): to predict the paper's other T2000 measurements, the "
              "published constants are the better choice."]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
