"""The shipped H100 profiles: valid, reproducible from the committed CSVs, and sane."""
import os

import numpy as np
import pytest

from torch_alpha_profiler import load_profile
from torch_alpha_profiler.families import get_family
from torch_alpha_profiler.layers import make_arrays

DATA = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "data")


@pytest.mark.parametrize("name,dtype", [("h100-fp32", "float32"), ("h100-bf16", "bfloat16")])
def test_shipped_profile_is_reproduced_by_fit(name, dtype):
    """`alpha-profiler fit calib-DTYPE.csv dense-random/dense-DTYPE.csv --family axes` gives the
    shipped formula, residual trees and fit data."""
    pytest.importorskip("sklearn")
    from torch_alpha_profiler.fit import fit_profile
    from torch_alpha_profiler.tables import concat_tables, fit_data_table, read_layer_table
    from torch_alpha_profiler.trees import from_section

    shipped = load_profile(name, warn_device=False)
    assert shipped.family == "axes"
    assert shipped.device_name == "NVIDIA H100 80GB HBM3"
    assert shipped.provenance["more_sources"] == [f"benchmarks/data/dense-random/dense-{dtype}.csv"]
    table = concat_tables([read_layer_table(os.path.join(DATA, f"calib-{dtype}.csv")),
                           read_layer_table(os.path.join(DATA, "dense-random", f"dense-{dtype}.csv"))])
    refit = fit_profile(table, family="axes", keep_data=False, trees=True)
    for cls, params in shipped.parameters["classes"].items():
        for key, value in params.items():
            assert refit.parameters["classes"][cls][key] == pytest.approx(value, rel=1e-6), (cls, key)
    assert refit.provenance["fit"]["mape_pct"] == pytest.approx(shipped.provenance["fit"]["mape_pct"], rel=1e-6)
    # the trees: the same factors (a scikit-learn version may order equal splits otherwise)
    assert refit.trees["settings"] == shipped.trees["settings"]
    assert {name: len(part["trees"]) for name, part in refit.trees["classes"].items()} == {
        name: len(part["trees"]) for name, part in shipped.trees["classes"].items()}
    got, want = (from_section(p.trees).log_factor(table.arrays) for p in (refit, shipped))
    assert np.abs(got - want).max() < 1e-6
    # the correction's points are the same rows
    assert fit_data_table(shipped).time_ms.tolist() == table.time_ms.tolist()


def _assert_close(a, b, path=""):
    if isinstance(b, dict):
        assert set(a) == set(b), path
        for key in b:
            _assert_close(a[key], b[key], f"{path}.{key}")
    elif isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-12), path
    else:
        assert a == b, path


@pytest.mark.parametrize("name,dtype", [("h100-fp32", "float32"), ("h100-bf16", "bfloat16")])
def test_shipped_op_host_and_channels_last_sections_are_reproduced(name, dtype):
    """The op classes, host costs and channels-last parameters refit from the committed CSVs."""
    import csv

    from torch_alpha_profiler.fit import fit_channels_last
    from torch_alpha_profiler.opfit import fit_host, fit_ops
    from torch_alpha_profiler.tables import read_layer_table, with_default_dtype

    shipped = load_profile(name, warn_device=False)

    def rows(suffix):
        with open(os.path.join(DATA, f"calib-{dtype}-{suffix}.csv"), newline="") as f:
            return list(csv.DictReader(f))

    ops = fit_ops(rows("ops"), l2_bytes=shipped.provenance["l2_cache_bytes"])
    _assert_close({k: v for k, v in ops.items() if k != "fit"},
                  {k: v for k, v in shipped.ops.items() if k != "fit"})
    _assert_close(fit_host(rows("host")), dict(shipped.host))
    nhwc = with_default_dtype(read_layer_table(os.path.join(DATA, f"calib-{dtype}-nhwc.csv")), dtype)
    cl = fit_channels_last(nhwc, "axes", shipped.parameters)
    _assert_close(cl["parameters"], dict(shipped.channels_last["parameters"]))
    # the default refit, with its cross-validated error recorded
    from torch_alpha_profiler.fit import CHANNELS_LAST_FREE

    assert cl["refitted"] == list(CHANNELS_LAST_FREE["axes"]) == shipped.channels_last["refitted"]
    (label, score), = cl["cv_mape_pct"].items()
    assert label == "refit " + ", ".join(CHANNELS_LAST_FREE["axes"]) and 5 < score < 60


@pytest.mark.parametrize("name", ["h100-fp32", "h100-bf16"])
def test_shipped_profiles_cost_whole_models(name):
    """Every op class the zoo uses is in the profile; whole-model GPU time exceeds the layers'."""
    from torch_alpha_profiler.cli import _profile_model

    p = _profile_model("mobilenet_v3_small", 1, (224, 224), load_profile(name, warn_device=False), "meta")
    assert p.scope == "model" and p.ops
    assert all(o.predicted_ms is not None and o.predicted_ms > 0 for o in p.ops)
    assert p.predicted_ms > p.layers_ms > 0
    assert p.eager_ms > p.predicted_ms  # batch 1: the CPU's launches dominate
    assert p.not_costed() == []


def test_axes_family_classes_and_monotone_in_size():
    fam = get_family("axes")
    p = load_profile("h100-fp32", warn_device=False).parameters
    one = np.ones(5, dtype=np.int64)
    arrays = make_arrays(is_linear=[True, False, False, False, False], N=[64] * 5, Cin=[256] * 5,
                         Cout=[256] * 5, Hin=[1, 14, 14, 14, 14], Win=[1, 14, 14, 14, 14],
                         Hout=[1, 14, 14, 14, 14], Wout=[1, 14, 14, 14, 14], K1=[1, 1, 3, 3, 3],
                         K2=[1, 1, 3, 3, 3], stride=one, groups=[1, 1, 1, 8, 256], itemsize=4 * one)
    # linear, conv1x1, convkxk, grouped (32 channels a group), depthwise (one channel a group)
    assert fam.classify(arrays).tolist() == [0, 1, 2, 3, 4]
    small = fam.predict_ms(arrays, p)
    big = fam.predict_ms(make_arrays(**{**{f: getattr(arrays, f) for f in arrays.__dataclass_fields__},
                                        "N": np.full(5, 128)}), p)
    assert np.all(small > 0) and np.all(big > small)  # twice the batch costs more


def test_axes_alpha_is_about_one_for_a_batch1_dense_layer():
    fam = get_family("axes")
    p = load_profile("h100-fp32", warn_device=False).parameters
    arrays = make_arrays(is_linear=[True, True], N=[1, 1], Cin=[4096, 2048], Cout=[4096, 8192], Hin=[1, 1], Win=[1, 1], Hout=[1, 1],
                         Wout=[1, 1], K1=[1, 1], K2=[1, 1], stride=[1, 1], groups=[1, 1], itemsize=[4, 4])
    alpha = fam.alpha(arrays, p)
    assert alpha[0] == pytest.approx(1.0)  # the reference layer defines the time scale
    assert 0.5 < alpha[1] < 2.0  # another batch-1 dense layer of the same size is close


@pytest.mark.parametrize("name,dtype", [("h100-fp32", "float32"), ("h100-bf16", "bfloat16")])
def test_shipped_train_and_power_sections_are_reproduced(name, dtype):
    """The training-step and energy sections refit from the committed CSVs, as `alpha-profiler fit
    ... --ops calib-DTYPE-ops.csv --train calib-DTYPE-train.csv --energy calib-DTYPE-energy.csv` does."""
    import csv

    from torch_alpha_profiler.powerfit import fit_power
    from torch_alpha_profiler.trainfit import fit_train

    shipped = load_profile(name, warn_device=False)
    assert shipped.train and shipped.power and shipped.power.get("train")

    def rows(suffix):
        with open(os.path.join(DATA, f"calib-{dtype}-{suffix}.csv"), newline="") as f:
            return list(csv.DictReader(f))

    def source(suffix):  # the path as the fit command was given it (from the repository root)
        return f"benchmarks/data/calib-{dtype}-{suffix}.csv"

    ops = rows("ops")
    train = fit_train(rows("train"), ops, "axes", l2_bytes=shipped.provenance["l2_cache_bytes"],
                      source=source("train"))
    assert train["source"] == shipped.train["source"]
    _assert_close(train, dict(shipped.train))
    idle_w = shipped.provenance.get("idle_power_w")
    assert idle_w is not None and shipped.power["idle_w"] == idle_w
    power = fit_power(rows("energy"), ops, "axes", idle_w, source=source("energy"))
    assert power["source"] == shipped.power["source"]
    _assert_close(power, dict(shipped.power))
    # joules per FLOP and per byte are far below _assert_close's absolute tolerance: compare them
    # relative to the phase's largest one
    for phase in ("forward", "train"):
        got, want = power[phase], shipped.power[phase]
        assert got["j_per_flop"].keys() == want["j_per_flop"].keys(), phase  # empty: one constant power
        scale = max(want["j_per_flop"].values(), default=0.0)
        for cls, value in want["j_per_flop"].items():
            assert got["j_per_flop"][cls] == pytest.approx(value, rel=1e-6, abs=1e-6 * scale), (phase, cls)
        assert got["j_per_byte"] == pytest.approx(want["j_per_byte"], rel=1e-6, abs=0), phase


@pytest.mark.parametrize("name", ["h100-fp32", "h100-bf16"])
def test_shipped_train_and_power_sections_are_sane(name):
    shipped = load_profile(name, warn_device=False)
    assert 0.3 < shipped.train["no_input_grad_ratio"] < 1  # a step without grad-input saves a product
    forward, step = shipped.power["forward"], shipped.power["train"]
    assert 0 < shipped.power["idle_w"] < forward["static_w"] < 700  # H100 SXM: 700 W board limit
    assert forward["static_w"] < step["static_w"] < 700
    # every FLOP class a network uses has a forward energy per FLOP (below 1 nJ a FLOP)
    assert set(forward["j_per_flop"]) == {"linear", "conv1x1", "convkxk", "grouped", "depthwise", "matmul",
                                          "attention"}
    assert all(0 <= v < 1e-9 for v in forward["j_per_flop"].values())
    # a forward costs more energy than its static power over its time, a training step more than the forward
    from torch_alpha_profiler.cli import _profile_model

    p = _profile_model("resnet18", 8, (224, 224), shipped, "meta")
    assert p.energy_j > forward["static_w"] * p.predicted_ms / 1e3
    q = _profile_model("resnet18", 8, (224, 224), shipped, "meta", train=True)
    assert q.train_step_ms > q.predicted_ms and q.train_energy_j > q.energy_j
