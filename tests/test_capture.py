"""capture: every other operation of a forward pass, attributed to its innermost module, and its FLOPs.

Whole-model profiling (scope "model"): views and allocations are counted, not
recorded; ops inside Conv2d/Linear layers are left to the layer; unknown
operators are reported by name and count, never costed as 0; totals agree
with torch's FlopCounterMode; the hybrid, meta and CPU passes agree.
"""
import dataclasses
import itertools
from collections import Counter

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

from torch_alpha_profiler import AlphaProfiler
from torch_alpha_profiler import profile as profile_mod
from torch_alpha_profiler.capture import ModuleStack, OpCapture, to_records
from torch_alpha_profiler.ops import Piece, piece_macs

from ophelpers import one_thread, op_profile


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    monkeypatch.setattr(profile_mod, "current_device_name", lambda: None)


@pytest.fixture(scope="module")
def prof():
    return op_profile()


def run(model, *inputs, profile=None, scope="model"):
    profile = op_profile() if profile is None else profile
    with AlphaProfiler(model, profile=profile, scope=scope) as p, torch.no_grad():
        model(*inputs)
    return p


def ops_of(p):
    return [(o.name, o.module_type, o.op, o.op_class) for o in p.ops]


class Inner(nn.Module):
    def forward(self, x):
        return torch.relu(x) + 1


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Inner()

    def forward(self, x):
        return torch.sigmoid(self.inner(x))


class Net(nn.Module):
    """conv -> block (inner: relu, add; block: sigmoid) -> tanh and mean at the root -> linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.block = Block()
        self.head = nn.Linear(4, 5)

    def forward(self, x):
        y = torch.tanh(self.block(self.conv(x)))
        return self.head(y.mean((2, 3)))


def test_ops_are_attributed_to_the_innermost_module(prof):
    p = run(Net(), torch.randn(2, 3, 4, 4), profile=prof)
    assert ops_of(p) == [("block.inner", "Inner", "relu.default", "elementwise"),
                         ("block.inner", "Inner", "add.Tensor", "elementwise"),
                         ("block", "Block", "sigmoid.default", "elementwise"),
                         ("", "Net", "tanh.default", "elementwise"),
                         ("", "Net", "mean.dim", "reduce")]
    relu = p.ops[0]
    assert relu.input_shapes == ((2, 4, 4, 4),) and relu.output_shapes == ((2, 4, 4, 4),)
    assert relu.nbytes == 2 * 128 * 4  # 128 float32 read, 128 written
    assert p.ops[4].nbytes == 128 * 4 + 8 * 4  # mean over H, W: (2, 4) out
    assert all(o.flops == 0 and o.predicted_ms > 0 for o in p.ops)
    # one order for layers and ops: conv, the five ops, then the head
    assert [o.call_index for o in p.ops] == [1, 2, 3, 4, 5]
    assert [r.name for r in p.records] == ["conv", "head"]
    assert p.ops_ms == pytest.approx(sum(o.predicted_ms for o in p.ops))
    assert p.predicted_ms == pytest.approx(p.layers_ms + p.ops_ms)
    assert p.by_kind()["elementwise"]["calls"] == 4 and p.by_module()["block"]["calls"] == 3


def test_views_and_allocations_are_counted_not_recorded():
    stack = ModuleStack()
    stack.frames.append(("", "Test", False))
    mode = OpCapture(stack, itertools.count())
    x = torch.randn(2, 3, 4, 4)
    with mode:
        x.permute(0, 2, 3, 1)
        x.view(2, -1)
        torch.empty(3)
        torch.relu(x)
    assert [r.op for r in to_records(mode.calls)] == ["relu.default"]
    assert stack.view_calls == 3


def test_views_in_a_model_are_counted_and_only_the_copy_is_recorded():
    class Views(nn.Module):
        def forward(self, x):
            y = x.permute(0, 2, 3, 1)          # view
            z = torch.empty(3)                 # allocation
            y = y.reshape(2, -1)               # a copy (clone) and a view (_unsafe_view)
            return y.view(2, 4, -1), z         # view

    p = run(Views(), torch.randn(2, 3, 4, 4))
    assert ops_of(p) == [("", "Views", "clone.default", "copy")]
    assert p.ops[0].nbytes == 2 * 96 * 4
    assert p._stack.view_calls == 4


def test_ops_inside_conv2d_and_linear_are_left_to_the_layer():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(6, 5))  # the Linear acts on the last dim
    p = run(model, torch.randn(2, 3, 8, 8))
    assert [r.kind for r in p.records] == ["Conv2d", "Linear"]
    assert p.ops == [] and p.not_costed() == []
    assert p._stack.view_calls == 0  # the Linear's transposes and reshapes are its own


def test_functional_linear_is_a_linear_piece_costed_as_a_linear_layer(prof):
    class Functional(nn.Module):
        def __init__(self, bias):
            super().__init__()
            self.w = nn.Parameter(torch.randn(7, 16))
            self.b = nn.Parameter(torch.randn(7)) if bias else None

        def forward(self, x):
            return F.linear(x, self.w, self.b)

    x = torch.randn(2, 4, 16)
    layer = run(nn.Linear(16, 7), x, profile=prof).records[0]  # 8 rows, 16 -> 7
    for bias, op in ((False, "mm.default"), (True, "addmm.default")):
        p = run(Functional(bias), x, profile=prof)
        (o,) = p.ops
        assert (o.op, o.op_class) == (op, "linear")
        assert o.pieces == (Piece("linear", m=8, k=16, n=7, itemsize=4),)
        assert o.flops == layer.flops == 2 * 8 * 16 * 7
        assert o.predicted_ms == pytest.approx(layer.predicted_ms, rel=1e-12)
        assert p.total_flops == 2 * 8 * 16 * 7
    # every profile costs linear pieces, even one without op classes
    (o,) = run(Functional(False), x, profile="t2000-paper").ops
    assert o.predicted_ms is not None and o.predicted_ms > 0


def test_bmm_is_a_matmul_piece():
    class Bmm(nn.Module):
        def forward(self, a, b):
            return torch.bmm(a, b)

    p = run(Bmm(), torch.randn(3, 4, 5), torch.randn(3, 5, 6))
    (o,) = p.ops
    assert (o.op, o.op_class) == ("bmm.default", "matmul")
    assert o.pieces == (Piece("matmul", batch=3, m=4, k=5, n=6, itemsize=4),)
    assert o.flops == 2 * 3 * 4 * 5 * 6 == p.total_flops
    assert o.nbytes == (60 + 90 + 72) * 4
    assert o.predicted_ms > 0


class Unknown(nn.Module):
    """Two FFTs and a Conv1d: operators with no cost class."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(4, 4, 3)

    def forward(self, x):
        a = torch.fft.fft(x)
        b = torch.fft.fft(torch.relu(x))
        return a, b, self.c1(x)


def test_unknown_operators_are_reported_by_name_and_count_never_zero(prof):
    p = run(Unknown(), torch.randn(2, 4, 16), profile=prof)
    assert ops_of(p) == [("", "Unknown", "relu.default", "elementwise")]  # nothing costed as 0
    ops = {n.name: n.reason for n in p.not_costed() if n.module_type == "operator"}
    assert set(ops) == {"_fft_r2c"}
    assert ops["_fft_r2c"].startswith("2 call(s); no cost class")
    assert [n.calls for n in p.not_costed() if n.name == "_fft_r2c"] == [2]
    # the Conv1d is listed once, as a layer with no formula (its convolution is not an extra entry)
    assert [(n.name, n.module_type) for n in p.not_costed() if n.module_type != "operator"] == [("c1", "Conv1d")]
    assert p.predicted_ms == pytest.approx(p.ops[0].predicted_ms)


def test_an_uncosted_layer_call_is_listed_once():
    p = run(nn.Conv1d(4, 4, 3), torch.randn(2, 4, 16))
    assert len(p.not_costed()) == 1


def test_ops_outside_the_model_forward_are_not_recorded(prof):
    model = Net()
    x = torch.randn(2, 3, 4, 4)
    alone = run(model, x, profile=prof)
    with AlphaProfiler(model, profile=prof, scope="model") as p, torch.no_grad():
        torch.relu(x) * 2
        model(x)
        torch.cat([x, x]).sum()
    assert ops_of(p) == ops_of(alone)
    assert len(p.records) == len(alone.records)


def test_multihead_attention_is_one_op_of_known_pieces():
    class Attn(nn.Module):
        def __init__(self, **kw):
            super().__init__()
            self.attn = nn.MultiheadAttention(32, 4, **kw)

        def forward(self, q, k, v):
            return self.attn(q, k, v, need_weights=False)[0]

    x = torch.randn(2, 10, 32)  # batch 2, 10 tokens, embedding 32, 4 heads of 8
    p = run(Attn(batch_first=True), x, x, x)
    (o,) = p.ops
    assert (o.name, o.module_type, o.op, o.op_class) == ("attn", "MultiheadAttention", "multi_head_attention",
                                                         "attention")
    assert o.pieces == (Piece("linear", m=20, k=32, n=96), Piece("attention", batch=8, m=10, k=8, n=10),
                        Piece("linear", m=20, k=32, n=32))
    macs = 20 * 32 * 96 + 2 * 8 * 10 * 8 * 10 + 20 * 32 * 32
    assert o.flops == 2 * macs == 2 * sum(piece_macs(q) for q in o.pieces) == p.total_flops
    assert p.records == []  # in_proj is a bare weight; out_proj's weight is used functionally
    assert o.predicted_ms > 0

    # sequence first: (10, 2, 32) is the same work
    y = x.transpose(0, 1)
    (o2,) = run(Attn(), y, y, y).ops
    assert o2.pieces == o.pieces and o2.flops == o.flops

    # cross-attention with other key/value sizes: three input projections
    k, v = torch.randn(2, 7, 16), torch.randn(2, 7, 24)
    (o3,) = run(Attn(batch_first=True, kdim=16, vdim=24), x, k, v).ops
    assert o3.pieces == (Piece("linear", m=20, k=32, n=32), Piece("linear", m=14, k=16, n=32),
                         Piece("linear", m=14, k=24, n=32), Piece("attention", batch=8, m=10, k=8, n=7),
                         Piece("linear", m=20, k=32, n=32))
    assert o3.flops == 2 * sum(piece_macs(q) for q in o3.pieces)


@pytest.mark.parametrize("name", ["vit_b_16", "swin_t"])
def test_total_flops_equal_flop_counter_with_math_attention(name):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from torch_alpha_profiler.zoo import build_model

    model = build_model(name, device="meta")
    x = torch.zeros(1, 3, 224, 224, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):  # grad enabled: no fused fast path
        model(x)
    p = run(model, x, profile="t2000-paper")
    assert p.total_flops == counter.get_total_flops() > 0
    if name == "vit_b_16":
        assert p.total_flops == 35127656448
        assert [o.op for o in p.ops].count("multi_head_attention") == 12


def _summary(p, nbytes=True):
    return {"records": [(r.name, r.kind, r.input_shape, r.output_shape, r.channels_last) for r in p.records],
            "ops": Counter((o.name, o.op, o.op_class, o.input_shapes, o.output_shapes[0], o.flops)
                           + ((o.nbytes,) if nbytes else ()) for o in p.ops),
            "not_costed": sorted((n.name, n.reason) for n in p.not_costed()),
            "total_flops": p.total_flops}


@pytest.fixture(scope="module", params=["resnet18", "mobilenet_v3_small"])
def passes(request, prof):
    """One forward of the model in each pass of `alpha-profiler profile --device`."""
    from torch_alpha_profiler.cli import _profile_model

    with one_thread():
        return {dev: _profile_model(request.param, 1, (96, 96), prof, dev, "model")
                for dev in ("hybrid", "meta", "cpu")}


def test_hybrid_meta_and_cpu_passes_agree(passes):
    cpu = passes["cpu"]
    ref = _summary(cpu, nbytes=False)
    assert sum(ref["ops"].values()) > 40 and ref["records"]
    for dev in ("hybrid", "meta"):
        assert _summary(passes[dev], nbytes=False) == ref, dev
        assert len(passes[dev].ops) == len(cpu.ops)
        assert passes[dev].layers_ms == cpu.layers_ms
        assert passes[dev].predicted_ms == pytest.approx(cpu.predicted_ms, rel=1e-3)
    # the hybrid pass runs the cheap ops for real, on the CPU: everything is the CPU pass's
    assert _summary(passes["hybrid"]) == _summary(cpu)
    assert passes["hybrid"].predicted_ms == pytest.approx(cpu.predicted_ms, rel=1e-12)
    assert cpu.ops_ms > 0


def test_meta_pass_counts_the_same_bytes_as_the_cpu_pass(passes):
    assert _summary(passes["meta"]) == _summary(passes["cpu"])
    assert passes["meta"].ops_ms == pytest.approx(passes["cpu"].ops_ms, rel=1e-12)


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_and_dispatch_mode_are_gone_after_the_with_block():
    model = Net()
    x = torch.randn(2, 3, 4, 4)
    p = run(model, x)
    n_ops, n_records = len(p.ops), len(p.records)
    assert _hooks(model) == 0 and _get_current_dispatch_mode_stack() == []
    with torch.no_grad():
        model(x)
        torch.relu(x)
    assert len(p.ops) == n_ops and len(p.records) == n_records


def test_hooks_and_dispatch_mode_are_gone_when_the_forward_raises():
    class Fails(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block()

        def forward(self, x):
            self.block(x)
            raise ValueError("boom")

    model = Fails()
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="boom"):
        with AlphaProfiler(model, profile=op_profile(), scope="model") as p:
            model(x)
    assert _hooks(model) == 0 and _get_current_dispatch_mode_stack() == []
    assert [o.op for o in p.ops] == ["relu.default", "add.Tensor", "sigmoid.default"]
    with pytest.raises(ValueError):
        model(x)
    torch.relu(x)
    assert len(p.ops) == 3
    # the model can be profiled again
    with pytest.raises(ValueError):
        with AlphaProfiler(model, profile=op_profile(), scope="model") as again:
            model(x)
    assert len(again.ops) == 3


def test_scope_layers_records_no_ops(prof):
    p = run(Net(), torch.randn(2, 3, 4, 4), profile=prof, scope="layers")
    assert p.scope == "layers"
    assert [r.name for r in p.records] == ["conv", "head"]
    assert p.ops == [] and p.ops_ms == 0.0
    assert p.predicted_ms == pytest.approx(p.layers_ms)


def test_scope_auto_follows_the_profile(prof):
    model = Net()
    assert AlphaProfiler(model, profile="t2000-paper").scope == "layers"
    assert AlphaProfiler(model, profile=dataclasses.replace(prof, ops=None)).scope == "layers"
    assert AlphaProfiler(model, profile=prof).scope == "model"
    assert AlphaProfiler(model, profile="auto").scope == "model"  # resolved later, may cost ops
    p = run(model, torch.randn(2, 3, 4, 4), profile=prof, scope="auto")
    assert p.scope == "model" and len(p.ops) == 5
    p = run(model, torch.randn(2, 3, 4, 4), profile="t2000-paper", scope="auto")
    assert p.scope == "layers" and p.ops == []
    with pytest.raises(ValueError, match="scope"):
        AlphaProfiler(model, scope="everything")
