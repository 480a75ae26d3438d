"""Frozen records of what a profiled forward pass called, and their costs.

A forward hook turns each Conv2d/Linear call into a :class:`LayerRecord`
(shapes and hyper-parameters only, never tensors). Costs are attached later,
all records at once, by :mod:`torch_alpha_profiler.cost`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

Pair = Tuple[int, int]


@dataclass(frozen=True)
class LayerRecord:
    """One call of a costed layer, as seen by a forward hook.

    ``batch`` is the number of independent rows the layer processes: the
    first input dimension for Conv2d (1 for an unbatched input), the product
    of all leading dimensions for Linear. Spatial sizes are in elements;
    ``kernel``, ``stride`` and ``dilation`` are (height, width) pairs.
    Cost fields are ``None`` until the record has been costed.
    """

    name: str
    kind: str  # cost kind from the registry: "Conv2d" or "Linear"
    module_type: str  # the module's own class name, e.g. NonDynamicallyQuantizableLinear
    input_shape: Tuple[int, ...]
    output_shape: Tuple[int, ...]
    batch: int
    in_channels: int
    out_channels: int
    in_hw: Pair = (1, 1)
    out_hw: Pair = (1, 1)
    kernel: Pair = (1, 1)
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1
    padding_same: bool = False  # padding='same': output size = input size (padding may be uneven)
    bias: bool = False
    dtype: str = "float32"
    device: str = "cpu"
    call_index: int = 0
    channels_last: bool = False  # Conv2d input in channels-last (NHWC) memory format
    # whether the input required grad (a training step computes its grad-input); None when
    # recorded with autograd off
    input_grad: Optional[bool] = None
    # costs, filled in by cost.attach_costs()
    macs: Optional[int] = None
    flops: Optional[int] = None
    alpha: Optional[float] = None
    alpha_flops: Optional[float] = None
    predicted_ms: Optional[float] = None
    cost_class: Optional[str] = field(default=None)
    energy_j: Optional[float] = None  # with a profile that has power data (energy.py)


@dataclass(frozen=True)
class NotCosted:
    """A call of a layer that the cost model does not cover (never counted as 0)."""

    name: str
    module_type: str
    input_shape: Tuple[int, ...]
    reason: str
    calls: int = 1  # calls this entry stands for (operators are listed once per name)
