"""Neighbour correction: the calibration's own measurements correct the formula near them.

cuDNN and cuBLAS choose a kernel shape by shape, so a layer's time is jagged across shapes where
the layer family is smooth (docs/model.md). Where a layer is close to calibrated layers of its
class, its predicted time is multiplied by the geometric mean of their measured / predicted
ratios, weighted by a Gaussian kernel of the distance and shrunk toward 1:

    ln c(x) = sum_i w_i r_i / (sum_i w_i + shrink),   w_i = exp(-d(x, x_i)^2 / (2 bandwidth^2))

(w_i = 0 beyond CUTOFF bandwidths) over the profile's calibration layers i of the same class, r_i = ln(measured_i / predicted_i)
under the profile's own parameters, and d the Euclidean distance over the coordinates below,
each divided by its scale. Far from every calibrated layer (sum w << shrink) c is 1: the formula
alone. Nothing is fitted here: the bandwidth, shrink and scales are chosen by cross-validation on
the calibration plan (docs/forms.md) and stored in the profile's ``correction`` section; the
points are the profile's ``fit_data``.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from .layers import LayerArrays

# coordinates of a layer, as (name, description)
AXES = (("N", "log2 batch (rows for Linear)"),
        ("HW", "log2 output positions of one image, H_out x W_out"),
        ("cin", "log2 input channels per group"),
        ("cout", "log2 output channels per group"),
        ("groups", "log2 groups"),
        ("K", "log2 kernel taps K1 x K2"),
        ("stride", "log2 stride"),
        ("mis_cin", "1 when a group's input-channel row is not a multiple of 16 bytes, else 0"),
        ("mis_cout", "1 when a group's output-channel row is not a multiple of 16 bytes, else 0"))
AXIS_NAMES = tuple(name for name, _ in AXES)
METHOD = "neighbours"
# chosen by 5-fold cross-validation on the H100 calibration plans (benchmarks/compare_forms.py)
DEFAULT = {"method": METHOD, "bandwidth": 0.75, "shrink": 0.05,
           "scales": {**{a: 1.0 for a in AXIS_NAMES}, "stride": 0.5, "mis_cin": 0.5, "mis_cout": 0.5}}
# the kernel is cut at this many bandwidths: a point farther away weighs exp(-8) or less, 0 here
CUTOFF = 4.0
# up to this many (layer, calibration layer) pairs of a class, distances are computed densely
DENSE_PAIRS = 200_000


def coordinates(arrays: LayerArrays) -> np.ndarray:
    """The (n, len(AXES)) coordinates of ``arrays``' layers, unscaled."""
    cin = arrays.Cin // arrays.groups
    cout = arrays.Cout // arrays.groups
    depthwise = arrays.Cin == arrays.groups  # one channel a group: alignment does not apply
    with np.errstate(divide="ignore"):  # a zero-sized axis: -inf, no coordinates (log_factor)
        return np.column_stack([
            np.log2(arrays.N), np.log2(arrays.Hout * arrays.Wout), np.log2(cin), np.log2(cout),
            np.log2(arrays.groups), np.log2(arrays.K), np.log2(arrays.stride),
            ((cin * arrays.itemsize) % 16 != 0) & ~depthwise,
            ((cout * arrays.itemsize) % 16 != 0) & ~depthwise,
        ]).astype(np.float64)


def _shape_keys(arrays: LayerArrays, classes: np.ndarray) -> np.ndarray:
    """The integers that :func:`coordinates` and the class are functions of, one column each:
    layers with equal rows have equal coordinates."""
    return np.column_stack([arrays.N, arrays.Hout * arrays.Wout, arrays.Cin, arrays.Cout, arrays.groups,
                            arrays.K, arrays.stride, arrays.itemsize, classes]).astype(np.int64)


def distinct_rows(keys: np.ndarray):
    """(first, inverse) of the distinct rows of a non-negative integer matrix: ``keys[first]``
    are the distinct rows and ``keys[first][inverse]`` is ``keys``. The columns are packed
    into as few 63-bit words as their largest values allow and sorted with ``np.lexsort``,
    several times faster than ``np.unique(axis=0)`` on a table of a million rows."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    words, word, used = [], np.zeros(n, dtype=np.int64), 0
    for col in keys.T:
        bits = max(int(col.max()).bit_length(), 1)
        if used + bits > 63:
            words.append(word)
            word, used = np.zeros(n, dtype=np.int64), 0
        word = (word << bits) | col
        used += bits
    words.append(word)
    order = np.lexsort(words[::-1])  # the last key is the primary one
    packed = np.column_stack(words)[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = (packed[1:] != packed[:-1]).any(axis=1)
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.cumsum(starts) - 1
    return order[starts], inverse


@dataclass(frozen=True)
class NeighbourCorrection:
    """Calibration layers (a k-d tree of their scaled coordinates and their log residuals, by
    class) and the kernel's settings; made by :func:`build`."""

    trees: Mapping[int, object]  # class index -> scipy cKDTree of its layers' scaled coordinates
    residuals: Mapping[int, np.ndarray]  # class index -> ln(measured / predicted), in tree order
    scales: np.ndarray  # (len(AXES),)
    bandwidth: float
    shrink: float

    def log_factor(self, arrays: LayerArrays, classes: np.ndarray) -> np.ndarray:
        """ln c of every layer of ``arrays`` (``classes``: their class indices); 0 for a layer of
        a class with no calibration layer, and for an empty one (a zero-sized axis)."""
        from scipy.spatial import cKDTree

        from .layers import take

        if len(arrays) == 0:
            return np.zeros(0)
        # many layers of a model or table share a shape: compute the coordinates of, and weigh,
        # each distinct one once
        first, inverse = distinct_rows(_shape_keys(arrays, classes))
        coords = coordinates(take(arrays, first))
        # an empty layer (a zero-sized axis) has no coordinates: no correction
        sized = np.isfinite(coords).all(axis=1)
        x = np.column_stack([np.where(sized[:, None], coords, 0.0) / self.scales, np.asarray(classes)[first]])
        factor = np.zeros(len(x))
        for c in np.unique(x[:, -1]).astype(np.int64):
            tree = self.trees.get(int(c))
            if tree is None:
                continue
            rows = np.flatnonzero(x[:, -1] == c)
            q, r = x[rows, :-1], self.residuals[int(c)]
            if len(rows) * tree.n <= DENSE_PAIRS:  # a model's few shapes: every pair at once
                d = np.sqrt(((q[:, None, :] - tree.data[None, :, :]) ** 2).sum(-1))
                w = np.where(d <= CUTOFF * self.bandwidth, np.exp(-0.5 * (d / self.bandwidth) ** 2), 0.0)
                num, den = (w * r).sum(1), w.sum(1)  # row by row: the same sums whatever other rows come along
            else:  # a large table: only the pairs closer than the cut, as a sparse distance matrix
                d = cKDTree(q).sparse_distance_matrix(tree, CUTOFF * self.bandwidth, output_type="coo_matrix")
                w = np.exp(-0.5 * (d.data / self.bandwidth) ** 2)
                num = np.bincount(d.row, weights=w * r[d.col], minlength=len(rows))
                den = np.bincount(d.row, weights=w, minlength=len(rows))
            factor[rows] = num / (den + self.shrink)
        factor[~sized] = 0.0
        return factor[inverse.reshape(-1)]


def build(settings: Mapping, arrays: LayerArrays, time_ms: np.ndarray, predicted_ms: np.ndarray,
          classes: np.ndarray) -> NeighbourCorrection:
    """The correction of a profile's ``settings`` over calibration layers ``arrays`` measured at
    ``time_ms`` and predicted by the profile's formula at ``predicted_ms``."""
    from scipy.spatial import cKDTree

    scales = np.array([float(settings["scales"][a]) for a in AXIS_NAMES])
    points, classes = coordinates(arrays) / scales, np.asarray(classes, dtype=np.int64)
    residuals = np.log(time_ms / predicted_ms)
    mine = {int(c): classes == c for c in np.unique(classes)}
    return NeighbourCorrection(trees={c: cKDTree(points[m]) for c, m in mine.items()},
                               residuals={c: residuals[m] for c, m in mine.items()}, scales=scales,
                               bandwidth=float(settings["bandwidth"]), shrink=float(settings["shrink"]))


def of_fit(settings: Mapping, family, params: Mapping, arrays: LayerArrays, time_ms: np.ndarray) -> NeighbourCorrection:
    """The correction of ``settings`` over layers ``arrays`` measured at ``time_ms``, with
    their residuals under ``family`` at ``params`` (a profile's fit, or a CV fold's)."""
    return build(settings, arrays, time_ms, family.predict_ms(arrays, params), family.classify(arrays))


def _positive_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))
            and value > 0)


def check(settings, where: str) -> None:
    """Validate a ``correction`` section (ProfileError naming the field)."""
    from .profile import ProfileError

    if not isinstance(settings, Mapping):
        raise ProfileError(f"{where}: field 'correction' must be an object")
    if settings.get("method") != METHOD:
        raise ProfileError(f"{where}: field 'correction.method' is {settings.get('method')!r}; expected {METHOD!r}")
    # a shrink above 0 keeps c at 1 where no calibration layer is near (0 / 0 otherwise)
    for key in ("bandwidth", "shrink"):
        if not _positive_number(settings.get(key)):
            raise ProfileError(f"{where}: field 'correction.{key}' must be a number above 0, "
                               f"got {settings.get(key)!r}")
    scales = settings.get("scales")
    if not isinstance(scales, Mapping):
        raise ProfileError(f"{where}: field 'correction.scales' must be an object")
    for a in AXIS_NAMES:
        if not _positive_number(scales.get(a)):
            raise ProfileError(f"{where}: field 'correction.scales.{a}' must be a number above 0, "
                               f"got {scales.get(a)!r}")


# corrections of built-in profiles built in this process, by _key: AlphaProfiler(model,
# profile="h100-fp32") loads the profile each time, and reuses its correction instead of rebuilding it
_BUILT: "OrderedDict[tuple, NeighbourCorrection]" = OrderedDict()
_KEEP = 8


def _key(profile) -> Optional[tuple]:
    """What the correction of a built-in profile depends on (its fit_data is the package's): its
    name, its formula's parameters, its settings and its residual trees (the correction's
    residuals are what they left); None for other profiles."""
    name = profile.derived.get("builtin")
    if name is None:
        return None
    return (name, json.dumps(profile.parameters, sort_keys=True, default=float),
            json.dumps(profile.correction, sort_keys=True, default=float),
            json.dumps(profile.trees, sort_keys=True, default=float))


def from_profile(profile) -> Optional[NeighbourCorrection]:
    """The correction of ``profile`` (None where it has no ``correction`` section), built from
    its ``fit_data`` and kept on the profile (for a built-in profile, once per process)."""
    settings = profile.correction
    if settings is None:
        return None
    cached = profile.derived.get("correction")
    if cached is not None:
        return cached
    key = _key(profile)
    cached = _BUILT.get(key) if key is not None else None
    if cached is None:
        from .families import get_family
        from .layers import take
        from .profile import ProfileError
        from .tables import LayerTableError, fit_data_table
        from .trees import of_profile

        try:
            table = fit_data_table(profile)
        except LayerTableError as e:
            raise ProfileError(f"profile {profile.name!r}: field 'fit_data', the correction's points: {e}") from None
        ok = np.isfinite(table.time_ms) & (table.time_ms > 0) & ~table.arrays.channels_last
        if not ok.any():
            raise ProfileError(f"profile {profile.name!r}: field 'fit_data' has no measured NCHW layer "
                               "for the correction")
        family, points = get_family(profile.family), take(table.arrays, ok)
        predicted = family.predict_ms(points, profile.parameters)
        trees = of_profile(profile)
        if trees is not None:  # the correction's residuals are what the trees left
            predicted = predicted * np.exp(trees.log_factor(points))
        cached = build(settings, points, table.time_ms[ok], predicted, family.classify(points))
        if key is not None:
            _BUILT[key] = cached
            while len(_BUILT) > _KEEP:
                _BUILT.popitem(last=False)
    profile.derived["correction"] = cached
    return cached
