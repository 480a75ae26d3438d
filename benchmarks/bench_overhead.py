"""What profiling costs: AlphaProfiler against a bare forward pass and its peers, on CPU.

    python benchmarks/bench_overhead.py --doc docs/performance.md | tee benchmarks/data/overhead.txt

For each model and each device (CPU tensors, meta tensors), in one process
with one thread, times (wall clock, median of --rounds rounds, tools
interleaved in a rotating order inside each round, one untimed warm-up each):

- bare:     ``with torch.no_grad(): model(x)``
- alpha:    ``with AlphaProfiler(model) as p: model(x)``, then total FLOPs,
            alpha-FLOPs, predicted ms and the ``p.table()`` string
- flopcounter: torch.utils.flop_counter.FlopCounterMode, ``get_total_flops()``
- fvcore:   ``FlopCountAnalysis(model, x).total()`` (warnings off)
- ptflops:  ``get_model_complexity_info(..., backend="pytorch")``
- thop:     ``thop.profile(model, inputs=(x,))``

fvcore, ptflops and thop (the ``bench`` extra) change the model they count
(buffers, bound methods), so each of their runs gets a fresh copy, made
outside the timer. A tool that fails on a device is reported as n/a with the
error. Then the hook overhead on a real forward (resnet50, batch 8, CPU) with
more rounds, and a check that ``import torch_alpha_profiler`` stays light.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import io
import os
import subprocess
import sys
import time
import warnings
from typing import Callable, Dict, List

from _bench_common import DATA, REPO, doc_header, Measurement, command_line, machine, machine_lines, md_table, \
    write_doc_section

MODELS = ["resnet50", "mobilenet_v3_large", "vit_b_16", "densenet121"]
TOOLS = ["bare", "alpha", "flopcounter", "fvcore", "ptflops", "thop"]
PEERS = ["flopcounter", "fvcore", "ptflops", "thop"]
HEAVY_IMPORTS = ("torchvision", "scipy", "tabulate", "pandas", "matplotlib")


# --------------------------------------------------------------- the tools
def make_runner(tool: str, model, x) -> Callable[[], Callable[[], object]]:
    """``prepare() -> run``: prepare is untimed (fresh model copies), run is timed."""
    import torch

    if tool == "bare":
        def run():
            with torch.no_grad():
                return model(x)
        return lambda: run
    if tool == "alpha":
        from torch_alpha_profiler import AlphaProfiler

        def run():
            with AlphaProfiler(model, profile="t2000-paper") as p, torch.no_grad():
                model(x)
            return p.total_flops, p.total_alpha_flops, p.predicted_ms, p.table()
        return lambda: run
    if tool == "flopcounter":
        from torch.utils.flop_counter import FlopCounterMode

        def run():
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(x)
            return counter.get_total_flops()
        return lambda: run
    if tool == "fvcore":
        from fvcore.nn import FlopCountAnalysis

        def prepare():
            m = copy.deepcopy(model)

            def run():
                with torch.no_grad():
                    return (FlopCountAnalysis(m, x).unsupported_ops_warnings(False)
                            .uncalled_modules_warnings(False).total())
            return run
        return prepare
    if tool == "ptflops":
        from ptflops import get_model_complexity_info

        def prepare():
            m = copy.deepcopy(model)

            def run():
                with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
                    return get_model_complexity_info(
                        m, tuple(x.shape[1:]), input_constructor=lambda _: {"x": x}, as_strings=False,
                        print_per_layer_stat=False, verbose=False, backend="pytorch")
            return run
        return prepare
    if tool == "thop":
        import thop

        def prepare():
            m = copy.deepcopy(model)

            def run():
                with torch.no_grad():
                    return thop.profile(m, inputs=(x,), verbose=False)
            return run
        return prepare
    raise ValueError(tool)


def measure(tasks: Dict[str, Callable], rounds: int, task_info: Dict[str, object]) -> Dict[str, Measurement]:
    """Interleaved timing: each round runs every tool once, starting one tool later each round."""
    out = {name: Measurement(dict(task_info, tool=name)) for name in tasks}
    for name, prepare in tasks.items():  # warm-up, and find the tools that fail here
        try:
            prepare()()
        except Exception as e:  # noqa: BLE001 - reported as n/a with the error
            out[name].error = f"{type(e).__name__}: {str(e).splitlines()[0][:90]}"
    names = [n for n in tasks if not out[n].error]
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            run = tasks[name]()
            t0 = time.perf_counter()
            run()
            out[name].times.append(time.perf_counter() - t0)
    return out


# ------------------------------------------------------------------ checks
def import_check() -> Dict[str, object]:
    """Import the package in a fresh interpreter: which heavy modules came along, and how long."""
    code = ("import sys, time; t = time.perf_counter(); import torch_alpha_profiler; "
            "t = time.perf_counter() - t; "
            f"print(repr([m for m in {HEAVY_IMPORTS!r} if m in sys.modules]), t)")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    loaded, seconds = res.stdout.strip().rsplit(" ", 1)
    return {"loaded": eval(loaded), "seconds": float(seconds)}  # noqa: S307 - our own repr


def targets(by_key: Dict[tuple, Measurement], overhead: float) -> str:
    """The issue's targets for resnet50, from this run's medians."""
    def med(device, tool):
        m = by_key.get(("resnet50", device, tool))
        return m.median if m is not None and m.ok else float("nan")

    alpha = med("meta", "alpha")
    fv_device = "meta" if med("meta", "fvcore") == med("meta", "fvcore") else "cpu"
    checks = [
        ("AlphaProfiler on meta / bare meta forward", med("meta", "alpha") / med("meta", "bare"), "<=", 1.15),
        ("FlopCounterMode on meta / AlphaProfiler on meta", med("meta", "flopcounter") / alpha, ">=", 1.3),
        (f"fvcore (on {fv_device}, its fastest device that works) / AlphaProfiler on meta",
         med(fv_device, "fvcore") / alpha, ">=", 4.0),
        ("AlphaProfiler / bare forward, resnet50 batch 8 on CPU tensors", 1 + overhead, "<=", 1.05),
    ]
    rows = []
    for what, value, op, goal in checks:
        met = value <= goal if op == "<=" else value >= goal
        rows.append([what, f"{value:.2f}", f"{op} {goal:g}", "met" if met else "missed"])
    return "Targets (resnet50, ratios of this run's medians):\n\n" + md_table(
        ["ratio", "measured", "target", ""], rows)


# ------------------------------------------------------------------- main
def fmt_ms(m: Measurement) -> str:
    return "n/a" if not m.ok else f"{m.median * 1e3:.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--devices", nargs="+", default=["cpu", "meta"])
    ap.add_argument("--tools", nargs="+", default=TOOLS)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--hook-rounds", type=int, default=9, help="rounds of the resnet50 batch-8 CPU run")
    ap.add_argument("--csv", default=os.path.join(DATA, "overhead.csv"), help="raw timings")
    ap.add_argument("--doc", help="replace the overhead section of this markdown file")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from torch_alpha_profiler.zoo import build_model, default_input_size

    info = machine()
    imports = import_check()
    print(f"# {command_line()}\n{machine_lines(info)}\n")

    results: List[Measurement] = []
    by_key: Dict[tuple, Measurement] = {}
    rows = []
    for name in args.models:
        for device in args.devices:
            model = build_model(name, device=device)
            x = torch.randn(1, 3, *default_input_size(name), device=device)
            tasks = {t: make_runner(t, model, x) for t in args.tools}
            ms = measure(tasks, args.rounds, {"model": name, "device": device, "batch": 1})
            results += ms.values()
            by_key.update({(name, device, t): m for t, m in ms.items()})
            bare, alpha = ms["bare"], ms["alpha"]
            row = [name, device, fmt_ms(bare), f"{fmt_ms(alpha)} ({alpha.median / bare.median:.2f}x)"]
            for peer in PEERS:
                if peer not in ms:
                    continue
                p = ms[peer]
                row.append("n/a" if not p.ok else f"{fmt_ms(p)} ({p.median / alpha.median:.2f}x)")
            rows.append(row)
            print(" | ".join(row), flush=True)
            for m in ms.values():
                if m.error:
                    print(f"  {m.task['tool']} on {device}: n/a ({m.error})")
            del model, x, tasks

    # hook overhead on a real forward: resnet50, batch 8, CPU tensors
    model = build_model("resnet50", device="cpu")
    x = torch.randn(8, 3, 224, 224)
    hooks = measure({"bare": make_runner("bare", model, x), "alpha": make_runner("alpha", model, x)},
                    args.hook_rounds, {"model": "resnet50", "device": "cpu", "batch": 8})
    results += hooks.values()
    overhead = hooks["alpha"].median / hooks["bare"].median - 1

    with open(args.csv, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["model", "device", "batch", "tool", "round", "seconds", "error"])
        for m in results:
            t = m.task
            if m.error:
                w.writerow([t["model"], t["device"], t["batch"], t["tool"], "", "", m.error])
            for i, s in enumerate(m.times):
                w.writerow([t["model"], t["device"], t["batch"], t["tool"], i, f"{s:.6f}", ""])

    headers = ["model", "device", "bare forward ms", "AlphaProfiler ms (x bare)"] + [
        f"{p} ms (x AlphaProfiler)" for p in PEERS if p in args.tools]
    errors = sorted({(m.task["tool"], m.task["device"], m.error) for m in results if m.error})
    text = [
        *doc_header(os.path.relpath(args.csv, REPO), info),
        f"Batch 1, default input size, one thread, median of {args.rounds} interleaved rounds "
        "after one warm-up each. Times in ms; in brackets, AlphaProfiler's ratio to the bare "
        "forward and each peer's ratio to AlphaProfiler (above 1: AlphaProfiler is faster). "
        "AlphaProfiler's time includes records, FLOPs, alpha-FLOPs, predicted ms and the table string.",
        "",
        md_table(headers, rows),
        "",
    ]
    for tool, device, err in errors:
        text.append(f"- n/a: {tool} on {device} tensors fails: `{err}`")
    text += [
        "",
        f"Hook overhead on a real forward (resnet50, batch 8, CPU tensors, median of {args.hook_rounds} "
        f"rounds): bare {hooks['bare'].median * 1e3:.1f} ms, AlphaProfiler (with the table) "
        f"{hooks['alpha'].median * 1e3:.1f} ms: {overhead * 100:+.1f}%.",
        "",
        f"`import torch_alpha_profiler` in a fresh interpreter: {imports['seconds']:.2f} s; heavy "
        f"modules loaded with it: {', '.join(imports['loaded']) or 'none'} (checked: "
        f"{', '.join(HEAVY_IMPORTS)}).",
    ]
    text += ["", targets(by_key, overhead), ""]
    text = "\n".join(text)
    print("\n" + text)
    if args.doc:
        write_doc_section(args.doc, "bench_overhead", text)
    return 1 if imports["loaded"] else 0


if __name__ == "__main__":
    sys.exit(main())
