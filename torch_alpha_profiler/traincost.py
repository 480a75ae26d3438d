"""Costs of a training step (forward in train mode + backward) from a profile's 'train' section.

:func:`training_view` is the profile with the training-step parameters (trainfit.py)
in place of the forward's, and the training-step power coefficients in place of
the forward's: the forward's cost code (cost.py, opcost.py) then costs each
recorded call's whole training step. A layer whose input needs no gradient (the
network's first layer: no grad-input product) costs ``no_input_grad_ratio``
of a full step. Channels-last convolutions use the training section's own channels-last
parameters where it has them (calibrations before they were timed: the NCHW ones).
"""
from __future__ import annotations

from dataclasses import replace
from typing import List, Sequence

from .records import LayerRecord


def training_view(profile):
    """``profile`` costing training steps; None when it has no 'train' section."""
    train = profile.train
    if not train:
        return None
    power = (profile.power or {}).get("train")
    return replace(profile, parameters=train["parameters"], ops=train.get("ops"),
                   channels_last=train.get("channels_last"), power={"forward": power} if power else None)


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
    for r, grad in zip(attach_costs(records, view), needs_input_grad(records)):
        if not grad:
            r = replace(r, predicted_ms=r.predicted_ms * ratio,
                        energy_j=None if r.energy_j is None else r.energy_j * ratio)
        out.append(r)
    return out


def train_energy_available(profile) -> bool:
    return bool(profile.train) and bool((profile.power or {}).get("train"))

