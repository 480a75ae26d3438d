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
              name: Optional[str] = None, timer=None, progress=None, ops: bool = True):
    """Time the calibration plans on ``device`` and fit ``family``; returns the saved profile.

    Raw layer times go to ``out_prefix + '.csv'`` as they are taken (an
    interrupted run resumes there), provenance to ``.csv.env.json``; with
    ``ops``, the other operations' times to ``-ops.csv`` (resumed too) and the
    CPU's eager launch costs to ``-host.csv``, a third of the Conv2d layers
    again with channels-last (NHWC) inputs to ``-nhwc.csv``; the profile to ``.json``.
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
    if ops:
        from dataclasses import replace

        from ..fit import fit_channels_last
        from ..opfit import fit_host, fit_ops
        from .measure import read_results
        from .opmeasure import measure_host, measure_op_plan
        from .opplan import host_plan, make_op_plan
        from .plan import channels_last_plan

        ops_csv, host_csv = out_prefix + "-ops.csv", out_prefix + "-host.csv"
        # scale 0 (a smoke test) times a few ops of each kind, small enough for a CPU
        op_plan = make_op_plan(per_kind=24 * scale, seed=seed, matmuls=80 * scale, attention=40 * scale) \
            if scale > 0 else make_op_plan(per_kind=2, seed=seed, matmuls=8, attention=8, max_elements=2 ** 16)
        measure_op_plan(op_plan, ops_csv, device=device, dtype=dtype,
                        timer=timer, resume=resume, progress=progress)
        measure_host(host_plan(), host_csv, device=device, dtype=dtype)
        nhwc_csv = out_prefix + "-nhwc.csv"
        measure_plan(channels_last_plan(make_plan(scale=scale, seed=seed)), nhwc_csv, device=device,
                     dtype=dtype, timer=timer, resume=resume, progress=progress)
        profile = replace(profile, ops=fit_ops(list(read_results(ops_csv))),
                          host=fit_host(list(read_results(host_csv))),
                          channels_last=fit_channels_last(read_layer_table(nhwc_csv), family),
                          provenance=dict(profile.provenance, ops_source=ops_csv, host_source=host_csv,
                                          channels_last_source=nhwc_csv))
    profile.save(profile_path, overwrite=overwrite)
    return profile
