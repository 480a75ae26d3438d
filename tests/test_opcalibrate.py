"""opplan, opmeasure, opfit: the CPU twins of the op and host calibration, and calibrate()/`fit` end to end.

Op kinds are built tiny on the CPU and captured as the profiler captures
them; a fake timer stands in for the GPU; the fits recover what synthetic
times were made with; `alpha-profiler fit --ops --host --channels-last`
refits exactly what calibrate() fitted.
"""
import csv
import os

import numpy as np
import pytest
import torch

from torch_alpha_profiler import cli
from torch_alpha_profiler import profile as profile_mod
from torch_alpha_profiler.calibrate import calibrate
from torch_alpha_profiler.calibrate.opmeasure import (HOST_COLUMNS, OP_RESULT_COLUMNS, captured_features,
                                                      measure_host, measure_op_plan)
from torch_alpha_profiler.calibrate.opplan import (HOST_ONLY_KINDS, KINDS, OP_PLAN_COLUMNS, builder, host_plan,
                                                   make_op_plan, op_row)
from torch_alpha_profiler.calibrate.timers import Measurement
from torch_alpha_profiler.opcost import STREAM_BOUNDS, STREAM_PARAMS, stream_ms
from torch_alpha_profiler.opfit import fit_host, fit_stream_class
from torch_alpha_profiler.ops import HOST_CLASSES, STREAM_CLASSES
from torch_alpha_profiler.profile import load_profile

from ophelpers import flatten, one_thread, stream_params


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    monkeypatch.setattr(profile_mod, "current_device_name", lambda: None)


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():  # timing loops of tiny ops: keep clear of OpenMP barriers
        yield


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


SMALL = {r["op"]: tuple(int(r[f"d{j}"]) for j in range(4)) for r in host_plan()}


# ---------------------------------------------------------------------- plan
def test_op_plan_is_deterministic_and_covers_every_kind():
    plan = make_op_plan(per_kind=3, seed=1, matmuls=5, attention=4, max_elements=2 ** 16)
    assert plan == make_op_plan(per_kind=3, seed=1, matmuls=5, attention=4, max_elements=2 ** 16)
    assert plan != make_op_plan(per_kind=3, seed=2, matmuls=5, attention=4, max_elements=2 ** 16)
    assert all(tuple(r) == OP_PLAN_COLUMNS for r in plan)
    kinds = [r["op"] for r in plan]
    assert set(kinds) == set(KINDS)
    assert all(kinds.count(k) == 3 for k in KINDS if k not in ("bmm", "sdpa"))
    assert kinds.count("bmm") == 5 and kinds.count("sdpa") == 4
    for r in plan:
        d = [int(r[f"d{j}"]) for j in range(4)]
        assert min(d) >= 1
        if r["op"] == "bmm":  # batch, m, k, n
            assert d[0] * (d[1] * d[2] + d[2] * d[3] + d[1] * d[3]) <= 2 ** 16
        elif r["op"] == "sdpa":  # batch, heads, seq, head size
            assert d[0] * d[1] * d[2] * max(d[2], d[3]) <= 2 ** 16
        else:
            assert np.prod(d) <= 2 ** 16
    # the default plan: sizes over decades of bytes
    big = make_op_plan(per_kind=20)
    adds = sorted(np.prod([int(r[f"d{j}"]) for j in range(4)]) for r in big if r["op"] == "add")
    assert adds[-1] / adds[0] > 1e4


def test_network_rows_are_appended_at_networks_activations():
    """make_op_plan(network=k) keeps the plan's rows in their places and appends k rows of each
    stream kind at networks' shapes, within the element cap; calibrate's plan has none."""
    from torch_alpha_profiler.calibrate import _op_plan
    from torch_alpha_profiler.calibrate.opplan import NETWORK_CHANNELS, NETWORK_SIDES

    base = make_op_plan(per_kind=2, matmuls=1, attention=1)
    plan = make_op_plan(per_kind=2, matmuls=1, attention=1, network=3, max_elements=2 ** 20)
    plan_base = make_op_plan(per_kind=2, matmuls=1, attention=1, max_elements=2 ** 20)
    assert plan[:len(plan_base)] == plan_base and len(base) == len(plan_base)
    extra = plan[len(plan_base):]
    stream = [k for k in KINDS if k not in ("bmm", "sdpa")]
    assert [r["op"] for r in extra] == [k for k in stream for _ in range(3)]
    for r in extra:
        n, c, h, w = (int(r[f"d{j}"]) for j in range(4))
        assert r["sweep"] == "network" and c in NETWORK_CHANNELS and h == w and h in NETWORK_SIDES
        assert n * c * h * w <= 2 ** 20
    assert not any(r["sweep"] == "network" for r in _op_plan(1, 0))
    with pytest.raises(ValueError, match="no network activation fits"):
        make_op_plan(per_kind=1, matmuls=1, attention=1, network=1, max_elements=2 ** 9)


def test_host_plan_has_the_smallest_size_of_every_kind():
    plan = host_plan()
    assert [r["op"] for r in plan] == list(KINDS + HOST_ONLY_KINDS)
    assert all(r["sweep"] == "host" for r in plan)
    with pytest.raises(KeyError, match="unknown op kind 'conv3d'"):
        builder("conv3d")


# what each kind is captured as: the declared class, except adaptive_avg, which the CPU and
# CUDA kernels both run as a mean over H x W when the output is 1 x 1 (ATen's adaptive_avg_pool2d)
CAPTURED = {"adaptive_avg": ("reduce", "mean")}
OPS = {"add": "add", "mul_bcast": "mul", "relu_": "relu_", "gelu": "gelu", "silu_": "silu_",
       "hardswish_": "hardswish_", "sigmoid": "sigmoid", "batch_norm": "native_batch_norm",
       "layer_norm": "native_layer_norm", "mean_hw": "mean", "softmax": "_softmax",
       "max_pool": "max_pool2d_with_indices", "avg_pool": "avg_pool2d", "adaptive_avg": "mean", "cat": "cat",
       "permute_copy": "clone", "bmm": "bmm", "sdpa": "_scaled_dot_product_flash_attention_for_cpu"}


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_captured_as_its_class(kind):
    cls, build = builder(kind)
    fn = build(SMALL[kind], "cpu", torch.float32)
    with torch.no_grad():
        feats = captured_features(fn)
    assert feats["cls"] == CAPTURED.get(kind, (cls,))[0]
    assert feats["ops"] == OPS[kind]  # one operator each, views left out
    assert int(feats["nbytes"]) > 0
    n, c, h, w = SMALL[kind]
    if kind == "bmm":
        assert (feats["batch"], feats["m"], feats["k"], feats["n"]) == ("1", "16", "16", "16")
        assert int(feats["nbytes"]) == 3 * 16 * 16 * 4
    elif kind == "sdpa":  # batch x heads, query length, head size, key length
        assert (feats["batch"], feats["m"], feats["k"], feats["n"]) == (str(n * c), str(h), str(w), str(h))
    else:
        assert feats["batch"] == feats["m"] == ""
        if kind in ("relu_", "gelu", "silu_", "hardswish_", "sigmoid", "permute_copy"):
            assert int(feats["nbytes"]) == 2 * n * c * h * w * 4  # read once, written once
        if kind == "add":
            assert int(feats["nbytes"]) == 3 * n * c * h * w * 4  # two read, one written
        if kind == "cat":
            assert int(feats["nbytes"]) == 4 * n * c * h * w * 4  # two read, both written


def test_views_are_captured_as_nothing():
    for kind in HOST_ONLY_KINDS:
        cls, build = builder(kind)
        assert cls == "view"
        feats = captured_features(build(SMALL[kind], "cpu", torch.float32))
        assert (feats["cls"], feats["ops"], feats["nbytes"]) == ("", "", "0")


# ------------------------------------------------------------------- measure
class FakeTimer:
    """Any object with measure(fn) -> Measurement: runs fn once, 'takes' 0.01 ms a call."""

    def __init__(self):
        self.calls = 0

    def measure(self, fn):
        fn()
        self.calls += 1
        return Measurement((0.01, 0.012, 0.011), 100)


def test_measure_op_plan_writes_rows_as_it_goes_and_resumes(tmp_path):
    plan = [op_row("t", "add", (1, 4, 4, 4)), op_row("t", "softmax", (2, 8, 4, 4)),
            op_row("t", "bmm", (2, 8, 16, 4)), op_row("t", "sdpa", (1, 2, 8, 16))]
    out = str(tmp_path / "ops.csv")
    seen = []

    def progress(i, n, row):
        if os.path.exists(out):
            seen.append((i, len(read_csv(out))))  # rows on disk when row i starts

    timer = FakeTimer()
    rows = measure_op_plan(plan[:3], out, device="cpu", timer=timer, progress=progress)
    assert timer.calls == 3 and len(rows) == 3
    assert seen == [(0, 0), (1, 1), (2, 2), (3, 3)]
    on_disk = read_csv(out)
    assert list(on_disk[0]) == list(OP_RESULT_COLUMNS)
    assert [(r["op"], r["cls"], r["status"], r["time_ms"], r["dtype"]) for r in on_disk] == [
        ("add", "elementwise", "ok", "0.011", "float32"), ("softmax", "reduce", "ok", "0.011", "float32"),
        ("bmm", "matmul", "ok", "0.011", "float32")]
    assert (on_disk[2]["batch"], on_disk[2]["m"], on_disk[2]["k"], on_disk[2]["n"]) == ("2", "8", "16", "4")
    # resume: only the new row is measured, and appended
    timer = FakeTimer()
    rows = measure_op_plan(plan, out, device="cpu", timer=timer)
    assert timer.calls == 1 and [r["op"] for r in rows] == ["sdpa"]
    assert [r["op"] for r in read_csv(out)] == ["add", "softmax", "bmm", "sdpa"]
    # everything done: nothing measured, nothing written
    timer = FakeTimer()
    assert measure_op_plan(plan, out, device="cpu", timer=timer) == [] and timer.calls == 0
    assert len(read_csv(out)) == 4
    # another dtype is another measurement; resume=False starts over
    assert len(measure_op_plan(plan[:1], out, device="cpu", dtype="float64", timer=FakeTimer())) == 1
    assert len(measure_op_plan(plan[:2], out, device="cpu", timer=FakeTimer(), resume=False)) == 2
    assert len(read_csv(out)) == 2


def test_measure_op_plan_keeps_going_after_an_error(tmp_path):
    class Failing(FakeTimer):
        def measure(self, fn):
            if self.calls == 0:
                self.calls += 1
                raise RuntimeError("no kernel for this shape, sorry\nmore")
            return super().measure(fn)

    plan = [op_row("t", "add", (1, 4, 4, 4)), op_row("t", "gelu", (1, 4, 4, 4))]
    out = str(tmp_path / "ops.csv")
    measure_op_plan(plan, out, device="cpu", timer=Failing())
    rows = read_csv(out)
    assert [r["status"] for r in rows] == ["error: no kernel for this shape; sorry", "ok"]
    assert rows[0]["time_ms"] == ""
    # an error row is measured again on resume
    timer = FakeTimer()
    measure_op_plan(plan, out, device="cpu", timer=timer)
    assert timer.calls == 1


def test_measure_host_on_cpu_writes_one_row_per_kind_and_module(tmp_path):
    out = str(tmp_path / "host.csv")
    rows = measure_host(host_plan(), out, device="cpu")
    assert read_csv(out) == rows
    kinds = [r["kind"] for r in rows]
    assert kinds == [r["op"] for r in host_plan()] + ["conv_module", "linear_module", "identity_module",
                                                      "block_module"]
    assert list(rows[0]) == list(HOST_COLUMNS)
    classes = {r["kind"]: r["host_class"] for r in rows}
    assert classes["conv_module"] == "conv" and classes["linear_module"] == "linear"
    assert classes["identity_module"] == "module" and classes["view"] == classes["permute"] == "view"
    assert classes["block_module"] == "block"
    assert classes["bmm"] == "matmul" and classes["sdpa"] == "attention" and classes["add"] == "elementwise"
    assert all(float(r["host_us"]) > 0 and r["device"] == "cpu" for r in rows)


# ----------------------------------------------------------------------- fit
@pytest.mark.parametrize("true", [dict(t0_ms=5e-3, bw_gb_per_s=1500.0, h_bytes=3e5, g=0.7),
                                  dict(t0_ms=2e-2, bw_gb_per_s=50.0, h_bytes=1e4, g=0.3),
                                  dict(t0_ms=1e-3, bw_gb_per_s=3000.0, h_bytes=1e6, g=0.0)])
def test_fit_stream_class_recovers_synthetic_times(true):
    p = stream_params(**true)
    nbytes = np.logspace(2, 10, 40)
    t = stream_ms(nbytes, p)
    fitted = fit_stream_class(nbytes, t)
    assert set(fitted) == set(STREAM_PARAMS)
    for k, v in fitted.items():
        assert STREAM_BOUNDS[k].lo * (1 - 1e-9) <= v <= STREAM_BOUNDS[k].hi * (1 + 1e-9), k
    assert np.max(np.abs(np.log(stream_ms(nbytes, fitted) / t))) < 1e-3
    # far outside the data the floor and the bandwidth are what they were
    assert fitted["t0_ms"] == pytest.approx(p["t0_ms"], rel=0.05)
    assert fitted["bw_gb_per_s"] == pytest.approx(p["bw_gb_per_s"], rel=0.05)


def test_fit_stream_class_keeps_fixed_parameters():
    nbytes = np.logspace(2, 10, 30)
    t = stream_ms(nbytes, stream_params(g=0.0, t0_ms=3e-3))
    fitted = fit_stream_class(nbytes, t, fixed={"g": 0.0})
    assert fitted["g"] == 0.0
    assert np.max(np.abs(np.log(stream_ms(nbytes, fitted) / t))) < 1e-3


def _host_rows(values):
    return [{"kind": k, "host_class": c, "host_us": str(us), "calls": "300", "dtype": "float32", "device": "cpu"}
            for k, c, us in values]


def test_fit_host_takes_medians_and_subtracts_the_module_call():
    rows = _host_rows([("add", "elementwise", 2.0), ("relu_", "elementwise", 4.0), ("gelu", "elementwise", 9.0),
                       ("batch_norm", "norm", 6.0), ("layer_norm", "norm", 8.0), ("bmm", "matmul", 3.5),
                       ("view", "view", 1.0), ("permute", "view", 3.0), ("conv_module", "conv", 20.0),
                       ("linear_module", "linear", 12.0), ("identity_module", "module", 5.0)])
    host = fit_host(rows)
    assert host["module_us"] == 5.0 and host["view_us"] == 2.0
    launch = host["launch_us"]
    assert set(launch) == set(HOST_CLASSES)
    assert (launch["elementwise"], launch["norm"], launch["matmul"]) == (4.0, 7.0, 3.5)
    assert (launch["conv"], launch["linear"]) == (15.0, 7.0)  # module rows less one module call
    # classes with no row of their own fall back to the elementwise median
    assert launch["attention"] == launch["reduce"] == launch["pool"] == launch["copy"] == 4.0
    # the order of the rows does not matter; a module row cheaper than a module call gives 0
    assert fit_host(rows[::-1]) == host
    cheap = fit_host(rows[:-3] + _host_rows([("conv_module", "conv", 3.0), ("identity_module", "module", 5.0)]))
    assert cheap["launch_us"]["conv"] == 0.0
    assert cheap["launch_us"]["linear"] == 4.0  # no linear_module row: elementwise, nothing subtracted


def test_fit_host_charges_a_module_call_what_a_block_module_costs_beyond_its_launches():
    rows = _host_rows([("relu_", "elementwise", 4.0), ("batch_norm", "norm", 6.0), ("conv_module", "conv", 20.0),
                       ("identity_module", "module", 1.0)])
    # conv launch 20 - 1 = 19; the block: 4 module calls + conv, norm and elementwise launches (19 + 6 + 4)
    host = fit_host(rows + _host_rows([("block_module", "block", 41.0)]))
    assert host["module_us"] == pytest.approx((41.0 - 29.0) / 4) and host["identity_module_us"] == 1.0
    # a block cheaper than its launches leaves the identity module's cost
    assert fit_host(rows + _host_rows([("block_module", "block", 20.0)]))["module_us"] == 1.0


# ----------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """calibrate(scale=0) on the CPU: every raw CSV and the profile (about 6 s)."""
    prefix = str(tmp_path_factory.mktemp("calib") / "cpu")
    with one_thread():
        profile = calibrate(prefix, device="cpu", scale=0)
    return prefix, profile


def test_calibrate_on_cpu_writes_every_csv_and_a_profile_that_loads(calibrated):
    prefix, profile = calibrated
    for suffix in (".csv", "-ops.csv", "-host.csv", "-nhwc.csv", ".json"):
        assert os.path.exists(prefix + suffix), suffix
    p = load_profile(prefix + ".json")
    assert p.to_json() == profile.to_json()  # (fit statistics of 2 rows hold NaN: compare the text)
    assert p.schema_version == 5 and p.family == "axes" and p.device_name.startswith("CPU")
    assert set(p.ops["stream"]) == set(STREAM_CLASSES)
    assert "matmul" in p.ops and "attention" in p.ops
    assert set(p.host["launch_us"]) == set(HOST_CLASSES) and p.host["module_us"] > 0
    assert set(p.channels_last["parameters"]["classes"]) == set(p.parameters["classes"])
    ops_rows = read_csv(prefix + "-ops.csv")
    assert {r["op"] for r in ops_rows} == set(KINDS) and all(r["status"] == "ok" for r in ops_rows)
    assert len(read_csv(prefix + "-host.csv")) == len(host_plan()) + 4  # and conv, linear, identity and block modules
    nhwc = read_csv(prefix + "-nhwc.csv")
    assert nhwc and all(r["layout"] == "nhwc" and r["kind"] == "Conv2d" for r in nhwc)
    assert p.provenance["ops_source"] == prefix + "-ops.csv"
    # the profile costs whole models
    from torch_alpha_profiler import AlphaProfiler
    from torch_alpha_profiler.zoo import build_model

    model = build_model("resnet18", device="meta")
    with AlphaProfiler(model, profile=p) as prof, torch.no_grad():
        model(torch.empty(1, 3, 64, 64, device="meta"))
    assert prof.scope == "model" and prof.ops and all(o.predicted_ms > 0 for o in prof.ops)
    assert prof.eager_ms >= prof.predicted_ms > prof.layers_ms


def test_cli_fit_reproduces_the_calibrated_parameters(calibrated, tmp_path, capsys):
    prefix, profile = calibrated
    out = str(tmp_path / "refit.json")
    rc = cli.main(["fit", prefix + ".csv", "--family", "axes", "--ops", prefix + "-ops.csv",
                   "--host", prefix + "-host.csv", "--channels-last", prefix + "-nhwc.csv", "--out", out])
    assert rc == 0, capsys.readouterr().err
    refit = load_profile(out)
    for section in ("parameters", "ops", "host", "channels_last"):
        got = flatten(dict(getattr(refit, section)) if section != "parameters" else dict(refit.parameters))
        want = flatten(dict(getattr(profile, section)))
        assert set(got) == set(want), section
        for key, value in want.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert got[key] == pytest.approx(value, rel=1e-6, nan_ok=True), f"{section}.{key}"
            else:
                assert got[key] == value, f"{section}.{key}"
    assert refit.provenance["ops_source"] == prefix + "-ops.csv"
    assert refit.provenance["host_source"] == prefix + "-host.csv"
    assert refit.provenance["channels_last_source"] == prefix + "-nhwc.csv"


def test_a_broken_fit_worker_falls_back_to_fitting_here_with_a_warning(tmp_path, monkeypatch):
    """A script without a main guard breaks the spawned worker: the layer fit then runs in the
    calibrating process, and gives what a fit of the layer CSV gives."""
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    import torch_alpha_profiler.calibrate as calibrate_mod

    class BrokenPool:
        def submit(self, *args):
            broken = Future()
            broken.set_exception(BrokenProcessPool("the worker died"))
            return broken

        def shutdown(self, **kwargs):
            pass

    monkeypatch.setattr(calibrate_mod, "_fit_pool", BrokenPool)
    prefix = str(tmp_path / "cpu")
    with one_thread(), pytest.warns(RuntimeWarning, match="__main__"):
        profile = calibrate(prefix, device="cpu", scale=0)
    from torch_alpha_profiler.fit import fit_profile
    from torch_alpha_profiler.tables import read_layer_table

    with one_thread():
        again = fit_profile(read_layer_table(prefix + ".csv"), family="axes")
    assert profile.parameters == again.parameters and profile.ops is not None
