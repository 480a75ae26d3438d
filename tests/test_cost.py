"""cost: vectorized costs, attach_costs, and the built-in t2000-paper profile vs the authors' code."""
import csv
import math

import numpy as np
import pytest

from torch_alpha_profiler.cost import attach_costs, evaluate
from torch_alpha_profiler.layers import make_arrays
from torch_alpha_profiler.profile import load_profile
from torch_alpha_profiler.records import LayerRecord
from torch_alpha_profiler.tables import read_layer_table


@pytest.fixture(scope="module")
def t2000():
    return load_profile("t2000-paper", warn_device=False)


def test_evaluate_by_hand(t2000):
    # row 0: Linear, batch 1, 4096 -> 1000; row 1: 3x3 conv N=2, 16 -> 32, out 5x5
    a = make_arrays(is_linear=[True, False], N=[1, 2], Cin=[4096, 16], Cout=[1000, 32], Hin=[1, 5],
                    Win=[1, 5], Hout=[1, 5], Wout=[1, 5], K1=[1, 3], K2=[1, 3], stride=[1, 1], groups=[1, 1])
    c = evaluate(a, t2000)
    # MACs: 4096 * 1000 = 4096000 ; 50 * 32 * 16 * 9 = 230400
    assert c.macs.tolist() == [4096000, 230400]
    assert c.flops.tolist() == [8192000, 460800]  # FLOPs = 2 x MACs
    # alpha: 1 for a dense layer at batch 1; 0.216164375084 (see test_families)
    np.testing.assert_allclose(c.alpha, [1.0, 0.216164375084], rtol=1e-10)
    np.testing.assert_allclose(c.alpha_flops, [8192000.0, 460800 * 0.216164375084], rtol=1e-10)
    # ms: 0.0375 * 4.096 = 0.1536 ; 0.0375 * 0.216164375084 * 0.2304 = 0.00186766020073
    np.testing.assert_allclose(c.predicted_ms, [0.1536, 0.00186766020073], rtol=1e-10)
    assert c.cost_class.tolist() == [0, 1]


def test_grouped_conv_counts_channels_per_group(t2000):
    # depthwise 3x3, 32 channels, out 7x7, N 1: MACs = 49 * 32 * (32 / 32) * 9 = 14112
    a = make_arrays(is_linear=[False], N=[1], Cin=[32], Cout=[32], Hin=[7], Win=[7], Hout=[7], Wout=[7],
                    K1=[3], K2=[3], stride=[1], groups=[32])
    assert evaluate(a, t2000).flops.tolist() == [28224]


def test_attach_costs_fills_every_cost_field(t2000):
    r = LayerRecord(name="fc", kind="Linear", module_type="Linear", input_shape=(1, 4096),
                    output_shape=(1, 1000), batch=1, in_channels=4096, out_channels=1000)
    conv = LayerRecord(name="conv", kind="Conv2d", module_type="Conv2d", input_shape=(2, 16, 5, 5),
                       output_shape=(2, 32, 5, 5), batch=2, in_channels=16, out_channels=32, in_hw=(5, 5),
                       out_hw=(5, 5), kernel=(3, 3), padding=(1, 1))
    out = attach_costs([r, conv], t2000)
    assert [o.name for o in out] == ["fc", "conv"]
    assert (out[0].macs, out[0].flops, out[0].alpha, out[0].cost_class) == (4096000, 8192000, 1.0, "k1")
    assert out[0].predicted_ms == pytest.approx(0.1536, rel=1e-12)
    assert out[1].cost_class == "kgt1" and out[1].alpha == pytest.approx(0.216164375084, rel=1e-10)
    assert type(out[1].macs) is int and type(out[1].alpha) is float
    assert r.macs is None  # the input records are left as they were
    assert attach_costs([], t2000) == []


def _authors_ms(H, W, Cin, Cout, K1, K2):
    """The authors' released arithmetic (make_plots.py), written out independently."""
    S, K = H * W, K1 * K2
    beta, gamma = (0.02, 0.99) if K == 1 else (0.001, 0.56)
    S_K = math.log(K) + 1
    alpha = math.exp(gamma * math.log((S_K + beta * (S - S_K)) / S))
    return 0.0375 * alpha * Cin * Cout * K * S / 1e6


def test_t2000_paper_reproduces_authors_arithmetic(t2000, paper_csv):
    with open(paper_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    expected = np.array([_authors_ms(*(int(r[k]) for k in ("H", "W", "Cin", "Cout", "K1", "K2")))
                         for r in rows])
    costs = evaluate(read_layer_table(paper_csv).arrays, t2000)
    assert len(rows) == len(costs.predicted_ms) == 540
    np.testing.assert_allclose(costs.predicted_ms, expected, rtol=1e-12)


def test_t2000_paper_mape_on_the_papers_measurements(t2000, paper_csv):
    table = read_layer_table(paper_csv)
    pred = evaluate(table.arrays, t2000).predicted_ms
    mape = float(np.mean(np.abs(pred - table.time_ms) / table.time_ms) * 100)
    assert round(mape, 1) == 15.1


def test_a_biased_conv_costs_its_bias_addition_where_the_profile_has_op_classes():
    import torch
    from torch import nn

    from torch_alpha_profiler import AlphaProfiler
    from torch_alpha_profiler.cost import BIAS_OPERATOR
    from torch_alpha_profiler.opcost import pieces_ms
    from torch_alpha_profiler.ops import Piece

    def conv_ms(bias, profile):
        model = nn.Conv2d(16, 32, 3, padding=1, bias=bias)
        with AlphaProfiler(model, profile=profile, scope="layers") as p, torch.no_grad():
            model(torch.randn(8, 16, 28, 28))
        (r,) = p.records
        return r.predicted_ms, r.flops

    h100 = load_profile("h100-fp32")
    (with_bias, flops), (without, flops0) = conv_ms(True, h100), conv_ms(False, h100)
    # the bias addition is costed as the calibration's channel-broadcast kernel (BIAS_OPERATOR), which
    # is slower per byte than an addition of two same-shape tensors
    nbytes = 4 * (2 * 8 * 32 * 28 * 28 + 32)
    add = pieces_ms([Piece("elementwise", nbytes=nbytes, itemsize=4, op=BIAS_OPERATOR)], h100)[0]
    same_shape = pieces_ms([Piece("elementwise", nbytes=nbytes, itemsize=4, op="add")], h100)[0]
    assert with_bias == pytest.approx(without + add, rel=1e-12) and add > same_shape > 0
    assert flops == flops0  # FLOPs leave the bias out, as in the paper
    paper = load_profile("t2000-paper")  # no op classes: the bias is not costed
    assert conv_ms(True, paper)[0] == pytest.approx(conv_ms(False, paper)[0], rel=1e-12)
