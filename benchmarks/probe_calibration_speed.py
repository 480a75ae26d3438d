"""Where a calibration's wall time could be saved (on the GPU machine, from the repo root):

    python benchmarks/probe_calibration_speed.py DTYPE OUT_DIR

1. Is cuDNN's first-call setup of a channels-last depthwise convolution paid once per
   (channels, kernel) or once per shape? The same 3x3 192-channel layer at 8 (batch, size) pairs.
2. Does setting configurations up from several CPU threads at once overlap that setup? 24 new
   configurations set up one after another, then 24 others from 8 threads.
3. What a shorter timed block costs in repeatability: 240 plan rows (every 15th layer row) timed
   with CudaGraphTimer's default 2 ms blocks, then 1 ms blocks, then 2 ms again (the noise
   floor), wall time per row for each.

Writes OUT_DIR/probe-speed-DTYPE.txt (the log) and OUT_DIR/probe-speed-DTYPE.csv (part 3's rows).
"""
import csv
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from torch_alpha_profiler.calibrate.measure import build_layer  # noqa: E402
from torch_alpha_profiler.calibrate.plan import make_plan, row  # noqa: E402
from torch_alpha_profiler.calibrate.timers import CudaGraphTimer  # noqa: E402


def dw(c, h, k, n):
    return dict(row("p", N=n, Cin=c, Cout=c, H=h, W=h, K=k, groups=c), layout="nhwc")


def first_call(r, dtype):
    layer, x = build_layer(r, "cuda", dtype)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        layer(x)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main():
    dtype, out = sys.argv[1], sys.argv[2]
    log = open(os.path.join(out, f"probe-speed-{dtype}.txt"), "w")

    def say(*a):
        print(*a, flush=True)
        print(*a, file=log, flush=True)

    say(torch.cuda.get_device_name(), "torch", torch.__version__, "cudnn", torch.backends.cudnn.version(), dtype)
    timer = CudaGraphTimer()
    timer.prepare()
    say("## 1. first call of one (channels, kernel) at several shapes, seconds")
    for n in (1, 32):
        for h in (7, 14, 28, 56):
            say("dw nhwc C192 K3 N%d H%d first %.3f" % (n, h, first_call(dw(192, h, 3, n), dtype)))
    say("## 2. set-up of 24 new configurations: one after another, then from 8 threads")
    serial = [dw(c, 14, 5, 32) for c in (96, 128, 160, 224, 256, 288, 320, 352, 384, 416, 448, 480,
                                            512, 544, 576, 608, 640, 672, 704, 736, 768, 800, 832, 864)]
    t0 = time.perf_counter()
    for r in serial:
        first_call(r, dtype)
    say("serial 24: %.2f s" % (time.perf_counter() - t0))
    threaded = [dw(c, 28, 7, 32) for c in (96, 128, 160, 224, 256, 288, 320, 352, 384, 416, 448, 480,
                                             512, 544, 576, 608, 640, 672, 704, 736, 768, 800, 832, 864)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        times = list(pool.map(lambda r: first_call(r, dtype), threaded))
    say("threads 8, 24: %.2f s (per call %.3f-%.3f)" % (time.perf_counter() - t0, min(times), max(times)))
    t0 = time.perf_counter()
    for r in threaded:
        first_call(r, dtype)
    say("the same 24 again, serial: %.2f s" % (time.perf_counter() - t0))

    say("## 3. timed blocks of 2 ms vs 1 ms on every 15th plan row")
    rows = make_plan()[::15]
    results = []
    for label, block in (("b2", 2.0), ("b1", 1.0), ("b2again", 2.0)):
        t = CudaGraphTimer(target_block_ms=block)
        t0 = time.perf_counter()
        for i, r in enumerate(rows):
            layer, x = build_layer(r, "cuda", dtype, seed=i)
            with torch.no_grad():
                m = t.measure(lambda: layer(x))
            results.append(dict(r, probe=label, time_ms=f"{m.median_ms:.6g}", iqr_ms=f"{m.iqr_ms:.3g}"))
        say("%s: %d rows in %.2f s" % (label, len(rows), time.perf_counter() - t0))
    with open(os.path.join(out, f"probe-speed-{dtype}.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(results[0]))
        w.writeheader()
        w.writerows(results)


if __name__ == "__main__":
    main()
