"""Can the channels-last plan lose rows without losing accuracy? (CPU, committed data)

    python benchmarks/channels_last_plan_subsets.py [--data benchmarks/data]

For each candidate subset of `calib-DTYPE-nhwc.csv` (the channels-last rows of the calibration
that the shipped profiles were fitted on), the channels-last section is refitted on the rows the
subset keeps (on top of the shipped NCHW parameters, as `fit.fit_channels_last` does) and
predicts the rows it drops. Beside it: the same dropped rows predicted by 5-fold
cross-validation on all rows. A subset whose refit predicts its dropped rows about as well loses
little. Printed as a table; the output is kept in benchmarks/data/probe-speed/.
"""
import argparse
import csv
import dataclasses
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from torch_alpha_profiler.families import get_family  # noqa: E402
from torch_alpha_profiler.fit import (CHANNELS_LAST_FREE, channels_last_cv_predictions,  # noqa: E402
                                      fit_channels_last)
from torch_alpha_profiler.layers import take  # noqa: E402
from torch_alpha_profiler.profile import load_profile  # noqa: E402
from torch_alpha_profiler.tables import read_layer_table, with_default_dtype  # noqa: E402


def subsets(t, sweep):
    """name -> boolean mask of the rows kept."""
    dw = sweep == "dw_nhwc"
    generic = np.cumsum(~dw) - 1  # position among the every-10th plan rows
    a = t.arrays
    return {"generic rows: every 20th of the plan's Conv2d rows, not every 10th": ~(~dw & (generic % 2 == 1)),
            "depthwise rows: without 128 and 512 channels": ~(dw & np.isin(a.Cin, [128, 512])),
            "depthwise rows: without 128, 256 and 512 channels": ~(dw & np.isin(a.Cin, [128, 256, 512])),
            "depthwise rows: batch 32 only for kernels 3 and 5": ~(dw & (a.N == 1) & (a.K < 49)),
            # session 8: plan v5 took the bf16 calibration to 123 s; each depthwise row costs cuDNN
            # about 0.22 s of setup (README), so these would save 5-8 s
            "depthwise rows: without 14x14 inputs": ~(dw & (a.Hin == 14)),
            "depthwise rows: without 28x28 inputs": ~(dw & (a.Hin == 28)),
            "depthwise rows: without 192 channels": ~(dw & (a.Cin == 192)),
            "depthwise rows: without 384 channels": ~(dw & (a.Cin == 384))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "data"))
    args = parser.parse_args(argv)
    fam = get_family("axes")
    print("| dtype | subset | rows kept | rows dropped | dropped rows: MAPE % of the refit on the kept rows | "
          "the same rows: 5-fold CV MAPE % on all rows |\n|---|---|---:|---:|---:|---:|")
    for dtype, name in (("float32", "h100-fp32"), ("bfloat16", "h100-bf16")):
        path = os.path.join(args.data, f"calib-{dtype}-nhwc.csv")
        t = with_default_dtype(read_layer_table(path), dtype)
        with open(path, newline="") as f:
            sweep = np.array([r["sweep"] for r in csv.DictReader(f) if r["status"] == "ok"])
        base = load_profile(name, warn_device=False).parameters
        y = t.time_ms
        cv, _ = channels_last_cv_predictions(t, "axes", base, CHANNELS_LAST_FREE["axes"])
        for label, keep in subsets(t, sweep).items():
            kept = dataclasses.replace(t, arrays=take(t.arrays, keep), time_ms=y[keep])
            params = fit_channels_last(kept, "axes", base, cv=False)["parameters"]
            pred = fam.predict_ms(take(t.arrays, ~keep), params)
            ape = np.mean(np.abs(pred / y[~keep] - 1)) * 100
            ape_cv = np.mean(np.abs(cv[~keep] / y[~keep] - 1)) * 100
            print(f"| {dtype} | {label} | {keep.sum()} | {(~keep).sum()} | {ape:.1f} | {ape_cv:.1f} |", flush=True)


if __name__ == "__main__":
    main()
