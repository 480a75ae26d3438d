"""A freshly calibrated profile loads, carries its neighbour correction and costs a model on the GPU.

    python benchmarks/check_fresh_profile.py PREFIX.json      # on the GPU machine, after calibrate
"""
import sys
import numpy as np
from torch_alpha_profiler import load_profile, AlphaProfiler
from torch_alpha_profiler.correction import from_profile
import torch, torchvision
path = sys.argv[1]
p = load_profile(path)
c = from_profile(p)
print("loaded", p.name, "schema", p.schema_version, "correction", p.correction["bandwidth"], "points", sum(len(r) for r in c.residuals.values()))
print("calibration_seconds", p.provenance.get("calibration_seconds"))
m = torchvision.models.resnet50().cuda().eval()
x = torch.randn(1, 3, 224, 224, device="cuda")
with AlphaProfiler(m, profile=p) as prof, torch.no_grad():
    m(x)
print("resnet50 b1 predicted ms (fresh profile):", prof.predicted_ms, "device", torch.cuda.get_device_name())
