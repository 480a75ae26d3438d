"""Bulk prediction: `alpha-profiler predict` on large layer tables.

    python benchmarks/bench_predict.py --baseline-rev 8b92d69 --doc docs/performance.md \\
        | tee benchmarks/data/predict.txt

Generates seeded synthetic layer tables (Conv2d and Linear rows, mixed
kernels, strides, groups, 'same' and explicit padding, some ``AxB``
paddings, float32 and bfloat16) of several sizes in a temporary folder, then
runs the command line on each, ``--repeat`` times, interleaved:

    alpha-profiler predict --profile t2000-paper --csv big.csv --out out.csv

and reports its wall time, peak RSS (its own VmHWM) above that of a bare
``import torch_alpha_profiler.cli``, and the read / predict / write
split that the command prints. Then, in this process, the prediction step
alone (``cost.evaluate`` on the parsed table, median of --repeat) in rows
per second, and a check that the fast reader and writer give the same
output, byte for byte, as the reference csv-module code path.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from _bench_common import DATA, REPO, doc_header, command_line, import_cost, machine, machine_lines, md_table, run_cli, \
    write_doc_section

COLUMNS = ("kind", "N", "Cin", "Cout", "H", "W", "K1", "K2", "stride", "groups", "padding", "dilation", "dtype")


def make_table(rows: int, seed: int = 0) -> str:
    """CSV text of ``rows`` random but valid layer-table rows."""
    rng = np.random.default_rng(seed)
    linear = rng.random(rows) < 0.1
    channels = np.array([3, 16, 24, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048])
    cin, cout = rng.choice(channels, rows), rng.choice(channels, rows)
    size = rng.choice([7, 14, 28, 56, 112, 224], rows)
    k = rng.choice([1, 3, 5, 7], rows, p=[0.45, 0.4, 0.1, 0.05])
    stride = rng.choice([1, 2], rows, p=[0.8, 0.2])
    groups = np.where(rng.random(rows) < 0.1, np.gcd(cin, cout), 1)
    pad = np.where(rng.random(rows) < 0.3, "", (k // 2).astype(str))
    pad = np.where(rng.random(rows) < 0.01, "0x1", pad)
    cols = {
        "kind": np.where(linear, "Linear", "Conv2d"),
        "N": rng.choice([1, 2, 4, 8, 16, 32, 64], rows),
        "Cin": cin, "Cout": cout,
        "H": np.where(linear, 1, size), "W": np.where(linear, 1, size),
        "K1": np.where(linear, 1, k), "K2": np.where(linear, 1, k),
        "stride": np.where(linear, 1, stride), "groups": np.where(linear, 1, groups),
        "padding": np.where(linear, "", pad), "dilation": np.ones(rows, dtype=np.int64),
        "dtype": np.where(rng.random(rows) < 0.5, "float32", "bfloat16"),
    }
    text = [np.asarray(cols[c]).astype(str) for c in COLUMNS]
    body = "\n".join(map(",".join, zip(*(t.tolist() for t in text))))
    return ",".join(COLUMNS) + "\n" + body + "\n"


def export(rev: str, into: str) -> str:
    archive = subprocess.run(["git", "archive", rev, "torch_alpha_profiler"], cwd=REPO, check=True,
                             capture_output=True).stdout
    os.makedirs(into, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


SPLIT = re.compile(r"read ([\d.]+) s, predict ([\d.]+) s, write ([\d.]+) s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", nargs="+", type=int, default=[125_000, 250_000, 500_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline-rev", help="also time this git revision's package on the largest table")
    ap.add_argument("--profile", default="t2000-paper",
                    help="built-in profile to predict with (an H100 one adds the residual trees and the "
                         "neighbour correction)")
    ap.add_argument("--csv", help="raw timings (default benchmarks/data/predict.csv, "
                                  "predict-PROFILE.csv for another profile than t2000-paper)")
    ap.add_argument("--doc")
    args = ap.parse_args(argv)
    default = args.profile == "t2000-paper"
    args.csv = args.csv or os.path.join(DATA, "predict.csv" if default else f"predict-{args.profile}.csv")

    from torch_alpha_profiler import tables
    from torch_alpha_profiler.cost import evaluate
    from torch_alpha_profiler.profile import load_profile

    info = machine()
    print(f"# {command_line()}\n{machine_lines(info)}\n", flush=True)
    raw, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for n in args.rows:
            paths[n] = os.path.join(tmp, f"table-{n}.csv")
            with open(paths[n], "w") as f:
                f.write(make_table(n))
        setups = [("this tree", REPO, n) for n in args.rows]
        if args.baseline_rev:
            setups.append((f"revision {args.baseline_rev} (before)", export(args.baseline_rev,
                                                                          os.path.join(tmp, "base")),
                           max(args.rows)))
        base = {path: import_cost(path) for _, path, _ in setups}
        base_rss = {path: rss for path, (_, rss) in base.items()}
        start_s = base[REPO][0]
        run_cli(["--help"], REPO)  # untimed warm-up
        for k in range(args.repeat):
            for label, path, n in setups[k % len(setups):] + setups[:k % len(setups)]:
                out = os.path.join(tmp, "out.csv")
                wall, rss, err = run_cli(["predict", "--profile", args.profile, "--csv", paths[n],
                                          "--out", out], path)
                split = SPLIT.search(err)
                row = {"setup": label, "rows": n, "run": k, "wall_s": f"{wall:.3f}", "peak_rss_kb": rss,
                       "import_peak_rss_kb": base_rss[path], "read_s": split.group(1) if split else "",
                       "predict_s": split.group(2) if split else "", "write_s": split.group(3) if split else ""}
                raw.append(row)
                results.setdefault((label, n), []).append(row)
                print(f"{label}, {n} rows: {wall:.2f} s, RSS {rss / 1024:.0f} MiB, {err.strip()}", flush=True)

        # the prediction step alone, and fast path == reference path, on the largest table
        n = max(args.rows)
        profile = load_profile(args.profile, warn_device=False)
        table = tables.read_layer_table(paths[n])
        evaluate(table.arrays, profile)
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            costs = evaluate(table.arrays, profile)
            times.append(time.perf_counter() - t0)
        predict_s = statistics.median(times)
        fast = io.StringIO()
        tables.write_predictions(table, costs, fast)
        reference = io.StringIO()
        with open(paths[n], newline="", encoding="utf-8") as f:
            text = f.read()
        ref_fast = tables._ByteColumns.from_bytes
        try:
            tables._ByteColumns.from_bytes = classmethod(lambda cls, *a: None)  # force the reference path
            ref_table = tables.parse_layer_table(text, paths[n])
        finally:
            tables._ByteColumns.from_bytes = ref_fast
        tables.write_predictions(ref_table, evaluate(ref_table.arrays, profile), reference)
        identical = fast.getvalue() == reference.getvalue()
        file_mb = os.path.getsize(paths[n]) / 1e6

    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(raw[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(raw)

    def med(rows, key):
        vals = [float(r[key]) for r in rows if r[key] != ""]
        return statistics.median(vals) if vals else float("nan")

    table_rows = []
    for (label, n), rows in results.items():
        wall, read, pred, write = (med(rows, k) for k in ("wall_s", "read_s", "predict_s", "write_s"))
        extra = (max(int(r["peak_rss_kb"]) for r in rows) - int(rows[0]["import_peak_rss_kb"])) * 1024
        table_rows.append([label, f"{n:,}", f"{wall:.2f}", f"{read:.2f}" if read == read else "-",
                           f"{pred:.3f}" if pred == pred else "-", f"{write:.2f}" if write == write else "-",
                           f"{n / read / 1e6:.2f}" if read == read else "-",
                           f"{n / write / 1e6:.2f}" if write == write else "-",
                           f"{extra / 2**20:.0f}", f"{extra / n:.0f}"])
    text = "\n".join([
        *doc_header(os.path.relpath(args.csv, REPO), info),
        f"`alpha-profiler predict --profile {args.profile} --csv big.csv --out out.csv` on seeded synthetic "
        f"layer tables ({max(args.rows):,} rows = {file_mb:.0f} MB of CSV), median of {args.repeat} runs. "
        f"Wall time is the whole command (interpreter start and `import torch` included: "
        f"{start_s:.2f} s for an interpreter that only imports `torch_alpha_profiler.cli`); "
        "read / predict / write are the command's own split; memory is the command's peak RSS above "
        "that of an interpreter that only imports `torch_alpha_profiler.cli`.",
        "",
        md_table(["package", "rows", "wall s", "read s", "predict s", "write s", "read Mrows/s",
                  "write Mrows/s", "extra RSS MiB", "bytes/row"], table_rows),
        "",
        f"Prediction alone (`cost.evaluate` on {n:,} parsed rows, in process, median of {args.repeat}): "
        f"{predict_s * 1e3:.1f} ms = {n / predict_s / 1e6:.1f} million rows/s.",
        "",
        f"Output of the fast reader and writer identical, byte for byte, to the reference csv-module "
        f"path on the {n:,}-row table: {'yes' if identical else 'NO'}.",
    ])
    print("\n" + text)
    if args.doc:
        write_doc_section(args.doc, "bench_predict" if default else f"bench_predict_{args.profile}", text)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
