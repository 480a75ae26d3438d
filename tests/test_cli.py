"""cli: every subcommand through main([...]), user errors as one line with exit status 2."""
import csv
import io
import json
import os
import subprocess
import sys

import pytest
import torch

from torch_alpha_profiler import cli
from torch_alpha_profiler import profile as profile_mod
from torch_alpha_profiler.calibrate.plan import PLAN_COLUMNS, make_plan
from torch_alpha_profiler.families import FAMILIES, PaperFamily
from torch_alpha_profiler.profile import load_profile
from torch_alpha_profiler.report import CSV_COLUMNS
from torch_alpha_profiler.tables import parse_layer_table

from helpers import REPO_ROOT, TRUE_PARAMS, assert_params_close, rows_to_csv


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    monkeypatch.setattr(profile_mod, "current_device_name", lambda: None)


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def torch_flops(name, batch=1):
    """Conv + matmul FLOPs of a torchvision model, counted by torch itself."""
    from torch.utils.flop_counter import FlopCounterMode

    from torch_alpha_profiler.zoo import build_model

    model = build_model(name, "meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.empty(batch, 3, 224, 224, device="meta"))
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    return sum(counts.get(op, 0) for op in ("aten.convolution", "aten.mm", "aten.addmm"))


@pytest.fixture(scope="module")
def flops():
    return {name: torch_flops(name) for name in ("resnet18", "mobilenet_v3_large")}


# ------------------------------------------------------------------ compare
def test_compare_prints_a_table(capsys):
    rc, out, err = run(capsys, "compare", "resnet18", "mobilenet_v3_large", "--profile", "t2000-paper")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("profile t2000-paper (Quadro T2000)")
    assert "Conv2d and Linear layers only" in lines[0]  # the T2000 profile costs no other operation
    for col in ("model", "batch", "GFLOPs (2xMAC)", "alpha-GFLOPs", "predicted gpu ms", "rank by FLOPs",
                "rank by time"):
        assert col in lines[1]
    body = [line.split() for line in lines[3:]]
    assert [row[0] for row in body] == ["mobilenet_v3_large", "resnet18"]  # sorted by predicted time
    assert body[1][2] == "3.628"  # resnet18: 3.628 GFLOPs at 224x224


def test_compare_json(capsys, flops):
    rc, out, _ = run(capsys, "compare", "resnet18", "mobilenet_v3_large", "--profile", "t2000-paper",
                     "--format", "json")
    assert rc == 0
    rows = json.loads(out)
    assert isinstance(rows, list) and len(rows) == 2
    for r in rows:
        assert {"model", "batch", "flops", "alpha_flops", "predicted_ms"} <= set(r)
        assert r["batch"] == 1 and r["flops"] == flops[r["model"]]
        assert 0 < r["alpha_flops"] < r["flops"] and r["predicted_ms"] > 0
    assert [r["model"] for r in rows] == ["mobilenet_v3_large", "resnet18"]


def test_compare_several_batches_csv(capsys, flops):
    rc, out, _ = run(capsys, "compare", "resnet18", "--batch", "1", "4", "--format", "csv", "--sort", "flops")
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["model"], r["batch"]) for r in rows] == [("resnet18", "1"), ("resnet18", "4")]
    assert int(rows[1]["flops"]) == 4 * int(rows[0]["flops"]) == 4 * flops["resnet18"]
    assert float(rows[1]["predicted_ms"]) < 4 * float(rows[0]["predicted_ms"])  # batching pays


# ------------------------------------------------------------------ profile
def test_profile_csv(capsys, flops):
    rc, out, _ = run(capsys, "profile", "resnet18", "--format", "csv")
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert tuple(rows[0]) == CSV_COLUMNS
    # conv1 + 8 blocks x 2 convs + 3 downsample convs + fc = 21 layers
    assert len(rows) == 21 and rows[0]["name"] == "conv1" and rows[-1]["name"] == "fc"
    assert (rows[0]["K1"], rows[0]["stride"], rows[0]["padding"], rows[0]["Hout"]) == ("7", "2", "3", "112")
    assert sum(int(r["flops"]) for r in rows) == flops["resnet18"]


def test_profile_table_depth_and_top_k(capsys):
    rc, out, _ = run(capsys, "profile", "resnet18", "--batch", "2", "--depth", "1", "--top-k", "3")
    assert rc == 0
    assert out.splitlines()[0].startswith("resnet18, batch 2, profile t2000-paper")
    names = [line.split()[0] for line in out.splitlines()[3:]]
    # depth 1: conv1, layer1..4, fc = 6 rows; the 3 slowest, then (3 others), the total, what it covers
    assert names == ["layer4", "layer3", "layer2", "(3", "total", "predicted"]
    assert out.splitlines()[-1].startswith("predicted GPU time")


def test_profile_json_to_file_with_input_size(capsys, tmp_path):
    path = tmp_path / "r.json"
    rc, out, _ = run(capsys, "profile", "resnet18", "--format", "json", "--input-size", "112", "--out", str(path))
    assert rc == 0 and out == ""
    doc = json.loads(path.read_text())
    assert doc["records"][0]["input_shape"] == [1, 3, 112, 112] and doc["layers"] == 21


# ------------------------------------------------------------- fit / predict
@pytest.fixture
def measured_csv(tmp_path):
    """A layer table whose times come from the paper family with TRUE_PARAMS, plus a name column."""
    plan = make_plan(scale=0, random_count=40, seed=3)
    arrays = parse_layer_table(rows_to_csv(plan, PLAN_COLUMNS)).arrays
    ms = PaperFamily().predict_ms(arrays, TRUE_PARAMS)
    path = tmp_path / "measured.csv"
    path.write_text(rows_to_csv(plan, PLAN_COLUMNS, {"time_ms": [f"{t:.9g}" for t in ms],
                                                     "name": [f"layer{i}" for i in range(len(plan))]}))
    return str(path), ms


def test_fit_then_predict_round_trip(capsys, tmp_path, measured_csv):
    table, ms = measured_csv
    prof = str(tmp_path / "fake-gpu.json")
    rc, out, err = run(capsys, "fit", table, "--out", prof, "--device-name", "Fake GPU")
    assert rc == 0 and out == ""
    assert err.startswith("fitted paper on 50 layers: MAPE 0.0%") and prof in err
    p = load_profile(prof)
    assert p.name == "fake-gpu" and p.device_name == "Fake GPU" and p.provenance["source"] == table
    assert_params_close(p.parameters, TRUE_PARAMS, rel=1e-3)

    pred = str(tmp_path / "pred.csv")
    rc, out, err = run(capsys, "predict", "--profile", prof, "--csv", table, "--out", pred)
    assert rc == 0 and out == "" and "predicted 50 layers" in err
    rows = list(csv.DictReader(open(pred)))
    assert list(rows[0])[-4:] == ["flops", "alpha", "alpha_flops", "predicted_ms"]
    assert [r["name"] for r in rows] == [f"layer{i}" for i in range(50)]
    assert rows[0]["sweep"] == "tiny" and rows[0]["time_ms"] == f"{ms[0]:.9g}"
    for r in rows:
        assert float(r["predicted_ms"]) == pytest.approx(float(r["time_ms"]), rel=1e-3)

    rc, out, _ = run(capsys, "predict", "--profile", prof, "--csv", table)  # to stdout
    assert rc == 0 and list(csv.DictReader(io.StringIO(out)))[5]["name"] == "layer5"


def test_fit_takes_provenance_from_env_json_and_refuses_to_overwrite(capsys, tmp_path, measured_csv):
    table, _ = measured_csv
    with open(table + ".env.json", "w") as f:
        json.dump({"device_name": "Env GPU", "dtype": "bfloat16", "torch_version": "9.9"}, f)
    prof = str(tmp_path / "p.json")
    assert run(capsys, "fit", table, "--out", prof, "--name", "given")[0] == 0
    p = load_profile(prof)
    assert (p.name, p.device_name, p.dtype, p.provenance["torch_version"]) == ("given", "Env GPU", "bfloat16", "9.9")
    before = open(prof).read()
    rc, out, err = run(capsys, "fit", table, "--out", prof, "--device-name", "Other")
    assert rc == 2 and "exists" in err and err.count("\n") == 1
    assert open(prof).read() == before  # the user's file is untouched
    assert run(capsys, "fit", table, "--out", prof, "--device-name", "Other", "--force")[0] == 0
    assert load_profile(prof).device_name == "Other"


def test_fit_out_without_json_suffix_is_loadable(capsys, tmp_path, measured_csv):
    table, _ = measured_csv
    prof = str(tmp_path / "prof")
    assert run(capsys, "fit", table, "--out", prof)[0] == 0
    assert load_profile(prof).name == "prof"


# ------------------------------------------------------------------ profiles
def test_profiles_lists_builtins(capsys):
    rc, out, _ = run(capsys, "profiles")
    assert rc == 0
    assert out.splitlines()[0].split()[:4] == ["profile", "family", "device", "dtype"]
    t2000 = [line for line in out.splitlines() if line.startswith("t2000-paper")]
    assert len(t2000) == 1 and "Quadro T2000" in t2000[0] and "2021-10-04" in t2000[0]
    # the H100 profiles carry the neighbour correction, the paper's constants none
    assert "correction" in out.splitlines()[0] and "neighbours" not in t2000[0]
    assert all("trees + neighbours" in line for line in out.splitlines() if line.startswith("h100-"))


def test_module_entry_point_in_a_subprocess():
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "torch_alpha_profiler", "profiles"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "t2000-paper" in proc.stdout and "Quadro T2000" in proc.stdout
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- calibrate
def test_calibrate_on_cpu_end_to_end(capsys, tmp_path):
    prefix = str(tmp_path / "cpu")
    rc, out, err = run(capsys, "calibrate", "--device", "cpu", "--scale", "0", "--family", "paper",
                       "--out", prefix, "--quiet")
    assert rc == 0, err
    assert "measured 14 layers" in err and "fitted paper" in err
    assert os.path.exists(prefix + ".csv") and os.path.exists(prefix + ".csv.env.json")
    p = load_profile(prefix + ".json")
    assert p.name == "cpu" and p.device_name.startswith("CPU") and p.provenance["n_measurements"] == 14
    # a second run resumes (measures nothing) and will not replace the profile without --force
    rc, _, err = run(capsys, "calibrate", "--device", "cpu", "--scale", "0", "--family", "paper",
                     "--out", prefix, "--quiet")
    assert rc == 2 and "exists" in err and "Traceback" not in err


def test_calibrate_default_family_is_registered():
    args = cli.create_parser().parse_args(["calibrate", "--out", "x"])
    assert args.family in FAMILIES
    assert cli.create_parser().parse_args(["fit", "t.csv", "--out", "x"]).family in FAMILIES


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_calibrate_on_cuda_without_gpu_is_a_user_error(capsys, tmp_path):
    rc, out, err = run(capsys, "calibrate", "--out", str(tmp_path / "x"))
    assert rc == 2 and err == "alpha-profiler: error: --device cuda, but no CUDA device is available\n"
    assert not os.listdir(tmp_path)  # nothing written


# ---------------------------------------------------------------- bad input
@pytest.fixture
def files(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("Cin,Cout,H,W,K1,K2\n8,8,7,7,3,3\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("Cin,Cout,H,W,K1,K2\n8,8,7,7,3,3\n8,8,7,seven,3,3\n")
    timed = tmp_path / "timed.csv"
    timed.write_text("Cin,Cout,H,W,K1,K2,time_ms\n8,8,7,7,3,3,0.1\n8,8,14,14,3,3,0.2\n")
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"schema_version": 1, "name": "x",')
    return {"good": str(good), "bad": str(bad), "timed": str(timed), "corrupt": str(corrupt), "dir": str(tmp_path)}


BAD_INPUT = {
    "unknown model": (["profile", "resnet181"], ["unknown model 'resnet181'", "resnet18"]),
    "unknown model in compare": (["compare", "resnet18", "not_a_model"], ["'not_a_model'"]),
    "bad module:callable": (["profile", "no_such_module_xyz:build"], ["cannot load model"]),
    "malformed CSV row": (["predict", "--profile", "t2000-paper", "--csv", "{bad}"],
                          ["bad.csv line 3", "'W'", "'seven'"]),
    "malformed CSV for fit": (["fit", "{bad}", "--out", "{dir}/p.json"], ["line 3"]),
    "missing CSV": (["predict", "--profile", "t2000-paper", "--csv", "{dir}/none.csv"], ["cannot read"]),
    "corrupt profile file (predict)": (["predict", "--profile", "{corrupt}", "--csv", "{good}"],
                                       ["corrupt.json", "not valid JSON"]),
    "corrupt profile file (profile)": (["profile", "resnet18", "--profile", "{corrupt}"], ["not valid JSON"]),
    "unknown profile": (["compare", "resnet18", "--profile", "no-such-gpu"], ["no profile 'no-such-gpu'"]),
    "directory as profile": (["predict", "--profile", "{dir}", "--csv", "{good}"], ["Is a directory"]),
    "output in a missing folder": (["fit", "{timed}", "--out", "{dir}/no/p.json"], ["No such file"]),
    "factory that fails": (["profile", "torch.nn:Linear"], ["cannot build model", "in_features"]),
    "three input sizes": (["profile", "resnet18", "--input-size", "1", "2", "3"], ["--input-size"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_2(capsys, files, case):
    argv, needles = BAD_INPUT[case]
    rc, out, err = run(capsys, *[a.format(**files) for a in argv])
    assert rc == 2
    assert out == ""
    assert err.startswith("alpha-profiler: error: ") and err.endswith("\n") and err.count("\n") == 1
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)


def test_fit_without_times_is_a_user_error(capsys, files):
    rc, out, err = run(capsys, "fit", files["good"], "--out", files["dir"] + "/p.json")
    assert rc == 2 and "time_ms" in err and err.count("\n") == 1


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["profile"])
    assert info.value.code == 2
    assert "usage" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["fit", "x.csv", "--out", "p.json", "--family", "nope"],
                                  ["profile", "resnet18", "--batch", "0"],
                                  ["compare", "resnet18", "--batch", "-3"],
                                  ["profile", "resnet18", "--input-size", "0"]])
def test_bad_option_values_are_usage_errors(capsys, argv):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage" in err and "Traceback" not in err
