"""eager: the CPU launching kernels while the GPU runs them, by hand and through AlphaProfiler.eager_ms.

Events are (call order, launch us, GPU ms, module calls before, views before).
A CPU-bound forward takes the sum of its launches and module/view costs; a
GPU-bound one the first launch plus the sum of GPU times.
"""
import dataclasses

import pytest
import torch
from torch import nn

from torch_alpha_profiler import AlphaProfiler
from torch_alpha_profiler import profile as profile_mod
from torch_alpha_profiler.eager import eager_ms, timeline
from torch_alpha_profiler.ops import HOST_CLASSES

from ophelpers import HOST, op_profile


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    monkeypatch.setattr(profile_mod, "current_device_name", lambda: None)


def host(launch=0.0, module=0.0, view=0.0):
    return {"launch_us": {cls: launch for cls in HOST_CLASSES}, "module_us": module, "view_us": view}


def test_cpu_bound_is_the_sum_of_launches_modules_and_views():
    # three 10-us launches, one module call before each, a view before the 2nd and one after the last
    events = [(0, 10.0, 0.0005, 1, 0), (1, 10.0, 0.0005, 2, 1), (2, 10.0, 0.0005, 3, 1)]
    h = host(module=2.0, view=1.0)
    # CPU: 3 x 10 + 3 x 2 (modules) + 2 x 1 (views) = 38 us; the last kernel ends at 37 + 0.5 us
    assert eager_ms(events, h, module_calls=3, view_calls=2) == pytest.approx(0.038, rel=1e-12)
    # module calls after the last launch still cost CPU time
    assert eager_ms(events, h, module_calls=5, view_calls=2) == pytest.approx(0.042, rel=1e-12)
    # the totals never go below what the events saw
    assert eager_ms(events, h, module_calls=0, view_calls=0) == pytest.approx(0.0375, rel=1e-12)


def test_gpu_bound_is_the_first_launch_plus_every_gpu_time():
    events = [(0, 1.0, 1.0, 0, 0), (1, 1.0, 2.0, 0, 0), (2, 1.0, 0.5, 0, 0)]
    assert eager_ms(events, host(), module_calls=0) == pytest.approx(0.001 + 3.5, rel=1e-12)
    # module and view costs are hidden behind the GPU work
    assert eager_ms(events, host(module=50.0, view=50.0), module_calls=3, view_calls=3) \
        == pytest.approx(0.001 + 3.5, rel=1e-12)


def test_mixed_cpu_and_gpu_bound_stretches():
    # c: 10, 110, 120 us; g: 0.01 + 0.05 = 0.06, max(0.06, 0.11) + 0.001 = 0.111, max(0.111, 0.12) + 0.2
    events = [(0, 10.0, 0.05, 0, 0), (1, 100.0, 0.001, 0, 0), (2, 10.0, 0.2, 0, 0)]
    got = eager_ms(events, host(), module_calls=0)
    assert got == pytest.approx(0.32, rel=1e-12)
    assert got > 0.120 and got > 0.010 + 0.251  # more than either bound alone


def test_no_events():
    assert eager_ms([], host(module=3.0, view=1.0), module_calls=2, view_calls=4) == pytest.approx(0.010)
    assert eager_ms([], host(), module_calls=0) == 0.0


def test_timeline_orders_layers_and_ops_and_uses_host_classes():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            y = torch.relu(self.conv(x)).mean((2, 3))
            return self.fc(y)

    launch = {cls: float(i + 1) for i, cls in enumerate(HOST_CLASSES)}
    profile = op_profile(host=dict(HOST, launch_us=launch))
    model = Net()
    with AlphaProfiler(model, profile=profile) as p, torch.no_grad():
        model(torch.randn(1, 3, 6, 6))
    events = timeline(p.records, p._layer_order, p.ops, p._op_calls, profile.host)
    assert [e[0] for e in events] == [0, 1, 2, 3]
    assert [e[1] for e in events] == [launch["conv"], launch["elementwise"], launch["reduce"], launch["linear"]]
    assert [e[2] for e in events] == [p.records[0].predicted_ms, p.ops[0].predicted_ms, p.ops[1].predicted_ms,
                                      p.records[1].predicted_ms]
    # module calls before each: root + conv; no new module for the ops; fc
    assert [e[3] for e in events] == [2, 2, 2, 3]


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.fc(x))


def test_eager_ms_by_hand_on_a_small_model():
    launch = dict(HOST["launch_us"], linear=100.0, elementwise=50.0)
    profile = op_profile(host={"launch_us": launch, "module_us": 10.0, "view_us": 5.0})
    model = Small()
    with AlphaProfiler(model, profile=profile) as p, torch.no_grad():
        model(torch.randn(2, 16))
    (relu,) = p.ops
    assert p.records[0].predicted_ms < 0.06  # the Linear's kernel ends before the ReLU is launched
    # CPU: 3 module calls (root, fc, act) x 10 us + 100 us + 50 us = 0.18 ms; then the ReLU runs
    assert p.eager_ms == pytest.approx(0.18 + relu.predicted_ms, rel=1e-12)
    assert p.eager_ms > p.predicted_ms


def test_eager_ms_is_none_without_host_costs():
    model = Small()
    for profile in (op_profile(host=None), "t2000-paper"):
        with AlphaProfiler(model, profile=profile, scope="model") as p, torch.no_grad():
            model(torch.randn(2, 16))
        assert p.eager_ms is None
        assert p.predicted_ms > 0


def test_eager_ms_with_zero_host_costs_is_the_gpu_time():
    from torch_alpha_profiler.zoo import build_model

    model = build_model("resnet18", device="meta")
    x = torch.empty(1, 3, 64, 64, device="meta")
    with AlphaProfiler(model, profile=op_profile(host=host())) as p, torch.no_grad():
        model(x)
    assert p.eager_ms == pytest.approx(p.predicted_ms, rel=1e-9)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "vit_b_16"])
def test_eager_ms_is_at_least_the_gpu_time(name):
    from torch_alpha_profiler.zoo import build_model

    model = build_model(name, device="meta")
    x = torch.empty(1, 3, 224, 224, device="meta")
    profile = op_profile()
    with AlphaProfiler(model, profile=profile) as p, torch.no_grad():
        model(x)
    assert len(p.ops) > 10
    assert p.eager_ms >= p.predicted_ms > 0
    # costlier launches never make the forward faster
    slow = dataclasses.replace(profile, host=host(launch=50.0, module=5.0, view=2.0))
    with AlphaProfiler(model, profile=slow) as q, torch.no_grad():
        model(x)
    assert q.eager_ms >= p.eager_ms
    calls = len(q.records) + sum(len(o.pieces) for o in q.ops)
    assert q.eager_ms >= calls * 0.050  # at least every launch, back to back


def test_no_eager_estimate_without_the_other_operations():
    """scope "layers" records no op launches: an eager time from the layers alone would mislead."""
    import torch
    from torch import nn

    from torch_alpha_profiler import AlphaProfiler, load_profile

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    with AlphaProfiler(model, profile=load_profile("h100-fp32", warn_device=False), scope="layers") as p, \
            torch.no_grad():
        model(torch.randn(1, 3, 8, 8))
    assert p.records and p.eager_ms is None
