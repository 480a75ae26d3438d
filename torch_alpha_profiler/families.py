"""Model families: pure formulas from layer geometry and parameters to time.

A family names its layer classes, the parameters each class carries and the
global parameters, and predicts per-layer ``alpha`` and milliseconds with
numpy over all layers at once. The paper and FLOPs families predict

    predicted_ms = overhead_ms + time_scale_ms_per_mmac * alpha * MACs / 1e6

and the axes family adds its per-class floor instead of one overhead
(ms = t0_c + time_scale * alpha * MACs / 1e6); in all, alpha-FLOPs = alpha x
FLOPs are "FLOPs at the time scale's rate".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from .correction import DEFAULT as CORRECTION
from .layers import LayerArrays

Params = Mapping[str, object]  # {"time_scale_ms_per_mmac": .., "overhead_ms": .., "classes": {..}}


@dataclass(frozen=True)
class Bound:
    """Initial value and box of one fitted parameter (``log``: fitted as its logarithm)."""

    init: float
    lo: float
    hi: float
    log: bool = False


class Family:
    """Base class; subclasses are stateless and registered in FAMILIES."""

    name: str = ""
    classes: Tuple[str, ...] = ()
    class_params: Tuple[str, ...] = ()
    global_params: Tuple[str, ...] = ("time_scale_ms_per_mmac", "overhead_ms")
    description: str = ""
    # "relative": residual = predicted / measured - 1; "log": ln(predicted / measured)
    residual: str = "relative"
    # scipy least_squares loss and its scale: "linear" is plain least squares
    loss: str = "linear"
    loss_scale: float = 1.0
    # class parameters a profile may leave out (written before they existed), with the value
    # that switches them off
    optional_params: Dict[str, float] = {}
    # class parameters that act only on kernels of more than one tap (K1 x K2 > 1)
    kernel_params: Tuple[str, ...] = ()
    # the neighbour correction's settings a fit gives its profile by default (correction.py)
    correction: Optional[Dict[str, object]] = None

    def finalize(self, params: Dict[str, object], arrays: LayerArrays) -> Dict[str, object]:
        """Derived parameters computed after a fit on ``arrays`` (default: none)."""
        return params

    def classify(self, arrays: LayerArrays) -> np.ndarray:
        raise NotImplementedError

    def alpha(self, arrays: LayerArrays, params: Params) -> np.ndarray:
        raise NotImplementedError

    def predict_ms(self, arrays: LayerArrays, params: Params) -> np.ndarray:
        alpha = self.alpha(arrays, params)
        return (float(params["overhead_ms"])
                + float(params["time_scale_ms_per_mmac"]) * alpha * arrays.macs / 1e6)

    def alpha_and_ms(self, arrays: LayerArrays, params: Params):
        """(alpha, predicted ms) of every layer; families override it to share work."""
        return self.alpha(arrays, params), self.predict_ms(arrays, params)

    def bounds(self) -> Dict[str, Bound]:
        """Fit boxes, keyed 'global_name' or 'class.param'."""
        raise NotImplementedError

    def parameter(self, params: Params, key: str) -> float:
        """The value of parameter ``key`` ('class.name' or a global name) in ``params``; an
        optional class parameter that ``params`` lacks (a profile written before it existed) has
        its switched-off value."""
        cls, _, name = key.rpartition(".")
        if not cls:
            return params[key]
        if name in self.optional_params:
            return params["classes"][cls].get(name, self.optional_params[name])
        return params["classes"][cls][name]

    def class_values(self, arrays: LayerArrays, params: Params, name: str,
                     classes: Optional[np.ndarray] = None) -> np.ndarray:
        """Per-layer value of class parameter ``name`` (gathered by class; ``classes``: the
        layers' class indices, when the caller has them already)."""
        default = self.optional_params.get(name)
        table = np.array([float(params["classes"][c][name] if default is None
                                else params["classes"][c].get(name, default)) for c in self.classes])
        return table[self.classify(arrays) if classes is None else classes]


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


class FlopsFamily(Family):
    """Plain FLOPs (alpha = 1) with one time scale and a per-call overhead: the baseline."""

    name = "flops"
    classes = ("all",)
    class_params = ()
    description = "FLOPs times a constant, plus a per-call overhead (no correction)"

    def classify(self, arrays):
        return np.zeros(len(arrays), dtype=np.int64)

    def alpha(self, arrays, params):
        return np.ones(len(arrays))

    def bounds(self):
        return {"time_scale_ms_per_mmac": Bound(1e-4, 1e-12, 1e3, log=True),
                "overhead_ms": Bound(1e-3, 1e-6, 10.0, log=True)}


# axes of the per-axis correction, as (parameter suffix, description)
AXES = (("S", "output positions N x H_out x W_out (rows for Linear)"),
        ("cin", "input channels per group (in-features for Linear)"),
        ("cout", "output channels per group (out-features for Linear)"))


def kernel_log_factor(K, log_k5, log_k7) -> np.ndarray:
    """ln of the kernel-size factor of kernels of K = K1 x K2 taps: 0 up to a side (sqrt K) of 3,
    ``log_k5`` at 5 and ``log_k7`` from 7 on, linear in the side in between."""
    side = np.sqrt(np.asarray(K, dtype=np.float64))
    return np.where(side <= 3, 0.0,
                    np.where(side <= 5, log_k5 * (side - 3) / 2,
                             np.where(side <= 7, log_k5 + (log_k7 - log_k5) * (side - 5) / 2, log_k7)))


# the axes family's layer classes: they run different kernels (AxesFamily)
LAYER_CLASSES = ("linear", "conv1x1", "convkxk", "grouped", "depthwise")


class AxesFamily(Family):
    """Per-axis corrections of FLOPs with a wave and a memory bound (calibrated family).

    For a layer of class c (linear, conv1x1, convkxk, grouped, depthwise):

        compute = tau_c x MMACs x prod_a (1 + h_a / x_a) ** g_a x K ** k_exp x mis / U ** wave_exp
        memory  = bytes / bw
        taps    = tap_c x (K - 1)
        ms      = t0_c + image x stride x kernel x (compute ** p + memory ** p + taps ** p) ** (1 / p) + gather
        image   = (1 + h_hw / (H_out x W_out)) ** g_hw
        stride  = stride_f if the layer's stride is above 1, else 1
        kernel  = 1 for a kernel side of 3 or less, k5_f at 5, k7_f at 7 and beyond
                  (log-linear in between; side = sqrt(K1 x K2))
        gather  = gather_c x (t0_c + bytes of the input read and of the strided copy written / bw)
                  for a layer of stride above 1

    Each axis a in (S, Cin/groups, Cout/groups) has a half-saturation size h_a
    and an exponent g_a: the paper's alpha_K(S) is this factor on the S axis
    alone (h_S = S_K (1 - beta) / beta, g_S = gamma). U = tiles / (waves x SMs)
    is the occupancy of the last wave of 128 x 128 output tiles over the
    multiprocessors (wave quantization); bytes = input + output + weights; mis is
    mis_cin and/or mis_cout when a channel row is not a multiple of 16 bytes.
    Depthwise layers (one channel a group) have their channel factors pinned to 1. The factor on
    H_out x W_out, the output positions of one image, is a saturation of the per-image work: in
    NCHW memory each image is a problem of its own (a 1x1 convolution is a GEMM per image), so a
    batch of small images runs slower than one image of as many positions (pinned to 1 for
    Linear, which has no image). The kernel-size factors say how much slower or faster cuDNN's
    5x5 and 7x7 kernels run than its 3x3 ones at the same geometry (the kernel families differ
    by filter size); like the paper's per-kernel-size beta_K, gamma_K, they are per class and
    per kernel size. A strided 1x1 convolution is costed as two kernels (``gather`` = 1 for that
    class, 0 for the others): a strided copy of its input, one more per-call floor and one pass
    over the input at the class's bandwidth, then a stride-1 1x1 convolution over the smaller
    image. The stride factor (how much slower a strided kernel runs) is pinned to 1 in the NCHW
    fit, where it did not lower the cross-validated error besides the gather pass, and refitted
    for channels-last inputs (docs/forms.md, docs/forms-ops.md). ``taps``
    is the latency of a kernel's serial loop over its taps beyond the first, whatever the
    layer's size: pinned to 0 in the NCHW fit (it did not lower the cross-validated error there),
    refitted for channels-last inputs, whose depthwise kernels at batch 1 take about 0.18 us
    (bf16) a tap (docs/forms-ops.md).
    """

    name = "axes"
    classes = LAYER_CLASSES
    class_params = ("tau_ms_per_mmac", "t0_ms", "h_S", "g_S", "h_cin", "g_cin", "h_cout", "g_cout",
                    "k_exp", "wave_exp", "bw_gb_per_s", "tap_ms", "h_hw", "g_hw", "stride_f", "k5_f",
                    "k7_f", "gather")
    global_params = ("time_scale_ms_per_mmac", "overhead_ms", "sm_count", "tile", "smooth_p",
                     "mis_cin", "mis_cout")
    description = "per-axis saturation of S, Cin/g, Cout/g; K power; wave quantization; memory bound"
    residual = "log"
    # robust fit: log ratios beyond 0.3 (about 35% off; kernel-selection outliers) count linearly
    loss = "huber"
    loss_scale = 0.3
    # depthwise layers have one channel per group: their channel axes and alignment are constant
    FIXED = {"overhead_ms": 0.0, "sm_count": 132.0, "tile": 128.0, "smooth_p": 4.0,
             "time_scale_ms_per_mmac": 1.0, "depthwise.h_cin": 1.0, "depthwise.g_cin": 0.0,
             "depthwise.h_cout": 1.0, "depthwise.g_cout": 0.0,
             # a free kernel power and a per-tap latency did not lower the cross-validated error
             # (docs/forms.md); both are refitted for channels-last inputs (fit.CHANNELS_LAST_FREE)
             **{f"{c}.{p}": 0.0 for c in LAYER_CLASSES for p in ("k_exp", "tap_ms")},
             # a Linear layer has no image (H_out = W_out = 1): its per-image factor is a constant
             "linear.h_hw": 1.0, "linear.g_hw": 0.0,
             # a stride factor did not lower it once strided 1x1 convolutions had their gather
             # pass (docs/forms.md): refitted for channels-last inputs only
             **{f"{c}.stride_f": 1.0 for c in LAYER_CLASSES},
             # a Linear layer has no kernel, and a 1x1 convolution's kernel is one tap
             **{f"{c}.{p}": 1.0 for c in ("linear", "conv1x1") for p in ("k5_f", "k7_f")},
             **{f"{c}.gather": float(c == "conv1x1") for c in LAYER_CLASSES}}
    # absent from profiles written before they existed: no per-tap latency, no per-image factor,
    # no stride or kernel-size factor, no gather pass
    optional_params = {"tap_ms": 0.0, "h_hw": 1.0, "g_hw": 0.0, "stride_f": 1.0, "k5_f": 1.0, "k7_f": 1.0,
                       "gather": 0.0}
    kernel_params = ("k_exp", "tap_ms", "k5_f", "k7_f")
    correction = CORRECTION

    def classify(self, arrays):
        kxk = np.where(arrays.K > 1, 2, 1)
        grouped = np.where(arrays.Cin == arrays.groups, 4, 3)  # one input channel per group: depthwise
        return np.where(arrays.is_linear, 0, np.where(arrays.groups > 1, grouped, kxk)).astype(np.int64)

    def _parts(self, arrays, params):
        classes = self.classify(arrays)
        v = {name: self.class_values(arrays, params, name, classes) for name in self.class_params}
        x = {"S": arrays.S.astype(np.float64),
             "cin": (arrays.Cin // arrays.groups).astype(np.float64),
             "cout": (arrays.Cout // arrays.groups).astype(np.float64)}
        compute = v["tau_ms_per_mmac"] * arrays.macs / 1e6
        for axis, _ in AXES:
            compute = compute * (1.0 + v["h_" + axis] / x[axis]) ** v["g_" + axis]
        compute = compute * arrays.K.astype(np.float64) ** v["k_exp"]
        # rows of channels that are not a multiple of 16 bytes cannot use the vectorized,
        # tensor-core paths: one global penalty for each misaligned channel axis
        for axis in ("cin", "cout"):
            misaligned = ((x[axis] * arrays.itemsize) % 16 != 0) & (arrays.Cin != arrays.groups)
            compute = compute * np.where(misaligned, float(params["mis_" + axis]), 1.0)
        sms, tile = float(params["sm_count"]), float(params["tile"])
        tiles = np.ceil(x["S"] / tile) * np.ceil(x["cout"] / tile) * arrays.groups
        occupancy = tiles / (np.ceil(tiles / sms) * sms)
        compute = compute / occupancy ** v["wave_exp"]
        memory = arrays.nbytes / (v["bw_gb_per_s"] * 1e6)  # GB/s -> bytes per ms
        taps = v["tap_ms"] * (arrays.K - 1).astype(np.float64)
        p = float(params["smooth_p"])
        image = (1.0 + v["h_hw"] / (arrays.Hout * arrays.Wout).astype(np.float64)) ** v["g_hw"]
        stride = np.where(arrays.stride > 1, v["stride_f"], 1.0)
        kernel = np.exp(kernel_log_factor(arrays.K, np.log(v["k5_f"]), np.log(v["k7_f"])))
        copied = arrays.itemsize * arrays.N * arrays.Cin * (arrays.Hin * arrays.Win + arrays.Hout * arrays.Wout)
        gather = np.where(arrays.stride > 1, v["gather"] * (v["t0_ms"] + copied / (v["bw_gb_per_s"] * 1e6)), 0.0)
        return v["t0_ms"], image * stride * kernel * (compute ** p + memory ** p + taps ** p) ** (1.0 / p) + gather

    def predict_ms(self, arrays, params):
        t0, body = self._parts(arrays, params)
        return t0 + body

    def alpha(self, arrays, params):
        return self.alpha_and_ms(arrays, params)[0]

    def alpha_and_ms(self, arrays, params):
        t0, body = self._parts(arrays, params)
        mmacs = np.maximum(arrays.macs, 1) / 1e6
        return body / (float(params["time_scale_ms_per_mmac"]) * mmacs), t0 + body

    def bounds(self):
        b = {}
        b["mis_cin"] = Bound(1.0, 0.2, 10.0, log=True)
        b["mis_cout"] = Bound(1.0, 0.2, 10.0, log=True)
        for c in self.classes:
            b[f"{c}.tau_ms_per_mmac"] = Bound(1e-5, 1e-9, 1.0, log=True)
            b[f"{c}.t0_ms"] = Bound(3e-3, 1e-5, 1.0, log=True)
            for axis, _ in AXES:
                b[f"{c}.h_{axis}"] = Bound(8.0, 1e-3, 1e6, log=True)
                b[f"{c}.g_{axis}"] = Bound(0.5, 0.0, 2.0)
            b[f"{c}.k_exp"] = Bound(0.0, -1.0, 1.0)
            b[f"{c}.wave_exp"] = Bound(0.5, 0.0, 2.0)
            b[f"{c}.bw_gb_per_s"] = Bound(2000.0, 10.0, 1e5, log=True)
            b[f"{c}.tap_ms"] = Bound(1e-4, 0.0, 0.1)
            b[f"{c}.h_hw"] = Bound(8.0, 1e-3, 1e6, log=True)
            b[f"{c}.g_hw"] = Bound(0.1, 0.0, 2.0)
            for name in ("stride_f", "k5_f", "k7_f"):
                b[f"{c}.{name}"] = Bound(1.0, 0.1, 10.0, log=True)
            b[f"{c}.gather"] = Bound(0.0, 0.0, 1.0)
        return b

    REFERENCE = (1, 4096, 4096)  # rows, in, out of the dense layer that defines alpha = 1

    def finalize(self, params, arrays):
        # time scale: the predicted ms per MMAC of a batch-1 4096 x 4096 Linear layer
        # (fitted dtype), so that, as in the paper, alpha = 1 for a dense layer at batch 1
        from .layers import make_arrays

        one = np.ones(1, dtype=np.int64)
        rows, fin, fout = self.REFERENCE
        ref = make_arrays(is_linear=[True], N=rows * one, Cin=fin * one, Cout=fout * one, Hin=one, Win=one,
                          Hout=one, Wout=one, K1=one, K2=one, stride=one, groups=one,
                          itemsize=one * int(np.median(arrays.itemsize)))
        _, body = self._parts(ref, params)
        params["time_scale_ms_per_mmac"] = float(body[0]) / (rows * fin * fout / 1e6)
        return params


FAMILIES: Dict[str, Family] = {}


def register_family(family: Family) -> Family:
    if family.name in FAMILIES:
        raise RuntimeError(f"model family {family.name!r} already registered")
    FAMILIES[family.name] = family
    return family


register_family(PaperFamily())
register_family(AxesFamily())
register_family(FlopsFamily())


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}") from None
