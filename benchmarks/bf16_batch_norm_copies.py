"""bf16 batch norm inside networks: its copy_ kernels and its time against the prediction.

    python benchmarks/bf16_batch_norm_copies.py > benchmarks/data/bf16-batch-norm-copies.txt

From committed data only: `op-breakdown-bfloat16.csv` (torch.profiler device time per operator of
eager forwards, H100, benchmarks/op_breakdown.py) and the `h100-bf16` profile's predictions of the
same models (validate_gpu.whole_model_predictions), at batch 1. Counts the copy_ kernels of one
channel vector ([C] -> [C]) that an eager bf16 forward runs beside its batch norms, and compares
batch norm plus those copies with the predicted batch-norm time (accuracy.md, whole-model misses).
"""
import collections
import csv
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))

from validate_gpu import MODELS, whole_model_predictions  # noqa: E402

from torch_alpha_profiler.profile import load_profile  # noqa: E402


def main():
    data = os.path.join(HERE, "data")
    vector = re.compile(r"\[\[\d+\],\[\d+\],\[\]\]")  # a copy_ of one channel vector
    for dtype in ("float32", "bfloat16"):
        copies = calls = copy_us = bn_us = 0.0
        low, high = float("inf"), 0.0
        models = set()
        with open(os.path.join(data, f"op-breakdown-{dtype}.csv")) as f:
            for r in csv.DictReader(f):
                if r["batch"] != "1":
                    continue
                models.add(r["model"])
                c, t = float(r["calls_per_forward"]), float(r["self_device_us_per_call"])
                if r["op"] == "aten::copy_" and vector.fullmatch(r["input_shapes"]):
                    copies += c
                    copy_us += c * t
                    low, high = min(low, t), max(high, t)
                elif r["op"].endswith("batch_norm"):  # native_batch_norm in these traces
                    calls += c
                    bn_us += c * t
        print(f"{dtype}: copy_ kernels of one channel vector at batch 1: {copies:.0f}")
    print(f"bfloat16, batch 1, {len(models)} models: {calls:.0f} batch-norm calls, {bn_us / 1e3:.2f} ms; "
          f"{copies:.0f} vector copies, {copy_us / 1e3:.2f} ms, {low:.2f}-{high:.2f} us each")
    profile = load_profile("h100-bf16", warn_device=False)
    names = [m for m in MODELS if m in models]
    preds = whole_model_predictions(names, [1], profile)
    predicted, n = 0.0, 0
    for p in preds.values():
        for o in p.ops:
            if o.predicted_ms is not None and o.pieces and o.pieces[0].op == "batch_norm":
                predicted += o.predicted_ms
                n += 1
    print(f"predicted batch norm (h100-bf16): {n} calls, {predicted:.2f} ms, {predicted / n * 1e3:.2f} us a call")
    print(f"measured batch norm + its copy: {(bn_us + copy_us) / calls:.2f} us a call, "
          f"{(bn_us + copy_us) / 1e3 / predicted:.2f} x the prediction")


if __name__ == "__main__":
    main()
