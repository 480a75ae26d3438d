"""Per-operator GPU time of whole torchvision models (raw data for costing every kernel).

    python benchmarks/op_breakdown.py --dtype float32 --out DIR      # on a GPU

For each model and batch, three eager forwards (with --train: training steps, train mode,
forward + sum of the outputs + backward, no optimizer) run under torch.profiler with
input shapes recorded; every aten operator's self device time (the kernels it
launched) is written per call, with its input shapes, so that cost classes
for the memory-bound operations (BatchNorm, activations, pooling, additions,
concatenations, LayerNorm, softmax, attention products) can be designed and
fitted without more device time. Eager kernels run as they would in a graph;
launch gaps are not counted in device time.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from validate_gpu import MODELS  # noqa: E402

COLUMNS = ("model", "batch", "dtype", "op", "input_shapes", "calls_per_forward", "self_device_us_per_call",
           "device_name")


def _device_us(evt, name):
    for attr in (f"self_device_{name}", f"self_cuda_{name}"):
        if hasattr(evt, attr):
            return float(getattr(evt, attr))
    return float("nan")


def breakdown(name, batch, dtype, forwards=3, train=False):
    import torch
    from torch.profiler import ProfilerActivity, profile

    from torch_alpha_profiler.zoo import build_model, default_input_size

    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    model = build_model(name, device="cuda").to(dt)
    x = torch.randn(batch, 3, *default_input_size(name), device="cuda", dtype=dt)

    def step():
        if not train:
            model(x)
            return
        out = model(x)
        out = out[0] if isinstance(out, (tuple, list)) else out  # inception/googlenet: aux outputs
        out.float().sum().backward()

    model.train(train)
    with torch.set_grad_enabled(train):
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
            for _ in range(forwards):
                step()
            torch.cuda.synchronize()
    rows = []
    for evt in prof.key_averages(group_by_input_shape=True):
        total = _device_us(evt, "time_total")
        if not evt.key.startswith("aten::") or not total > 0:
            continue
        rows.append({"model": name, "batch": batch, "dtype": dtype, "op": evt.key,
                     "input_shapes": json.dumps(evt.input_shapes, separators=(",", ":")),
                     "calls_per_forward": evt.count / forwards,
                     "self_device_us_per_call": round(total / evt.count, 3),
                     "device_name": torch.cuda.get_device_name()})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--budget-s", type=float, default=240)
    parser.add_argument("--train", action="store_true", help="training steps instead of forwards")
    args = parser.parse_args(argv)
    path = os.path.join(args.out, f"op-breakdown{'-train' if args.train else ''}-{args.dtype}.csv")
    t0 = time.monotonic()
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for name in args.models:
            for batch in args.batches:
                if time.monotonic() - t0 > args.budget_s:
                    print("budget spent before", name, batch, flush=True)
                    return
                try:
                    rows = breakdown(name, batch, args.dtype, train=args.train)
                except Exception as e:  # noqa: BLE001 - reported, the run goes on
                    print(f"{name} b{batch}: {type(e).__name__}: {e}", flush=True)
                    continue
                w.writerows(rows)
                f.flush()
                print(f"{name} b{batch} {args.dtype}: {len(rows)} op shapes, "
                      f"{sum(r['calls_per_forward'] * r['self_device_us_per_call'] for r in rows) / 1e3:.3f} ms "
                      f"device time a {'training step' if args.train else 'forward'}", flush=True)


if __name__ == "__main__":
    main()
