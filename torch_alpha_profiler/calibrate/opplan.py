"""Which synthetic operations a calibration times, beyond Conv2d and Linear.

An op plan row names an operation kind (:data:`KINDS`) and four sizes
``d0..d3``: an activation ``N x C x H x W`` for the memory-bound kinds,
``batch, m, k, n`` for ``bmm`` and ``batch, heads, seq, head_dim`` for ``sdpa``.
Sizes grow geometrically over five decades of bytes (the one axis the stream
classes are costed on) with channel and side counts as networks use them.
"""
from __future__ import annotations

import math
import random
from typing import Callable, Dict, List, Tuple

OP_PLAN_COLUMNS = ("sweep", "op", "d0", "d1", "d2", "d3")


def _t(shape, device, dtype, positive=False):
    import torch

    x = torch.randn(*shape, device=device, dtype=dtype)
    return x.abs_() + 0.5 if positive else x


def input_shape(kind: str, d) -> Tuple[int, ...]:
    """The shape of the (first) input a kind's builder makes from its sizes ``d``."""
    n, c, h, w = d
    if kind == "layer_norm":
        return (n, h * w, c)  # rows of c channels, as vision transformers have them
    if kind == "bmm":
        return (n, c, h)
    return (n, c, h, w)


def make_inputs(kind: str, d, device, dtype) -> Tuple[tuple, Tuple[bool, ...]]:
    """A kind's random inputs for sizes ``d``, and which of them are trainable (not statistics)."""
    n, c, h, w = d
    x = _t(input_shape(kind, d), device, dtype)
    if kind in ("add", "cat"):
        return (x, _t(d, device, dtype)), (True, True)
    if kind == "mul_bcast":
        return (x, _t((n, c, 1, 1), device, dtype)), (True, True)
    if kind == "batch_norm":  # input, running mean and variance (constants), weight, bias
        return ((x, _t((c,), device, dtype), _t((c,), device, dtype, positive=True), _t((c,), device, dtype),
                 _t((c,), device, dtype)), (True, False, False, True, True))
    if kind == "layer_norm":
        return (x, _t((c,), device, dtype), _t((c,), device, dtype)), (True, True, True)
    if kind == "bmm":
        return (x, _t((n, h, w), device, dtype)), (True, True)
    if kind == "sdpa":
        return tuple(_t(d, device, dtype) for _ in range(3)), (True, True, True)
    return (x,), (True,)


def _functions(training: bool = False) -> Dict[str, Tuple[str, Callable]]:
    """kind: (cost class, function of the kind's inputs); ``training``: batch norm on batch statistics."""
    import torch
    import torch.nn.functional as F

    return {
        "add": ("elementwise", torch.add),
        "mul_bcast": ("elementwise", torch.mul),
        "relu_": ("elementwise", torch.relu_),
        "gelu": ("elementwise", F.gelu),
        "silu_": ("elementwise", lambda x: F.silu(x, inplace=True)),
        "hardswish_": ("elementwise", lambda x: F.hardswish(x, inplace=True)),
        "sigmoid": ("elementwise", torch.sigmoid),
        "batch_norm": ("norm", lambda x, m, v, w, b: F.batch_norm(x, m, v, w, b, training=training)),
        "layer_norm": ("norm", lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b)),
        "mean_hw": ("reduce", lambda x: x.mean((2, 3), keepdim=True)),
        "softmax": ("reduce", lambda x: x.softmax(-1)),
        "max_pool": ("pool", lambda x: F.max_pool2d(x, 3, 2, 1)),
        "avg_pool": ("pool", lambda x: F.avg_pool2d(x, 2, 2)),
        "adaptive_avg": ("pool", lambda x: F.adaptive_avg_pool2d(x, 1)),
        "cat": ("copy", lambda x, y: torch.cat([x, y], 1)),
        "permute_copy": ("copy", lambda x: x.permute(0, 2, 3, 1).contiguous()),
        "bmm": ("matmul", torch.bmm),
        "sdpa": ("attention", F.scaled_dot_product_attention),
        "view": ("view", lambda x: x.view(x.shape[0], -1)),
        "permute": ("view", lambda x: x.permute(0, 2, 3, 1)),
    }


def _kinds() -> Dict[str, Tuple[str, Callable]]:
    """kind: (cost class, builder(d, device, dtype) -> zero-argument callable) for inference."""
    def builder_of(fn):
        def build(d, device, dtype, kind):
            inputs, _ = make_inputs(kind, d, device, dtype)
            return lambda: fn(*inputs)
        return build

    out = {}
    for kind, (cls, fn) in _functions().items():
        b = builder_of(fn)
        out[kind] = (cls, lambda d, device, dtype, b=b, kind=kind: b(d, device, dtype, kind))
    return out


# timed for their CPU cost only (eager mode): views launch no kernel
HOST_ONLY_KINDS = ("view", "permute")

KINDS = ("add", "mul_bcast", "relu_", "gelu", "silu_", "hardswish_", "sigmoid", "batch_norm",
         "layer_norm", "mean_hw", "softmax", "max_pool", "avg_pool", "adaptive_avg", "cat",
         "permute_copy", "bmm", "sdpa")


def builder(kind: str):
    """(cost class, builder) of an op kind."""
    kinds = _kinds()
    if kind not in kinds:
        raise KeyError(f"unknown op kind {kind!r}; known: {', '.join(KINDS + HOST_ONLY_KINDS)}")
    return kinds[kind]


def op_row(sweep: str, op: str, d) -> Dict[str, str]:
    return {"sweep": sweep, "op": op, **{f"d{i}": str(int(v)) for i, v in enumerate(d)}}


CHANNELS = (3, 16, 24, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048)
BATCHES = (1, 2, 8, 32, 64)
MAX_ELEMENTS = 2 ** 27  # per activation (512 MiB in fp32)


def _activation(target: float, rng: random.Random, channels=CHANNELS) -> Tuple[int, int, int, int]:
    """An N x C x H x W shape of about ``target`` elements, as networks have them."""
    for _ in range(100):
        n, c = rng.choice(BATCHES), rng.choice(channels)
        side = math.sqrt(target / (n * c))
        if 1 <= side <= 448:
            s = max(1, int(round(side)))
            return n, c, s, s
    return 1, 1, 1, max(1, int(target))


def norm_train_rows(max_elements: int = 2 ** 27) -> List[Dict[str, str]]:
    """Batch norms as convolutional networks train them (batch 8 and 32, 16-960 channels over
    7x7 to 224x224), for the training plan: narrow spatial sizes with many channels, and wide
    ones with few (a network's first stages), are where a training step's batch norm is slowest
    per byte, and random sizes rarely reach them."""
    return [op_row("norm_train", "batch_norm", (n, c, hw, hw)) for n in (8, 32) for c in (16, 32, 96, 240, 576, 960)
            for hw in (7, 14, 28, 56, 112, 224) if n * c * hw * hw <= max_elements]


# networks' activations (network_rows): their channel counts and square sides, batch 1 weighted
NETWORK_CHANNELS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048)
NETWORK_SIDES = (7, 14, 28, 56, 112)
NETWORK_BATCHES = (1, 1, 8, 32)


def network_rows(per_kind: int, seed: int, max_elements: int = MAX_ELEMENTS) -> List[Dict[str, str]]:
    """``per_kind`` rows of each stream kind at the activations of convolutional networks (batch
    1, 8 or 32; 16-2048 channels; 7x7 to 112x112), drawn at random: the stream rows are spread
    over sizes, and at a given size over any batch and channel count, while a network's operators
    sit on a few channel counts and sides. Not in calibrate's plan: measured once (session 8,
    benchmarks/gpu_op_network_rows.sh), the op fit without them predicted them within 7-9%,
    without bias (benchmarks/op_network_rows.py), so they did not earn their calibration time."""
    smallest = min(NETWORK_BATCHES) * min(NETWORK_CHANNELS) * min(NETWORK_SIDES) ** 2
    if per_kind > 0 and max_elements < smallest:
        raise ValueError(f"network_rows: no network activation fits in {max_elements} elements "
                         f"(the smallest has {smallest})")
    rng = random.Random(seed)
    rows: List[Dict[str, str]] = []
    for kind in KINDS:
        if kind in ("bmm", "sdpa"):
            continue
        drawn = 0
        while drawn < per_kind:
            n, c, h = rng.choice(NETWORK_BATCHES), rng.choice(NETWORK_CHANNELS), rng.choice(NETWORK_SIDES)
            if n * c * h * h <= max_elements:
                rows.append(op_row("network", kind, (n, c, h, h)))
                drawn += 1
    return rows


def make_op_plan(per_kind: int = 20, seed: int = 0, matmuls: int = 64, attention: int = 32,
                 max_elements: int = MAX_ELEMENTS, network: int = 0) -> List[Dict[str, str]]:
    """The op calibration plan: ``per_kind`` sizes of each stream kind, random bmm and sdpa shapes,
    then ``network`` rows of each stream kind at networks' activations (network_rows; appended, so
    that the other rows keep their places).

    Stream sizes run from 2^10 elements to ``max_elements`` (2^27 by default).
    """
    rng = random.Random(seed)
    top = math.log2(max_elements) - 10
    plan: List[Dict[str, str]] = []
    for kind in KINDS:
        if kind in ("bmm", "sdpa"):
            continue
        for i in range(per_kind):
            # geometric from 2^10 to 2^27 elements, jittered
            target = 2 ** (10 + top * (i + rng.random()) / per_kind)
            # networks normalize over 16 channels or more (3 only at the input, never normalized)
            channels = CHANNELS[1:] if kind in ("batch_norm", "layer_norm") else CHANNELS
            plan.append(op_row("stream", kind, _activation(min(target, max_elements), rng, channels)))
    for _ in range(matmuls):
        while True:
            b = rng.choice((1, 4, 12, 48, 96, 192, 384, 768, 1536))
            m = rng.choice((1, 16, 49, 64, 128, 197, 256, 512, 1024, 2048))
            k = rng.choice((16, 32, 49, 64, 128, 197, 256, 512, 1024))
            n = rng.choice((16, 32, 49, 64, 128, 197, 256, 512, 1024, 2048))
            if b * (m * k + k * n + m * n) <= max_elements:
                break
        plan.append(op_row("matmul", "bmm", (b, m, k, n)))
    for _ in range(attention):
        while True:
            b, h = rng.choice((1, 2, 8, 32, 64)), rng.choice((1, 4, 8, 12, 16))
            s, e = rng.choice((16, 49, 64, 197, 256, 577, 1024, 2048, 4096)), rng.choice((32, 64, 128))
            if b * h * s * max(s, e) <= max_elements:
                break
        plan.append(op_row("attention", "sdpa", (b, h, s, e)))
    return plan + network_rows(network, seed + 1, max_elements) if network else plan


def host_plan() -> List[Dict[str, str]]:
    """The smallest configuration of each kind (and of views, which launch no kernel): timed
    eagerly, it measures the CPU's cost of one call."""
    small = {"bmm": (1, 16, 16, 16), "sdpa": (1, 1, 16, 32)}
    return [op_row("host", kind, small.get(kind, (1, 16, 4, 4))) for kind in KINDS + HOST_ONLY_KINDS]
