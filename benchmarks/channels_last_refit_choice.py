"""The channels-last refit: the default parameter set or everything? 5-fold CV on two calibrations.

    python benchmarks/channels_last_refit_choice.py [--data benchmarks/data]

For the committed calibration (`calib-DTYPE.csv` + `-nhwc.csv`, the shipped profiles' data) and the
fresh calibration of run 15 (`fresh-run15/fresh-DTYPE.csv` + `-nhwc.csv`, another H100 machine, the
final plan): the NCHW fit of the calibration, then `fit.channels_last_cv` of refitting the
default set (`fit.CHANNELS_LAST_FREE`), of that set without the per-image factor (`h_hw`, `g_hw`), and
of refitting everything, with the seconds each took.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from torch_alpha_profiler.fit import CHANNELS_LAST_FREE, channels_last_cv, fit_profile  # noqa: E402
from torch_alpha_profiler.tables import read_layer_table, with_default_dtype  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "data"))
    args = parser.parse_args(argv)
    print("| calibration | dtype | channels-last rows | CV MAPE %: default set | seconds | "
          "without the per-image factor | seconds | everything | seconds |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, prefix in (("committed (runs 6-13)", "calib-{}"), ("fresh, run 15", "fresh-run15/fresh-{}")):
        for dtype in ("float32", "bfloat16"):
            stem = os.path.join(args.data, prefix.format(dtype))
            base = fit_profile(read_layer_table(stem + ".csv"), family="axes", keep_data=False).parameters
            nhwc = with_default_dtype(read_layer_table(stem + "-nhwc.csv"), dtype)
            cells = []
            default = CHANNELS_LAST_FREE["axes"]
            for free in (default, tuple(p for p in default if p not in ("h_hw", "g_hw")), None):
                t0 = time.monotonic()
                cells += [f"{channels_last_cv(nhwc, 'axes', base, free):.1f}", f"{time.monotonic() - t0:.0f}"]
            print(f"| {label} | {dtype} | {len(nhwc)} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
