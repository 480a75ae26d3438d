"""Time the layers of a plan and append each result to a CSV as it is taken.

Rows already in the output file are skipped (resume); a configuration that
runs out of memory is written with status ``oom`` and no time. Inputs and
weights are random (never zeros), on the chosen device and dtype.
"""
from __future__ import annotations

import csv
import json
import os
import platform
import datetime as _dt
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from .plan import PLAN_COLUMNS, config_key

RESULT_COLUMNS = PLAN_COLUMNS + ("dtype", "layout", "time_ms", "iqr_ms", "calls", "energy_mj", "status")

Progress = Callable[[int, int, Dict[str, str]], None]


def environment(device: str, dtype: str) -> Dict[str, object]:
    """Provenance of a measurement run: device, library versions, math mode, date."""
    import torch

    env: Dict[str, object] = {
        "device": device,
        "dtype": dtype,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                 "cudnn": torch.backends.cudnn.allow_tf32},
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "host": platform.node(),
    }
    if device.startswith("cuda"):
        env["device_name"] = torch.cuda.get_device_name(device)
        props = torch.cuda.get_device_properties(device)
        env["sm_count"] = props.multi_processor_count
        env["memory_gib"] = round(props.total_memory / 2 ** 30, 1)
        l2 = getattr(props, "L2_cache_size", None)
        if l2:
            env["l2_cache_bytes"] = int(l2)
    else:
        env["device_name"] = f"CPU ({platform.processor() or platform.machine()})"
    env["cpu"] = platform.processor() or platform.machine()  # eager host costs depend on it
    return env


def _pair(text: str):
    """A layer-table value 'A' or 'AxB' as (height, width)."""
    h, _, w = text.partition("x")
    return int(h), int(w or h)


def build_layer(r: Dict[str, str], device: str, dtype: str, seed: int = 0):
    """The module and a random input for one plan row; the module is built and initialised on
    ``device`` in ``dtype`` (a large layer's initialisation on the CPU and its copy cost more
    than timing it)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    dt = getattr(torch, dtype)
    n, cin, cout = int(r["N"]), int(r["Cin"]), int(r["Cout"])
    bias = r.get("bias", "0") == "1"
    if r["kind"] == "Linear":
        layer = nn.Linear(cin, cout, bias=bias, device=device, dtype=dt)
        x = torch.randn(n, cin, device=device, dtype=dt)
    else:
        k1, k2 = int(r["K1"]), int(r["K2"])
        pad = r.get("padding", "")
        padding = (k1 // 2, k2 // 2) if pad == "" else _pair(pad)
        layer = nn.Conv2d(cin, cout, (k1, k2), stride=_pair(r["stride"]), padding=padding,
                          dilation=_pair(r.get("dilation", "1")),
                          groups=int(r["groups"]), bias=bias, device=device, dtype=dt)
        x = torch.randn(n, cin, int(r["H"]), int(r["W"]), device=device, dtype=dt)
        if r.get("layout") in ("nhwc", "channels_last"):
            x = x.contiguous(memory_format=torch.channels_last)  # the weights stay as built
    return layer.eval(), x


def _done_keys(path: str) -> set:
    if not os.path.exists(path):
        return set()
    with open(path, newline="") as f:
        return {config_key(r) + "," + r.get("dtype", "") for r in csv.DictReader(f)
                if r.get("status") in ("ok", "oom")}


def measure_plan(plan: Sequence[Dict[str, str]], out_csv: str, device: str = "cuda",
                 dtype: str = "float32", timer=None, resume: bool = True,
                 progress: Optional[Progress] = None) -> List[Dict[str, str]]:
    """Time every row of ``plan`` on ``device`` and append results to ``out_csv``.

    Writes ``out_csv + '.env.json'`` (provenance) first. Returns the rows
    measured in this call. The default timer is CudaGraphTimer on CUDA and
    CpuTimer otherwise.
    """
    import torch

    from .timers import CpuTimer, CudaGraphTimer

    if timer is None:
        timer = CudaGraphTimer() if device.startswith("cuda") else CpuTimer()
    if hasattr(timer, "prepare"):
        timer.prepare()
    env = environment(device, dtype)
    env["timer"] = {k: v for k, v in getattr(timer, "__dict__", {}).items() if isinstance(v, (int, float))}
    env["timer"]["class"] = type(timer).__name__
    with open(out_csv + ".env.json", "w") as f:
        json.dump(env, f, indent=1)
    done = _done_keys(out_csv) if resume else set()

    def time_row(i, r):
        layer, x = build_layer(r, device, dtype, seed=i)
        with torch.no_grad():
            return timing_fields(timer.measure(lambda: layer(x)))

    return run_rows(plan, out_csv, RESULT_COLUMNS, lambda r: config_key(r) + "," + dtype in done,
                    time_row, dict(dtype=dtype), device, resume, progress)


def timing_fields(m) -> Dict[str, str]:
    """A Measurement as result-row cells."""
    return {"time_ms": f"{m.median_ms:.6g}", "iqr_ms": f"{m.iqr_ms:.3g}", "calls": str(m.calls_per_block)}


def run_rows(plan: Sequence[Dict[str, str]], out_csv: str, columns: Sequence[str],
             is_done: Callable[[Dict[str, str]], bool], time_row: Callable[[int, Dict[str, str]], Dict[str, str]],
             fixed: Dict[str, str], device: str, resume: bool = True,
             progress: Optional[Progress] = None) -> List[Dict[str, str]]:
    """The measurement loop of every plan: each row not ``is_done`` gets ``time_row(i, row)``'s
    cells and is appended to ``out_csv`` at once (so an interrupted run loses nothing); a row that
    runs out of memory is written with status ``oom``, one that fails with its error. Returns
    the rows written in this call."""
    import torch

    new_file = not resume or not os.path.exists(out_csv) or os.path.getsize(out_csv) == 0
    oom_errors = (torch.cuda.OutOfMemoryError,) if hasattr(torch.cuda, "OutOfMemoryError") else (RuntimeError,)
    results: List[Dict[str, str]] = []
    with open(out_csv, "w" if new_file else "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        if new_file:
            writer.writeheader()
            f.flush()
        for i, r in enumerate(plan):
            if progress is not None:
                progress(i, len(plan), r)
            if is_done(r):
                continue
            out = dict(r, **fixed, time_ms="", iqr_ms="", calls="", energy_mj="", status="ok")
            try:
                torch.manual_seed(i)
                out.update(time_row(i, r))
            except oom_errors:
                out["status"] = "oom"
            except RuntimeError as e:  # e.g. no cuDNN algorithm for this shape: keep going
                out["status"] = "error: " + str(e).splitlines()[0][:100].replace(",", ";")
            finally:
                if device.startswith("cuda") and out["status"] != "ok":
                    torch.cuda.empty_cache()
            writer.writerow(out)
            f.flush()
            results.append(out)
        if progress is not None:
            progress(len(plan), len(plan), {})
    return results


def read_results(path: str) -> Iterable[Dict[str, str]]:
    with open(path, newline="") as f:
        yield from csv.DictReader(f)
