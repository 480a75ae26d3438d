"""The ``alpha-profiler`` command: one ``cmd_<name>(args)`` per subcommand."""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time
import warnings
from typing import List, Optional, Sequence

EXIT_USER_ERROR = 2


class CliError(Exception):
    """An error to report to the user in one line (exit status 2)."""


# ----------------------------------------------------------------- helpers
def _input_size(args, name: str):
    from .zoo import default_input_size

    if not args.input_size:
        return default_input_size(name)
    size = args.input_size
    if len(size) > 2:
        raise CliError(f"--input-size takes a height and at most a width, got {len(size)} numbers")
    return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])


def _profile_model(name: str, batch: int, size, profile, device: str, scope: str = "model", train: bool = False):
    """Profile one forward of ``name``; ``device`` is one of shapes.DEVICES (see there); ``train``:
    the forward of a training step (train mode, autograd on)."""
    from .shapes import resolve_device
    from .zoo import build_model

    import torch

    run = resolve_device(device, batch, size)
    model = build_model(name, device="meta" if run == "hybrid" else run)
    # profiles are per dtype (bytes moved, channel alignment): run the model in the profile's dtype
    dtype = getattr(torch, profile.dtype, torch.float32)
    if dtype != torch.float32:
        model = model.to(dtype)
    if run == "hybrid":
        try:
            return _forward(model, batch, size, profile, "hybrid", scope, train)
        except Exception:
            if device != "auto":
                raise
            run = "meta"  # an op the hybrid pass cannot run: meta gives the same shapes
    try:
        return _forward(model, batch, size, profile, run, scope, train)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CliError(f"the forward pass of {name!r} on a {batch}x3x{size[0]}x{size[1]} input failed: "
                       f"{first}") from None


def _forward(model, batch: int, size, profile, run: str, scope: str = "model", train: bool = False):
    import contextlib

    import torch

    from .profiler import AlphaProfiler
    from .shapes import ShapeOnlyMode

    dtype = next((t.dtype for t in model.parameters() if t.is_floating_point()), torch.float32)
    if run == "hybrid":
        x, mode = torch.zeros(batch, 3, *size, dtype=dtype), ShapeOnlyMode()
    else:
        x, mode = torch.randn(batch, 3, *size, device=run, dtype=dtype), contextlib.nullcontext()
    model.train(train)
    with AlphaProfiler(model, profile=profile, scope=scope) as p, torch.set_grad_enabled(train), mode:
        model(x)
    return p


def _stem(path: str) -> str:
    """A profile name from an output path: its file name without the extension ('.json.gz' too)."""
    import os

    from .profile import SUFFIXES

    base = os.path.basename(path)
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[:-len(suffix)]
    return os.path.splitext(base)[0] or "profile"


def _emit(text: str, out: Optional[str]) -> None:
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


class _Bar:
    """A one-line progress bar on stderr."""

    def __init__(self, label: str):
        self.label, self.t0, self.last = label, time.monotonic(), 0.0

    def __call__(self, i: int, n: int, row) -> None:
        now = time.monotonic()
        if i < n and now - self.last < 0.2:
            return
        self.last = now
        width = 30
        filled = int(width * i / max(n, 1))
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {i}/{n} "
                         f"{now - self.t0:5.0f}s")
        if i >= n:
            sys.stderr.write("\n")
        sys.stderr.flush()


# ------------------------------------------------------------- subcommands
def _check_mode(args, profile) -> None:
    if args.mode in ("eager", "train") and args.scope == "layers":
        raise CliError(f"--mode {args.mode} predicts every operation of the forward (and its backward): "
                       "it needs --scope model (or auto)")
    if args.mode == "eager" and profile.host is None:
        raise CliError(f"--mode eager needs a profile with host (CPU launch) costs; {profile.name!r} has "
                       "none (the h100-* profiles do; 'alpha-profiler calibrate' measures them)")
    if args.mode == "train" and not profile.train:
        raise CliError(f"--mode train needs a profile with training-step classes; {profile.name!r} has none "
                       "(the h100-* profiles do; 'alpha-profiler calibrate --train' measures them)")


def _time_line(p, mode: str, grid: Optional[float] = None) -> str:
    """One line that says what the predicted time covers."""
    from .energy import DEFAULT_GRID_G_PER_KWH

    parts = f"Conv2d/Linear {p.layers_ms:.3f} ms"
    if p.scope == "model":
        parts += f" + other operations {p.ops_ms:.3f} ms"
    text = f"predicted GPU time (kernels back to back, as in a CUDA graph): {p.predicted_ms:.3f} ms ({parts})"
    eager = p.eager_ms
    if eager is not None:
        text += f"\npredicted eager time (CPU launches included): {eager:.3f} ms"
    joules = p.energy_j
    if joules is not None:
        text += (f"\npredicted GPU energy per forward: {joules * 1e3:.2f} mJ "
                 f"({p.co2e_g(grid) * 1e3:.4f} mg CO2e at {DEFAULT_GRID_G_PER_KWH if grid is None else grid:g} g/kWh)")
    if mode == "train":
        text += (f"\npredicted training step (forward + backward, no optimizer step; GPU time): "
                 f"{p.train_step_ms:.3f} ms")
        if p.train_energy_j is not None:
            text += f", {p.train_energy_j * 1e3:.2f} mJ"
    return text


def cmd_profile(args) -> int:
    from .profile import load_profile

    profile = load_profile(args.profile)
    _check_mode(args, profile)
    if args.mode == "train" and args.format in ("csv", "ops-csv"):
        raise CliError(f"--format {args.format} lists the forward's calls; with --mode train use --format "
                       "table or json (they add the training step's totals)")
    p = _profile_model(args.model, args.batch, _input_size(args, args.model), profile, args.device,
                       args.scope, train=args.mode == "train")
    if args.format == "json":
        text = p.to_json(args.grid_intensity)
        if args.mode == "train":
            doc = json.loads(text)
            doc.update(train_step_ms=p.train_step_ms, train_energy_j=p.train_energy_j)
            text = json.dumps(doc, indent=1)
        _emit(text, args.out)
    elif args.format == "csv":
        _emit(p.to_csv(), args.out)
    elif args.format == "ops-csv":
        _emit(p.ops_csv(), args.out)
    else:
        head = (f"{args.model}, batch {args.batch}, profile {profile.name} ({profile.device_name}); "
                f"FLOPs = 2 x multiply-accumulates\n")
        _emit(head + p.table(depth=args.depth, top_k=args.top_k) + "\n" + _time_line(p, args.mode, args.grid_intensity),
              args.out)
    return 0


def _ranks(values: Sequence[float]) -> List[int]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0] * len(values)
    for r, i in enumerate(order):
        ranks[i] = r + 1
    return ranks


def cmd_compare(args) -> int:
    from .profile import load_profile

    profile = load_profile(args.profile)
    _check_mode(args, profile)
    rows, scope = [], args.scope
    for name in args.models:
        for batch in args.batch:
            train = args.mode == "train"
            p = _profile_model(name, batch, _input_size(args, name), profile, args.device, args.scope, train)
            scope = p.scope  # "auto" resolved by the profile
            eager = p.eager_ms
            step_ms, step_j = (p.train_step_ms, p.train_energy_j) if train else (None, None)
            predicted = {"gpu": p.predicted_ms, "eager": eager, "train": step_ms}[args.mode]
            rows.append({"model": name, "batch": batch, "flops": p.total_flops,
                         "alpha_flops": p.total_alpha_flops, "predicted_ms": predicted,
                         "gpu_ms": p.predicted_ms, "eager_ms": eager, "layers_ms": p.layers_ms,
                         "ops_ms": p.ops_ms, "energy_j": p.energy_j, "co2e_g": p.co2e_g(args.grid_intensity),
                         "train_step_ms": step_ms, "train_energy_j": step_j,
                         "layers": len(p.records), "ops": len(p.ops),
                         "not_costed": sum(n.calls for n in p.not_costed())})
    for batch in args.batch:
        group = [r for r in rows if r["batch"] == batch]
        for r, a, b in zip(group, _ranks([r["flops"] for r in group]),
                           _ranks([r["predicted_ms"] for r in group])):
            r["rank_flops"], r["rank_time"] = a, b
    key = {"time": "predicted_ms", "flops": "flops", "alpha": "alpha_flops"}[args.sort]
    rows.sort(key=lambda r: (r["batch"], r[key]))
    if args.plot:
        from .plots import compare_plot

        try:
            compare_plot(rows, args.plot, profile.name)
        except ImportError as e:
            raise CliError(str(e)) from None
    if args.format == "json":
        _emit(json.dumps(rows, indent=1), args.out)
    elif args.format == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        _emit(buf.getvalue(), args.out)
    else:
        from tabulate import tabulate

        joules = "train_energy_j" if args.mode == "train" else "energy_j"
        energy = all(r[joules] is not None for r in rows)
        body = [[r["model"], r["batch"], r["flops"] / 1e9, r["alpha_flops"] / 1e9, r["predicted_ms"]]
                + ([r[joules] * 1e3] if energy else []) + [r["rank_flops"], r["rank_time"], r["not_costed"]]
                for r in rows]
        step = "train step " if args.mode == "train" else ""
        text = tabulate(body, headers=["model", "batch", "GFLOPs (2xMAC)", "alpha-GFLOPs",
                                       f"predicted {args.mode} ms"] + ([f"GPU {step}energy mJ"] if energy else [])
                        + ["rank by FLOPs", "rank by time", "calls not costed"],
                        floatfmt=("", "", ".3f", ".3f", ".3f") + ((".1f",) if energy else ()) + ("", "", ""))
        what = ("every operation" if scope == "model" else "Conv2d and Linear layers only")
        when = {"gpu": "GPU time, kernels back to back as in a CUDA graph",
                "eager": "eager PyTorch, CPU launches included",
                "train": "training step: forward (train mode) + backward, GPU time, no optimizer step"}[args.mode]
        _emit(f"profile {profile.name} ({profile.device_name}); {what}; {when}\n" + text, args.out)
    return 0


def cmd_fit(args) -> int:
    import math

    from .fit import fit_profile
    from .tables import concat_tables, read_layer_table, with_default_dtype

    tables = [read_layer_table(path) for path in args.table]
    try:
        table = concat_tables(tables)
    except ValueError as e:
        raise CliError(str(e)) from None
    provenance = {}
    env_path = args.table[0] + ".env.json"
    try:
        with open(env_path) as f:
            env = json.load(f)
    except FileNotFoundError:
        env = None
    except ValueError as e:
        raise CliError(f"{env_path}: not valid JSON ({e})") from None
    if env is not None:
        if not isinstance(env, dict):
            raise CliError(f"{env_path}: expected a JSON object")
        provenance.update(env, measurement_env=env_path)
    if args.device_name:
        provenance["device_name"] = args.device_name
    if args.dtype:
        provenance["dtype"] = args.dtype
    provenance["source"] = args.table[0]
    if len(args.table) > 1:
        provenance["more_sources"] = list(args.table[1:])
    provenance.setdefault("dtype", "float32")
    table = with_default_dtype(table, provenance["dtype"])
    if table.time_ms is None or not any(math.isfinite(t) and t > 0 for t in table.time_ms):
        raise CliError(f"{table.source}: no positive, finite 'time_ms' values to fit")
    try:
        profile = fit_profile(table, family=args.family, name=args.name or _stem(args.out),
                              provenance=provenance, correction=not args.no_correction,
                              trees=args.family == "axes" and not args.no_trees)
    except ImportError as e:
        raise CliError(f"{e}; or pass --no-trees") from None
    if args.ops or args.host or args.channels_last or args.train or args.energy:
        from dataclasses import replace

        from .fit import fit_channels_last
        from .opfit import fit_host, fit_ops

        extra = {}
        if args.channels_last:
            extra["channels_last"] = fit_channels_last(
                with_default_dtype(read_layer_table(args.channels_last), provenance["dtype"]), args.family,
                profile.parameters)
            provenance["channels_last_source"] = args.channels_last
        if (args.train or args.energy) and not args.ops:
            raise CliError("--train and --energy need --ops (their op rows take bytes and geometry from it)")
        if args.train:
            from .opcost import L2_BYTES
            from .trainfit import fit_train

            try:
                extra["train"] = fit_train(
                    _read_rows(args.train, TRAIN_TABLE_COLUMNS, ("time_ms",)),
                    _read_rows(args.ops, OPS_JOIN_COLUMNS, ("nbytes", "time_ms")), args.family,
                    provenance.get("l2_cache_bytes") or L2_BYTES, source=args.train)
            except ValueError as e:
                raise CliError(str(e)) from None
        if args.energy:
            from .powerfit import fit_power

            try:
                extra["power"] = fit_power(
                    _read_rows(args.energy, TRAIN_TABLE_COLUMNS + ("energy_mj", "status"), ("time_ms", "energy_mj")),
                    _read_rows(args.ops, OPS_JOIN_COLUMNS, ("nbytes", "time_ms")), args.family,
                    provenance.get("idle_power_w"), source=args.energy)
            except ValueError as e:
                raise CliError(str(e)) from None
        if args.ops:
            from .opcost import L2_BYTES

            extra["ops"] = fit_ops(_read_rows(args.ops, ("cls", "nbytes", "time_ms"), ("nbytes", "time_ms")),
                                   l2_bytes=provenance.get("l2_cache_bytes") or L2_BYTES)
            provenance["ops_source"] = args.ops
        if args.host:
            extra["host"] = fit_host(_read_rows(args.host, ("kind", "host_class", "host_us"), ("host_us",)))
            provenance["host_source"] = args.host
        profile = replace(profile, provenance=dict(profile.provenance, **provenance), **extra)
    profile.save(args.out, overwrite=args.force)
    fit = profile.provenance["fit"]
    corrected = (f"; with the neighbour correction (bandwidth {profile.correction['bandwidth']}) over them"
                 if profile.correction else "")
    if profile.trees:
        from .trees import describe

        corrected = f"; with {describe(profile.trees)}" + corrected
    sys.stderr.write(f"fitted {args.family} on {fit['n']} layers: MAPE {fit['mape_pct']:.1f}%, "
                     f"Spearman {fit['spearman']:.3f} (the formula alone){corrected}; wrote {args.out}\n")
    return 0


# columns the training and energy tables (calibrate --train / --energy) need, and the op table
# they take bytes and geometry from
TRAIN_TABLE_COLUMNS = ("source", "op", "d0", "d1", "d2", "d3", "kind", "N", "Cin", "Cout", "H", "W", "K1", "K2",
                       "input_grad", "layout", "time_ms")
OPS_JOIN_COLUMNS = ("op", "d0", "d1", "d2", "d3", "cls", "nbytes", "time_ms")


def _read_rows(path: str, required, numeric=()) -> list:
    """The rows of a calibration CSV, checking that its header has the ``required`` columns and
    that the ``numeric`` ones hold numbers in every measured row (status ok or absent); each row
    keeps its line in the file as ``_line`` (for later errors)."""
    import csv
    import math

    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or ())]
            if missing:
                raise CliError(f"{path}: missing column(s) {', '.join(missing)}")
            rows = list(reader)
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise CliError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    for line, r in enumerate(rows, start=2):
        r["_line"] = str(line)
        if r.get("status", "ok") != "ok":
            continue
        for col in numeric:
            try:
                ok = math.isfinite(float(r[col]))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise CliError(f"{path} line {line}: column '{col}' must be a number, got {r[col]!r}")
    return rows


def cmd_predict(args) -> int:
    from .cost import evaluate
    from .profile import load_profile
    from .tables import read_layer_table, with_default_dtype, write_predictions

    profile = load_profile(args.profile)
    if args.no_correction:
        from dataclasses import replace

        profile = replace(profile, correction=None, trees=None)
    t0 = time.perf_counter()
    # rows without a dtype column are in the profile's dtype
    table = with_default_dtype(read_layer_table(args.csv), profile.dtype)
    t1 = time.perf_counter()
    costs = evaluate(table.arrays, profile)
    t2 = time.perf_counter()
    if args.out:
        with open(args.out, "w", newline="", encoding="utf-8") as f:
            write_predictions(table, costs, f)
    else:
        write_predictions(table, costs, sys.stdout)
    t3 = time.perf_counter()
    sys.stderr.write(f"predicted {len(table)} layers in {t3 - t0:.2f} s (read {t1 - t0:.2f} s, "
                     f"predict {t2 - t1:.3f} s, write {t3 - t2:.2f} s)\n")
    return 0


ESTIMATE_ASSUMPTIONS = (
    "GPU time only: kernels back to back, as in a CUDA graph; data loading, host (CPU) overheads, "
    "evaluation passes and idle time are not included",
    "training: forward (train mode) + backward per step; the optimizer step and gradient "
    "communication are not modelled",
    "energy: the GPU board's only (no CPU, host memory, cooling or data-centre overhead, PUE 1.0)",
    "every batch is full: steps = ceil(samples / batch) per epoch",
)


def cmd_estimate(args) -> int:
    """Predicted wall time, kWh and kg CO2e of a training run (or of serving N samples)."""
    import math

    from .energy import DEFAULT_GRID_G_PER_KWH
    from .profile import load_profile

    profile = load_profile(args.profile)
    train = args.mode == "train"
    if train and not profile.train:
        raise CliError(f"estimating a training run needs a profile with training-step classes; "
                       f"{profile.name!r} has none (the h100-* profiles do), or pass --mode infer")
    if profile.ops is None:
        raise CliError(f"profile {profile.name!r} cannot cost the whole model (no op classes); "
                       "use an h100-* profile or one made by 'alpha-profiler calibrate'")
    if not train and args.epochs is not None:
        raise CliError("--epochs is for training runs; --mode infer serves --samples once")
    if train and args.epochs is None:
        args.epochs = 1
    p = _profile_model(args.model, args.batch, _input_size(args, args.model), profile, args.device,
                       "model", train)
    step_ms, step_j = (p.train_step_ms, p.train_energy_j) if train else (p.predicted_ms, p.energy_j)
    epochs = args.epochs if train else 1
    steps = math.ceil(args.samples / args.batch) * epochs
    grid = DEFAULT_GRID_G_PER_KWH if args.grid_intensity is None else args.grid_intensity
    kwh = None if step_j is None else step_j * steps / 3.6e6
    result = {"model": args.model, "profile": profile.name, "device_name": profile.device_name,
              "dtype": profile.dtype, "mode": args.mode, "batch": args.batch, "samples": args.samples,
              "epochs": epochs, "steps": steps, "step_ms": step_ms, "step_energy_j": step_j,
              "hours": step_ms * steps / 3.6e6, "kwh": kwh, "grid_g_per_kwh": grid,
              "kg_co2e": None if kwh is None else kwh * grid / 1e3,
              "not_costed": sum(n.calls for n in p.not_costed()),
              "assumptions": [a for a in ESTIMATE_ASSUMPTIONS if train or not a.startswith("training")]}
    if args.format == "json":
        _emit(json.dumps(result, indent=1), args.out)
        return 0
    what = (f"training {args.model} for {epochs} epoch(s) of {args.samples:,} samples at batch {args.batch}"
            if train else f"serving {args.samples:,} samples with {args.model} at batch {args.batch}")
    lines = [f"{what} on {profile.device_name} ({profile.dtype}, profile {profile.name}):",
             f"  steps            {steps:,} x {step_ms:.4g} ms = {result['hours']:.4g} h of GPU time"]
    if kwh is None:
        what = "training-step power data" if train else "power data"
        lines.append(f"  energy           unavailable: profile {profile.name!r} has no {what}")
    else:
        lines += [f"  energy           {steps:,} x {step_j:.4g} J = {kwh:.4g} kWh",
                  f"  emissions        {result['kg_co2e']:.4g} kg CO2e at {grid:g} g CO2e/kWh"]
    if result["not_costed"]:
        lines.append(f"  not costed       {result['not_costed']} call(s) per step (see 'alpha-profiler profile')")
    lines += ["assumptions:"] + [f"  - {a}" for a in result["assumptions"]]
    _emit("\n".join(lines), args.out)
    return 0


def cmd_profiles(args) -> int:
    from tabulate import tabulate

    from .profile import builtin_names, load_profile

    rows = []
    for name in builtin_names():
        p = load_profile(name, warn_device=False)
        fit = p.provenance.get("fit") or {}
        mape = fit.get("mape_pct")
        rows.append([name, p.family, p.device_name, p.dtype, p.provenance.get("torch_version") or "",
                     p.provenance.get("n_measurements") or "", "" if mape is None else f"{mape:.1f}",
                     " + ".join(part for part, on in (("trees", p.trees), ("neighbours", p.correction)) if on),
                     str(p.provenance.get("date", ""))[:10]])
    _emit(tabulate(rows, headers=["profile", "family", "device", "dtype", "torch", "layers fitted",
                                  "formula's fit MAPE %", "correction", "date"]), None)
    return 0


def cmd_calibrate(args) -> int:
    import torch

    from .calibrate import calibrate

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CliError("--device cuda, but no CUDA device is available")
    t0 = time.monotonic()
    try:
        profile = calibrate(args.out, device=args.device, dtype=args.dtype, family=args.family,
                            scale=args.scale, seed=args.seed, resume=not args.restart, overwrite=args.force,
                            name=args.name, progress=None if args.quiet else _Bar(f"calibrating {args.dtype}"),
                            ops=not args.no_ops, energy=args.energy, train=args.train, dense=args.dense)
    except (RuntimeError, ValueError) as e:  # e.g. no energy counter, too few rows to fit
        import os

        kept = (f" (raw measurements so far are kept in {args.out}*.csv; the run resumes)"
                if os.path.exists(args.out + ".csv") else "")
        raise CliError(f"{e}{kept}") from None
    fit = profile.provenance["fit"]
    sys.stderr.write(f"measured {profile.provenance['n_measurements']} layers and fitted {args.family} in "
                     f"{time.monotonic() - t0:.0f} s: MAPE {fit['mape_pct']:.1f}%, Spearman "
                     f"{fit['spearman']:.3f}; raw times in {args.out}.csv, profile {args.out}.json\n")
    return 0


# ------------------------------------------------------------------ parser
def _intensity(text: str) -> float:
    """argparse type: a carbon intensity, g CO2e per kWh (a finite number, at least 0)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of g CO2e per kWh, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of g CO2e per kWh, at least 0, got {text}")
    return value


def _positive(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def create_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alpha-profiler",
        description="Predict what a PyTorch model costs on a GPU: FLOPs (2 x multiply-accumulates), "
                    "alpha-FLOPs and milliseconds.")
    sub = parser.add_subparsers(dest="command", required=True)

    def model_options(p, formats=("table", "json", "csv")):
        p.add_argument("--profile", default="t2000-paper", help="built-in profile name or JSON path")
        p.add_argument("--input-size", type=_positive, nargs="+", metavar="PX",
                       help="input height [width] (default: the model's own, e.g. 224)")
        p.add_argument("--device", default="auto", choices=("auto", "hybrid", "meta", "cpu"),
                       help="how to run the shape-only forward: hybrid (meta weights, CPU activations, "
                            "no convolution or matrix-product FLOPs), meta, cpu, or auto (default): "
                            "hybrid up to 150,000 input pixels (batch x H x W), meta above")
        p.add_argument("--format", default="table", choices=formats,
                       help="csv: the Conv2d/Linear layers as a layer table" +
                            ("; ops-csv: the other operations" if "ops-csv" in formats else ""))
        p.add_argument("--out", help="write to this file instead of stdout")
        p.add_argument("--scope", default="auto", choices=("auto", "model", "layers"),
                       help="model: every operation; layers: Conv2d and Linear only; auto (default): "
                            "model when the profile has classes for the other operations")
        p.add_argument("--grid-intensity", type=_intensity, metavar="G",
                       help="g CO2e per kWh of the electricity (default 480: world average 2023, Ember "
                            "Global Electricity Review 2024), for co2e_g")
        p.add_argument("--mode", default="gpu", choices=("gpu", "eager", "train"),
                       help="the time to predict: gpu (default) = kernels back to back, as in a CUDA "
                            "graph; eager = plain PyTorch, CPU launches included (needs a profile "
                            "with host costs); train = one training step, forward in train mode + "
                            "backward, GPU time (needs a profile with training classes)")

    p = sub.add_parser("profile", help="per-layer alpha-FLOPs table of one model")
    p.add_argument("model", help="torchvision model name or module:callable")
    p.add_argument("--batch", type=_positive, default=1)
    p.add_argument("--depth", type=_positive, help="merge layers below this module depth")
    p.add_argument("--top-k", type=_positive, help="show only the k slowest rows")
    model_options(p, formats=("table", "json", "csv", "ops-csv"))
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("compare", help="compare models by FLOPs, alpha-FLOPs and predicted time")
    p.add_argument("models", nargs="+")
    p.add_argument("--batch", type=_positive, nargs="+", default=[1])
    p.add_argument("--sort", default="time", choices=("time", "flops", "alpha"))
    p.add_argument("--plot", metavar="PNG", help="also save a FLOPs vs predicted-time scatter (needs matplotlib)")
    model_options(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("estimate", help="predicted time, kWh and kg CO2e of a training run or of serving")
    p.add_argument("model", help="torchvision model name or module:callable")
    p.add_argument("--profile", default="auto", help="built-in profile name or JSON path (default: the "
                   "current GPU's)")
    p.add_argument("--batch", type=_positive, required=True)
    p.add_argument("--samples", type=_positive, required=True, help="samples per epoch (or to serve)")
    p.add_argument("--epochs", type=_positive, help="training epochs (default 1)")
    p.add_argument("--mode", default="train", choices=("train", "infer"),
                   help="train (default): forward + backward per step; infer: forward only (GPU time)")
    p.add_argument("--grid-intensity", type=_intensity, metavar="G",
                   help="g CO2e per kWh (default 480: world average 2023, Ember Global Electricity Review 2024)")
    p.add_argument("--input-size", type=_positive, nargs="+", metavar="PX",
                   help="input height [width] (default: the model's own, e.g. 224)")
    p.add_argument("--device", default="auto", choices=("auto", "hybrid", "meta", "cpu"),
                   help="how to run the shape-only forward (see 'profile --help')")
    p.add_argument("--format", default="text", choices=("text", "json"))
    p.add_argument("--out", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("fit", help="fit a profile to a measured layer table")
    p.add_argument("table", nargs="+",
                   help="layer-table CSV with a time_ms column; several are fitted as one table (the first "
                        "one's .env.json gives the provenance)")
    p.add_argument("--out", required=True, help="profile JSON to write")
    p.add_argument("--family", default="paper", choices=("paper", "axes", "flops"),
                   help="model family (default: paper; axes is the calibrated one)")
    p.add_argument("--name", help="profile name (default: the output file's stem)")
    p.add_argument("--device-name", help="device the times were measured on")
    p.add_argument("--dtype", help="dtype the times were measured in")
    p.add_argument("--ops", metavar="CSV", help="also fit the op classes to this op-calibration CSV (PREFIX-ops.csv)")
    p.add_argument("--host", metavar="CSV", help="also set eager host costs from this CSV (PREFIX-host.csv)")
    p.add_argument("--channels-last", metavar="CSV",
                   help="also fit the family to these channels-last Conv2d times (PREFIX-nhwc.csv)")
    p.add_argument("--train", metavar="CSV",
                   help="also fit the training-step classes to these step times (PREFIX-train.csv; needs --ops)")
    p.add_argument("--energy", metavar="CSV",
                   help="also fit the energy coefficients to these power measurements (PREFIX-energy.csv; "
                        "needs --ops)")
    p.add_argument("--no-correction", action="store_true",
                   help="leave out the axes family's neighbour correction (the formula alone)")
    p.add_argument("--no-trees", action="store_true",
                   help="leave out the axes family's residual trees (fitting them needs scikit-learn)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("predict", help="add predicted costs to each row of a layer table")
    p.add_argument("--profile", required=True)
    p.add_argument("--csv", required=True, help="layer-table CSV")
    p.add_argument("--out", help="output CSV (default: stdout)")
    p.add_argument("--no-correction", action="store_true",
                   help="the formula alone, without the profile's residual trees and neighbour correction "
                        "(much faster on large tables)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("profiles", help="list built-in profiles and their provenance")
    p.set_defaults(func=cmd_profiles)

    p = sub.add_parser("calibrate", help="time synthetic layers on this device and fit a profile")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--out", required=True, help="output prefix: PREFIX.csv (raw times), PREFIX.json")
    p.add_argument("--family", default="axes")
    p.add_argument("--name")
    p.add_argument("--scale", type=int, default=1, help="points per sweep (0: a tiny plan)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--restart", action="store_true", help="ignore an existing PREFIX.csv instead of resuming")
    p.add_argument("--force", action="store_true", help="overwrite PREFIX.json if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--energy", action="store_true",
                   help="also measure board power (NVML energy counter, polled during 0.3 s of back-to-back "
                        "calls) of a subset of the plans into PREFIX-energy.csv; about 2 minutes")
    p.add_argument("--train", action="store_true",
                   help="also time training steps (forward + backward) of plan subsets into PREFIX-train.csv "
                        "and fit the profile's training-step classes")
    p.add_argument("--no-ops", action="store_true",
                   help="time Conv2d/Linear layers only (no op classes, no eager host costs)")
    p.add_argument("--dense", type=int, default=0, metavar="N",
                   help="also time N random layers beyond the plan, for the residual trees (the h100 profiles "
                        "have 40000: about 7-9 minutes more on an H100; fitting the trees needs scikit-learn)")
    p.set_defaults(func=cmd_calibrate)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .profile import ProfileError
    from .tables import LayerTableError
    from .zoo import ModelError

    args = create_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torchvision's init warnings
            return args.func(args)
    except BrokenPipeError:
        return 0
    except (CliError, ProfileError, LayerTableError, ModelError, FileExistsError) as e:
        sys.stderr.write(f"alpha-profiler: error: {e}\n")
        return EXIT_USER_ERROR
    except OSError as e:  # a missing, unreadable or unwritable file the user named
        sys.stderr.write(f"alpha-profiler: error: {e.filename or ''}: {e.strerror or e}\n")
        return EXIT_USER_ERROR
    except UnicodeDecodeError as e:
        sys.stderr.write(f"alpha-profiler: error: input is not UTF-8 text ({e.reason} at byte {e.start})\n")
        return EXIT_USER_ERROR
