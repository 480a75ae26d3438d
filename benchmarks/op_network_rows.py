"""Memory-bound operators at networks' activations, timed alone: does the op fit predict them?

    python benchmarks/op_network_rows.py > benchmarks/data/op-network-rows/op-network-rows.txt

`benchmarks/data/op-network-rows/ops-DTYPE.csv` holds the committed op calibration (416 rows) and
128 more: 8 of each memory-bound kind at the activations of convolutional networks
(`opplan.network_rows`, sweep `network`), timed alone on an H100 by the calibration's timer
(`benchmarks/gpu_op_network_rows.sh`). The op fit of the committed rows (as shipped) predicts the
new rows it never saw; beside it, 5-fold CV over the new rows with the committed ones always in
the fit. A bias here would mean the calibration misses networks' shapes; none means the in-network
gap of the other operators (accuracy.md) comes from running inside a network.
"""
import csv
import os
import sys
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from torch_alpha_profiler.opcost import pieces_ms  # noqa: E402
from torch_alpha_profiler.opfit import _ok_rows, fit_ops, row_inner, row_operator, row_outer  # noqa: E402
from torch_alpha_profiler.ops import STREAM_CLASSES, Piece  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "op-network-rows")


def predict(ops, rows):
    """Predicted ms of op-calibration ``rows`` under an 'ops' section, as the profiler costs its
    pieces (opcost.pieces_ms: each operator's parameters, else its class's)."""
    pieces = [Piece(r["cls"], nbytes=int(float(r["nbytes"])), op=row_operator(r), inner=row_inner(r),
                    outer=row_outer(r)) for r in rows]
    return pieces_ms(pieces, SimpleNamespace(ops=ops))


def main():
    for dtype in ("float32", "bfloat16"):
        with open(os.path.join(DATA, f"ops-{dtype}.csv")) as f:
            rows = _ok_rows(list(csv.DictReader(f)))
        old = [r for r in rows if r["sweep"] != "network"]
        new = [r for r in rows if r["sweep"] == "network" and r["cls"] in STREAM_CLASSES]
        y = np.array([float(r["time_ms"]) for r in new])
        alone = predict(fit_ops(old), new)
        fold = np.random.default_rng(0).integers(0, 5, len(new))
        cv = np.zeros(len(new))
        for k in range(5):
            ops = fit_ops(old + [r for r, f in zip(new, fold) if f != k])
            idx = np.flatnonzero(fold == k)
            cv[idx] = predict(ops, [new[i] for i in idx])
        print(f"{dtype}: {len(old)} committed op rows, {len(new)} network rows")
        for label, p in (("fit of the committed rows (never saw them)", alone),
                         ("5-fold CV, the committed rows always in the fit", cv)):
            print(f"  {label}: MAPE {np.mean(np.abs(p / y - 1)) * 100:.1f}%, "
                  f"median measured / predicted {np.median(y / p):.3f}")
        for kind in sorted({r["op"] for r in new}):
            m = np.array([r["op"] == kind for r in new])
            print(f"    {kind:14s} n={m.sum()} measured / predicted (committed fit): median "
                  f"{np.median(y[m] / alone[m]):.2f}, range {np.min(y[m] / alone[m]):.2f}-{np.max(y[m] / alone[m]):.2f}")
    rerun = os.path.join(DATA, "run22")
    if os.path.isdir(rerun):  # the same rows timed again by gpu_op_network_rows.sh on another machine
        for dtype in ("float32", "bfloat16"):
            times = []
            for folder in (DATA, rerun):
                with open(os.path.join(folder, f"ops-{dtype}.csv")) as f:
                    times.append({(r["op"], r["d0"], r["d1"], r["d2"], r["d3"]): float(r["time_ms"])
                                  for r in _ok_rows(list(csv.DictReader(f))) if r["sweep"] == "network"})
            common = sorted(set(times[0]) & set(times[1]))
            ratio = np.array([times[1][k] / times[0][k] for k in common])
            print(f"{dtype}: run22 / committed over {len(common)} network rows: median {np.median(ratio):.3f}, "
                  f"median absolute difference {np.median(np.abs(ratio - 1)) * 100:.1f}%")


if __name__ == "__main__":
    main()
