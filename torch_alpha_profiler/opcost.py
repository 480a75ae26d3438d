"""Costs of captured operations: pure formulas over their pieces (see ops.py).

* Stream (memory-bound) operations, per operator where the profile has it,
  else per class::

      ms = t0 + bytes / bw x (1 + h / bytes) ** g x L2(bytes) x (1 + h_inner / inner) ** g_inner
                                                           x (1 + h_outer / outer) ** g_outer
      L2(bytes) = r + (1 - r) x s,   s = bytes^4 / (bytes^4 + l2_bytes^4)

  a per-call floor ``t0``; the DRAM bandwidth ``bw`` that large operations
  reach; a saturation on the bytes axis (the paper's correction idea on the
  one axis these operations have: below about ``h`` bytes the GPU is not
  filled); ``r``, the share of DRAM time left when the data fits in the L2
  cache (``l2_bytes``, 50 MiB on an H100: calibration replays the same tensors,
  as a network re-reads what the previous kernel just wrote); and, for
  normalizations and softmax, a saturation on the length of the rows they
  reduce over (``inner``: H x W for batch norm, the last dimension for layer
  norm and softmax), where short rows leave threads idle; and, for batch norm,
  a saturation on the number of reductions that run side by side (``outer``:
  its channels). In training, batch norm reduces each channel over N x H x W;
  with few channels, few multiprocessors work (a 16-channel 112 x 112 batch
  norm at batch 32 moves a sixteenth of the bytes of a 256-channel one, and takes
  half its time).
* ``linear`` pieces (``F.linear``, ``mm``) are costed as Linear layers by the
  profile's layer family, so every profile can cost them.
* ``matmul`` (batched products) and ``attention`` use the axes family's form
  with their own fitted parameters: a (batch x m x k) by (k x n) product is the
  grouped 1x1 layer with ``batch`` groups, S = m, Cin/g = k, Cout/g = n.

A profile without op classes (the paper's T2000 profile) costs only linear
pieces; the other operations are reported as not costed by that profile.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Mapping, Sequence

import numpy as np

from .families import AxesFamily, Bound
from .layers import make_arrays
from .ops import STREAM_CLASSES, OpRecord, Piece

STREAM_PARAMS = ("t0_ms", "bw_gb_per_s", "h_bytes", "g", "l2_ratio", "h_inner", "g_inner", "h_outer", "g_outer")
STREAM_BOUNDS = {"t0_ms": Bound(2e-3, 1e-5, 1.0, log=True),
                 "bw_gb_per_s": Bound(2000.0, 1.0, 1e5, log=True),
                 "h_bytes": Bound(1e5, 1.0, 1e10, log=True),
                 "g": Bound(0.5, 0.0, 1.0),  # above 1, fewer bytes would cost more
                 "l2_ratio": Bound(0.6, 0.1, 1.0),
                 "h_inner": Bound(8.0, 1e-3, 1e6, log=True),
                 "g_inner": Bound(0.5, 0.0, 2.0),
                 "h_outer": Bound(8.0, 1e-3, 1e6, log=True),
                 "g_outer": Bound(0.5, 0.0, 2.0)}
# no L2, inner- or outer-axis effect: what the parameters are pinned to where they are not fitted
# (profiles written before the outer axis existed lack h_outer and g_outer: the same)
STREAM_NEUTRAL = {"l2_ratio": 1.0, "h_inner": 1.0, "g_inner": 0.0, "h_outer": 1.0, "g_outer": 0.0}
# the shipped form leaves the bytes-axis saturation out (h_bytes, g): it did not lower the
# cross-validated error (docs/forms-ops.md); the parameters stay in the format, pinned
STREAM_PINNED = {"h_bytes": 1.0, "g": 0.0}
L2_BYTES = 50 * 2 ** 20  # an H100's L2 cache (torch.cuda.get_device_properties().L2_cache_size)


def stream_ms(nbytes, p: Mapping[str, float], inner=None, l2_bytes: float = L2_BYTES, outer=None) -> np.ndarray:
    """Time of memory-bound operations moving ``nbytes`` each (reduced rows of ``inner``
    elements, ``outer`` independent reductions; None or 0: no such axis), under stream
    parameters ``p``."""
    b = np.maximum(np.asarray(nbytes, dtype=np.float64), 1.0)
    s = b ** 4 / (b ** 4 + float(l2_bytes) ** 4)
    r = float(p.get("l2_ratio", 1.0))
    ms = b / (float(p["bw_gb_per_s"]) * 1e6) * (1.0 + float(p["h_bytes"]) / b) ** float(p["g"]) * (r + (1 - r) * s)
    for axis, sizes in (("inner", inner), ("outer", outer)):
        g = float(p.get("g_" + axis, 0.0))
        if sizes is not None and g != 0.0:  # (1 + h / x) ** g where the op has the axis (x > 0)
            x = np.asarray(sizes, dtype=np.float64)
            ms = ms * np.where(x > 0, (1.0 + float(p["h_" + axis]) / np.maximum(x, 1.0)) ** g, 1.0)
    return float(p["t0_ms"]) + ms


class MatrixFamily(AxesFamily):
    """The axes family with one class, for batched matrix products and attention."""

    name = "matrix"
    classes = ("all",)
    description = "axes form for (batched) matrix products: S = m, Cin/g = k, Cout/g = n, groups = batch"
    # the axes family's pinned globals, and what it pins for a Linear layer: a matrix product has
    # no image, stride or kernel either
    FIXED = {**{k: v for k, v in AxesFamily.FIXED.items() if "." not in k},
             **{"all." + k.split(".", 1)[1]: v for k, v in AxesFamily.FIXED.items() if k.startswith("linear.")}}

    def classify(self, arrays):
        return np.zeros(len(arrays), dtype=np.int64)


MATRIX = MatrixFamily()


def matrix_arrays(pieces: Sequence[Piece]):
    """Pieces as layer geometry: ``batch`` groups of an m-row, k-in, n-out 1x1 layer (attention: K = 2)."""
    one = np.ones(len(pieces), dtype=np.int64)
    b = np.array([p.batch for p in pieces], dtype=np.int64)
    return make_arrays(
        is_linear=np.ones(len(pieces), dtype=bool), N=[p.m for p in pieces],
        Cin=b * np.array([p.k for p in pieces]), Cout=b * np.array([p.n for p in pieces]),
        Hin=one, Win=one, Hout=one, Wout=one, K1=one,
        K2=np.array([2 if p.cls == "attention" else 1 for p in pieces]), stride=one, groups=b,
        itemsize=[p.itemsize for p in pieces])


def linear_arrays(pieces: Sequence[Piece]):
    """``linear`` pieces as Linear layers (m rows, k in-features, n out-features)."""
    one = np.ones(len(pieces), dtype=np.int64)
    return make_arrays(is_linear=np.ones(len(pieces), dtype=bool), N=[p.m for p in pieces],
                       Cin=[p.k for p in pieces], Cout=[p.n for p in pieces], Hin=one, Win=one,
                       Hout=one, Wout=one, K1=one, K2=one, stride=one, groups=one,
                       itemsize=[p.itemsize for p in pieces])


def pieces_ms(pieces: Sequence[Piece], profile) -> np.ndarray:
    """Predicted ms of each piece under ``profile``; NaN where the profile has no class for it."""
    from .families import get_family

    out = np.full(len(pieces), np.nan)
    ops = profile.ops or {}
    by_cls: Dict[str, List[int]] = {}
    for i, p in enumerate(pieces):
        by_cls.setdefault(p.cls, []).append(i)
    for cls, idx in by_cls.items():
        sel = [pieces[i] for i in idx]
        if cls == "linear":
            from .cost import correction_factor

            family, arrays = get_family(profile.family), linear_arrays(sel)
            out[idx] = family.alpha_and_ms(arrays, profile.parameters)[1] * correction_factor(arrays, profile)
        elif cls in ("matmul", "attention") and cls in ops:
            out[idx] = MATRIX.predict_ms(matrix_arrays(sel), ops[cls])
        elif cls in STREAM_CLASSES:
            # each operator's own parameters where calibrated, else its class's
            l2 = float(ops.get("l2_bytes", L2_BYTES))
            operators, classes = ops.get("operators", {}), ops.get("stream", {})
            groups: Dict[str, List[int]] = {}
            for i, p in zip(idx, sel):
                key = p.op if p.op in operators else ("" if cls in classes else None)
                if key is not None:
                    groups.setdefault(key, []).append(i)
            for key, rows in groups.items():
                params = operators[key] if key else classes[cls]
                out[rows] = stream_ms([pieces[i].nbytes for i in rows], params,
                                      [pieces[i].inner for i in rows], l2, [pieces[i].outer for i in rows])
    return out


def attach_op_costs(records: Sequence[OpRecord], profile) -> List[OpRecord]:
    """Copies of ``records`` with ``predicted_ms`` (None where the profile cannot cost the op)."""
    pieces = [p for r in records for p in r.pieces]
    if not pieces:
        return list(records)
    ms = pieces_ms(pieces, profile)
    joules = pieces_energy_j(pieces, ms, profile)
    out, i = [], 0
    for r in records:
        value = float(np.sum(ms[i:i + len(r.pieces)]))
        energy = float(np.sum(joules[i:i + len(r.pieces)]))
        i += len(r.pieces)
        ok = np.isfinite(value)
        out.append(replace(r, predicted_ms=value if ok else None,
                           energy_j=energy if ok and np.isfinite(energy) else None))
    return out


def pieces_energy_j(pieces: Sequence[Piece], ms: np.ndarray, profile) -> np.ndarray:
    """Energy of each piece under the profile's forward power coefficients (energy.py); NaN
    without power data."""
    from .energy import energy_j
    from .ops import piece_bytes, piece_macs

    coeffs = (profile.power or {}).get("forward")
    if not coeffs:
        return np.full(len(pieces), np.nan)
    return energy_j(coeffs, [p.cls for p in pieces], ms,
                    [2.0 * piece_macs(p) if p.cls in ("linear", "matmul", "attention") else 0.0 for p in pieces],
                    [piece_bytes(p) for p in pieces])
