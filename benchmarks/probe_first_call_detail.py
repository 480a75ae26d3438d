"""Which part of a channels-last depthwise convolution's first call is slow (GPU machine):

    python benchmarks/probe_first_call_detail.py DTYPE

Times, for one 3x3 192-channel depthwise layer at batch 32, 28x28, channels-last input: the first
call, a second call, a call with a new input of the same shape, a new module of the same shape
on the old input, and the same with cuDNN's benchmark mode and with cuDNN off; then the
profiler's top CPU operations of one more new module's first call.
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from torch_alpha_profiler.calibrate.measure import build_layer  # noqa: E402
from torch_alpha_profiler.calibrate.plan import row  # noqa: E402


def timed(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


dtype = sys.argv[1] if len(sys.argv) > 1 else "float32"
print(torch.cuda.get_device_name(), "torch", torch.__version__, "cudnn", torch.backends.cudnn.version(),
      dtype, "benchmark", torch.backends.cudnn.benchmark, flush=True)
r = dict(row("p", N=32, Cin=192, Cout=192, H=28, W=28, K=3, groups=192), layout="nhwc")
torch.ones(1, device="cuda")
a, x = build_layer(r, "cuda", dtype)
print("first call %.3f" % timed(lambda: a(x)))
print("second call %.3f" % timed(lambda: a(x)))
x2 = torch.randn_like(x)
print("new input %.3f" % timed(lambda: a(x2)))
b, _ = build_layer(r, "cuda", dtype, seed=1)
print("new module %.3f" % timed(lambda: b(x)))
b.weight.data = b.weight.data.contiguous(memory_format=torch.channels_last)
print("its weight made channels-last %.3f" % timed(lambda: b(x)))
c, _ = build_layer(r, "cuda", dtype, seed=2)
c.weight.data = c.weight.data.contiguous(memory_format=torch.channels_last)
print("new module, weight channels-last before its first call %.3f" % timed(lambda: c(x)))
d, _ = build_layer(r, "cuda", dtype, seed=3)
print("new module, x as NCHW %.3f" % timed(lambda: d(x.contiguous())))
with torch.backends.cudnn.flags(enabled=True, benchmark=True):
    e, _ = build_layer(r, "cuda", dtype, seed=4)
    print("benchmark mode: new module %.3f, again %.3f" % (timed(lambda: e(x)), timed(lambda: e(x))))
with torch.backends.cudnn.flags(enabled=False):
    f, _ = build_layer(r, "cuda", dtype, seed=5)
    print("cudnn off: new module %.3f, again %.3f" % (timed(lambda: f(x)), timed(lambda: f(x))))
g, _ = build_layer(r, "cuda", dtype, seed=6)
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    timed(lambda: g(x))
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
