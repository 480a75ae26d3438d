"""The Conv2d bias addition costed as a same-shape add or as the broadcast kernel (cost.BIAS_OPERATOR).

    python benchmarks/bias_operator_check.py > benchmarks/data/bias-operator-check.txt

From committed data and the shipped profiles only (CPU):
1. the profiles' broadcast (``mul``, fitted on the op calibration's ``mul_bcast`` rows) against
   their same-shape ``add``, per byte, over a bias addition's sizes;
2. SqueezeNet's biased layers at batch 32 (`model-layer-times-DTYPE.csv`, each timed alone with its
   bias): measured / predicted under each costing;
3. the per-model Conv2d+Linear sums and the training-step MAPE (`energy-train-DTYPE.csv`) under
   each costing.
"""
import argparse
import collections
import csv
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))

import torch_alpha_profiler.cost as cost  # noqa: E402
import validate_gpu  # noqa: E402
from torch_alpha_profiler.opcost import pieces_ms  # noqa: E402
from torch_alpha_profiler.ops import Piece  # noqa: E402
from torch_alpha_profiler.profile import load_profile  # noqa: E402

DATA = os.path.join(HERE, "data")
PROFILES = (("float32", "h100-fp32", 4), ("bfloat16", "h100-bf16", 2))
COSTINGS = ("add", "mul")  # a same-shape add (until session 8), the broadcast kernel (shipped)


def per_byte():
    print("1. broadcast / same-shape add, predicted time of a bias addition's bytes")
    for dtype, name, itemsize in PROFILES:
        profile = load_profile(name, warn_device=False)
        for mb in (1, 4, 16, 64, 256):
            nbytes = int(mb * 2 ** 20)
            add, mul = (pieces_ms([Piece("elementwise", nbytes=nbytes, itemsize=itemsize, op=op)], profile)[0]
                        for op in COSTINGS)
            print(f"   {dtype} {mb:4d} MiB: add {add * 1e3:8.1f} us, broadcast {mul * 1e3:8.1f} us, ratio {mul / add:.2f}")


def squeezenet():
    print("2. SqueezeNet, batch 32, biased layers: measured / predicted (calls weighted)")
    from torch_alpha_profiler.tables import read_layer_table

    for dtype, name, _ in PROFILES:
        profile = load_profile(name, warn_device=False)
        times = read_layer_table(os.path.join(DATA, f"model-layer-times-{dtype}.csv"))
        keys = [",".join(times.columns[c][i] for c in validate_gpu.KEY_COLUMNS) for i in range(len(times))]
        index = {k: i for i, k in enumerate(keys)}
        calls = collections.Counter()
        with open(os.path.join(DATA, "model-layers.csv")) as f:
            for r in csv.DictReader(f):
                if r["model"] == "squeezenet1_1" and r["batch"] == "32":
                    calls[index[r["key"]]] += 1
        rows = [i for i in calls if times.columns["bias"][i] in ("1", "True", "true") and not times.arrays.is_linear[i]]
        for op in COSTINGS:
            cost.BIAS_OPERATOR = op
            pred = np.asarray(cost.evaluate(times.arrays, profile).predicted_ms) + validate_gpu._bias_ms(times, profile)
            ratio = np.array([times.time_ms[i] / pred[i] for i in rows])
            total = sum(times.time_ms[i] * calls[i] for i in rows) / sum(pred[i] * calls[i] for i in rows)
            print(f"   {dtype}, bias as {op}: {len(rows)} shapes, median {np.median(ratio):.2f}, "
                  f"range {ratio.min():.2f}-{ratio.max():.2f}, sum {total:.2f}")
    cost.BIAS_OPERATOR = "mul"


def models():
    print("3. per-model Conv2d+Linear sums (MAPE %, batch 1 / 32) and training-step time (MAPE %, Spearman)")
    stats = validate_gpu._stats
    for op in COSTINGS:
        cost.BIAS_OPERATOR = op
        for dtype, name, _ in PROFILES:
            profile = load_profile(name, warn_device=False)

            def predict(times):
                return np.asarray(cost.evaluate(times.arrays, profile).predicted_ms) + validate_gpu._bias_ms(times, profile)

            sums, _, _ = validate_gpu.model_sums(DATA, dtype, {"p": predict})
            mape = [np.mean([abs(v["p"] / v["measured"] - 1) * 100 for (m, b), v in sums.items() if b == batch])
                    for batch in (1, 32)]
            print(f"   bias as {op}, {dtype}: sums {mape[0]:.2f} / {mape[1]:.2f}")
        seen = []
        validate_gpu._stats = lambda pred, meas: seen.append(stats(pred, meas)) or seen[-1]
        args = argparse.Namespace(data=DATA, out=os.devnull,
                                  dtypes=[d for d, _, _ in PROFILES], profiles=[n for _, n, _ in PROFILES])
        validate_gpu.energy_section(args)
        validate_gpu._stats = stats
        # energy_section's rows per dtype: forward energy x3, forward time, training step time (5th), ...
        per_dtype = len(seen) // len(PROFILES)
        for k, (dtype, _, _) in enumerate(PROFILES):
            st = seen[k * per_dtype + 4]
            print(f"   bias as {op}, {dtype}: training step time MAPE {st['mape']:.3f}, Spearman {st['spearman']:.4f}")
    cost.BIAS_OPERATOR = "mul"


if __name__ == "__main__":
    per_byte()
    squeezenet()
    models()
