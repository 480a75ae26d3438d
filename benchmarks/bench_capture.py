"""What whole-model capture costs: AlphaProfiler with scope "model" against "layers" and a bare pass.

    python benchmarks/bench_capture.py --doc docs/performance.md | tee benchmarks/data/capture.txt

For each model and shape-only pass (meta tensors; the hybrid pass of
``--device auto``), in one process with one thread, times (wall clock, median
of --rounds interleaved rounds, one untimed warm-up each):

- bare:    ``with torch.no_grad(): model(x)`` (hybrid: inside ShapeOnlyMode)
- layers:  AlphaProfiler(profile="h100-fp32", scope="layers"), then FLOPs, predicted ms, the table
- model:   AlphaProfiler(profile="h100-fp32", scope="model"), then FLOPs, GPU and eager ms, the table
- flopcounter: torch.utils.flop_counter.FlopCounterMode, ``get_total_flops()`` (also a dispatch mode)
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import os
import sys
import warnings

from _bench_common import DATA, REPO, command_line, doc_header, machine, machine_lines, md_table, \
    write_doc_section
from bench_overhead import fmt_ms, measure

MODELS = ["resnet50", "mobilenet_v3_large", "vit_b_16", "densenet121"]
TOOLS = ["bare", "layers", "model", "flopcounter"]


def make_runner(tool: str, model, x, hybrid: bool):
    import torch

    from torch_alpha_profiler import AlphaProfiler
    from torch_alpha_profiler.shapes import ShapeOnlyMode

    def shape_mode():
        return ShapeOnlyMode() if hybrid else contextlib.nullcontext()

    if tool == "bare":
        def run():
            with torch.no_grad(), shape_mode():
                return model(x)
    elif tool in ("layers", "model"):
        def run():
            with AlphaProfiler(model, profile="h100-fp32", scope=tool) as p, torch.no_grad(), shape_mode():
                model(x)
            return p.total_flops, p.predicted_ms, p.eager_ms, p.table()
    else:
        from torch.utils.flop_counter import FlopCounterMode

        def run():
            with FlopCounterMode(display=False) as counter, torch.no_grad(), shape_mode():
                model(x)
            return counter.get_total_flops()
    return lambda: run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--passes", nargs="+", default=["meta", "hybrid"])
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--csv", default=os.path.join(DATA, "capture.csv"), help="raw timings")
    ap.add_argument("--doc", help="replace the capture section of this markdown file")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from torch_alpha_profiler.zoo import build_model, default_input_size

    info = machine()
    print(f"# {command_line()}\n{machine_lines(info)}\n")
    results = []
    rows = []
    for name in args.models:
        for run in args.passes:
            hybrid = run == "hybrid"
            model = build_model(name, device="meta")
            x = (torch.zeros(1, 3, *default_input_size(name)) if hybrid
                 else torch.empty(1, 3, *default_input_size(name), device="meta"))
            tasks = {t: make_runner(t, model, x, hybrid) for t in TOOLS}
            ms = measure(tasks, args.rounds, {"model": name, "device": run, "batch": 1})
            results += ms.values()
            bare = ms["bare"].median
            rows.append([name, run, fmt_ms(ms["bare"])] + [
                f"{fmt_ms(ms[t])} ({ms[t].median / bare:.2f}x)" for t in ("layers", "model", "flopcounter")])
            print(" | ".join(rows[-1]), flush=True)
    with open(args.csv, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["model", "pass", "tool", "round", "seconds", "error"])
        for m in results:
            t = m.task
            for i, s in enumerate(m.times):
                w.writerow([t["model"], t["device"], t["tool"], i, f"{s:.6f}", m.error or ""])
    text = "\n".join([
        *doc_header(os.path.relpath(args.csv, REPO), info),
        f"Batch 1, default input size, one thread, median of {args.rounds} interleaved rounds after one "
        "warm-up each; in brackets, the ratio to the bare pass. `layers` and `model` include the records, "
        "costs (and for `model` the eager estimate) and the table string.",
        "",
        md_table(["model", "pass", "bare ms", "scope layers ms", "scope model ms", "FlopCounterMode ms"], rows),
        "",
    ])
    print("\n" + text)
    if args.doc:
        write_doc_section(args.doc, "bench_capture", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
