"""report: the layer table's stages and units, summary, JSON and CSV exports."""
import csv
import io
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from torch_alpha_profiler import AlphaProfiler, report
from torch_alpha_profiler.cost import evaluate
from torch_alpha_profiler.profile import load_profile
from torch_alpha_profiler.records import LayerRecord, NotCosted
from torch_alpha_profiler.tables import parse_layer_table


def rec(name, kind, flops, alpha_flops, ms, **kw):
    base = dict(name=name, kind=kind, module_type=kind, input_shape=(1, 2, 3, 3), output_shape=(1, 2, 3, 3),
                batch=1, in_channels=2, out_channels=2, macs=flops // 2, flops=flops,
                alpha=alpha_flops / flops, alpha_flops=alpha_flops, predicted_ms=ms, cost_class="k1")
    base.update(kw)
    return LayerRecord(**base)


RECORDS = [
    rec("a.x", "Conv2d", 2_000_000, 500_000.0, 3.0),
    rec("a.y", "Linear", 1_000_000, 1_000_000.0, 1.0, input_shape=(4, 16)),
    rec("b", "Conv2d", 4_000_000, 1_000_000.0, 4.0),
]  # total: 7 MFLOPs, 2.5 alpha-MFLOPs, 8 ms


def body(text):
    """{first cell: the row's cells} of a table (headers and rule dropped)."""
    rule = text.splitlines()[1]
    spans, start = [], None
    for i, ch in enumerate(rule + " "):
        if ch == "-" and start is None:
            start = i
        elif ch != "-" and start is not None:
            spans.append((start, i))
            start = None
    out = {}
    for line in text.splitlines()[2:]:
        if line.startswith("not costed"):
            continue
        cells = [line[a:b] for a, b in spans]
        out[cells[0].strip()] = cells
    return out, spans


def test_layer_table_values_and_units():
    rows, _ = body(report.layer_table(RECORDS))
    assert list(rows) == ["a.x", "a.y", "b", "total"]
    strip = lambda cells: [c.strip() for c in cells]  # noqa: E731
    # a.x: 2e6 FLOPs = 2.00 MFLOPs; alpha 0.5e6 / 2e6 = 0.2500; 0.50 alpha-MFLOPs; 3 ms of 8 = 37.5 %
    assert strip(rows["a.x"]) == ["a.x", "Conv2d", "1x2x3x3", "2.00", "0.2500", "0.50", "3.0000", "37.5"]
    assert strip(rows["a.y"]) == ["a.y", "Linear", "4x16", "1.00", "1.0000", "1.00", "1.0000", "12.5"]
    # total: 7 MFLOPs, alpha 2.5 / 7 = 0.3571, 8 ms, 100 %
    assert strip(rows["total"]) == ["total", "", "", "7.00", "0.3571", "2.50", "8.0000", "100.0"]


def test_numbers_right_aligned_text_left_aligned():
    rows, spans = body(report.layer_table(RECORDS))
    for cells in rows.values():
        for i, cell in enumerate(cells):
            if not cell.strip():
                continue
            if i < 3:
                assert cell == cell.strip().ljust(len(cell)), cell
            else:
                assert cell == cell.strip().rjust(len(cell)), cell


def test_headers_state_units():
    head = report.layer_table(RECORDS).splitlines()[0]
    assert "MFLOPs (2xMAC)" in head and "predicted ms" in head and "% time" in head
    assert report.TABLE_HEADERS[3] == "MFLOPs (2xMAC)"


def test_depth_groups_and_marks_mixed_kinds():
    rows, _ = body(report.layer_table(RECORDS, depth=1))
    assert list(rows) == ["a", "b", "total"]
    # a = a.x + a.y: 3.00 MFLOPs, alpha 1.5 / 3 = 0.5000, 4 ms = 50.0 %, kinds differ -> mixed, no shape
    assert [c.strip() for c in rows["a"]] == ["a", "mixed", "", "3.00", "0.5000", "1.50", "4.0000", "50.0"]


def test_top_k_folds_the_rest_into_one_row():
    rows, _ = body(report.layer_table(RECORDS, top_k=1))
    assert list(rows) == ["b", "(2 others)", "total"]
    # others = a.x + a.y: 3 MFLOPs, 1.5 alpha-MFLOPs, 4 ms
    assert [c.strip() for c in rows["(2 others)"]][3:] == ["3.00", "0.5000", "1.50", "4.0000", "50.0"]


def test_not_costed_footer_counts_by_type():
    nc = [NotCosted("c", "Conv1d", (1, 2, 3), "r"), NotCosted("d", "Conv1d", (1, 2, 3), "r"),
          NotCosted("e", "LSTM", (1, 2), "r")]
    text = report.layer_table(RECORDS, not_costed=nc)
    assert text.splitlines()[-1] == "not costed: Conv1d x2, LSTM x1"
    assert "not costed" not in report.layer_table(RECORDS)


def test_summary_and_json():
    prof = load_profile("t2000-paper", warn_device=False)
    s = report.summary(RECORDS, prof)
    # MACs = (2e6 + 1e6 + 4e6) / 2 = 3.5e6
    assert s == {"profile": "t2000-paper", "device": "Quadro T2000", "layers": 3, "ops": 0, "macs": 3_500_000,
                 "flops": 7_000_000, "alpha_flops": 2_500_000.0, "layers_ms": 8.0, "ops_ms": 0.0,
                 "predicted_ms": 8.0, "eager_ms": None, "energy_j": None, "co2e_g": None,
                 "grid_g_per_kwh": 480.0, "bytes_moved": 0, "not_costed": []}
    doc = json.loads(report.to_json(RECORDS, prof))
    assert [r["name"] for r in doc["records"]] == ["a.x", "a.y", "b"]
    assert doc["records"][1]["input_shape"] == [4, 16]


def test_csv_columns_and_pairs():
    r = rec("c", "Conv2d", 10, 5.0, 0.5, stride=(2, 1), padding=(1, 0), dilation=(2, 2), kernel=(3, 1))
    rows = list(csv.reader(io.StringIO(report.to_csv([r]))))
    assert tuple(rows[0]) == report.CSV_COLUMNS
    got = dict(zip(rows[0], rows[1]))
    assert (got["stride"], got["padding"], got["dilation"], got["K1"], got["K2"]) == ("2x1", "1x0", "2", "3", "1")
    assert float(got["predicted_ms"]) == 0.5 and got["flops"] == "10"


def test_to_dataframe_columns():
    pytest.importorskip("pandas")
    df = report.to_dataframe(RECORDS)
    assert list(df["name"]) == ["a.x", "a.y", "b"] and "predicted_ms" in df.columns


def _round_trip(model, x):
    """Profile, export CSV, read it back as a layer table: costs must agree row by row."""
    with AlphaProfiler(model, profile="t2000-paper") as p, torch.no_grad():
        model(x)
    table = parse_layer_table(p.to_csv(), "export.csv")
    costs = evaluate(table.arrays, p.profile)
    return p, costs


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_large", "convnext_tiny"])
def test_csv_export_feeds_back_into_predict(name):
    from torch_alpha_profiler.zoo import build_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, costs = _round_trip(build_model(name, "meta"), torch.empty(2, 3, 224, 224, device="meta"))
    assert costs.flops.tolist() == [r.flops for r in p.records]
    np.testing.assert_allclose(costs.predicted_ms, [r.predicted_ms for r in p.records], rtol=1e-12)


def test_csv_round_trip_same_padding_even_kernel():
    model = nn.Sequential(nn.Conv2d(3, 4, 2, padding="same"), nn.Conv2d(4, 4, 4, padding="same"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about even kernels with 'same'
        p, costs = _round_trip(model, torch.randn(1, 3, 8, 8))
    # 8x8 output each: 64 * 4 * 3 * 4 = 3072 and 64 * 4 * 4 * 16 = 16384 MACs
    assert [r.macs for r in p.records] == [3072, 16384]
    assert costs.macs.tolist() == [3072, 16384]
