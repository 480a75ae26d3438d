"""Calibration: plan synthetic layers, measure them (raw times saved first), fit a profile.

    from torch_alpha_profiler.calibrate import calibrate
    profile = calibrate("h100-fp32", device="cuda", dtype="float32")   # h100-fp32.csv, .json

Each step is usable on its own: ``plan.make_plan``, ``measure.measure_plan``
(with any timer from ``timers``), and ``torch_alpha_profiler.fit.fit_profile``.
"""
from __future__ import annotations

import json
import os
from typing import Optional


def calibrate(out_prefix: str, device: str = "cuda", dtype: str = "float32", family: str = "axes",
              scale: int = 1, seed: int = 0, resume: bool = True, overwrite: bool = False,
              name: Optional[str] = None, timer=None, progress=None):
    """Time the calibration plan on ``device`` and fit ``family``; returns the saved profile.

    Raw times go to ``out_prefix + '.csv'`` as they are taken (an interrupted run
    resumes there), provenance to ``.csv.env.json``, the profile to ``.json``.
    Refuses to start when the profile file exists and ``overwrite`` is false.
    """
    import torch

    from ..fit import fit_profile
    from ..tables import read_layer_table
    from .measure import measure_plan
    from .plan import make_plan

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' asked for, but no CUDA device is available")
    profile_path = out_prefix + ".json"
    if os.path.exists(profile_path) and not overwrite:
        raise FileExistsError(f"{profile_path} exists; pass overwrite=True (CLI: --force) to replace it")
    raw = out_prefix + ".csv"
    measure_plan(make_plan(scale=scale, seed=seed), raw, device=device, dtype=dtype, timer=timer,
                 resume=resume, progress=progress)
    with open(raw + ".env.json") as f:
        env = json.load(f)
    env.update(source=raw, measurement_env=raw + ".env.json")
    profile = fit_profile(read_layer_table(raw), family=family,
                          name=name or os.path.basename(out_prefix), provenance=env)
    profile.save(profile_path, overwrite=overwrite)
    return profile
