"""Choose the cost model's form by cross-validated error on the calibration plan.

    python benchmarks/compare_forms.py [--data benchmarks/data] [--out docs/forms.md]

Each variant is a family, or the `axes` family with one effect switched off
(parameters pinned through `fit_parameters(fixed=...)`). Every calibration
layer is predicted by a fit that did not see it (5 folds); the held-out and
model-layer sets are not used here, so they stay an honest test.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from torch_alpha_profiler.families import get_family  # noqa: E402
from torch_alpha_profiler.fit import fit_parameters  # noqa: E402
from torch_alpha_profiler.layers import take  # noqa: E402
from torch_alpha_profiler.tables import read_layer_table  # noqa: E402

AXES_CLASSES = get_family("axes").classes


def _each_class(param, value):
    return {f"{c}.{param}": value for c in AXES_CLASSES}


VARIANTS = [
    ("flops", "FLOPs x constant + overhead", {}),
    ("paper", "paper alpha_K(S), 2 classes, refitted", {}),
    ("axes", "axes without the channel axes (only S corrected, as in the paper)",
     {**_each_class("g_cin", 0.0), **_each_class("g_cout", 0.0)}),
    ("axes", "axes with a free kernel power K ** k_exp (not shipped)", _each_class("k_exp", None)),
    ("axes", "axes with a per-tap latency tap x (K - 1) (not shipped; channels-last only)",
     _each_class("tap_ms", None)),
    ("axes", "axes without the per-image factor on H_out x W_out (g_hw = 0)", _each_class("g_hw", 0.0)),
    ("axes", "axes with a stride factor for strided 3x3-7x7, grouped and depthwise convolutions (not shipped; "
     "channels-last only)", {f"{c}.stride_f": None for c in ("convkxk", "grouped", "depthwise")}),
    ("axes", "axes without the gather pass of strided 1x1 convolutions (gather = 0)", {"conv1x1.gather": 0.0}),
    ("axes", "axes with a stride factor for strided 1x1 convolutions instead of the gather pass (not shipped)",
     {"conv1x1.gather": 0.0, "conv1x1.stride_f": None}),
    ("axes", "axes with a stride factor for strided 1x1 convolutions besides the gather pass (not shipped)",
     {"conv1x1.stride_f": None}),
    ("axes", "axes without the kernel-size factors (k5_f = k7_f = 1)",
     {**_each_class("k5_f", 1.0), **_each_class("k7_f", 1.0)}),
    ("axes", "axes without wave quantization (wave_exp = 0)", _each_class("wave_exp", 0.0)),
    ("axes", "axes without the memory bound (bandwidth 1e5 GB/s)", _each_class("bw_gb_per_s", 1e5)),
    ("axes", "axes without the alignment penalties (mis = 1)", {"mis_cin": 1.0, "mis_cout": 1.0}),
    ("axes", "axes, plain least squares instead of the Huber loss", {"loss": "linear"}),
    ("axes", "axes, full form (shipped: Huber loss, scale 0.3 in log ratio)", {}),
]


def cross_validate(table, family, fixed, folds=5, seed=0, loss=None):
    fam = get_family(family)
    if loss is not None:  # a variant of the fit itself: a copy of the family with another loss
        import copy

        fam = copy.copy(fam)
        fam.loss = loss
    fold = np.random.default_rng(seed).integers(0, folds, len(table))
    pred = np.zeros(len(table))
    for k in range(folds):
        params = fit_parameters(fam, take(table.arrays, fold != k), table.time_ms[fold != k], fixed)
        pred[fold == k] = fam.predict_ms(take(table.arrays, fold == k), params)
    return pred


def cross_validate_corrected(table, settings_list, folds=5, seed=0, trees=None):
    """The shipped form's CV predictions, alone and with each neighbour correction of
    ``settings_list`` (correction.py), whose points are the fold's training layers and their
    residuals under the fold's fit: (formula's predictions, [corrected predictions, ...]).
    ``trees``: residual trees' settings (trees.py): each fold also fits trees on its formula's
    residuals, and the corrections correct what they left."""
    from torch_alpha_profiler import trees as residual_trees
    from torch_alpha_profiler.correction import build

    fam = get_family("axes")
    fold = np.random.default_rng(seed).integers(0, folds, len(table))
    base = np.zeros(len(table))
    corrected = [np.zeros(len(table)) for _ in settings_list]
    for k in range(folds):
        train, test = take(table.arrays, fold != k), take(table.arrays, fold == k)
        measured = table.time_ms[fold != k]
        params = fit_parameters(fam, train, measured)
        base[fold == k] = fam.predict_ms(test, params)
        fitted, walked = fam.predict_ms(train, params), base[fold == k]
        if trees is not None:
            walk = residual_trees.from_section(residual_trees.fit(train, np.log(measured / fitted), trees))
            fitted, walked = fitted * np.exp(walk.log_factor(train)), walked * np.exp(walk.log_factor(test))
        for out, settings in zip(corrected, settings_list):
            corr = build(settings, train, measured, fitted, fam.classify(train))
            out[fold == k] = walked * np.exp(corr.log_factor(test, fam.classify(test)))
    return base, corrected


def correction_variants():
    """(label, settings) of the neighbour corrections compared; the shipped one last."""
    from torch_alpha_profiler.correction import DEFAULT

    def variant(**change):
        return {**DEFAULT, **change}

    flat = {**DEFAULT["scales"], "stride": 1.0, "mis_cin": 1.0, "mis_cout": 1.0}
    return ([(f"bandwidth {h}", variant(bandwidth=h)) for h in (0.5, 1.0, 1.25)]
            + [(f"shrink {s}", variant(shrink=s)) for s in (0.01, 0.2)]
            + [("stride and alignment at scale 1 (as far apart as a doubling)", variant(scales=flat)),
               (f"shipped: bandwidth {DEFAULT['bandwidth']}, shrink {DEFAULT['shrink']}, stride and alignment "
                "at scale 0.5", dict(DEFAULT))])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "data"))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--out", default="docs/forms.md")
    args = parser.parse_args(argv)
    from scipy.stats import spearmanr

    lines = ["# Choosing the form: cross-validated error on the calibration plan", "",
             "Made by `python benchmarks/compare_forms.py` from `benchmarks/data/calib-DTYPE.csv` "
             "(H100, plan v5). 5-fold cross-validation: each layer is predicted by a fit that did not "
             "see it. An effect stays in the shipped form when switching it off raises the CV MAPE by at least 0.5 points in at least one dtype. "
             "The first table varies the formula (each row without the neighbour correction); the second adds "
             "the neighbour correction to the shipped formula. Both are on the plan alone, without residual "
             "trees: the shipped profiles fit formula, trees and correction on the plan and 40,000 more random "
             "layers a dtype, and the trees' settings are chosen in "
             "`benchmarks/data/dense-random/learning-curve.md` (docs/model.md).", ""]
    for dtype in args.dtypes:
        table = read_layer_table(os.path.join(args.data, f"calib-{dtype}.csv"))
        lines += [f"## {dtype} ({len(table)} layers)", "",
                  "| variant | CV MAPE % | CV median APE % | CV Spearman | seconds |", "|---|---:|---:|---:|---:|"]
        for family, label, fixed in VARIANTS:
            t0 = time.monotonic()
            fixed = dict(fixed)
            pred = cross_validate(table, family, fixed, loss=fixed.pop("loss", None))
            ape = np.abs(pred - table.time_ms) / table.time_ms * 100
            lines.append(f"| {label} | {ape.mean():.1f} | {np.median(ape):.1f} | "
                         f"{spearmanr(pred, table.time_ms)[0]:.3f} | {time.monotonic() - t0:.0f} |")
            print(dtype, lines[-1], flush=True)
        lines += ["", f"### The neighbour correction ({dtype})", "",
                  "The shipped form's fit, then each layer's prediction corrected by the fold's training "
                  "layers near it (torch_alpha_profiler/correction.py).", "",
                  "| correction | CV MAPE % | CV median APE % | CV Spearman |", "|---|---:|---:|---:|"]
        variants = correction_variants()
        base, corrected = cross_validate_corrected(table, [settings for _, settings in variants])
        for label, pred in [("none (the formula alone)", base)] + [(l, p) for (l, _), p in zip(variants, corrected)]:
            ape = np.abs(pred - table.time_ms) / table.time_ms * 100
            lines.append(f"| {label} | {ape.mean():.1f} | {np.median(ape):.1f} | {spearmanr(pred, table.time_ms)[0]:.3f} |")
            print(dtype, lines[-1], flush=True)
        lines.append("")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
