"""profiler: hooks, records, hook hygiene, aggregation, exports, and FLOPs vs torch's FlopCounterMode."""
import csv
import io
import json

import pytest
import torch
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from torch_alpha_profiler import AlphaProfiler
from torch_alpha_profiler import profile as profile_mod


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    # keep device warnings out of these tests on machines with a GPU
    monkeypatch.setattr(profile_mod, "current_device_name", lambda: None)


class MyConv(nn.Conv2d):
    """A user subclass: must be found through the MRO."""


class TinyNet(nn.Module):
    """(2, 3, 8, 8) -> conv (2, 8, 4, 4) -> depthwise (2, 8, 4, 4) -> flatten -> linear (2, 10)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.dw = MyConv(8, 8, (3, 1), padding=(1, 0), groups=8, bias=False)
        self.head = nn.Sequential(nn.Flatten(), NonDynamicallyQuantizableLinear(128, 10))

    def forward(self, x):
        return self.head(torch.relu(self.dw(self.conv(x))))


# MACs = S * Cout * Cin/groups * K
CONV_MACS = 2 * 4 * 4 * 8 * 3 * 9   # 32 * 8 * 3 * 9 = 6912
DW_MACS = 2 * 4 * 4 * 8 * 1 * 3     # 32 * 8 * 1 * 3 = 768
HEAD_MACS = 2 * 10 * 128            # 2560
TINY_FLOPS = 2 * (CONV_MACS + DW_MACS + HEAD_MACS)  # 2 * 10240 = 20480


def run(model, *inputs, profile="t2000-paper"):
    with AlphaProfiler(model, profile=profile) as p, torch.no_grad():
        model(*inputs)
    return p


@pytest.fixture
def tiny():
    return run(TinyNet(), torch.randn(2, 3, 8, 8))


def test_records_every_conv2d_and_linear_with_fields(tiny):
    conv, dw, head = tiny.records
    assert [r.name for r in tiny.records] == ["conv", "dw", "head.1"]
    assert [r.kind for r in tiny.records] == ["Conv2d", "Conv2d", "Linear"]
    assert [r.module_type for r in tiny.records] == ["Conv2d", "MyConv", "NonDynamicallyQuantizableLinear"]
    assert (conv.input_shape, conv.output_shape, conv.batch) == ((2, 3, 8, 8), (2, 8, 4, 4), 2)
    assert (conv.kernel, conv.stride, conv.padding, conv.dilation, conv.groups) == (
        (3, 3), (2, 2), (1, 1), (1, 1), 1)
    assert (dw.kernel, dw.stride, dw.padding, dw.groups, dw.bias) == ((3, 1), (1, 1), (1, 0), 8, False)
    assert (head.input_shape, head.output_shape, head.batch) == ((2, 128), (2, 10), 2)
    assert all(r.dtype == "float32" and r.device == "cpu" for r in tiny.records)
    assert [r.call_index for r in tiny.records] == [0, 1, 2]
    assert [r.macs for r in tiny.records] == [CONV_MACS, DW_MACS, HEAD_MACS]


def test_totals(tiny):
    assert tiny.total_macs == 10240
    assert tiny.total_flops == TINY_FLOPS == 20480
    assert tiny.total_alpha_flops == pytest.approx(sum(r.alpha * r.flops for r in tiny.records))
    assert tiny.total_alpha_flops < tiny.total_flops  # alpha < 1 for every layer here
    assert tiny.predicted_ms == pytest.approx(sum(r.predicted_ms for r in tiny.records))


def test_linear_batch_is_product_of_leading_dims():
    lin = nn.Linear(4, 6)
    p = run(lin, torch.randn(2, 3, 5, 4))
    (r,) = p.records
    # rows = 2 * 3 * 5 = 30; MACs = 30 * 6 * 4 = 720; FLOPs = 1440
    assert (r.name, r.batch, r.input_shape, r.output_shape) == ("", 30, (2, 3, 5, 4), (2, 3, 5, 6))
    assert (r.macs, r.flops) == (720, 1440)


def test_linear_at_batch_1_has_alpha_1():
    p = run(nn.Linear(64, 32), torch.randn(1, 64))
    assert p.records[0].alpha == 1.0
    # 0.0375 ms/MMAC * 64 * 32 / 1e6 = 7.68e-05 ms
    assert p.predicted_ms == pytest.approx(7.68e-05, rel=1e-12)


def test_meta_device_gives_the_same_records_as_cpu():
    cpu = run(TinyNet(), torch.randn(2, 3, 8, 8))
    meta_model = TinyNet().to("meta")
    meta = run(meta_model, torch.empty(2, 3, 8, 8, device="meta"))
    assert all(r.device == "meta" for r in meta.records)
    strip = lambda r: {k: v for k, v in vars(r).items() if k != "device"}  # noqa: E731
    assert [strip(r) for r in meta.records] == [strip(r) for r in cpu.records]


@pytest.mark.parametrize("dtype, name", [(torch.float64, "float64"), (torch.bfloat16, "bfloat16")])
def test_records_dtype(dtype, name):
    model = TinyNet().to(device="meta", dtype=dtype)
    p = run(model, torch.empty(2, 3, 8, 8, device="meta", dtype=dtype))
    assert {r.dtype for r in p.records} == {name}


def _snapshot(model):
    """Everything a profiler could leave behind on a model."""
    per_module = {}
    for name, m in model.named_modules():
        per_module[name] = (
            sorted(vars(m)),
            len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
            len(getattr(m, "_forward_hooks_with_kwargs", {})),
            len(getattr(m, "_forward_hooks_always_called", {})),
        )
    glob = torch.nn.modules.module
    return per_module, list(model.state_dict()), len(glob._global_forward_hooks)


def test_hooks_removed_and_model_unchanged_after_exit():
    model = TinyNet()
    before = _snapshot(model)
    run(model, torch.randn(2, 3, 8, 8))
    assert _snapshot(model) == before
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


class Boom(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        self.conv(x)
        raise ValueError("boom in forward")


def test_hooks_removed_when_forward_raises():
    model = Boom()
    before = _snapshot(model)
    with pytest.raises(ValueError, match="boom"):
        with AlphaProfiler(model) as p:
            model(torch.randn(1, 3, 8, 8))
    assert _snapshot(model) == before
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    assert [r.name for r in p.records] == ["conv"]  # what ran before the error is kept
    # and the model is free for a new profiler
    with AlphaProfiler(model):
        pass


def test_model_called_twice_records_both_calls():
    model = TinyNet()
    x = torch.randn(2, 3, 8, 8)
    with AlphaProfiler(model) as p, torch.no_grad():
        model(x)
        assert len(p.records) == 3  # readable inside the block ...
        model(x)
        assert len(p.records) == 6  # ... and refreshed after more calls
    assert [r.name for r in p.records] == ["conv", "dw", "head.1"] * 2
    assert [r.call_index for r in p.records] == list(range(6))
    assert p.total_flops == 2 * TINY_FLOPS
    assert p.by_module()["conv"]["calls"] == 2


def test_shared_module_records_each_call():
    lin = nn.Linear(8, 8)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    p = run(model, torch.randn(3, 8))
    assert [r.name for r in p.records] == ["0", "0"]
    # 2 calls * 3 rows * 8 * 8 = 384 MACs
    assert p.total_macs == 384
    assert p.by_module()["0"]["calls"] == 2


def test_second_profiler_on_same_model_raises_and_keeps_the_first():
    model = TinyNet()
    with AlphaProfiler(model) as p:
        with pytest.raises(RuntimeError, match="already active"):
            with AlphaProfiler(model):
                pass
        with pytest.raises(RuntimeError, match="already active"):  # a submodule is busy too
            AlphaProfiler(model.head).__enter__()
        with torch.no_grad():
            model(torch.randn(2, 3, 8, 8))
    assert len(p.records) == 3  # the first profiler's hooks survived
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    with AlphaProfiler(model):  # free again after exit
        pass


def test_two_models_can_be_profiled_at_once():
    a, b = nn.Linear(2, 2), nn.Linear(2, 3)
    with AlphaProfiler(a) as pa, AlphaProfiler(b) as pb:
        a(torch.randn(1, 2))
        b(torch.randn(1, 2))
    assert len(pa.records) == len(pb.records) == 1


@pytest.mark.parametrize("not_a_module", [lambda x: x, "resnet18", None])
def test_non_module_is_a_type_error(not_a_module):
    with pytest.raises(TypeError, match="torch.nn.Module"):
        AlphaProfiler(not_a_module)


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(2, 4, 3)
        self.c3 = nn.Conv3d(2, 4, 3)
        self.ct = nn.ConvTranspose2d(2, 4, 3)
        self.c2 = nn.Conv2d(2, 4, 3)

    def forward(self, x1, x3, x2):
        return self.c1(x1), self.c3(x3), self.ct(x2), self.c2(x2)


def test_uncosted_convs_are_reported_never_zero():
    p = run(Mixed(), torch.randn(1, 2, 10), torch.randn(1, 2, 4, 4, 4), torch.randn(1, 2, 5, 5))
    assert [r.name for r in p.records] == ["c2"]
    assert all(r.flops > 0 for r in p.records)
    nc = p.not_costed()
    assert [(n.name, n.module_type) for n in nc] == [
        ("c1", "Conv1d"), ("c3", "Conv3d"), ("ct", "ConvTranspose2d")]
    assert nc[0].input_shape == (1, 2, 10) and nc[0].reason
    assert "not costed: Conv1d x1, Conv3d x1, ConvTranspose2d x1" in p.table()
    assert len(p.summary()["not_costed"]) == 3
    assert [n["module_type"] for n in json.loads(p.to_json())["not_costed"]] == [
        "Conv1d", "Conv3d", "ConvTranspose2d"]


def test_multihead_attention_is_not_costed_and_its_projection_not_zero():
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    with AlphaProfiler(mha) as p, torch.no_grad():
        mha(torch.randn(1, 4, 8), torch.randn(1, 4, 8), torch.randn(1, 4, 8))
    # the attention itself, then out_proj, whose weight MHA uses functionally (never called)
    assert [n.module_type for n in p.not_costed()] == ["MultiheadAttention", "NonDynamicallyQuantizableLinear"]
    assert "never called" in p.not_costed()[1].reason
    assert all(r.flops > 0 for r in p.records)


def test_linear_used_functionally_is_listed_not_silently_zero():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(4, 4)
            self.borrowed = nn.Linear(4, 4)  # its weight goes through F.linear, as in Swin

        def forward(self, x):
            return nn.functional.linear(self.used(x), self.borrowed.weight)

    m = Functional()
    with AlphaProfiler(m) as p:
        m(torch.randn(2, 4))
    assert [r.name for r in p.records] == ["used"]
    assert [(n.name, n.module_type) for n in p.not_costed()] == [("borrowed", "Linear")]


def test_autocast_records_the_computed_dtype():
    lin = nn.Linear(4, 4)
    with AlphaProfiler(lin) as p, torch.autocast("cpu", dtype=torch.bfloat16):
        lin(torch.randn(2, 4))
    assert p.records[0].dtype == "bfloat16"


def test_layer_called_with_keyword_input():
    lin = nn.Linear(4, 5)
    with AlphaProfiler(lin) as p:
        lin(input=torch.randn(2, 4))
    assert p.records[0].macs == 2 * 5 * 4  # 40


def test_by_module_aggregates_parents(tiny):
    m = tiny.by_module()
    assert list(m) == ["", "conv", "dw", "head", "head.1"]
    assert m[""]["calls"] == 3 and m[""]["flops"] == TINY_FLOPS
    assert m["conv"]["flops"] == 2 * CONV_MACS == 13824
    assert m["head"] == m["head.1"] and m["head"]["flops"] == 2 * HEAD_MACS == 5120
    assert m[""]["predicted_ms"] == pytest.approx(tiny.predicted_ms)
    assert m[""]["alpha_flops"] == pytest.approx(tiny.total_alpha_flops)


def test_by_kind(tiny):
    k = tiny.by_kind()
    assert list(k) == ["Conv2d", "Linear"]
    assert (k["Conv2d"]["calls"], k["Conv2d"]["flops"]) == (2, 2 * (CONV_MACS + DW_MACS))  # 15360
    assert (k["Linear"]["calls"], k["Linear"]["flops"]) == (1, 5120)


def _rows(table):
    return [line.split()[0] for line in table.splitlines()[2:] if line.strip()]


def test_table_per_layer(tiny):
    text = tiny.table()
    head, rule = text.splitlines()[:2]
    for col in ("module", "kind", "input shape", "MFLOPs (2xMAC)", "alpha", "alpha-MFLOPs",
                "predicted ms", "% time"):
        assert col in head
    assert set(rule) <= {"-", " "}
    assert _rows(text) == ["conv", "dw", "head.1", "total"]
    total = text.splitlines()[-1].split()
    # total MFLOPs = 20480 / 1e6 = 0.02 (2 decimals); % time 100.0
    assert total[1] == "0.02" and total[-1] == "100.0"
    conv_line = text.splitlines()[2].split()
    assert conv_line[2] == "2x3x8x8" and conv_line[3] == "0.01"  # 13824 FLOPs = 0.01 MFLOPs


def test_table_depth_merges_children(tiny):
    assert _rows(tiny.table(depth=1)) == ["conv", "dw", "head", "total"]
    assert _rows(tiny.table(depth=0)) == ["<model>", "total"]


def test_table_top_k_keeps_the_slowest(tiny):
    # t2000-paper: conv 7.2e-5 ms > head.1 4.9e-5 ms > dw 6.3e-6 ms
    ms = {r.name: r.predicted_ms for r in tiny.records}
    assert ms["conv"] > ms["head.1"] > ms["dw"]
    text = tiny.table(top_k=1)
    lines = text.splitlines()[2:]
    assert lines[0].split()[0] == "conv"
    assert lines[1].startswith("(2 others)")
    assert lines[2].split()[0] == "total"
    assert _rows(tiny.table(top_k=2)) == ["conv", "head.1", "(1", "total"]
    assert _rows(tiny.table(top_k=10)) == ["conv", "dw", "head.1", "total"]


def test_to_json_parses(tiny):
    doc = json.loads(tiny.to_json())
    assert doc["profile"] == "t2000-paper" and doc["device"] == "Quadro T2000"
    assert (doc["layers"], doc["macs"], doc["flops"]) == (3, 10240, 20480)
    assert doc["predicted_ms"] == pytest.approx(tiny.predicted_ms)
    assert [r["name"] for r in doc["records"]] == ["conv", "dw", "head.1"]
    assert doc["records"][0]["kernel"] == [3, 3] and doc["records"][2]["batch"] == 2
    assert doc["not_costed"] == []


def test_to_csv_parses(tiny):
    rows = list(csv.DictReader(io.StringIO(tiny.to_csv())))
    assert [r["name"] for r in rows] == ["conv", "dw", "head.1"]
    conv, dw, head = rows
    assert (conv["N"], conv["Cin"], conv["Cout"], conv["H"], conv["W"], conv["K1"], conv["K2"]) == (
        "2", "3", "8", "8", "8", "3", "3")
    assert (conv["stride"], conv["padding"], conv["Hout"], conv["flops"]) == ("2", "1", "4", "13824")
    assert (dw["K1"], dw["K2"], dw["padding"], dw["groups"], dw["module_type"]) == ("3", "1", "1x0", "8", "MyConv")
    assert (head["kind"], head["N"], head["Cin"], head["Cout"]) == ("Linear", "2", "128", "10")
    assert float(head["predicted_ms"]) == pytest.approx(tiny.records[2].predicted_ms, rel=1e-15)


def test_to_dataframe(tiny):
    pd = pytest.importorskip("pandas")
    df = tiny.to_dataframe()
    assert isinstance(df, pd.DataFrame)
    assert df.shape[0] == 3 and df["flops"].sum() == TINY_FLOPS
    assert list(df["name"]) == ["conv", "dw", "head.1"]


def test_empty_model_has_zero_totals_and_a_table():
    p = run(nn.ReLU(), torch.randn(2))
    assert p.records == [] and p.total_flops == 0 and p.predicted_ms == 0.0
    assert _rows(p.table()) == ["total"]


# ---------------------------------------------------------------- FLOPs vs torch
FLOP_MODELS = ["resnet50", "mobilenet_v3_large", "efficientnet_b0", "densenet121", "inception_v3",
               "convnext_tiny", "regnet_y_400mf", "alexnet"]


@pytest.mark.parametrize("name", FLOP_MODELS)
def test_total_flops_equal_torch_flop_counter(name):
    from torch.utils.flop_counter import FlopCounterMode

    from torch_alpha_profiler.zoo import build_model, default_input_size

    model = build_model(name, device="meta")
    side = 299 if name == "inception_v3" else 224
    assert default_input_size(name) == (side, side)
    x = torch.empty(2, 3, side, side, device="meta")
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            model(x)
        p = run(model, x)
    counts = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    expected = sum(counts.get(op, 0) for op in ("aten.convolution", "aten.mm", "aten.addmm"))
    assert expected > 0
    assert p.total_flops == expected
    # only inception_v3's auxiliary classifier (skipped in eval mode) is listed as never called
    assert all(n.name.startswith("AuxLogits") and "never called" in n.reason for n in p.not_costed())
