"""Choose the forms of the training-step layer classes and of the energy model by cross-validated error.

    python benchmarks/compare_train_energy_forms.py [--data benchmarks/data] [--out docs/forms-train-energy.md]

Reads the calibration's training steps (`calib-DTYPE-train.csv`) and energy stage
(`calib-DTYPE-energy.csv`, with `calib-DTYPE-ops.csv` for the ops' bytes and geometry).
Every calibration row is predicted by a fit that did not see it (5 folds). Whole
models are not used here: they stay an honest test (docs/accuracy.md).

* Training-step layers: the axes family refitted whole on step times (shipped), refitted
  only in its speed, floor, bandwidth and wave parameters (the channels-last refit's
  rule), or the forward prediction times a per-class median step/forward ratio.
* Energy: one constant power x time, or static power x time + energy per FLOP per class +
  energy per byte (shipped), each fitted with rows weighted by their energy to the power
  0, 0.5 or 1. The criterion is the energy-weighted error (sum |error| / sum energy),
  since a network's energy is a sum of many calls; fit_energy picks the weighting by it.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from torch_alpha_profiler.energy import FLOP_CLASSES, WEIGHT_EXPONENTS, _nnls_relative  # noqa: E402
from torch_alpha_profiler.families import get_family  # noqa: E402
from torch_alpha_profiler.fit import CHANNELS_LAST_FREE, fit_channels_last, fit_profile  # noqa: E402
from torch_alpha_profiler.powerfit import ENERGY_EXCLUDED_SWEEPS, energy_features, _usable  # noqa: E402
from torch_alpha_profiler.tables import read_layer_table  # noqa: E402
from torch_alpha_profiler.trainfit import _nhwc, _ok, layer_rows_table  # noqa: E402

FOLDS, SEED = 5, 0
FOUR = ("tau_ms_per_mmac", "t0_ms", "bw_gb_per_s", "wave_exp")  # the channels-last refit before k_exp


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _stats(pred, meas):
    from scipy.stats import spearmanr

    ape = np.abs(pred / meas - 1) * 100
    return ape.mean(), np.sum(np.abs(pred - meas)) / np.sum(meas) * 100, spearmanr(pred, meas)[0]


def train_forms(data, dtype):
    family = get_family("axes")
    base = fit_profile(read_layer_table(os.path.join(data, f"calib-{dtype}.csv")), family="axes",
                       keep_data=False).parameters
    rows = [r for r in _rows(os.path.join(data, f"calib-{dtype}-train.csv"))  # as trainfit.fit_train's NCHW fit
            if _ok(r) and r["source"] == "layer" and r.get("input_grad", "1") != "0" and not _nhwc(r)]
    fold = np.random.default_rng(SEED).permutation(len(rows)) % FOLDS
    t = np.array([float(r["time_ms"]) for r in rows])
    preds = {k: np.zeros(len(rows)) for k in ("refit whole (shipped)", "refit speed, floor, bandwidth, wave",
                                              "forward x per-class median ratio")}
    for k in range(FOLDS):
        train = layer_rows_table([r for r, f in zip(rows, fold) if f != k], "train")
        test = layer_rows_table([r for r, f in zip(rows, fold) if f == k], "test")
        sel = fold == k
        preds["refit whole (shipped)"][sel] = family.predict_ms(
            test.arrays, fit_profile(train, family="axes", keep_data=False).parameters)
        preds["refit speed, floor, bandwidth, wave"][sel] = family.predict_ms(
            test.arrays, fit_channels_last(train, "axes", base, free=FOUR, cv=False)["parameters"])
        forward, cls = family.predict_ms(train.arrays, base), family.classify(train.arrays)
        ratio = {c: np.median(train.time_ms[cls == c] / forward[cls == c]) for c in np.unique(cls)}
        preds["forward x per-class median ratio"][sel] = family.predict_ms(test.arrays, base) * np.array(
            [ratio.get(c, np.median(list(ratio.values()))) for c in family.classify(test.arrays)])
    return len(rows), [(label, *_stats(p, t)) for label, p in preds.items()]


def channels_last_train_forms(data, dtype):
    """CV of the channels-last training-step refit (trainfit: on top of the NCHW training fit),
    with and without the kernel-size power and the per-tap latency."""
    family = get_family("axes")
    rows = [r for r in _rows(os.path.join(data, f"calib-{dtype}-train.csv"))
            if _ok(r) and r["source"] == "layer" and r.get("input_grad", "1") != "0"]
    base = fit_profile(layer_rows_table([r for r in rows if not _nhwc(r)], "train"), family="axes",
                       keep_data=False).parameters
    nhwc = [r for r in rows if _nhwc(r)]
    fold = np.random.default_rng(SEED).permutation(len(nhwc)) % FOLDS
    t = np.array([float(r["time_ms"]) for r in nhwc])
    out = []
    for label, free in (("speed, floor, bandwidth, wave", FOUR),
                        ("speed, floor, bandwidth, wave, kernel power", FOUR + ("k_exp",)),
                        ("speed, floor, bandwidth, wave, kernel power, per-tap latency",
                         FOUR + ("k_exp", "tap_ms")),
                        ("speed, floor, bandwidth, wave, kernel power, per-tap latency, per-image factor",
                         FOUR + ("k_exp", "tap_ms", "h_hw", "g_hw")),
                        ("speed, floor, bandwidth, wave, kernel power, per-tap latency, per-image factor, stride and "
                         "kernel-size factors (default)", CHANNELS_LAST_FREE["axes"]),
                        ("all parameters", None)):
        pred = np.zeros(len(nhwc))
        for k in range(FOLDS):
            train = layer_rows_table([r for r, f in zip(nhwc, fold) if f != k], "train")
            test = layer_rows_table([r for r, f in zip(nhwc, fold) if f == k], "test")
            pred[fold == k] = family.predict_ms(test.arrays, fit_channels_last(train, "axes", base, free=free, cv=False)["parameters"])
        out.append((label, *_stats(pred, t)))
    return len(nhwc), out


def energy_forms(data, dtype, sources, all_sweeps=False):
    """CV statistics of each energy form and weighting on the usable rows of ``sources`` (with
    ``all_sweeps``, also the rows of powerfit.ENERGY_EXCLUDED_SWEEPS)."""
    ops = _rows(os.path.join(data, f"calib-{dtype}-ops.csv"))
    rows = [r for r in _rows(os.path.join(data, f"calib-{dtype}-energy.csv"))
            if _usable(dict(r, sweep="") if all_sweeps else r) and r["source"] in sources]
    classes, ms, flops, nbytes, joules = energy_features(rows, ops, "axes")
    names = np.array(classes)
    full = np.stack([ms / 1e3] + [np.where(names == c, flops, 0.0) for c in FLOP_CLASSES] + [nbytes], axis=1)
    fold = np.random.default_rng(SEED).permutation(len(joules)) % FOLDS
    out = []
    for label, a in (("constant power x time", full[:, :1]), ("static x time + per FLOP + per byte", full)):
        for w in WEIGHT_EXPONENTS:
            pred = np.empty(len(joules))
            for k in range(FOLDS):
                train = fold != k
                pred[~train] = a[~train] @ _nnls_relative(a[train], joules[train], w)
            out.append((f"{label}, rows weighted by energy^{w:g}", *_stats(pred, joules)))
    return len(joules), out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    parser.add_argument("--out", default="docs/forms-train-energy.md")
    args = parser.parse_args(argv)
    lines = ["# Training-step and energy forms: cross-validated on calibration rows", "",
             "Made by `python benchmarks/compare_train_energy_forms.py` from `benchmarks/data/calib-DTYPE-train.csv` "
             "and `calib-DTYPE-energy.csv` (NVIDIA H100 80GB HBM3, torch 2.11). Each row is predicted by a fit "
             f"that did not see it ({FOLDS} folds). WAPE = sum of absolute errors over sum of measured values "
             "(the error of a sum of many calls).", ""]
    for dtype in ("float32", "bfloat16"):
        n, stats = train_forms(args.data, dtype)
        lines += [f"## {dtype}: training-step time of Conv2d/Linear layers ({n} rows)", "",
                  "| form | CV MAPE % | CV WAPE % | Spearman |", "|---|---:|---:|---:|"]
        lines += [f"| {label} | {m:.1f} | {w:.1f} | {s:.3f} |" for label, m, w, s in stats]
        n, stats = channels_last_train_forms(args.data, dtype)
        lines += ["", f"## {dtype}: training-step time of channels-last Conv2d ({n} rows), refitted on the NCHW "
                  "training fit", "", "| refitted per class | CV MAPE % | CV WAPE % | Spearman |", "|---|---:|---:|---:|"]
        lines += [f"| {label} | {m:.1f} | {w:.1f} | {s:.3f} |" for label, m, w, s in stats]
        for phase, sources in (("forward", ("layer", "op")), ("training step", ("train_layer", "train_op"))):
            n, stats = energy_forms(args.data, dtype, sources)
            lines += ["", f"## {dtype}: energy per call, {phase} rows ({n})", "",
                      "| form | CV MAPE % | CV WAPE % | Spearman |", "|---|---:|---:|---:|"]
            lines += [f"| {label} | {m:.1f} | {w:.1f} | {s:.3f} |" for label, m, w, s in stats]
            n_all, stats = energy_forms(args.data, dtype, sources, all_sweeps=True)
            if n_all > n:
                best = min(stats, key=lambda s: s[2])
                lines += ["", f"With the {n_all - n} rows of the sweeps the fit leaves out "
                          f"({', '.join(ENERGY_EXCLUDED_SWEEPS)}): the lowest CV WAPE would be {best[2]:.1f}% "
                          f"({best[0]})."]
        lines.append("")
    lines += ["Channels-last training steps: `fit.fit_channels_last` refits the default set "
              "(`fit.CHANNELS_LAST_FREE`), chosen on the forward rows (forms-ops.md).", "",
              "Shipped: the training-step layer classes refitted whole (the lowest CV WAPE in both dtypes; "
              "see the MAPE columns for where another form is as good); the energy form with static power, "
              "energy per FLOP per class and per byte, or one constant power, with the row weighting, whichever "
              "pair has the lowest CV WAPE (chosen by `energy.fit_energy` itself, per dtype and phase). The rows "
              "of the group-width sweep (plan v3) are measured but left out of the energy fit "
              "(`powerfit.ENERGY_EXCLUDED_SWEEPS`): their cliff kernels run 10-100x longer than their FLOPs "
              "need at 450 W or more, which the per-FLOP form can only charge to the static power.", ""]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
