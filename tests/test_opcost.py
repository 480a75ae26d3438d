"""opcost: stream, linear and matrix costs of captured operations, and the profile's 'ops'/'host' sections.

Stream costs grow with the bytes moved and fall to the per-call floor for tiny
ops; a 'linear' piece costs what a Linear layer of its geometry costs; ops a
profile has no class for get no time (None) and are named in not_costed();
corrupt op, host and channels-last sections are refused, naming the field.
"""
import copy
import dataclasses
import itertools
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from torch_alpha_profiler import AlphaProfiler
from torch_alpha_profiler import profile as profile_mod
from torch_alpha_profiler.capture import ModuleStack, OpCapture, to_records
from torch_alpha_profiler.cost import evaluate
from torch_alpha_profiler.layers import make_arrays
from torch_alpha_profiler.opcost import (MATRIX, STREAM_BOUNDS, STREAM_PARAMS, attach_op_costs, matrix_arrays,
                                         pieces_ms, stream_ms)
from torch_alpha_profiler.ops import Piece, piece_macs
from torch_alpha_profiler.profile import SCHEMA_VERSION, ProfileError, load_profile, profile_from_dict

from ophelpers import op_profile, stream_params


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    monkeypatch.setattr(profile_mod, "current_device_name", lambda: None)


NBYTES = np.logspace(0, 12, 241)  # 1 B to 1 TB


def _sample(rng, name, box):
    """A value inside ``box``, uniform (in log for log-fitted parameters)."""
    if box.log:
        return float(np.exp(rng.uniform(np.log(box.lo), np.log(box.hi))))
    return rng.uniform(box.lo, box.hi)


# ------------------------------------------------------------------ stream
def test_stream_ms_increases_with_bytes():
    rng = random.Random(0)
    sets = [stream_params()]
    for _ in range(200):
        p = {k: _sample(rng, k, STREAM_BOUNDS[k]) for k in STREAM_PARAMS}
        p["g"] = min(p["g"], 1.0)  # see test_stream_ms_is_monotone_over_the_whole_box
        sets.append(p)
    for p in sets:
        ms = stream_ms(NBYTES, p)
        assert np.all(np.isfinite(ms)) and np.all(ms >= p["t0_ms"])
        assert np.all(np.diff(ms) >= 0), p
        assert ms[-1] > ms[0]


def test_stream_ms_is_monotone_over_the_whole_box():
    p = stream_params(g=STREAM_BOUNDS["g"].hi)
    ms = stream_ms(NBYTES, p)
    assert np.all(np.diff(ms) >= 0)


@pytest.mark.parametrize("t0", [STREAM_BOUNDS["t0_ms"].lo, STREAM_BOUNDS["t0_ms"].init, 0.05])
def test_stream_ms_tends_to_t0_for_tiny_ops_and_to_bandwidth_for_large_ones(t0):
    p = stream_params(t0_ms=t0)
    extra = stream_ms(np.array([0.0, 1.0, 10.0, 100.0, 1000.0]), p) - t0
    assert np.all(np.diff(extra[1:]) > 0) and extra[1] < 1e-6  # under a nanosecond above t0 at 1 byte
    assert extra[0] == extra[1]  # nothing moved costs what 1 byte costs
    # far above the saturation and cache sizes: bytes / bandwidth
    big = 1e13
    assert float(stream_ms(np.array([big]), p)[0]) - t0 == pytest.approx(big / (p["bw_gb_per_s"] * 1e6), rel=1e-3)
    # halving the bandwidth doubles the time of a large op
    slow = dict(p, bw_gb_per_s=p["bw_gb_per_s"] / 2)
    assert (float(stream_ms(np.array([big]), slow)[0]) - t0) / (float(stream_ms(np.array([big]), p)[0]) - t0) \
        == pytest.approx(2.0, rel=1e-6)


def test_stream_ms_is_vectorized():
    p = stream_params()
    ms = stream_ms(NBYTES, p)
    assert ms.shape == NBYTES.shape
    assert [float(stream_ms(np.array([b]), p)[0]) for b in NBYTES[::40]] == pytest.approx(ms[::40].tolist(), rel=1e-15)


def test_outer_axis_slows_few_reductions_and_fades_for_many():
    p = stream_params(t0_ms=0.0, g=0.0, l2_ratio=1.0, g_inner=0.0, h_outer=200.0, g_outer=1.0)
    nbytes = np.full(4, 1e8)
    ms = stream_ms(nbytes, p, outer=np.array([16.0, 200.0, 1e6, 0.0]))
    base = 1e8 / (p["bw_gb_per_s"] * 1e6)
    # (1 + h / C): 16 channels take 13.5x the bandwidth time, 200 channels 2x, very many 1x;
    # outer 0 (an op without the axis) and a profile without the term are not slowed
    assert ms.tolist() == pytest.approx([base * 13.5, base * 2.0, base * (1 + 2e-4), base], rel=1e-9)
    old = {k: v for k, v in p.items() if k not in ("h_outer", "g_outer")}
    assert stream_ms(nbytes, old, outer=np.array([16.0] * 4)).tolist() == pytest.approx([base] * 4, rel=1e-12)


def test_batch_norm_records_its_channels_as_the_outer_axis():
    model = nn.Sequential(nn.BatchNorm2d(24), nn.ReLU())
    with AlphaProfiler(model, profile=op_profile(), scope="model") as prof:
        model(torch.randn(2, 24, 5, 5))
    pieces = {r.op.split(".")[0]: r.pieces[0] for r in prof.ops}
    bn = [p for name, p in pieces.items() if "batch_norm" in name]
    assert bn and bn[0].outer == 24 and bn[0].inner == 25
    assert all(p.outer == 0 for name, p in pieces.items() if "batch_norm" not in name)


def test_fit_ops_fits_the_outer_axis_only_for_the_operators_asked():
    from torch_alpha_profiler.opfit import fit_ops

    truth = stream_params(t0_ms=0.004, bw_gb_per_s=2500.0, g=0.0, h_bytes=1.0, l2_ratio=1.0, g_inner=0.0,
                          h_outer=150.0, g_outer=1.0)
    rows = []
    for n, c, hw in itertools.product((8, 32), (16, 32, 64, 128, 256, 512, 1024), (14, 28, 56, 112)):
        nbytes = 2 * n * c * hw * hw * 4
        ms = float(stream_ms(np.array([nbytes]), truth, outer=np.array([c]))[0])
        rows.append({"sweep": "t", "op": "batch_norm", "d0": str(n), "d1": str(c), "d2": str(hw), "d3": str(hw),
                     "cls": "norm", "ops": "native_batch_norm", "operator": "batch_norm", "nbytes": str(nbytes),
                     "inner": str(hw * hw), "time_ms": repr(ms), "status": "ok"})
    fitted = fit_ops(rows, outer_ops=("batch_norm",))["operators"]["batch_norm"]
    assert fitted["g_outer"] > 0.5 and 50 < fitted["h_outer"] ** fitted["g_outer"] < 500
    plain = fit_ops(rows)["operators"]["batch_norm"]  # forward fits: no outer term
    assert (plain["h_outer"], plain["g_outer"]) == (1.0, 0.0)


# ------------------------------------------------------------------ linear
@pytest.mark.parametrize("name,itemsize", [("h100-fp32", 4), ("h100-bf16", 2), ("t2000-paper", 4)])
def test_linear_piece_costs_what_a_linear_layer_costs(name, itemsize):
    profile = load_profile(name, warn_device=False)
    shapes = [(1, 768, 768), (197, 768, 3072), (8, 16, 7), (4096, 1024, 1000), (3, 51, 200)]
    pieces = [Piece("linear", m=m, k=k, n=n, itemsize=itemsize) for m, k, n in shapes]
    one = [1] * len(shapes)
    layers = make_arrays(is_linear=[True] * len(shapes), N=[s[0] for s in shapes], Cin=[s[1] for s in shapes],
                         Cout=[s[2] for s in shapes], Hin=one, Win=one, Hout=one, Wout=one, K1=one, K2=one,
                         stride=one, groups=one, itemsize=[itemsize] * len(shapes))
    want = evaluate(layers, profile).predicted_ms
    np.testing.assert_array_equal(pieces_ms(pieces, profile), want)
    assert np.all(want > 0)


# ------------------------------------------------------------------ matrix
def test_matrix_arrays_count_batch_m_k_n_macs():
    pieces = [Piece("matmul", batch=3, m=4, k=5, n=6), Piece("attention", batch=8, m=10, k=8, n=12),
              Piece("matmul", batch=1, m=197, k=64, n=197, itemsize=2),
              Piece("attention", batch=96, m=197, k=64, n=197)]
    a = matrix_arrays(pieces)
    assert a.macs.tolist() == [3 * 4 * 5 * 6, 2 * 8 * 10 * 8 * 12, 197 * 64 * 197, 2 * 96 * 197 * 64 * 197]
    assert a.macs.tolist() == [piece_macs(p) for p in pieces]
    assert a.groups.tolist() == [3, 8, 1, 96] and a.S.tolist() == [4, 10, 197, 197]
    assert (a.Cin // a.groups).tolist() == [5, 8, 64, 64] and (a.Cout // a.groups).tolist() == [6, 12, 197, 197]
    assert a.itemsize.tolist() == [4, 4, 2, 4] and a.is_linear.all()


def test_matmul_and_attention_pieces_use_their_own_parameters():
    profile = op_profile()
    slow = copy.deepcopy(profile.ops["matmul"])
    slow["classes"]["all"]["t0_ms"] = 0.5
    profile = dataclasses.replace(profile, ops=dict(profile.ops, matmul=slow))
    mm, att = Piece("matmul", batch=12, m=197, k=64, n=197), Piece("attention", batch=12, m=197, k=64, n=197)
    ms = pieces_ms([mm, att], profile)
    assert ms[0] == pytest.approx(MATRIX.predict_ms(matrix_arrays([mm]), slow)[0], rel=1e-12)
    assert ms[1] == pytest.approx(MATRIX.predict_ms(matrix_arrays([att]), profile.ops["attention"])[0], rel=1e-12)
    assert ms[0] > 0.5 > ms[1] > 0


# ------------------------------------------------------------ missing classes
def _captured(fn):
    stack = ModuleStack()
    stack.frames.append(("", "Test", False))
    mode = OpCapture(stack, itertools.count())
    with mode, torch.no_grad():
        fn()
    return to_records(mode.calls)


def _mixed():
    x, w, v = torch.randn(2, 4, 8, 8), torch.randn(4), torch.rand(4) + 1
    q = torch.randn(1, 2, 16, 8)
    a, b = torch.randn(3, 4, 5), torch.randn(3, 5, 6)
    lin = torch.randn(6, 8)

    def fn():
        torch.relu(x)
        F.batch_norm(x, w, v, training=False)
        torch.bmm(a, b)
        F.scaled_dot_product_attention(q, q, q)
        F.linear(x, lin)

    return fn


def test_attach_op_costs_gives_none_for_classes_the_profile_lacks():
    records = _captured(_mixed())
    assert [r.op_class for r in records] == ["elementwise", "norm", "matmul", "attention", "linear"]
    assert all(r.predicted_ms is None for r in records)
    full = attach_op_costs(records, op_profile())
    assert all(r.predicted_ms > 0 for r in full)
    partial = attach_op_costs(records, op_profile(stream=("elementwise",), matrix=("matmul",)))
    assert [r.predicted_ms is None for r in partial] == [False, True, False, True, False]
    assert [r.predicted_ms for r in partial if r.predicted_ms] == \
        [r.predicted_ms for r in full if r.op_class in ("elementwise", "matmul", "linear")]
    paper = attach_op_costs(records, load_profile("t2000-paper"))  # no op classes: linear only
    assert [r.predicted_ms is None for r in paper] == [True, True, True, True, False]
    assert attach_op_costs([], op_profile()) == []


def test_not_costed_names_the_class_and_the_profile():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            q = torch.relu(self.bn(x)).flatten(2)
            return F.scaled_dot_product_attention(q, q, q)

    model = Mixed().eval()
    profile = op_profile(name="partial", stream=("elementwise",), matrix=())
    with AlphaProfiler(model, profile=profile) as p, torch.no_grad():
        model(torch.randn(2, 4, 8, 8))
    assert [o.op_class for o in p.ops] == ["norm", "elementwise", "attention"]
    assert [o.predicted_ms is None for o in p.ops] == [True, False, True]
    missing = {n.name: n.reason for n in p.not_costed()}
    assert missing["native_batch_norm"] == "1 call(s); profile 'partial' has no 'norm' class"
    (sdpa,) = [name for name in missing if "scaled_dot_product" in name]
    assert missing[sdpa] == "1 call(s); profile 'partial' has no 'attention' class"
    assert len(missing) == 2 and all(n.module_type == "operator" for n in p.not_costed())
    assert p.ops_ms == pytest.approx(p.ops[1].predicted_ms)


def test_operator_parameters_take_precedence_over_their_class():
    profile = op_profile(stream=("elementwise",))
    own = stream_params(t0_ms=0.25)
    profile = dataclasses.replace(profile, ops=dict(profile.ops, operators={"relu": own}))
    x = torch.randn(2, 4, 8, 8)
    y = x.clone()
    (relu,), (add,), (relu_,) = (_captured(lambda: torch.relu(x)), _captured(lambda: x + x),
                                 _captured(lambda: torch.relu_(y)))
    ms = attach_op_costs([relu, add, relu_], profile)
    assert relu.pieces[0].op == relu_.pieces[0].op == "relu"  # in-place forms share parameters
    assert ms[0].predicted_ms == pytest.approx(float(stream_ms(np.array([relu.nbytes]), own)[0]), rel=1e-12)
    assert ms[2].predicted_ms == pytest.approx(ms[0].predicted_ms, rel=1e-12)
    cls = profile.ops["stream"]["elementwise"]
    assert ms[1].predicted_ms == pytest.approx(float(stream_ms(np.array([add.nbytes]), cls)[0]), rel=1e-12)
    # an operator with parameters is costed even where its class is not
    no_class = dataclasses.replace(profile, ops={"stream": {}, "operators": {"relu": own}})
    assert [r.predicted_ms is None for r in attach_op_costs([relu, add], no_class)] == [False, True]


# ---------------------------------------------------------------- validation
@pytest.fixture
def doc():
    return op_profile().to_dict()


def _set(path, value):
    def edit(d):
        *parents, last = path.split(".")
        for key in parents:
            d = d[key]
        if value is _DELETE:
            del d[last]
        else:
            d[last] = value
    return edit


class _Deleted:
    def __repr__(self):
        return "deleted"


_DELETE = _Deleted()

CORRUPT = [
    ("ops", [], "'ops' must be an object"),
    ("ops.stream", 3, "'ops.stream' must be an object"),
    ("ops.stream.blur", {}, "'ops.stream.blur' is not a stream class"),
    ("ops.stream.norm", 1.0, "'ops.stream.norm' must be an object"),
    ("ops.stream.elementwise.t0_ms", _DELETE, "ops.stream.elementwise: missing field 't0_ms'"),
    ("ops.stream.elementwise.bw_gb_per_s", "fast", "field 'bw_gb_per_s' must be a finite number"),
    ("ops.stream.reduce.t0_ms", -1.0, "field 'ops.stream.reduce.t0_ms' is -1.0, outside its valid range"),
    ("ops.stream.copy.g", float("nan"), "field 'g' must be a finite number"),
    ("ops.operators", [], "'ops.operators' must be an object"),
    ("ops.operators.relu", {"t0_ms": 1e-3}, "ops.operators.relu: missing field"),
    ("ops.matmul", {}, "'ops.matmul' must be an object with 'classes.all'"),
    ("ops.attention.classes.all.t0_ms", _DELETE, "ops.attention.classes.all: missing field 't0_ms'"),
    ("ops.matmul.classes.all.g_S", 5.0, "'parameters.classes.all.g_S' is 5.0, outside its valid range"),
    ("ops.matmul.tile", _DELETE, "ops.matmul: missing field 'tile'"),
    ("ops.l2_bytes", 0, "'ops.l2_bytes' must be positive"),
    ("ops.convolution", {}, "unknown field 'ops.convolution'"),
    ("host", [], "'host' must be an object with 'launch_us'"),
    ("host.launch_us", _DELETE, "'host' must be an object with 'launch_us'"),
    ("host.launch_us.conv", _DELETE, "host.launch_us: missing field 'conv'"),
    ("host.launch_us.norm", -1.0, "'host.launch_us.norm' must not be negative"),
    ("host.module_us", _DELETE, "host: missing field 'module_us'"),
    ("host.view_us", -0.5, "'host.view_us' must not be negative"),
    ("host.module_us", True, "field 'module_us' must be a finite number"),
    ("channels_last", 1, "'channels_last' must be an object with 'parameters'"),
    ("channels_last", {}, "'channels_last' must be an object with 'parameters'"),
]


@pytest.mark.parametrize("path,value,message", CORRUPT, ids=[f"{c[0]}={c[1]!r}"[:40] for c in CORRUPT])
def test_corrupt_sections_name_the_field(doc, path, value, message):
    doc.setdefault("ops", {}).setdefault("operators", {})
    doc["ops"]["l2_bytes"] = 50.0 * 2 ** 20
    profile_from_dict(copy.deepcopy(doc))  # valid before the edit
    _set(path, value)(doc)
    with pytest.raises(ProfileError) as e:
        profile_from_dict(doc, "p.json")
    assert str(e.value).startswith("p.json: ")
    assert message in str(e.value)


def test_corrupt_channels_last_parameters_name_the_field(doc):
    base = load_profile("h100-fp32", warn_device=False)
    doc["channels_last"] = {"parameters": copy.deepcopy(dict(base.parameters))}
    assert profile_from_dict(copy.deepcopy(doc)).channels_last is not None
    del doc["channels_last"]["parameters"]["classes"]["depthwise"]
    with pytest.raises(ProfileError, match=r"channels_last.parameters: missing object field "
                                           r"'parameters.classes.depthwise'"):
        profile_from_dict(doc)
    doc["channels_last"] = {"parameters": copy.deepcopy(dict(base.parameters))}
    doc["channels_last"]["parameters"]["classes"]["conv1x1"]["g_S"] = 9.0
    with pytest.raises(ProfileError, match=r"channels_last.parameters: field 'parameters.classes.conv1x1.g_S' "
                                           r"is 9.0, outside"):
        profile_from_dict(doc)


@pytest.mark.parametrize("section", ["ops", "host", "channels_last", "power", "train"])
def test_version_1_documents_cannot_carry_the_new_sections(doc, section):
    base = load_profile("h100-fp32", warn_device=False)
    doc["channels_last"] = {"parameters": dict(base.parameters)}
    v1 = {k: v for k, v in doc.items() if k not in ("ops", "host", "channels_last", "power", "train", "correction",
                                                "trees")}
    v1["schema_version"] = 1
    assert profile_from_dict(copy.deepcopy(v1)).schema_version == 1
    v1[section] = doc[section]
    with pytest.raises(ProfileError, match="need schema_version 2"):
        profile_from_dict(v1, "old.json")


def test_sections_survive_a_save_and_load(tmp_path):
    p = op_profile()
    p.save(str(tmp_path / "p.json"))
    q = load_profile(str(tmp_path / "p.json"))
    assert (q.schema_version, q.ops, q.host) == (SCHEMA_VERSION, p.ops, p.host)
    assert q.channels_last is None
