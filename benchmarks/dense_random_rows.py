"""Would a denser calibration reach issue 3's per-layer target? A learning curve over many more
random layers than the plan has.

    # on the GPU machine (writes a raw CSV as it goes; resumable)
    python benchmarks/dense_random_rows.py measure --dtype float32 --count 3000 --out DIR
    # anywhere: refit on the plan plus the first n dense rows, predict the held-out sets
    python benchmarks/dense_random_rows.py report --data benchmarks/data --dense benchmarks/data/dense-random

`measure` times ``count`` random Conv2d/Linear layers drawn as the plan's random rows are
(`plan.dense_rows`, seed `plan.DENSE_SEED`), none of them in the calibration plan or in either held-out
set. `report` refits three models on the calibration plus the first n of them, for growing n
(the axes formula with the neighbour correction; boosted trees alone; the shipped form, below),
and prints the error on the held-out layers (accuracy.md) and on the fresh ones
(accuracy-fresh.md), which the fits never see. The held-out sets are only read: nothing is
chosen on them.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

HELDOUT_SEEDS = (20261125, 20261126)  # validate_gpu.HELDOUT_SEED, validate_gpu.FRESH_SEED
STEPS = (0, 600, 1200, 2400, 4800, 9600, 15000, 25000, 40000)


def dense_rows(count):
    """The first ``count`` dense rows: `plan.dense_rows`, also outside the held-out draws."""
    from torch_alpha_profiler.calibrate.plan import config_key, dense_rows as draw, make_plan, random_rows

    taken = {config_key(r) for r in make_plan()}
    for seed in HELDOUT_SEEDS:  # as many as validate_gpu draws for a set of 300, and more
        taken |= {config_key(r) for r in random_rows(1000, seed, sweep="heldout")}
    return draw(count, exclude=taken)


def cmd_measure(args):
    import torch

    from torch_alpha_profiler.calibrate.measure import measure_plan

    os.makedirs(args.out, exist_ok=True)
    print("device:", torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    t0 = time.monotonic()
    rows = dense_rows(args.count)
    measure_plan(rows, os.path.join(args.out, f"dense-{args.dtype}.csv"), device="cuda", dtype=args.dtype)
    print(f"dense rows ({args.dtype}): {len(rows)} in {time.monotonic() - t0:.0f} s", flush=True)


def boosted_trees(arrays, time_ms):
    """A flexible learner with no form, for reference: 800 gradient-boosted trees of up to 31
    leaves of ln(time) on the residual trees' features (trees.features); predict(arrays) -> ms.
    Its settings were set before any held-out layer was predicted, not tuned."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingRegressor

    from torch_alpha_profiler.trees import features

    model = HistGradientBoostingRegressor(max_iter=800, learning_rate=0.05, max_leaf_nodes=31,
                                          min_samples_leaf=5, loss="absolute_error", early_stopping=False,
                                          random_state=0)
    model.fit(features(arrays), np.log(time_ms))
    return lambda a: np.exp(model.predict(features(a)))


def stacked(fam, params, arrays, time_ms, correction, tree_settings):
    """The shipped model refitted: the formula at ``params``, residual trees of ``tree_settings``
    on its log residual (trees.py), the neighbour correction on what they left; predict(arrays) -> ms."""
    import numpy as np

    from torch_alpha_profiler import trees
    from torch_alpha_profiler.correction import build

    base = fam.predict_ms(arrays, params)
    walk = trees.from_section(trees.fit(arrays, np.log(time_ms / base), tree_settings))
    corr = build(correction, arrays, time_ms, base * np.exp(walk.log_factor(arrays)), fam.classify(arrays))
    return lambda a: fam.predict_ms(a, params) * np.exp(walk.log_factor(a) + corr.log_factor(a, fam.classify(a)))


def cmd_repeat(args):
    """The dense layers timed twice: run-to-run spread. ``run-a`` (run 23) timed the first 3,000 on
    run 24's machine; ``run-b`` (run 26, session 10) on the machine that timed layers 15,000-40,000."""
    import numpy as np

    from torch_alpha_profiler.calibrate.plan import config_key
    from torch_alpha_profiler.tables import read_layer_table

    def times(path):
        table = read_layer_table(path)
        rows = zip(*(table.columns[h] for h in table.header))
        return {config_key(dict(zip(table.header, r))): t for r, t in zip(rows, table.time_ms)}

    lines = []
    for again in args.again:
        lines += [f"# {os.path.relpath(again, args.dense)} against the dense layers, same layers", ""]
        for dtype in args.dtypes:
            first, second = (times(os.path.join(d, f"dense-{dtype}.csv")) for d in (args.dense, again))
            both = [k for k in second if k in first]
            spread = np.array([abs(first[k] / second[k] - 1) for k in both]) * 100
            ratio = np.array([first[k] / second[k] for k in both])
            lines.append(f"{dtype}: {len(both)} layers; |dense / again - 1|: median {np.median(spread):.2f}%, "
                         f"mean {spread.mean():.2f}%, 90th percentile {np.percentile(spread, 90):.2f}%; "
                         f"median dense / again {np.median(ratio):.4f}")
        lines.append("")
    with open(os.path.join(args.dense, "repeat.txt"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


def _mape(pred, meas):
    import numpy as np

    return float(np.mean(np.abs(pred / meas - 1)) * 100)


def cmd_report(args):
    import numpy as np
    from scipy.stats import spearmanr

    from torch_alpha_profiler.correction import of_fit
    from torch_alpha_profiler.families import get_family
    from torch_alpha_profiler.fit import fit_parameters
    from torch_alpha_profiler.layers import concat, take
    from torch_alpha_profiler.profile import load_profile
    from torch_alpha_profiler.tables import read_layer_table
    from torch_alpha_profiler.trees import SETTINGS

    fam = get_family("axes")
    lines = ["# Learning curve over denser random calibration layers", "",
             "Made by `python benchmarks/dense_random_rows.py report` from `dense-DTYPE.csv` (this folder) and "
             "the committed calibration and held-out tables. Each row refits a model on the calibration plus "
             "the first n dense random layers (up to 40,000) and predicts the two held-out sets of random layers and the "
             "models' layers, none of which any fit sees: the axes formula with the neighbour correction "
             "(the shipped form until session 9), boosted trees alone (a flexible learner with no formula, "
             "for reference), and the shipped form since session 9: the axes formula, residual trees "
             "(`torch_alpha_profiler/trees.py`, its settings) and the neighbour correction (the shipped "
             "profile's settings). The shipped profiles are fitted on all of them (40,000, last rows).", ""]
    for dtype, profile_name in zip(args.dtypes, args.profiles):
        settings = load_profile(profile_name, warn_device=False).correction
        calib = read_layer_table(os.path.join(args.data, f"calib-{dtype}.csv"))
        dense = read_layer_table(os.path.join(args.dense, f"dense-{dtype}.csv"))
        tests = {"held-out": read_layer_table(os.path.join(args.data, f"heldout-{dtype}.csv")),
                 "fresh held-out": read_layer_table(os.path.join(args.data, "fresh-validation",
                                                                 f"heldout-{dtype}.csv")),
                 "models' layers": read_layer_table(os.path.join(args.data, f"model-layer-times-{dtype}.csv"))}
        unbiased = np.array([b in ("", "0") for b in tests["models' layers"].columns["bias"]])
        lines += [f"## {dtype} ({len(dense)} dense layers measured)", "",
                  "| dense layers added | random layers in the fit | model | " + " | ".join(
                      f"{name} MAPE % (Spearman)" for name in tests) + " | dense layers not in the fit, MAPE % |",
                  "|---:|---:|---|" + "---:|" * (len(tests) + 1)]
        n_random = int(sum(s == "random" for s in calib.columns["sweep"]))
        for n in [s for s in STEPS if s <= len(dense)] + ([len(dense)] if len(dense) not in STEPS else []):
            t0 = time.monotonic()
            arrays = concat([calib.arrays, take(dense.arrays, np.arange(n))])
            times = np.concatenate([calib.time_ms, dense.time_ms[:n]])
            params = fit_parameters(fam, arrays, times)
            corr = of_fit(settings, fam, params, arrays, times)
            learners = {"axes formula x neighbours (no trees)": lambda a: fam.predict_ms(a, params) * np.exp(
                            corr.log_factor(a, fam.classify(a))),
                        "boosted trees alone (800, no formula)": boosted_trees(arrays, times),
                        "axes formula x residual trees x neighbours (shipped form)": stacked(
                            fam, params, arrays, times, settings, SETTINGS)}
            for label, predict in learners.items():
                cells = []
                for name, table in tests.items():
                    pred, meas = predict(table.arrays), table.time_ms
                    if name == "models' layers":  # timed with their biases, which the layer fit does not cost
                        pred, meas = pred[unbiased], meas[unbiased]
                    cells.append(f"{_mape(pred, meas):.1f} ({spearmanr(pred, meas)[0]:.3f})")
                rest = np.arange(n, len(dense))
                left = _mape(predict(take(dense.arrays, rest)), dense.time_ms[rest]) if len(rest) else float("nan")
                lines.append(f"| {n} | {n_random + n} | {label} | " + " | ".join(cells) + f" | {left:.1f} |")
                print(lines[-1], f"({time.monotonic() - t0:.0f} s)", flush=True)
        lines += ["", "The models' layers column keeps the layers timed without a bias "
                  f"({int(unbiased.sum())} of {len(unbiased)}): the layer fit does not cost bias additions.", ""]
        lines += settings_section(fam, settings, calib, dense)
    with open(args.out_md, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


# the residual trees' settings compared (trees, learning rate, depth, one ensemble a layer class);
# the shipped one is trees.SETTINGS. Rule (session 10): the fastest to walk of those within half a
# point of the best "trees x neighbours" MAPE, in both dtypes
CANDIDATES = ((100, 0.2, 6, False), (300, 0.1, 8, False), (400, 0.1, 10, False),
              (100, 0.2, 6, True), (150, 0.15, 8, True), (300, 0.1, 8, True), (400, 0.1, 10, True))
CHOICE_FIT = 36000  # dense layers in the fits that choose; the rest choose


def settings_section(fam, correction, calib, dense):
    """Choosing the residual trees' settings: fits on the calibration and the first CHOICE_FIT
    dense layers predict the other dense layers (calibration data: no held-out layer is read)."""
    import numpy as np

    from torch_alpha_profiler import trees
    from torch_alpha_profiler.fit import fit_parameters
    from torch_alpha_profiler.layers import concat, take

    fit_rows, rest = np.arange(CHOICE_FIT), np.arange(CHOICE_FIT, len(dense))
    arrays = concat([calib.arrays, take(dense.arrays, fit_rows)])
    times = np.concatenate([calib.time_ms, dense.time_ms[fit_rows]])
    params = fit_parameters(fam, arrays, times)
    choose, chosen_ms = take(dense.arrays, rest), dense.time_ms[rest]
    lines = [f"### Choosing the residual trees' settings ({len(rest)} dense layers predicted by fits on the "
             f"calibration and the first {CHOICE_FIT})", "",
             "Walk time: the numpy walk of `trees.ResidualTrees.log_factor` over the predicted layers, all "
             "distinct, per million layers on this machine.", "",
             "| trees | learning rate | depth | one ensemble a class | trees alone MAPE % "
             "| trees x neighbours MAPE % | walk s per 1M layers |",
             "|---:|---:|---:|---|---:|---:|---:|"]
    for n, rate, depth, by_class in CANDIDATES:
        settings = dict(trees.SETTINGS, trees=n, learning_rate=rate, max_depth=depth, by_class=by_class)
        predict = stacked(fam, params, arrays, times, correction, settings)
        walk = trees.from_section(trees.fit(arrays, np.log(times / fam.predict_ms(arrays, params)), settings))
        t0 = time.perf_counter()
        alone = fam.predict_ms(choose, params) * np.exp(walk.log_factor(choose))
        per_million = (time.perf_counter() - t0) / len(rest) * 1e6
        mark = " (shipped)" if settings == trees.SETTINGS else ""
        lines.append(f"| {n}{mark} | {rate} | {depth} | {'yes' if by_class else 'no'} | "
                     f"{_mape(alone, chosen_ms):.2f} | {_mape(predict(choose), chosen_ms):.2f} | {per_million:.1f} |")
        print(lines[-1], flush=True)
    return lines + [""]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="time the dense random layers (GPU)")
    m.add_argument("--dtype", default="float32")
    m.add_argument("--count", type=int, default=3000)
    m.add_argument("--out", required=True)
    m.set_defaults(func=cmd_measure)
    rp = sub.add_parser("repeat", help="the dense layers timed twice: run-to-run spread (CPU)")
    rp.add_argument("--dense", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                                                    "dense-random"))
    rp.add_argument("--again", nargs="+", default=None,
                    help="folders of the second runs (default DENSE/run-a DENSE/run-b)")
    rp.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    rp.set_defaults(func=cmd_repeat)
    r = sub.add_parser("report", help="the learning curve (CPU)")
    r.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    r.add_argument("--dense", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                                                   "dense-random"))
    r.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    r.add_argument("--profiles", nargs="+", default=["h100-fp32", "h100-bf16"])
    r.add_argument("--out-md", default=None)
    r.set_defaults(func=cmd_report)
    args = p.parse_args(argv)
    if getattr(args, "again", "") is None:
        args.again = [os.path.join(args.dense, "run-a"), os.path.join(args.dense, "run-b")]
    if getattr(args, "out_md", "") is None:
        args.out_md = os.path.join(args.dense, "learning-curve.md")
    args.func(args)


if __name__ == "__main__":
    main()
