"""calibrate: plan (which layers), timers (how), measure (CSV as it goes, resume), and plan -> measure -> fit."""
import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from torch_alpha_profiler.calibrate import measure
from torch_alpha_profiler.calibrate.measure import RESULT_COLUMNS, build_layer, measure_plan
from torch_alpha_profiler.calibrate.plan import (PLAN_COLUMNS, config_key, fits, macs_of, make_plan, patch_fits,
                                                 patchify_rows, random_rows, row)
from torch_alpha_profiler.calibrate.timers import CpuTimer, CudaGraphTimer, Measurement
from torch_alpha_profiler.families import PaperFamily
from torch_alpha_profiler.fit import fit_profile
from torch_alpha_profiler.tables import parse_layer_table, read_layer_table

from helpers import TRUE_PARAMS, assert_params_close, rows_to_csv

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------- plan
def test_row_fills_strings_and_linear_geometry():
    r = row("s", "Linear", N=8, Cin=64, Cout=32, H=7, K=3, stride=2)
    assert r == {"sweep": "s", "kind": "Linear", "N": "8", "Cin": "64", "Cout": "32", "H": "1", "W": "1",
                 "K1": "1", "K2": "1", "stride": "1", "groups": "1", "padding": "", "dilation": "1",
                 "bias": "1"}
    assert tuple(r) == PLAN_COLUMNS
    assert row("s", N=1, Cin=3, Cout=8, H=5, W=5, K=3, padding=0)["padding"] == "0"
    assert row("s")["bias"] == "0"  # convolutions: no bias unless asked


def test_macs_of_and_fits_by_hand():
    r = row("s", N=2, Cin=4, Cout=8, H=5, W=5, K=3, stride=2)
    # out ceil(5 / 2) = 3: 2 * 3 * 3 * 8 * 4 * 9 = 5184
    assert macs_of(r) == 5184
    dw = row("s", N=1, Cin=32, Cout=32, H=7, W=7, K=3, groups=32)
    assert macs_of(dw) == 49 * 32 * 1 * 9  # 14112
    assert fits(r)
    # 1 * 1 * 1 * 1e6 * 1e6 = 1e12 MACs > MAX_MACS = 2e11
    assert not fits(row("s", "Linear", N=1, Cin=10 ** 6, Cout=10 ** 6))
    # 1 * 4096 * 256 * 256 = 2**28 elements is the limit; 2 * that is not
    assert not fits(row("s", N=2, Cin=4096, Cout=1, H=256, W=256, K=1))


def test_config_key_ignores_the_sweep_name():
    assert config_key(row("a", N=2, Cin=4)) == config_key(row("b", N=2, Cin=4))
    assert config_key(row("a", N=2, Cin=4)) != config_key(row("a", N=2, Cin=5))


def test_tiny_plan():
    p = make_plan(scale=0)
    assert [r["sweep"] for r in p].count("tiny") == 10  # 3 Linear + 6 conv + 1 depthwise
    assert [r["sweep"] for r in p].count("random") == 4
    assert len({config_key(r) for r in p}) == len(p)
    assert all(tuple(r) == PLAN_COLUMNS and fits(r) for r in p)
    assert make_plan(scale=0) == p  # deterministic
    assert make_plan(scale=0, seed=1)[:10] == p[:10] and make_plan(scale=0, seed=1)[10:] != p[10:]
    assert len(make_plan(scale=0, random_count=0)) == 10
    parse_layer_table(rows_to_csv(p, PLAN_COLUMNS))  # a valid layer table


def test_full_plan_covers_every_sweep():
    p = make_plan(scale=1, random_count=50)
    sweeps = {r["sweep"] for r in p}
    for name in ("linear_rows", "linear_cin", "linear_cout", "conv1_hw", "conv3_hw", "conv7_batch",
                 "conv5_cin", "dw_base", "dw_c", "dw_hw", "grouped", "random"):
        assert name in sweeps
    assert len(p) > 1000
    assert len({config_key(r) for r in p}) == len(p)
    assert all(fits(r) or (r["sweep"] == "patchify" and patch_fits(r)) for r in p)
    t = parse_layer_table(rows_to_csv(p, PLAN_COLUMNS))
    assert t.arrays.is_linear.any() and (t.arrays.groups > 1).any() and (t.arrays.K == 49).any()


def test_random_rows_are_reproducible_valid_and_varied():
    rows = random_rows(200, seed=7)
    assert rows == random_rows(200, seed=7) and rows != random_rows(200, seed=8)
    assert len(rows) == 200 and all(fits(r) for r in rows)
    a = parse_layer_table(rows_to_csv(rows, PLAN_COLUMNS)).arrays  # groups divide channels, etc.
    assert 0.1 < a.is_linear.mean() < 0.4
    assert (a.groups > 1).any() and (a.K > 1).any() and (a.K == 1).any() and (a.stride == 2).any()


# ----------------------------------------------------------------- timers
def test_measurement_median_and_iqr():
    m = Measurement((5.0, 1.0, 3.0, 2.0, 4.0), calls_per_block=10)
    # median of 1..5 = 3; quartiles (exclusive method) 1.5 and 4.5 -> IQR 3
    assert m.median_ms == 3.0 and m.iqr_ms == 3.0
    # fewer than 4 samples: the range, 3 - 1 = 2
    assert Measurement((1.0, 3.0, 2.0), 1).iqr_ms == 2.0


class FakeClock:
    """A clock in seconds that advances 1 ms each time the timed function runs."""

    def __init__(self):
        self.t = 0.0
        self.calls = 0

    def __call__(self):
        return self.t

    def fn(self):
        self.calls += 1
        self.t += 1e-3


def test_cpu_timer_with_a_fake_clock():
    clock = FakeClock()
    m = CpuTimer(warmup=2, blocks=3, target_block_ms=5.0, clock=clock).measure(clock.fn)
    # one call = 1 ms, so 5 ms // 1 ms = 5 calls per block, each block 5 ms / 5 = 1 ms per call
    assert m.calls_per_block == 5
    assert m.samples_ms == pytest.approx((1.0, 1.0, 1.0))
    # 2 warm-up + 1 probe + 3 blocks * 5 = 18 calls
    assert clock.calls == 18


def test_cpu_timer_caps_calls_per_block():
    clock = FakeClock()
    m = CpuTimer(warmup=0, blocks=1, target_block_ms=1e6, max_calls=7, clock=clock).measure(clock.fn)
    assert m.calls_per_block == 7 and clock.calls == 1 + 7


def test_cpu_timer_times_a_real_layer():
    layer, x = build_layer(row("s", N=1, Cin=8, Cout=8, H=8, W=8, K=3), "cpu", "float32")
    with torch.no_grad():
        m = CpuTimer(warmup=1, blocks=3, target_block_ms=1.0).measure(lambda: layer(x))
    assert len(m.samples_ms) == 3 and m.median_ms > 0 and m.calls_per_block >= 1


@pytest.mark.cuda
@cuda
def test_cuda_graph_timer_times_a_real_layer():
    layer, x = build_layer(row("s", N=8, Cin=64, Cout=64, H=28, W=28, K=3), "cuda", "float32")
    with torch.no_grad():
        m = CudaGraphTimer(blocks=3).measure(lambda: layer(x))
    assert len(m.samples_ms) == 3 and m.median_ms > 0 and m.calls_per_block >= 1


# ------------------------------------------------------------ build_layer
def test_build_layer_conv_random_inputs_not_zeros():
    layer, x = build_layer(row("s", N=2, Cin=4, Cout=6, H=9, W=9, K=3, stride=2), "cpu", "float32")
    assert isinstance(layer, nn.Conv2d) and not layer.training
    assert x.shape == (2, 4, 9, 9) and x.dtype == torch.float32
    # random normal inputs and initialized weights, not zeros (zeros can hit fast paths)
    assert (x != 0).float().mean() > 0.99 and x.std() > 0.5
    assert (layer.weight != 0).float().mean() > 0.99
    assert (layer.kernel_size, layer.stride, layer.padding) == ((3, 3), (2, 2), (1, 1))
    assert layer(x).shape == (2, 6, 5, 5)  # 'same': ceil(9 / 2) = 5
    assert layer.bias is None


def test_build_layer_pairs_groups_and_padding():
    r = dict(row("s", N=1, Cin=8, Cout=8, H=7, W=7, K=3, groups=4), stride="2x1", padding="1x0",
             dilation="1x2")
    layer, x = build_layer(r, "cpu", "float32")
    assert (layer.stride, layer.padding, layer.dilation, layer.groups) == ((2, 1), (1, 0), (1, 2), 4)
    # H: (7 + 2 - 2 - 1) // 2 + 1 = 4 ; W: (7 - 4 - 1) // 1 + 1 = 3
    assert layer(x).shape == (1, 8, 4, 3)


def test_build_layer_linear_and_dtype():
    layer, x = build_layer(row("s", "Linear", N=5, Cin=16, Cout=3), "cpu", "bfloat16")
    assert isinstance(layer, nn.Linear) and layer.bias is not None
    assert x.shape == (5, 16) and x.dtype == layer.weight.dtype == torch.bfloat16
    assert (x != 0).any() and x.float().std() > 0.5


def test_build_layer_is_seeded():
    r = row("s", N=1, Cin=4, Cout=4, H=5, W=5, K=3)
    (l1, x1), (l2, x2), (_, x3) = (build_layer(r, "cpu", "float32", seed=s) for s in (1, 1, 2))
    assert torch.equal(x1, x2) and torch.equal(l1.weight, l2.weight) and not torch.equal(x1, x3)


# ------------------------------------------------------------ measure_plan
def test_measure_plan_on_cpu_writes_as_it_goes_and_resumes(tmp_path):
    p = make_plan(scale=0)
    out = str(tmp_path / "raw.csv")
    seen = []

    def progress(i, n, r):
        assert n == len(p)
        if 0 < i < n:
            # every row before this one is already on disk (header + i rows)
            with open(out) as f:
                seen.append(sum(1 for _ in f) - 1)

    results = measure_plan(p, out, device="cpu", timer=CpuTimer(warmup=1, blocks=3, target_block_ms=1.0),
                           progress=progress)
    assert seen == list(range(1, len(p)))
    assert len(results) == len(p)
    rows = read_csv(out)
    assert tuple(rows[0]) == RESULT_COLUMNS
    assert [config_key(r) for r in rows] == [config_key(r) for r in p]
    assert all(r["status"] == "ok" and float(r["time_ms"]) > 0 and int(r["calls"]) >= 1
               and r["dtype"] == "float32" for r in rows)
    env = json.load(open(out + ".env.json"))
    assert env["device"] == "cpu" and env["dtype"] == "float32" and env["torch_version"] == torch.__version__
    assert env["device_name"].startswith("CPU")
    # the raw file is a layer table that fit can read
    t = read_layer_table(out)
    assert len(t) == len(p) and np.all(t.time_ms > 0)

    before = open(out).read()
    assert measure_plan(p, out, device="cpu", timer=CpuTimer(warmup=0, blocks=1)) == []  # nothing new
    assert open(out).read() == before

    # a longer plan measures only the new rows, appended
    more = p + [row("extra", N=1, Cin=4, Cout=4, H=4, W=4, K=1)]
    added = measure_plan(more, out, device="cpu", timer=CpuTimer(warmup=0, blocks=1))
    assert [r["sweep"] for r in added] == ["extra"]
    assert len(read_csv(out)) == len(p) + 1


def test_measure_plan_restart_rewrites(tmp_path):
    p = make_plan(scale=0, random_count=0)[:3]
    out = str(tmp_path / "raw.csv")
    timer = CpuTimer(warmup=0, blocks=1, target_block_ms=0.1)
    measure_plan(p, out, device="cpu", timer=timer)
    assert len(measure_plan(p, out, device="cpu", timer=timer, resume=False)) == 3
    assert len(read_csv(out)) == 3


class ScriptedTimer:
    """Fails on chosen rows (by Cin), else returns a fixed time."""

    def __init__(self, errors):
        self.errors, self.current = errors, None

    def progress(self, i, n, r):
        self.current = r

    def measure(self, fn):
        exc = self.errors.get(self.current["Cin"])
        if exc is not None:
            raise exc
        return Measurement((0.5, 0.5, 0.5), 1)


def test_oom_and_errors_are_rows_not_aborts(tmp_path):
    p = [row("s", N=1, Cin=c, Cout=4, H=4, W=4, K=1) for c in (1, 2, 3)]
    out = str(tmp_path / "raw.csv")
    timer = ScriptedTimer({"1": torch.cuda.OutOfMemoryError("out of memory"),
                           "2": RuntimeError("no algorithm, for this shape\nsecond line")})
    measure_plan(p, out, device="cpu", timer=timer, progress=timer.progress)
    rows = read_csv(out)
    assert [r["status"] for r in rows] == ["oom", "error: no algorithm; for this shape", "ok"]
    assert [r["time_ms"] for r in rows] == ["", "", "0.5"]
    # resume: 'oom' and 'ok' rows are done, the error row is tried again
    timer.errors = {}
    again = measure_plan(p, out, device="cpu", timer=timer, progress=timer.progress)
    assert [r["Cin"] for r in again] == ["2"] and again[0]["status"] == "ok"


class PaperTimer:
    """A fake timer whose times come from the paper family with known parameters.

    measure_plan's progress callback tells it which plan row is being measured.
    """

    def __init__(self, params):
        self.params, self.current, self.calls = params, None, 0

    def progress(self, i, n, r):
        self.current = r

    def measure(self, fn):
        out = fn()  # runs on the meta device: shapes only
        self.calls += 1
        arrays = parse_layer_table(rows_to_csv([self.current], PLAN_COLUMNS)).arrays
        assert out.shape[-1] == (int(arrays.Wout[0]) if not arrays.is_linear[0] else int(arrays.Cout[0]))
        ms = float(PaperFamily().predict_ms(arrays, self.params)[0])
        return Measurement((ms * 0.999, ms, ms * 1.001), 1)


def test_plan_measure_fit_recovers_the_fake_devices_parameters(tmp_path):
    p = make_plan(scale=0, random_count=40, seed=3)
    out = str(tmp_path / "raw.csv")
    timer = PaperTimer(TRUE_PARAMS)
    with torch.device("meta"):  # layers built without allocating weights
        measure_plan(p, out, device="meta", timer=timer, progress=timer.progress)
    assert timer.calls == len(p)
    profile = fit_profile(read_layer_table(out), name="fake")
    assert_params_close(profile.parameters, TRUE_PARAMS, rel=1e-3)
    assert profile.provenance["fit"]["mape_pct"] < 1e-3


@pytest.mark.cuda
@cuda
def test_measure_plan_on_cuda_with_the_default_timer(tmp_path):
    p = make_plan(scale=0, random_count=0)
    out = str(tmp_path / "raw.csv")
    measure_plan(p, out, device="cuda")
    rows = read_csv(out)
    assert all(r["status"] == "ok" and float(r["time_ms"]) > 0 for r in rows)
    assert json.load(open(out + ".env.json"))["device_name"] == torch.cuda.get_device_name()


def test_environment_records_math_mode():
    env = measure.environment("cpu", "bfloat16")
    for key in ("date", "torch_version", "tf32", "float32_matmul_precision", "cudnn_benchmark", "host"):
        assert key in env
    assert env["dtype"] == "bfloat16"


def test_resume_into_an_empty_file_writes_the_header(tmp_path):
    out = tmp_path / "raw.csv"
    out.write_text("")
    p = [row("s", N=1, Cin=c, Cout=4, H=4, W=4, K=1) for c in (1, 2)]
    timer = ScriptedTimer({})
    measure_plan(p, str(out), device="cpu", timer=timer, progress=timer.progress)
    rows = read_csv(str(out))
    assert [r["Cin"] for r in rows] == ["1", "2"]


def test_calibrate_from_python_saves_raw_then_profile_and_refuses_to_overwrite(tmp_path):
    from torch_alpha_profiler.calibrate import calibrate

    prefix = str(tmp_path / "cpu-prof")
    profile = calibrate(prefix, device="cpu", family="paper", scale=0)
    assert profile.name == "cpu-prof" and profile.provenance["n_measurements"] == 14  # the tiny plan
    assert (tmp_path / "cpu-prof.csv").exists() and (tmp_path / "cpu-prof.json").exists()
    before = (tmp_path / "cpu-prof.csv").read_text()
    with pytest.raises(FileExistsError):
        calibrate(prefix, device="cpu", family="paper", scale=0)
    assert (tmp_path / "cpu-prof.csv").read_text() == before  # refused before measuring anything
    # an --out in a folder that does not exist yet: the folder is made
    calibrate(str(tmp_path / "new" / "dir" / "p"), device="cpu", family="paper", scale=0, ops=False)
    assert (tmp_path / "new" / "dir" / "p.json").exists()


def test_calibrate_dense_times_more_random_layers_after_the_plan(tmp_path):
    from torch_alpha_profiler.calibrate import calibrate
    from torch_alpha_profiler.calibrate.plan import dense_rows

    prefix = str(tmp_path / "dense")
    profile = calibrate(prefix, device="cpu", family="paper", scale=0, ops=False, dense=3)
    rows = read_csv(prefix + ".csv")
    plan = make_plan(scale=0)
    assert [r["sweep"] for r in rows] == [r["sweep"] for r in plan] + ["dense"] * 3
    assert profile.provenance["n_measurements"] == len(plan) + 3  # fitted with the plan
    keys = [config_key(r) for r in dense_rows(50, exclude={config_key(r) for r in make_plan()})]
    assert len(set(keys)) == 50 and not set(keys) & {config_key(r) for r in make_plan()}


def test_patchify_rows_have_kernel_equal_to_stride_and_no_padding():
    rows = patchify_rows()
    assert rows and all(r["K1"] == r["K2"] == r["stride"] and r["padding"] == "0" for r in rows)
    # vision transformers' patch embedding at batch 32 (fits() alone would drop it: its output is
    # bounded by the input's size there) and ConvNeXt's 2x2 downsampling
    assert {"sweep": "patchify", "N": "32", "Cin": "3", "Cout": "768", "K1": "16", "H": "224"}.items() \
        <= next(r for r in rows if (r["N"], r["Cout"], r["K1"]) == ("32", "768", "16")).items()
    assert any((r["Cin"], r["Cout"], r["K1"]) == ("96", "192", "2") for r in rows)
    t = parse_layer_table(rows_to_csv(rows, PLAN_COLUMNS))
    assert (t.arrays.Hout == t.arrays.Hin // t.arrays.K1).all()
