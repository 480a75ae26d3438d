"""Validate a GPU profile against measurements it was not fitted on.

Two steps, so that device time is spent only on measuring:

    # on the GPU machine (writes raw CSVs; resumable)
    python benchmarks/validate_gpu.py measure --dtype float32 --out-dir DIR
    # anywhere (reads the CSVs, writes docs/accuracy.md and plots)
    python benchmarks/validate_gpu.py report --data benchmarks/data --profile h100-fp32 ...

`measure` times (1) held-out random Conv2d/Linear configurations, none of
them in the calibration plan, (2) every Conv2d/Linear layer of torchvision
classification models at batch 1 and 32, each layer alone, and (3) the whole
models as CUDA graphs (and eagerly, for reference).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

MODELS = [
    "alexnet", "vgg11_bn", "vgg16", "resnet18", "resnet34", "resnet50", "resnet101",
    "wide_resnet50_2", "resnext50_32x4d", "densenet121", "densenet169", "googlenet", "inception_v3",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "mnasnet1_0", "shufflenet_v2_x1_0",
    "squeezenet1_1", "efficientnet_b0", "efficientnet_b3", "efficientnet_v2_s", "regnet_x_400mf",
    "regnet_y_400mf", "regnet_y_1_6gf", "regnet_x_3_2gf", "convnext_tiny", "convnext_small",
    "vit_b_16", "swin_t", "maxvit_t",
]
HELDOUT_SEED = 20261125  # the calibration plan uses seed 0
LAYER_COLUMNS = ("model", "batch", "name", "call")


def _pair_text(p):
    return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"


def record_row(r) -> dict:
    """The measurement-plan row of one recorded layer call (its exact configuration)."""
    from torch_alpha_profiler.calibrate.plan import row

    if r.kind == "Linear":
        return row("model", "Linear", N=r.batch, Cin=r.in_channels, Cout=r.out_channels, bias=r.bias)
    out = row("model", N=r.batch, Cin=r.in_channels, Cout=r.out_channels, H=r.in_hw[0], W=r.in_hw[1],
              K=r.kernel[0], groups=r.groups, bias=r.bias)
    out.update(K2=str(r.kernel[1]), stride=_pair_text(r.stride), padding=_pair_text(r.padding),
               dilation=_pair_text(r.dilation))
    return out


def model_layers(models, batches):
    """(model, batch, name, call index, plan row) for every Conv2d/Linear call, shape-only."""
    import torch

    from torch_alpha_profiler import AlphaProfiler
    from torch_alpha_profiler.zoo import build_model, default_input_size

    out = []
    for name in models:
        model = build_model(name, device="meta")
        for batch in batches:
            x = torch.randn(batch, 3, *default_input_size(name), device="meta")
            with AlphaProfiler(model) as p, torch.no_grad():
                model(x)
            for i, r in enumerate(p.records):
                out.append((name, batch, r.name, i, record_row(r)))
    return out


def time_whole_models(models, batches, dtype, path, budget_s):
    """Whole-model forward time as a CUDA graph and eagerly, appended to ``path``."""
    import torch

    from torch_alpha_profiler.calibrate.timers import CudaGraphTimer
    from torch_alpha_profiler.zoo import build_model, default_input_size

    done = set()
    if os.path.exists(path):
        with open(path) as f:
            done = {(r["model"], r["batch"]) for r in csv.DictReader(f)}
    cols = ["model", "batch", "dtype", "graph_ms", "graph_iqr_ms", "eager_ms", "status", "device_name"]
    new = not os.path.exists(path)
    t_start = time.monotonic()
    timer = CudaGraphTimer(warmup=3, blocks=5, target_block_ms=20.0, target_replay_ms=0.0, max_inner=1)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        if new:
            w.writeheader()
        for name in models:
            for batch in batches:
                if (name, str(batch)) in done:
                    continue
                if time.monotonic() - t_start > budget_s:
                    print(f"whole-model budget spent, stopping before {name}", flush=True)
                    return
                row = {"model": name, "batch": batch, "dtype": dtype, "status": "ok",
                       "device_name": torch.cuda.get_device_name()}
                try:
                    torch.manual_seed(0)
                    model = build_model(name, device="cuda").to(getattr(torch, dtype))
                    x = torch.randn(batch, 3, *default_input_size(name), device="cuda",
                                    dtype=getattr(torch, dtype))
                    with torch.no_grad():
                        m = timer.measure(lambda: model(x))
                        row.update(graph_ms=f"{m.median_ms:.6g}", graph_iqr_ms=f"{m.iqr_ms:.3g}")
                        eager = []
                        for _ in range(3):
                            torch.cuda.synchronize()
                            t0 = time.perf_counter()
                            for _ in range(5):
                                model(x)
                            torch.cuda.synchronize()
                            eager.append((time.perf_counter() - t0) * 1e3 / 5)
                        row["eager_ms"] = f"{sorted(eager)[1]:.6g}"
                except Exception as e:  # noqa: BLE001 - recorded, not hidden
                    row["status"] = f"error: {type(e).__name__}: {str(e)[:80]}"
                    torch.cuda.empty_cache()
                model = x = None
                w.writerow(row)
                f.flush()
                print(f"{name} b{batch} {dtype}: {row.get('graph_ms')} ms graph, "
                      f"{row.get('eager_ms')} ms eager {row['status'] if row['status'] != 'ok' else ''}",
                      flush=True)


def cmd_measure(args):
    import torch

    from torch_alpha_profiler.calibrate.measure import measure_plan
    from torch_alpha_profiler.calibrate.plan import config_key, make_plan, random_rows

    os.makedirs(args.out_dir, exist_ok=True)
    d = args.dtype
    print("device:", torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    t0 = time.monotonic()
    if args.heldout:
        calib = {config_key(r) for r in make_plan()}
        rows = [r for r in random_rows(args.heldout + 50, HELDOUT_SEED, sweep="heldout")
                if config_key(r) not in calib][:args.heldout]
        measure_plan(rows, os.path.join(args.out_dir, f"heldout-{d}.csv"), device="cuda", dtype=d)
        print(f"held-out layers: {len(rows)} in {time.monotonic() - t0:.0f} s", flush=True)
    if args.models:
        layers = model_layers(args.models, args.batches)
        with open(os.path.join(args.out_dir, "model-layers.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(LAYER_COLUMNS + ("key",))
            for name, batch, lname, i, r in layers:
                w.writerow((name, batch, lname, i, config_key(r)))
        unique, seen = [], set()
        for *_, r in layers:
            k = config_key(r)
            if k not in seen:
                seen.add(k)
                unique.append(r)
        t1 = time.monotonic()
        measure_plan(unique, os.path.join(args.out_dir, f"model-layer-times-{d}.csv"), device="cuda", dtype=d)
        print(f"model layers: {len(layers)} calls, {len(unique)} unique, {time.monotonic() - t1:.0f} s",
              flush=True)
        time_whole_models(args.models, args.batches, d, os.path.join(args.out_dir, f"models-{d}.csv"),
                          args.model_budget_s)
    print(f"total {time.monotonic() - t0:.0f} s", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("measure", help="GPU: time held-out layers, model layers and whole models")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--heldout", type=int, default=300)
    p.add_argument("--models", nargs="*", default=MODELS)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--model-budget-s", type=float, default=240)
    p.set_defaults(func=cmd_measure)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
