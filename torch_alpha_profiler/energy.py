"""Energy per call: a board's static power over the call's time, plus energy per FLOP and per byte.

Calibration's energy stage (calibrate/power.py) measures the average board power
while each of a few hundred plan rows (forward layers and ops, training steps)
runs back to back. The profile's ``power`` section holds, for the forward and
for the training step, the coefficients of

    energy_j = static_w x ms / 1000 + j_per_flop[class] x FLOPs + j_per_byte x bytes

``static_w``: the watts the board draws while busy whatever it computes (idle
power, clocks held high); ``j_per_flop``: the energy of one FLOP in each
matrix class (Linear, 1x1, KxK, grouped, depthwise convolutions, batched matmul,
attention: tensor-core TF32/bf16 work costs less than fp32 CUDA-core work);
``j_per_byte``: the energy of moving one byte of the layer's inputs, outputs and
weights (the op's bytes read and written). Fitted by non-negative least squares
on the relative error of each row's energy, rows weighted by a power of their
energy; that power, and whether the three terms beat one constant power x time, are
chosen by 5-fold cross-validation of the energy-weighted error (a network's energy is
a sum of many calls; see fit_energy and docs/model.md). A training
step's coefficients are over the forward's FLOPs and bytes (its own time).

CO2e = energy in kWh x the grid's carbon intensity (g CO2e per kWh).
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Sequence

import numpy as np

# world-average carbon intensity of electricity generation in 2023: 480 g CO2e per kWh
# (Ember, Global Electricity Review 2024); pass --grid-intensity for a given grid
DEFAULT_GRID_G_PER_KWH = 480.0
GRID_SOURCE = "Ember, Global Electricity Review 2024: world average 2023, 480 g CO2e/kWh"

# classes with an energy per FLOP: the layer family's classes and the batched matrix products
FLOP_CLASSES = ("linear", "conv1x1", "convkxk", "grouped", "depthwise", "matmul", "attention")
PHASES = ("forward", "train")
# candidate weightings of the rows in the fit (row energy to this power), chosen by cross-validation
# with the form
WEIGHT_EXPONENTS = (0.0, 0.5, 1.0)


def nvml_energy_counter(device_index: int = 0) -> Optional[Callable[[], float]]:
    """A callable returning the GPU's energy counter in joules, or None where NVML cannot read it."""
    try:
        import pynvml as nvml

        nvml.nvmlInit()
        handle = nvml.nvmlDeviceGetHandleByIndex(device_index)
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception:  # no nvidia-ml-py, no driver, or a GPU without the counter
        return None
    return lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3


def energy_j(coeffs: Mapping[str, object], classes: Sequence[str], ms, flops, nbytes) -> np.ndarray:
    """Joules per call of calls of ``classes`` lasting ``ms`` with ``flops`` and ``nbytes``,
    under one phase's coefficients (static_w, j_per_flop, j_per_byte)."""
    per_flop = coeffs.get("j_per_flop", {})
    jpf = np.array([float(per_flop.get(c, 0.0)) for c in classes])
    return (float(coeffs["static_w"]) * np.asarray(ms, dtype=np.float64) / 1e3
            + jpf * np.asarray(flops, dtype=np.float64)
            + float(coeffs["j_per_byte"]) * np.asarray(nbytes, dtype=np.float64))


def co2e_g(joules: float, grid_g_per_kwh: float = DEFAULT_GRID_G_PER_KWH) -> float:
    """Grams of CO2e of ``joules`` of electricity at ``grid_g_per_kwh``."""
    return joules / 3.6e6 * grid_g_per_kwh


def _nnls_relative(a: np.ndarray, joules: np.ndarray, weight_exp: float) -> np.ndarray:
    """Non-negative coefficients minimizing sum (joules^w x (a @ x / joules - 1))^2."""
    from scipy.optimize import lsq_linear

    w = joules ** weight_exp
    m = a / joules[:, None] * w[:, None]
    scale = np.abs(m).max(axis=0)
    scale[scale == 0] = 1.0
    return lsq_linear(m / scale, w, bounds=(0.0, np.inf)).x / scale


def fit_energy(classes: Sequence[str], ms, flops, nbytes, joules, weight_exps=WEIGHT_EXPONENTS,
               folds: int = 5, seed: int = 0) -> Dict[str, object]:
    """One phase's coefficients, by non-negative least squares on each row's relative error,
    rows weighted by their energy to the power w. The form (``FORMS``: the three terms, or one
    constant power x time) and w are chosen by ``folds``-fold cross-validation of the
    energy-weighted error (sum |error| / sum energy: the error of a sum of many calls, as a
    network's energy is). A FLOP class with no row gets no coefficient (its FLOPs then cost only
    time and bytes); the constant form has none, and no energy per byte."""
    from .fit import residual_stats

    classes = list(classes)
    ms, flops, nbytes, joules = (np.asarray(v, dtype=np.float64) for v in (ms, flops, nbytes, joules))
    names = np.array(classes)
    present = [c for c in FLOP_CLASSES if np.any((names == c) & (flops > 0))]
    full = np.stack([ms / 1e3] + [np.where(names == c, flops, 0.0) for c in present] + [nbytes], axis=1)
    designs = {"static + per FLOP + per byte": full, "constant power": full[:, :1]}
    fold = np.random.default_rng(seed).permutation(len(joules)) % folds
    cv = {}
    for form, a in designs.items():
        for w in weight_exps:
            pred = np.empty(len(joules))
            for k in range(folds):
                train = fold != k
                pred[~train] = a[~train] @ _nnls_relative(a[train], joules[train], w)
            cv[(form, w)] = float(np.sum(np.abs(pred - joules)) / np.sum(joules) * 100)
    form, w = min(cv, key=cv.get)
    x = _nnls_relative(designs[form], joules, w)
    if form == "constant power":
        coeffs = {"static_w": float(x[0]), "j_per_flop": {}, "j_per_byte": 0.0}
    else:
        coeffs = {"static_w": float(x[0]), "j_per_flop": {c: float(v) for c, v in zip(present, x[1:-1])},
                  "j_per_byte": float(x[-1])}
    coeffs["fit"] = dict(residual_stats(energy_j(coeffs, classes, ms, flops, nbytes), joules), form=form,
                         weight_exponent=w, cv_weighted_ape_pct={f"{f}, w={k}": v for (f, k), v in cv.items()})
    return coeffs
