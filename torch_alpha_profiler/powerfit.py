"""Fit a profile's 'power' section from ``PREFIX-energy.csv`` (calibrate --energy).

Each row of the energy stage has a time per call and an energy per call. Its
FLOPs and bytes come from its geometry: layer rows through the layer arrays,
op rows from the forward op calibration row of the same kind and sizes. The
forward rows fit the 'forward' coefficients, the training-step rows (whose input
needs a gradient) the 'train' ones, both in energy.py's form.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from .energy import fit_energy
from .trainfit import join_op_rows, layer_rows_table

# rows measured while the device idled more than this share of the time are left out (power.py)
MIN_BUSY = 0.9
# plan sweeps left out of the energy fit: the group-width sweep (plan v3) covers the time cliffs
# of cuDNN's grouped kernels, which run 10-100x longer than their FLOPs need at 450 W or more;
# the per-FLOP form can only charge that to the static power. With those rows the forward fit's
# cross-validated WAPE rose from 14-15% to 22% and fp32 fell back to one constant power; the
# training rows' CV WAPE is lower with them (12.5-16% against 16-17%: docs/forms-train-energy.md),
# a comparison over different rows. The rows are left out of both phases on the mechanism.
ENERGY_EXCLUDED_SWEEPS = ("grouped_w",)


def energy_features(rows: Sequence[Mapping[str, str]], op_rows: Sequence[Mapping[str, str]], family: str,
                    source: str = "energy rows"):
    """(classes, ms, flops, bytes, joules) of energy rows: layer rows first, then op rows."""
    from .families import get_family
    from .opfit import matrix_pieces_of
    from .ops import piece_bytes, piece_macs

    fam = get_family(family)
    layers = [r for r in rows if r["source"].endswith("layer")]
    classes, ms, flops, nbytes, joules = [], [], [], [], []
    if layers:
        arrays = layer_rows_table(layers, source).arrays
        classes += [fam.classes[c] for c in fam.classify(arrays)]
        flops += (2.0 * arrays.macs).tolist()
        nbytes += arrays.nbytes.astype(np.float64).tolist()
        ms += [float(r["time_ms"]) for r in layers]
        joules += [float(r["energy_mj"]) / 1e3 for r in layers]
    for r in join_op_rows([r for r in rows if r["source"].endswith("op")], op_rows):
        piece = matrix_pieces_of([r])[0] if r["cls"] in ("matmul", "attention") else None
        classes.append(r["cls"])
        flops.append(2.0 * piece_macs(piece) if piece else 0.0)
        nbytes.append(float(piece_bytes(piece)) if piece else float(r["nbytes"]))
        ms.append(float(r["time_ms"]))
        joules.append(float(r["energy_mj"]) / 1e3)
    return classes, np.array(ms), np.array(flops), np.array(nbytes), np.array(joules)


def _usable(r: Mapping[str, str]) -> bool:
    try:
        return (r.get("status") == "ok" and float(r["energy_mj"]) > 0 and float(r["time_ms"]) > 0
                and r.get("input_grad", "1") != "0" and float(r.get("busy") or 1.0) >= MIN_BUSY
                and r.get("sweep", "") not in ENERGY_EXCLUDED_SWEEPS)
    except (KeyError, ValueError):
        return False


def fit_power(rows: Sequence[Mapping[str, str]], op_rows: Sequence[Mapping[str, str]], family: str,
              idle_w: Optional[float] = None, source: str = "") -> Dict[str, object]:
    """The profile's 'power' section: forward and training-step coefficients (energy.py)."""
    rows = [r for r in rows if _usable(r)]
    power: Dict[str, object] = {"idle_w": idle_w, "source": source}
    for phase, sources in (("forward", ("layer", "op")), ("train", ("train_layer", "train_op"))):
        features = energy_features([r for r in rows if r["source"] in sources], op_rows, family,
                                   source or "energy rows")
        if len(features[1]) >= 8:  # rows whose op has no forward op row are left out first
            power[phase] = fit_energy(*features)
    if "forward" not in power:
        raise ValueError(f"{source or 'energy rows'}: fewer than 8 usable forward rows")
    return power
