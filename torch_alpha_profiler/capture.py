"""Capture every aten operation of a forward pass, attributed to the innermost module.

:class:`OpCapture` is a ``TorchDispatchMode`` that the profiler enters only
inside its ``with`` block, together with a pre- and post-forward hook on
every module that keeps the stack of running modules. An operation is
recorded when it runs inside the model's forward, outside any Conv2d/Linear
layer (those are costed whole, from their hooks) and is not a view or an
allocation. It is kept as a raw tuple of shapes; :func:`to_records` turns
the raw calls into frozen :class:`~torch_alpha_profiler.ops.OpRecord` s.
Operators with no cost class are counted by name, never costed as 0.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, List, Optional, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .ops import MATRIX_CLASSES, OpRecord, Piece, TensorMeta, canonical, inner_size, outer_size, matrix_flops, \
    matrix_pieces, op_class, stream_bytes

_CLASS_CACHE: Dict[object, Tuple[str, Optional[str]]] = {}


def classify(func) -> Tuple[str, Optional[str]]:
    """(packet name, cost class or 'free' or None) of an aten overload, cached."""
    hit = _CLASS_CACHE.get(func)
    if hit is None:
        packet = func.overloadpacket.__name__
        returns = func._schema.returns
        is_view = any(r.alias_info is not None and not r.alias_info.is_write for r in returns)
        hit = _CLASS_CACHE[func] = (packet, op_class(packet, is_view))
    return hit


def tensor_meta(t: torch.Tensor) -> TensorMeta:
    shape = tuple(t.shape)
    unique = 1
    for size, stride in zip(shape, t.stride()):
        if stride != 0:
            unique *= size
    if 0 in shape:
        unique = 0
    return TensorMeta(shape, str(t.dtype)[6:], t.element_size(), unique)


def _metas(values) -> List[TensorMeta]:
    out = []
    for v in values:
        if isinstance(v, torch.Tensor):
            out.append(tensor_meta(v))
        elif isinstance(v, (list, tuple)):
            out.extend(tensor_meta(t) for t in v if isinstance(t, torch.Tensor))
    return out


class ModuleStack:
    """The modules running right now, innermost last, kept by forward (pre-)hooks."""

    def __init__(self):
        self.frames: List[Tuple[str, str, bool]] = []  # (name, type, is a costed layer)
        self.module_calls = 0
        self.view_calls = 0  # views and allocations outside costed layers: no kernel, some CPU time

    def pre_hook(self, name: str, costed: bool):
        frames = self.frames

        def hook(module, args):
            frames.append((name, type(module).__name__, costed))
            self.module_calls += 1

        return hook

    def post_hook(self):
        frames = self.frames

        def hook(module, args, output):
            if frames:
                frames.pop()

        return hook


class OpCapture(TorchDispatchMode):
    """Record the operations dispatched inside the model's forward (see module doc)."""

    def __init__(self, stack: ModuleStack, sequence):
        super().__init__()
        self.stack = stack
        self.sequence = sequence  # shared counter with the layer hooks: call order
        self.calls: list = []
        self.uncosted: Counter = Counter()  # (module type, op) -> calls

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        frames = self.stack.frames
        if not frames or frames[-1][2]:
            return out  # outside the model, or inside a Conv2d/Linear layer (costed whole)
        packet, cls = classify(func)
        if cls == "free":
            self.stack.view_calls += 1
            return out
        name, mtype, _ = frames[-1]
        if cls is None:
            self.uncosted[(name, mtype, packet)] += 1
            return out
        inputs = _metas(list(args) + list(kwargs.values()))
        outputs = _metas(out if isinstance(out, (list, tuple)) else (out,))
        if cls in MATRIX_CLASSES:
            pieces = matrix_pieces(packet, inputs, outputs, args)
            flops = matrix_flops(func, pieces, args, kwargs, out)
        else:
            pieces, flops = (), 0
        self.calls.append((name, mtype, f"{packet}.{func._overloadname}", cls, inputs, outputs,
                           pieces, flops, next(self.sequence), self.stack.module_calls, self.stack.view_calls))
        return out


def to_records(calls) -> List[OpRecord]:
    """Frozen OpRecords from OpCapture's raw calls (call order kept)."""
    records = []
    for name, mtype, op, cls, inputs, outputs, pieces, flops, seq, *_ in calls:
        packet = op.split(".")[0]
        opname = canonical(packet)
        # batch norm's saved statistics are empty in inference (meta kernels give them shape (C,))
        nbytes = stream_bytes(packet, inputs, outputs[:1] if opname == "batch_norm" else outputs)
        if not pieces:
            item = outputs[0].itemsize if outputs else (inputs[0].itemsize if inputs else 4)
            pieces = (Piece(cls, nbytes=nbytes, itemsize=item, op=opname,
                            inner=inner_size(opname, inputs[0].shape if inputs else ()),
                            outer=outer_size(opname, inputs[0].shape if inputs else ())),)
        dtype = (inputs[0] if inputs else outputs[0]).dtype if (inputs or outputs) else "float32"
        records.append(OpRecord(
            name=name, module_type=mtype, op=op, op_class=cls,
            input_shapes=tuple(t.shape for t in inputs), output_shapes=tuple(t.shape for t in outputs),
            dtype=dtype, nbytes=nbytes, flops=int(flops), pieces=tuple(pieces), call_index=seq))
    return records
