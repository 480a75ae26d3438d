"""AlphaProfiler: record every Conv2d/Linear call of a forward pass, and every other op, and cost them.

    with AlphaProfiler(model, profile="h100-fp32") as p:
        model(x)
    text = p.table()

Hooks only record shapes (frozen :class:`LayerRecord`); with ``scope="model"``
(the default) a dispatch mode (capture.OpCapture), active only inside the
``with`` block, records every other operation as an :class:`OpRecord`. Hooks
and the mode are removed on exit, also when the forward raises, and nothing
is stored on the model.
"""
from __future__ import annotations

import itertools
from dataclasses import replace
import threading
import weakref
from collections import Counter, OrderedDict
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import nn

from . import registry
from .ops import OpRecord
from .records import LayerRecord, NotCosted

SCOPES = ("auto", "model", "layers")
_NHWC = torch.channels_last

_ACTIVE = weakref.WeakSet()  # modules inside an active profiler
_ACTIVE_LOCK = threading.Lock()


class AlphaProfiler:
    """Context manager that records and costs the calls of ``model``'s forward pass.

    ``profile`` is a built-in profile name, a JSON path, a DeviceProfile or
    "auto" (the built-in profile of the current GPU and of the dtype of the
    first recorded call, resolved when costs are first read). ``scope`` is
    "model" (Conv2d/Linear layers and every other operation), "layers"
    (Conv2d/Linear only: the fastest pass) or "auto" (the default): "model"
    when the profile can cost other operations (it has op classes, as the
    calibrated GPU profiles do; or it is "auto"), else "layers". Results are read after (or during)
    the ``with`` block: ``records`` (layers), ``ops`` (other operations),
    ``total_flops``, ``total_alpha_flops``, ``layers_ms``, ``ops_ms``,
    ``predicted_ms`` (their sum: GPU time, as in a CUDA graph), ``eager_ms``,
    ``by_module()``, ``by_kind()``, ``not_costed()``, ``table()``, ``to_json()``,
    ``to_csv()``, ``to_dataframe()``.
    """

    def __init__(self, model: nn.Module, profile="t2000-paper", scope: str = "auto"):
        if not isinstance(model, nn.Module):
            raise TypeError(f"AlphaProfiler needs a torch.nn.Module, got {type(model).__name__}")
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
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
        if scope == "auto":
            scope = "model" if self._profile is None or self._profile.ops is not None else "layers"
        self.scope = scope
        self._composites: List[str] = []  # modules costed as one operation (nn.MultiheadAttention)
        self._seq = itertools.count()  # call order shared by layer hooks and op capture
        self._layer_order: List[tuple] = []  # (call order, module calls so far) of each layer record
        self._stack = None
        self._capture = None
        self._op_calls: list = []  # raw calls from OpCapture
        self._uncosted_ops: Counter = Counter()  # (module, module type, operator) -> calls
        self._ops: Optional[List[OpRecord]] = None
        self._ops_costed: Optional[List[OpRecord]] = None
        self._grad_sums: list = []  # gradient additions of the backward (traincost.gradient_sums)
        self._trained = False  # the forward ran with autograd on (a training step's forward)
        # training-step costs, computed once per number of records: (records seen, costed copies)
        self._train_costed: Optional[tuple] = None
        self._train_ops_costed: Optional[tuple] = None

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
            if self.scope == "model":
                from .capture import ModuleStack, OpCapture

                self._stack = ModuleStack()
            for name, module in modules:
                entry = registry.resolve(type(module))
                composite = self._stack is not None and isinstance(module, registry.COSTED_AS_OPS)
                uncosted = entry is None and registry.is_uncosted_compute(module, self.scope)
                if composite:
                    self._composites.append(name)
                if self._stack is not None:
                    # inside a costed layer, a composite module or a layer listed as not costed,
                    # single ops are not recorded (the layer is costed, or listed, whole)
                    self._handles.append(module.register_forward_pre_hook(
                        self._stack.pre_hook(name, entry is not None or composite or uncosted)))
                if composite:
                    self._handles.append(module.register_forward_hook(self._composite_hook(name), with_kwargs=True))
                if entry is not None:
                    self._hooked.append((name, type(module).__name__))
                    self._handles.append(module.register_forward_hook(
                        self._record_hook(name, *entry), with_kwargs=True))
                elif registry.is_uncosted_compute(module, self.scope):
                    self._handles.append(module.register_forward_hook(self._uncosted_hook(name)))
                if self._stack is not None:
                    self._handles.append(module.register_forward_hook(self._stack.post_hook(), always_call=True))
            # the root's output: where a training step's backward starts (gradient additions)
            self._handles.append(self.model.register_forward_hook(self._output_hook))
            if self._stack is not None:
                self._capture = OpCapture(self._stack, self._seq)
                self._capture.calls, self._capture.uncosted = self._op_calls, self._uncosted_ops
                self._capture.__enter__()
        except BaseException:
            self._remove_hooks()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        try:
            if self._capture is not None:
                capture, self._capture = self._capture, None
                capture.__exit__(None, None, None)
            for handle in self._handles:
                handle.remove()
        finally:
            self._handles = []
            with _ACTIVE_LOCK:
                for m in self._modules:
                    _ACTIVE.discard(m)
            self._modules = []

    def _record_hook(self, name: str, kind: str, extract):
        calls, order, seq, stack = self._calls, self._layer_order, self._seq, self._stack

        def hook(module, inputs, kwargs, output):
            # the layer's input is its first positional argument, or its only keyword one
            x = inputs[0] if inputs else next(iter(kwargs.values()))
            # keep only immutable facts (torch.Size, dtype, device) and the module; the
            # frozen LayerRecord is built when results are first read (_recorded): a hook
            # call costs 2 us instead of 8 us, 1-2% of a meta forward pass
            # the output's dtype is what the layer computed in (autocast changes it)
            # a 4-D input in channels-last (NHWC) memory format runs other kernels
            nhwc = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=_NHWC)
            grad = x.requires_grad if torch.is_grad_enabled() else None
            calls.append((extract, name, module, x.shape, output.shape, output.dtype, x.device, nhwc, grad))
            order.append((next(seq), stack.module_calls, stack.view_calls) if stack is not None
                         else (next(seq), 0, 0))
            self._costed = None
            if nhwc and output.dim() == 4 and not output.is_contiguous(memory_format=_NHWC):
                # a GPU or CPU convolution keeps a channels-last input's layout; the meta kernel (the
                # shape-only passes) does not, and later layers' layouts, hence costs, follow it
                return output.contiguous(memory_format=_NHWC)
            return None

        return hook

    def _recorded(self) -> List[LayerRecord]:
        """The recorded calls as uncosted LayerRecords, in call order."""
        if self._calls:
            calls, self._calls[:] = list(self._calls), []  # also drops the module references
            for extract, name, module, in_shape, out_shape, dtype, device, nhwc, grad in calls:
                record = extract(name, module, tuple(in_shape), tuple(out_shape), str(dtype)[6:],
                                 device.type, len(self._raw))
                if nhwc or grad is not None:
                    record = replace(record, channels_last=nhwc, input_grad=grad)
                self._raw.append(record)
        return self._raw

    def _composite_hook(self, name: str):
        """Record an nn.MultiheadAttention call as one operation of known parts (ops.mha_pieces),
        so that its cost does not depend on which path (fused or not) the device takes."""
        calls, seq, stack = self._op_calls, self._seq, self._stack

        def hook(module, args, kwargs, output):
            from .capture import tensor_meta
            from .ops import mha_pieces, piece_macs

            names = ("query", "key", "value")
            q, k, v = [args[i] if len(args) > i else kwargs[n] for i, n in enumerate(names)]
            out = output[0] if isinstance(output, (tuple, list)) else output
            metas = [tensor_meta(t) for t in (q, k, v)]
            pieces = mha_pieces(metas[0].shape, metas[1].shape, module.embed_dim, module.num_heads,
                                module.batch_first, module.kdim, module.vdim, q is k and k is v,
                                metas[0].itemsize)
            flops = sum(2 * piece_macs(p) for p in pieces)
            calls.append((name, type(module).__name__, "multi_head_attention", "attention", metas,
                          [tensor_meta(out)], pieces, flops, next(seq), stack.module_calls, stack.view_calls))

        return hook

    def _output_hook(self, module, inputs, output):
        if torch.is_grad_enabled():
            from .traincost import gradient_sums

            self._trained = True
            self._grad_sums += gradient_sums(output)

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
            ops = self._recorded_ops()
            dtype = recorded[0].dtype if recorded else (ops[0].dtype if ops else "float32")
            self._profile = auto_profile(dtype)
        return self._profile

    @property
    def records(self) -> List[LayerRecord]:
        """Every recorded Conv2d/Linear call, in call order, with MACs, FLOPs, alpha, alpha-FLOPs and ms."""
        if self._costed is None:
            from .cost import attach_costs

            self._costed = attach_costs(self._recorded(), self.profile)
        return list(self._costed)

    def _recorded_ops(self) -> List[OpRecord]:
        if self._ops is None or len(self._ops) != len(self._op_calls):
            from .capture import to_records

            self._ops = to_records(self._op_calls)
            self._ops_costed = None
        return self._ops

    @property
    def ops(self) -> List[OpRecord]:
        """Every other recorded operation (scope "model"), in call order, with predicted ms
        (None where the profile has no class for it: see not_costed())."""
        raw = self._recorded_ops()
        if self._ops_costed is None:
            from .opcost import attach_op_costs

            self._ops_costed = attach_op_costs(raw, self.profile)
        return list(self._ops_costed)

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.records)

    @property
    def total_flops(self) -> int:
        """FLOPs (2 x MACs) of the Conv2d/Linear layers and of the other matrix products
        (bmm, F.linear, attention), counted as FlopCounterMode counts them."""
        return sum(r.flops for r in self.records) + sum(o.flops for o in self.ops)

    @property
    def total_alpha_flops(self) -> float:
        """alpha-FLOPs of the Conv2d/Linear layers (the paper's measure)."""
        return float(sum(r.alpha_flops for r in self.records))

    @property
    def layers_ms(self) -> float:
        """Predicted time of the Conv2d/Linear layers on the profile's device, in ms."""
        return float(sum(r.predicted_ms for r in self.records))

    @property
    def ops_ms(self) -> float:
        """Predicted time of the other operations the profile can cost, in ms."""
        return float(sum(o.predicted_ms for o in self.ops if o.predicted_ms is not None))

    @property
    def predicted_ms(self) -> float:
        """Predicted GPU time of everything costed (layers + other operations), in ms: the
        forward's time when its kernels run back to back, as in a CUDA graph."""
        return self.layers_ms + self.ops_ms

    @property
    def energy_j(self) -> Optional[float]:
        """Predicted GPU energy of one forward (layers + costed ops), in joules; None when the
        profile has no power data (profiles made without an energy counter)."""
        if not self.profile.power:
            return None
        return float(sum(r.energy_j or 0.0 for r in self.records) + sum(o.energy_j or 0.0 for o in self.ops))

    def co2e_g(self, grid_g_per_kwh: Optional[float] = None) -> Optional[float]:
        """Grams of CO2e of one forward at ``grid_g_per_kwh`` (default: energy.DEFAULT_GRID_G_PER_KWH)."""
        from .energy import DEFAULT_GRID_G_PER_KWH, co2e_g

        joules = self.energy_j
        return None if joules is None else co2e_g(joules, DEFAULT_GRID_G_PER_KWH if grid_g_per_kwh is None else grid_g_per_kwh)

    def train_records(self) -> List[LayerRecord]:
        """The Conv2d/Linear calls costed as training steps (forward + backward: predicted_ms,
        energy_j); the profile must have training classes ('train')."""
        from .traincost import attach_train_costs

        raw = self._recorded()
        if self._train_costed is None or self._train_costed[0] != len(raw):
            self._train_costed = (len(raw), attach_train_costs(raw, self.profile))
        return list(self._train_costed[1])

    def train_ops(self) -> List[OpRecord]:
        """The other operations costed as training steps (forward + backward)."""
        from .opcost import attach_op_costs
        from .traincost import training_view

        raw = self._recorded_ops()
        if self._train_ops_costed is None or self._train_ops_costed[0] != len(raw):
            view = training_view(self.profile)
            if view is None:
                raise ValueError(f"profile {self.profile.name!r} has no training-step classes ('train')")
            self._train_ops_costed = (len(raw), attach_op_costs(raw, view))
        return list(self._train_ops_costed[1])

    @property
    def train_step_ms(self) -> Optional[float]:
        """Predicted GPU time of one training step (the recorded forward and its backward; no
        optimizer, no data loading), in ms; None without training classes in the profile.
        Record the forward as it runs in training (``model.train()``, autograd on)."""
        if not self.profile.train:
            return None
        return float(sum(r.predicted_ms for r in self.train_records())
                     + sum(o.predicted_ms for o in self.train_ops() if o.predicted_ms is not None)
                     + float(np.nansum(self._gradient_sums_ms()[0])))

    def _gradient_sums_ms(self):
        """Predicted ms and joules of the backward's gradient additions (traincost.gradient_sums),
        each a forward elementwise add."""
        from .opcost import pieces_energy_j, pieces_ms
        from .traincost import gradient_sum_pieces

        pieces = gradient_sum_pieces(self._grad_sums)
        if not pieces:
            return np.zeros(0), np.zeros(0)
        ms = pieces_ms(pieces, self.profile)
        return ms, pieces_energy_j(pieces, ms, self.profile)

    @property
    def train_energy_j(self) -> Optional[float]:
        """Predicted GPU energy of one training step, in joules; None without training classes
        or training power coefficients in the profile."""
        from .traincost import train_energy_available

        if not train_energy_available(self.profile):
            return None
        return float(sum(r.energy_j or 0.0 for r in self.train_records())
                     + sum(o.energy_j or 0.0 for o in self.train_ops())
                     + float(np.nansum(self._gradient_sums_ms()[1])))

    @property
    def eager_ms(self) -> Optional[float]:
        """Predicted wall time of one eager forward (CPU launching kernels, the GPU running
        them), in ms; None when the profile has no host costs, or with scope "layers" (the
        launches of the other operations were not recorded)."""
        from .eager import eager_ms, timeline

        host = self.profile.host
        if host is None or self.scope != "model":
            return None
        stack = self._stack
        totals = (stack.module_calls, stack.view_calls) if stack is not None else (0, 0)
        return eager_ms(timeline(self.records, self._layer_order, self.ops, self._op_calls, host),
                        host, *totals)

    def not_costed(self) -> List[NotCosted]:
        """What the prediction leaves out, never counted as 0: calls with no cost formula
        (Conv1d, Conv3d, ConvTranspose2d, ...), costed layers that were never called, and
        (scope "model") operators with no cost class or none in the profile, by name and count."""
        called = {r.name for r in self._recorded()}
        inside = tuple(c + "." for c in self._composites)  # their projections are costed with them
        uncalled = [NotCosted(name, kind, (), "never called in the profiled forward: unused, or "
                              "its weights were used functionally (e.g. F.linear, costed as an op)")
                    for name, kind in self._hooked
                    if name not in called and not (inside and name.startswith(inside))]
        by_op: Counter = Counter()
        for (_, _, op), n in self._uncosted_ops.items():
            by_op[op] += n
        ops = [NotCosted(op, "operator", (), f"{n} call(s); no cost class for this operator", n)
               for op, n in sorted(by_op.items())]
        missing: Counter = Counter()
        for o in self.ops:
            if o.predicted_ms is None:
                missing[(o.op_class, o.op.split(".")[0])] += 1
        ops += [NotCosted(op, "operator", (), f"{n} call(s); profile {self.profile.name!r} has no "
                          f"'{cls}' class", n) for (cls, op), n in sorted(missing.items())]
        if self._trained and self.profile.train:
            # a training step's forward: operations whose training class the profile lacks
            untrained: Counter = Counter()
            for o, t in zip(self.ops, self.train_ops()):
                if o.predicted_ms is not None and t.predicted_ms is None:
                    untrained[(o.op_class, o.op.split(".")[0])] += 1
            ops += [NotCosted(op, "operator", (), f"{n} call(s); profile {self.profile.name!r} has no "
                              f"training '{cls}' class", n) for (cls, op), n in sorted(untrained.items())]
        return list(self._not_costed) + uncalled + ops

    def by_module(self) -> Dict[str, Dict[str, float]]:
        """Totals per module and each of its parents ('' is the whole model)."""
        def keys(r):
            parts = r.name.split(".") if r.name else []
            return [".".join(parts[:depth]) for depth in range(len(parts) + 1)]

        return _totals(self.records, self.ops, keys)

    def by_kind(self) -> Dict[str, Dict[str, float]]:
        """Totals per layer kind ('Conv2d', 'Linear') and op class ('elementwise', 'norm', ...)."""
        return _totals(self.records, self.ops, lambda r: [getattr(r, "op_class", None) or r.kind])

    def table(self, depth: Optional[int] = None, top_k: Optional[int] = None) -> str:
        """Per-call table (see report.layer_table): one unit per column."""
        from .report import layer_table

        return layer_table(self.records, depth=depth, top_k=top_k, not_costed=self.not_costed(),
                           ops=self.ops, layer_order=[order[0] for order in self._layer_order])

    def summary(self, grid_g_per_kwh: Optional[float] = None) -> Dict[str, object]:
        from .report import summary

        return summary(self.records, self.profile, self.not_costed(), ops=self.ops, eager_ms=self.eager_ms,
                       energy_j=self.energy_j, grid_g_per_kwh=grid_g_per_kwh)

    def to_json(self, grid_g_per_kwh: Optional[float] = None) -> str:
        from .report import to_json

        return to_json(self.records, self.profile, self.not_costed(), ops=self.ops, eager_ms=self.eager_ms,
                       energy_j=self.energy_j, grid_g_per_kwh=grid_g_per_kwh)

    def to_csv(self) -> str:
        """The Conv2d/Linear layers as a layer-table CSV (``alpha-profiler predict`` reads it)."""
        from .report import to_csv

        return to_csv(self.records)

    def ops_csv(self) -> str:
        """The other operations as CSV: module, operator, class, shapes, bytes, FLOPs, ms."""
        from .report import ops_to_csv

        return ops_to_csv(self.ops)

    def to_dataframe(self):
        """The per-call records (layers, then ops) as a pandas DataFrame (needs pandas)."""
        from .report import to_dataframe

        return to_dataframe(self.records, ops=self.ops)


def _totals(records, ops, keys_of) -> Dict[str, Dict[str, float]]:
    """Calls, FLOPs, alpha-FLOPs and ms summed under every key ``keys_of(record)`` lists
    (ops the profile cannot cost add their call and FLOPs, not time)."""
    out: Dict[str, Dict[str, float]] = OrderedDict()
    for r in list(records) + list(ops):
        for key in keys_of(r):
            acc = out.setdefault(key, {"calls": 0, "flops": 0, "alpha_flops": 0.0, "predicted_ms": 0.0})
            acc["calls"] += 1
            acc["flops"] += r.flops
            acc["alpha_flops"] += getattr(r, "alpha_flops", 0.0) or 0.0
            acc["predicted_ms"] += r.predicted_ms or 0.0
    return out
