"""Calibration: plan synthetic layers, measure them (raw times saved first), fit a profile.

    from torch_alpha_profiler.calibrate import calibrate
    profile = calibrate("h100-fp32", device="cuda", dtype="float32")   # h100-fp32.csv, .json

Each step is usable on its own: ``plan.make_plan``, ``measure.measure_plan``
(with any timer from ``timers``), and ``torch_alpha_profiler.fit.fit_profile``.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from typing import Optional


def calibrate(out_prefix: str, device: str = "cuda", dtype: str = "float32", family: str = "axes",
              scale: int = 1, seed: int = 0, resume: bool = True, overwrite: bool = False,
              name: Optional[str] = None, timer=None, progress=None, ops: bool = True,
              energy: bool = False, train: bool = False, dense: int = 0):
    """Time the calibration plans on ``device`` and fit ``family``; returns the saved profile.

    Everything is measured first, each raw time written as it is taken (an
    interrupted run resumes), then fitted; the layer fit runs in a second process while the
    other stages are measured (the profile is the same as fitting afterwards, and as
    `alpha-profiler fit` gives, less the channels-last CV score, which only `fit` computes):

    * ``PREFIX.csv``: the Conv2d/Linear plan (provenance in ``.csv.env.json``), then ``dense``
      more random layers (plan.dense_rows), which the layer fit (formula, residual trees,
      neighbour correction) uses and the other stages do not sample (12 ms a layer on an H100);
    * with ``ops``: ``PREFIX-ops.csv``, the other operations (opplan.py);
      ``PREFIX-host.csv``, the CPU's cost of eager calls; ``PREFIX-nhwc.csv``,
      a twentieth of the Conv2d rows again with channels-last (NHWC) inputs, and depthwise ones
      as channels-last networks run them;
    * with ``train``: ``PREFIX-train.csv``, training steps (forward + backward) of every layer
      and half of the trainable ops (train.py), fitted into the profile's 'train'
      section (trainfit.py);
    * with ``energy`` (a GPU whose energy counter NVML reads): ``PREFIX-energy.csv``, board
      power while each of about 280 rows of the plans (and of the training plan) runs for
      0.3 s (power.py), fitted into the 'power' section (powerfit.py, energy.py); the idle
      power goes to the provenance. About 2 minutes on an H100;
    * ``PREFIX.json``: the profile, with the seconds each stage took.

    Refuses to start when the profile file exists and ``overwrite`` is false. A script that calls
    it should do so under ``if __name__ == "__main__":``, as Python's multiprocessing asks of
    programs that start processes; otherwise the layer fit runs after the measurements, with a
    warning.
    """
    import torch

    from .measure import measure_plan
    from .plan import config_key, dense_rows, make_plan

    if (train or energy) and not ops:
        raise ValueError("training and energy calibration need the op plan (ops=True): their op rows "
                         "take bytes and geometry from it")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' asked for, but no CUDA device is available")
    profile_path = out_prefix + ".json"
    os.makedirs(os.path.dirname(os.path.abspath(out_prefix)), exist_ok=True)  # --out in a new folder
    if os.path.exists(profile_path) and not overwrite:
        raise FileExistsError(f"{profile_path} exists; pass overwrite=True (CLI: --force) to replace it")
    seconds = {}
    clock = time.monotonic()

    def lap(stage):
        nonlocal clock
        now = time.monotonic()
        seconds[stage] = round(now - clock, 1)
        clock = now

    paths = dict(zip(("raw", "ops", "host", "nhwc", "train", "energy"),
                     (out_prefix + s for s in (".csv", "-ops.csv", "-host.csv", "-nhwc.csv", "-train.csv",
                                               "-energy.csv"))))
    meter, idle_w = _power_meter(device) if energy else (None, None)
    plan = make_plan(scale=scale, seed=seed)
    extra = dense_rows(dense, exclude={config_key(r) for r in plan}) if dense > 0 else []
    measure_plan(plan + extra, paths["raw"], device=device, dtype=dtype, timer=timer, resume=resume,
                 progress=progress)
    lap("layers")
    env = _layer_env(paths["raw"], idle_w)
    profile_name = name or os.path.basename(out_prefix)
    measuring = dict(device=device, dtype=dtype, timer=timer, resume=resume, progress=progress)
    # the layer fit needs only the layer CSV: when other stages follow, a second process fits it on
    # the CPU while the GPU measures them (on the GPU machine the fits took up to a minute of a
    # calibration: benchmarks/probe_fit_time.py, benchmarks/data/fresh-run16/)
    pool = _fit_pool() if ops else None
    trees = _with_trees(family)
    layer_fit = (pool.submit(_fit_layers, paths["raw"], family, profile_name, env, trees)
                 if pool is not None else None)
    try:
        train_rows = []
        if ops:
            _measure_op_stages(plan, paths, scale, seed, measuring, lap)
        if train:
            train_rows = _measure_train_stage(plan, paths["train"], scale, seed, measuring)
            lap("train")
        if meter is not None:
            from .power import energy_plan, measure_energy

            measure_energy(energy_plan(plan, _op_plan(scale, seed), train_rows), paths["energy"], meter,
                           device=device, dtype=dtype, resume=resume, progress=progress)
            lap("energy")
        profile = _layer_profile(layer_fit, paths["raw"], family, profile_name, env, trees)
        if ops:
            profile = _fit_other_sections(profile, paths, family, env, train, meter is not None, idle_w)
    finally:
        if pool is not None:  # its one task is done unless a stage failed: then do not wait for it
            pool.shutdown(wait=False, cancel_futures=True)
    lap("fit")
    seconds["total"] = round(sum(seconds.values()), 1)
    profile = replace_provenance(profile, calibration_seconds=seconds)
    profile.save(profile_path, overwrite=overwrite)
    return profile


def _layer_profile(layer_fit, raw: str, family: str, name: str, env: dict, trees: bool):
    """The layer fit's profile: the worker's result, or fitted here when there is no worker or it
    could not run. A 'spawn' worker imports the caller's main module again, so a script that calls
    calibrate() outside ``if __name__ == "__main__":`` breaks it (Python's multiprocessing rule)."""
    if layer_fit is not None:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return layer_fit.result()
        except BrokenProcessPool:
            import warnings

            warnings.warn("the layer fit's worker process could not run (a script that calls calibrate() "
                          "should do so under 'if __name__ == \"__main__\":'); fitting here instead, after "
                          "the measurements", RuntimeWarning, stacklevel=3)
    return _fit_layers(raw, family, name, env, trees)


def _power_meter(device: str):
    """(meter, idle watts): NVML's energy counter, polled while each row of the energy plan runs
    (power.py), and the board's power before anything runs."""
    import torch

    from ..energy import nvml_energy_counter
    from .power import PowerMeter

    index = torch.device(device).index if device.startswith("cuda") else None
    counter = nvml_energy_counter(torch.cuda.current_device() if index is None else index) \
        if device.startswith("cuda") else None
    if counter is None:
        raise RuntimeError("energy calibration needs a GPU whose energy counter NVML can read "
                           "(pip install nvidia-ml-py)")
    meter = PowerMeter(counter)
    time.sleep(1.0)
    return meter, meter.measure(None).watts


def _layer_env(raw: str, idle_w: Optional[float]) -> dict:
    """The layer CSV's measurement provenance (with the idle power, written back beside the CSV),
    as the profile's provenance."""
    with open(raw + ".env.json") as f:
        env = json.load(f)
    if idle_w is not None:
        env["idle_power_w"] = round(idle_w, 2)
        with open(raw + ".env.json", "w") as f:
            json.dump(env, f, indent=1)
    env.update(source=raw, measurement_env=raw + ".env.json")
    return env


def _measure_op_stages(plan, paths: dict, scale: int, seed: int, measuring: dict, lap) -> None:
    """The other operations, the host's eager costs and the channels-last rows, each timed and
    written to its CSV in turn."""
    from .measure import measure_plan
    from .opmeasure import measure_host, measure_op_plan
    from .opplan import host_plan
    from .plan import channels_last_plan

    measure_op_plan(_op_plan(scale, seed), paths["ops"], **measuring)
    lap("ops")
    measure_host(host_plan(), paths["host"], device=measuring["device"], dtype=measuring["dtype"])
    lap("host")
    measure_plan(channels_last_plan(plan), paths["nhwc"], **measuring)
    lap("channels_last")


def _measure_train_stage(plan, train_csv: str, scale: int, seed: int, measuring: dict) -> list:
    """Training steps of every layer row and of half of the trainable ops; returns the rows."""
    from .opplan import norm_train_rows
    from .plan import channels_last_plan
    from .train import measure_train, train_plan

    every = {} if scale > 0 else {"op_every": 1}  # smoke test: all
    # training keeps every 10th channels-last row (its time is not the calibration's 120 s)
    rows = train_plan(plan, _op_plan(scale, seed), nhwc_plan=channels_last_plan(plan, every=10),
                      extra_ops=norm_train_rows() if scale > 0 else (), **every)
    measure_train(rows, train_csv, **measuring)
    return rows


def _fit_other_sections(profile, paths: dict, family: str, env: dict, train: bool, energy: bool,
                        idle_w: Optional[float]):
    """``profile`` with its op classes, host costs, channels-last parameters and, as measured,
    training-step and power sections fitted."""
    from dataclasses import replace

    from ..fit import fit_channels_last
    from ..opcost import L2_BYTES
    from ..opfit import fit_host, fit_ops
    from ..tables import read_layer_table
    from .measure import read_results

    l2 = env.get("l2_cache_bytes") or L2_BYTES
    op_rows = list(read_results(paths["ops"]))
    profile = replace(profile, ops=fit_ops(op_rows, l2_bytes=l2), host=fit_host(list(read_results(paths["host"]))),
                      # its 5-fold CV score is left to `alpha-profiler fit` (five more refits: up to
                      # 40 s on the GPU machine's CPU)
                      channels_last=fit_channels_last(read_layer_table(paths["nhwc"]), family, profile.parameters,
                                                      cv=False),
                      provenance=dict(profile.provenance, ops_source=paths["ops"], host_source=paths["host"],
                                      channels_last_source=paths["nhwc"]))
    if train:
        from ..trainfit import fit_train

        profile = replace(profile, train=fit_train(list(read_results(paths["train"])), op_rows, family, l2,
                                                   source=paths["train"]))
    if energy:
        from ..powerfit import fit_power

        profile = replace(profile, power=fit_power(list(read_results(paths["energy"])), op_rows, family, idle_w,
                                                   source=paths["energy"]))
    return profile


def _op_plan(scale: int, seed: int):
    """The op plan of a calibration; scale 0 (a smoke test): a few small ops of each kind."""
    from .opplan import make_op_plan

    if scale > 0:
        return make_op_plan(per_kind=20 * scale, seed=seed, matmuls=64 * scale, attention=32 * scale)
    return make_op_plan(per_kind=2, seed=seed, matmuls=8, attention=8, max_elements=2 ** 16)


def replace_provenance(profile, **fields):
    """``profile`` with ``fields`` added to its provenance."""
    from dataclasses import replace

    return replace(profile, provenance=dict(profile.provenance, **fields))


def _with_trees(family: str) -> bool:
    """Whether the layer fit has residual trees: for the axes family, where scikit-learn is
    installed (the ``fit`` extra); a warning otherwise."""
    import importlib.util

    if family != "axes":
        return False
    if importlib.util.find_spec("sklearn") is None:
        warnings.warn("scikit-learn is not installed: the profile has no residual trees "
                      "(pip install 'torch_alpha_profiler[fit]', then alpha-profiler fit the raw CSV)",
                      stacklevel=3)
        return False
    return True


def _fit_layers(raw: str, family: str, name: str, provenance: dict, trees: bool):
    """The profile fitted on the layer CSV ``raw`` (run in a second process by calibrate)."""
    from ..fit import fit_profile
    from ..tables import read_layer_table

    return fit_profile(read_layer_table(raw), family=family, name=name, provenance=provenance, trees=trees)


def _fit_pool():
    """One worker process, started fresh ('spawn'): it needs no CUDA, and a forked copy of a
    process that holds a CUDA context must not touch it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
