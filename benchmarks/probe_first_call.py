"""Where a channels-last calibration row's time goes: building the layer, its first call, timing.

    python benchmarks/probe_first_call.py   (on the GPU machine, from the repo root)

Four depthwise convolutions at batch 32 (bf16), NCHW and channels-last: the first call of a
channels-last one costs cuDNN's setup for that configuration (benchmarks/data/fresh-run9/).
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from torch_alpha_profiler.calibrate.measure import build_layer  # noqa: E402
from torch_alpha_profiler.calibrate.plan import row  # noqa: E402
from torch_alpha_profiler.calibrate.timers import CudaGraphTimer  # noqa: E402

print(torch.cuda.get_device_name(), "torch", torch.__version__, "cudnn", torch.backends.cudnn.version())
timer = CudaGraphTimer()
torch.ones(1, device="cuda")
for lay in ("nchw", "nhwc"):
    for c, h, k in ((96, 56, 7), (192, 28, 3), (384, 14, 5), (768, 7, 7)):
        r = dict(row("p", N=32, Cin=c, Cout=c, H=h, W=h, K=k, groups=c), layout=lay)
        t0 = time.perf_counter()
        layer, x = build_layer(r, "cuda", "bfloat16")
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        with torch.no_grad():
            layer(x)
            torch.cuda.synchronize()
            t2 = time.perf_counter()
            timer.measure(lambda: layer(x))
            t3 = time.perf_counter()
        print(lay, c, h, k, "build %.3f first %.3f measure %.3f" % (t1 - t0, t2 - t1, t3 - t2), flush=True)
