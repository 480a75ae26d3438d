"""Building models by name: torchvision classification models or ``module:callable``."""
from __future__ import annotations

import importlib
from typing import List, Tuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

# input side length each torchvision classification model expects
_INPUT_SIZE = {"inception_v3": 299}


class _EmptyOnMeta(TorchFunctionMode):
    """``torch.empty`` without a device allocates on meta; other factories stay on the CPU.

    nn layers allocate their weights with ``torch.empty`` and then initialize
    them (free on meta), while a builder's own arithmetic (RegNet's
    ``torch.arange(...)...tolist()``) keeps real values.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.empty and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


class ModelError(ValueError):
    """A model name that cannot be resolved or built."""


def classification_models() -> List[str]:
    """Names of torchvision's classification models."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def default_input_size(name: str) -> Tuple[int, int]:
    side = _INPUT_SIZE.get(name, 224)
    return (side, side)


def build_model(name: str, device: str = "meta") -> nn.Module:
    """A torchvision model (random weights, never downloaded) or ``pkg.module:callable``.

    On the meta device no memory is allocated and no weights are initialized.
    """
    if ":" in name:
        mod_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise ModelError(f"cannot load model {name!r}: {e}") from None
        try:
            with torch.device(device):
                model = factory()
        except Exception as e:  # the user's factory: report it in one line
            raise ModelError(f"cannot build model {name!r}: {type(e).__name__}: {e}") from None
        if not isinstance(model, nn.Module):
            raise ModelError(f"{name!r} returned {type(model).__name__}, not a torch.nn.Module")
        return model.eval()
    import torchvision

    known = torchvision.models.list_models()
    if name not in known:
        import difflib

        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelError(f"unknown model {name!r}: not a torchvision model name nor module:callable{hint}")
    kwargs = {"init_weights": False} if name in ("inception_v3", "googlenet") else {}
    try:
        with torch.device(device):
            model = torchvision.models.get_model(name, weights=None, **kwargs)
    except NotImplementedError:
        # a few builders compute with tensors in __init__ (RegNet's widths), which
        # meta tensors cannot do: put only the weights on meta (regnet_y_128gf:
        # 0.06 s instead of 11 s of random init), else build on the CPU; then move
        model = None
        if torch.device(device).type == "meta":
            try:
                with _EmptyOnMeta():
                    model = torchvision.models.get_model(name, weights=None, **kwargs)
            except NotImplementedError:
                model = None
        if model is None:
            model = torchvision.models.get_model(name, weights=None, **kwargs)
        model = model.to(device)
    return model.eval()
