"""Energy per call (the 'power' section: static watts, joules per FLOP and per byte), its fit,
CO2e, and the training-step timing CPU twin."""
import csv
import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from torch_alpha_profiler import AlphaProfiler, load_profile
from torch_alpha_profiler.calibrate.opplan import make_op_plan
from torch_alpha_profiler.calibrate.plan import make_plan
from torch_alpha_profiler.calibrate.timers import CpuTimer
from torch_alpha_profiler.calibrate.train import TRAIN_OP_KINDS, measure_train, train_plan
from torch_alpha_profiler.energy import DEFAULT_GRID_G_PER_KWH, FLOP_CLASSES, co2e_g, energy_j, fit_energy
from torch_alpha_profiler.ops import piece_bytes, piece_macs
from torch_alpha_profiler.powerfit import fit_power
from torch_alpha_profiler.profile import ProfileError, profile_from_dict

# coefficients far from the shipped ones, chosen so that each term weighs on the small layers below
FORWARD = {"static_w": 150.0, "j_per_byte": 2e-8,
           "j_per_flop": {"linear": 3e-8, "conv1x1": 1e-9, "convkxk": 1e-8, "grouped": 2e-9,
                          "depthwise": 4e-9, "matmul": 5e-8, "attention": 6e-8}}
TRAIN = {"static_w": 320.0, "j_per_byte": 7e-8,
         "j_per_flop": {"linear": 9e-8, "convkxk": 2e-8, "matmul": 1e-7}}
POWER = {"idle_w": 70.0, "source": "test", "forward": FORWARD, "train": TRAIN}


@pytest.fixture(scope="module")
def powered():
    return dataclasses.replace(load_profile("h100-fp32", warn_device=False), power=POWER)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)
        self.proj = nn.Parameter(torch.randn(1, 4, 4))

    def forward(self, x):
        h = self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))
        return torch.bmm(h.unsqueeze(0), self.proj)  # a matrix product: an op with FLOPs


def _run(profile):
    model = Net().eval()
    with AlphaProfiler(model, profile=profile) as p, torch.no_grad():
        model(torch.randn(2, 3, 8, 8))
    return p


def _layer_flops_and_bytes(r):
    """FLOPs and bytes (input, output, weights) of a Conv2d/Linear record, by hand."""
    (h, w), (ho, wo), (k1, k2) = r.in_hw, r.out_hw, r.kernel
    per_group = r.in_channels // r.groups
    macs = r.batch * ho * wo * r.out_channels * per_group * k1 * k2
    elements = (r.batch * r.in_channels * h * w + r.batch * r.out_channels * ho * wo
                + r.out_channels * per_group * k1 * k2)
    return 2 * macs, 4 * elements  # float32


def _layer_energy(coeffs, r, ms, bias=True):
    """``ms`` includes a biased Conv2d's bias addition, whose bytes (output read and written, the
    bias read) cost their energy per byte too (``bias`` False: the layer alone)."""
    flops, nbytes = _layer_flops_and_bytes(r)
    if bias and r.kind == "Conv2d" and r.bias:
        nbytes += 4 * (2 * r.batch * r.out_channels * r.out_hw[0] * r.out_hw[1] + r.out_channels)
    return (coeffs["static_w"] * ms / 1e3 + coeffs["j_per_flop"].get(r.cost_class, 0.0) * flops
            + coeffs["j_per_byte"] * nbytes)


def _op_energy(coeffs, o, ms):
    """static x the op's time, plus each piece's bytes and (matrix pieces) FLOPs."""
    joules = coeffs["static_w"] * ms / 1e3
    for piece in o.pieces:
        joules += coeffs["j_per_byte"] * piece_bytes(piece)
        if piece.cls in FLOP_CLASSES:
            joules += coeffs["j_per_flop"].get(piece.cls, 0.0) * 2 * piece_macs(piece)
    return joules


def test_energy_j_is_static_power_plus_per_flop_plus_per_byte():
    out = energy_j(FORWARD, ["linear", "convkxk", "elementwise"], [2.0, 1.0, 0.5], [1e6, 2e6, 0.0],
                   [1e3, 0.0, 4e3])
    assert out == pytest.approx([150 * 2e-3 + 3e-8 * 1e6 + 2e-8 * 1e3, 150e-3 + 1e-8 * 2e6,
                                 150 * 0.5e-3 + 2e-8 * 4e3])
    # a class without a coefficient costs only its time and bytes
    assert energy_j(TRAIN, ["grouped"], [1.0], [1e9], [0.0])[0] == pytest.approx(320e-3)


def test_co2e_of_one_kwh_is_the_grid_intensity():
    assert co2e_g(3.6e6, 400.0) == pytest.approx(400.0)
    assert co2e_g(3.6e6) == pytest.approx(DEFAULT_GRID_G_PER_KWH)


def test_energy_of_each_layer_and_op_is_the_formula(powered):
    p = _run(powered)
    assert [r.cost_class for r in p.records] == ["convkxk", "linear"]
    for r in p.records:
        assert r.flops == _layer_flops_and_bytes(r)[0]
        assert r.energy_j == pytest.approx(_layer_energy(FORWARD, r, r.predicted_ms), rel=1e-9)
    assert {o.op_class for o in p.ops} >= {"norm", "elementwise", "reduce", "matmul"}
    for o in p.ops:
        assert o.energy_j == pytest.approx(_op_energy(FORWARD, o, o.predicted_ms), rel=1e-9), o.op
    (bmm,) = [o for o in p.ops if o.op_class == "matmul"]  # (1 x 2 x 4) @ (1 x 4 x 4), by hand
    assert bmm.energy_j == pytest.approx(150 * bmm.predicted_ms / 1e3 + 5e-8 * 2 * 2 * 4 * 4
                                         + 2e-8 * 4 * (2 * 4 + 4 * 4 + 2 * 4))
    expected = sum(r.energy_j for r in p.records) + sum(o.energy_j for o in p.ops)
    assert p.energy_j == pytest.approx(expected)
    assert p.co2e_g(200.0) == pytest.approx(co2e_g(expected, 200.0))
    s = p.summary(grid_g_per_kwh=200.0)
    assert s["energy_j"] == pytest.approx(expected) and s["grid_g_per_kwh"] == 200.0
    assert s["co2e_g"] == pytest.approx(co2e_g(expected, 200.0))


def test_training_step_energy_uses_the_train_coefficients(powered):
    p = _run(powered)
    ratio = powered.train["no_input_grad_ratio"]
    records = p.train_records()
    # recorded without autograd: the first layer needs no grad-input, its step is ratio x a full one;
    # a biased conv's bias kernels (forward add, backward sum) are single kernels: forward coefficients
    from torch_alpha_profiler.cost import _bias_costs

    for i, r in enumerate(records):
        factor = ratio if i == 0 else 1.0
        bias_ms, bias_j = (v[0] for v in _bias_costs([r], powered, backward=True))
        assert (r.kind == "Conv2d" and r.bias) == (bias_ms > 0)
        own = _layer_energy(TRAIN, r, r.predicted_ms / factor - bias_ms, bias=False)
        assert r.energy_j == pytest.approx(factor * (own + bias_j), rel=1e-9)
    ops = [o for o in p.train_ops() if o.predicted_ms is not None]
    assert ops and all(o.energy_j == pytest.approx(_op_energy(TRAIN, o, o.predicted_ms), rel=1e-9) for o in ops)
    assert p.train_energy_j == pytest.approx(sum(r.energy_j for r in records) + sum(o.energy_j for o in ops))
    assert p.train_energy_j > p.energy_j
    # without training coefficients: no training energy, but still a training time
    forward_only = dataclasses.replace(powered, power={"idle_w": 70.0, "forward": FORWARD})
    q = _run(forward_only)
    assert q.train_energy_j is None and q.train_step_ms == pytest.approx(p.train_step_ms)
    assert q.energy_j == pytest.approx(p.energy_j)


def test_without_power_energy_is_unavailable_not_zero():
    p = _run(dataclasses.replace(load_profile("h100-fp32", warn_device=False), power=None))
    assert p.energy_j is None and p.co2e_g() is None and p.train_energy_j is None
    assert all(r.energy_j is None for r in p.records) and all(o.energy_j is None for o in p.ops)
    s = json.loads(p.to_json())
    assert s["energy_j"] is None and s["co2e_g"] is None


def test_shipped_profiles_have_energy():
    p = _run(load_profile("h100-fp32", warn_device=False))
    assert p.energy_j > 0 and p.train_energy_j > p.energy_j


def test_compare_json_has_energy_and_co2e(tmp_path, capsys, powered):
    from torch_alpha_profiler.cli import main

    path = tmp_path / "powered.json"
    powered.save(str(path))
    assert main(["compare", "resnet18", "--profile", str(path), "--format", "json",
                 "--grid-intensity", "100"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["energy_j"] > 0 and row["co2e_g"] == pytest.approx(co2e_g(row["energy_j"], 100.0))
    assert main(["compare", "resnet18", "--profile", str(path)]) == 0
    assert "GPU energy mJ" in capsys.readouterr().out


def test_a_power_section_survives_a_round_trip(powered):
    again = profile_from_dict(json.loads(json.dumps(powered.to_dict())))
    assert again.power["forward"]["j_per_flop"] == FORWARD["j_per_flop"]
    assert again.power["train"]["static_w"] == TRAIN["static_w"] and again.power["idle_w"] == 70.0


@pytest.mark.parametrize("bad,field", [
    ({"forward": dict(FORWARD, static_w=-1.0)}, "power.forward.static_w"),
    ({"forward": dict(FORWARD, j_per_byte=-1e-9)}, "power.forward.j_per_byte"),
    ({"forward": dict(FORWARD, j_per_flop={"linear": -1e-12})}, "power.forward.j_per_flop.linear"),
    ({"forward": dict(FORWARD, j_per_flop={"warp": 1e-12})}, "power.forward.j_per_flop.warp"),
    ({"forward": dict(FORWARD, j_per_flop=[])}, "power.forward.j_per_flop"),
    ({"forward": {"static_w": 100.0}}, "j_per_byte"),
    ({"forward": FORWARD, "train": []}, "power.train"),
    ({"forward": FORWARD, "train": dict(TRAIN, static_w="high")}, "static_w"),
    ({"idle_w": 70.0, "layers": {"linear": 400.0}}, "power"),  # the old format: no 'forward'
    ([], "power")])
def test_a_corrupt_power_section_names_the_field(powered, bad, field):
    doc = dataclasses.replace(powered, power=bad).to_dict()
    with pytest.raises(ProfileError, match=field.replace(".", r"\.")):
        profile_from_dict(doc)


TRUE = {"static_w": 200.0, "j_per_byte": 1.5e-10,
        "j_per_flop": {"linear": 2e-11, "convkxk": 5e-12, "depthwise": 8e-11, "matmul": 1.5e-11}}


def _synthetic(n=150, seed=1):
    rng = np.random.default_rng(seed)
    classes = rng.choice(["linear", "convkxk", "depthwise", "matmul", "elementwise", "norm"], n).tolist()
    ms = 10 ** rng.uniform(-3, -1, n)
    flops = np.where(np.isin(classes, list(TRUE["j_per_flop"])), 10 ** rng.uniform(6, 10, n), 0.0)
    nbytes = 10 ** rng.uniform(4, 8, n)
    return classes, ms, flops, nbytes, energy_j(TRUE, classes, ms, flops, nbytes)


def test_fit_energy_recovers_known_coefficients():
    classes, ms, flops, nbytes, joules = _synthetic()
    c = fit_energy(classes, ms, flops, nbytes, joules)
    assert c["static_w"] == pytest.approx(TRUE["static_w"], rel=0.01)
    assert c["j_per_byte"] == pytest.approx(TRUE["j_per_byte"], rel=0.01)
    # only the FLOP classes with rows get a coefficient (no conv1x1, no attention here)
    assert set(c["j_per_flop"]) == set(TRUE["j_per_flop"])
    for cls, value in TRUE["j_per_flop"].items():
        assert c["j_per_flop"][cls] == pytest.approx(value, rel=0.01), cls
    fit = c["fit"]
    assert fit["n"] == len(joules) and fit["mape_pct"] < 0.1
    assert fit["weight_exponent"] in (0.0, 0.5, 1.0)
    assert fit["form"] == "static + per FLOP + per byte"
    assert set(fit["cv_weighted_ape_pct"]) == {f"{form}, w={w}" for form in ("static + per FLOP + per byte",
                                                                            "constant power")
                                               for w in ("0.0", "0.5", "1.0")}
    # the fitted coefficients predict the rows through energy_j
    assert energy_j(c, classes, ms, flops, nbytes) == pytest.approx(joules, rel=1e-3)


def test_fit_energy_takes_one_constant_power_where_it_cross_validates_better():
    classes, ms, flops, nbytes, _ = _synthetic()
    joules = 300.0 * ms / 1e3 * (1 + 0.05 * np.sin(np.arange(len(ms))))  # power, nothing per FLOP or byte
    c = fit_energy(classes, ms, flops, nbytes, joules)
    assert c["fit"]["form"] == "constant power" and c["j_per_flop"] == {} and c["j_per_byte"] == 0.0
    assert c["static_w"] == pytest.approx(300.0, rel=0.05)


def test_fit_energy_coefficients_are_never_negative():
    classes, ms, flops, nbytes, joules = _synthetic()
    # energy with no per-byte part and a smaller one than time alone explains: NNLS clips, never < 0
    c = fit_energy(classes, ms, flops, nbytes, 0.5 * 200.0 * ms / 1e3)
    assert c["static_w"] == pytest.approx(100.0, rel=0.01)
    assert c["j_per_byte"] >= 0 and all(v >= 0 for v in c["j_per_flop"].values())
    assert c["j_per_byte"] * np.median(nbytes) < 1e-3 * np.median(joules)


def test_fit_energy_picks_the_weighting_with_the_least_cross_validated_error():
    classes, ms, flops, nbytes, joules = _synthetic()
    # the big calls (which a network's energy is made of) are exact, the small half reads twice
    # its energy (as an overhead would make it): weighting rows by their energy wins
    big = joules >= np.quantile(joules, 0.5)
    noisy = joules * np.where(big, 1.0, 2.0)
    c = fit_energy(classes, ms, flops, nbytes, noisy)
    cv = c["fit"]["cv_weighted_ape_pct"]
    full = "static + per FLOP + per byte"
    assert c["fit"]["weight_exponent"] == 1.0 and c["fit"]["form"] == full
    assert cv[f"{full}, w=1.0"] == min(cv.values()) and cv[f"{full}, w=1.0"] < cv[f"{full}, w=0.0"]
    only = fit_energy(classes, ms, flops, nbytes, noisy, weight_exps=(0.0,))
    assert only["fit"]["weight_exponent"] == 0.0
    assert set(only["fit"]["cv_weighted_ape_pct"]) == {f"{full}, w=0.0", "constant power, w=0.0"}
    # weighting by energy fits the big calls better than the unweighted fit does
    err = {w: np.abs(energy_j(f, classes, ms, flops, nbytes) - noisy)[big].sum()
           for w, f in ((1.0, c), (0.0, only))}
    assert err[1.0] < err[0.0]


# ---- powerfit: energy rows of the calibration (calibrate --energy) ---------------------------

FWD = {"static_w": 180.0, "j_per_byte": 2e-10, "j_per_flop": {"linear": 1e-11, "convkxk": 4e-12, "matmul": 2e-11}}
STEP = {"static_w": 300.0, "j_per_byte": 5e-10, "j_per_flop": {"linear": 3e-11, "convkxk": 9e-12, "matmul": 2e-11}}


def _layer_row(source, kind, n, cin, cout, hw, k, ms, coeffs, busy="0.99", input_grad="1"):
    macs = n * hw * hw * cout * cin * k * k  # stride 1, 'same' padding
    nbytes = 4 * (n * cin * hw * hw + n * cout * hw * hw + cout * cin * k * k)
    cls = "linear" if kind == "Linear" else "convkxk"
    joules = coeffs["static_w"] * ms / 1e3 + coeffs["j_per_flop"][cls] * 2 * macs + coeffs["j_per_byte"] * nbytes
    return {"source": source, "op": "", "d0": "", "d1": "", "d2": "", "d3": "", "sweep": "s", "kind": kind,
            "N": str(n), "Cin": str(cin), "Cout": str(cout), "H": str(hw), "W": str(hw), "K1": str(k),
            "K2": str(k), "stride": "1", "groups": "1", "padding": str(k // 2), "dilation": "1", "bias": "1",
            "dtype": "float32", "layout": "", "time_ms": repr(ms), "input_grad": input_grad, "cls": kind,
            "energy_mj": repr(joules * 1e3), "busy": busy, "status": "ok"}


def _op_rows(source, coeffs, rng):
    """Energy rows of 'add' and 'bmm' ops, and the forward op calibration rows they join to."""
    rows, op_rows = [], []
    for i, (b, m, k, n) in enumerate([(8, 64, 64, 64), (16, 128, 64, 128), (4, 256, 256, 32),
                                      (32, 32, 128, 64), (2, 512, 64, 512), (64, 16, 16, 16)]):
        nbytes, flops = 4 * b * (m * k + k * n + m * n), 2 * b * m * k * n
        op_rows.append({"op": "bmm", "d0": str(b), "d1": str(m), "d2": str(k), "d3": str(n), "cls": "matmul",
                        "nbytes": str(nbytes), "batch": str(b), "m": str(m), "k": str(k), "n": str(n),
                        "dtype": "float32", "time_ms": "0.01", "status": "ok"})
        ms = float(rng.uniform(0.002, 0.05))
        joules = coeffs["static_w"] * ms / 1e3 + coeffs["j_per_flop"]["matmul"] * flops + coeffs["j_per_byte"] * nbytes
        rows.append({"source": source, "op": "bmm", "d0": str(b), "d1": str(m), "d2": str(k), "d3": str(n),
                     "time_ms": repr(ms), "energy_mj": repr(joules * 1e3), "busy": "0.98", "input_grad": "1",
                     "status": "ok"})
    for i, size in enumerate([1, 4, 16, 64, 256, 1024]):
        nbytes = 12 * 1024 * size  # two fp32 inputs and an output of 1024 x size elements
        op_rows.append({"op": "add", "d0": str(size), "d1": "1024", "d2": "1", "d3": "1", "cls": "elementwise",
                        "nbytes": str(nbytes), "batch": "", "m": "", "k": "", "n": "", "dtype": "float32",
                        "time_ms": "0.01", "status": "ok"})
        ms = float(rng.uniform(0.002, 0.05))
        joules = coeffs["static_w"] * ms / 1e3 + coeffs["j_per_byte"] * nbytes
        rows.append({"source": source, "op": "add", "d0": str(size), "d1": "1024", "d2": "1", "d3": "1",
                     "time_ms": repr(ms), "energy_mj": repr(joules * 1e3), "busy": "0.98", "input_grad": "1",
                     "status": "ok"})
    return rows, op_rows


def _energy_rows(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for source, coeffs in (("layer", FWD), ("train_layer", STEP)):
        for n, cin, cout in [(1, 512, 1000), (64, 256, 256), (256, 1024, 512), (8, 2048, 2048), (512, 64, 128)]:
            rows.append(_layer_row(source, "Linear", n, cin, cout, 1, 1, float(rng.uniform(0.003, 0.2)), coeffs))
        for n, cin, cout, hw in [(1, 64, 64, 56), (8, 128, 128, 28), (32, 16, 32, 64), (4, 256, 256, 14),
                                 (16, 32, 32, 32)]:
            rows.append(_layer_row(source, "Conv2d", n, cin, cout, hw, 3, float(rng.uniform(0.003, 0.2)), coeffs))
    fwd_ops, op_rows = _op_rows("op", FWD, rng)
    step_ops, _ = _op_rows("train_op", STEP, rng)
    return rows + fwd_ops + step_ops, op_rows


def test_fit_power_recovers_forward_and_training_coefficients():
    rows, op_rows = _energy_rows()
    power = fit_power(rows, op_rows, "axes", idle_w=65.0, source="e.csv")
    assert power["idle_w"] == 65.0 and power["source"] == "e.csv"
    for phase, truth in (("forward", FWD), ("train", STEP)):
        got = power[phase]
        assert got["fit"]["n"] == 22, phase  # 10 layers, 6 matrix products, 6 additions
        assert got["static_w"] == pytest.approx(truth["static_w"], rel=0.01), phase
        assert got["j_per_byte"] == pytest.approx(truth["j_per_byte"], rel=0.01), phase
        assert set(got["j_per_flop"]) == set(truth["j_per_flop"])
        for cls, value in truth["j_per_flop"].items():
            assert got["j_per_flop"][cls] == pytest.approx(value, rel=0.01), (phase, cls)
    # the section is a valid profile 'power' section
    shipped = load_profile("h100-fp32", warn_device=False)
    assert profile_from_dict(dataclasses.replace(shipped, power=power).to_dict()).power["train"]["static_w"] \
        == pytest.approx(STEP["static_w"], rel=0.01)


def test_fit_power_skips_idle_rows_and_steps_without_input_grad():
    rows, op_rows = _energy_rows()
    clean = fit_power(rows, op_rows, "axes")
    # rows with the device idle a quarter of the time, a step without grad-input, failed rows:
    # wildly wrong energies that would move the coefficients if they were used
    bad = [dict(rows[0], energy_mj="5000", busy="0.5"), dict(rows[7], energy_mj="9000", busy="0.89"),
           dict(rows[12], energy_mj="5000", input_grad="0"), dict(rows[3], energy_mj="5000", status="oom"),
           dict(rows[4], energy_mj="0"), dict(rows[5], time_ms="nan", energy_mj="")]
    dirty = fit_power(rows + bad, op_rows, "axes")
    for phase in ("forward", "train"):
        assert dirty[phase]["fit"]["n"] == clean[phase]["fit"]["n"] == 22
        assert dirty[phase]["static_w"] == pytest.approx(clean[phase]["static_w"], rel=1e-9)
        assert dirty[phase]["j_per_byte"] == pytest.approx(clean[phase]["j_per_byte"], rel=1e-9)
    assert dirty["idle_w"] is None
    # kept, one busy row with a wrong energy moves the fit: the test would see it
    moved = fit_power(rows + [dict(rows[0], energy_mj="5000", busy="0.95")], op_rows, "axes")
    assert moved["forward"]["fit"]["n"] == 23 and moved["forward"]["fit"]["max_ape_pct"] > 50
    assert clean["forward"]["fit"]["max_ape_pct"] < 1e-3 and dirty["forward"]["fit"]["max_ape_pct"] < 1e-3


def test_fit_power_needs_eight_usable_forward_rows():
    rows, op_rows = _energy_rows()
    idle = [dict(r, busy="0.5") if not r["source"].startswith("train") else r for r in rows]
    with pytest.raises(ValueError, match="fewer than 8 usable forward rows"):
        fit_power(idle, op_rows, "axes", source="e.csv")
    # without training rows the section has only the forward
    power = fit_power([r for r in rows if not r["source"].startswith("train")], op_rows, "axes")
    assert "forward" in power and "train" not in power


def _tiny_layer_table(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("kind,N,Cin,Cout,H,W,K1,K2,time_ms\nConv2d,1,8,8,8,8,3,3,0.01\n"
                     "Conv2d,1,16,16,8,8,3,3,0.02\nConv2d,1,32,32,8,8,3,3,0.03\n")
    return table


@pytest.mark.parametrize("flag", ["--energy", "--train"])
def test_fit_energy_and_train_need_the_op_rows(tmp_path, capsys, flag):
    from torch_alpha_profiler.cli import main

    table = _tiny_layer_table(tmp_path)
    rows = tmp_path / "rows.csv"
    rows.write_text("source,time_ms,energy_mj\nlayer,0.01,1.0\n")
    assert main(["fit", str(table), "--out", str(tmp_path / "p.json"), flag, str(rows)]) == 2
    assert "need --ops" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


def test_the_removed_power_flag_is_refused(tmp_path, capsys):
    from torch_alpha_profiler.cli import main

    with pytest.raises(SystemExit) as e:
        main(["fit", str(_tiny_layer_table(tmp_path)), "--out", str(tmp_path / "p.json"), "--power"])
    assert e.value.code == 2 and "--power" in capsys.readouterr().err


def test_train_plan_takes_subsets_and_only_trainable_op_kinds():
    layers, ops = make_plan(scale=0), make_op_plan(per_kind=2, matmuls=2, attention=2, max_elements=2 ** 12)
    plan = train_plan(layers, ops, layer_every=2, op_every=1, no_input_grad_share=0.5)
    with_grad = [r for r in plan if r["source"] == "layer" and r["input_grad"] == "1"]
    without = [r for r in plan if r["source"] == "layer" and r["input_grad"] == "0"]
    assert len(with_grad) == len(layers[::2])
    # about half of them, drawn at random (seeded: the same draw each time), plus those taking an image
    images = [r for r in with_grad if r["kind"] == "Conv2d" and int(r["Cin"]) <= 4]
    key = [{k: v for k, v in r.items() if k != "input_grad"} for r in without]
    assert 0 < len(without) < len(with_grad) + len(images)
    assert all({k: v for k, v in r.items() if k != "input_grad"} in key for r in images)
    assert plan == train_plan(layers, ops, layer_every=2, op_every=1, no_input_grad_share=0.5)
    assert all(r["input_grad"] == "1" for r in plan if r["source"] == "op")
    assert {r["op"] for r in plan if r["source"] == "op"} == set(TRAIN_OP_KINDS)
    assert not any(k.endswith("_") for k in TRAIN_OP_KINDS)  # in-place kinds cannot take a grad leaf


def test_train_plan_draw_keeps_its_share_and_survives_appended_rows():
    from torch_alpha_profiler.calibrate.plan import patchify_rows, takes_image

    full = make_plan()
    v3 = [r for r in full if r["sweep"] != "patchify"]

    def drawn(layers):
        return {tuple(sorted(r.items())) for r in train_plan(layers, [], no_input_grad_share=1 / 3)
                if r["input_grad"] == "0" and not takes_image(r)}

    share = len(drawn(full)) / sum(not takes_image(r) for r in full)
    assert abs(share - 1 / 3) < 0.03
    # appending rows (plan v4's patch embeddings) leaves the draw of the earlier rows as it was
    assert drawn(v3) <= drawn(full) and drawn(full) - drawn(v3) <= drawn(patchify_rows())


def test_measure_train_on_cpu_writes_rows_and_resumes(tmp_path):
    plan = train_plan(make_plan(scale=0)[:4], make_op_plan(per_kind=1, matmuls=1, attention=1,
                                                           max_elements=2 ** 12), layer_every=1, op_every=4)
    out = str(tmp_path / "train.csv")
    timer = CpuTimer(warmup=1, blocks=2, target_block_ms=0.5, max_calls=5)
    rows = measure_train(plan, out, device="cpu", timer=timer)
    assert len(rows) == len(plan) and all(r["status"] == "ok" and float(r["time_ms"]) > 0 for r in rows)
    assert {r["cls"] for r in rows if r["source"] == "layer"} <= {"Conv2d", "Linear"}
    assert measure_train(plan, out, device="cpu", timer=timer) == []  # resumed: nothing left to time


def test_fit_names_a_malformed_number_in_an_op_table(tmp_path, capsys):
    from torch_alpha_profiler.cli import main

    table = _tiny_layer_table(tmp_path)
    ops = tmp_path / "ops.csv"
    ops.write_text("op,cls,ops,nbytes,time_ms,status\nadd,elementwise,add,1000,0.01,ok\n"
                   "add,elementwise,add,abc,0.01,ok\nadd,elementwise,add,,,oom\n")
    assert main(["fit", str(table), "--out", str(tmp_path / "p.json"), "--ops", str(ops)]) == 2
    assert "ops.csv line 3: column 'nbytes' must be a number, got 'abc'" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


def test_fit_names_a_csv_that_is_not_utf8(tmp_path, capsys):
    from torch_alpha_profiler.cli import main

    table = _tiny_layer_table(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"op,cls\n\xff\xfe,1\n")
    assert main(["fit", str(table), "--out", str(tmp_path / "p.json"), "--ops", str(bad)]) == 2
    assert f"{bad}: not UTF-8 text" in capsys.readouterr().err
    assert main(["fit", str(bad), "--out", str(tmp_path / "p.json")]) == 2  # as the layer table too
    assert f"{bad}: not UTF-8 text" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


def test_fit_names_the_file_line_of_a_malformed_training_layer_row(tmp_path, capsys):
    """The training rows are parsed as a layer table of their measured rows; an error names the
    training file's own line, not the line in that derived table."""
    from torch_alpha_profiler.cli import main

    data = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "data")
    with open(os.path.join(data, "calib-float32-train.csv"), newline="") as f:
        rows = list(csv.DictReader(f))[:60]
    rows[1] = dict(rows[1], status="oom", time_ms="")  # not measured: not in the derived table
    rows[41] = dict(rows[41], N="abc")
    assert rows[41]["source"] == "layer"
    train = tmp_path / "train.csv"
    with open(train, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    code = main(["fit", str(_tiny_layer_table(tmp_path)), "--out", str(tmp_path / "p.json"),
                 "--ops", os.path.join(data, "calib-float32-ops.csv"), "--train", str(train)])
    assert code == 2
    assert f"{train} line 43: column 'N' must be a positive integer, got 'abc'" in capsys.readouterr().err
