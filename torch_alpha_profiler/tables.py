"""The layer-table CSV format shared by ``fit`` and ``predict``.

Columns ``kind,N,Cin,Cout,H,W,K1,K2,stride,groups[,padding][,dilation][,dtype][,layout][,time_ms]``;
only Cin, Cout, H, W, K1, K2 are required (defaults: kind Conv2d, N 1,
stride 1, groups 1). H, W are the input's spatial size. A row without
``padding`` is a 'same' convolution: its output is ceil(H/stride) x
ceil(W/stride). ``padding``, ``stride`` and ``dilation`` take one integer or
``AxB`` for (height, width). For Linear rows N is the number of rows and
Cin/Cout the features; the rest is 1. ``layout`` is the input's memory format
(empty or ``nchw``; ``nhwc`` or ``channels_last``). Other columns are passed through.
"""
from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from .layers import LayerArrays, itemsize_of, make_arrays

REQUIRED = ("Cin", "Cout", "H", "W", "K1", "K2")
DEFAULTS = {"kind": "Conv2d", "N": "1", "stride": "1", "groups": "1", "dilation": "1"}
KINDS = ("Conv2d", "Linear")
# optional 'layout' column: the input's memory format ('' is NCHW)
LAYOUTS = {"": False, "nchw": False, "nhwc": True, "channels_last": True}


class LayerTableError(ValueError):
    """A layer table is malformed; the message names the file, line and column. An error about
    one data row keeps it: ``source``, ``row`` (0-based, the file's line row + 2) and ``detail``
    (the message after the line), so a caller that built the table from other rows can name
    their own line."""

    def __init__(self, message: str, source: str = "", row: Optional[int] = None, detail: str = ""):
        super().__init__(message)
        self.source, self.row, self.detail = source, row, detail


def _row_error(source: str, i: int, detail: str) -> LayerTableError:
    """The error about data row ``i`` (0-based) of ``source``."""
    return LayerTableError(f"{source} line {i + 2}: {detail}", source=source, row=i, detail=detail)


@dataclass(frozen=True)
class LayerTable:
    """A parsed layer table: geometry, measured times (if any) and the raw columns."""

    arrays: LayerArrays
    time_ms: Optional[np.ndarray]
    header: List[str]
    columns: Mapping[str, List[str]]  # raw text per column, passed through by `predict`
    source: str = "<table>"
    # each data row's text as read, where that equals its cells joined by commas
    # (no quotes, no spaces): `predict` then appends to it instead of re-joining cells
    row_text: Optional[List[str]] = field(default=None, repr=False, compare=False)

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
                ok = (0 if allow_zero else 1) <= int(v) < 2 ** 63
            except ValueError:
                ok = False
            if not ok:
                what = "a non-negative" if allow_zero else "a positive"
                raise _row_error(source, i, f"column '{name}' must be {what} integer, got {v!r}")
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


class _TextColumns:
    """Cells of a table by column name, as stripped text: the reference parser."""

    def __init__(self, header: List[str], columns: Mapping[str, List[str]], n: int, source: str):
        self.header, self.columns, self.n, self.source = header, columns, n, source
        self.row_text: Optional[List[str]] = None

    @classmethod
    def from_text(cls, text: str, source: str) -> "_TextColumns":
        reader = csv.reader(io.StringIO(text))
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise LayerTableError(f"{source}: empty file, expected a header line") from None
        _check_required(header, source)
        rows = list(reader)
        width = len(header)
        for i, row in enumerate(rows):
            if len(row) != width:
                raise _row_error(source, i, f"{len(row)} fields, expected {width}")
        columns = ({h: [row[j].strip() for row in rows] for j, h in enumerate(header)} if rows
                   else {h: [] for h in header})
        return cls(header, columns, len(rows), source)

    def text(self, name: str) -> List[str]:
        """The column's cells, empty ones (or the whole column, if absent) given DEFAULTS."""
        if name in self.columns:
            default = DEFAULTS.get(name)
            values = self.columns[name]
            return [v or default for v in values] if default is not None else values
        return [DEFAULTS[name]] * self.n

    def ints(self, name: str, allow_zero=False) -> np.ndarray:
        return _positive_ints(self.text(name), name, self.source, allow_zero)

    def pairs(self, name: str, allow_zero=False, empty: Optional[str] = None):
        values = self.text(name)
        if empty is not None:
            values = [v or empty for v in values]
        return _pairs(values, name, self.source, allow_zero)

    def is_empty(self, name: str) -> np.ndarray:
        return np.asarray([v == "" for v in self.columns[name]], dtype=bool)

    def categories(self, name: str):
        """(distinct values, index of each cell's value among them)."""
        values = self.text(name)
        distinct = sorted(set(values))
        index = {v: i for i, v in enumerate(distinct)}
        return distinct, np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))

    def floats(self, name: str) -> np.ndarray:
        values = self.columns[name]
        try:
            return np.asarray([float(v) if v else np.nan for v in values], dtype=np.float64)
        except ValueError:
            for i, v in enumerate(values):
                try:
                    float(v)
                except ValueError:
                    raise _row_error(self.source, i, f"column '{name}' must be a number, got {v!r}") from None
            raise


class _LazyColumns(Mapping):
    """Raw text per column, split out of the table's text only when first read."""

    def __init__(self, header: List[str], body: str):
        self._header, self._body, self._columns = header, body, None

    def _load(self) -> Dict[str, List[str]]:
        if self._columns is None:
            width = len(self._header)
            cells = self._body.replace("\n", ",").split(",")
            self._columns = {h: cells[j::width] for j, h in enumerate(self._header)}
            self._body = None
        return self._columns

    def __getitem__(self, name):
        return self._load()[name]

    def __contains__(self, name):
        return name in self._header

    def __iter__(self):
        return iter(dict.fromkeys(self._header))

    def __len__(self):
        return len(dict.fromkeys(self._header))


_PAD = 32  # widest cell parsed with numpy; wider ones go to the reference code
# byte lookup tables: one pass over the bytes instead of one per comparison
_UNPLAIN = np.ones(256, dtype=bool)  # bytes that send a file to the reference parser
_UNPLAIN[33:127] = False
_UNPLAIN[[ord("\n")]] = False
_UNPLAIN[[ord('"')]] = True
_SEPARATOR = np.zeros(256, dtype=bool)
_SEPARATOR[[ord(","), ord("\n")]] = True
_NOT_DIGIT = 255
_DIGIT = np.full(256, _NOT_DIGIT, dtype=np.uint8)  # byte -> digit value; 0 is padding
_DIGIT[0] = 0
_DIGIT[ord("0"):ord("9") + 1] = np.arange(10)


class _ByteColumns(_TextColumns):
    """The fast parser: cells located once with numpy, decoded column by column.

    Only for plain files (printable ASCII without quotes or spaces, every row
    as wide as the header); anything else goes to :class:`_TextColumns`.
    Each column is parsed with numpy where its cells are plain digits, else
    through its distinct values, else by the reference code, so values and
    error messages are the reference parser's.
    """

    def __init__(self, header, columns, n, source, body: np.ndarray, starts, ends, row_text):
        super().__init__(header, columns, n, source)
        # the body between _PAD zero bytes, so that fixed-width windows never run off it
        self._b = np.concatenate([np.zeros(_PAD, np.uint8), body, np.zeros(_PAD, np.uint8)])
        self._starts, self._ends = starts, ends
        self._index = {h: j for j, h in enumerate(header)}  # the last of duplicate names, as csv
        self.row_text = row_text

    @classmethod
    def from_bytes(cls, data: bytes, text: str, source: str) -> Optional["_ByteColumns"]:
        cut = data.find(b"\n")
        if cut < 0 or cut + 1 == len(data):
            return None
        header = data[:cut].decode("utf-8", errors="replace").split(",")
        if any(c not in header for c in REQUIRED):
            return None
        width = len(header)
        full = np.frombuffer(data, dtype=np.uint8)
        # printable ASCII only: no quotes, nothing that str.strip() would remove
        if _UNPLAIN[full].any():
            return None
        b = full[cut + 1:]
        if b[-1] != ord("\n"):
            b = np.append(b, np.uint8(ord("\n")))
        offset = np.int32 if b.size < 2**31 else np.int64  # halves the offsets' memory
        seps = np.flatnonzero(_SEPARATOR[b]).astype(offset)
        newlines = np.flatnonzero(b == ord("\n")).astype(offset)
        n = newlines.size
        if seps.size != n * width or not np.array_equal(seps[width - 1::width], newlines):
            return None  # ragged rows or blank lines: the reference parser names the line
        ends = seps.reshape(n, width)
        starts = np.empty_like(ends)
        starts[:, 1:] = ends[:, :-1] + 1
        starts[0, 0] = 0
        starts[1:, 0] = newlines[:-1] + 1
        body_text = text[text.index("\n") + 1:]
        if body_text.endswith("\n"):
            body_text = body_text[:-1]
        row_text = body_text.split("\n")
        if len(row_text) != n:
            return None
        return cls(header, _LazyColumns(header, body_text), n, source, b, starts, ends, row_text)

    def _cells(self, name: str, right: bool = False):
        """Column ``name`` as an (n, width) uint8 array, zero-padded on the right (or on the
        left, ``right=True``), and each cell's length; None for cells wider than _PAD."""
        j = self._index[name]
        start, end = self._starts[:, j], self._ends[:, j]
        length = end - start
        width = max(int(length.max()), 1)
        if width > _PAD:
            return None, length
        # one row gather from a window view instead of n x width element indices
        windows = np.lib.stride_tricks.sliding_window_view(self._b, width)
        cells = windows[(end - width if right else start) + _PAD]
        pos = np.arange(width)
        inside = pos >= (width - length)[:, None] if right else pos < length[:, None]
        cells *= inside
        return cells, length

    def _digits(self, name: str, allow_zero: bool, empty: Optional[str] = None) -> Optional[np.ndarray]:
        """Column ``name`` as int64 where every cell is plain digits (empty ones: ``empty`` or
        the default), else None."""
        cells, length = self._cells(name, right=True)
        if cells is None or cells.shape[1] > 18:
            return None
        digits = _DIGIT[cells]  # the left padding (byte 0) reads as a leading zero
        if (digits == _NOT_DIGIT).any():
            return None
        value = digits[:, 0].astype(np.int64)
        for k in range(1, digits.shape[1]):
            value = value * 10 + digits[:, k]
        blank = length == 0
        if blank.any():
            default = DEFAULTS.get(name) if empty is None else empty
            if default is None:
                return None
            value[blank] = int(default)
        if (value < (0 if allow_zero else 1)).any():
            return None
        return value

    def _distinct(self, name: str, empty: Optional[str] = None):
        """(distinct cell texts, empty cells given DEFAULTS or ``empty``; index of each cell's),
        or None for cells wider than _PAD."""
        cells, _ = self._cells(name)
        if cells is None:
            return None
        if cells.shape[1] <= 8:
            keys = np.zeros((self.n, 8), dtype=np.uint8)
            keys[:, :cells.shape[1]] = cells
            keys = keys.view(np.uint64).ravel()
        else:
            keys = np.ascontiguousarray(cells).view(f"S{cells.shape[1]}").ravel()
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        fill = DEFAULTS.get(name, "") if empty is None else empty
        distinct = [bytes(cells[i]).rstrip(b"\0").decode("ascii") or fill for i in first.tolist()]
        return distinct, inverse.ravel()

    def ints(self, name, allow_zero=False):
        if name in self.columns:
            value = self._digits(name, allow_zero)
            if value is not None:
                return value
        return super().ints(name, allow_zero)

    def pairs(self, name, allow_zero=False, empty=None):
        if name in self.columns:
            value = self._digits(name, allow_zero, empty)
            if value is not None:
                return value, value
            found = self._distinct(name, empty)
            if found is not None:
                distinct, inverse = found
                try:
                    h, w = _pairs(distinct, name, self.source, allow_zero)
                    return h[inverse], w[inverse]
                except LayerTableError:
                    pass  # the reference parser names the first bad line
        return super().pairs(name, allow_zero, empty)

    def is_empty(self, name):
        j = self._index[name]
        return self._ends[:, j] == self._starts[:, j]

    def categories(self, name):
        found = self._distinct(name) if name in self.columns else None
        if found is None:
            return super().categories(name)
        distinct, inverse = found
        # the reference's order: sorted distinct values (several keys can share a default)
        order = sorted(set(distinct))
        remap = np.asarray([order.index(v) for v in distinct], dtype=np.int64)
        return order, remap[inverse]


def _check_required(header: List[str], source: str) -> None:
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise LayerTableError(f"{source}: missing required column(s) {', '.join(missing)} "
                              f"(header is {','.join(header)})")


def _categorical(cols, name: str, allowed, expected: str, source: str):
    """(distinct values, index per row) of column ``name``; a value not in ``allowed`` is an error
    naming its first line and what was ``expected``."""
    distinct, index = cols.categories(name)
    bad = sorted(set(distinct) - set(allowed))
    if bad:
        i = int(np.flatnonzero(index == distinct.index(bad[0]))[0])
        raise _row_error(source, i, f"column '{name}' must be {expected}, got {bad[0]!r}")
    return distinct, index


def _parse(text: str, data: bytes, source: str) -> LayerTable:
    cols = _ByteColumns.from_bytes(data, text, source) or _TextColumns.from_text(text, source)
    n, source = cols.n, cols.source
    distinct, kind = _categorical(cols, "kind", KINDS, f"one of {', '.join(KINDS)}", source)
    is_linear = (kind == distinct.index("Linear")) if "Linear" in distinct else np.zeros(n, bool)
    N = cols.ints("N")
    Cin = cols.ints("Cin")
    Cout = cols.ints("Cout")
    H = cols.ints("H")
    W = cols.ints("W")
    K1 = cols.ints("K1")
    K2 = cols.ints("K2")
    sh, sw = cols.pairs("stride")
    dh, dw = cols.pairs("dilation")
    groups = cols.ints("groups")
    if "padding" in cols.columns:
        same = cols.is_empty("padding")
        ph, pw = cols.pairs("padding", allow_zero=True, empty="0")
    else:
        same = np.ones(n, dtype=bool)
        ph = pw = np.zeros(n, dtype=np.int64)
    for name, arr in (("Cin", Cin), ("Cout", Cout)):
        bad_rows = np.nonzero(~is_linear & (arr % groups != 0))[0]
        if bad_rows.size:
            i = int(bad_rows[0])
            raise _row_error(source, i, f"column '{name}' ({arr[i]}) is not divisible by groups ({groups[i]})")
    Hout = _out_size(H, K1, sh, ph, dh, same)
    Wout = _out_size(W, K2, sw, pw, dw, same)
    bad_rows = np.nonzero(~is_linear & ((Hout < 1) | (Wout < 1)))[0]
    if bad_rows.size:
        i = int(bad_rows[0])
        raise _row_error(source, i, "kernel larger than the padded input")
    one = np.ones(n, dtype=np.int64)
    lin = is_linear
    if "dtype" in cols.columns:
        distinct, index = cols.categories("dtype")
        itemsize = np.asarray([itemsize_of(v) for v in distinct], dtype=np.int64)[index]
    else:
        itemsize = np.full(n, 4)
    arrays = make_arrays(
        is_linear=lin, N=N, Cin=Cin, Cout=Cout,
        Hin=np.where(lin, one, H), Win=np.where(lin, one, W),
        Hout=np.where(lin, one, Hout), Wout=np.where(lin, one, Wout),
        K1=np.where(lin, one, K1), K2=np.where(lin, one, K2),
        stride=np.where(lin, one, np.maximum(sh, sw)), groups=np.where(lin, one, groups),
        itemsize=itemsize,
    )
    too_big = np.nonzero(arrays.S.astype(np.float64) * arrays.Cout * (arrays.Cin // arrays.groups)
                         * arrays.K >= 2.0 ** 62)[0]
    if too_big.size:
        i = int(too_big[0])
        raise _row_error(source, i, "the layer's multiply-accumulates overflow 64-bit integers; check its sizes")
    if "layout" in cols.columns:
        distinct, index = _categorical(cols, "layout", LAYOUTS,
                                       f"empty or one of {', '.join(v for v in LAYOUTS if v)}", source)
        nhwc = np.asarray([LAYOUTS[v] for v in distinct], dtype=bool)[index] & ~is_linear
        arrays = dataclasses.replace(arrays, channels_last=nhwc)
    time_ms = cols.floats("time_ms") if "time_ms" in cols.columns else None
    return LayerTable(arrays=arrays, time_ms=time_ms, header=cols.header, columns=cols.columns,
                      source=source, row_text=cols.row_text)


def with_default_dtype(table: LayerTable, dtype: str) -> LayerTable:
    """``table`` with element sizes of ``dtype`` when it has no ``dtype`` column of its own."""
    import dataclasses

    if "dtype" in table.header:
        return table
    sizes = np.full(len(table), itemsize_of(dtype), dtype=np.int64)
    return dataclasses.replace(table, arrays=dataclasses.replace(table.arrays, itemsize=sizes))


def parse_layer_table(text: str, source: str = "<table>") -> LayerTable:
    """Parse a layer table from CSV text (see the module docstring)."""
    return _parse(text, text.encode("utf-8"), source)


def concat_tables(tables: Sequence[LayerTable]) -> LayerTable:
    """One table of the rows of ``tables``, in order; they must have the same columns."""
    first = tables[0]
    for t in tables[1:]:
        if t.header != first.header:
            raise LayerTableError(f"{t.source}: its columns ({','.join(t.header)}) are not those of "
                                  f"{first.source} ({','.join(first.header)})", source=t.source)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(first.header)
    for t in tables:
        writer.writerows(zip(*(t.columns[h] for h in t.header)))
    return parse_layer_table(buf.getvalue(), " + ".join(t.source for t in tables))


def fit_data_table(profile) -> LayerTable:
    """The layer table a profile was fitted on, from its ``fit_data`` (rows without a ``dtype``
    column take the profile's)."""
    data = profile.fit_data
    if data is None:
        raise ValueError(f"profile {profile.name!r} keeps no fit_data")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(data["header"])
    writer.writerows(data["rows"])
    return with_default_dtype(parse_layer_table(buf.getvalue(), f"profile {profile.name!r} fit_data"), profile.dtype)


def read_layer_table(path: str) -> LayerTable:
    """Read and validate a layer-table CSV file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise LayerTableError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LayerTableError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return _parse(text, data, path)


PREDICTED = ("flops", "alpha", "alpha_flops", "predicted_ms")
_BLOCK = 1 << 16  # rows formatted and written at a time


def write_predictions(table: LayerTable, costs, out) -> None:
    """Write ``table``'s columns plus flops, alpha, alpha_flops and predicted_ms to ``out``."""
    header = [h for h in table.header if h not in PREDICTED] + list(PREDICTED)
    new = (costs.flops.tolist(), costs.alpha.tolist(), costs.alpha_flops.tolist(),
           costs.predicted_ms.tolist())
    if table.row_text is not None and header[:-4] == table.header:
        # rows as read, then the predictions: what csv.writer would write for these cells
        out.write(",".join(header) + "\n")
        row = "%s,%d,%.6g,%.6g,%.6g\n".__mod__
        for i in range(0, len(table), _BLOCK):
            part = slice(i, i + _BLOCK)
            out.write("".join(map(row, zip(table.row_text[part], *(c[part] for c in new)))))
        return
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    passthrough = [table.columns[h] for h in header[:-4]]
    g6 = "%.6g".__mod__
    w.writerows(zip(*passthrough, new[0], map(g6, new[1]), map(g6, new[2]), map(g6, new[3])))
