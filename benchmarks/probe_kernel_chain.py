"""Does a chain of different, dependent kernels take longer than the sum of their times alone?

    python benchmarks/probe_kernel_chain.py --out DIR      # on a GPU; writes DIR/kernel-chain.csv

The calibration times each layer or operator alone: a CUDA graph of the same call repeated. A
network is a chain of different kernels, each reading the one before. This probe times, with
the calibration's timer (CudaGraphTimer), chains of 8 blocks of a network-like pattern as one
call, and each of the blocks' operations alone, and writes both: chain - sum of the parts,
divided by the chain's kernel count, is what each kernel adds in a chain (per kernel, in us).
'distinct' chains give each block its own weights, as a network does; the others reuse one
block's modules, so that their weights stay in the L2 cache as when a layer is timed alone.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

BLOCKS = 8


def patterns(torch, dtype):
    """(name, batch, make_parts) of each chain: make_parts() -> (ops, x), ops a list of
    (kernels, callable) applied in turn, x the input."""
    nn = torch.nn

    def conv_bn_relu(n, c, h, k=3):
        def make():
            conv = nn.Conv2d(c, c, k, padding=k // 2, bias=False).cuda().to(dtype).eval()
            bn = nn.BatchNorm2d(c).cuda().to(dtype).eval()
            return [(1, conv), (1, bn), (1, torch.relu)], torch.randn(n, c, h, h, device="cuda", dtype=dtype)
        return make

    def bottleneck_1x1(n, c, h):
        return conv_bn_relu(n, c, h, k=1)

    def elementwise(n, c, h):
        def make():
            y = torch.randn(n, c, h, h, device="cuda", dtype=dtype)
            return ([(1, torch.relu), (1, lambda t: t + y), (1, torch.sigmoid), (1, lambda t: t * y)],
                    torch.randn(n, c, h, h, device="cuda", dtype=dtype))
        return make

    def mlp(rows, d):
        def make():
            fc1 = nn.Linear(d, 4 * d).cuda().to(dtype).eval()
            fc2 = nn.Linear(4 * d, d).cuda().to(dtype).eval()
            return ([(1, fc1), (1, torch.nn.functional.gelu), (1, fc2)],
                    torch.randn(rows, d, device="cuda", dtype=dtype))
        return make

    out = []
    # weights of 2.4-9.4 MB a block (x 8 blocks): distinct blocks do not keep theirs in L2
    for n in (1, 32):
        out += [("distinct conv3x3-bn-relu 512x7x7", n, conv_bn_relu(n, 512, 7)),
                ("distinct conv3x3-bn-relu 256x14x14", n, conv_bn_relu(n, 256, 14)),
                ("distinct conv1x1-bn-relu 1024x14x14", n, bottleneck_1x1(n, 1024, 14))]
    for n in (1, 32):
        out += [("conv3x3-bn-relu 64x56x56", n, conv_bn_relu(n, 64, 56)),
                ("conv3x3-bn-relu 256x14x14", n, conv_bn_relu(n, 256, 14)),
                ("conv1x1-bn-relu 512x7x7", n, bottleneck_1x1(n, 512, 7)),
                ("relu-add-sigmoid-mul 64x56x56", n, elementwise(n, 64, 56)),
                ("relu-add-sigmoid-mul 256x14x14", n, elementwise(n, 256, 14))]
    out += [("linear-gelu-linear 197x768", 1, mlp(197, 768)), ("linear-gelu-linear 6304x768", 32, mlp(32 * 197, 768))]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    import torch

    from torch_alpha_profiler.calibrate.timers import CudaGraphTimer

    os.makedirs(args.out, exist_ok=True)
    timer = CudaGraphTimer()
    timer.prepare()
    device = torch.cuda.get_device_name()
    rows = []
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16):
            for name, batch, make in patterns(torch, dtype):
                # 'distinct' chains: each block its own modules (weights), as in a network; the
                # others apply one block's modules BLOCKS times
                blocks = [make() for _ in range(BLOCKS)] if name.startswith("distinct") else [make()] * BLOCKS
                ops, x = blocks[0]
                kernels = sum(k for k, _ in ops)
                # each operation alone, on the input it sees in the chain (first block's modules)
                alone, t = 0.0, x
                for _, op in ops:
                    alone += timer.measure(lambda op=op, t=t: op(t)).median_ms
                    t = op(t)

                def chain(x=x, blocks=blocks):
                    t = x
                    for ops, _ in blocks:
                        for _, op in ops:
                            t = op(t)
                    return t

                m = timer.measure(chain)
                row = {"pattern": name, "batch": batch, "dtype": str(dtype).replace("torch.", ""),
                       "kernels": BLOCKS * kernels, "chain_ms": f"{m.median_ms:.6g}",
                       "alone_sum_ms": f"{BLOCKS * alone:.6g}",
                       "extra_us_per_kernel": f"{(m.median_ms - BLOCKS * alone) * 1e3 / (BLOCKS * kernels):.4g}",
                       "ratio": f"{m.median_ms / (BLOCKS * alone):.4g}", "device_name": device}
                rows.append(row)
                print(row, flush=True)
    with open(os.path.join(args.out, "kernel-chain.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
