"""tables: the layer-table CSV (defaults, output sizes, AxB forms, Linear rows, errors, predictions)."""
import csv
import io

import numpy as np
import pytest

from torch_alpha_profiler.cost import evaluate
from torch_alpha_profiler.profile import load_profile
from torch_alpha_profiler.tables import LayerTableError, parse_layer_table, read_layer_table, write_predictions

HEAD = "Cin,Cout,H,W,K1,K2"


def one(text):
    t = parse_layer_table(text, "t.csv")
    assert len(t) == 1
    return t.arrays


def out_hw(a):
    return int(a.Hout[0]), int(a.Wout[0])


def test_defaults():
    a = one(f"{HEAD}\n8,16,7,7,3,3\n")
    assert a.is_linear.tolist() == [False]  # kind Conv2d
    assert (a.N[0], a.stride[0], a.groups[0], a.itemsize[0]) == (1, 1, 1, 4)
    assert out_hw(a) == (7, 7)  # no padding column: 'same'
    # MACs = 7 * 7 * 16 * 8 * 9 = 56448
    assert a.macs.tolist() == [56448]


def test_empty_cells_take_the_defaults():
    a = one("kind,N,Cin,Cout,H,W,K1,K2,stride,groups,dilation\n,,8,16,7,7,3,3,,,\n")
    assert (a.is_linear[0], a.N[0], a.stride[0], a.groups[0]) == (False, 1, 1, 1)


def test_header_and_cells_are_stripped():
    a = one(" Cin , Cout ,H, W,K1,K2 \n 8 , 16 ,7,7 ,3,3\n")
    assert (a.Cin[0], a.Cout[0]) == (8, 16)


@pytest.mark.parametrize("H, K, stride, expected", [
    (7, 3, 1, 7), (7, 3, 2, 4),   # ceil(7 / 2) = 4
    (7, 2, 1, 7), (7, 4, 2, 4),   # even kernels: still ceil(H / stride)
    (8, 2, 2, 4), (1, 3, 2, 1), (224, 7, 2, 112), (5, 1, 3, 2),  # ceil(5 / 3) = 2
])
def test_same_output_is_ceil_H_over_stride(H, K, stride, expected):
    a = one(f"{HEAD},stride\n8,8,{H},{H},{K},{K},{stride}\n")
    assert out_hw(a) == (expected, expected)


@pytest.mark.parametrize("H, K, stride, pad, expected", [
    (7, 3, 1, 0, 5),      # (7 + 0 - 2 - 1) // 1 + 1 = 5
    (7, 3, 2, 1, 4),      # (7 + 2 - 2 - 1) // 2 + 1 = 4
    (7, 3, 2, 0, 3),      # (7 - 2 - 1) // 2 + 1 = 3
    (224, 7, 2, 3, 112),  # (224 + 6 - 6 - 1) // 2 + 1 = 112
    (224, 4, 4, 0, 56),   # (224 - 3 - 1) // 4 + 1 = 56 (ConvNeXt stem)
])
def test_explicit_padding(H, K, stride, pad, expected):
    a = one(f"{HEAD},stride,padding\n8,8,{H},{H},{K},{K},{stride},{pad}\n")
    assert out_hw(a) == (expected, expected)


def test_empty_padding_cell_means_same():
    t = parse_layer_table(f"{HEAD},padding\n8,8,7,7,3,3,\n8,8,7,7,3,3,0\n")
    assert t.arrays.Hout.tolist() == [7, 5]


def test_dilation():
    # (7 + 2*2 - 2*(3 - 1) - 1) // 1 + 1 = 7 ; with padding 0: 7 - 4 - 1 + 1 = 3
    t = parse_layer_table(f"{HEAD},padding,dilation\n8,8,7,7,3,3,2,2\n8,8,7,7,3,3,0,2\n")
    assert t.arrays.Hout.tolist() == [7, 3]


def test_AxB_forms():
    a = one(f"{HEAD},stride,padding,dilation\n8,8,7,9,3,3,2x1,1x0,1x2\n")
    # H: (7 + 2 - 2 - 1) // 2 + 1 = 4 ; W: (9 + 0 - 2*2 - 1) // 1 + 1 = 5
    assert out_hw(a) == (4, 5)
    assert a.stride.tolist() == [2]  # the larger of 2x1
    b = one(f"{HEAD},stride\n8,8,7,7,3,1,1x2\n")
    assert out_hw(b) == (7, 4) and b.stride.tolist() == [2]  # same: ceil(7/1), ceil(7/2)
    c = one(f"{HEAD},padding\n8,8,7,7,3,3,1x\n")  # 'Ax' means AxA
    assert out_hw(c) == (7, 7)


def test_AxB_column_mixes_with_plain_values():
    t = parse_layer_table(f"{HEAD},stride\n8,8,7,7,3,3,2\n8,8,7,7,3,3,1x2\n")
    assert t.arrays.Hout.tolist() == [4, 7] and t.arrays.Wout.tolist() == [4, 4]


def test_linear_rows():
    t = parse_layer_table("kind,N,Cin,Cout,H,W,K1,K2,groups\nLinear,5,8,16,1,1,1,1,1\n"
                          "Linear,3,8,6,7,7,3,3,4\nConv2d,1,8,16,7,7,3,3,1\n")
    a = t.arrays
    assert a.is_linear.tolist() == [True, True, False]
    # geometry of Linear rows is forced to 1 (and groups ignored): MACs = N * Cout * Cin
    assert a.Hout.tolist()[:2] == [1, 1] and a.K.tolist()[:2] == [1, 1] and a.groups.tolist()[:2] == [1, 1]
    # 5 * 16 * 8 = 640 ; 3 * 6 * 8 = 144 ; 49 * 16 * 8 * 9 = 56448
    assert a.macs.tolist() == [640, 144, 56448]


def test_dtype_sets_itemsize():
    t = parse_layer_table(f"{HEAD},dtype\n8,8,7,7,3,3,bfloat16\n8,8,7,7,3,3,float32\n")
    assert t.arrays.itemsize.tolist() == [2, 4]


def test_time_ms_column():
    t = parse_layer_table(f"{HEAD},time_ms\n8,8,7,7,3,3,0.25\n8,8,7,7,3,3,\n")
    assert t.time_ms[0] == 0.25 and np.isnan(t.time_ms[1])
    assert parse_layer_table(f"{HEAD}\n8,8,7,7,3,3\n").time_ms is None


def test_other_columns_are_kept_as_text():
    t = parse_layer_table(f"name,{HEAD},note\nstem,8,8,7,7,3,3,first layer\n")
    assert t.header == ["name", "Cin", "Cout", "H", "W", "K1", "K2", "note"]
    assert t.columns["name"] == ["stem"] and t.columns["note"] == ["first layer"]


def test_header_only_is_an_empty_table():
    t = parse_layer_table(f"{HEAD}\n")
    assert len(t) == 0 and len(t.arrays.macs) == 0


# (csv text, substrings the error must contain)
BAD = {
    "non-integer": (f"{HEAD}\n8,8,8,8,3,3.5\n", ["t.csv line 2", "'K2'", "'3.5'", "integer"]),
    "non-integer on line 3": (f"{HEAD}\n8,8,8,8,3,3\n8,x8,8,8,3,3\n", ["t.csv line 3", "'Cout'", "'x8'"]),
    "zero channels": (f"{HEAD}\n0,8,8,8,3,3\n", ["line 2", "'Cin'", "positive"]),
    "empty required cell": (f"{HEAD}\n8,8,,8,3,3\n", ["line 2", "'H'", "''"]),
    "missing required column": ("Cin,Cout,H,W,K1\n8,8,8,8,3\n", ["t.csv", "missing required column", "K2"]),
    "wrong field count": (f"{HEAD}\n8,8,8,8,3,3\n8,8,8,8,3\n", ["t.csv line 3", "5 fields, expected 6"]),
    "too many fields": (f"{HEAD}\n8,8,8,8,3,3,1\n", ["line 2", "7 fields, expected 6"]),
    "bad kind": (f"kind,{HEAD}\nConv2d,8,8,8,8,3,3\nconv,8,8,8,8,3,3\n",
                 ["line 3", "'kind'", "Conv2d, Linear", "'conv'"]),
    "Cout not divisible by groups": (f"{HEAD},groups\n8,6,8,8,3,3,4\n",
                                     ["line 2", "'Cout'", "(6)", "groups (4)"]),
    "Cin not divisible by groups": (f"{HEAD},groups\n8,8,8,8,3,3,4\n6,8,8,8,3,3,4\n",
                                    ["line 3", "'Cin'", "(6)", "groups (4)"]),
    "bad time": (f"{HEAD},time_ms\n8,8,8,8,3,3,fast\n", ["line 2", "'time_ms'", "'fast'"]),
    "kernel larger than input": (f"{HEAD},padding\n8,8,4,4,7,7,0\n", ["line 2", "kernel larger"]),
    "negative padding": (f"{HEAD},padding\n8,8,4,4,3,3,-1\n", ["line 2", "'padding'", "non-negative"]),
    "zero stride": (f"{HEAD},stride\n8,8,4,4,3,3,0\n", ["line 2", "'stride'", "positive"]),
    "bad AxB": (f"{HEAD},stride\n8,8,4,4,3,3,2xa\n", ["line 2", "'stride'", "'a'"]),
    "empty file": ("", ["t.csv", "empty file"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_tables_name_line_and_column(case):
    text, needles = BAD[case]
    with pytest.raises(LayerTableError) as info:
        parse_layer_table(text, "t.csv")
    msg = str(info.value)
    assert msg.startswith("t.csv") and "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_integer_overflow_is_a_table_error():
    with pytest.raises(LayerTableError, match="'Cin'"):
        parse_layer_table(f"{HEAD}\n99999999999999999999,8,8,8,3,3\n", "t.csv")


def test_read_layer_table_missing_file(tmp_path):
    path = str(tmp_path / "nope.csv")
    with pytest.raises(LayerTableError, match="nope.csv: cannot read"):
        read_layer_table(path)


def test_read_layer_table_names_the_file(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(f"{HEAD}\n8,8,8,8,3\n")
    with pytest.raises(LayerTableError, match=r"bad.csv line 2"):
        read_layer_table(str(path))


def test_write_predictions_passes_columns_through():
    text = ("name,kind,N,Cin,Cout,H,W,K1,K2,time_ms,note\n"
            "stem,Conv2d,1,8,16,7,7,3,3,0.5,first\n"
            "fc,Linear,5,8,16,1,1,1,1,,last\n")
    table = parse_layer_table(text)
    costs = evaluate(table.arrays, load_profile("t2000-paper", warn_device=False))
    buf = io.StringIO()
    write_predictions(table, costs, buf)
    rows = list(csv.reader(io.StringIO(buf.getvalue())))
    assert rows[0] == ["name", "kind", "N", "Cin", "Cout", "H", "W", "K1", "K2", "time_ms", "note",
                       "flops", "alpha", "alpha_flops", "predicted_ms"]
    assert rows[1][:11] == ["stem", "Conv2d", "1", "8", "16", "7", "7", "3", "3", "0.5", "first"]
    assert rows[2][:11] == ["fc", "Linear", "5", "8", "16", "1", "1", "1", "1", "", "last"]
    # FLOPs: 2 * 49 * 16 * 8 * 9 = 112896 ; 2 * 5 * 16 * 8 = 1280
    assert [r[11] for r in rows[1:]] == ["112896", "1280"]
    assert float(rows[1][14]) == pytest.approx(costs.predicted_ms[0], rel=1e-5)  # %.6g
    assert len(rows) == 3


def test_write_predictions_replaces_old_prediction_columns():
    table = parse_layer_table(f"{HEAD},flops,predicted_ms,tag\n8,8,7,7,1,1,1,2,x\n")
    costs = evaluate(table.arrays, load_profile("t2000-paper", warn_device=False))
    buf = io.StringIO()
    write_predictions(table, costs, buf)
    rows = list(csv.reader(io.StringIO(buf.getvalue())))
    assert rows[0] == ["Cin", "Cout", "H", "W", "K1", "K2", "tag", "flops", "alpha", "alpha_flops",
                       "predicted_ms"]
    assert rows[1][6:8] == ["x", "6272"]  # 2 * 49 * 8 * 8 = 6272
