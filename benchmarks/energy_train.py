"""Raw data for energy and training-step costs: per model, NVML energy and CUDA-graph step times.

    python benchmarks/energy_train.py --dtype float32 --out DIR      # on a GPU

For each torchvision model at one batch size (32 by default):

- forward (eval, no grad) captured as a CUDA graph and replayed for at least
  --seconds: milliseconds per call (CUDA events), average board power and joules
  per call (NVML's total-energy counter polled during the replays: the energy
  between its first and last step over the time between them, as the calibration's
  energy stage measures, calibrate/power.py);
- training step (train mode, forward + sum of the outputs + backward, no optimizer)
  captured as a CUDA graph the same way, replayed for at least --train-seconds.

The GPU's idle power is measured first the same way. Rows are appended as they are taken; a model
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

COLUMNS = ("model", "batch", "dtype", "fwd_ms", "fwd_j", "fwd_w", "fwd_window_s", "fwd_steps", "fwd_busy",
           "train_ms", "train_j", "train_w", "train_window_s", "train_steps", "train_busy", "idle_w", "status",
           "device_name")


def measure(name, batch, dtype, seconds, train_seconds, counter):
    import torch

    from torch_alpha_profiler.calibrate.power import PowerMeter
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
    r = PowerMeter(counter, seconds=seconds, max_seconds=4 * seconds).measure(forward)
    row.update(fwd_ms=f"{r.ms_per_call:.6g}", fwd_j=f"{r.joules_per_call:.6g}", fwd_w=f"{r.watts:.4g}",
               fwd_window_s=f"{r.window_s:.3g}", fwd_steps=str(r.steps), fwd_busy=f"{r.busy:.3f}")

    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = None

    def step():
        out = model(x)
        out = out[0] if isinstance(out, (tuple, list)) else out  # inception/googlenet: aux outputs
        out.float().sum().backward()

    r = PowerMeter(counter, seconds=train_seconds, max_seconds=4 * train_seconds).measure(step)
    row.update(train_ms=f"{r.ms_per_call:.6g}", train_j=f"{r.joules_per_call:.6g}", train_w=f"{r.watts:.4g}",
               train_window_s=f"{r.window_s:.3g}", train_steps=str(r.steps),
               train_busy=f"{r.busy:.3f}")
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

    import torch

    from torch_alpha_profiler.calibrate.power import PowerMeter
    from torch_alpha_profiler.energy import nvml_energy_counter

    counter = nvml_energy_counter(torch.cuda.current_device())
    time.sleep(2.0)
    idle_w = PowerMeter(counter, seconds=1.0, max_seconds=4.0).measure(None).watts
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
                row.update(measure(name, args.batch, args.dtype, args.seconds, args.train_seconds, counter))
            except Exception as e:  # noqa: BLE001 - recorded, not hidden
                row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:80]}".replace(",", ";")
            torch.cuda.empty_cache()
            w.writerow(row)
            f.flush()
            print(f"{name} b{args.batch} {args.dtype}: fwd {row.get('fwd_ms')} ms {row.get('fwd_w')} W, "
                  f"train {row.get('train_ms')} ms {row.get('train_w')} W {row['status']}", flush=True)


if __name__ == "__main__":
    main()
