"""families: the paper's alpha_K(S) (eq. 5/6) and its properties of Sec. 5.1."""
import math

import numpy as np
import pytest

from torch_alpha_profiler import families
from torch_alpha_profiler.families import PaperFamily, get_family
from torch_alpha_profiler.layers import make_arrays

from helpers import T2000

FAM = PaperFamily()


def params(k1=(0.02, 0.99), kgt1=(0.001, 0.56), scale=0.0375, overhead=0.0):
    return {"time_scale_ms_per_mmac": scale, "overhead_ms": overhead,
            "classes": {"k1": {"beta": k1[0], "gamma": k1[1]}, "kgt1": {"beta": kgt1[0], "gamma": kgt1[1]}}}


def conv(S, K1=1, K2=1, Cin=1, Cout=1, linear=False):
    """One layer per entry of S (as N with a 1x1 output), so S is exactly the given value."""
    S = np.atleast_1d(S)
    n = len(S)
    full = lambda v: np.broadcast_to(np.atleast_1d(v), (n,))  # noqa: E731
    return make_arrays(is_linear=full(linear), N=S, Cin=full(Cin), Cout=full(Cout), Hin=full(1), Win=full(1),
                       Hout=full(1), Wout=full(1), K1=full(K1), K2=full(K2), stride=full(1), groups=full(1))


S_GRID = np.array([12, 50, 100, 1000, 10 ** 5, 10 ** 7])
K_SIDES = [(1, 1), (3, 3), (5, 5), (7, 7), (1, 7), (11, 11)]


def test_registered_under_its_name():
    assert get_family("paper") is families.FAMILIES["paper"]
    assert FAM.classes == ("k1", "kgt1") and FAM.class_params == ("beta", "gamma")


def test_unknown_family_names_the_known_ones():
    with pytest.raises(KeyError, match="unknown model family 'nope'; known: .*paper"):
        get_family("nope")


def test_duplicate_family_registration_raises():
    with pytest.raises(RuntimeError, match="already registered"):
        families.register_family(PaperFamily())


def test_classify_k1_vs_kgt1():
    a = make_arrays(is_linear=[True, False, False, False], N=[4, 1, 1, 1], Cin=[1] * 4, Cout=[1] * 4,
                    Hin=[1] * 4, Win=[1] * 4, Hout=[1] * 4, Wout=[1] * 4, K1=[1, 1, 3, 1],
                    K2=[1, 1, 3, 2], stride=[1] * 4, groups=[1] * 4)
    assert FAM.classify(a).tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("k", K_SIDES)
def test_property1_alpha_below_one_when_S_exceeds_S_K(k):
    K = k[0] * k[1]
    S = S_GRID[S_GRID > 1 + math.log(K)]
    for beta, gamma in ((0.02, 0.99), (0.001, 0.56), (0.3, 0.2), (0.9, 1.0)):
        alpha = FAM.alpha(conv(S, *k), params((beta, gamma), (beta, gamma)))
        assert np.all(alpha < 1.0) and np.all(alpha > 0.0)
        assert np.all(np.diff(alpha) < 0)  # and decreases as S grows


@pytest.mark.parametrize("gamma", [0.1, 0.56, 0.99, 1.3])
@pytest.mark.parametrize("k", K_SIDES)
def test_property2_beta_one_recovers_flops(k, gamma):
    alpha = FAM.alpha(conv(S_GRID, *k), params((1.0, gamma), (1.0, gamma)))
    np.testing.assert_allclose(alpha, 1.0, rtol=1e-12)


@pytest.mark.parametrize("beta, gamma", [(1e-6, 0.05), (0.02, 0.99), (0.5, 1.5), (1.0, 0.3)])
def test_property3_alpha_1_of_1_is_one(beta, gamma):
    # S_1 = 1 + ln 1 = 1 = S: x = (1 + beta * 0) / 1 = 1, whatever beta and gamma
    alpha = FAM.alpha(conv([1], 1, 1), params((beta, gamma), (0.5, 0.5)))
    assert alpha.tolist() == [1.0]


@pytest.mark.parametrize("k", K_SIDES)
def test_property4_gamma_one_is_the_plain_formula(k):
    beta = 0.01
    K = k[0] * k[1]
    s_k = 1 + math.log(K)
    alpha = FAM.alpha(conv(S_GRID, *k), params((beta, 1.0), (beta, 1.0)))
    # eq. (6) with gamma = 1: (1 - beta) * S_K / S + beta
    expected = [(1 - beta) * s_k / S + beta for S in S_GRID]
    np.testing.assert_allclose(alpha, expected, rtol=1e-12)
    # and a gamma < 1 raises alpha (mitigates underestimation at large S)
    alpha_056 = FAM.alpha(conv(S_GRID, *k), params((beta, 0.56), (beta, 0.56)))
    assert np.all(alpha_056 > alpha)


def test_property5_S_K_grows_slowly_with_K():
    # beta -> 0, gamma = 1 gives alpha = S_K / S, so S = 1 exposes S_K itself
    p = params((1e-300, 1.0), (1e-300, 1.0))
    ks = [(1, 1), (3, 3), (5, 5), (7, 7), (11, 11), (31, 31)]
    s_k = np.array([FAM.alpha(conv([1], *k), p)[0] for k in ks])
    # S_K = 1 + ln K: 1 + ln 1 = 1, 1 + ln 9 = 3.1972245773, 1 + ln 25 = 4.2188758249,
    # 1 + ln 49 = 4.8918202981, 1 + ln 121 = 5.7957905456, 1 + ln 961 = 7.8679744090
    np.testing.assert_allclose(s_k, [1.0, 3.1972245773, 4.2188758249, 4.8918202981, 5.7957905456,
                                     7.8679744090], rtol=1e-9)
    assert np.all(np.diff(s_k) > 0)
    assert s_k[-1] < 961 / 100  # far below K itself: S_K = K is not what the paper uses


def test_linear_at_batch_one_has_alpha_one():
    a = conv([1], linear=True, Cin=4096, Cout=1000)
    assert FAM.alpha(a, T2000).tolist() == [1.0]
    # and its time is the plain FLOPs rate: 0.0375 ms/MMAC * 4096 * 1000 / 1e6 = 0.1536 ms
    assert FAM.predict_ms(a, T2000)[0] == pytest.approx(0.1536, rel=1e-12)


def test_hand_computed_alpha_of_one_conv():
    # 3x3 conv, N = 2, output 5x5: S = 2 * 5 * 5 = 50, K = 9, S_K = 1 + ln 9 = 3.19722457734
    a = make_arrays(is_linear=[False], N=[2], Cin=[16], Cout=[32], Hin=[5], Win=[5], Hout=[5], Wout=[5],
                    K1=[3], K2=[3], stride=[1], groups=[1])
    # x = (3.19722457734 + 0.001 * (50 - 3.19722457734)) / 50 = 3.24402735276 / 50 = 0.0648805470552
    # alpha = exp(0.56 * ln 0.0648805470552) = exp(0.56 * -2.73520743741) = exp(-1.53171616495) = 0.216164375084
    alpha = FAM.alpha(a, T2000)[0]
    assert alpha == pytest.approx(0.216164375084, rel=1e-10)
    # MACs = 50 * 32 * 16 * 9 = 230400; ms = 0.0375 * 0.216164375084 * 230400 / 1e6 = 0.00186766020073
    assert FAM.predict_ms(a, T2000)[0] == pytest.approx(0.00186766020073, rel=1e-10)


def test_linear_rows_are_spatial():
    # Linear with N = 4 rows: S = 4, K = 1 (k1 class):
    # x = (1 + 0.02 * (4 - 1)) / 4 = 0.265 ; alpha = 0.265 ** 0.99 = 0.268542739625
    a = conv([4], linear=True)
    assert FAM.alpha(a, T2000)[0] == pytest.approx(0.268542739625, rel=1e-10)


def test_overhead_adds_per_layer():
    a = conv([1, 1], linear=True, Cin=1000, Cout=1000)
    # 0.5 + 2.0 ms/MMAC * 1 * 1e6 MACs / 1e6 = 2.5 ms per layer
    ms = FAM.predict_ms(a, params((0.3, 0.5), (0.3, 0.5), scale=2.0, overhead=0.5))
    np.testing.assert_allclose(ms, [2.5, 2.5], rtol=1e-12)


def test_class_values_gathers_per_layer():
    a = conv([1, 1, 1], K1=np.array([1, 3, 1]), K2=np.array([1, 3, 1]))
    assert FAM.class_values(a, T2000, "gamma").tolist() == [0.99, 0.56, 0.99]


def test_bounds_cover_every_parameter_and_contain_init():
    b = FAM.bounds()
    assert set(b) == {"time_scale_ms_per_mmac", "overhead_ms", "k1.beta", "k1.gamma", "kgt1.beta", "kgt1.gamma"}
    for name, bound in b.items():
        assert bound.lo <= bound.init <= bound.hi, name


# ------------------------------------------------------------ axes family: kernel size, stride
def _axes_params():
    import copy

    from torch_alpha_profiler.profile import load_profile

    return copy.deepcopy(dict(load_profile("h100-fp32", warn_device=False).parameters))


def _dense(K, stride=1, N=8, C=256, H=28):
    n = len(K)
    full = lambda v: np.full(n, v)  # noqa: E731
    K = np.asarray(K)
    stride = np.broadcast_to(np.atleast_1d(stride), (n,))
    out = -(-H // stride)
    return make_arrays(is_linear=full(False), N=full(N), Cin=full(C), Cout=full(C), Hin=full(H), Win=full(H),
                       Hout=out, Wout=out, K1=K, K2=K, stride=stride, groups=full(1))


def test_kernel_log_factor_is_one_up_to_3x3_and_log_linear_in_the_side_beyond():
    lf = families.kernel_log_factor(np.array([1, 7, 9, 16, 25, 36, 49, 121, 256]), math.log(0.5), math.log(2.0))
    # 1x1, 1x7 (side 2.6) and 3x3: 1; 4x4 halfway to k5 in log; 5x5: k5; 6x6 halfway from k5 to k7;
    # 7x7 and beyond (patch embeddings): k7
    expected = [0, 0, 0, 0.5 * math.log(0.5), math.log(0.5), 0.5 * (math.log(0.5) + math.log(2.0)),
                math.log(2.0), math.log(2.0), math.log(2.0)]
    assert np.allclose(lf, expected)


def test_kernel_size_factors_scale_the_kernel_time_of_5x5_and_7x7_layers_only():
    fam = get_family("axes")
    p = _axes_params()
    for name in ("k5_f", "k7_f"):
        p["classes"]["convkxk"][name] = 1.0
    arrays = _dense([3, 5, 7])
    off = fam.predict_ms(arrays, p)
    p["classes"]["convkxk"]["k5_f"], p["classes"]["convkxk"]["k7_f"] = 0.5, 3.0
    on = fam.predict_ms(arrays, p)
    t0 = p["classes"]["convkxk"]["t0_ms"]
    assert on[0] == off[0]
    assert (on[1] - t0) == pytest.approx(0.5 * (off[1] - t0)) and (on[2] - t0) == pytest.approx(3.0 * (off[2] - t0))


def test_a_strided_1x1_convolution_costs_a_gather_pass_on_top():
    """gather = t0 + (input read + strided copy written) / bandwidth, beside a stride-1 1x1
    convolution over the smaller image; other classes have no gather pass."""
    fam = get_family("axes")
    p = _axes_params()
    c = p["classes"]["conv1x1"]
    assert c["gather"] == 1.0 and all(p["classes"][k]["gather"] == 0.0 for k in ("linear", "convkxk", "grouped"))
    strided = _dense([1], stride=2, H=56)
    same = make_arrays(is_linear=[False], N=[8], Cin=[256], Cout=[256], Hin=[28], Win=[28], Hout=[28], Wout=[28],
                       K1=[1], K2=[1], stride=[1], groups=[1])
    copied = 4 * 8 * 256 * (56 * 56 + 28 * 28)
    gather = c["t0_ms"] + copied / (c["bw_gb_per_s"] * 1e6)
    t_strided = fam.predict_ms(strided, p)[0]
    c["gather"] = 0.0
    assert t_strided == pytest.approx(fam.predict_ms(strided, p)[0] + gather)
    assert fam.predict_ms(strided, p)[0] >= fam.predict_ms(same, p)[0]  # the strided layer reads more
    # a profile written before the gather pass existed (no 'gather') has none
    del c["gather"]
    assert fam.predict_ms(strided, p)[0] == pytest.approx(t_strided - gather)


def test_matrix_products_are_pinned_like_linear_layers():
    from torch_alpha_profiler.families import AxesFamily
    from torch_alpha_profiler.opcost import MatrixFamily

    pinned = {k.split(".", 1)[1]: v for k, v in AxesFamily.FIXED.items() if k.startswith("linear.")}
    assert {"k_exp", "tap_ms", "h_hw", "g_hw", "stride_f", "k5_f", "k7_f", "gather"} <= set(pinned)
    assert all(MatrixFamily.FIXED["all." + k] == v for k, v in pinned.items())
