"""records: frozen LayerRecord / NotCosted."""
import dataclasses

import pytest

from torch_alpha_profiler.records import LayerRecord, NotCosted


def _record(**kw):
    base = dict(name="fc", kind="Linear", module_type="Linear", input_shape=(2, 8),
                output_shape=(2, 4), batch=2, in_channels=8, out_channels=4)
    base.update(kw)
    return LayerRecord(**base)


def test_layer_record_is_frozen():
    r = _record()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.batch = 3


def test_layer_record_defaults_are_uncosted_unit_geometry():
    r = _record()
    assert (r.in_hw, r.out_hw, r.kernel, r.stride, r.padding, r.dilation) == (
        (1, 1), (1, 1), (1, 1), (1, 1), (0, 0), (1, 1))
    assert r.groups == 1 and r.dtype == "float32" and r.device == "cpu"
    # costs stay None until cost.attach_costs fills them: never a silent 0
    assert (r.macs, r.flops, r.alpha, r.alpha_flops, r.predicted_ms, r.cost_class) == (None,) * 6


def test_records_compare_by_value_and_hash():
    assert _record() == _record()
    assert hash(_record()) == hash(_record())
    assert _record() != _record(batch=3)


def test_not_costed_fields():
    n = NotCosted("conv1d", "Conv1d", (1, 3, 10), "no cost formula")
    assert dataclasses.asdict(n) == {"name": "conv1d", "module_type": "Conv1d",
                                     "input_shape": (1, 3, 10), "reason": "no cost formula", "calls": 1}
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.name = "x"
