"""Eager-mode time: the CPU launching kernels one by one while the GPU runs them.

In eager PyTorch every operation costs the CPU a launch (Python, the
dispatcher, the kernel launch: ``host.launch_us`` per class), every view or
allocation a little (``host.view_us``: no kernel) and every module call a
little more (``host.module_us``); the GPU starts a kernel when it has been
launched and the previous one has finished. With ``c_i`` the time the CPU
has launched call i and ``g_i`` the time the GPU finishes it:

    c_i = c_(i-1) + launch(i) + module_us x (module calls since call i-1)
                              + view_us x (views since call i-1)
    g_i = max(g_(i-1), c_i) + gpu_ms(i)

and the forward takes max(g_last, c_last). Small models at batch 1 are
bound by the CPU (the c's), large ones by the GPU (the g's); in a CUDA graph
(``predicted_ms``) the c's vanish.
"""
from __future__ import annotations

from typing import List, Mapping, Sequence, Tuple

# (call order, launch us, GPU ms, module calls before it, views before it)
Event = Tuple[int, float, float, int, int]


def timeline(records, layer_order: Sequence[Tuple[int, int, int]], ops, op_calls,
             host: Mapping[str, object]) -> List[Event]:
    """The layers and ops of one forward as eager events, in call order."""
    launch = host["launch_us"]
    events: List[Event] = []
    for r, (seq, modules, views) in zip(records, layer_order):
        events.append((seq, float(launch["conv" if r.kind == "Conv2d" else "linear"]), r.predicted_ms,
                       modules, views))
    for o, raw in zip(ops, op_calls):
        us = sum(float(launch.get(p.cls, launch["elementwise"])) for p in o.pieces)
        events.append((o.call_index, us, o.predicted_ms or 0.0, raw[9], raw[10]))
    events.sort(key=lambda e: e[0])
    return events


def eager_ms(events: Sequence[Event], host: Mapping[str, object], module_calls: int,
             view_calls: int = 0) -> float:
    """Simulated wall time of one eager forward (see the module doc), in ms."""
    module_ms = float(host["module_us"]) / 1e3
    view_ms = float(host.get("view_us", 0.0)) / 1e3
    cpu = gpu = 0.0
    seen_modules = seen_views = 0
    for _, launch_us, gpu_ms, modules, views in events:
        cpu += (modules - seen_modules) * module_ms + (views - seen_views) * view_ms + launch_us / 1e3
        seen_modules, seen_views = modules, views
        gpu = max(gpu, cpu) + gpu_ms
    cpu += max(module_calls - seen_modules, 0) * module_ms + max(view_calls - seen_views, 0) * view_ms
    return max(gpu, cpu)
