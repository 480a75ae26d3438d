"""Choose the forms of the op classes and of the channels-last refit by cross-validated error.

    python benchmarks/compare_op_forms.py [--data benchmarks/data] [--out docs/forms-ops.md]

Reads the op calibration (`calib-DTYPE-ops.csv`) and the channels-last Conv2d
calibration (`calib-DTYPE-nhwc.csv`, with the NCHW `calib-DTYPE.csv` for the
parameters kept). Every calibration row is predicted by a fit that did not see
it (5 folds). As for the layer family (docs/forms.md), an effect stays when
switching it off raises the CV MAPE by at least 0.5 points in at least one
dtype. Whole models are not used here: they stay an honest test.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from torch_alpha_profiler.families import get_family  # noqa: E402
from torch_alpha_profiler.fit import CHANNELS_LAST_FREE, channels_last_cv_predictions, fit_profile  # noqa: E402
from torch_alpha_profiler.opcost import STREAM_NEUTRAL, STREAM_PINNED, stream_ms  # noqa: E402
from torch_alpha_profiler.opfit import _ok_rows, fit_stream_class, row_inner, row_operator  # noqa: E402
from torch_alpha_profiler.ops import INNER_RULES, STREAM_CLASSES  # noqa: E402
from torch_alpha_profiler.tables import read_layer_table, with_default_dtype  # noqa: E402

FOLDS, SEED = 5, 0
# the judgement on the channels-last tables (their numbers are in the tables above it)
CHANNELS_LAST_NOTE = ("`fit.fit_channels_last` refits the default set (`fit.CHANNELS_LAST_FREE`). It keeps "
                      "the per-axis saturations of the NCHW fit and refits, from a seventh as many rows, only what "
                      "a different kernel changes: its peak rate, floor, bandwidth, wave behaviour, kernel-size "
                      "power, per-tap latency and per-image factor. The kernel power was added when the channels-last plan gained "
                      "its depthwise rows (plan.channels_last_plan): fp32 channels-last 7x7 depthwise kernels "
                      "slow down with the kernel size far more than NCHW ones. The per-tap latency came next: "
                      "at batch 1 a channels-last depthwise kernel takes about as long for 96 as for 1024 "
                      "channels, and about 0.18 us (bf16) more for each tap, a floor that no power of the "
                      "kernel size on the MACs describes. Until then each calibration chose between the default "
                      "and refitting everything by this CV. Refitting everything is lower in bf16 in the tables "
                      "above (by 1.4 points; 3.9 higher in fp32; with plan v4's NCHW fit 2.3 lower and 0.3 higher), but over two calibrations it is no better on "
                      "average and less stable: on the fresh calibration of run 15 it is 2.2 points higher in "
                      "fp32 and 5.3 in bf16 (`benchmarks/channels_last_refit_choice.py`, "
                      "`benchmarks/data/probe-speed/channels-last-refit-choice.md`), and its fit took up to 45 s "
                      "of a calibration. The default set is kept. The per-image factor joined it last: the NCHW "
                      "fit's factor (in NCHW each image is a problem of its own) does not carry over to "
                      "channels-last kernels, and refitting it lowered the CV MAPE in three of four cases and "
                      "left the fourth as it was (committed and run-15 calibrations, fp32 and bf16; "
                      "channels-last-refit-choice.md). The stride and kernel-size factors joined when the NCHW "
                      "form gained them (session 6): channels-last kernels are other kernels, and their "
                      "strided and 5x5/7x7 variants differ from the NCHW ones (the table above). Each part of the default set "
                      "passes the rule of the layer family (leaving it out raises the CV MAPE by 0.5 points or more in "
                      "at least one dtype), though in fp32 leaving out the kernel-size factors or the per-image factor "
                      "lowers it: the channels-last rows are few (a twentieth of the plan's convolutions and the "
                      "depthwise rows), and the two dtypes disagree.")
SHIPPED = "shipped: floor, bandwidth, L2 term, inner axis"
STREAM_VARIANTS = [
    # (label, pins, inner axis for INNER_RULES operators): the shipped form, one effect off or on at a time
    (SHIPPED, STREAM_PINNED, True),
    ("without the inner-axis saturation", STREAM_PINNED, False),
    ("without the L2-cache term", dict(STREAM_PINNED, l2_ratio=1.0), True),
    ("with a saturation on the bytes axis too (not shipped)", {}, True),
    ("floor + bandwidth only", dict(STREAM_PINNED, l2_ratio=1.0), False),
]


def _folds(n):
    return np.random.default_rng(SEED).integers(0, FOLDS, n)


def stream_cv(rows, pins, inner_axis, per_operator):
    """CV predictions of the stream rows: per class, or per operator (class fallback as shipped)."""
    nbytes = np.array([float(r["nbytes"]) for r in rows])
    t = np.array([float(r["time_ms"]) for r in rows])
    cls = np.array([r["cls"] for r in rows])
    ops = np.array([row_operator(r) for r in rows])
    inner = np.array([row_inner(r) for r in rows], dtype=np.float64)
    folds = _folds(len(rows))
    pred = np.zeros(len(rows))
    for k in range(FOLDS):
        train, test = folds != k, folds == k
        for c in STREAM_CLASSES:
            groups = sorted(set(ops[cls == c])) if per_operator else [None]
            for op in groups:
                sel = (cls == c) & (ops == op) if op is not None else cls == c
                fit_rows = sel & train
                if fit_rows.sum() < 8:  # as opfit: too few rows for an operator -> its class
                    fit_rows = (cls == c) & train
                    use_inner = None
                else:
                    use_inner = inner[fit_rows] if inner_axis and op in INNER_RULES else None
                p = fit_stream_class(nbytes[fit_rows], t[fit_rows], pins, use_inner)
                pred[sel & test] = stream_ms(nbytes[sel & test], p, inner[sel & test])
    return pred, t, cls


def channels_last_cv(base, nhwc, family, free):
    """CV predictions of the channels-last rows on the NCHW parameters ``base``; ``free``:
    parameters refitted (None: none, the NCHW parameters as they are; 'all': everything, as
    fit.channels_last_cv_predictions with None)."""
    if free is None:
        return get_family(family).predict_ms(nhwc.arrays, base)
    return channels_last_cv_predictions(nhwc, family, base, None if free == "all" else free, FOLDS, SEED)[0]


def _layout_speedup(data, dtype):
    """How much faster the channels-last rows ran than the same configurations in NCHW."""
    keys = ("kind", "N", "Cin", "Cout", "H", "W", "K1", "K2", "stride", "groups", "padding", "dilation", "bias")

    def rows(name):
        with open(os.path.join(data, name), newline="") as f:
            return {tuple(r[k] for k in keys): r for r in csv.DictReader(f) if r["status"] == "ok"}

    nchw, nhwc = rows(f"calib-{dtype}.csv"), rows(f"calib-{dtype}-nhwc.csv")
    both = [k for k in nhwc if k in nchw]
    ratio = np.array([float(nchw[k]["time_ms"]) / float(nhwc[k]["time_ms"]) for k in both])
    dw = np.array([nchw[k]["groups"] == nchw[k]["Cin"] for k in both])
    return (f"NCHW time over channels-last time of the same configurations: median {np.median(ratio):.2f} "
            f"over all {len(both)} rows; depthwise ({int(dw.sum())} rows): median {np.median(ratio[dw]):.2f}, "
            f"up to {ratio[dw].max():.1f}.")


def _ape(pred, t):
    return np.abs(pred / t - 1) * 100


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "data"))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--out", default="docs/forms-ops.md")
    args = parser.parse_args(argv)
    lines = ["# Choosing the forms of the op classes and of the channels-last refit", "",
             "Made by `python benchmarks/compare_op_forms.py` from `benchmarks/data/calib-DTYPE-ops.csv` and "
             "`calib-DTYPE-nhwc.csv` (H100, `bash benchmarks/gpu_campaign_energy.sh`). 5-fold cross-validation: "
             "each calibration row is predicted by a fit that did not see it. An effect stays when switching "
             "it off raises the CV MAPE by at least 0.5 points in at least one dtype.", ""]
    for dtype in args.dtypes:
        with open(os.path.join(args.data, f"calib-{dtype}-ops.csv"), newline="") as f:
            rows = [r for r in _ok_rows(list(csv.DictReader(f))) if r["cls"] in STREAM_CLASSES]
        lines += [f"## {dtype}: memory-bound operations ({len(rows)} calibration rows)", "",
                  "| granularity | form | CV MAPE % | CV median APE % | " +
                  " | ".join(f"{c} %" for c in STREAM_CLASSES) + " |",
                  "|---|---|---:|---:|" + "---:|" * len(STREAM_CLASSES)]
        for per_operator in (True, False):
            for label, pins, inner_axis in (STREAM_VARIANTS if per_operator else STREAM_VARIANTS[:1]):
                pins = dict(pins)
                if not inner_axis:
                    pins.update(h_inner=STREAM_NEUTRAL["h_inner"], g_inner=STREAM_NEUTRAL["g_inner"])
                pred, t, cls = stream_cv(rows, pins, inner_axis, per_operator)
                ape = _ape(pred, t)
                by_class = " | ".join(f"{ape[cls == c].mean():.1f}" for c in STREAM_CLASSES)
                gran = "per operator (class fallback)" if per_operator else "per class (one set for all its operators)"
                lines.append(f"| {gran} | {label} | {ape.mean():.1f} | {np.median(ape):.1f} | {by_class} |")
                print(dtype, gran, label, f"{ape.mean():.1f}", flush=True)
        nchw = read_layer_table(os.path.join(args.data, f"calib-{dtype}.csv"))
        nhwc = with_default_dtype(read_layer_table(os.path.join(args.data, f"calib-{dtype}-nhwc.csv")), dtype)
        shipped = CHANNELS_LAST_FREE["axes"]
        base = fit_profile(nchw, family="axes", keep_data=False).parameters  # once, for every variant
        lines += ["", f"## {dtype}: channels-last Conv2d ({len(nhwc)} calibration rows)", "",
                  _layout_speedup(args.data, dtype), "",
                  "The axes family's NCHW parameters (fitted on `calib-DTYPE.csv`), with some parameters refitted "
                  "on the channels-last rows:", "",
                  "| refitted per class | CV MAPE % | CV median APE % |", "|---|---:|---:|"]
        for label, free in (("none (the NCHW parameters as they are)", None),
                            ("tau, t0", ("tau_ms_per_mmac", "t0_ms")),
                            ("tau, t0, bandwidth", ("tau_ms_per_mmac", "t0_ms", "bw_gb_per_s")),
                            ("tau, t0, bandwidth, wave exponent", ("tau_ms_per_mmac", "t0_ms", "bw_gb_per_s",
                                                                    "wave_exp")),
                            ("tau, t0, bandwidth, wave exponent, kernel power", ("tau_ms_per_mmac", "t0_ms",
                                                                                  "bw_gb_per_s", "wave_exp",
                                                                                  "k_exp")),
                            ("tau, t0, bandwidth, wave exponent, kernel power, per-tap latency",
                             ("tau_ms_per_mmac", "t0_ms", "bw_gb_per_s", "wave_exp", "k_exp", "tap_ms")),
                            ("tau, t0, bandwidth, wave exponent, kernel power, per-tap latency, per-image factor",
                             tuple(p for p in shipped if p not in ("stride_f", "k5_f", "k7_f"))),
                            ("tau, t0, bandwidth, wave exponent, kernel power, per-tap latency, per-image factor, "
                             "stride and kernel-size factors (default)", shipped),
                            ("the default without the stride factor",
                             tuple(p for p in shipped if p != "stride_f")),
                            ("the default without the kernel-size factors",
                             tuple(p for p in shipped if p not in ("k5_f", "k7_f"))),
                            ("the default without the per-image factor",
                             tuple(p for p in shipped if p not in ("h_hw", "g_hw"))),
                            ("all parameters (the kernel power and per-tap latency included)", "all")):
            ape = _ape(channels_last_cv(base, nhwc, "axes", free), nhwc.time_ms)
            lines.append(f"| {label} | {ape.mean():.1f} | {np.median(ape):.1f} |")
            print(dtype, "channels-last", label, f"{ape.mean():.1f}", flush=True)
        lines.append("")
    lines += ["Channels-last choice: " + CHANNELS_LAST_NOTE, ""]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
