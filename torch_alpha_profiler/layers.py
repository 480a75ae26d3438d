"""Column-wise layer geometry: the one input of every cost formula.

Records from a profiled model and rows of a layer-table CSV both become a
:class:`LayerArrays`, so costs are evaluated with numpy over all layers at
once. Output sizes are stored explicitly; a Linear layer is the K = 1,
H = W = 1 case with ``N`` rows.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterable, Sequence

import numpy as np

from .records import LayerRecord

KIND_CODES = {"Conv2d": 0, "Linear": 1}


@dataclass(frozen=True)
class LayerArrays:
    """Geometry of n layers, one int64 array per axis (all of length n)."""

    is_linear: np.ndarray  # bool
    N: np.ndarray  # batch (Conv2d) or rows (Linear)
    Cin: np.ndarray
    Cout: np.ndarray
    Hin: np.ndarray
    Win: np.ndarray
    Hout: np.ndarray
    Wout: np.ndarray
    K1: np.ndarray
    K2: np.ndarray
    stride: np.ndarray  # vertical stride (the larger of the two, for asymmetric strides)
    groups: np.ndarray
    itemsize: np.ndarray  # bytes per element of the layer's dtype
    channels_last: np.ndarray  # bool: a Conv2d whose input is in channels-last (NHWC) memory format

    def __len__(self) -> int:
        return int(self.N.shape[0])

    @property
    def S(self) -> np.ndarray:
        """Output positions incl. batch: S = N x H_out x W_out (paper Sec. 5 and 6.1)."""
        return self.N * self.Hout * self.Wout

    @property
    def K(self) -> np.ndarray:
        return self.K1 * self.K2

    @property
    def macs(self) -> np.ndarray:
        """Multiply-accumulates, eq. (4) / 2, with input channels per group."""
        return self.S * self.Cout * (self.Cin // self.groups) * self.K

    @property
    def nbytes(self) -> np.ndarray:
        """Bytes of the input, the output and the weights: the least a layer moves."""
        return self.itemsize * (self.N * self.Cin * self.Hin * self.Win + self.S * self.Cout
                                + self.Cout * (self.Cin // self.groups) * self.K)


def _i64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def make_arrays(**columns) -> LayerArrays:
    """Build LayerArrays from columns, filling itemsize with 4 (float32) and channels_last with
    False if absent."""
    n = len(columns["N"])
    columns.setdefault("itemsize", np.full(n, 4))
    columns.setdefault("channels_last", np.zeros(n, dtype=bool))
    out = {}
    for f in fields(LayerArrays):
        col = columns[f.name]
        out[f.name] = np.asarray(col, dtype=bool) if f.name in ("is_linear", "channels_last") else _i64(col)
    return LayerArrays(**out)


_ITEMSIZE = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2,
    "float8_e4m3fn": 1, "float8_e5m2": 1, "int8": 1, "uint8": 1,
}


def itemsize_of(dtype: str) -> int:
    return _ITEMSIZE.get(dtype.replace("torch.", ""), 4)


def from_records(records: Sequence[LayerRecord]) -> LayerArrays:
    """Geometry of profiled layer calls, in record order."""
    return make_arrays(
        is_linear=[r.kind == "Linear" for r in records],
        N=[r.batch for r in records],
        Cin=[r.in_channels for r in records],
        Cout=[r.out_channels for r in records],
        Hin=[r.in_hw[0] for r in records],
        Win=[r.in_hw[1] for r in records],
        Hout=[r.out_hw[0] for r in records],
        Wout=[r.out_hw[1] for r in records],
        K1=[r.kernel[0] for r in records],
        K2=[r.kernel[1] for r in records],
        stride=[max(r.stride) for r in records],
        groups=[r.groups for r in records],
        itemsize=[itemsize_of(r.dtype) for r in records],
        channels_last=[r.channels_last for r in records],
    )


def concat(parts: Iterable[LayerArrays]) -> LayerArrays:
    parts = list(parts)
    return LayerArrays(**{
        f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(LayerArrays)
    })


def take(arrays: LayerArrays, index) -> LayerArrays:
    """The layers selected by ``index`` (a boolean mask or integer indices)."""
    return LayerArrays(**{f.name: getattr(arrays, f.name)[index] for f in fields(LayerArrays)})
