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

from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np
from scipy.spatial import cKDTree

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


def coordinates(arrays: LayerArrays) -> np.ndarray:
    """The (n, len(AXES)) coordinates of ``arrays``' layers, unscaled."""
    cin = arrays.Cin // arrays.groups
    cout = arrays.Cout // arrays.groups
    depthwise = arrays.Cin == arrays.groups  # one channel a group: alignment does not apply
    return np.column_stack([
        np.log2(arrays.N), np.log2(arrays.Hout * arrays.Wout), np.log2(cin), np.log2(cout),
        np.log2(arrays.groups), np.log2(arrays.K), np.log2(arrays.stride),
        ((cin * arrays.itemsize) % 16 != 0) & ~depthwise,
        ((cout * arrays.itemsize) % 16 != 0) & ~depthwise,
    ]).astype(np.float64)


@dataclass(frozen=True)
class NeighbourCorrection:
    """Calibration layers (scaled coordinates, class, log residual) and the kernel's settings."""

    points: np.ndarray  # (m, len(AXES)), divided by the scales
    classes: np.ndarray  # (m,) class index
    residuals: np.ndarray  # (m,) ln(measured / predicted)
    scales: np.ndarray  # (len(AXES),)
    bandwidth: float
    shrink: float
    trees: Mapping[int, cKDTree] = field(default_factory=dict, repr=False, compare=False)  # of each class's points

    def log_factor(self, arrays: LayerArrays, classes: np.ndarray) -> np.ndarray:
        """ln c of every layer of ``arrays`` (``classes``: their class indices)."""
        out = np.zeros(len(arrays))
        if len(arrays) == 0:
            return out
        # many layers of a model or table share a shape: weigh each distinct one once
        x, inverse = np.unique(np.column_stack([coordinates(arrays) / self.scales, classes]),
                               axis=0, return_inverse=True)
        factor = np.zeros(len(x))
        for c in np.unique(x[:, -1]).astype(np.int64):
            tree = self.trees.get(c)
            if tree is None:
                continue
            rows = np.flatnonzero(x[:, -1] == c)
            # the pairs closer than CUTOFF bandwidths, as a sparse (query, point) distance matrix
            d = cKDTree(x[rows, :-1]).sparse_distance_matrix(tree, CUTOFF * self.bandwidth,
                                                             output_type="coo_matrix")
            w = np.exp(-0.5 * (d.data / self.bandwidth) ** 2)
            r = self.residuals[self.classes == c]
            num = np.bincount(d.row, weights=w * r[d.col], minlength=len(rows))
            den = np.bincount(d.row, weights=w, minlength=len(rows))
            factor[rows] = num / (den + self.shrink)
        out[:] = factor[inverse.reshape(-1)]
        return out




def scales_of(settings: Mapping) -> np.ndarray:
    return np.array([float(settings["scales"][a]) for a in AXIS_NAMES])


def build(settings: Mapping, arrays: LayerArrays, time_ms: np.ndarray, predicted_ms: np.ndarray,
          classes: np.ndarray) -> NeighbourCorrection:
    """The correction of a profile's ``settings`` over calibration layers ``arrays`` measured at
    ``time_ms`` and predicted by the profile's formula at ``predicted_ms``."""
    scales = scales_of(settings)
    points, classes = coordinates(arrays) / scales, np.asarray(classes, dtype=np.int64)
    return NeighbourCorrection(points=points, classes=classes, residuals=np.log(time_ms / predicted_ms),
                               scales=scales, bandwidth=float(settings["bandwidth"]),
                               shrink=float(settings["shrink"]),
                               trees={int(c): cKDTree(points[classes == c]) for c in np.unique(classes)})


def check(settings, where: str) -> None:
    """Validate a profile's ``correction`` section; errors name the field."""
    from .profile import ProfileError

    if not isinstance(settings, Mapping):
        raise ProfileError(f"{where}: field 'correction' must be an object")
    if settings.get("method") != METHOD:
        raise ProfileError(f"{where}: field 'correction.method' is {settings.get('method')!r}; expected {METHOD!r}")
    for key, low in (("bandwidth", 0.0), ("shrink", None)):
        value = settings.get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
        if not ok or (value <= 0 if low is not None else value < 0):
            raise ProfileError(f"{where}: field 'correction.{key}' must be a number "
                               f"{'above 0' if low is not None else 'of at least 0'}, got {value!r}")
    scales = settings.get("scales")
    if not isinstance(scales, Mapping):
        raise ProfileError(f"{where}: field 'correction.scales' must be an object")
    for a in AXIS_NAMES:
        value = scales.get(a)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value) or value <= 0:
            raise ProfileError(f"{where}: field 'correction.scales.{a}' must be a number above 0, got {value!r}")


def from_profile(profile) -> Optional[NeighbourCorrection]:
    """The correction of ``profile`` (None where it has no ``correction`` section), built once
    from its ``fit_data`` and kept on the profile."""
    settings = profile.correction
    if settings is None:
        return None
    cached = profile.derived.get("correction")
    if cached is None:
        from .families import get_family
        from .tables import fit_data_table

        table = fit_data_table(profile)
        ok = np.isfinite(table.time_ms) & (table.time_ms > 0) & ~table.arrays.channels_last
        from .layers import take

        arrays = take(table.arrays, ok)
        family = get_family(profile.family)
        cached = build(settings, arrays, table.time_ms[ok], family.predict_ms(arrays, profile.parameters),
                       family.classify(arrays))
        profile.derived["correction"] = cached
    return cached
