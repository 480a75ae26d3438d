"""The energy stage of calibration: PowerMeter (CPU twin, a fake stepping counter) and the energy plan."""
import csv
import time

import pytest

from torch_alpha_profiler.calibrate.opplan import make_op_plan
from torch_alpha_profiler.calibrate.plan import make_plan
from torch_alpha_profiler.calibrate.power import PowerMeter, energy_plan, measure_energy
from torch_alpha_profiler.calibrate.train import train_plan


def stepping_counter(watts, period_s, clock=time.perf_counter):
    """An energy counter (J) of a device drawing ``watts``, advancing every ``period_s`` only."""
    t0 = clock()

    def read():
        return watts * ((clock() - t0) // period_s) * period_s

    return read


def test_power_meter_recovers_the_power_behind_a_stepping_counter():
    meter = PowerMeter(stepping_counter(250.0, 0.02), seconds=0.2, warmup_s=0.0, chunk_ms=1.0, cuda=False)
    r = meter.measure(lambda: sum(range(200)))
    assert r.watts == pytest.approx(250.0, rel=0.05)
    assert r.steps >= 3 and r.window_s >= 0.2
    assert r.ms_per_call > 0 and r.joules_per_call == pytest.approx(r.watts * r.ms_per_call / 1e3)


def test_power_meter_idle_and_a_stuck_counter():
    idle = PowerMeter(stepping_counter(60.0, 0.01), seconds=0.1, warmup_s=0.0, chunk_ms=1.0, cuda=False)
    assert idle.measure(None).watts == pytest.approx(60.0, rel=0.1)
    stuck = PowerMeter(lambda: 5.0, seconds=0.05, max_seconds=0.1, cuda=False)
    with pytest.raises(RuntimeError, match="energy counter advanced 0 time"):
        stuck.measure(lambda: None)


def test_energy_plan_takes_forward_op_and_training_subsets():
    layers = make_plan(scale=0)
    ops = make_op_plan(per_kind=2, matmuls=2, attention=2, max_elements=2 ** 12)
    train = train_plan(layers, ops, layer_every=2, op_every=1)
    plan = energy_plan(layers, ops, train, layer_every=3, op_every=2, train_every=2)
    sources = [r["source"] for r in plan]
    assert sources.count("layer") == len(layers[::3])
    trains = [r for r in train if r["input_grad"] != "0"]  # the energy fit leaves out no-input-grad steps
    assert sources.count("train_layer") + sources.count("train_op") == len(trains[::2])
    assert all(r["input_grad"] != "0" for r in plan if r["source"].startswith("train_"))
    assert sources.count("op") > 0 and all(r["op"] not in ("view", "permute") for r in plan if r["source"] == "op")


def test_measure_energy_on_cpu_writes_power_per_row_and_resumes(tmp_path):
    layers = make_plan(scale=0)[:3]
    ops = make_op_plan(per_kind=1, matmuls=1, attention=1, max_elements=2 ** 10)
    plan = energy_plan(layers, ops[:3], train_plan(layers, ops[:3], layer_every=1, op_every=1),
                       layer_every=1, op_every=1, train_every=2)
    out = str(tmp_path / "energy.csv")
    meter = PowerMeter(stepping_counter(100.0, 0.01), seconds=0.08, warmup_s=0.0, chunk_ms=0.5, cuda=False)
    rows = measure_energy(plan, out, meter, device="cpu")
    assert len(rows) == len(plan) and all(r["status"] == "ok" for r in rows)
    with open(out, newline="") as f:
        saved = list(csv.DictReader(f))
    assert {r["source"] for r in saved} == {"layer", "op", "train_layer", "train_op"}
    for r in saved:
        assert float(r["watts"]) == pytest.approx(100.0, rel=0.5)  # a loaded CPU polls late
        assert float(r["energy_mj"]) == pytest.approx(float(r["watts"]) * float(r["time_ms"]), rel=1e-3)
    assert measure_energy(plan, out, meter, device="cpu") == []  # resumed: nothing left
