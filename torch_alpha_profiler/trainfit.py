"""Fit a profile's training-step classes from ``PREFIX-train.csv`` (calibrate --train).

A training step (forward in train mode, then backward) of a Conv2d/Linear layer
runs a forward, a grad-input and a grad-weight product; of a memory-bound op,
its forward and backward kernels. Each is costed in the forward's own form,
refitted on step times:

* layers: the layer family (axes) on the step times of the layer rows whose
  input needs a gradient, per class;
* ``channels_last``: as the profile's own, the family's speed, floor, bandwidth and wave
  parameters refitted on channels-last (NHWC) convolutions' step times;
* ``no_input_grad_ratio``: the median ratio of a step whose input needs no
  gradient (a network's first layer: no grad-input product) to the full step,
  over the layers timed both ways that take an image (4 channels or fewer), as a
  network's first layer does (over all layers timed both ways where fewer than 8
  take an image);
* ops: the op classes' forms (opcost.py) on step times, with the forward's
  bytes and matrix geometry (joined from the op calibration rows) as the axes,
  and for batch norm its channels as the outer axis (one reduction per channel
  on batch statistics).

The section is costed by :func:`training_view` (traincost.py), which swaps these
parameters into a profile so that the forward's cost code costs training steps.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from .tables import LayerTable, parse_layer_table

LAYER_COLUMNS = ("kind", "N", "Cin", "Cout", "H", "W", "K1", "K2", "stride", "groups", "padding", "dilation",
                 "bias", "dtype", "layout", "time_ms")


def _ok(r: Mapping[str, str]) -> bool:
    try:
        return r.get("status", "ok") == "ok" and float(r.get("time_ms") or "nan") > 0
    except ValueError:
        return False


def layer_rows_table(rows: Sequence[Mapping[str, str]], source: str, time_key: str = "time_ms") -> LayerTable:
    """Layer-plan rows (dicts of strings) as a layer table, ``time_key`` as its time_ms."""
    from .tables import LayerTableError

    lines = [",".join(LAYER_COLUMNS)]
    for r in rows:
        lines.append(",".join(r[time_key] if c == "time_ms" else r.get(c, "") for c in LAYER_COLUMNS))
    try:
        return parse_layer_table("\n".join(lines) + "\n", source)
    except LayerTableError as e:
        # the table's data row i is rows[i]: name the file's own line where the rows know it
        if e.row is not None and e.row < len(rows) and rows[e.row].get("_line"):
            raise LayerTableError(f"{e.source} line {rows[e.row]['_line']}: {e.detail}") from None
        raise LayerTableError(f"{e} (line numbers count the header and the measured layer rows only)") from None


def op_key(r: Mapping[str, str]) -> tuple:
    return (r["op"],) + tuple(r[f"d{j}"] for j in range(4))


def join_op_rows(rows: Sequence[Mapping[str, str]], op_rows: Sequence[Mapping[str, str]]) -> List[Dict[str, str]]:
    """``rows`` (op kinds and sizes, a time) with the forward op row's class, bytes and matrix
    geometry (the op calibration rows, opmeasure.OP_RESULT_COLUMNS); a row with no forward row
    (the training plan's own sizes) gets them from its op run on meta tensors."""
    features = {op_key(r): r for r in op_rows if r.get("status", "ok") == "ok" and r.get("cls")}
    out = []
    for r in rows:
        f = features.get(op_key(r)) or _meta_features(r)
        if f is not None:
            out.append(dict(f, **{k: r[k] for k in ("time_ms",) + tuple(k for k in ("energy_mj", "watts") if k in r)}))
    return out


def _meta_features(r: Mapping[str, str]) -> Optional[Dict[str, str]]:
    """Class, bytes and geometry of an op-plan row from its op run on meta tensors (as captured in
    calibration, opmeasure.captured_features); None for a kind this version does not know."""
    import torch

    from .calibrate.opmeasure import captured_features
    from .calibrate.opplan import builder

    try:
        _, build = builder(r["op"])
        fn = build(tuple(int(r[f"d{j}"]) for j in range(4)), "meta", getattr(torch, r.get("dtype") or "float32"))
    except (KeyError, ValueError, AttributeError):
        return None
    with torch.no_grad():
        features = captured_features(fn)
    return dict(features, op=r["op"], **{f"d{j}": r[f"d{j}"] for j in range(4)}) if features["cls"] else None


def no_input_grad_ratio(rows: Sequence[Mapping[str, str]], min_pairs: int = 8) -> Optional[float]:
    """Median over configurations timed both ways of step(input needs no grad) / step(it does).

    A network's layer whose input needs no gradient is its first, which takes the data (an
    image: 4 channels or fewer); the median is over the configurations that take an image where
    at least ``min_pairs`` were timed both ways, else over all."""
    from .calibrate.plan import config_key, takes_image

    steps: Dict[str, Dict[str, float]] = {}
    images = set()
    for r in rows:
        if r.get("source") == "layer" and _ok(r):
            key = config_key(r)
            steps.setdefault(key, {})[r.get("input_grad", "1")] = float(r["time_ms"])
            if takes_image(r):
                images.add(key)
    ratios = {k: s["0"] / s["1"] for k, s in steps.items() if "0" in s and "1" in s}
    image_ratios = [v for k, v in ratios.items() if k in images]
    values = image_ratios if len(image_ratios) >= min_pairs else list(ratios.values())
    # a step cannot be longer without the grad-input product: noise above 1 is clamped
    return min(float(np.median(values)), 1.0) if values else None


def fit_train(rows: Sequence[Mapping[str, str]], op_rows: Sequence[Mapping[str, str]], family: str,
              l2_bytes: float, source: str = "") -> Dict[str, object]:
    """The profile's 'train' section from training rows (calibrate/train.py) and forward op rows."""
    from .fit import fit_profile
    from .opfit import fit_ops

    rows = [r for r in rows if _ok(r)]
    layers = [r for r in rows if r.get("source") == "layer" and r.get("input_grad", "1") != "0"
              and not _nhwc(r)]
    if len(layers) < 8:
        raise ValueError(f"{source or 'training rows'}: {len(layers)} timed layer rows; at least 8 are needed")
    fitted = fit_profile(layer_rows_table(layers, source), family=family, name="train", keep_data=False)
    from .ops import OUTER_RULES

    ops = fit_ops(join_op_rows([r for r in rows if r.get("source") == "op"], op_rows), l2_bytes=l2_bytes,
                  outer_ops=tuple(OUTER_RULES))
    ratio = no_input_grad_ratio(rows)
    section = {"parameters": fitted.parameters, "ops": ops,
               "no_input_grad_ratio": 1.0 if ratio is None else ratio,
               "fit": fitted.provenance["fit"], "n_measurements": len(rows), "source": source}
    nhwc = [r for r in rows if r.get("source") == "layer" and _nhwc(r) and r.get("input_grad", "1") != "0"]
    if len(nhwc) >= 8:
        from .fit import fit_channels_last

        section["channels_last"] = fit_channels_last(layer_rows_table(nhwc, source), family, fitted.parameters)
    return section


def _nhwc(r: Mapping[str, str]) -> bool:
    return r.get("layout", "") in ("nhwc", "channels_last")
