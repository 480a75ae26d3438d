"""A fast shape-only forward pass: weights on meta, activations on the CPU.

Neither plain device is fast for every model. On meta tensors each kernel is
shape-only, but many meta kernels run in Python (batch norm, layer norm,
hardswish: 0.3 to 0.7 ms a call), so op-heavy models such as
mobilenet_v3_large are slower on meta than on the CPU. On CPU tensors cheap
ops run in C++, but convolutions and matrix products cost their FLOPs
(vit_b_16: 350 ms at batch 1). :class:`ShapeOnlyMode` takes the cheap half of
each: FLOP-heavy ops get their output shape from the meta kernel and return
zeros on the CPU; all other ops run for real, on the CPU, on those zeros.
Their cost grows with the activations, so large inputs go to meta instead
(:func:`resolve_device`). Measurements: docs/performance.md.

Values are meaningless (zeros), shapes are exact: use it only where shapes
are what counts, as the profiler's hooks do.
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

_aten = torch.ops.aten

# ops whose cost is FLOPs, not calls: shape-inferred on meta, never computed
HEAVY_OPS = frozenset({
    _aten.convolution.default,
    _aten.addmm.default,
    _aten.mm.default,
    _aten.bmm.default,
    _aten.baddbmm.default,
    _aten._native_multi_head_attention.default,
    _aten._scaled_dot_product_flash_attention_for_cpu.default,
})

DEVICES = ("auto", "hybrid", "meta", "cpu")

# "auto" runs the hybrid pass up to this many input pixels (batch x height x
# width), meta above: the hybrid pass's elementwise work grows with the
# activations, meta's cost does not. In the batch sweep of docs/performance.md
# (224 x 224) hybrid is faster for most models at batch 2 and slower at batch 4.
AUTO_HYBRID_MAX_PIXELS = 150_000

_META = torch.device("meta")


def resolve_device(device: str, batch: int, size) -> str:
    """The pass to run for ``device``: "auto" becomes "hybrid" or "meta" by input size."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device != "auto":
        return device
    return "hybrid" if batch * size[0] * size[1] <= AUTO_HYBRID_MAX_PIXELS else "meta"


def _to_meta(x):
    return x.to(_META) if isinstance(x, torch.Tensor) and x.device.type != "meta" else x


def _cpu_zeros(x):
    if isinstance(x, torch.Tensor) and x.device.type == "meta":
        return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype).zero_()
    return x


def _mixes_meta_and_cpu(args, kwargs) -> bool:
    meta = cpu = False
    for group in (args, kwargs.values()):
        for x in group:
            for t in (x if isinstance(x, (list, tuple)) else (x,)):
                if isinstance(t, torch.Tensor):
                    if t.device.type == "meta":
                        meta = True
                    elif t.dim():  # CPU scalars mix with meta tensors anyway
                        cpu = True
    return meta and cpu


class ShapeOnlyMode(TorchDispatchMode):
    """Run a forward on CPU activations and meta weights, skipping the FLOPs.

        model = build_model("resnet50", device="meta")
        with ShapeOnlyMode(), torch.no_grad():
            model(torch.zeros(1, 3, 224, 224))

    Ops in :data:`HEAVY_OPS` run on meta copies of their inputs and return CPU
    zeros of the inferred shape; an op mixing meta weights and CPU
    activations gets the weights as CPU zeros; ops on meta tensors alone
    (views of weights) stay on meta. Inside the block torch runs on one
    thread: the CPU ops left are small, and on a busy 2-core machine two
    threads made mobilenet_v3_large's pass 1.0 s instead of 15 ms.
    """

    def __enter__(self):
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)
        return super().__enter__()

    def __exit__(self, exc_type, exc, tb):
        try:
            return super().__exit__(exc_type, exc, tb)
        finally:
            torch.set_num_threads(self._threads)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        # the conversions below are this mode's own bookkeeping: no other dispatch mode
        # (the profiler's op capture) sees them
        kwargs = kwargs or {}
        if func in HEAVY_OPS:
            with torch._C._DisableTorchDispatch():
                args, kwargs = tree_map(_to_meta, (args, kwargs))
            out = func(*args, **kwargs)
            with torch._C._DisableTorchDispatch():
                return tree_map(_cpu_zeros, out)
        if _mixes_meta_and_cpu(args, kwargs):
            with torch._C._DisableTorchDispatch():
                args, kwargs = tree_map(_cpu_zeros, (args, kwargs))
        return func(*args, **kwargs)
