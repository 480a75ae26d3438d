"""correction: the neighbour correction's coordinates, kernel arithmetic, profile section and use."""
import copy
import os
import dataclasses
import json

import numpy as np
import pytest

from torch_alpha_profiler.correction import AXIS_NAMES, DEFAULT, build, coordinates, from_profile
from torch_alpha_profiler.cost import evaluate
from torch_alpha_profiler.families import get_family
from torch_alpha_profiler.fit import fit_profile
from torch_alpha_profiler.layers import make_arrays
from torch_alpha_profiler.profile import ProfileError, load_profile, profile_from_dict
from torch_alpha_profiler.tables import parse_layer_table

AXES = get_family("axes")
FLAT = {"method": "neighbours", "bandwidth": 1.0, "shrink": 0.5, "scales": {a: 1.0 for a in AXIS_NAMES}}


def conv(N=1, Cin=64, Cout=64, H=8, K=3, stride=1, groups=1, itemsize=4):
    one = np.ones(1, dtype=np.int64)
    hout = -(-H // stride)
    return make_arrays(is_linear=[False], N=N * one, Cin=Cin * one, Cout=Cout * one, Hin=H * one, Win=H * one,
                       Hout=hout * one, Wout=hout * one, K1=int(np.sqrt(K)) * one, K2=int(np.sqrt(K)) * one,
                       stride=stride * one, groups=groups * one, itemsize=itemsize * one)


def test_coordinates_by_hand():
    # 8 x 64 -> 36 channels in 2 groups, 3x3, stride 2 over 16x16 (8x8 out), fp32: 32 channels a
    # group in (128 bytes, aligned), 18 out (72 bytes: not a multiple of 16)
    x = coordinates(conv(N=8, Cin=64, Cout=36, H=16, K=9, stride=2, groups=2))[0]
    assert x == pytest.approx([3, 6, 5, np.log2(18), 1, np.log2(9), 1, 0, 1])
    # depthwise: one channel a group is never "misaligned"
    assert coordinates(conv(Cin=3, Cout=3, groups=3))[0][-2:] == pytest.approx([0, 0])


def test_one_neighbour_by_hand():
    point = conv()
    corr = build(FLAT, point, np.array([2.0]), np.array([1.0]), np.array([2]))  # measured 2x the formula
    r = np.log(2.0)
    # at the point itself: w = 1, ln c = r / (1 + 0.5)
    assert corr.log_factor(point, np.array([2]))[0] == pytest.approx(r / 1.5)
    # one doubling of the batch away: d = 1, w = exp(-1/2)
    w = np.exp(-0.5)
    assert corr.log_factor(conv(N=2), np.array([2]))[0] == pytest.approx(w * r / (w + 0.5))
    # a bandwidth of 2 and a scale of 2 on the batch axis both halve that distance
    wide = build({**FLAT, "bandwidth": 2.0}, point, np.array([2.0]), np.array([1.0]), np.array([2]))
    scaled = build({**FLAT, "scales": {**FLAT["scales"], "N": 2.0}}, point, np.array([2.0]), np.array([1.0]),
                   np.array([2]))
    w = np.exp(-0.125)
    for c in (wide, scaled):
        assert c.log_factor(conv(N=2), np.array([2]))[0] == pytest.approx(w * r / (w + 0.5))
    # another class, or far away: no correction
    assert corr.log_factor(point, np.array([1]))[0] == 0.0
    # 3.9 bandwidths away it still counts, beyond 4 not at all (N = 2^3.9 rounds to 15, 2^4.1 to 17)
    near, far = np.log2(15), np.log2(17)
    w = np.exp(-0.5 * near ** 2)
    assert corr.log_factor(conv(N=15), np.array([2]))[0] == pytest.approx(w * r / (w + 0.5))
    assert corr.log_factor(conv(N=17), np.array([2]))[0] == 0.0 and far > 4
    # a layer with a zero-sized axis has no coordinates: no correction, and no error
    assert corr.log_factor(conv(N=0), np.array([2]))[0] == 0.0


def test_weighted_mean_of_two_neighbours_and_repeated_shapes():
    pts = make_arrays(**{k: np.concatenate([getattr(conv(N=1), k), getattr(conv(N=4), k)])
                         for k in ("is_linear", "N", "Cin", "Cout", "Hin", "Win", "Hout", "Wout", "K1", "K2",
                                   "stride", "groups", "itemsize")})
    corr = build({**FLAT, "shrink": 0.0}, pts, np.array([2.0, 0.5]), np.array([1.0, 1.0]), np.array([2, 2]))
    # N = 2 is one doubling from each: equal weights, ln 2 and ln 0.5 cancel
    q = make_arrays(**{k: np.repeat(getattr(conv(N=2), k), 3) for k in (
        "is_linear", "N", "Cin", "Cout", "Hin", "Win", "Hout", "Wout", "K1", "K2", "stride", "groups", "itemsize")})
    assert corr.log_factor(q, np.array([2, 2, 2])) == pytest.approx([0, 0, 0], abs=1e-12)


@pytest.fixture(scope="module")
def fitted():
    """An axes fit, with its correction, of layers whose times have a bump the formula lacks."""
    rows = ["kind,N,Cin,Cout,H,W,K1,K2,time_ms"]
    rng = np.random.default_rng(0)
    for _ in range(120):
        n, c, h = (int(v) for v in (2 ** rng.integers(0, 6), 2 ** rng.integers(3, 9), 2 ** rng.integers(2, 6)))
        t = 0.003 + 2e-6 * n * c * c * h * h * 9 / 1e6 * 1e3
        if c == 64:  # a kernel switch: every 64-channel layer runs 3x slower
            t *= 3
        rows.append(f"Conv2d,{n},{c},{c},{h},{h},3,3,{t}")
    table = parse_layer_table("\n".join(rows), "bump.csv")
    return table, fit_profile(table, family="axes", provenance={"device_name": "Test GPU"})


def test_fit_gives_the_axes_family_its_default_correction_and_it_corrects(fitted):
    table, profile = fitted
    assert profile.correction == DEFAULT and profile.schema_version == 5
    plain = dataclasses.replace(profile, correction=None)
    ape = lambda p: np.mean(np.abs(p - table.time_ms) / table.time_ms)  # noqa: E731
    assert ape(evaluate(table.arrays, profile).predicted_ms) < 0.5 * ape(evaluate(table.arrays, plain).predicted_ms)
    # alpha and FLOPs are the formula's: the correction changes only the predicted time
    assert np.array_equal(evaluate(table.arrays, profile).alpha, evaluate(table.arrays, plain).alpha)
    assert fit_profile(table, family="axes", correction=False).correction is None
    assert fit_profile(table, family="paper").correction is None
    assert fit_profile(table, family="axes", keep_data=False).correction is None
    with pytest.raises(ValueError, match="keep_data"):
        fit_profile(table, family="axes", keep_data=False, correction=DEFAULT)


def test_correction_survives_save_and_load_and_is_built_once(fitted, tmp_path):
    table, profile = fitted
    path = str(tmp_path / "p.json")
    profile.save(path)
    again = load_profile(path, warn_device=False)
    assert again.correction == profile.correction
    assert np.allclose(evaluate(table.arrays, again).predicted_ms, evaluate(table.arrays, profile).predicted_ms)
    assert from_profile(again) is from_profile(again)


def test_channels_last_layers_are_corrected_only_where_costed_by_the_nchw_parameters(fitted):
    table, profile = fitted
    nhwc = dataclasses.replace(table.arrays, channels_last=np.ones(len(table), dtype=bool))
    # a channels-last section of their own: their formula alone
    sectioned = dataclasses.replace(profile, channels_last={"parameters": profile.parameters})
    plain = dataclasses.replace(sectioned, correction=None)
    assert np.array_equal(evaluate(nhwc, sectioned).predicted_ms, evaluate(nhwc, plain).predicted_ms)
    # none: costed as NCHW layers, corrected as those are
    assert np.array_equal(evaluate(nhwc, profile).predicted_ms, evaluate(table.arrays, profile).predicted_ms)
    assert not np.array_equal(evaluate(nhwc, profile).predicted_ms, evaluate(nhwc, plain).predicted_ms)


@pytest.mark.parametrize("change,message", [
    (lambda d: d.__setitem__("schema_version", 2), "needs schema_version 3"),
    (lambda d: d["correction"].__setitem__("method", "knn"), "correction.method"),
    (lambda d: d["correction"].__setitem__("bandwidth", 0), "correction.bandwidth"),
    (lambda d: d["correction"].__setitem__("shrink", -1), "correction.shrink"),
    (lambda d: d["correction"].__setitem__("shrink", 0), "correction.shrink"),
    (lambda d: d["correction"]["scales"].pop("cin"), "correction.scales.cin"),
    (lambda d: d["correction"]["scales"].__setitem__("K", "x"), "correction.scales.K"),
    (lambda d: d.pop("fit_data"), "needs 'fit_data'"),
    (lambda d: d["fit_data"]["header"].remove("time_ms"), "time_ms"),
    (lambda d: d.__setitem__("correction", [1]), "must be an object"),
])
def test_a_bad_correction_section_is_named(fitted, change, message):
    doc = json.loads(fitted[1].to_json())
    change(doc)
    with pytest.raises(ProfileError, match=message):
        profile_from_dict(copy.deepcopy(doc))


def test_shipped_profiles_carry_a_correction_over_their_calibration():
    for name in ("h100-fp32", "h100-bf16"):
        p = load_profile(name, warn_device=False)
        corr = from_profile(p)
        n = sum(len(r) for r in corr.residuals.values())
        assert p.correction == DEFAULT and n == p.provenance["n_measurements"]


def test_each_layer_is_corrected_by_its_own_class_only():
    pts = make_arrays(**{k: np.concatenate([getattr(conv(), k), getattr(conv(), k)])
                         for k in ("is_linear", "N", "Cin", "Cout", "Hin", "Win", "Hout", "Wout", "K1", "K2",
                                   "stride", "groups", "itemsize")})
    # the same shape measured 2x the formula in class 1 and 0.5x in class 2
    corr = build(FLAT, pts, np.array([2.0, 0.5]), np.array([1.0, 1.0]), np.array([1, 2]))
    q = make_arrays(**{k: np.repeat(getattr(conv(), k), 3) for k in (
        "is_linear", "N", "Cin", "Cout", "Hin", "Win", "Hout", "Wout", "K1", "K2", "stride", "groups", "itemsize")})
    assert corr.log_factor(q, np.array([1, 2, 0])) == pytest.approx([np.log(2) / 1.5, np.log(0.5) / 1.5, 0.0])


def test_unmeasured_and_channels_last_rows_of_fit_data_are_not_points(fitted):
    table, profile = fitted
    doc = json.loads(profile.to_json())
    header = doc["fit_data"]["header"]
    t = header.index("time_ms")
    extra = [list(doc["fit_data"]["rows"][0]) for _ in range(3)]
    extra[0][t], extra[1][t] = "", "0"  # not measured, not a usable time
    doc["fit_data"]["header"].append("layout")
    for row in doc["fit_data"]["rows"]:
        row.append("")
    extra[2][t], extra[2] = "1000", extra[2] + ["nhwc"]
    extra[0].append("")
    extra[1].append("")
    doc["fit_data"]["rows"] += extra
    again = profile_from_dict(doc)
    n = sum(len(r) for r in from_profile(again).residuals.values())
    assert n == len(table)
    assert np.allclose(evaluate(table.arrays, again).predicted_ms, evaluate(table.arrays, profile).predicted_ms)


def test_a_fit_data_the_correction_cannot_read_is_named(fitted):
    doc = json.loads(fitted[1].to_json())
    doc["fit_data"]["rows"][0][doc["fit_data"]["header"].index("Cin")] = "many"
    with pytest.raises(ProfileError, match="'fit_data'.*Cin"):
        evaluate(fitted[0].arrays, profile_from_dict(doc))
    doc = json.loads(fitted[1].to_json())
    for row in doc["fit_data"]["rows"]:
        row[doc["fit_data"]["header"].index("time_ms")] = "0"
    with pytest.raises(ProfileError, match="no measured NCHW layer"):
        evaluate(fitted[0].arrays, profile_from_dict(doc))


def test_fit_profile_validates_and_copies_the_settings_it_is_given(fitted):
    table, _ = fitted
    with pytest.raises(ProfileError, match="correction.scales"):
        fit_profile(table, family="axes", correction={"method": "neighbours", "bandwidth": 1.0, "shrink": 0.1})
    mine = copy.deepcopy(FLAT)
    p = fit_profile(table, family="axes", correction=mine)
    mine["bandwidth"] = 99.0
    assert p.correction == FLAT
    q = fit_profile(table, family="axes")
    q.correction["bandwidth"] = 99.0  # a profile's own copy, not the module's default
    assert DEFAULT["bandwidth"] == 0.75


def test_cli_fit_writes_the_correction_unless_asked_not_to(tmp_path, capsys):
    from torch_alpha_profiler.cli import main

    rows = ["kind,N,Cin,Cout,H,W,K1,K2,time_ms"] + [
        f"Conv2d,{n},{c},{c},{h},{h},3,3,{0.003 + 1e-9 * n * c * c * h * h * 9}"
        for n in (1, 4, 16) for c in (16, 64, 256) for h in (7, 14, 28)]
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    assert main(["fit", str(csv_path), "--family", "axes", "--out", str(tmp_path / "a.json")]) == 0
    assert "neighbour correction" in capsys.readouterr().err
    assert main(["fit", str(csv_path), "--family", "axes", "--no-correction", "--out", str(tmp_path / "b.json")]) == 0
    assert load_profile(str(tmp_path / "a.json")).correction == DEFAULT
    assert load_profile(str(tmp_path / "b.json")).correction is None


def test_dense_and_sparse_distance_paths_agree_and_profiles_share_one_build(monkeypatch):
    """A model's few shapes take every (layer, point) pair at once, a large table the k-d tree's
    pairs within the cut: the same numbers, ties at the cut included (log2 coordinates often lie
    exactly 4 bandwidths apart). Loading a profile again reuses its built correction."""
    import torch_alpha_profiler.correction as correction
    from torch_alpha_profiler.tables import read_layer_table

    p = load_profile("h100-fp32", warn_device=False)
    table = read_layer_table(os.path.join(os.path.dirname(__file__), "..", "benchmarks", "data",
                                          "model-layer-times-float32.csv"))
    classes = AXES.classify(table.arrays)
    monkeypatch.setattr(correction, "DENSE_PAIRS", 10 ** 12)
    dense = from_profile(p).log_factor(table.arrays, classes)
    monkeypatch.setattr(correction, "DENSE_PAIRS", 0)
    sparse = from_profile(p).log_factor(table.arrays, classes)
    assert np.abs(dense).max() > 0.1 and dense == pytest.approx(sparse, abs=1e-12)
    assert from_profile(load_profile("h100-fp32", warn_device=False)) is from_profile(p)
    changed = copy.deepcopy(dict(p.parameters))
    changed["classes"]["convkxk"]["t0_ms"] *= 2
    assert from_profile(dataclasses.replace(p, parameters=changed)) is not from_profile(p)


def test_cli_predict_applies_the_correction_and_trees_unless_asked_not_to(tmp_path, capsys):
    from torch_alpha_profiler.cli import main

    held = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "data", "heldout-float32.csv")
    outs = {}
    for flag in ((), ("--no-correction",)):
        out = tmp_path / f"out{len(flag)}.csv"
        assert main(["predict", "--profile", "h100-fp32", "--csv", held, "--out", str(out), *flag]) == 0
        outs[flag] = [float(line.rsplit(",", 1)[1]) for line in out.read_text().splitlines()[1:]]
    p = load_profile("h100-fp32", warn_device=False)
    from torch_alpha_profiler.tables import read_layer_table

    arrays = read_layer_table(held).arrays
    assert outs[()] == pytest.approx(evaluate(arrays, p).predicted_ms.tolist(), rel=1e-5)
    assert outs[("--no-correction",)] == pytest.approx(
        evaluate(arrays, dataclasses.replace(p, correction=None, trees=None)).predicted_ms.tolist(), rel=1e-5)
    assert outs[()] != pytest.approx(outs[("--no-correction",)], rel=1e-3)


@pytest.mark.parametrize("high", [4, 2 ** 40])
def test_distinct_rows_matches_numpy_unique(high):
    """The packed lexsort dedup gives np.unique's distinct rows and a valid inverse, whether the
    columns fit one 63-bit word (small values) or need several (values up to 2**40)."""
    from torch_alpha_profiler.correction import distinct_rows

    rng = np.random.default_rng(0)
    keys = rng.integers(0, high, size=(5000, 4))
    keys = np.concatenate([keys, keys[::3]])  # repeated rows
    first, inverse = distinct_rows(keys)
    assert np.array_equal(keys[first][inverse], keys)
    assert len(first) == len(np.unique(keys, axis=0))
    assert distinct_rows(np.zeros((0, 3), dtype=np.int64))[0].shape == (0,)


def test_a_large_table_is_corrected_as_its_rows_are_one_by_one():
    """The dedup of a large table's shapes keeps each row's own factor: a table of repeated and
    distinct rows gets, row by row, the factor of that row alone."""
    from torch_alpha_profiler.layers import take

    p = load_profile("h100-fp32", warn_device=False)
    corr = from_profile(p)
    rows = [conv(N=n, Cin=c, Cout=c, H=h, K=k) for n in (1, 8) for c in (24, 64, 100) for h in (7, 28) for k in (1, 9)]
    arrays = make_arrays(**{f: np.concatenate([getattr(r, f) for r in rows] * 3)
                            for f in ("is_linear", "N", "Cin", "Cout", "Hin", "Win", "Hout", "Wout", "K1", "K2",
                                      "stride", "groups", "itemsize")})
    together = corr.log_factor(arrays, AXES.classify(arrays))
    alone = [corr.log_factor(take(arrays, [i]), AXES.classify(take(arrays, [i])))[0] for i in range(len(rows))]
    assert np.abs(together).max() > 0.01
    assert together == pytest.approx(np.array(alone * 3), abs=1e-12)
