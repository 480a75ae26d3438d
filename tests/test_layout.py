"""Channels-last (NHWC) convolutions: recorded by the profiler, read from a layer table, costed apart.

A Conv2d whose 4-D input is in channels-last memory format runs other
kernels; the profiler flags it, the layer table's 'layout' column says it,
and cost.evaluate uses the profile's 'channels_last' parameters for those
rows only. Calibration times a slice of its Conv2d plan again in NHWC.
"""
import copy
import csv
import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

from torch_alpha_profiler import AlphaProfiler
from torch_alpha_profiler import profile as profile_mod
from torch_alpha_profiler.calibrate.measure import RESULT_COLUMNS, build_layer, measure_plan
from torch_alpha_profiler.calibrate.plan import channels_last_plan, config_key, make_plan, row
from torch_alpha_profiler.calibrate.timers import Measurement
from torch_alpha_profiler.cost import attach_costs, evaluate
from torch_alpha_profiler.layers import concat, from_records, make_arrays, take
from torch_alpha_profiler.profile import ProfileError, load_profile, profile_from_dict
from torch_alpha_profiler.shapes import ShapeOnlyMode
from torch_alpha_profiler.tables import LayerTableError, parse_layer_table, read_layer_table
from torch_alpha_profiler.zoo import build_model


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    monkeypatch.setattr(profile_mod, "current_device_name", lambda: None)


def nhwc_profile(base="h100-fp32", factor=3.0):
    """``base`` with a channels-last parameter set that is deliberately different: every class's
    compute factor and floor times ``factor``."""
    p = load_profile(base, warn_device=False)
    params = copy.deepcopy(dict(p.parameters))
    for values in params["classes"].values():
        values["tau_ms_per_mmac"] *= factor
        values["t0_ms"] *= factor
    return dataclasses.replace(p, schema_version=max(2, p.schema_version), channels_last={"parameters": params})


def plain_profile(base="h100-fp32"):
    return dataclasses.replace(load_profile(base, warn_device=False), channels_last=None)


# ------------------------------------------------------------------ profiler
@pytest.fixture(scope="module")
def convnext():
    model = build_model("convnext_tiny", device="meta")
    with AlphaProfiler(model, profile=plain_profile(), scope="layers") as p, torch.no_grad():
        model(torch.empty(1, 3, 224, 224, device="meta"))
    return p


def test_convnext_depthwise_convs_after_a_permute_are_channels_last(convnext):
    records = convnext.records
    convs = [r for r in records if r.kind == "Conv2d"]
    nhwc = [r for r in records if r.channels_last]
    assert (len(records), len(convs), len(nhwc)) == (59, 22, 21)
    assert all(r.kind == "Conv2d" for r in nhwc)
    # LayerNorm2d and each block end in a permute back to NCHW: a channels-last view. It feeds the
    # 2x2 downsampling convs and every depthwise 7x7 conv (the first of stages 2-4 through the
    # downsampling conv's output, which keeps the layout, as on a GPU)
    dw = [r for r in nhwc if r.groups == r.in_channels]
    assert len(dw) == 18 and all(r.kernel == (7, 7) for r in dw)
    assert sorted(r.name for r in nhwc if r not in dw) == ["features.2.1", "features.4.1", "features.6.1"]
    assert all(r.kernel == (2, 2) and r.stride == (2, 2) for r in nhwc if r not in dw)
    assert not next(r for r in convs if r.name == "features.0.0").channels_last  # the stem


def test_resnet18_has_no_channels_last_conv():
    model = build_model("resnet18", device="meta")
    with AlphaProfiler(model, scope="layers") as p, torch.no_grad():
        model(torch.empty(1, 3, 224, 224, device="meta"))
    assert len(p.records) == 21 and not any(r.channels_last for r in p.records)


class TwoConvs(nn.Module):
    """A channels-last input through two convolutions, as ConvNeXt's downsampling then depthwise conv."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 8, 2, stride=2)
        self.b = nn.Conv2d(8, 8, 3, padding=1, groups=8)

    def forward(self, x):
        return self.b(self.a(x.contiguous(memory_format=torch.channels_last)))


def _layouts(device, hybrid=False):
    model = TwoConvs().to("meta" if hybrid else device)
    x = torch.zeros(1, 4, 8, 8, device="cpu" if hybrid else device)
    mode = ShapeOnlyMode() if hybrid else torch.no_grad()
    with AlphaProfiler(model, scope="layers") as p, torch.no_grad(), mode:
        model(x)
    return [r.channels_last for r in p.records]


def test_channels_last_input_of_the_first_conv_is_seen_by_every_pass():
    assert _layouts("cpu")[0] and _layouts("meta")[0] and _layouts("cpu", hybrid=True)[0]


def test_meta_and_hybrid_passes_see_the_layout_a_conv_output_keeps():
    assert _layouts("cpu") == [True, True]
    assert _layouts("meta") == [True, True]
    assert _layouts("cpu", hybrid=True) == [True, True]


def test_profiler_costs_channels_last_records_with_their_own_parameters(convnext):
    raw = convnext.records
    plain = attach_costs(raw, plain_profile())
    nhwc = attach_costs(raw, nhwc_profile())
    for r, a, b in zip(raw, plain, nhwc):
        if r.channels_last:
            assert b.predicted_ms > a.predicted_ms, r.name
        else:
            assert b.predicted_ms == a.predicted_ms and b.alpha == a.alpha, r.name
    # the profiler itself picks the parameter set up
    model = build_model("convnext_tiny", device="meta")
    with AlphaProfiler(model, profile=nhwc_profile(), scope="layers") as p, torch.no_grad():
        model(torch.empty(1, 3, 224, 224, device="meta"))
    assert [r.predicted_ms for r in p.records] == [r.predicted_ms for r in nhwc]
    assert p.layers_ms > sum(r.predicted_ms for r in plain)


# -------------------------------------------------------------------- tables
LAYOUT_TABLE = ("kind,Cin,Cout,H,W,K1,K2,layout\n"
                "Conv2d,8,8,7,7,3,3,\n"
                "Conv2d,8,8,7,7,3,3,nchw\n"
                "Conv2d,8,8,7,7,3,3,nhwc\n"
                "Conv2d,8,8,7,7,3,3,channels_last\n"
                "Linear,64,64,1,1,1,1,nhwc\n")


def test_layout_column_parses():
    t = parse_layer_table(LAYOUT_TABLE)
    assert t.arrays.channels_last.tolist() == [False, False, True, True, False]  # Linear rows: no layout
    # the reference parser (cells with spaces) reads the same
    spaced = LAYOUT_TABLE.replace(",nhwc\n", ", nhwc\n")
    assert parse_layer_table(spaced).arrays.channels_last.tolist() == t.arrays.channels_last.tolist()
    # no column: NCHW everywhere
    assert not parse_layer_table("Cin,Cout,H,W,K1,K2\n8,8,7,7,3,3\n").arrays.channels_last.any()


@pytest.mark.parametrize("bad,spaces", [("NHWC", False), ("cl", False), ("channels-last", True), ("chw", True)])
def test_bad_layout_names_the_line_and_the_column(bad, spaces):
    text = LAYOUT_TABLE.replace("7,7,3,3,channels_last", f"7,7,3,3,{bad}")
    if spaces:  # sends the file to the reference parser
        text = text.replace("Conv2d,8,8,7,7,3,3,\n", "Conv2d, 8,8,7,7,3,3,\n")
    with pytest.raises(LayerTableError) as e:
        parse_layer_table(text, "t.csv")
    msg = str(e.value)
    assert msg.startswith("t.csv line 5: column 'layout'"), msg
    assert msg.endswith(f"got {bad!r}")


# ---------------------------------------------------------------------- cost
def test_evaluate_uses_channels_last_parameters_for_channels_last_rows_only():
    # conv 3x3 NCHW, the same NHWC, depthwise NHWC, 1x1 NHWC, Linear
    kw = dict(is_linear=[False, False, False, False, True], N=[8, 8, 8, 8, 64], Cin=[64, 64, 96, 64, 512],
              Cout=[64, 64, 96, 128, 1000], Hin=[28, 28, 28, 14, 1], Win=[28, 28, 28, 14, 1],
              Hout=[28, 28, 28, 14, 1], Wout=[28, 28, 28, 14, 1], K1=[3, 3, 7, 1, 1], K2=[3, 3, 7, 1, 1],
              stride=[1] * 5, groups=[1, 1, 96, 1, 1])
    arrays = make_arrays(channels_last=[False, True, True, True, False], **kw)
    nchw_only = make_arrays(**kw)
    plain, nhwc = plain_profile(), nhwc_profile()
    base = evaluate(arrays, plain)
    got = evaluate(arrays, nhwc)
    np.testing.assert_array_equal(evaluate(nchw_only, nhwc).predicted_ms, base.predicted_ms)
    changed = got.predicted_ms != base.predicted_ms
    assert changed.tolist() == [False, True, True, True, False]
    # the channels-last rows cost what the NHWC parameter set says (with no residual trees and no
    # neighbour correction: they are fitted on NCHW layers)
    as_nhwc = dataclasses.replace(plain, parameters=nhwc.channels_last["parameters"], correction=None,
                                  trees=None)
    np.testing.assert_allclose(got.predicted_ms[changed], evaluate(arrays, as_nhwc).predicted_ms[changed],
                               rtol=1e-12)
    np.testing.assert_allclose(got.alpha[changed], evaluate(arrays, as_nhwc).alpha[changed], rtol=1e-12)
    # MACs and FLOPs do not depend on the layout
    np.testing.assert_array_equal(got.macs, base.macs)
    # rows 1 and 0 are the same layer in the two layouts
    assert got.predicted_ms[1] > got.predicted_ms[0]


def test_channels_last_profile_section_round_trips(tmp_path):
    p = nhwc_profile()
    p.save(str(tmp_path / "p.json"))
    q = load_profile(str(tmp_path / "p.json"))
    assert q.channels_last == p.channels_last
    assert profile_from_dict(q.to_dict()).channels_last["parameters"]["classes"]["conv1x1"]["t0_ms"] == \
        pytest.approx(3 * p.parameters["classes"]["conv1x1"]["t0_ms"])


def test_layer_arrays_keep_the_layout():
    a = make_arrays(is_linear=[False, False], N=[1, 2], Cin=[8, 8], Cout=[8, 8], Hin=[4, 4], Win=[4, 4],
                    Hout=[4, 4], Wout=[4, 4], K1=[3, 3], K2=[3, 3], stride=[1, 1], groups=[1, 1],
                    channels_last=[True, False])
    assert a.channels_last.dtype == bool
    assert take(a, [1, 0]).channels_last.tolist() == [False, True]
    assert concat([a, a]).channels_last.tolist() == [True, False, True, False]
    model = TwoConvs()
    with AlphaProfiler(model) as p, torch.no_grad():
        model(torch.randn(1, 4, 8, 8))
    assert from_records(p.records).channels_last.tolist() == [True, True]


# --------------------------------------------------------------- calibration
def test_channels_last_plan_and_config_key():
    plan = make_plan(scale=0)
    nhwc = channels_last_plan(plan, every=2)
    convs = [r for r in plan if r["kind"] == "Conv2d"]
    assert len(nhwc) == len(convs[::2]) and all(r["layout"] == "nhwc" and r["kind"] == "Conv2d" for r in nhwc)
    assert all(dict(r, layout="") == dict(c, layout="") for r, c in zip(nhwc, convs[::2]))
    # the layout is part of a configuration's identity; '' and 'nchw' are the same
    r = row("s", N=1, Cin=8, Cout=8, H=8, W=8, K=3)
    assert config_key(dict(r, layout="nchw")) == config_key(dict(r, layout="")) == config_key(r)
    assert config_key(dict(r, layout="nhwc")) != config_key(r)
    assert {config_key(x) for x in nhwc}.isdisjoint(config_key(x) for x in plan)


def test_full_channels_last_plan_appends_depthwise_rows_as_networks_run_them():
    plan = make_plan()
    nhwc = channels_last_plan(plan)
    convs = [r for r in plan if r["kind"] == "Conv2d"]
    head = [dict(r, layout="nhwc") for r in convs[::20]]
    assert nhwc[:len(head)] == head  # the every-20th rows first
    # a subset of the every-10th rows that calibrations before plan v3's runs measured (resumable)
    assert {config_key(r) for r in head} <= {config_key(r) for r in channels_last_plan(plan, every=10)}
    extra = nhwc[len(head):]
    assert extra and all(r["sweep"] == "dw_nhwc" and r["layout"] == "nhwc" and r["groups"] == r["Cin"] == r["Cout"]
                         for r in extra)
    assert {"3", "5", "7"} == {r["K1"] for r in extra} and ("32", "96", "56") in {(r["N"], r["Cin"], r["H"]) for r in extra}
    assert len({config_key(r) for r in nhwc}) == len(nhwc)


def test_nhwc_rows_are_built_measured_and_read_back_channels_last(tmp_path):
    r = dict(row("s", N=1, Cin=8, Cout=8, H=8, W=8, K=3), layout="nhwc")
    layer, x = build_layer(r, "cpu", "float32")
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    _, x = build_layer(dict(r, layout="nchw"), "cpu", "float32")
    assert x.is_contiguous()

    class Fake:
        def measure(self, fn):
            fn()
            return Measurement((0.02,), 1)

    plan = channels_last_plan(make_plan(scale=0, random_count=0), every=3)
    out = str(tmp_path / "nhwc.csv")
    measure_plan(plan, out, device="cpu", timer=Fake())
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(RESULT_COLUMNS) and all(r["layout"] == "nhwc" for r in rows)
    t = read_layer_table(out)
    assert len(t) == len(plan) and t.arrays.channels_last.all()
    # resume: the NHWC rows are done, the NCHW twins are not
    assert measure_plan(plan, out, device="cpu", timer=Fake()) == []
    twins = [dict(x, layout="") for x in plan]
    assert len(measure_plan(twins, out, device="cpu", timer=Fake())) == len(plan)


# ------------------------------------------------------------ per-tap latency (channels-last)
def _dw_arrays(ks, n=1, c=96, h=14):
    one = [1] * len(ks)
    return make_arrays(is_linear=[False] * len(ks), N=[n] * len(ks), Cin=[c] * len(ks), Cout=[c] * len(ks),
                       Hin=[h] * len(ks), Win=[h] * len(ks), Hout=[h] * len(ks), Wout=[h] * len(ks),
                       K1=ks, K2=ks, stride=one, groups=[c] * len(ks))


def test_per_tap_latency_is_a_floor_of_kernels_with_more_than_one_tap():
    from torch_alpha_profiler.families import get_family

    fam = get_family("axes")
    params = copy.deepcopy(dict(load_profile("h100-bf16", warn_device=False).parameters))
    arrays = _dw_arrays([1, 3, 7])
    off = fam.predict_ms(arrays, params)
    params["classes"]["depthwise"]["tap_ms"] = 2e-4
    on = fam.predict_ms(arrays, params)
    assert on[0] == off[0]  # one tap: nothing to loop over
    # a small layer is bound by its taps: about t0 + tap x (K - 1)
    t0 = params["classes"]["depthwise"]["t0_ms"]
    assert on[2] > off[2] and on[2] == pytest.approx(t0 + 2e-4 * 48, rel=0.2)
    assert on[2] - t0 > 4 * (on[1] - t0)
    # a profile written before the parameter existed loads and costs as if it were 0
    for cls in params["classes"].values():
        del cls["tap_ms"]
    assert np.allclose(fam.predict_ms(arrays, params), off)


def test_profile_without_tap_ms_loads_and_values_on_a_bound_are_kept(tmp_path):
    doc = load_profile("h100-fp32", warn_device=False).to_dict()
    for section in (doc["parameters"], doc["channels_last"]["parameters"]):
        for cls in section["classes"].values():
            cls.pop("tap_ms", None)
    doc["channels_last"]["parameters"]["classes"]["grouped"]["k_exp"] = -0.9999999999999999  # -1, rounded
    q = profile_from_dict(json.loads(json.dumps(doc)))
    assert "tap_ms" not in q.parameters["classes"]["conv1x1"]
    doc["channels_last"]["parameters"]["classes"]["grouped"]["k_exp"] = -1.001
    with pytest.raises(ProfileError, match="grouped.k_exp"):
        profile_from_dict(doc)


def test_channels_last_refit_learns_a_per_tap_latency_the_nchw_fit_pins():
    """Depthwise rows whose time is a floor plus 0.2 us a tap: the refit finds the tap latency
    (it starts from the family's initial value, not from the NCHW fit's pinned 0)."""
    from torch_alpha_profiler.fit import fit_channels_last
    from torch_alpha_profiler.tables import LayerTable

    base = load_profile("h100-bf16", warn_device=False).parameters
    assert all(c["tap_ms"] == 0.0 for c in base["classes"].values())
    ks = [3, 5, 7] * 16
    cs = [96, 192, 384, 768] * 12
    hs = sorted([7, 14] * 24)
    one = [1] * len(ks)
    arrays = make_arrays(is_linear=[False] * len(ks), N=one, Cin=cs, Cout=cs, Hin=hs, Win=hs, Hout=hs, Wout=hs,
                         K1=ks, K2=ks, stride=one, groups=cs, channels_last=[True] * len(ks), itemsize=[2] * len(ks))
    time_ms = 0.002 + 2e-4 * (np.array(ks) ** 2 - 1)
    table = LayerTable(arrays=arrays, time_ms=time_ms, source="synthetic", header=(), columns={})
    section = fit_channels_last(table, "axes", base)
    assert section["parameters"]["classes"]["depthwise"]["tap_ms"] == pytest.approx(2e-4, rel=0.3)
    assert list(section["cv_mape_pct"].values())[0] < 15


# ------------------------------------------------------------ per-image factor (H_out x W_out)
def test_per_image_factor_tells_a_batch_of_small_images_from_one_large_image():
    from torch_alpha_profiler.families import get_family

    fam = get_family("axes")
    params = copy.deepcopy(dict(load_profile("h100-fp32", warn_device=False).parameters))
    c = params["classes"]["conv1x1"]
    assert c["g_hw"] > 0 and params["classes"]["linear"]["g_hw"] == 0.0  # Linear has no image
    # the same 1x1 layer and output positions S: 64 images of 7x7, or one image of 56x56
    kw = dict(is_linear=[False, False], Cin=[256, 256], Cout=[256, 256], K1=[1, 1], K2=[1, 1],
              stride=[1, 1], groups=[1, 1])
    arrays = make_arrays(N=[64, 1], Hin=[7, 56], Win=[7, 56], Hout=[7, 56], Wout=[7, 56], **kw)
    assert arrays.S.tolist() == [3136, 3136]
    small, large = fam.predict_ms(arrays, params)
    assert small > large
    # switched off (g_hw = 0, as a profile written before it existed): the two cost the same
    for cls in params["classes"].values():
        cls.pop("h_hw"), cls.pop("g_hw")
    assert np.allclose(*fam.predict_ms(arrays, params))
    assert profile_from_dict(dict(load_profile("h100-fp32", warn_device=False).to_dict(),
                                  parameters=params)).parameters["classes"]["conv1x1"].get("g_hw") is None
