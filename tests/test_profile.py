"""profile: built-in profiles, validation that names the field, save/overwrite, device checks."""
import copy
import gzip
import json
import math
import pathlib
import warnings

import pytest
from torch import nn

from torch_alpha_profiler import profile as profile_mod
from torch_alpha_profiler.profile import (DeviceProfile, ProfileError, builtin_names, load_profile,
                                          profile_from_dict)

from helpers import T2000


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(profile_mod, "current_device_name", lambda: None)


@pytest.fixture
def t2000_doc():
    return load_profile("t2000-paper", warn_device=False).to_dict()


def _write(tmp_path, doc, name="p.json"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def test_builtin_t2000_paper_has_the_papers_constants(no_gpu):
    assert "t2000-paper" in builtin_names()
    p = load_profile("t2000-paper")
    assert p.name == "t2000-paper" and p.family == "paper"
    assert dict(p.parameters) == T2000
    assert (p.time_scale_ms_per_mmac, p.overhead_ms) == (0.0375, 0.0)
    assert (p.device_name, p.dtype) == ("Quadro T2000", "float32")


def test_every_builtin_profile_loads(no_gpu):
    for name in builtin_names():
        p = load_profile(name)
        assert p.name and p.provenance["device_name"] and p.provenance["dtype"]


def test_dict_round_trip_and_path_objects(tmp_path, no_gpu, t2000_doc):
    p = profile_from_dict(t2000_doc)
    assert p == load_profile("t2000-paper")
    path = _write(tmp_path, p.to_json())
    assert load_profile(path) == p
    assert load_profile(pathlib.Path(path)) == p
    assert load_profile(p) is p


def _del(path):
    def mutate(doc):
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[key]
        del node[last]
    return mutate


def _set(path, value):
    def mutate(doc):
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[key]
        node[last] = value
    return mutate


# (mutation, every substring the error must contain)
INVALID = {
    "missing schema_version": (_del("schema_version"), ["'schema_version'", "None"]),
    "wrong schema_version": (_set("schema_version", 6), ["'schema_version'", "6"]),
    "missing name": (_del("name"), ["'name'"]),
    "unknown family": (_set("family", "quadratic"), ["'family'", "'quadratic'", "paper"]),
    "missing parameters": (_del("parameters"), ["'parameters'"]),
    "missing time scale": (_del("parameters.time_scale_ms_per_mmac"), ["'time_scale_ms_per_mmac'"]),
    "boolean overhead": (_set("parameters.overhead_ms", True), ["'overhead_ms'", "finite number"]),
    "missing classes.k1.beta": (_del("parameters.classes.k1.beta"),
                                ["parameters.classes.k1", "'beta'", "missing"]),
    "missing class kgt1": (_del("parameters.classes.kgt1"), ["parameters.classes.kgt1"]),
    "non-numeric gamma": (_set("parameters.classes.kgt1.gamma", "0.56"),
                          ["parameters.classes.kgt1", "'gamma'", "finite number", "'0.56'"]),
    "NaN beta": (_set("parameters.classes.k1.beta", math.nan), ["'beta'", "finite number"]),
    "missing provenance.device_name": (_del("provenance.device_name"), ["provenance.device_name"]),
    "missing provenance": (_del("provenance"), ["'provenance'"]),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_profile_file_names_the_field_and_the_file(tmp_path, t2000_doc, case):
    mutate, needles = INVALID[case]
    doc = copy.deepcopy(t2000_doc)
    mutate(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    msg = str(info.value)
    assert msg.startswith(path)
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_not_an_object(tmp_path):
    with pytest.raises(ProfileError, match="expected a JSON object, got list"):
        load_profile(_write(tmp_path, "[1, 2]"))


def test_corrupt_json_names_file_and_line(tmp_path):
    path = _write(tmp_path, '{\n "schema_version": 1,\n "name": \n}')
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert str(info.value).startswith(path) and "not valid JSON" in str(info.value)
    assert "line 4" in str(info.value)


def test_a_gzip_profile_saves_the_same_bytes_each_time_and_loads(tmp_path, no_gpu):
    p = load_profile("t2000-paper")
    path = str(tmp_path / "mine.json.gz")
    p.save(path)
    first = pathlib.Path(path).read_bytes()
    assert first[:2] == b"\x1f\x8b" and gzip.decompress(first).decode() == p.to_json()
    p.save(path, overwrite=True)
    assert pathlib.Path(path).read_bytes() == first  # no time stamp in the header
    assert load_profile(path) == p


@pytest.mark.parametrize("data,message", [(b"not gzip at all", "not a readable gzip file"),
                                          (gzip.compress(b"\xff\xfe{"), "not UTF-8 text"),
                                          (gzip.compress(b'{"name": '), "not valid JSON")])
def test_a_corrupt_gzip_profile_is_named(tmp_path, data, message):
    path = tmp_path / "bad.json.gz"
    path.write_bytes(data)
    with pytest.raises(ProfileError, match=message) as info:
        load_profile(str(path))
    assert str(info.value).startswith(str(path))


def test_a_path_object_saves_and_two_files_of_one_builtin_name_are_refused(tmp_path, no_gpu):
    from torch_alpha_profiler.profile import profile_files

    p = load_profile("t2000-paper")
    p.save(tmp_path / "obj.json.gz")  # a pathlib.Path, compressed by its suffix
    assert load_profile(str(tmp_path / "obj.json.gz")) == p
    for name in ("a.json", "a.json.gz", "b.json.gz", "notes.txt"):
        (tmp_path / name).write_text("{}")
    with pytest.raises(ProfileError, match=r"two files for the built-in profile 'a': a.json and a.json.gz"):
        profile_files(tmp_path.iterdir())
    (tmp_path / "a.json").unlink()
    assert sorted(profile_files(tmp_path.iterdir())) == ["a", "b", "obj"]


def test_unknown_name_lists_builtin_profiles():
    with pytest.raises(ProfileError, match=r"no profile 'no-such-gpu'.*t2000-paper"):
        load_profile("no-such-gpu")


def test_wrong_type_is_a_type_error():
    with pytest.raises(TypeError, match="int"):
        load_profile(42)


@pytest.mark.parametrize("version", [True, 1.0])
def test_schema_version_must_be_an_integer(t2000_doc, version):
    t2000_doc["schema_version"] = version
    with pytest.raises(ProfileError, match="schema_version"):
        profile_from_dict(t2000_doc)


def test_save_refuses_to_overwrite_unless_asked(tmp_path, no_gpu):
    p = load_profile("t2000-paper")
    path = str(tmp_path / "mine.json")
    p.save(path)
    assert load_profile(path) == p
    before = pathlib.Path(path).read_text()
    other = DeviceProfile(name="other", family="paper", parameters=p.parameters, provenance=p.provenance)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        other.save(path)
    assert pathlib.Path(path).read_text() == before  # untouched
    other.save(path, overwrite=True)
    assert load_profile(path).name == "other"


def test_saved_json_has_version_and_provenance(tmp_path):
    p = load_profile("t2000-paper", warn_device=False)
    p.save(str(tmp_path / "x.json"))
    doc = json.loads((tmp_path / "x.json").read_text())
    assert doc["schema_version"] == 1 and doc["provenance"]["device_name"] == "Quadro T2000"
    assert "fit_data" not in doc


def test_warns_when_current_gpu_differs(monkeypatch):
    monkeypatch.setattr(profile_mod, "current_device_name", lambda: "Other GPU")
    with pytest.warns(UserWarning, match=r"'Quadro T2000'.*'Other GPU'"):
        load_profile("t2000-paper")
    with pytest.warns(UserWarning, match="Other GPU"):
        from torch_alpha_profiler import AlphaProfiler
        AlphaProfiler(nn.Linear(2, 2), profile="t2000-paper")


@pytest.mark.parametrize("current", [None, "Quadro T2000"])
def test_no_warning_on_same_gpu_or_without_gpu(monkeypatch, current):
    monkeypatch.setattr(profile_mod, "current_device_name", lambda: current)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_profile("t2000-paper")


def test_warn_device_false_silences_the_warning(monkeypatch):
    monkeypatch.setattr(profile_mod, "current_device_name", lambda: "Other GPU")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_profile("t2000-paper", warn_device=False)


def test_auto_without_gpu_lists_available_profiles(no_gpu):
    with pytest.raises(ProfileError) as info:
        load_profile("auto")
    msg = str(info.value)
    assert "no CUDA device" in msg
    assert "t2000-paper (Quadro T2000, float32)" in msg
    assert "calibrate" in msg


def test_auto_without_gpu_fails_in_the_profiler_too(no_gpu):
    import torch

    from torch_alpha_profiler import AlphaProfiler

    lin = nn.Linear(2, 2)
    with pytest.raises(ProfileError, match="available"):
        # the profile may be resolved on construction or when costs are first read
        p = AlphaProfiler(lin, profile="auto")
        with p:
            lin(torch.randn(1, 2))
        p.records


def test_auto_picks_the_builtin_for_the_current_gpu(monkeypatch):
    monkeypatch.setattr(profile_mod, "current_device_name", lambda: "Quadro T2000")
    assert load_profile("auto").name == "t2000-paper"
    # no float16 profile for this GPU
    with pytest.raises(ProfileError, match="Quadro T2000 and dtype float16"):
        profile_mod.auto_profile("float16")


@pytest.mark.parametrize("path,value,field", [
    (("parameters", "time_scale_ms_per_mmac"), -0.0375, "parameters.time_scale_ms_per_mmac"),
    (("parameters", "classes", "k1", "gamma"), -3.0, "parameters.classes.k1.gamma"),
    (("parameters", "classes", "kgt1", "beta"), -0.1, "parameters.classes.kgt1.beta"),
    (("parameters", "overhead_ms"), -1.0, "parameters.overhead_ms"),
    (("provenance", "dtype"), "int8", "provenance.dtype"),
    (("provenance", "device_name"), {"a": 1}, "provenance.device_name"),
])
def test_values_outside_their_meaning_are_refused(tmp_path, t2000_doc, path, value, field):
    doc = copy.deepcopy(t2000_doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ProfileError, match=field.replace(".", r"\.")):
        load_profile(_write(tmp_path, doc), warn_device=False)
