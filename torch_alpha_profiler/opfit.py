"""Fit the op classes and the host (eager) costs of a profile from calibration CSVs.

* Stream operations: opcost.stream_ms's parameters for each calibrated
  operator (its rows), and for each class (all its rows: the fallback for
  operators not calibrated), by least squares on the log ratio of predicted to
  measured time (Huber loss, scale 0.3, as the layer family). The inner-axis
  term is fitted only for the operators of ops.INNER_RULES, the outer-axis term
  only for those of ops.OUTER_RULES and only on training steps (batch norm
  reduces per channel only on batch statistics; on forward rows the term did
  not lower the cross-validated error); class-level fits leave both out.
* ``matmul`` and ``attention``: the axes form (opcost.MatrixFamily), fitted
  with the layer fitter.
* Host: the CPU's cost of one eager launch per host class (median over the
  kinds of that class), of one view (no kernel) and of one nn.Module call
  (an identity module).
"""
from __future__ import annotations

import statistics
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from .opcost import L2_BYTES, MATRIX, STREAM_BOUNDS, STREAM_NEUTRAL, STREAM_PARAMS, STREAM_PINNED, matrix_arrays, \
    stream_ms
from .ops import HOST_CLASSES, INNER_RULES, STREAM_CLASSES, Piece, canonical, inner_size, outer_size

MIN_OPERATOR_ROWS = 8  # an operator with fewer calibration rows uses its class's parameters


def _ok_rows(rows: Sequence[Mapping[str, str]]) -> List[Mapping[str, str]]:
    out = []
    for r in rows:
        try:
            t = float(r.get("time_ms") or "nan")
        except ValueError:
            continue
        if r.get("status", "ok") == "ok" and np.isfinite(t) and t > 0 and r.get("cls"):
            out.append(r)
    return out


def fit_stream_class(nbytes: np.ndarray, time_ms: np.ndarray, fixed: Optional[Mapping[str, float]] = None,
                     inner: Optional[np.ndarray] = None, l2_bytes: float = L2_BYTES,
                     outer: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Stream parameters for one class or operator (``fixed`` pins some, e.g. {'g': 0.0};
    without ``inner`` or ``outer`` that axis's term is pinned off)."""
    from scipy.optimize import least_squares

    fixed = dict(fixed or {})
    for axis, values in (("inner", inner), ("outer", outer)):
        if values is None:
            fixed.setdefault("h_" + axis, STREAM_NEUTRAL["h_" + axis])
            fixed.setdefault("g_" + axis, STREAM_NEUTRAL["g_" + axis])
    names = [k for k in STREAM_PARAMS if k not in fixed]
    is_log = np.array([STREAM_BOUNDS[k].log for k in names])

    def to_x(v):
        v = np.asarray(v, dtype=np.float64)
        return np.where(is_log, np.log(np.where(is_log, v, 1.0)), v)

    def params(x):
        vals = np.where(is_log, np.exp(x), x)
        return dict(fixed, **dict(zip(names, map(float, vals))))

    def residuals(x):
        return np.log(stream_ms(nbytes, params(x), inner, l2_bytes, outer) / time_ms)

    x0 = to_x([STREAM_BOUNDS[k].init for k in names])
    lo = to_x([STREAM_BOUNDS[k].lo for k in names])
    hi = to_x([STREAM_BOUNDS[k].hi for k in names])
    with np.errstate(over="ignore", invalid="ignore"):
        res = least_squares(residuals, x0, bounds=(lo, hi), x_scale="jac", loss="huber", f_scale=0.3,
                            max_nfev=5000)
    return params(res.x)


def matrix_pieces_of(rows) -> List[Piece]:
    item = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
    return [Piece(r["cls"], batch=int(r["batch"]), m=int(r["m"]), k=int(r["k"]), n=int(r["n"]),
                  itemsize=item.get(r.get("dtype", "float32"), 4)) for r in rows]


def row_operator(r: Mapping[str, str]) -> str:
    """The canonical operator a calibration row timed (its 'op' column, or its captured 'ops')."""
    return r.get("operator") or canonical(r["ops"].split("+")[0])


def _row_input_shape(r: Mapping[str, str]):
    """The shape of the (first) input the row's kind was built with."""
    from .calibrate.opplan import input_shape

    return input_shape(r["op"], tuple(int(r[f"d{j}"]) for j in range(4)))


def row_inner(r: Mapping[str, str]) -> int:
    """The row's inner-axis length (its 'inner' column, or from the kind's input shape)."""
    if r.get("inner", "") != "":
        return int(r["inner"])
    return inner_size(row_operator(r), _row_input_shape(r))


def row_outer(r: Mapping[str, str]) -> int:
    """The row's outer-axis size (independent reductions), from the kind's input shape."""
    return outer_size(row_operator(r), _row_input_shape(r))


def fit_ops(rows: Sequence[Mapping[str, str]], stream_fixed: Optional[Mapping[str, float]] = STREAM_PINNED,
            l2_bytes: float = L2_BYTES, outer_ops: Sequence[str] = ()) -> Dict[str, object]:
    """The profile's 'ops' section from op-calibration rows (opmeasure.OP_RESULT_COLUMNS);
    ``stream_fixed`` pins stream parameters (by default the shipped form's STREAM_PINNED);
    the operators in ``outer_ops`` (training fits: ops.OUTER_RULES) get the outer-axis term."""
    from .fit import fit_parameters, residual_stats

    rows = _ok_rows(rows)
    ops: Dict[str, object] = {"l2_bytes": float(l2_bytes), "stream": {}, "operators": {}}
    stats: Dict[str, object] = {}
    for cls in STREAM_CLASSES:
        sel = [r for r in rows if r["cls"] == cls]
        if len(sel) < 4:
            continue
        nbytes = np.array([float(r["nbytes"]) for r in sel])
        t = np.array([float(r["time_ms"]) for r in sel])
        ops["stream"][cls] = fit_stream_class(nbytes, t, stream_fixed, l2_bytes=l2_bytes)
        names = [row_operator(r) for r in sel]
        inner = np.array([row_inner(r) for r in sel], dtype=np.float64)
        outer = np.array([row_outer(r) for r in sel], dtype=np.float64)
        pred = np.array(stream_ms(nbytes, ops["stream"][cls], inner, l2_bytes, outer))
        for op in sorted(set(names)):
            mask = np.array([n == op for n in names])
            if mask.sum() < MIN_OPERATOR_ROWS:
                continue
            p = fit_stream_class(nbytes[mask], t[mask], stream_fixed,
                                 inner[mask] if op in INNER_RULES else None, l2_bytes,
                                 outer[mask] if op in outer_ops else None)
            ops["operators"][op] = p
            pred[mask] = stream_ms(nbytes[mask], p, inner[mask], l2_bytes, outer[mask])
        stats[cls] = residual_stats(pred, t)
    for cls in ("matmul", "attention"):
        sel = [r for r in rows if r["cls"] == cls]
        if len(sel) < 8:
            continue
        arrays = matrix_arrays(matrix_pieces_of(sel))
        t = np.array([float(r["time_ms"]) for r in sel])
        p = fit_parameters(MATRIX, arrays, t)
        ops[cls] = p
        stats[cls] = residual_stats(MATRIX.predict_ms(arrays, p), t)
    ops["fit"] = stats
    return ops


def fit_host(rows: Sequence[Mapping[str, str]]) -> Dict[str, object]:
    """The profile's 'host' section from host-timing rows (opmeasure.HOST_COLUMNS).

    Module-level rows (a Conv2d, a Linear) include one module call (an identity
    module's cost), which is subtracted. A module call in a model costs more than
    an identity module's: its forward runs Python of its own. So ``module_us`` is
    what a conv-bn-relu block module (four module calls, three launches) costs
    beyond its three launches, per module call; never less than the identity's.
    """
    by_class: Dict[str, List[float]] = {}
    module_us, block_us = 0.0, None
    for r in rows:
        us = float(r["host_us"])
        if r["host_class"] == "module":
            module_us = us
        elif r["host_class"] == "block":
            block_us = us
        elif r["host_class"] == "view":
            by_class.setdefault("view", []).append(us)
        else:
            by_class.setdefault(r["host_class"], []).append(us)
    launch = {}
    for cls in HOST_CLASSES:
        values = by_class.get(cls) or by_class.get("elementwise") or [0.0]
        v = statistics.median(values)
        if any(r["kind"] == f"{cls}_module" for r in rows):
            v = max(v - module_us, 0.0)
        launch[cls] = v
    views = by_class.get("view")
    identity_us = module_us
    if block_us is not None:
        module_us = max(identity_us, (block_us - launch["conv"] - launch["norm"] - launch["elementwise"]) / 4)
    return {"launch_us": launch, "module_us": module_us, "identity_module_us": identity_us,
            "view_us": statistics.median(views) if views else 0.0}
