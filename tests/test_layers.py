"""layers: column-wise geometry (S, K, MACs) from records and columns."""
import numpy as np
import pytest

from torch_alpha_profiler import layers
from torch_alpha_profiler.records import LayerRecord


def _arrays(**over):
    cols = dict(is_linear=[False, True], N=[2, 6], Cin=[4, 8], Cout=[6, 3], Hin=[9, 1], Win=[11, 1],
                Hout=[5, 1], Wout=[7, 1], K1=[3, 1], K2=[5, 1], stride=[2, 1], groups=[2, 1])
    cols.update(over)
    return layers.make_arrays(**cols)


def test_make_arrays_types_and_default_itemsize():
    a = _arrays()
    assert len(a) == 2
    assert a.is_linear.dtype == bool and a.N.dtype == np.int64
    assert a.itemsize.tolist() == [4, 4]  # float32 when absent
    assert _arrays(itemsize=[2, 8]).itemsize.tolist() == [2, 8]


def test_S_K_and_macs_by_hand():
    a = _arrays()
    # S = N * Hout * Wout: 2 * 5 * 7 = 70 ; 6 * 1 * 1 = 6
    assert a.S.tolist() == [70, 6]
    # K = K1 * K2: 3 * 5 = 15 ; 1
    assert a.K.tolist() == [15, 1]
    # MACs = S * Cout * (Cin / groups) * K: 70 * 6 * 2 * 15 = 12600 ; 6 * 3 * 8 * 1 = 144
    assert a.macs.tolist() == [12600, 144]


def test_macs_do_not_overflow_for_large_layers():
    # 256 * 112 * 112 * 4096 * 4096 * 49: far above 2**31, still exact in int64
    a = layers.make_arrays(is_linear=[False], N=[256], Cin=[4096], Cout=[4096], Hin=[112], Win=[112],
                           Hout=[112], Wout=[112], K1=[7], K2=[7], stride=[1], groups=[1])
    assert int(a.macs[0]) == 256 * 112 * 112 * 4096 * 4096 * 49


@pytest.mark.parametrize("dtype, size", [
    ("float32", 4), ("torch.float32", 4), ("bfloat16", 2), ("torch.float16", 2),
    ("float64", 8), ("int8", 1), ("float8_e4m3fn", 1), ("something-else", 4),
])
def test_itemsize_of(dtype, size):
    assert layers.itemsize_of(dtype) == size


def test_from_records_keeps_order_and_geometry():
    conv = LayerRecord(name="c", kind="Conv2d", module_type="Conv2d", input_shape=(2, 4, 9, 11),
                       output_shape=(2, 6, 5, 7), batch=2, in_channels=4, out_channels=6, in_hw=(9, 11),
                       out_hw=(5, 7), kernel=(3, 5), stride=(1, 2), groups=2, dtype="bfloat16")
    lin = LayerRecord(name="l", kind="Linear", module_type="Linear", input_shape=(2, 3, 8),
                      output_shape=(2, 3, 3), batch=6, in_channels=8, out_channels=3)
    a = layers.from_records([conv, lin])
    assert a.is_linear.tolist() == [False, True]
    assert a.N.tolist() == [2, 6] and a.Cin.tolist() == [4, 8] and a.Cout.tolist() == [6, 3]
    assert a.Hin.tolist() == [9, 1] and a.Win.tolist() == [11, 1]
    assert a.Hout.tolist() == [5, 1] and a.Wout.tolist() == [7, 1]
    assert a.K1.tolist() == [3, 1] and a.K2.tolist() == [5, 1]
    assert a.stride.tolist() == [2, 1]  # the larger of (1, 2)
    assert a.groups.tolist() == [2, 1] and a.itemsize.tolist() == [2, 4]
    assert a.macs.tolist() == [12600, 144]  # as in test_S_K_and_macs_by_hand


def test_concat_and_take():
    a = _arrays()
    both = layers.concat([a, a])
    assert len(both) == 4 and both.macs.tolist() == [12600, 144, 12600, 144]
    assert layers.take(both, np.array([False, True, True, False])).N.tolist() == [6, 2]
    assert layers.take(both, [3]).Cout.tolist() == [3]
