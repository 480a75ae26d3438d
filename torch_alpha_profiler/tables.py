"""The layer-table CSV format shared by ``fit`` and ``predict``.

Columns ``kind,N,Cin,Cout,H,W,K1,K2,stride,groups[,padding][,dilation][,dtype][,time_ms]``;
only Cin, Cout, H, W, K1, K2 are required (defaults: kind Conv2d, N 1,
stride 1, groups 1). H, W are the input's spatial size. A row without
``padding`` is a 'same' convolution: its output is ceil(H/stride) x
ceil(W/stride). ``padding``, ``stride`` and ``dilation`` take one integer or
``AxB`` for (height, width). For Linear rows N is the number of rows and
Cin/Cout the features; the rest is 1. Other columns are passed through.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from .layers import LayerArrays, itemsize_of, make_arrays

REQUIRED = ("Cin", "Cout", "H", "W", "K1", "K2")
DEFAULTS = {"kind": "Conv2d", "N": "1", "stride": "1", "groups": "1", "dilation": "1"}
KINDS = ("Conv2d", "Linear")


class LayerTableError(ValueError):
    """A layer table is malformed; the message names the file, line and column."""


@dataclass(frozen=True)
class LayerTable:
    """A parsed layer table: geometry, measured times (if any) and the raw columns."""

    arrays: LayerArrays
    time_ms: Optional[np.ndarray]
    header: List[str]
    columns: Dict[str, List[str]]  # raw text per column, passed through by `predict`
    source: str = "<table>"

    def __len__(self) -> int:
        return len(self.arrays)


def _positive_ints(values: Sequence[str], name: str, source: str, allow_zero=False) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.int64) if values else np.zeros(0, np.int64)
        bad = arr < (0 if allow_zero else 1)
    except (ValueError, OverflowError):
        arr, bad = None, None
    if arr is None or bad.any():
        for i, v in enumerate(values):
            try:
                ok = int(v) >= (0 if allow_zero else 1)
            except ValueError:
                ok = False
            if not ok:
                what = "a non-negative" if allow_zero else "a positive"
                raise LayerTableError(
                    f"{source} line {i + 2}: column '{name}' must be {what} integer, got {v!r}")
    return arr


def _pairs(values: Sequence[str], name: str, source: str, allow_zero=False):
    """Columns that take 'A' or 'AxB': returns (height, width) int arrays."""
    if not any("x" in v for v in values):
        a = _positive_ints(values, name, source, allow_zero)
        return a, a
    hs, ws = [], []
    for v in values:
        h, _, w = v.partition("x")
        hs.append(h)
        ws.append(w or h)
    return (_positive_ints(hs, name, source, allow_zero), _positive_ints(ws, name, source, allow_zero))


def _out_size(size, k, stride, pad, dil, same):
    conv = (size + 2 * pad - dil * (k - 1) - 1) // stride + 1
    return np.where(same, -(-size // stride), conv)


def parse_layer_table(text: str, source: str = "<table>") -> LayerTable:
    """Parse a layer table from CSV text (see the module docstring)."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise LayerTableError(f"{source}: empty file, expected a header line") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise LayerTableError(f"{source}: missing required column(s) {', '.join(missing)} "
                              f"(header is {','.join(header)})")
    rows = list(reader)
    width = len(header)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise LayerTableError(f"{source} line {i + 2}: {len(row)} fields, expected {width}")
    columns = {h: [row[j].strip() for row in rows] for j, h in enumerate(header)} if rows else {h: [] for h in header}
    n = len(rows)

    def col(name):
        if name in columns:
            default = DEFAULTS.get(name)
            return [v or default for v in columns[name]] if default is not None else columns[name]
        return [DEFAULTS[name]] * n

    kinds = col("kind")
    bad = sorted(set(kinds) - set(KINDS))
    if bad:
        i = kinds.index(bad[0])
        raise LayerTableError(f"{source} line {i + 2}: column 'kind' must be one of "
                              f"{', '.join(KINDS)}, got {bad[0]!r}")
    is_linear = np.asarray(kinds) == "Linear" if n else np.zeros(0, bool)
    N = _positive_ints(col("N"), "N", source)
    Cin = _positive_ints(col("Cin"), "Cin", source)
    Cout = _positive_ints(col("Cout"), "Cout", source)
    H = _positive_ints(col("H"), "H", source)
    W = _positive_ints(col("W"), "W", source)
    K1 = _positive_ints(col("K1"), "K1", source)
    K2 = _positive_ints(col("K2"), "K2", source)
    sh, sw = _pairs(col("stride"), "stride", source)
    dh, dw = _pairs(col("dilation"), "dilation", source)
    groups = _positive_ints(col("groups"), "groups", source)
    if "padding" in columns:
        pad_text = columns["padding"]
        same = np.asarray([v == "" for v in pad_text], dtype=bool)
        ph, pw = _pairs([v or "0" for v in pad_text], "padding", source, allow_zero=True)
    else:
        same = np.ones(n, dtype=bool)
        ph = pw = np.zeros(n, dtype=np.int64)
    for name, arr in (("Cin", Cin), ("Cout", Cout)):
        bad_rows = np.nonzero(~is_linear & (arr % groups != 0))[0]
        if bad_rows.size:
            i = int(bad_rows[0])
            raise LayerTableError(f"{source} line {i + 2}: column '{name}' ({arr[i]}) is not "
                                  f"divisible by groups ({groups[i]})")
    Hout = _out_size(H, K1, sh, ph, dh, same)
    Wout = _out_size(W, K2, sw, pw, dw, same)
    bad_rows = np.nonzero(~is_linear & ((Hout < 1) | (Wout < 1)))[0]
    if bad_rows.size:
        i = int(bad_rows[0])
        raise LayerTableError(f"{source} line {i + 2}: kernel larger than the padded input")
    one = np.ones(n, dtype=np.int64)
    lin = is_linear
    itemsize = [itemsize_of(v) for v in columns["dtype"]] if "dtype" in columns else np.full(n, 4)
    arrays = make_arrays(
        is_linear=lin, N=N, Cin=Cin, Cout=Cout,
        Hin=np.where(lin, one, H), Win=np.where(lin, one, W),
        Hout=np.where(lin, one, Hout), Wout=np.where(lin, one, Wout),
        K1=np.where(lin, one, K1), K2=np.where(lin, one, K2),
        stride=np.where(lin, one, np.maximum(sh, sw)), groups=np.where(lin, one, groups),
        itemsize=itemsize,
    )
    time_ms = None
    if "time_ms" in columns:
        try:
            time_ms = np.asarray([float(v) if v else np.nan for v in columns["time_ms"]])
        except ValueError:
            for i, v in enumerate(columns["time_ms"]):
                try:
                    float(v)
                except ValueError:
                    raise LayerTableError(f"{source} line {i + 2}: column 'time_ms' must be a "
                                          f"number, got {v!r}") from None
    return LayerTable(arrays=arrays, time_ms=time_ms, header=header, columns=columns, source=source)


def read_layer_table(path: str) -> LayerTable:
    """Read and validate a layer-table CSV file."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise LayerTableError(f"{path}: cannot read ({e.strerror})") from None
    return parse_layer_table(text, source=path)


def write_predictions(table: LayerTable, costs, out) -> None:
    """Write ``table``'s columns plus flops, alpha, alpha_flops and predicted_ms to ``out``."""
    added = ("flops", "alpha", "alpha_flops", "predicted_ms")
    header = [h for h in table.header if h not in added] + list(added)
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    passthrough = [table.columns[h] for h in header[:-4]]
    new = [costs.flops.tolist(), np.char.mod("%.6g", costs.alpha).tolist(),
           np.char.mod("%.6g", costs.alpha_flops).tolist(),
           np.char.mod("%.6g", costs.predicted_ms).tolist()]
    w.writerows(zip(*passthrough, *new))
