"""Raw data for energy and training-step costs: per model, NVML energy and CUDA-graph step times.

    python benchmarks/energy_train.py --dtype float32 --out DIR      # on a GPU

For each torchvision model at one batch size (32 by default):

- forward (eval, no grad) captured as a CUDA graph and replayed for at least
  --seconds: milliseconds per call (CUDA events), joules per call and average
  board power (NVML's total-energy counter read around the replays);
- training step (train mode, forward + sum of the outputs + backward, no optimizer)
  captured as a CUDA graph the same way, replayed for at least --train-seconds.

The GPU's idle power is read first. Rows are appended as they are taken; a model
whose step cannot be captured gets its error in ``status``. Nothing here is fitted:
it is the measurement that the energy and training cost classes will be checked on.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from validate_gpu import MODELS  # noqa: E402

COLUMNS = ("model", "batch", "dtype", "fwd_ms", "fwd_j", "fwd_w", "train_ms", "train_j", "train_w",
           "idle_w", "status", "device_name")


def _graph(fn):
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def _replay(graph, seconds, nvml, handle):
    """(ms per replay, joules per replay) over at least ``seconds`` of back-to-back replays."""
    import torch

    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    n = max(10, int(seconds * 1e3 / max(start.elapsed_time(end), 1e-3)))
    e0 = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    start.record()
    for _ in range(n):
        graph.replay()
    end.record()
    end.synchronize()
    e1 = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    ms = start.elapsed_time(end) / n
    return ms, (e1 - e0) / 1e3 / n


def measure(name, batch, dtype, seconds, train_seconds, nvml, handle):
    import torch

    from torch_alpha_profiler.zoo import build_model, default_input_size

    dt = getattr(torch, dtype)
    torch.manual_seed(0)
    model = build_model(name, device="cuda").to(dt)
    x = torch.randn(batch, 3, *default_input_size(name), device="cuda", dtype=dt)
    row = {}

    def forward():
        with torch.no_grad():
            model(x)

    model.eval()
    ms, joules = _replay(_graph(forward), seconds, nvml, handle)
    row.update(fwd_ms=f"{ms:.6g}", fwd_j=f"{joules:.6g}", fwd_w=f"{joules / ms * 1e3:.4g}")

    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = None

    def step():
        out = model(x)
        out = out[0] if isinstance(out, (tuple, list)) else out  # inception/googlenet: aux outputs
        out.float().sum().backward()

    ms, joules = _replay(_graph(step), train_seconds, nvml, handle)
    row.update(train_ms=f"{ms:.6g}", train_j=f"{joules:.6g}", train_w=f"{joules / ms * 1e3:.4g}")
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--train-seconds", type=float, default=1.0)
    args = parser.parse_args(argv)

    import pynvml as nvml
    import torch

    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
    time.sleep(2.0)
    idle_w = nvml.nvmlDeviceGetPowerUsage(handle) / 1e3
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"energy-train-{args.dtype}.csv")
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            w.writeheader()
        for name in args.models:
            row = {"model": name, "batch": args.batch, "dtype": args.dtype, "idle_w": f"{idle_w:.4g}",
                   "status": "ok", "device_name": torch.cuda.get_device_name()}
            try:
                row.update(measure(name, args.batch, args.dtype, args.seconds, args.train_seconds, nvml, handle))
            except Exception as e:  # noqa: BLE001 - recorded, not hidden
                row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:80]}".replace(",", ";")
            torch.cuda.empty_cache()
            w.writerow(row)
            f.flush()
            print(f"{name} b{args.batch} {args.dtype}: fwd {row.get('fwd_ms')} ms {row.get('fwd_w')} W, "
                  f"train {row.get('train_ms')} ms {row.get('train_w')} W {row['status']}", flush=True)
    nvml.nvmlShutdown()


if __name__ == "__main__":
    main()
