"""Costs of many layers at once: MACs, FLOPs, alpha, alpha-FLOPs, predicted ms.

FLOPs = 2 x multiply-accumulates (MACs), counting only the products of
eq. (4); bias additions and activations are left out, as in the paper.

Time is another matter: PyTorch runs a Conv2d's bias as a separate kernel after
cuDNN's convolution (an elementwise add over the output; Linear layers fuse it
into the matrix product). So a recorded Conv2d with a bias costs, on top of its
layer-family time, the profile's ``add`` operator over its output (where the
profile has op classes; the calibration's convolutions have no bias). In a
training step the bias's gradient is one more kernel, a sum of the output's
gradient over N x H x W (traincost.py costs both as single forward kernels).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import List, Optional, Sequence

import numpy as np

from .families import get_family
from .layers import LayerArrays, from_records, take
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
    alpha, ms = family.alpha_and_ms(arrays, profile.parameters)
    ms = ms * correction_factor(arrays, profile)  # residual trees and neighbour correction
    nhwc = profile.channels_last
    if nhwc is not None and arrays.channels_last.any():
        # channels-last inputs: the same family, with the parameters fitted on NHWC layers
        sel = np.flatnonzero(arrays.channels_last)
        alpha[sel], ms[sel] = family.alpha_and_ms(take(arrays, sel), nhwc["parameters"])
    return CostArrays(
        macs=macs,
        flops=2 * macs,
        alpha=alpha,
        alpha_flops=alpha * (2 * macs),
        predicted_ms=ms,
        cost_class=family.classify(arrays),
    )


def correction_factor(arrays: LayerArrays, profile: DeviceProfile) -> np.ndarray:
    """The residual trees' factor (trees.py) times the neighbour correction (correction.py) of
    each layer's predicted time: 1 where the profile has neither, and for channels-last inputs
    costed by the profile's channels-last parameters (both are fitted on NCHW layers and their
    residuals under the NCHW parameters)."""
    from .correction import from_profile
    from .trees import of_profile

    correction, trees = from_profile(profile), of_profile(profile)
    factor = np.ones(len(arrays))
    if correction is None and trees is None:
        return factor
    # only the rows the NCHW parameters cost: weighing the others' shapes would be thrown away
    use, rows = slice(None), arrays
    if profile.channels_last is not None:
        use = np.flatnonzero(~arrays.channels_last)
        rows = take(arrays, use)
    log = np.zeros(len(rows))
    if trees is not None:
        log += trees.log_factor(rows)
    if correction is not None:
        log += correction.log_factor(rows, get_family(profile.family).classify(rows))
    factor[use] = np.exp(log)
    return factor


# The operator whose calibrated parameters cost a Conv2d's bias addition. PyTorch adds the bias
# after the convolution as an in-place add of a (1, C, 1, 1) tensor: a binary kernel with a
# channel-broadcast operand, which cannot take the vectorized path of two same-shape tensors. The
# op calibration times that kernel in its ``mul_bcast`` rows ((N, C, H, W) x (N, C, 1, 1), fitted
# as ``mul``), which the profiles predict 1.2-1.7 (fp32) and 1.5-3.1 (bf16) times slower per byte
# than their same-shape ``add`` over a bias addition's sizes. Until session 8 the bias was costed
# as ``add``: SqueezeNet's biased layers at batch 32, timed with their biases, then took 1.5 (fp32)
# and 1.6 (bf16) times their prediction in sum (benchmarks/bias_operator_check.py).
BIAS_OPERATOR = "mul"


def bias_add_piece(batch: int, out_channels: int, out_hw, itemsize: int, backward: bool = False):
    """The bias kernels of one biased Conv2d call: an elementwise addition reading and writing the
    output and reading the bias, costed as the calibration's channel-broadcast kernel
    (``BIAS_OPERATOR``), and with ``backward`` the bias gradient, a ``sum`` of the output's
    gradient to one value a channel."""
    from .ops import Piece

    elements = batch * out_channels * out_hw[0] * out_hw[1]
    pieces = [Piece("elementwise", nbytes=itemsize * (2 * elements + out_channels), itemsize=itemsize,
                    op=BIAS_OPERATOR)]
    if backward:
        pieces.append(Piece("reduce", nbytes=itemsize * (elements + out_channels), itemsize=itemsize, op="sum"))
    return pieces


def bias_pieces(records: Sequence[LayerRecord], backward: bool = False):
    """(index, Piece) of the bias kernels (bias_add_piece) of each biased Conv2d of ``records``."""
    from .layers import itemsize_of

    return [(i, piece) for i, r in enumerate(records) if r.kind == "Conv2d" and r.bias
            for piece in bias_add_piece(r.batch, r.out_channels, r.out_hw, itemsize_of(r.dtype), backward)]


def _bias_costs(records: Sequence[LayerRecord], profile: DeviceProfile, backward: bool = False):
    """Per-record ms and joules of the bias kernels (0 where none, or where the profile has no
    op classes to cost them)."""
    ms, joules = np.zeros(len(records)), np.zeros(len(records))
    found = bias_pieces(records, backward)
    if found and profile.ops:
        from .opcost import pieces_energy_j, pieces_ms

        index = [i for i, _ in found]
        pieces = [p for _, p in found]
        piece_ms = pieces_ms(pieces, profile)
        piece_j = pieces_energy_j(pieces, piece_ms, profile)
        np.add.at(ms, index, np.nan_to_num(piece_ms))
        np.add.at(joules, index, np.nan_to_num(piece_j))
    return ms, joules


def attach_costs(records: Sequence[LayerRecord], profile: DeviceProfile, bias_profile: Optional[DeviceProfile] = None,
                 bias_backward: bool = False) -> List[LayerRecord]:
    """Copies of ``records`` with their cost fields filled in (a biased Conv2d's time and energy
    include its bias kernels, see the module docstring, costed under ``bias_profile``, by default
    ``profile``; with ``bias_backward``, the bias gradient's too)."""
    if not records:
        return []
    arrays = from_records(records)
    costs = evaluate(arrays, profile)
    bias_ms, bias_j = _bias_costs(records, bias_profile or profile, bias_backward)
    ms = costs.predicted_ms + bias_ms
    classes = get_family(profile.family).classes
    coeffs = (profile.power or {}).get("forward")
    energy = [None] * len(records)
    if coeffs:
        from .energy import energy_j

        energy = (energy_j(coeffs, [classes[c] for c in costs.cost_class], costs.predicted_ms, costs.flops,
                           arrays.nbytes) + bias_j).tolist()
    # tolist() once per column: indexing numpy arrays element by element is 10x slower
    columns = zip(records, costs.macs.tolist(), costs.flops.tolist(), costs.alpha.tolist(),
                  costs.alpha_flops.tolist(), ms.tolist(), costs.cost_class.tolist(), energy)
    return [
        _with_costs(r, {"macs": macs, "flops": flops, "alpha": alpha, "alpha_flops": alpha_flops,
                        "predicted_ms": ms, "cost_class": classes[cls], "energy_j": joules})
        for r, macs, flops, alpha, alpha_flops, ms, cls, joules in columns
    ]


def _with_costs(record: LayerRecord, costs: dict) -> LayerRecord:
    """``dataclasses.replace(record, **costs)`` without re-running the frozen __init__.

    replace() sets all 26 fields through object.__setattr__ again; copying the
    instance dict makes the same record 6x faster (resnet50: 0.2 ms a profile).
    """
    if not hasattr(record, "__dict__"):  # a slotted record: no dict to copy
        return replace(record, **costs)
    new = object.__new__(type(record))
    new.__dict__.update(record.__dict__)
    new.__dict__.update(costs)
    return new
