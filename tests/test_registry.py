"""registry: MRO resolution, duplicate registration, per-call record extraction."""
import pytest
import torch
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from torch_alpha_profiler import registry


class MyConv(nn.Conv2d):
    pass


class MyLinear(NonDynamicallyQuantizableLinear):
    pass


@pytest.mark.parametrize("cls, kind", [
    (nn.Conv2d, "Conv2d"), (MyConv, "Conv2d"),
    (nn.Linear, "Linear"), (NonDynamicallyQuantizableLinear, "Linear"), (MyLinear, "Linear"),
    (nn.LazyLinear, "Linear"),
])
def test_resolve_walks_the_mro(cls, kind):
    entry = registry.resolve(cls)
    assert entry is not None and entry[0] == kind


@pytest.mark.parametrize("cls", [nn.Conv1d, nn.Conv3d, nn.ConvTranspose2d, nn.ReLU, nn.BatchNorm2d, nn.Module])
def test_resolve_returns_none_for_uncosted_types(cls):
    assert registry.resolve(cls) is None


@pytest.mark.parametrize("module, expected", [
    (nn.Conv1d(2, 2, 3), True), (nn.Conv3d(2, 2, 3), True), (nn.ConvTranspose2d(2, 2, 3), True),
    (nn.Bilinear(2, 2, 2), True), (nn.MultiheadAttention(4, 1), True), (nn.LSTM(2, 2), True),
    (nn.Conv2d(2, 2, 3), False), (nn.Linear(2, 2), False), (nn.ReLU(), False),
])
def test_is_uncosted_compute(module, expected):
    assert registry.is_uncosted_compute(module) is expected


def test_duplicate_registration_raises_and_leaves_registry_intact():
    before = dict(registry._REGISTRY)
    with pytest.raises(RuntimeError, match="already registered"):
        registry.register_layer(nn.Linear, "Other")(lambda *a: None)
    assert registry._REGISTRY == before


def test_register_new_kind_resolves_subclasses(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    class Base(nn.Module):
        pass

    class Child(Base):
        pass

    def extract(*args):
        return "record"

    assert registry.register_layer(Base, "Base")(extract) is extract
    assert registry.resolve(Child) == ("Base", extract)


def _conv_record(conv, in_shape):
    conv = conv.to("meta")
    x = torch.empty(in_shape, device="meta")
    y = conv(x)
    kind, extract = registry.resolve(type(conv))
    return extract("layer", conv, tuple(x.shape), tuple(y.shape), "float32", "meta", 7)


def test_conv2d_record_fields():
    conv = nn.Conv2d(4, 6, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2, bias=False)
    r = _conv_record(conv, (3, 4, 9, 11))
    # H: (9 + 2*1 - 1*(3-1) - 1) // 2 + 1 = 5;  W: (11 + 2*2 - 2*(5-1) - 1) // 1 + 1 = 7
    assert r.output_shape == (3, 6, 5, 7)
    assert (r.name, r.kind, r.module_type, r.batch) == ("layer", "Conv2d", "Conv2d", 3)
    assert (r.in_channels, r.out_channels, r.in_hw, r.out_hw) == (4, 6, (9, 11), (5, 7))
    assert (r.kernel, r.stride, r.padding, r.dilation, r.groups) == ((3, 5), (2, 1), (1, 2), (1, 2), 2)
    assert (r.bias, r.dtype, r.device, r.call_index) == (False, "float32", "meta", 7)


def test_conv2d_unbatched_input_has_batch_1():
    r = _conv_record(nn.Conv2d(2, 3, 3), (2, 8, 8))
    assert r.batch == 1 and r.in_hw == (8, 8) and r.out_hw == (6, 6)


@pytest.mark.parametrize("padding, dilation, expected", [
    ("valid", 1, (0, 0)),
    ("same", 1, (1, 1)),   # 1 * (3 - 1) // 2 = 1
    ("same", 2, (2, 2)),   # 2 * (3 - 1) // 2 = 2
])
def test_conv2d_string_padding_becomes_numbers(padding, dilation, expected):
    r = _conv_record(nn.Conv2d(2, 2, 3, padding=padding, dilation=dilation), (1, 2, 8, 8))
    assert r.padding == expected


@pytest.mark.parametrize("in_shape, rows", [
    ((8,), 1),            # unbatched: the empty product
    ((5, 8), 5),
    ((2, 3, 5, 8), 30),   # 2 * 3 * 5 = 30 leading rows
])
def test_linear_record_batch_is_product_of_leading_dims(in_shape, rows):
    lin = NonDynamicallyQuantizableLinear(8, 4)
    kind, extract = registry.resolve(type(lin))
    r = extract("fc", lin, in_shape, in_shape[:-1] + (4,), "bfloat16", "cpu", 0)
    assert (r.kind, r.module_type, r.batch, r.in_channels, r.out_channels) == (
        "Linear", "NonDynamicallyQuantizableLinear", rows, 8, 4)
    assert r.bias is True and r.dtype == "bfloat16"
    assert (r.kernel, r.in_hw, r.out_hw, r.groups) == ((1, 1), (1, 1), (1, 1), 1)
