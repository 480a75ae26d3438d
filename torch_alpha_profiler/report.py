"""Tables and exports of costed records, built in small pure stages.

Units: FLOPs are 2 x multiply-accumulates, shown in MFLOPs; alpha is
dimensionless; time is in milliseconds.
"""
from __future__ import annotations

import csv
import io
import json
import numbers
from dataclasses import asdict
from typing import Dict, List, Optional, Sequence

from .ops import OpRecord
from .records import LayerRecord, NotCosted

TABLE_HEADERS = ("module", "kind", "input shape", "MFLOPs (2xMAC)", "alpha",
                 "alpha-MFLOPs", "predicted ms", "% time")


def _layer_row(r: LayerRecord) -> dict:
    return {"name": r.name, "kind": r.kind, "shape": "x".join(map(str, r.input_shape)),
            "flops": r.flops, "alpha_flops": r.alpha_flops, "ms": r.predicted_ms}


def _op_row(o: OpRecord) -> dict:
    """An operation's row: its kind is its operator; alpha is a layer measure (NaN here);
    time is NaN when the profile cannot cost it."""
    return {"name": o.name, "kind": o.op.split(".")[0],
            "shape": "x".join(map(str, o.input_shapes[0])) if o.input_shapes else "",
            "flops": o.flops, "alpha_flops": float("nan"),
            "ms": o.predicted_ms if o.predicted_ms is not None else float("nan")}


def _rows_per_layer(records: Sequence[LayerRecord], ops: Sequence[OpRecord] = (),
                    layer_order: Optional[Sequence[int]] = None) -> List[dict]:
    """One row per call: layers, and ops merged in by call order (``layer_order``: each layer's)."""
    if not ops:
        return [_layer_row(r) for r in records]
    order = list(layer_order) if layer_order is not None else [-1] * len(records)
    keyed = [(k, _layer_row(r)) for k, r in zip(order, records)] + [(o.call_index, _op_row(o)) for o in ops]
    keyed.sort(key=lambda t: t[0])
    return [row for _, row in keyed]


def _nansum(values) -> float:
    return float(sum(v for v in values if v == v))


def _group_by_depth(rows: List[dict], depth: Optional[int]) -> List[dict]:
    """Merge rows whose names share the first ``depth`` components."""
    if depth is None:
        return rows
    merged: Dict[str, dict] = {}
    for row in rows:
        key = ".".join(row["name"].split(".")[:depth])
        if key in merged:
            acc = merged[key]
            acc["flops"] += row["flops"]
            acc["alpha_flops"] = _nansum((acc["alpha_flops"], row["alpha_flops"]))
            acc["ms"] = _nansum((acc["ms"], row["ms"]))
            if acc["kind"] != row["kind"]:
                acc["kind"] = "mixed"
            acc["shape"] = ""
        else:
            merged[key] = dict(row, name=key or "<model>")
    return list(merged.values())


def _top_k(rows: List[dict], k: Optional[int]) -> List[dict]:
    if k is None or k >= len(rows):
        return rows
    ranked = sorted(rows, key=lambda r: r["ms"] if r["ms"] == r["ms"] else -1.0, reverse=True)
    kept, rest = ranked[:k], ranked[k:]
    other = {"name": f"({len(rest)} others)", "kind": "", "shape": "",
             "flops": sum(r["flops"] for r in rest),
             "alpha_flops": _nansum(r["alpha_flops"] for r in rest),
             "ms": _nansum(r["ms"] for r in rest)}
    return kept + [other]


def _format(rows: List[dict], total_ms: float) -> List[list]:
    out = []
    for r in rows:
        alpha = r["alpha_flops"] / r["flops"] if r["flops"] else float("nan")
        share = 100.0 * r["ms"] / total_ms if total_ms else float("nan")
        out.append([r["name"], r["kind"], r["shape"], r["flops"] / 1e6, alpha,
                    r["alpha_flops"] / 1e6, r["ms"], share])
    return out


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _plain_table(body: List[list], headers: Sequence[str], floatfmt: Sequence[str],
                 colalign: Sequence[str]) -> Optional[str]:
    """``tabulate(body, headers, floatfmt=.., colalign=..)`` in its "simple" format, 8x faster.

    Text cells must be str and number cells int or float (as ``_format`` makes
    them). A number column holding only ints is printed as ints, as tabulate
    does. Returns None where tabulate's width rules could differ (non-ASCII or
    multi-line text), so the caller falls back to tabulate. resnet50: 0.2 ms
    instead of 1.8 ms, which was most of the profiler's own time on meta.
    """
    columns = []
    for j, (fmt, align) in enumerate(zip(floatfmt, colalign)):
        values = [row[j] for row in body]
        if all(isinstance(v, str) for v in values):
            cells = [v.strip() for v in values]
            if not all(c.isascii() and c.isprintable() for c in cells):
                return None
        elif all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
            cells = ([str(int(v)) for v in values] if all(_is_int(v) for v in values)
                     else [format(float(v), fmt) for v in values])
        else:
            return None
        width = max(len(headers[j]) + 2, max(map(len, cells)))
        pad = str.ljust if align == "left" else str.rjust
        columns.append([pad(headers[j], width), "-" * width] + [pad(c, width) for c in cells])
    return "\n".join("  ".join(line).rstrip() for line in zip(*columns))


def layer_table(records: Sequence[LayerRecord], depth: Optional[int] = None,
                top_k: Optional[int] = None, not_costed: Sequence[NotCosted] = (),
                ops: Sequence[OpRecord] = (), layer_order: Optional[Sequence[int]] = None) -> str:
    """A plain-text table: one row per call (or per module at ``depth``), then the total.

    With ``ops``, every other operation has a row too (its kind is its operator
    name); alpha is shown for Conv2d/Linear only, and the total's alpha-FLOPs
    are theirs.
    """
    rows = _rows_per_layer(records, ops, layer_order)
    total_ms = _nansum(r["ms"] for r in rows)
    rows = _top_k(_group_by_depth(rows, depth), top_k)
    body = _format(rows, total_ms)
    total_flops = sum(r.flops for r in records) + sum(o.flops for o in ops)
    total_alpha = sum(r.alpha_flops for r in records)
    body += _format([{"name": "total", "kind": "", "shape": "", "flops": total_flops,
                      "alpha_flops": total_alpha, "ms": total_ms}], total_ms)
    floatfmt = ("", "", "", ".2f", ".4f", ".2f", ".4f", ".1f")
    colalign = ("left", "left", "left", "right", "right", "right", "right", "right")
    text = _plain_table(body, TABLE_HEADERS, floatfmt, colalign)
    if text is None:
        from tabulate import tabulate

        text = tabulate(body, headers=TABLE_HEADERS, floatfmt=floatfmt, colalign=colalign)
    if not_costed:
        counts: Dict[str, int] = {}
        for n in not_costed:
            key = n.name if n.module_type == "operator" else n.module_type
            counts[key] = counts.get(key, 0) + n.calls
        text += "\nnot costed: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
    return text


def summary(records: Sequence[LayerRecord], profile, not_costed: Sequence[NotCosted] = (),
            ops: Sequence[OpRecord] = (), eager_ms: Optional[float] = None,
            energy_j: Optional[float] = None, grid_g_per_kwh: Optional[float] = None) -> Dict[str, object]:
    """Totals as a JSON-ready dict.

    ``predicted_ms`` is the GPU time of everything costed (``layers_ms`` +
    ``ops_ms``); ``eager_ms`` is null when the profile has no host costs;
    ``energy_j`` (per forward) and ``co2e_g`` are null when it has no power data.
    """
    from .energy import DEFAULT_GRID_G_PER_KWH, co2e_g

    grid = DEFAULT_GRID_G_PER_KWH if grid_g_per_kwh is None else grid_g_per_kwh
    layers_ms = float(sum(r.predicted_ms for r in records))
    ops_ms = _nansum(o.predicted_ms for o in ops if o.predicted_ms is not None)
    return {
        "profile": profile.name,
        "device": profile.device_name,
        "layers": len(records),
        "ops": len(ops),
        "macs": int(sum(r.macs for r in records)),
        "flops": int(sum(r.flops for r in records) + sum(o.flops for o in ops)),
        "alpha_flops": float(sum(r.alpha_flops for r in records)),
        "layers_ms": layers_ms,
        "ops_ms": ops_ms,
        "predicted_ms": layers_ms + ops_ms,
        "eager_ms": eager_ms,
        "energy_j": energy_j,
        "co2e_g": None if energy_j is None else co2e_g(energy_j, grid),
        "grid_g_per_kwh": grid,
        "bytes_moved": int(sum(o.nbytes for o in ops)),
        "not_costed": [asdict(n) for n in not_costed],
    }


def to_json(records: Sequence[LayerRecord], profile, not_costed: Sequence[NotCosted] = (),
            ops: Sequence[OpRecord] = (), eager_ms: Optional[float] = None,
            energy_j: Optional[float] = None, grid_g_per_kwh: Optional[float] = None) -> str:
    doc = summary(records, profile, not_costed, ops, eager_ms, energy_j, grid_g_per_kwh)
    doc["records"] = [asdict(r) for r in records]
    doc["op_records"] = [_op_json(o) for o in ops]
    return json.dumps(doc, indent=1)


def _op_json(o: OpRecord) -> dict:
    d = asdict(o)
    d["pieces"] = [asdict(p) for p in o.pieces]
    return d


# layer-table columns first (so the CSV can be fed back to `predict`), then the rest
CSV_COLUMNS = ("name", "kind", "module_type", "N", "Cin", "Cout", "H", "W", "K1", "K2", "stride",
               "groups", "padding", "dilation", "Hout", "Wout", "dtype", "device",
               "macs", "flops", "alpha", "alpha_flops", "predicted_ms")


def _csv_row(r: LayerRecord) -> list:
    def hw(p):
        return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"

    return [r.name, r.kind, r.module_type, r.batch, r.in_channels, r.out_channels, r.in_hw[0],
            r.in_hw[1], r.kernel[0], r.kernel[1], hw(r.stride), r.groups, "" if r.padding_same else hw(r.padding),
            hw(r.dilation), r.out_hw[0], r.out_hw[1], r.dtype, r.device,
            r.macs, r.flops, repr(r.alpha), repr(r.alpha_flops), repr(r.predicted_ms)]


OP_CSV_COLUMNS = ("name", "module_type", "op", "op_class", "input_shapes", "output_shapes", "dtype",
                  "bytes", "flops", "predicted_ms")


def to_csv(records: Sequence[LayerRecord]) -> str:
    """The Conv2d/Linear layers as a layer table (CSV_COLUMNS: ``predict`` reads it back)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in records:
        w.writerow(_csv_row(r))
    return buf.getvalue()


def ops_to_csv(ops: Sequence[OpRecord]) -> str:
    """The other operations, one row each (OP_CSV_COLUMNS; shapes joined by ';')."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(OP_CSV_COLUMNS)
    if ops:
        for o in ops:
            w.writerow([o.name, o.module_type, o.op, o.op_class,
                        ";".join("x".join(map(str, s)) for s in o.input_shapes),
                        ";".join("x".join(map(str, s)) for s in o.output_shapes), o.dtype, o.nbytes,
                        o.flops, "" if o.predicted_ms is None else repr(o.predicted_ms)])
    return buf.getvalue()


def to_dataframe(records: Sequence[LayerRecord], ops: Sequence[OpRecord] = ()):
    """Layers, then ops, one row each (columns of both records; missing ones are NaN)."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("to_dataframe() needs pandas: pip install pandas") from None
    rows = [dict(asdict(r), record="layer") for r in records]
    rows += [dict(asdict(o), record="op", pieces=len(o.pieces)) for o in ops]
    return pd.DataFrame(rows)
