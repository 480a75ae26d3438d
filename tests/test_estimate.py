"""The training-step mode of profile/compare and the run estimate command."""
import json
import math

import pytest

from torch_alpha_profiler.cli import main
from torch_alpha_profiler.energy import co2e_g


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_compare_train_mode_ranks_by_training_step(capsys):
    rows = _json(capsys, ["compare", "resnet18", "mobilenet_v3_small", "--profile", "h100-fp32", "--batch", "8",
                          "--mode", "train", "--format", "json"])
    for r in rows:
        assert r["predicted_ms"] == r["train_step_ms"] > r["gpu_ms"] > 0
        assert r["train_energy_j"] > r["energy_j"] > 0
    gpu = _json(capsys, ["compare", "resnet18", "--profile", "h100-fp32", "--batch", "8", "--format", "json"])
    assert gpu[0]["train_step_ms"] is None and gpu[0]["train_energy_j"] is None


def test_train_mode_needs_training_classes_and_every_operation(capsys):
    assert main(["compare", "resnet18", "--profile", "t2000-paper", "--mode", "train"]) == 2
    assert "training-step classes" in capsys.readouterr().err
    assert main(["compare", "resnet18", "--profile", "h100-fp32", "--mode", "train", "--scope", "layers"]) == 2
    assert "--scope model" in capsys.readouterr().err


def test_profile_table_states_the_training_step(capsys):
    assert main(["profile", "resnet18", "--profile", "h100-bf16", "--batch", "4", "--mode", "train"]) == 0
    out = capsys.readouterr().out
    assert "predicted training step (forward + backward, no optimizer step" in out


def test_estimate_multiplies_the_step_out_to_the_run(capsys):
    step = _json(capsys, ["compare", "resnet18", "--profile", "h100-fp32", "--batch", "32", "--mode", "train",
                          "--format", "json"])[0]
    est = _json(capsys, ["estimate", "resnet18", "--profile", "h100-fp32", "--batch", "32", "--samples", "1000",
                         "--epochs", "3", "--grid-intensity", "100", "--format", "json"])
    assert est["steps"] == math.ceil(1000 / 32) * 3
    assert est["step_ms"] == pytest.approx(step["train_step_ms"])
    assert est["hours"] == pytest.approx(est["steps"] * step["train_step_ms"] / 3.6e6)
    assert est["kwh"] == pytest.approx(est["steps"] * step["train_energy_j"] / 3.6e6)
    assert est["kg_co2e"] * 1e3 == pytest.approx(co2e_g(est["kwh"] * 3.6e6, 100.0))
    assert any("optimizer" in a for a in est["assumptions"])


def test_estimate_infer_uses_the_forward(capsys):
    fwd = _json(capsys, ["compare", "resnet18", "--profile", "h100-fp32", "--batch", "16", "--format", "json"])[0]
    est = _json(capsys, ["estimate", "resnet18", "--profile", "h100-fp32", "--batch", "16", "--samples", "100",
                         "--mode", "infer", "--format", "json"])
    assert est["steps"] == 7 and est["epochs"] == 1
    assert est["step_ms"] == pytest.approx(fwd["gpu_ms"]) and est["step_energy_j"] == pytest.approx(fwd["energy_j"])
    assert not any(a.startswith("training") for a in est["assumptions"])
    assert main(["estimate", "resnet18", "--profile", "h100-fp32", "--batch", "16", "--samples", "100"]) == 0
    text = capsys.readouterr().out
    assert "kWh" in text and "kg CO2e" in text and "assumptions:" in text


def test_estimate_errors_name_the_problem(capsys):
    assert main(["estimate", "resnet18", "--profile", "t2000-paper", "--batch", "8", "--samples", "10"]) == 2
    assert "training-step classes" in capsys.readouterr().err
    assert main(["estimate", "resnet18", "--profile", "t2000-paper", "--batch", "8", "--samples", "10",
                 "--mode", "infer"]) == 2
    assert "no op classes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["estimate", "resnet18", "--profile", "h100-fp32", "--batch", "0", "--samples", "10"])
