"""Energy per call (power sections of profiles), CO2e, and the training-step timing CPU twin."""
import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

from torch_alpha_profiler import AlphaProfiler, load_profile
from torch_alpha_profiler.calibrate.opplan import make_op_plan
from torch_alpha_profiler.calibrate.plan import make_plan
from torch_alpha_profiler.calibrate.timers import CpuTimer
from torch_alpha_profiler.calibrate.train import TRAIN_OP_KINDS, measure_train, train_plan
from torch_alpha_profiler.energy import DEFAULT_GRID_G_PER_KWH, class_power, co2e_g
from torch_alpha_profiler.profile import ProfileError, profile_from_dict

POWER = {"idle_w": 70.0, "layers": {"linear": 400.0, "conv1x1": 500.0, "convkxk": 600.0, "grouped": 300.0,
                                    "depthwise": 350.0},
         "ops": {"elementwise": 250.0, "norm": 260.0, "reduce": 240.0, "pool": 230.0, "copy": 220.0,
                 "matmul": 450.0, "attention": 500.0}}


@pytest.fixture(scope="module")
def powered():
    return dataclasses.replace(load_profile("h100-fp32", warn_device=False), power=POWER)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def _run(profile):
    model = Net().eval()
    with AlphaProfiler(model, profile=profile) as p, torch.no_grad():
        model(torch.randn(2, 3, 8, 8))
    return p


def test_class_power_is_the_ratio_of_sums():
    t = np.array([1.0, 3.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0])
    e = np.array([100.0, 500.0, 200.0, 200.0, 50.0, 50.0, 50.0, 50.0])  # mJ per call
    cls = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    out = class_power(t, e, cls, ("a", "b"))
    assert out["a"] == {"power_w": pytest.approx(1000 / 8), "n": 4}  # mJ / ms = W
    assert out["b"]["power_w"] == pytest.approx(50.0)


def test_co2e_of_one_kwh_is_the_grid_intensity():
    assert co2e_g(3.6e6, 400.0) == pytest.approx(400.0)
    assert co2e_g(3.6e6) == pytest.approx(DEFAULT_GRID_G_PER_KWH)


def test_energy_is_power_times_predicted_time_per_layer_and_op(powered):
    p = _run(powered)
    by_layer = {"Conv2d": POWER["layers"]["convkxk"], "Linear": POWER["layers"]["linear"]}
    expected = sum(by_layer[r.kind] * r.predicted_ms / 1e3 for r in p.records)
    expected += sum(POWER["ops"][o.op_class] * o.predicted_ms / 1e3 for o in p.ops)
    assert p.ops and p.energy_j == pytest.approx(expected)
    assert all(r.energy_j == pytest.approx(by_layer[r.kind] * r.predicted_ms / 1e3) for r in p.records)
    assert p.co2e_g(200.0) == pytest.approx(co2e_g(expected, 200.0))
    s = p.summary(grid_g_per_kwh=200.0)
    assert s["energy_j"] == pytest.approx(expected) and s["grid_g_per_kwh"] == 200.0
    assert s["co2e_g"] == pytest.approx(co2e_g(expected, 200.0))


def test_without_power_energy_is_unavailable_not_zero():
    p = _run(load_profile("h100-fp32", warn_device=False))
    assert p.energy_j is None and p.co2e_g() is None
    assert all(r.energy_j is None for r in p.records)
    s = json.loads(p.to_json())
    assert s["energy_j"] is None and s["co2e_g"] is None


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


@pytest.mark.parametrize("bad,field", [({"layers": {"linear": -1.0}}, "power.layers.linear"),
                                       ({"ops": []}, "power.ops"), ([], "power")])
def test_a_corrupt_power_section_names_the_field(powered, bad, field):
    doc = dataclasses.replace(powered, power=bad).to_dict()
    with pytest.raises(ProfileError, match=field.replace(".", r"\.")):
        profile_from_dict(doc)


def test_fit_power_needs_the_op_rows(tmp_path, capsys):
    from torch_alpha_profiler.cli import main

    table = tmp_path / "t.csv"
    table.write_text("kind,N,Cin,Cout,H,W,K1,K2,time_ms\nConv2d,1,8,8,8,8,3,3,0.01\n"
                     "Conv2d,1,16,16,8,8,3,3,0.02\nConv2d,1,32,32,8,8,3,3,0.03\n")
    assert main(["fit", str(table), "--out", str(tmp_path / "p.json"), "--power"]) == 2
    assert "--power needs --ops" in capsys.readouterr().err


def test_train_plan_takes_subsets_and_only_trainable_op_kinds():
    layers, ops = make_plan(scale=0), make_op_plan(per_kind=2, matmuls=2, attention=2, max_elements=2 ** 12)
    plan = train_plan(layers, ops, layer_every=2, op_every=1, no_input_grad_every=3)
    with_grad = [r for r in plan if r["source"] == "layer" and r["input_grad"] == "1"]
    without = [r for r in plan if r["source"] == "layer" and r["input_grad"] == "0"]
    assert len(with_grad) == len(layers[::2]) and len(without) == len(with_grad[::3])
    assert all(r["input_grad"] == "1" for r in plan if r["source"] == "op")
    assert {r["op"] for r in plan if r["source"] == "op"} == set(TRAIN_OP_KINDS)
    assert not any(k.endswith("_") for k in TRAIN_OP_KINDS)  # in-place kinds cannot take a grad leaf


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

    table = tmp_path / "t.csv"
    table.write_text("kind,N,Cin,Cout,H,W,K1,K2,time_ms\nConv2d,1,8,8,8,8,3,3,0.01\n"
                     "Conv2d,1,16,16,8,8,3,3,0.02\nConv2d,1,32,32,8,8,3,3,0.03\n")
    ops = tmp_path / "ops.csv"
    ops.write_text("op,cls,ops,nbytes,time_ms,status\nadd,elementwise,add,1000,0.01,ok\n"
                   "add,elementwise,add,abc,0.01,ok\nadd,elementwise,add,,,oom\n")
    assert main(["fit", str(table), "--out", str(tmp_path / "p.json"), "--ops", str(ops)]) == 2
    assert "ops.csv line 3: column 'nbytes' must be a number, got 'abc'" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()
