"""Where a whole model's GPU time goes beyond its kernels' times alone (CPU only, committed data).

    python benchmarks/in_network_gap.py [--data benchmarks/data] [--out benchmarks/data/in-network-gap.md]

Per model and batch, from measurements already committed (H100):

- graph: the whole forward as a CUDA graph (`models-DTYPE.csv`);
- kernels: the sum of every kernel's device time in an eager forward (torch.profiler,
  `op-breakdown-DTYPE.csv`); graph - kernels is what the graph spends beyond the kernels' device
  times as the profiler sees them (benchmarks/probe_kernel_chain.py finds that chains of
  dependent kernels take about the sum of their times alone, so this is not idle time that the
  calibration's timer misses);
- Conv2d/Linear in the network (cuDNN convolution and addmm/mm kernels of the breakdown) against
  the same layers timed alone (`model-layer-times-DTYPE.csv`, summed over the model's calls);
  for ViT and Swin the breakdown's mm also holds the attention products, which the layers timed
  alone do not, and a biased Conv2d's bias addition (a separate kernel) is in the layers timed
  alone but among the breakdown's other kernels (aten::add_): the ratio is like for like only for
  models without both (the ResNets, ResNeXt, DenseNets, RegNets, Inception);
- predicted: the shipped profile's whole-model `predicted_ms`, its Conv2d/Linear part and the
  rest (the other operators).
"""
from __future__ import annotations

import argparse
import collections
import csv
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))

MATRIX_OPS = ("aten::cudnn_convolution", "aten::addmm", "aten::mm")


def kernel_sums(path):
    """{(model, batch): (all kernels us, Conv2d/Linear kernels us)} of one forward."""
    total, matrix = collections.defaultdict(float), collections.defaultdict(float)
    with open(path) as f:
        for r in csv.DictReader(f):
            key = (r["model"], int(r["batch"]))
            us = float(r["self_device_us_per_call"]) * float(r["calls_per_forward"])
            total[key] += us
            if r["op"] in MATRIX_OPS:
                matrix[key] += us
    return {k: (total[k], matrix[k]) for k in total}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.join(HERE, "data"))
    parser.add_argument("--out", default=os.path.join(HERE, "data", "in-network-gap.md"))
    args = parser.parse_args(argv)
    from validate_gpu import model_sums, whole_model_predictions

    from torch_alpha_profiler.profile import load_profile

    lines = ["# Whole-model GPU time beyond the kernels' times alone", "",
             "Made by `python benchmarks/in_network_gap.py` from committed H100 measurements (see its "
             "docstring). Times in us; ratios are network / alone. Conv2d+Linear network / alone compares "
             "like with like only for models whose convolutions have no bias and that have no attention "
             "(see the docstring).", ""]
    for dtype, name in (("float32", "h100-fp32"), ("bfloat16", "h100-bf16")):
        profile = load_profile(name, warn_device=False)
        kernels = kernel_sums(os.path.join(args.data, f"op-breakdown-{dtype}.csv"))
        sums, _, _ = model_sums(args.data, dtype, {})
        keys = sorted(k for k in sums if k in kernels and "graph" in sums[k])
        preds = whole_model_predictions(sorted({m for m, _ in keys}), sorted({b for _, b in keys}), profile)
        lines += [f"## {dtype} (profile `{name}`)", "",
                  "| model | batch | graph | kernels | kernels / graph | Conv2d+Linear in network | alone | "
                  "network / alone | predicted | predicted Conv2d+Linear | predicted other ops | "
                  "other kernels in network |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        summary = collections.defaultdict(list)
        for key in keys:
            graph, alone = sums[key]["graph"] * 1e3, sums[key]["measured"] * 1e3
            total, matrix = kernels[key]
            p = preds[key]
            layers, ops = p.layers_ms * 1e3, p.ops_ms * 1e3
            lines.append(f"| {key[0]} | {key[1]} | {graph:.0f} | {total:.0f} | {total / graph:.2f} | {matrix:.0f} | "
                         f"{alone:.0f} | {matrix / alone:.2f} | {p.predicted_ms * 1e3:.0f} | {layers:.0f} | "
                         f"{ops:.0f} | {total - matrix:.0f} |")
            summary[key[1]].append((total / graph, matrix / alone, ops / max(total - matrix, 1e-9)))
        lines += ["", "Medians over the models:", ""]
        for batch, rows in sorted(summary.items()):
            k, m, o = (statistics.median(x) for x in zip(*rows))
            lines.append(f"- batch {batch}: kernels / graph {k:.2f}; Conv2d+Linear network / alone {m:.2f}; "
                         f"predicted other ops / their kernels in the network {o:.2f}")
        lines.append("")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
