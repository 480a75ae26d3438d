"""Training-step costs: the profile's 'train' section (trainfit.py) and its use (traincost.py)."""
import csv
import dataclasses
import json
import os

import pytest
import torch
from torch import nn

from torch_alpha_profiler import AlphaProfiler, load_profile
from torch_alpha_profiler.calibrate.plan import config_key
from torch_alpha_profiler.profile import ProfileError, profile_from_dict
from torch_alpha_profiler.records import LayerRecord
from torch_alpha_profiler.traincost import attach_train_costs, needs_input_grad, training_view
from torch_alpha_profiler.trainfit import fit_train, join_op_rows, no_input_grad_ratio

DATA = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "data")


@pytest.fixture(scope="module")
def shipped():
    return load_profile("h100-fp32", warn_device=False)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16 * 8 * 8, 10))


def _record(profile, train=True):
    model = _net().train(train)
    with AlphaProfiler(model, profile=profile) as p, torch.set_grad_enabled(train):
        model(torch.randn(4, 3, 8, 8))
    return p


def _linear(name="fc", input_grad=None, n=64, cin=512, cout=256):
    return LayerRecord(name=name, kind="Linear", module_type="Linear", input_shape=(n, cin),
                       output_shape=(n, cout), batch=n, in_channels=cin, out_channels=cout, input_grad=input_grad)


def test_training_view_swaps_parameters_ops_and_power(shipped):
    view = training_view(shipped)
    assert view.parameters == shipped.train["parameters"] and view.parameters != shipped.parameters
    assert view.ops == shipped.train["ops"] and view.ops != shipped.ops
    assert view.power == {"forward": shipped.power["train"]}
    # channels-last convolutions take the training section's own channels-last parameters
    assert view.channels_last == shipped.train["channels_last"] != shipped.channels_last
    assert view.family == shipped.family and view.host == shipped.host
    # the forward's neighbour correction (residuals of forward times) is not a training step's
    assert shipped.correction is not None and view.correction is None
    # the original is untouched
    assert shipped.power["forward"]["static_w"] != shipped.power["train"]["static_w"]
    assert training_view(dataclasses.replace(shipped, train=None)) is None
    assert training_view(dataclasses.replace(shipped, power=None)).power is None
    no_train_power = dataclasses.replace(shipped, power={"forward": shipped.power["forward"]})
    assert training_view(no_train_power).power is None


def test_needs_input_grad_without_and_with_autograd_flags():
    # recorded without autograd: every layer but the first one called computes a grad-input
    assert needs_input_grad([_linear(), _linear(), _linear()]) == [False, True, True]
    assert needs_input_grad([]) == []
    # recorded with autograd: the flags as recorded, whatever the position
    assert needs_input_grad([_linear(input_grad=True), _linear(input_grad=False), _linear(input_grad=True)]) \
        == [True, False, True]
    assert needs_input_grad([_linear(input_grad=False), _linear(input_grad=False)]) == [False, False]
    # mixed: a None takes the position rule
    assert needs_input_grad([_linear(input_grad=True), _linear(), _linear(input_grad=False)]) == [True, True, False]


def test_recording_in_training_keeps_whether_each_input_needs_grad(shipped):
    p = _record(shipped, train=True)
    assert [r.kind for r in p.records] == ["Conv2d", "Linear"]
    assert [r.input_grad for r in p.records] == [False, True]  # the image needs no grad; activations do
    q = _record(shipped, train=False)  # autograd off: unknown
    assert [r.input_grad for r in q.records] == [None, None]
    # an input that requires grad (e.g. adversarial training) is seen as such
    model = _net().train()
    with AlphaProfiler(model, profile=shipped) as r:
        model(torch.randn(4, 3, 8, 8, requires_grad=True))
    assert [x.input_grad for x in r.records] == [True, True]


def test_a_training_step_costs_more_than_the_forward(shipped):
    p = _record(shipped)
    step = p.train_step_ms
    assert step is not None and step > p.predicted_ms > 0
    records = p.train_records()
    assert len(records) == len(p.records)
    for fwd, trn in zip(p.records, records):
        assert trn.predicted_ms > fwd.predicted_ms, fwd.name
        assert trn.macs == fwd.macs and trn.input_grad == fwd.input_grad
    ops = [o for o in p.train_ops() if o.predicted_ms is not None]
    assert ops
    assert step == pytest.approx(sum(r.predicted_ms for r in records) + sum(o.predicted_ms for o in ops))
    assert p.train_energy_j > p.energy_j > 0


def test_a_layer_without_grad_input_costs_the_ratio_of_a_full_step(shipped):
    ratio = shipped.train["no_input_grad_ratio"]
    assert 0 < ratio < 1
    first, full = attach_train_costs([_linear(input_grad=False), _linear(input_grad=True)], shipped)
    assert first.predicted_ms == pytest.approx(ratio * full.predicted_ms)
    assert first.energy_j == pytest.approx(ratio * full.energy_j)
    # recorded without autograd, the first layer is the one without a grad-input
    a, b = attach_train_costs([_linear(), _linear()], shipped)
    assert a.predicted_ms == pytest.approx(first.predicted_ms) and b.predicted_ms == pytest.approx(full.predicted_ms)
    # the full step is the forward's cost code run on the training parameters
    from torch_alpha_profiler.cost import attach_costs

    (fwd,) = attach_costs([_linear()], shipped)
    (via_view,) = attach_costs([_linear()], training_view(shipped))
    assert full.predicted_ms == pytest.approx(via_view.predicted_ms) and full.predicted_ms > fwd.predicted_ms


def test_a_profile_without_train_has_no_training_costs(shipped):
    bare = dataclasses.replace(shipped, train=None)
    p = _record(bare)
    assert p.train_step_ms is None and p.train_energy_j is None
    assert p.predicted_ms > 0  # the forward is still costed
    with pytest.raises(ValueError, match="'train'"):
        attach_train_costs([_linear()], bare)
    with pytest.raises(ValueError, match="'train'"):
        p.train_records()
    with pytest.raises(ValueError, match="'train'"):
        p.train_ops()


def _layer_row(cin, cout, n, ms, input_grad="1", source="layer"):
    return {"source": source, "sweep": "s", "kind": "Linear", "N": str(n), "Cin": str(cin), "Cout": str(cout),
            "H": "1", "W": "1", "K1": "1", "K2": "1", "stride": "1", "groups": "1", "padding": "0",
            "dilation": "1", "bias": "1", "dtype": "float32", "time_ms": repr(ms), "input_grad": input_grad,
            "status": "ok"}


def test_no_input_grad_ratio_is_the_median_over_paired_rows():
    rows = [_layer_row(64, 64, 1, 1.0), _layer_row(64, 64, 1, 0.5, "0"),  # 0.5
            _layer_row(128, 64, 1, 2.0), _layer_row(128, 64, 1, 1.6, "0"),  # 0.8
            _layer_row(256, 64, 1, 4.0), _layer_row(256, 64, 1, 2.8, "0"),  # 0.7
            _layer_row(512, 64, 1, 9.0),  # no pair: left out
            _layer_row(1024, 64, 1, 0.1, "0"),  # no pair: left out
            dict(_layer_row(64, 128, 1, 1.0)), dict(_layer_row(64, 128, 1, 0.05, "0"), status="oom"),  # failed
            dict(_layer_row(64, 64, 2, 3.0), source="op"), dict(_layer_row(64, 64, 2, 0.1, "0"), source="op")]
    assert no_input_grad_ratio(rows) == pytest.approx(0.7)
    assert no_input_grad_ratio(rows[:2]) == pytest.approx(0.5)
    assert no_input_grad_ratio(rows[6:]) is None
    assert no_input_grad_ratio([]) is None
    # the sweep name is not part of a configuration
    assert no_input_grad_ratio([dict(rows[0], sweep="a"), dict(rows[1], sweep="b")]) == pytest.approx(0.5)


def test_no_input_grad_ratio_prefers_layers_that_take_an_image():
    rows = []
    for i in range(8):  # 8 image-input pairs at 0.6, 8 others at 0.8
        rows += [dict(_layer_row(3, 32 + i, 1, 1.0), kind="Conv2d"), dict(_layer_row(3, 32 + i, 1, 0.6, "0"), kind="Conv2d"),
                 _layer_row(64, 32 + i, 1, 1.0), _layer_row(64, 32 + i, 1, 0.8, "0")]
    assert no_input_grad_ratio(rows) == pytest.approx(0.6)
    # fewer than min_pairs image pairs: the median over all pairs
    assert no_input_grad_ratio(rows, min_pairs=9) == pytest.approx(0.7)


def _rows(name):
    with open(os.path.join(DATA, name), newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def committed():
    """A subset of the committed fp32 training rows (every 6th layer configuration, both ways when
    timed both ways; every 2nd op row) and the forward op rows."""
    rows = _rows("calib-float32-train.csv")
    keys = sorted({config_key(r) for r in rows if r["source"] == "layer"})[::6]
    keep = set(keys)
    layers = [r for r in rows if r["source"] == "layer" and config_key(r) in keep]
    ops = [r for r in rows if r["source"] == "op"][::2]
    return layers + ops, _rows("calib-float32-ops.csv")


def test_fit_train_on_committed_rows_makes_a_valid_section(shipped, committed):
    rows, op_rows = committed
    section = fit_train(rows, op_rows, "axes", l2_bytes=shipped.provenance["l2_cache_bytes"], source="t.csv")
    assert section["source"] == "t.csv" and section["n_measurements"] == len(rows)
    assert section["no_input_grad_ratio"] == pytest.approx(no_input_grad_ratio(rows))
    assert 0.3 < section["no_input_grad_ratio"] < 1
    assert set(section["parameters"]["classes"]) == set(shipped.parameters["classes"])
    assert {"stream", "matmul"} <= set(section["ops"])
    fit = section["fit"]
    n_layers = sum(r["source"] == "layer" and r["input_grad"] == "1" and r["layout"] != "nhwc" for r in rows)
    n_nhwc = sum(r["source"] == "layer" and r["input_grad"] == "1" and r["layout"] == "nhwc" for r in rows)
    assert fit["n"] == n_layers and fit["mape_pct"] < 50
    assert n_nhwc >= 8 and section["channels_last"]["n_measurements"] == n_nhwc
    # a profile takes it, and costs training steps with it
    doc = json.loads(json.dumps(dataclasses.replace(shipped, train=section).to_dict()))
    again = profile_from_dict(doc)
    assert again.train["no_input_grad_ratio"] == pytest.approx(section["no_input_grad_ratio"])
    (step,) = attach_train_costs([_linear(input_grad=True)], again)
    (fwd,) = attach_train_costs([_linear(input_grad=True)], dataclasses.replace(
        again, train=dict(section, parameters=shipped.parameters, ops=shipped.ops)))
    assert step.predicted_ms > fwd.predicted_ms  # the step's parameters, not the forward's


def test_fit_train_needs_eight_layer_rows(committed):
    rows, op_rows = committed
    layers = [r for r in rows if r["source"] == "layer" and r["input_grad"] == "1"][:7]
    without = [r for r in rows if r["source"] == "layer" and r["input_grad"] == "0"]
    with pytest.raises(ValueError, match="t.csv: 7 timed layer rows; at least 8"):
        fit_train(layers + without, op_rows, "axes", l2_bytes=5e7, source="t.csv")


def test_join_op_rows_takes_class_bytes_and_geometry_from_the_op_rows():
    op_rows = [{"op": "bmm", "d0": "2", "d1": "3", "d2": "4", "d3": "5", "cls": "matmul", "nbytes": "100",
                "batch": "2", "m": "3", "k": "4", "n": "5", "time_ms": "0.5", "status": "ok"},
               {"op": "add", "d0": "8", "d1": "1", "d2": "1", "d3": "1", "cls": "elementwise", "nbytes": "96",
                "time_ms": "0.1", "status": "oom"}]
    rows = [{"op": "bmm", "d0": "2", "d1": "3", "d2": "4", "d3": "5", "time_ms": "1.5", "energy_mj": "2"},
            {"op": "add", "d0": "8", "d1": "1", "d2": "1", "d3": "1", "time_ms": "0.3"},  # its op row failed
            {"op": "bmm", "d0": "9", "d1": "3", "d2": "4", "d3": "5", "time_ms": "0.3"}]  # no op row
    joined, failed, meta = join_op_rows(rows, op_rows)
    assert joined["cls"] == "matmul" and joined["m"] == "3" and joined["nbytes"] == "100"
    assert joined["time_ms"] == "1.5" and joined["energy_mj"] == "2"  # the step's own time and energy
    # rows without a usable forward row take their features from the op run on meta tensors
    assert failed["cls"] == "elementwise" and failed["nbytes"] == str(3 * 8 * 4) and failed["time_ms"] == "0.3"
    assert (meta["cls"], meta["batch"], meta["m"], meta["k"], meta["n"]) == ("matmul", "9", "3", "4", "5")
    assert join_op_rows([{"op": "no_such_kind", "d0": "1", "d1": "1", "d2": "1", "d3": "1", "time_ms": "1"}],
                        op_rows) == []


@pytest.mark.parametrize("bad,field", [({"no_input_grad_ratio": 0.5}, "train"),
                                       ("fast", "train"),
                                       ({"parameters": None, "no_input_grad_ratio": 0.5}, "train"),
                                       ("ratio0", "train.no_input_grad_ratio"),
                                       ("ratio2", "train.no_input_grad_ratio"),
                                       ("noratio", "no_input_grad_ratio")])
def test_a_corrupt_train_section_names_the_field(shipped, bad, field):
    train = dict(shipped.train)
    if bad == "ratio0":
        bad = dict(train, no_input_grad_ratio=0.0)
    elif bad == "ratio2":
        bad = dict(train, no_input_grad_ratio=1.5)
    elif bad == "noratio":
        bad = {k: v for k, v in train.items() if k != "no_input_grad_ratio"}
    doc = dataclasses.replace(shipped, train=bad).to_dict()
    with pytest.raises(ProfileError, match=field.replace(".", r"\.")):
        profile_from_dict(doc)


def test_gradient_sums_count_the_extra_readers_of_each_tensor():
    import torch
    from torch import nn

    from torch_alpha_profiler import AlphaProfiler, load_profile
    from torch_alpha_profiler.traincost import gradient_sum_pieces, gradient_sums

    class Branches(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.a, self.b, self.c = (nn.Conv2d(8, 8, 1) for _ in range(3))

        def forward(self, x):
            y = torch.relu(self.stem(x))  # read by three branches: two gradient additions
            return self.a(y) + self.b(y) + self.c(y)

    model = Branches().train()
    x = torch.randn(2, 3, 8, 8)
    sums = gradient_sums(model(x))
    assert sums == [((2, 8, 8, 8), "float32")] * 2
    (piece,) = set(gradient_sum_pieces(sums))
    assert piece.cls == "elementwise" and piece.op == "add" and piece.nbytes == 3 * 2 * 8 * 8 * 8 * 4
    with torch.no_grad():
        assert gradient_sums(model(x)) == []
    chain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3)).train()
    assert gradient_sums(chain(x)) == []

    profile = load_profile("h100-fp32", warn_device=False)
    with AlphaProfiler(model, profile=profile) as p:
        model(x)
    ms, joules = p._gradient_sums_ms()
    assert len(ms) == 2 and (ms > 0).all() and (joules > 0).all()
    without = sum(r.predicted_ms for r in p.train_records()) + sum(o.predicted_ms for o in p.train_ops())
    assert p.train_step_ms == pytest.approx(without + ms.sum())


def test_a_corrupt_training_channels_last_section_names_the_field(shipped):
    import dataclasses

    from torch_alpha_profiler.profile import ProfileError, profile_from_dict

    train = dict(shipped.train, channels_last={"parameters": {"classes": {}}})
    with pytest.raises(ProfileError, match="train.channels_last.parameters"):
        profile_from_dict(dataclasses.replace(shipped, train=train).to_dict())
