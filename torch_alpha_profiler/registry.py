"""Registry of costed layer kinds, resolved through the module's MRO.

Each entry turns one forward call of a module (its hyper-parameters and the
shapes of its input and output) into a :class:`LayerRecord`. It never keeps a
tensor. Subclasses (``NonDynamicallyQuantizableLinear``, ``LazyLinear``, user
subclasses of ``nn.Conv2d``) resolve to their base entry.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

from torch import nn

from .records import LayerRecord

# (name, module, input shape, output shape, dtype, device, call index) -> record
Extractor = Callable[[str, nn.Module, Tuple[int, ...], Tuple[int, ...], str, str, int], LayerRecord]

_REGISTRY: Dict[type, Tuple[str, Extractor]] = {}

# Layers that do matrix-product-like work which the cost model does not cover:
# they are hooked only to be reported as "not costed".
UNCOSTED_TYPES: Tuple[type, ...] = (
    nn.modules.conv._ConvNd,
    nn.Bilinear,
    nn.MultiheadAttention,
    nn.RNNBase,
)


def register_layer(module_type: type, kind: str) -> Callable[[Extractor], Extractor]:
    """Register ``fn`` as the record extractor for ``module_type`` (and its subclasses)."""

    def decorator(fn: Extractor) -> Extractor:
        if module_type in _REGISTRY:
            raise RuntimeError(f"layer kind already registered for {module_type.__name__}")
        _REGISTRY[module_type] = (kind, fn)
        return fn

    return decorator


def resolve(module_type: type) -> Optional[Tuple[str, Extractor]]:
    """The registry entry for ``module_type``, walking its MRO; None if not costed."""
    for klass in module_type.__mro__:
        entry = _REGISTRY.get(klass)
        if entry is not None:
            return entry
    return None


# costed through their operations when the profiler captures them (scope "model")
COSTED_AS_OPS: Tuple[type, ...] = (nn.MultiheadAttention,)


def is_uncosted_compute(module: nn.Module, scope: str = "layers") -> bool:
    """True for layers that compute but have no cost formula (reported, never zero)."""
    if scope == "model" and isinstance(module, COSTED_AS_OPS):
        return False
    return isinstance(module, UNCOSTED_TYPES) and resolve(type(module)) is None


def _pair(value) -> Tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))


@register_layer(nn.Conv2d, "Conv2d")
def _conv2d_record(name, module, in_shape, out_shape, dtype, device, call_index):
    batched = len(in_shape) == 4
    padding = module.padding
    same = padding == "same"
    if isinstance(padding, str):
        # 'valid' is zero padding; 'same' keeps the spatial size at stride 1:
        # store the padding that reproduces the recorded output size
        padding = (0, 0) if padding == "valid" else tuple(
            (d * (k - 1)) // 2 for d, k in zip(_pair(module.dilation), _pair(module.kernel_size))
        )
    return LayerRecord(
        name=name,
        kind="Conv2d",
        module_type=type(module).__name__,
        input_shape=in_shape,
        output_shape=out_shape,
        batch=in_shape[0] if batched else 1,
        in_channels=module.in_channels,
        out_channels=module.out_channels,
        in_hw=(in_shape[-2], in_shape[-1]),
        out_hw=(out_shape[-2], out_shape[-1]),
        kernel=_pair(module.kernel_size),
        stride=_pair(module.stride),
        padding=_pair(padding),
        dilation=_pair(module.dilation),
        groups=module.groups,
        padding_same=same,
        bias=module.bias is not None,
        dtype=dtype,
        device=device,
        call_index=call_index,
    )


@register_layer(nn.Linear, "Linear")
def _linear_record(name, module, in_shape, out_shape, dtype, device, call_index):
    rows = 1
    for d in in_shape[:-1]:
        rows *= d
    return LayerRecord(
        name=name,
        kind="Linear",
        module_type=type(module).__name__,
        input_shape=in_shape,
        output_shape=out_shape,
        batch=rows,
        in_channels=module.in_features,
        out_channels=module.out_features,
        bias=module.bias is not None,
        dtype=dtype,
        device=device,
        call_index=call_index,
    )
