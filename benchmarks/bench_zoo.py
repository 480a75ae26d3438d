"""How fast `alpha-profiler compare/profile` get through the torchvision classification zoo.

    python benchmarks/bench_zoo.py devices --doc docs/performance.md | tee benchmarks/data/zoo-devices.txt
    python benchmarks/bench_zoo.py compare --baseline-rev 8b92d69 --doc docs/performance.md \\
        | tee benchmarks/data/zoo-compare.txt

``devices``: for every model of ``zoo.classification_models()`` at batch 1,
in one process, one thread: build time and profile time (one forward with
AlphaProfiler, then the totals `compare` prints) for each way to run the
shape-only forward: ``meta``, ``hybrid`` (shapes.ShapeOnlyMode: meta weights,
CPU activations, convolutions and matrix products shape-only) and ``cpu``;
the device order rotates from model to model, and every model's records must
agree across the three. Then a batch sweep (warm, median of --rounds) of
meta against hybrid, which sets the rule of ``--device auto``.

``compare``: wall time of the whole-zoo command line, ``alpha-profiler compare
<all models>``, per ``--device``; with ``--baseline-rev`` also the same
command run on that git revision's package (exported to a temporary folder).
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Dict, List

from _bench_common import DATA, REPO, doc_header, command_line, machine, machine_lines, md_table, run_cli, write_doc_section

SWEEP_MODELS = ["resnet50", "mobilenet_v3_large", "vit_b_16", "densenet121", "vgg16", "efficientnet_b0",
                "convnext_tiny", "swin_t"]
RUNS = ("meta", "hybrid", "cpu")


def _shape_only(records):
    """Records without the device field (meta, hybrid and cpu runs must agree on the rest)."""
    from dataclasses import replace

    return [replace(r, device="") for r in records]


def profile_once(name: str, run: str, batch: int = 1):
    """(build s, profile s, profiler) for one model, as `compare` does it."""
    from torch_alpha_profiler.cli import _forward
    from torch_alpha_profiler.zoo import build_model, default_input_size

    size = default_input_size(name)
    t0 = time.perf_counter()
    model = build_model(name, device="meta" if run == "hybrid" else run)
    t1 = time.perf_counter()
    p = _forward(model, batch, size, "t2000-paper", run)
    p.total_flops, p.total_alpha_flops, p.predicted_ms, p.not_costed()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, p


def cmd_devices(args) -> int:
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from torch_alpha_profiler.shapes import AUTO_HYBRID_MAX_PIXELS, resolve_device
    from torch_alpha_profiler.zoo import classification_models, default_input_size

    info = machine()
    print(f"# {command_line()}\n{machine_lines(info)}\n", flush=True)
    models = args.models or classification_models()
    for run in RUNS:  # warm-up: lazy imports and first-call costs out of the first model's numbers
        profile_once("resnet18", run)

    raw: List[Dict[str, object]] = []
    per_model = []
    mismatches = []
    for i, name in enumerate(models):
        order = RUNS[i % 3:] + RUNS[:i % 3]
        got = {}
        for run in order:
            build, prof, p = profile_once(name, run)
            got[run] = (build, prof, _shape_only(p.records))
            raw.append({"model": name, "batch": 1, "run": run, "build_s": f"{build:.4f}",
                        "profile_s": f"{prof:.4f}", "layers": len(p.records)})
            del p
        if not (got["meta"][2] == got["hybrid"][2] == got["cpu"][2]):
            mismatches.append(name)
        line = [name] + [f"{got[r][0] + got[r][1]:.3f}" for r in RUNS]
        per_model.append((name, {r: (got[r][0], got[r][1]) for r in RUNS}))
        print(" ".join(line), flush=True)

    # batch sweep: warm profile time, meta against hybrid
    sweep = []
    for name in args.sweep_models:
        from torch_alpha_profiler.cli import _forward
        from torch_alpha_profiler.zoo import build_model

        model = build_model(name, device="meta")
        size = default_input_size(name)
        for batch in args.batches:
            times = {"meta": [], "hybrid": []}
            for r in range(args.rounds + 1):
                for run in (("meta", "hybrid") if r % 2 else ("hybrid", "meta")):
                    t0 = time.perf_counter()
                    _forward(model, batch, size, "t2000-paper", run).table()
                    if r:  # round 0 warms up
                        times[run].append(time.perf_counter() - t0)
            for run, ts in times.items():
                for k, s in enumerate(ts):
                    raw.append({"model": name, "batch": batch, "run": f"sweep-{run}", "build_s": "",
                                "profile_s": f"{s:.4f}", "layers": "", "round": k})
            sweep.append((name, batch, statistics.median(times["meta"]), statistics.median(times["hybrid"])))
            print(f"sweep {name} batch {batch}: meta {sweep[-1][2] * 1e3:.1f} ms, "
                  f"hybrid {sweep[-1][3] * 1e3:.1f} ms", flush=True)

    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["model", "batch", "run", "build_s", "profile_s", "layers", "round"],
                           lineterminator="\n")
        w.writeheader()
        w.writerows(raw)

    # summary
    def total(run, part):
        return sum(t[run][part] for _, t in per_model)

    auto_runs = {name: resolve_device("auto", 1, default_input_size(name)) for name, _ in per_model}
    auto_total = sum(sum(t[auto_runs[name]]) for name, t in per_model)
    best_total = sum(min(sum(t[r]) for r in RUNS) for _, t in per_model)
    rows = []
    for run in RUNS:
        worst = max(per_model, key=lambda m: sum(m[1][run]))
        rows.append([f"`--device {run}`", f"{total(run, 0):.1f}", f"{total(run, 1):.1f}",
                     f"{total(run, 0) + total(run, 1):.1f}",
                     f"{worst[0]} ({sum(worst[1][run]):.2f} s)"])
    wins = {r: sum(1 for _, t in per_model if min(RUNS, key=lambda q: sum(t[q])) == r) for r in RUNS}
    sweep_rows = [[n, str(b), f"{m * 1e3:.1f}", f"{h * 1e3:.1f}", "hybrid" if h < m else "meta"]
                  for n, b, m, h in sweep]
    batch_rows = []
    for b in args.batches:
        at = [(m, h) for _, bb, m, h in sweep if bb == b]
        batch_rows.append([str(b), f"{sum(m for m, _ in at) * 1e3:.1f}", f"{sum(h for _, h in at) * 1e3:.1f}",
                           f"{sum(1 for m, h in at if h < m)} of {len(at)}"])
    def gain(m):
        return sum(m[1]["meta"]) - sum(m[1]["hybrid"])

    slow_meta = [m for m in sorted(per_model, key=gain, reverse=True)[:5] if gain(m) > 0]
    slow_hybrid = [m for m in sorted(per_model, key=gain)[:5] if gain(m) < 0]
    text = "\n".join([
        *doc_header(os.path.relpath(args.csv, REPO), info),
        f"{len(per_model)} torchvision classification models, batch 1, default input size, one "
        "thread, each model built and profiled once per way (as `compare` does), in one process. "
        "Seconds summed over the zoo:",
        "",
        md_table(["forward on", "build s", "profile s", "total s", "slowest model"], rows),
        "",
        f"Fastest way per model: meta {wins['meta']}, hybrid {wins['hybrid']}, cpu {wins['cpu']} models; "
        f"picking the fastest for each model would total {best_total:.1f} s, `--device auto` "
        f"(the rule below) totals {auto_total:.1f} s.",
        "Records (shapes, FLOPs, alpha, predicted ms; all but the `device` field) identical across "
        f"meta, hybrid and cpu: {'all models' if not mismatches else 'NOT for ' + ', '.join(mismatches)}.",
        "",
        "Most time saved by hybrid over meta: " + ", ".join(
            f"{n} {sum(t['meta']):.3f} -> {sum(t['hybrid']):.3f} s" for n, t in slow_meta) + " (meta -> hybrid).",
        "Most time lost by hybrid against meta: " + ", ".join(
            f"{n} {sum(t['meta']):.3f} -> {sum(t['hybrid']):.3f} s" for n, t in slow_hybrid) + " (meta -> hybrid).",
        "",
        f"Batch sweep (profile only, warm, median of {args.rounds} rounds, ms): hybrid's elementwise "
        "work grows with the input, meta's cost does not.",
        "",
        md_table(["model", "batch", "meta ms", "hybrid ms", "faster"], sweep_rows),
        "",
        "Per batch, summed over these models:",
        "",
        md_table(["batch", "meta ms", "hybrid ms", "hybrid faster for"], batch_rows),
        "",
        f"Rule of `--device auto` (shapes.AUTO_HYBRID_MAX_PIXELS): hybrid up to "
        f"{AUTO_HYBRID_MAX_PIXELS:,} input pixels (batch x height x width), meta above.",
    ])
    print("\n" + text)
    if args.doc:
        write_doc_section(args.doc, "bench_zoo_devices", text)
    return 1 if mismatches else 0


def _export(rev: str, into: str) -> str:
    """The package as of git revision ``rev``, in folder ``into``."""
    archive = subprocess.run(["git", "archive", rev, "torch_alpha_profiler"], cwd=REPO, check=True,
                             capture_output=True).stdout
    os.makedirs(into, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


def _run_cli(args: List[str], pythonpath: str) -> Dict[str, object]:
    wall, peak, err = run_cli(args, pythonpath)
    return {"wall_s": wall, "maxrss_kb": peak, "stderr": err}


def _read_compare(path: str):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {(r["model"], r["batch"]): (r["flops"], r["alpha_flops"], r["predicted_ms"], r["layers"],
                                        r["not_costed"]) for r in rows}


def cmd_compare(args) -> int:
    from torch_alpha_profiler.zoo import classification_models

    info = machine()
    print(f"# {command_line()}\n{machine_lines(info)}\n", flush=True)
    models = args.models or classification_models()
    raw, rows, outputs = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        setups = [(f"this tree, `--device {d}`", REPO, d) for d in args.devices]
        if args.baseline_rev:
            base = _export(args.baseline_rev, os.path.join(tmp, "base"))
            setups.append((f"revision {args.baseline_rev} (before), `--device meta`", base, "meta"))
        _run_cli(["--help"], REPO)  # untimed: warm the file cache and the interpreter's start-up
        times = {label: [] for label, _, _ in setups}
        for k in range(args.repeat):  # interleaved: no setup always runs first
            for label, path, device in setups[k % len(setups):] + setups[:k % len(setups)]:
                out = os.path.join(tmp, f"out-{len(raw)}.csv")
                cli = ["compare", *models, "--format", "csv", "--out", out]
                if path == REPO:
                    cli += ["--device", device]
                res = _run_cli(cli, path)
                outputs[label] = _read_compare(out)
                times[label].append(res["wall_s"])
                raw.append({"setup": label, "run": k, "models": len(models), "wall_s": f"{res['wall_s']:.3f}",
                            "peak_rss_kb": res["maxrss_kb"]})
                print(f"{label}: {res['wall_s']:.1f} s, max RSS {res['maxrss_kb'] / 1024:.0f} MiB", flush=True)
        for label, _, _ in setups:
            rss = max(int(r["peak_rss_kb"]) for r in raw if r["setup"] == label)
            rows.append([label, f"{statistics.median(times[label]):.1f}",
                         " / ".join(f"{t:.1f}" for t in times[label]), f"{rss / 1024:.0f}"])
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(raw[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(raw)
    labels = list(outputs)
    same = all(outputs[label] == outputs[labels[0]] for label in labels)
    text = "\n".join([
        *doc_header(os.path.relpath(args.csv, REPO), info),
        f"`alpha-profiler compare` over all {len(models)} models of `zoo.classification_models()`, batch 1, "
        "`--format csv`, wall time of the whole command (start-up and imports included), "
        f"{args.repeat} run(s) each:",
        "",
        md_table(["package and device", "median s", "runs s", "peak RSS MiB"], rows),
        "",
        "FLOPs, alpha-FLOPs, predicted ms, layer and not-costed counts identical across these runs: "
        f"{'yes' if same else 'NO'}.",
    ])
    print("\n" + text)
    if args.doc:
        write_doc_section(args.doc, "bench_zoo_compare", text)
    return 0 if same else 1


def create_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("devices", help="per-model build and profile time on meta, hybrid and cpu")
    p.add_argument("--models", nargs="+", help="default: the whole zoo")
    p.add_argument("--sweep-models", nargs="+", default=SWEEP_MODELS)
    p.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--csv", default=os.path.join(DATA, "zoo-devices.csv"))
    p.add_argument("--doc")
    p.set_defaults(func=cmd_devices)
    p = sub.add_parser("compare", help="wall time of `alpha-profiler compare` over the whole zoo")
    p.add_argument("--models", nargs="+", help="default: the whole zoo")
    p.add_argument("--devices", nargs="+", default=["auto", "meta"])
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--baseline-rev", help="also time this git revision's package (--device meta)")
    p.add_argument("--csv", default=os.path.join(DATA, "zoo-compare.csv"))
    p.add_argument("--doc")
    p.set_defaults(func=cmd_compare)
    return ap


def main(argv=None) -> int:
    args = create_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
