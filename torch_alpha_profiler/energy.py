"""Energy per call: a calibrated board power per cost class, times the predicted time.

Calibration reads the GPU's energy counter (NVML, ``nvmlDeviceGetTotalEnergyConsumption``)
around every timed block of the layer and op plans. A block (about 2 ms) is shorter
than the counter's update period, so one row's reading is noisy; but blocks start
at random phases of that period, so over a class the sum of the energies over the
sum of the timed durations is the class's average board power while it runs
(idle power included). A profile's ``power`` section holds those watts:

    energy_j = power_w[class] x predicted_ms / 1000

per Conv2d/Linear layer (by layer class) and per other operation (by op class).
CO2e = energy in kWh x the grid's carbon intensity (g CO2e per kWh).
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Mapping, Optional, Sequence

import numpy as np

# world-average carbon intensity of electricity generation in 2023: 480 g CO2e per kWh
# (Ember, Global Electricity Review 2024); pass --grid-intensity for a given grid
DEFAULT_GRID_G_PER_KWH = 480.0
GRID_SOURCE = "Ember, Global Electricity Review 2024: world average 2023, 480 g CO2e/kWh"


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


def idle_power_w(counter: Callable[[], float], seconds: float = 1.0) -> float:
    """Average board power over ``seconds`` of an idle GPU, from the energy counter."""
    e0, t0 = counter(), time.monotonic()
    time.sleep(seconds)
    return (counter() - e0) / (time.monotonic() - t0)


def class_power(time_ms: np.ndarray, energy_mj: np.ndarray, classes: np.ndarray,
                names: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """Per class: average power (W) = sum of energies / sum of times, and the rows used."""
    out = {}
    for i, name in enumerate(names):
        sel = (classes == i) & np.isfinite(energy_mj) & np.isfinite(time_ms)
        if sel.sum() >= 4 and time_ms[sel].sum() > 0:
            calls = time_ms[sel].sum()
            out[name] = {"power_w": float(energy_mj[sel].sum() / calls), "n": int(sel.sum())}
    return out


def energy_j(power: Mapping[str, object], group: str, cls: str, ms: float) -> Optional[float]:
    """Energy of one call of class ``cls`` ('layers' or 'ops' ``group``) lasting ``ms``."""
    watts = power.get(group, {}).get(cls)
    return None if watts is None else float(watts) * ms / 1e3


def co2e_g(joules: float, grid_g_per_kwh: float = DEFAULT_GRID_G_PER_KWH) -> float:
    """Grams of CO2e of ``joules`` of electricity at ``grid_g_per_kwh``."""
    return joules / 3.6e6 * grid_g_per_kwh


def fit_power(layer_table, family: str, op_rows: Sequence[Mapping[str, str]], idle_w: Optional[float]
              ) -> Dict[str, object]:
    """The profile's 'power' section from calibration rows that carry ``energy_mj``."""
    from .families import get_family
    from .ops import MATRIX_CLASSES, STREAM_CLASSES

    def floats(values):
        return np.array([float(v) if v not in ("", None) else np.nan for v in values])

    fam = get_family(family)
    layers = class_power(layer_table.time_ms, floats(layer_table.columns.get("energy_mj", [""] * len(layer_table))),
                         fam.classify(layer_table.arrays), fam.classes)
    op_names = STREAM_CLASSES + tuple(c for c in MATRIX_CLASSES if c != "linear")
    ok = [r for r in op_rows if r.get("status") == "ok" and r.get("cls") in op_names]
    ops = class_power(floats([r["time_ms"] for r in ok]), floats([r.get("energy_mj", "") for r in ok]),
                      np.array([op_names.index(r["cls"]) for r in ok]), op_names)
    return {"idle_w": idle_w, "layers": {c: v["power_w"] for c, v in layers.items()},
            "ops": {c: v["power_w"] for c, v in ops.items()},
            "rows": {"layers": {c: v["n"] for c, v in layers.items()}, "ops": {c: v["n"] for c, v in ops.items()}}}
