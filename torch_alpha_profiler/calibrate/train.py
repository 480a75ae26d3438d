"""Time training steps of calibration layers and ops: forward + backward, as CUDA graphs.

A training step of a layer is its forward (train mode) and its backward: for a
convolution, a grad-input and a grad-weight convolution; for Linear, two matrix
products; for a memory-bound operation, its own backward kernel. Each plan row
(every Conv2d/Linear row of the plan, a third of them and those that take an image again with
an input that needs no gradient, half of the op plan's trainable kinds)
is timed with the same timer as the forward, with a fixed output gradient; the
input's gradient is computed but not accumulated (it is an activation in a network),
the parameters' gradients accumulate into ``.grad`` (as in a network's step); rows go to ``PREFIX-train.csv``
with the forward's row key, so ``train_ms / time_ms`` of the same configuration
is its step-over-forward ratio. trainfit.py fits the training cost classes on them.
"""
from __future__ import annotations

import csv
import os
from typing import Dict, List, Optional, Sequence

from .measure import Progress, RESULT_COLUMNS, build_layer, run_rows, timing_fields
from .plan import config_key, takes_image
from .opplan import KINDS

TRAIN_COLUMNS = ("source", "op", "d0", "d1", "d2", "d3") + tuple(c for c in RESULT_COLUMNS if c != "status") + (
    "input_grad", "cls", "status")
# a row's identity in the training and energy CSVs (resume)
TRAIN_KEY_COLUMNS = ("source", "op", "d0", "d1", "d2", "d3", "kind", "N", "Cin", "Cout", "H", "W", "K1", "K2",
                     "stride", "groups", "padding", "dilation", "bias", "layout", "input_grad")
# op kinds timed for training: in-place kinds (relu_, silu_, hardswish_) cannot take a leaf
# that requires grad, and their out-of-place twins' elementwise class stands for them
TRAIN_OP_KINDS = tuple(k for k in KINDS if not k.endswith("_"))


def row_key(r: Dict[str, str]) -> str:
    """A training or energy row's identity (TRAIN_KEY_COLUMNS)."""
    return ",".join(r.get(c, "") for c in TRAIN_KEY_COLUMNS)


def done_keys(path: str) -> set:
    """Keys of the rows of ``path`` already measured (ok, or out of memory): a resumed run skips them."""
    if not os.path.exists(path):
        return set()
    with open(path, newline="") as f:
        return {row_key(r) for r in csv.DictReader(f) if r.get("status") in ("ok", "oom")}


def train_plan(layer_plan: Sequence[Dict[str, str]], op_plan: Sequence[Dict[str, str]],
               layer_every: int = 1, op_every: int = 2, no_input_grad_share: float = 1 / 3,
               nhwc_plan: Sequence[Dict[str, str]] = (), nhwc_every: int = 1,
               extra_ops: Sequence[Dict[str, str]] = (), seed: int = 0) -> List[Dict[str, str]]:
    """Every ``layer_every``-th layer row (by default all) and every ``op_every``-th op row of a
    trainable kind; a seeded random ``no_input_grad_share`` of those layer rows, and every one
    that takes 4 channels or fewer (an image), again with an input that needs no gradient
    (``input_grad`` 0: a network's first layer, which computes no grad-input); every
    ``nhwc_every``-th row of ``nhwc_plan`` (by default all: channels-last convolutions,
    plan.channels_last_plan);
    and every op row of ``extra_ops`` (opplan.norm_train_rows: batch norms at networks' shapes).

    The no-input-grad rows are drawn at random, not by a stride: the sweeps repeat with short
    periods, and a stride keeps landing on the same stride or size. A row is drawn by a hash of
    its configuration (and ``seed``), so rows appended to the plan leave earlier draws as they
    were and a resumed calibration measures only the new rows' share."""
    import hashlib

    def drawn(r):
        digest = hashlib.sha256(f"{seed}:{config_key(r)}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2 ** 64 < no_input_grad_share

    layers = [dict(r, source="layer", input_grad="1") for r in layer_plan[::layer_every]]
    rows = layers + [dict(r, input_grad="0") for r in layers if drawn(r) or takes_image(r)]
    ops = [r for r in op_plan if r["op"] in TRAIN_OP_KINDS]
    rows += [dict(r, source="op", kind="", input_grad="1") for r in ops[::op_every]]
    rows += [dict(r, source="layer", input_grad="1") for r in nhwc_plan[::nhwc_every]]
    rows += [dict(r, source="op", kind="", input_grad="1") for r in extra_ops]
    return rows


def _step(fn, activations, params, grad):
    """A training step of ``fn()``: the gradients of ``activations`` are computed but not
    accumulated (in a network they flow on to the layer that produced them; a leaf's ``.grad``
    would add an elementwise kernel networks do not run), the parameters' accumulate into
    ``.grad``, as AccumulateGrad does in a network's step."""
    import torch

    wrt = list(activations) + list(params)
    for p in params:
        p.grad = torch.zeros_like(p)

    def step():
        grads = torch.autograd.grad(fn(), wrt, grad)
        for p, g in zip(params, grads[len(activations):]):
            p.grad.add_(g)

    return step


def layer_step(r, device, dtype, seed):
    """A zero-argument training step (forward + backward) of the layer of plan row ``r``: the
    input's gradient is computed unless ``input_grad`` is 0 (see _step)."""
    import torch

    layer, x = build_layer(r, device, dtype, seed=seed)
    layer.train()
    activations = [x.requires_grad_(True)] if r.get("input_grad", "1") != "0" else []
    grad = torch.randn_like(layer(x))
    return _step(lambda: layer(x), activations, [p for p in layer.parameters() if p.requires_grad], grad)


def op_step(r, device, dtype):
    """(cost class, zero-argument training step) of the op of plan row ``r``."""
    import torch

    from .opplan import _functions, make_inputs

    cls, fn = _functions(training=True)[r["op"]]
    inputs, trainable = make_inputs(r["op"], tuple(int(r[f"d{j}"]) for j in range(4)), device,
                                    getattr(torch, dtype))
    # a normalization's weight and bias are parameters (their gradients accumulate); every other
    # trainable input is an activation (see _step)
    params = {"batch_norm": (3, 4), "layer_norm": (1, 2)}.get(r["op"], ())
    for t, trains in zip(inputs, trainable):
        t.requires_grad_(trains)
    grad = torch.randn_like(fn(*inputs))
    return cls, _step(lambda: fn(*inputs), [t for i, (t, g) in enumerate(zip(inputs, trainable))
                                             if g and i not in params],
                      [inputs[i] for i in params], grad)


def measure_train(plan: Sequence[Dict[str, str]], out_csv: str, device: str = "cuda", dtype: str = "float32",
                  timer=None, resume: bool = True, progress: Optional[Progress] = None) -> List[Dict[str, str]]:
    """Time the training step of every row of ``plan``; rows are appended as they are taken."""
    from .timers import CpuTimer, CudaGraphTimer

    if timer is None:
        timer = CudaGraphTimer() if device.startswith("cuda") else CpuTimer()
    done = done_keys(out_csv) if resume else set()

    def time_row(i, r):
        if r["source"] == "layer":
            cls, step = r["kind"], layer_step(r, device, dtype, seed=i)
        else:
            cls, step = op_step(r, device, dtype)
        return dict(timing_fields(timer.measure(step)), cls=cls)

    return run_rows(plan, out_csv, TRAIN_COLUMNS, lambda r: row_key(r) in done,
                    time_row, dict(dtype=dtype), device, resume, progress)
