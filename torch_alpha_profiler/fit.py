"""Fit a device profile to measured layer times (least squares on relative or log-ratio error)."""
from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import warnings
from typing import Dict, Mapping, Optional, Sequence, Union

import numpy as np

from .correction import check as check_correction
from .families import Bound, Family, get_family
from .layers import LayerArrays
from .profile import SCHEMA_VERSION, DeviceProfile
from .tables import LayerTable


def _unpack(family: Family, names, vector) -> Dict[str, object]:
    params: Dict[str, object] = {"classes": {c: {} for c in family.classes}}
    for key, value in zip(names, vector):
        if "." in key:
            cls, p = key.split(".", 1)
            params["classes"][cls][p] = float(value)
        else:
            params[key] = float(value)
    return params


def residual_stats(pred: np.ndarray, meas: np.ndarray, classes=None, class_names=()) -> Dict[str, object]:
    """MAPE (%), median and max absolute percentage error, Spearman rho, n."""
    from scipy.stats import spearmanr

    ape = np.abs(pred - meas) / meas * 100.0
    stats: Dict[str, object] = {
        "n": int(meas.size),
        "mape_pct": float(np.mean(ape)),
        "median_ape_pct": float(np.median(ape)),
        "max_ape_pct": float(np.max(ape)),
        "spearman": float(spearmanr(pred, meas)[0]) if meas.size > 2 else float("nan"),
    }
    if classes is not None:
        stats["mape_pct_by_class"] = {
            name: float(np.mean(ape[classes == i])) for i, name in enumerate(class_names)
            if np.any(classes == i)
        }
    return stats


def fit_parameters(family: Family, arrays: LayerArrays, time_ms: np.ndarray,
                   fixed: Optional[Mapping[str, float]] = None,
                   start: Optional[Mapping[str, object]] = None, ftol: float = 1e-8) -> Dict[str, object]:
    """Least-squares parameters of ``family`` for measured ``time_ms``.

    Minimizes the sum of squared residuals, predicted / measured - 1 (or
    ln(predicted / measured) for families with ``residual = "log"``), through
    the family's robust ``loss`` (scipy's least_squares); classes with no
    measured layer keep their initial values. ``fixed`` pins parameters by key (None
    frees one the family pins). ``start`` (a parameters dict, e.g. a fit of related data) gives
    the starting point instead of the family's initial values, clipped into the bounds.
    A parameter the family pins (``family.FIXED``) and ``fixed`` frees starts from the
    family's initial value: ``start`` holds only its pinned value (a per-tap latency of 0 would
    never move). ``ftol``: least_squares stops when a step lowers the loss by a smaller fraction.
    """
    from scipy.optimize import least_squares

    pinned = getattr(family, "FIXED", {})
    fixed = dict(pinned, **(fixed or {}))
    fixed = {k: v for k, v in fixed.items() if v is not None}  # None frees a family's pinned value
    bounds = family.bounds()
    for key, value in fixed.items():
        if key not in bounds:
            bounds[key] = Bound(value, value, value)
    present = set(np.unique(family.classify(arrays)).tolist())
    absent = {c for i, c in enumerate(family.classes) if i not in present}
    names = [k for k in bounds if k not in fixed and k.split(".")[0] not in absent]
    const = {k: fixed.get(k, b.init) for k, b in bounds.items() if k not in names}
    is_log = np.array([bounds[k].log for k in names], dtype=bool)

    def to_x(values):
        values = np.asarray(values, dtype=np.float64)
        return np.where(is_log, np.log(np.where(is_log, values, 1.0)), values)

    lo = to_x([bounds[k].lo for k in names])
    hi = to_x([bounds[k].hi for k in names])
    if start is None:
        x0 = to_x([bounds[k].init for k in names])
    else:
        x0 = np.clip(to_x([bounds[k].init if k in pinned else family.parameter(start, k) for k in names]), lo, hi)
    all_names = list(const) + names

    def params_of(x):
        values = np.where(is_log, np.exp(x), x)
        return _unpack(family, all_names, list(const.values()) + list(values))

    def residuals(x):
        pred = family.predict_ms(arrays, params_of(x))
        if family.residual == "log":
            return np.log(pred / time_ms)
        return pred / time_ms - 1.0

    with np.errstate(over="ignore", invalid="ignore"):
        result = least_squares(residuals, x0, bounds=(lo, hi), x_scale="jac", max_nfev=20000,
                               loss=family.loss, f_scale=family.loss_scale, ftol=ftol)
    return family.finalize(params_of(result.x), arrays)


# parameters refitted for channels-last inputs, per family (the rest are kept from the NCHW fit):
# the kernel's speed, floor, bandwidth, wave behaviour, kernel-size power, per-tap latency, stride
# and kernel-size factors change, and the per-image factor (a layout effect), the per-axis
# saturations do not (cross-validated in docs/forms-ops.md); families not listed are refitted whole
CHANNELS_LAST_FREE = {"axes": ("tau_ms_per_mmac", "t0_ms", "bw_gb_per_s", "wave_exp", "k_exp", "tap_ms",
                                "h_hw", "g_hw", "stride_f", "k5_f", "k7_f")}


def channels_last_fixed(fam, base: Mapping[str, object], free: Optional[Sequence[str]]):
    """Parameters pinned to the NCHW fit ``base`` when only ``free`` are refitted (None: none
    pinned, the whole family refitted, the parameters the family pins included); a free
    parameter the family pins is freed."""
    if free is None:
        return {key: None for key in fam.bounds() if key in getattr(fam, "FIXED", {})}
    fixed: Dict[str, Optional[float]] = {}
    for key in fam.bounds():
        if key.rpartition(".")[2] not in free:
            fixed[key] = fam.parameter(base, key)
        elif key in getattr(fam, "FIXED", {}):
            fixed[key] = None
    return fixed


def channels_last_cv_predictions(table: LayerTable, family: str, base: Mapping[str, object],
                                 free: Optional[Sequence[str]], folds: int = 5, seed: int = 0):
    """(predicted, measured) ms of the usable channels-last rows, each predicted by refitting
    ``free`` (None: everything) on the other folds.

    Each fold's fit starts from ``base`` and stops at a relative loss change of 1e-6 (not 1e-8):
    the score describes the form, and the tighter stop costs many more evaluations for a MAPE
    0.1 point apart."""
    from .layers import take

    fam = get_family(family)
    ok = np.isfinite(table.time_ms) & (table.time_ms > 0)
    arrays, t = take(table.arrays, ok), table.time_ms[ok]
    fold = np.random.default_rng(seed).integers(0, folds, len(t))
    pred = np.zeros(len(t))
    fixed = channels_last_fixed(fam, base, free)
    for k in range(folds):
        train, test = fold != k, fold == k
        if train.any() and test.any():
            params = fit_parameters(fam, take(arrays, train), t[train], fixed, start=base, ftol=1e-6)
            pred[test] = fam.predict_ms(take(arrays, test), params)
    return pred, t


def channels_last_cv(table: LayerTable, family: str, base: Mapping[str, object],
                     free: Optional[Sequence[str]], folds: int = 5, seed: int = 0) -> float:
    """5-fold cross-validated MAPE (%) of refitting ``free`` (None: everything) on channels-last
    rows (channels_last_cv_predictions)."""
    pred, t = channels_last_cv_predictions(table, family, base, free, folds, seed)
    return float(np.mean(np.abs(pred / t - 1)) * 100)


def fit_channels_last(table: LayerTable, family: str, base: Mapping[str, object],
                      free: Union[str, Sequence[str], None] = "auto", cv: bool = True) -> Dict[str, object]:
    """The profile's 'channels_last' section: ``family``'s parameters ``base`` (the NCHW fit)
    with ``free`` refitted on channels-last Conv2d rows (None: all of them; "auto", the default:
    CHANNELS_LAST_FREE, or all for families without it). With ``cv`` and 40 rows or more the
    section records the refit's 5-fold cross-validated MAPE on these rows (``cv_mape_pct``).

    The free set was chosen by that CV against other sets and against refitting everything
    (benchmarks/compare_op_forms.py, docs/forms-ops.md). Until the per-tap latency joined it, a
    calibration chose between it and refitting everything by CV each time; refitting everything
    is no better on average over two calibrations, less stable, and its fit took up to 45 s of a
    calibration (benchmarks/channels_last_refit_choice.py)."""
    fam = get_family(family)
    if free == "auto":
        free = CHANNELS_LAST_FREE.get(family)
    free = tuple(free) if free is not None else None
    scores = None
    if cv and len(table) >= 40:
        scores = {"refit " + (", ".join(free) if free else "all"): channels_last_cv(table, family, base, free)}
    nhwc = fit_profile(table, family=family, name="channels_last", keep_data=False,
                       fixed=channels_last_fixed(fam, base, free), start=base)
    params = dict(nhwc.parameters, classes={c: dict(v) for c, v in nhwc.parameters["classes"].items()})
    # classes with no channels-last row (Linear) keep the NCHW values, and alpha keeps its time scale;
    # a class whose rows all have one tap (1x1) keeps the NCHW kernel power and per-tap latency,
    # which have no effect on it (the fit left them where they started)
    cls_of = fam.classify(table.arrays)
    for i, cls in enumerate(fam.classes):
        if not (cls_of == i).any():
            params["classes"][cls] = dict(base["classes"][cls])
        elif (table.arrays.K[cls_of == i] == 1).all():
            for name in fam.kernel_params:
                params["classes"][cls][name] = base["classes"][cls].get(name, fam.optional_params.get(name))
    params["time_scale_ms_per_mmac"] = base["time_scale_ms_per_mmac"]
    section = {"parameters": params, "fit": nhwc.provenance["fit"], "source": table.source,
               "n_measurements": nhwc.provenance["n_measurements"], "refitted": list(free or ["all"])}
    if scores is not None:
        section["cv_mape_pct"] = scores
    return section


def fit_profile(table: LayerTable, family: str = "paper", name: str = "fitted",
                provenance: Optional[Mapping[str, object]] = None,
                fixed: Optional[Mapping[str, float]] = None,
                keep_data: bool = True, start: Optional[Mapping[str, object]] = None,
                correction: Union[bool, Mapping[str, object]] = True,
                trees: Union[bool, Mapping[str, object]] = False) -> DeviceProfile:
    """Fit ``family`` to a measured layer table and return a profile.

    The profile's provenance gets the fit residuals, the number of
    measurements and a hash of the inputs; with ``keep_data`` the raw input
    columns are stored in the profile too, so the fit can be redone. ``correction``: the
    neighbour correction's settings (correction.py), True for the family's default (the axes
    family has one), False for none; it needs ``keep_data``, whose rows are its points.
    ``trees``: fit residual trees (trees.py; needs scikit-learn) with their default settings
    (True) or the settings given; False (or None) for none.
    """
    if table.time_ms is None:
        raise ValueError(f"{table.source}: no 'time_ms' column to fit")
    ok = np.isfinite(table.time_ms) & (table.time_ms > 0)
    if not ok.any():
        raise ValueError(f"{table.source}: no positive time_ms values to fit")
    from .layers import take

    arrays = take(table.arrays, ok)
    time_ms = table.time_ms[ok]
    fam = get_family(family)
    params = fit_parameters(fam, arrays, time_ms, fixed, start=start)
    pred = fam.predict_ms(arrays, params)
    digest = hashlib.sha256("\n".join(",".join(table.columns[h][i] for h in table.header)
                                      for i in range(len(table))).encode()).hexdigest()
    prov = {
        "device_name": "unknown",
        "dtype": "float32",
        "date": _dt.date.today().isoformat(),
        "source": table.source,
    }
    prov.update(provenance or {})
    prov["n_measurements"] = int(ok.sum())
    prov["inputs_sha256"] = digest
    prov["fit"] = residual_stats(pred, time_ms, fam.classify(arrays), fam.classes)
    fit_data = None
    if keep_data:
        fit_data = {"header": list(table.header),
                    "rows": [[table.columns[h][i] for h in table.header] for i in range(len(table))]}
    settings = None
    if correction is True:
        settings = copy.deepcopy(fam.correction) if keep_data and fam.correction else None
    elif correction is not False:
        if not keep_data:
            raise ValueError("a neighbour correction needs keep_data: its points are the fitted rows")
        check_correction(correction, "fit_profile")
        settings = copy.deepcopy(dict(correction))
    tree_section = None
    if trees:  # True: the default settings; a mapping: those
        from .trees import fit as fit_trees

        nchw = ~arrays.channels_last
        tree_section = fit_trees(take(arrays, nchw), np.log(time_ms[nchw] / pred[nchw]),
                                 None if trees is True else trees)
        if tree_section is None:
            from .trees import MIN_CLASS_ROWS

            warnings.warn(f"{table.source}: no layer class has {MIN_CLASS_ROWS} NCHW layers to fit residual "
                          "trees on; the profile has none", stacklevel=2)
    return DeviceProfile(name=name, family=family, parameters=params, provenance=prov,
                         fit_data=fit_data, schema_version=SCHEMA_VERSION, correction=settings,
                         trees=tree_section)
