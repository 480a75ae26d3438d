"""Run-to-run difference of two layer calibrations (the same configurations timed twice).

    python benchmarks/compare_runs.py A.csv B.csv

Joins the ok rows of two layer tables (`calib-DTYPE.csv` format) on their configuration
(plan.config_key) and prints how far B's times are from A's: the median, mean and 90th
percentile of |B / A - 1|, over the configurations both timed.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from torch_alpha_profiler.calibrate.plan import config_key  # noqa: E402


def times(path):
    with open(path, newline="") as f:
        return {config_key(r): float(r["time_ms"]) for r in csv.DictReader(f)
                if r.get("status", "ok") == "ok" and r.get("time_ms")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a")
    parser.add_argument("b")
    args = parser.parse_args(argv)
    a, b = times(args.a), times(args.b)
    both = sorted(set(a) & set(b))
    if not both:
        sys.exit(f"no configuration is in both {args.a} and {args.b}")
    diff = np.abs(np.array([b[k] / a[k] - 1 for k in both])) * 100
    print(f"{len(both)} configurations in both: |B/A - 1| median {np.median(diff):.1f}%, "
          f"mean {diff.mean():.1f}%, 90th percentile {np.percentile(diff, 90):.1f}%")


if __name__ == "__main__":
    main()
