"""Costs of many layers at once: MACs, FLOPs, alpha, alpha-FLOPs, predicted ms.

FLOPs = 2 x multiply-accumulates (MACs), counting only the products of
eq. (4); bias additions and activations are left out, as in the paper.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import List, Sequence

import numpy as np

from .families import get_family
from .layers import LayerArrays, from_records
from .profile import DeviceProfile
from .records import LayerRecord


@dataclass(frozen=True)
class CostArrays:
    """Per-layer costs, one float64 array each (MACs and FLOPs are exact int64)."""

    macs: np.ndarray
    flops: np.ndarray
    alpha: np.ndarray
    alpha_flops: np.ndarray
    predicted_ms: np.ndarray
    cost_class: np.ndarray  # class index into the family's classes


def evaluate(arrays: LayerArrays, profile: DeviceProfile) -> CostArrays:
    """Vectorized cost of every layer in ``arrays`` under ``profile``."""
    family = get_family(profile.family)
    macs = arrays.macs
    alpha = family.alpha(arrays, profile.parameters)
    ms = family.predict_ms(arrays, profile.parameters)
    return CostArrays(
        macs=macs,
        flops=2 * macs,
        alpha=alpha,
        alpha_flops=alpha * (2 * macs),
        predicted_ms=ms,
        cost_class=family.classify(arrays),
    )


def attach_costs(records: Sequence[LayerRecord], profile: DeviceProfile) -> List[LayerRecord]:
    """Copies of ``records`` with their cost fields filled in."""
    if not records:
        return []
    costs = evaluate(from_records(records), profile)
    classes = get_family(profile.family).classes
    return [
        replace(r, macs=int(costs.macs[i]), flops=int(costs.flops[i]), alpha=float(costs.alpha[i]),
                alpha_flops=float(costs.alpha_flops[i]), predicted_ms=float(costs.predicted_ms[i]),
                cost_class=classes[costs.cost_class[i]])
        for i, r in enumerate(records)
    ]
