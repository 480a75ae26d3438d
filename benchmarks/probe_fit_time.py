"""Time the fit stage of a calibration (what `calibrate` does after measuring) on saved CSVs.

    python benchmarks/probe_fit_time.py PREFIX DTYPE [--label TEXT]

PREFIX names the CSVs of one calibration (PREFIX.csv, PREFIX-ops.csv, PREFIX-host.csv,
PREFIX-nhwc.csv), as `fresh_calibration.sh` writes them. Prints one CSV line: label, dtype, and
the seconds of the NCHW layer fit, the operator and host fits, the channels-last fit (with its
5-fold CV) and their total. Run it with different thread settings (OMP_NUM_THREADS, ...) in the
environment to see what the fit's time depends on.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from torch_alpha_profiler.calibrate.measure import read_results  # noqa: E402
from torch_alpha_profiler.fit import fit_channels_last, fit_profile  # noqa: E402
from torch_alpha_profiler.opcost import L2_BYTES  # noqa: E402
from torch_alpha_profiler.opfit import fit_host, fit_ops  # noqa: E402
from torch_alpha_profiler.tables import read_layer_table, with_default_dtype  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prefix")
    parser.add_argument("dtype")
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    laps = []
    t = time.monotonic()

    def lap():
        nonlocal t
        now = time.monotonic()
        laps.append(now - t)
        t = now

    profile = fit_profile(read_layer_table(args.prefix + ".csv"), family="axes")
    lap()
    fit_ops(list(read_results(args.prefix + "-ops.csv")), l2_bytes=L2_BYTES)
    fit_host(list(read_results(args.prefix + "-host.csv")))
    lap()
    nhwc = with_default_dtype(read_layer_table(args.prefix + "-nhwc.csv"), args.dtype)
    fit_channels_last(nhwc, "axes", profile.parameters)
    lap()
    threads = os.environ.get("OMP_NUM_THREADS", "")
    print(",".join([args.label, args.dtype, threads] + [f"{x:.1f}" for x in laps] + [f"{sum(laps):.1f}"]),
          flush=True)


if __name__ == "__main__":
    main()
