"""AlphaProfiler: record every Conv2d/Linear call of a forward pass and cost it.

    with AlphaProfiler(model, profile="t2000-paper") as p:
        model(x)
    text = p.table()

Hooks only record shapes (frozen :class:`LayerRecord`); they are removed on
exit, also when the forward raises, and nothing is stored on the model.
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Dict, List, Optional

from torch import nn

from . import registry
from .records import LayerRecord, NotCosted

_ACTIVE = weakref.WeakSet()  # modules inside an active profiler
_ACTIVE_LOCK = threading.Lock()


class AlphaProfiler:
    """Context manager that records and costs Conv2d/Linear calls of ``model``.

    ``profile`` is a built-in profile name, a JSON path, a DeviceProfile or
    "auto" (the built-in profile of the current GPU and of the dtype of the
    first recorded call, resolved when costs are first read). Results are read after
    (or during) the ``with`` block: ``records``, ``total_flops``,
    ``total_alpha_flops``, ``predicted_ms``, ``by_module()``, ``by_kind()``,
    ``not_costed()``, ``table()``, ``to_json()``, ``to_csv()``, ``to_dataframe()``.
    """

    def __init__(self, model: nn.Module, profile="t2000-paper"):
        if not isinstance(model, nn.Module):
            raise TypeError(f"AlphaProfiler needs a torch.nn.Module, got {type(model).__name__}")
        from .profile import load_profile

        self.model = model
        # "auto" waits for the first record, whose dtype picks the profile
        self._profile = None if profile == "auto" else load_profile(profile)
        self._raw: List[LayerRecord] = []
        self._calls: list = []  # what the record hooks saw, turned into _raw when first read
        self._not_costed: List[NotCosted] = []
        self._handles: list = []
        self._costed: Optional[List[LayerRecord]] = None
        self._modules: List[nn.Module] = []
        self._hooked: List[tuple] = []  # (name, module type) of every costed layer hooked

    # ------------------------------------------------------------------ hooks
    def __enter__(self) -> "AlphaProfiler":
        modules = list(self.model.named_modules())
        with _ACTIVE_LOCK:
            busy = [name or "<root>" for name, m in modules if m in _ACTIVE]
            if busy:
                raise RuntimeError(
                    f"another AlphaProfiler is already active on this model (module {busy[0]!r}); "
                    "exit it before entering a new one")
            for _, m in modules:
                _ACTIVE.add(m)
            self._modules = [m for _, m in modules]
        try:
            for name, module in modules:
                entry = registry.resolve(type(module))
                if entry is not None:
                    self._hooked.append((name, type(module).__name__))
                    self._handles.append(module.register_forward_hook(
                        self._record_hook(name, *entry), with_kwargs=True))
                elif registry.is_uncosted_compute(module):
                    self._handles.append(module.register_forward_hook(self._uncosted_hook(name)))
        except BaseException:
            self._remove_hooks()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        try:
            for handle in self._handles:
                handle.remove()
        finally:
            self._handles = []
            with _ACTIVE_LOCK:
                for m in self._modules:
                    _ACTIVE.discard(m)
            self._modules = []

    def _record_hook(self, name: str, kind: str, extract):
        calls = self._calls

        def hook(module, inputs, kwargs, output):
            # the layer's input is its first positional argument, or its only keyword one
            x = inputs[0] if inputs else next(iter(kwargs.values()))
            # keep only immutable facts (torch.Size, dtype, device) and the module; the
            # frozen LayerRecord is built when results are first read (_recorded): a hook
            # call costs 2 us instead of 8 us, 1-2% of a meta forward pass
            # the output's dtype is what the layer computed in (autocast changes it)
            calls.append((extract, name, module, x.shape, output.shape, output.dtype, x.device))
            self._costed = None

        return hook

    def _recorded(self) -> List[LayerRecord]:
        """The recorded calls as uncosted LayerRecords, in call order."""
        if self._calls:
            calls, self._calls[:] = list(self._calls), []  # also drops the module references
            for extract, name, module, in_shape, out_shape, dtype, device in calls:
                self._raw.append(extract(name, module, tuple(in_shape), tuple(out_shape),
                                         str(dtype)[6:], device.type, len(self._raw)))
        return self._raw

    def _uncosted_hook(self, name: str):
        def hook(module, inputs, output):
            shape = tuple(inputs[0].shape) if inputs and hasattr(inputs[0], "shape") else ()
            self._not_costed.append(NotCosted(name, type(module).__name__, shape,
                                              "no cost formula for this layer kind"))

        return hook

    # ---------------------------------------------------------------- results
    @property
    def profile(self):
        """The DeviceProfile that costs the records."""
        if self._profile is None:
            from .profile import auto_profile

            recorded = self._recorded()
            dtype = recorded[0].dtype if recorded else "float32"
            self._profile = auto_profile(dtype)
        return self._profile

    @property
    def records(self) -> List[LayerRecord]:
        """Every recorded call, in call order, with MACs, FLOPs, alpha, alpha-FLOPs and ms."""
        if self._costed is None:
            from .cost import attach_costs

            self._costed = attach_costs(self._recorded(), self.profile)
        return list(self._costed)

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.records)

    @property
    def total_flops(self) -> int:
        """Sum of FLOPs (2 x MACs) over costed calls."""
        return sum(r.flops for r in self.records)

    @property
    def total_alpha_flops(self) -> float:
        return float(sum(r.alpha_flops for r in self.records))

    @property
    def predicted_ms(self) -> float:
        """Predicted time of all costed calls on the profile's device, in ms."""
        return float(sum(r.predicted_ms for r in self.records))

    def not_costed(self) -> List[NotCosted]:
        """Calls with no cost formula (Conv1d, Conv3d, ConvTranspose2d, ...), then costed
        layers that were never called: unused, or their weights were used functionally
        (torchvision's Swin attention calls F.linear on its qkv weights)."""
        called = {r.name for r in self._recorded()}
        uncalled = [NotCosted(name, kind, (), "never called in the profiled forward: unused, or "
                              "its weights were used functionally (e.g. F.linear)")
                    for name, kind in self._hooked if name not in called]
        return list(self._not_costed) + uncalled

    def by_module(self) -> Dict[str, Dict[str, float]]:
        """Totals per module and each of its parents ('' is the whole model)."""
        def keys(r):
            parts = r.name.split(".") if r.name else []
            return [".".join(parts[:depth]) for depth in range(len(parts) + 1)]

        return _totals(self.records, keys)

    def by_kind(self) -> Dict[str, Dict[str, float]]:
        """Totals per layer kind ('Conv2d', 'Linear')."""
        return _totals(self.records, lambda r: [r.kind])

    def table(self, depth: Optional[int] = None, top_k: Optional[int] = None) -> str:
        """Per-layer table (see report.layer_table): one unit per column."""
        from .report import layer_table

        return layer_table(self.records, depth=depth, top_k=top_k, not_costed=self.not_costed())

    def summary(self) -> Dict[str, object]:
        from .report import summary

        return summary(self.records, self.profile, self.not_costed())

    def to_json(self) -> str:
        from .report import to_json

        return to_json(self.records, self.profile, self.not_costed())

    def to_csv(self) -> str:
        from .report import to_csv

        return to_csv(self.records)

    def to_dataframe(self):
        """The per-layer records as a pandas DataFrame (needs pandas)."""
        from .report import to_dataframe

        return to_dataframe(self.records)


def _totals(records, keys_of) -> Dict[str, Dict[str, float]]:
    """Calls, FLOPs, alpha-FLOPs and ms summed under every key ``keys_of(record)`` lists."""
    out: Dict[str, Dict[str, float]] = OrderedDict()
    for r in records:
        for key in keys_of(r):
            acc = out.setdefault(key, {"calls": 0, "flops": 0, "alpha_flops": 0.0, "predicted_ms": 0.0})
            acc["calls"] += 1
            acc["flops"] += r.flops
            acc["alpha_flops"] += r.alpha_flops
            acc["predicted_ms"] += r.predicted_ms
    return out
