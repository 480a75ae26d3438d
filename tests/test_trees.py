"""trees: the residual trees' fit, their numpy walk, profile section, validation and use."""
import copy
import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("sklearn")  # the test extra installs it; fitting trees needs it

from torch_alpha_profiler import trees  # noqa: E402
from torch_alpha_profiler.cost import evaluate  # noqa: E402
from torch_alpha_profiler.fit import fit_profile  # noqa: E402
from torch_alpha_profiler.profile import ProfileError, load_profile, profile_from_dict  # noqa: E402
from torch_alpha_profiler.tables import parse_layer_table  # noqa: E402


def _rows(seed=0, count=300):
    """Layers whose times step up over a band of image sizes (a kernel switch) where the formula is smooth."""
    rows = ["kind,N,Cin,Cout,H,W,K1,K2,time_ms"]
    rng = np.random.default_rng(seed)
    for _ in range(count):
        n, c, h = int(rng.integers(1, 33)), int(rng.integers(8, 300)), int(rng.integers(4, 40))
        k = int(rng.choice((1, 3)))
        t = 0.003 + 2e-9 * n * c * c * h * h * k * k
        if 12 <= h < 24:  # a slower kernel over a band of sizes
            t *= 2.5
        rows.append(f"Conv2d,{n},{c},{c},{h},{h},{k},{k},{t}")
    return rows


@pytest.fixture(scope="module")
def fitted():
    table = parse_layer_table("\n".join(_rows()), "steps.csv")
    return table, fit_profile(table, family="axes", provenance={"device_name": "Test GPU"}, trees=True)


def _sklearn(x, y, s):
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=s["trees"], learning_rate=s["learning_rate"],
                                         max_depth=s["max_depth"], max_leaf_nodes=None,
                                         min_samples_leaf=s["min_samples_leaf"], loss="absolute_error",
                                         early_stopping=False, random_state=0).fit(x, y)


def test_the_numpy_walk_equals_scikit_learns_prediction_class_by_class(fitted):
    table, profile = fitted
    s = trees.SETTINGS
    formula = dataclasses.replace(profile, correction=None, trees=None)
    target = np.log(table.time_ms / evaluate(table.arrays, formula).predicted_ms)
    x = trees.features(table.arrays)
    other = parse_layer_table("\n".join(_rows(seed=1, count=50)), "other.csv").arrays
    xo = trees.features(other)
    walked = trees.from_section(profile.trees).log_factor(other)
    assert set(profile.trees["classes"]) == {"conv1x1", "convkxk"}  # the layer classes of _rows
    for name, part in profile.trees["classes"].items():
        assert len(part["trees"]) == s["trees"]
        c = ("linear", "conv1x1", "convkxk").index(name)
        model = _sklearn(x[x[:, 0] == c], target[x[:, 0] == c], s)  # trees of the class's layers alone
        assert np.allclose(walked[xo[:, 0] == c], model.predict(xo[xo[:, 0] == c]), rtol=0, atol=1e-12)
    assert trees.count(profile.trees) == 2 * s["trees"]


def test_one_ensemble_for_every_class_is_still_fitted_and_walked(fitted):
    """by_class False: the schema-4 layout, one ensemble whose walk is scikit-learn's."""
    table, profile = fitted
    s = dict(trees.SETTINGS, trees=20, by_class=False)
    target = np.arange(len(table)) % 5 / 10
    section = trees.fit(table.arrays, target, s)
    assert "classes" not in section and len(section["trees"]) == 20
    other = parse_layer_table("\n".join(_rows(seed=1, count=50)), "other.csv").arrays
    model = _sklearn(trees.features(table.arrays), target, s)
    got = trees.from_section(section).log_factor(other)
    assert np.allclose(got, model.predict(trees.features(other)), rtol=0, atol=1e-12)
    doc = json.loads(profile.to_json())
    doc["trees"], doc["schema_version"] = json.loads(json.dumps(section)), 4
    assert profile_from_dict(doc).trees == doc["trees"]  # a schema-4 profile still loads


def test_a_class_without_enough_layers_gets_no_trees_and_a_factor_of_one(fitted):
    from torch_alpha_profiler.layers import concat

    table, profile = fitted
    linear = parse_layer_table("kind,N,Cin,Cout,H,W,K1,K2,time_ms\n" + "\n".join(
        f"Linear,{n},64,64,1,1,1,1,0.01" for n in range(1, trees.MIN_CLASS_ROWS)), "few.csv").arrays
    arrays = concat([table.arrays, linear])
    section = trees.fit(arrays, np.r_[np.zeros(len(table)), np.ones(len(linear))], dict(trees.SETTINGS, trees=5))
    assert "linear" not in section["classes"] and "convkxk" in section["classes"]
    assert np.array_equal(trees.from_section(section).log_factor(linear), np.zeros(len(linear)))
    assert trees.fit(linear, np.ones(len(linear))) is None  # no class has enough: no section
    few = parse_layer_table("\n".join(_rows(count=15)), "few.csv")
    with pytest.warns(UserWarning, match="no layer class has 20 NCHW layers"):
        assert fit_profile(few, family="axes", trees=True).trees is None


def test_per_class_trees_put_into_a_schema_4_profile_are_saved_as_schema_5(fitted):
    old = dataclasses.replace(fitted[1], schema_version=4)
    doc = json.loads(old.to_json())
    assert doc["schema_version"] == 5 and profile_from_dict(doc).trees == doc["trees"]


def test_trees_lower_the_error_and_leave_alpha_alone(fitted):
    table, profile = fitted
    formula = dataclasses.replace(profile, correction=None, trees=None)
    with_trees = dataclasses.replace(profile, correction=None)
    ape = lambda p: np.mean(np.abs(p.predicted_ms - table.time_ms) / table.time_ms)  # noqa: E731
    assert ape(evaluate(table.arrays, with_trees)) < 0.5 * ape(evaluate(table.arrays, formula))
    assert np.array_equal(evaluate(table.arrays, profile).alpha, evaluate(table.arrays, formula).alpha)
    # unseen layers of the same kind: the step is learned, not memorized
    other = parse_layer_table("\n".join(_rows(seed=2, count=200)), "other.csv")
    oth = lambda p: np.mean(np.abs(p.predicted_ms - other.time_ms) / other.time_ms)  # noqa: E731
    assert oth(evaluate(other.arrays, with_trees)) < 0.7 * oth(evaluate(other.arrays, formula))
    assert fit_profile(table, family="axes").trees is None  # not unless asked for


def test_the_correction_corrects_what_the_trees_left(fitted):
    from torch_alpha_profiler.correction import from_profile
    from torch_alpha_profiler.families import get_family

    table, profile = fitted
    corr = from_profile(profile)
    walked = np.exp(trees.from_section(profile.trees).log_factor(table.arrays))
    formula = dataclasses.replace(profile, correction=None, trees=None)
    left = np.log(table.time_ms / (evaluate(table.arrays, formula).predicted_ms * walked))
    classes = get_family("axes").classify(table.arrays)
    for c, residuals in corr.residuals.items():  # the correction's points carry what the trees left
        assert np.allclose(np.sort(residuals), np.sort(left[classes == c]), rtol=0, atol=1e-12)


def test_trees_survive_save_and_load_and_need_schema_5(fitted, tmp_path):
    table, profile = fitted
    path = str(tmp_path / "p.json")
    profile.save(path)
    text = open(path).read()
    assert '"left": [' in text and profile.schema_version == 5  # a tree's column on one line
    again = load_profile(path, warn_device=False)
    assert again.trees == json.loads(profile.to_json())["trees"]
    assert np.array_equal(evaluate(table.arrays, again).predicted_ms, evaluate(table.arrays, profile).predicted_ms)
    doc = json.loads(text)
    doc["schema_version"] = 4
    with pytest.raises(ProfileError, match="'trees.classes' needs schema_version 5"):
        profile_from_dict(doc)
    doc["schema_version"] = 3
    with pytest.raises(ProfileError, match="'trees' needs schema_version 4"):
        profile_from_dict(doc)


def _part(d):
    return d["trees"]["classes"]["convkxk"]


def _bad_child(d):
    _part(d)["trees"][0]["left"][0] = 0  # a node that points to itself: no tree


def _two_parents(d):
    tree = _part(d)["trees"][0]
    inner = [i for i, f in enumerate(tree["feature"]) if f >= 0]
    # node b takes a child c of an earlier node a as its right child: c has two parents (c > b keeps
    # children after parents, so only the shared-child check can see it)
    a, b, c = next((a, b, c) for a in inner for b in inner if b > a
                   for c in (tree["left"][a], tree["right"][a]) if c > b and c != tree["left"][b])
    tree["right"][b] = c


T0 = r"trees.classes.convkxk.trees\[0\]"


@pytest.mark.parametrize("change,message", [
    (lambda d: d["trees"].__setitem__("method", "forest"), "trees.method"),
    (lambda d: d["trees"]["features"].pop(), "trees.features"),
    (lambda d: d["trees"].__setitem__("features", 5), "trees.features"),
    (lambda d: d["trees"].__setitem__("baseline", 0.0), "trees.baseline' is not allowed beside 'classes'"),
    (lambda d: _part(d)["trees"][0]["value"].__setitem__(-1, 1e300), T0 + r".value' must hold log factors"),
    (lambda d: _part(d).__setitem__("baseline", -1e300), "trees.classes.convkxk.baseline' must be a number within"),
    (lambda d: d["trees"].__setitem__("classes", {}), "trees.classes' must be a non-empty object"),
    (lambda d: d["trees"]["classes"].__setitem__("attention", _part(d)), "unknown layer class 'attention'"),
    (lambda d: d["trees"]["classes"].__setitem__("convkxk", []), "trees.classes.convkxk' must be an object"),
    (lambda d: _part(d).__setitem__("baseline", "x"), "trees.classes.convkxk.baseline"),
    (lambda d: _part(d).__setitem__("trees", []), "trees.classes.convkxk.trees' must be a non-empty list"),
    (lambda d: _part(d)["trees"][0]["value"].pop(), T0 + ".value"),
    (lambda d: _part(d)["trees"][0].__setitem__("threshold", ["a"] * 3), T0 + ".threshold"),
    (_bad_child, T0 + r"' has a malformed node \(0\)"),
    (lambda d: _part(d)["trees"][0]["feature"].__setitem__(0, 99), r"malformed node \(0\)"),
    (lambda d: _part(d)["trees"][0]["left"].__setitem__(0, 1.0), T0 + r".left' must hold integers"),
    (_two_parents, r"is not a tree: node \d+ is the child of [02] nodes"),
])
def test_a_bad_trees_section_is_named(fitted, change, message):
    doc = json.loads(fitted[1].to_json())
    change(doc)
    with pytest.raises(ProfileError, match=message):
        profile_from_dict(copy.deepcopy(doc))


def test_an_export_that_does_not_predict_as_scikit_learn_is_refused(fitted, monkeypatch):
    table = fitted[0]
    walk = trees._walker

    def shifted(*args):  # as if scikit-learn's arrays had changed meaning
        return dataclasses.replace(walk(*args), baseline=walk(*args).baseline + 0.1)

    monkeypatch.setattr(trees, "_walker", shifted)
    with pytest.raises(RuntimeError, match="do not predict as it does"):
        trees.fit(table.arrays, np.zeros(len(table)) + np.arange(len(table)) % 3)


def test_calibrate_without_scikit_learn_fits_no_trees_and_says_so(tmp_path, monkeypatch):
    import importlib.util

    from torch_alpha_profiler.calibrate import calibrate

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a))
    with pytest.warns(UserWarning, match="scikit-learn is not installed"):
        profile = calibrate(str(tmp_path / "p"), device="cpu", family="axes", scale=0, ops=False)
    assert profile.trees is None and profile.correction is not None


def test_a_large_table_is_walked_in_chunks_as_one(fitted, monkeypatch):
    walk = trees.from_section(fitted[1].trees)
    arrays = parse_layer_table("\n".join(_rows(seed=3, count=400)), "big.csv").arrays
    whole = walk.log_factor(arrays)
    monkeypatch.setattr(trees, "WALK_ELEMENTS", 7 * walk.roots.shape[1])  # 7 layers a chunk
    assert np.array_equal(walk.log_factor(arrays), whole)


def test_an_empty_layer_gets_no_factor(fitted):
    from torch_alpha_profiler.layers import make_arrays

    two = np.ones(2, dtype=np.int64)
    arrays = make_arrays(is_linear=[False, False], N=np.array([0, 1]), Cin=16 * two, Cout=16 * two, Hin=8 * two,
                         Win=8 * two, Hout=8 * two, Wout=8 * two, K1=3 * two, K2=3 * two, stride=two, groups=two,
                         itemsize=4 * two)
    got = trees.from_section(fitted[1].trees).log_factor(arrays)
    assert got[0] == 0.0 and got[1] != 0.0


def test_cli_fit_takes_several_tables_and_can_leave_the_trees_out(tmp_path, capsys):
    from torch_alpha_profiler.cli import main

    rows = _rows(count=120)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("\n".join(rows[:80]) + "\n")
    b.write_text("\n".join([rows[0]] + rows[80:]) + "\n")
    assert main(["fit", str(a), str(b), "--family", "axes", "--out", str(tmp_path / "p.json")]) == 0
    assert "300 residual trees (conv1x1, convkxk: one ensemble each)" in capsys.readouterr().err
    p = load_profile(str(tmp_path / "p.json"), warn_device=False)
    assert p.provenance["n_measurements"] == 120 and p.provenance["more_sources"] == [str(b)]
    assert p.trees is not None and len(p.fit_data["rows"]) == 120
    assert main(["fit", str(a), "--family", "axes", "--no-trees", "--out", str(tmp_path / "q.json.gz")]) == 0
    q = load_profile(str(tmp_path / "q.json.gz"), warn_device=False)
    assert q.trees is None and q.name == "q"  # named after the file, '.json.gz' and all taken off
    c = tmp_path / "c.csv"
    c.write_text("kind,N,Cin,Cout,H,W,K1,K2,stride,time_ms\nConv2d,1,8,8,8,8,3,3,1,0.01\n")
    assert main(["fit", str(a), str(c), "--family", "axes", "--out", str(tmp_path / "r.json")]) == 2
    assert "are not those of" in capsys.readouterr().err
