"""Costs of a training step (forward in train mode + backward) from a profile's 'train' section.

:func:`training_view` is the profile with the training-step parameters (trainfit.py)
in place of the forward's, and the training-step power coefficients in place of
the forward's: the forward's cost code (cost.py, opcost.py) then costs each
recorded call's whole training step. A layer whose input needs no gradient (the
network's first layer: no grad-input product) costs ``no_input_grad_ratio``
of a full step. A tensor that several operations read gets the sum of their gradients in the
backward: one elementwise addition per extra reader (:func:`gradient_sums`, found by walking
the autograd graph of the recorded forward), costed as the forward's ``add`` in time and
energy (each is one addition kernel, not a layer's training step), and so are a biased
Conv2d's bias kernels (the forward's add and the backward's sum over the output's gradient:
cost.bias_pieces). Channels-last convolutions use the training section's own channels-last
parameters where it has them (calibrations before they were timed: the NCHW ones).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Iterable, List, Sequence, Tuple

from .records import LayerRecord


def training_view(profile):
    """``profile`` costing training steps; None when it has no 'train' section."""
    train = profile.train
    if not train:
        return None
    power = (profile.power or {}).get("train")
    # the residual trees and the neighbour correction are the forward's (fitted on forward
    # times): none for steps
    return replace(profile, parameters=train["parameters"], ops=train.get("ops"),
                   channels_last=train.get("channels_last"), power={"forward": power} if power else None,
                   correction=None, trees=None)


def needs_input_grad(records: Sequence[LayerRecord]) -> List[bool]:
    """Whether each layer computes a grad-input: its input required grad when recorded with
    autograd on; recorded without (inference), every layer but the first one called."""
    return [r.input_grad if r.input_grad is not None else i > 0 for i, r in enumerate(records)]


def attach_train_costs(records: Sequence[LayerRecord], profile) -> List[LayerRecord]:
    """Copies of ``records`` whose predicted_ms and energy_j are one training step's."""
    from .cost import attach_costs

    view = training_view(profile)
    if view is None:
        raise ValueError(f"profile {profile.name!r} has no training-step classes ('train'); "
                         "calibrate with --train to make one")
    ratio = float(profile.train["no_input_grad_ratio"])
    out = []
    # a biased Conv2d's bias kernels (its add, and its gradient's sum) are single kernels: costed
    # as the forward's, as the gradient sums are
    for r, grad in zip(attach_costs(records, view, bias_profile=profile, bias_backward=True),
                       needs_input_grad(records)):
        if not grad:
            r = replace(r, predicted_ms=r.predicted_ms * ratio,
                        energy_j=None if r.energy_j is None else r.energy_j * ratio)
        out.append(r)
    return out


def train_energy_available(profile) -> bool:
    return bool(profile.train) and bool((profile.power or {}).get("train"))



def _tensors(obj) -> Iterable:
    """The tensors in a module's output (a tensor, or tuples, lists, dicts of them)."""
    import torch

    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for x in obj:
            yield from _tensors(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _tensors(x)


def gradient_sums(output) -> List[Tuple[Tuple[int, ...], str]]:
    """(shape, dtype) of each gradient addition the backward of ``output`` runs: a forward
    tensor read by k operations receives k gradients, summed by k - 1 additions. Found from
    the autograd graph (parameters' accumulation excluded); empty without autograd or where
    this torch does not expose the graph's tensor metadata."""
    from collections import Counter

    roots = [t.grad_fn for t in _tensors(output) if t.grad_fn is not None]
    readers: Counter = Counter()
    nodes, stack, seen = {}, list(roots), set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        nodes[id(node)] = node
        for child, index in node.next_functions:
            if child is not None:
                readers[(id(child), index)] += 1
                stack.append(child)
    out = []
    for (key, index), k in readers.items():
        node = nodes[key]
        if k < 2 or type(node).__name__ == "AccumulateGrad":
            continue
        meta = getattr(node, "_input_metadata", None)
        if meta is None or index >= len(meta):
            continue
        shape, dtype = tuple(meta[index].shape), str(meta[index].dtype)[6:]
        out += [(shape, dtype)] * (k - 1)
    return out


def gradient_sum_pieces(sums: Sequence[Tuple[Tuple[int, ...], str]]):
    """The additions of :func:`gradient_sums` as elementwise ``add`` pieces (read two, write one)."""
    from .layers import itemsize_of
    from .ops import Piece

    pieces = []
    for shape, dtype in sums:
        numel = 1
        for d in shape:
            numel *= int(d)
        size = itemsize_of(dtype)
        pieces.append(Piece("elementwise", nbytes=3 * numel * size, itemsize=size, op="add"))
    return pieces
