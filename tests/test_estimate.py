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


def test_training_ops_without_a_training_class_are_listed_not_dropped(tmp_path, capsys):
    import dataclasses

    from torch_alpha_profiler import load_profile

    shipped = load_profile("h100-fp32", warn_device=False)
    ops = dict(shipped.train["ops"], stream={k: v for k, v in shipped.train["ops"]["stream"].items() if k != "norm"},
               operators={k: v for k, v in shipped.train["ops"]["operators"].items() if k != "batch_norm"})
    path = tmp_path / "partial.json"
    dataclasses.replace(shipped, train=dict(shipped.train, ops=ops)).save(str(path))
    (row,) = _json(capsys, ["compare", "resnet18", "--profile", str(path), "--mode", "train", "--format", "json"])
    assert row["not_costed"] == 20  # resnet18's batch norms
    (full,) = _json(capsys, ["compare", "resnet18", "--profile", "h100-fp32", "--mode", "train", "--format", "json"])
    assert full["not_costed"] == 0 and full["train_step_ms"] > row["train_step_ms"]


def test_grid_intensity_zero_is_zero_and_negative_is_refused(capsys):
    (row,) = _json(capsys, ["compare", "resnet18", "--profile", "h100-fp32", "--format", "json",
                            "--grid-intensity", "0"])
    assert row["co2e_g"] == 0.0 and row["energy_j"] > 0
    with pytest.raises(SystemExit):
        main(["compare", "resnet18", "--profile", "h100-fp32", "--grid-intensity", "-5"])
    assert "at least 0" in capsys.readouterr().err


def test_profile_train_json_has_the_step_and_csv_is_refused(capsys):
    doc = _json(capsys, ["profile", "resnet18", "--profile", "h100-fp32", "--mode", "train", "--format", "json"])
    assert doc["train_step_ms"] > doc["predicted_ms"] > 0 and doc["train_energy_j"] > 0
    assert main(["profile", "resnet18", "--profile", "h100-fp32", "--mode", "train", "--format", "csv"]) == 2
    assert "--mode train" in capsys.readouterr().err
    assert main(["estimate", "resnet18", "--profile", "h100-fp32", "--batch", "8", "--samples", "10",
                 "--mode", "infer", "--epochs", "3"]) == 2
    assert "--epochs is for training" in capsys.readouterr().err


def test_fit_names_missing_columns_of_training_and_energy_tables(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("kind,N,Cin,Cout,H,W,K1,K2,time_ms\nConv2d,1,8,8,8,8,3,3,0.01\n"
                     "Conv2d,1,16,16,8,8,3,3,0.02\nConv2d,1,32,32,8,8,3,3,0.03\n")
    ops = tmp_path / "ops.csv"
    ops.write_text("op,d0,d1,d2,d3,cls,ops,nbytes,time_ms,status\nadd,1,8,8,8,elementwise,add,1000,0.01,ok\n")
    train = tmp_path / "train.csv"
    train.write_text("source,kind,N,Cin,Cout,H,W,K1,K2,time_ms\nlayer,Conv2d,1,8,8,8,8,3,3,0.05\n")
    for flag in ("--train", "--energy"):
        assert main(["fit", str(table), "--out", str(tmp_path / "p.json"), "--ops", str(ops), flag, str(train)]) == 2
        err = capsys.readouterr().err
        assert "train.csv: missing column(s) op, d0" in err
