"""Model families: pure formulas from layer geometry and parameters to time.

A family names its layer classes, the parameters each class carries and the
global parameters, and predicts per-layer ``alpha`` and milliseconds with
numpy over all layers at once. Every family shares one convention:

    predicted_ms = overhead_ms + time_scale_ms_per_mmac * alpha * MACs / 1e6

so alpha-FLOPs = alpha x FLOPs are "FLOPs at the time scale's rate".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Tuple

import numpy as np

from .layers import LayerArrays

Params = Mapping[str, object]  # {"time_scale_ms_per_mmac": .., "overhead_ms": .., "classes": {..}}


@dataclass(frozen=True)
class Bound:
    """Initial value and box of one fitted parameter."""

    init: float
    lo: float
    hi: float


class Family:
    """Base class; subclasses are stateless and registered in FAMILIES."""

    name: str = ""
    classes: Tuple[str, ...] = ()
    class_params: Tuple[str, ...] = ()
    global_params: Tuple[str, ...] = ("time_scale_ms_per_mmac", "overhead_ms")
    description: str = ""

    def classify(self, arrays: LayerArrays) -> np.ndarray:
        raise NotImplementedError

    def alpha(self, arrays: LayerArrays, params: Params) -> np.ndarray:
        raise NotImplementedError

    def predict_ms(self, arrays: LayerArrays, params: Params) -> np.ndarray:
        alpha = self.alpha(arrays, params)
        return (float(params["overhead_ms"])
                + float(params["time_scale_ms_per_mmac"]) * alpha * arrays.macs / 1e6)

    def bounds(self) -> Dict[str, Bound]:
        """Fit boxes, keyed 'global_name' or 'class.param'."""
        raise NotImplementedError

    def class_values(self, arrays: LayerArrays, params: Params, name: str) -> np.ndarray:
        """Per-layer value of class parameter ``name`` (gathered by class)."""
        table = np.array([float(params["classes"][c][name]) for c in self.classes])
        return table[self.classify(arrays)]


class PaperFamily(Family):
    """Eq. (5)/(6): alpha_K(S) = ((1 - beta_K) S_K / S + beta_K) ** gamma_K.

    S = N x H_out x W_out (batch acts as a spatial axis, Sec. 6.1), K = K1 x K2,
    S_K = 1 + ln K as in the authors' released code; two classes, K = 1 and
    K > 1. A Linear layer is the K = 1, S = N case, so alpha = 1 at batch 1.
    """

    name = "paper"
    classes = ("k1", "kgt1")
    class_params = ("beta", "gamma")
    description = "the paper's alpha_K(S) with two classes, K = 1 and K > 1"

    def classify(self, arrays):
        return (arrays.K > 1).astype(np.int64)

    def alpha(self, arrays, params):
        beta = self.class_values(arrays, params, "beta")
        gamma = self.class_values(arrays, params, "gamma")
        S = arrays.S.astype(np.float64)
        s_k = 1.0 + np.log(arrays.K.astype(np.float64))
        # the authors' arithmetic: x = (S_K + beta (S - S_K)) / S; alpha = exp(gamma ln x)
        x = (s_k + beta * (S - s_k)) / S
        return np.exp(gamma * np.log(x))

    def bounds(self):
        b = {
            "time_scale_ms_per_mmac": Bound(0.01, 1e-9, 1e3),
            "overhead_ms": Bound(0.0, 0.0, 10.0),
        }
        for c in self.classes:
            b[f"{c}.beta"] = Bound(0.01, 1e-6, 1.0)
            b[f"{c}.gamma"] = Bound(0.7, 0.05, 1.5)
        return b


FAMILIES: Dict[str, Family] = {}


def register_family(family: Family) -> Family:
    if family.name in FAMILIES:
        raise RuntimeError(f"model family {family.name!r} already registered")
    FAMILIES[family.name] = family
    return family


register_family(PaperFamily())


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}") from None
