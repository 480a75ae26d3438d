"""Time the operations of an op plan, and the CPU's per-launch cost, appending rows as they come.

Each operation is first run once under :class:`~torch_alpha_profiler.capture.OpCapture`,
so its cost class, bytes and matrix geometry are exactly what the profiler
will see in a model; then it is timed with the same timer as the layers.
Host (eager) costs: the smallest configuration of each kind, and a small
Conv2d, Linear and identity module, called back to back without a graph; the
CPU time per call is what launching costs, as the GPU work is shorter.
"""
from __future__ import annotations

import csv
import itertools
import os
import time
from typing import Dict, List, Optional, Sequence

from .measure import Progress, run_rows, timing_fields
from .opplan import OP_PLAN_COLUMNS, builder

OP_RESULT_COLUMNS = OP_PLAN_COLUMNS + ("cls", "ops", "operator", "nbytes", "inner", "batch", "m", "k", "n", "dtype",
                                       "time_ms", "iqr_ms", "calls", "energy_mj", "status")
HOST_COLUMNS = ("kind", "host_class", "host_us", "calls", "dtype", "device")


def op_key(r: Dict[str, str]) -> str:
    return ",".join(r[c] for c in OP_PLAN_COLUMNS)


def captured_features(fn) -> Dict[str, str]:
    """Cost class, aten ops, bytes and matrix geometry of ``fn()`` as the profiler records them."""
    from ..capture import ModuleStack, OpCapture, to_records

    stack = ModuleStack()
    stack.frames.append(("", "calibration", False))
    mode = OpCapture(stack, itertools.count())
    with mode:
        fn()
    records = to_records(mode.calls)
    if not records:
        return {"cls": "", "ops": "", "operator": "", "nbytes": "0", "inner": "", "batch": "", "m": "",
                "k": "", "n": ""}
    matrix = [p for r in records for p in r.pieces if p.cls in ("matmul", "attention")]
    main = records[-1].pieces[0]
    feats = {"cls": records[-1].op_class if not matrix else matrix[0].cls,
             "ops": "+".join(r.op.split(".")[0] for r in records),
             "operator": main.op, "inner": str(main.inner),
             "nbytes": str(sum(r.nbytes for r in records))}
    p = matrix[0] if matrix else None
    feats.update({k: str(getattr(p, k)) if p else "" for k in ("batch", "m", "k", "n")})
    return feats


def measure_op_plan(plan: Sequence[Dict[str, str]], out_csv: str, device: str = "cuda",
                    dtype: str = "float32", timer=None, resume: bool = True,
                    progress: Optional[Progress] = None) -> List[Dict[str, str]]:
    """Time every op of ``plan`` on ``device``; rows are appended to ``out_csv`` as they are taken."""
    import torch

    from .timers import CpuTimer, CudaGraphTimer

    if timer is None:
        timer = CudaGraphTimer() if device.startswith("cuda") else CpuTimer()
    done = set()
    if resume and os.path.exists(out_csv):
        with open(out_csv, newline="") as f:
            done = {op_key(r) + "," + r.get("dtype", "") for r in csv.DictReader(f)
                    if r.get("status") in ("ok", "oom")}
    dt = getattr(torch, dtype)

    def time_row(i, r):
        _, build = builder(r["op"])
        fn = build(tuple(int(r[f"d{j}"]) for j in range(4)), device, dt)
        with torch.no_grad():
            cells = captured_features(fn)
            cells.update(timing_fields(timer.measure(fn)))
        return cells

    return run_rows(plan, out_csv, OP_RESULT_COLUMNS, lambda r: op_key(r) + "," + dtype in done, time_row,
                    dict(dtype=dtype), device, resume, progress)


def _host_time_us(fn, device: str, calls: int = 300, warmup: int = 20, repeats: int = 5) -> float:
    """Median over ``repeats`` of the wall time per call of ``calls`` eager calls, in us."""
    import statistics

    import torch

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        samples.append((time.perf_counter() - t0) * 1e6 / calls)
    return statistics.median(samples)


def host_modules(device: str, dtype: str):
    """(kind, host class, zero-argument callable) for the module-level host measurements."""
    import torch
    from torch import nn

    class Identity(nn.Module):
        def forward(self, x):
            return x

    class Block(nn.Module):
        """A network's smallest unit: four module calls (itself, conv, bn, relu), three launches."""

        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.relu = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(True)

        def forward(self, x):
            return self.relu(self.bn(self.conv(x)))

    dt = getattr(torch, dtype)
    x4 = torch.randn(1, 16, 4, 4, device=device, dtype=dt)
    x2 = torch.randn(1, 16, device=device, dtype=dt)
    conv = nn.Conv2d(16, 16, 3, padding=1).to(device=device, dtype=dt).eval()
    linear = nn.Linear(16, 16).to(device=device, dtype=dt).eval()
    ident = Identity()
    block = Block().to(device=device, dtype=dt).eval()
    return [("conv_module", "conv", lambda: conv(x4)),
            ("linear_module", "linear", lambda: linear(x2)),
            ("identity_module", "module", lambda: ident(x4)),
            ("block_module", "block", lambda: block(x4))]


def measure_host(plan: Sequence[Dict[str, str]], out_csv: str, device: str = "cuda",
                 dtype: str = "float32", progress: Optional[Progress] = None) -> List[Dict[str, str]]:
    """CPU time per eager call of each kind's smallest configuration; rewrites ``out_csv``."""
    import torch

    dt = getattr(torch, dtype)
    jobs = []
    for r in plan:
        cls, build = builder(r["op"])
        jobs.append((r["op"], cls, build(tuple(int(r[f"d{j}"]) for j in range(4)), device, dt)))
    jobs += host_modules(device, dtype)
    rows = []
    with open(out_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HOST_COLUMNS)
        writer.writeheader()
        with torch.no_grad():
            for i, (kind, cls, fn) in enumerate(jobs):
                if progress is not None:
                    progress(i, len(jobs), {"op": kind})
                row = {"kind": kind, "host_class": cls, "host_us": f"{_host_time_us(fn, device):.4g}",
                       "calls": "300", "dtype": dtype, "device": device}
                writer.writerow(row)
                f.flush()
                rows.append(row)
    if progress is not None:
        progress(len(jobs), len(jobs), {})
    return rows
