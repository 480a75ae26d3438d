"""A freshly calibrated profile loads, carries its neighbour correction (and residual trees, where
scikit-learn was installed) and costs a model on the GPU.

    python benchmarks/check_fresh_profile.py PREFIX.json      # on the GPU machine, after calibrate
"""
import sys

import torch
import torchvision

from torch_alpha_profiler import AlphaProfiler, load_profile
from torch_alpha_profiler.correction import from_profile
from torch_alpha_profiler.trees import count


def main(path: str) -> None:
    p = load_profile(path)
    points = sum(len(r) for r in from_profile(p).residuals.values())
    print("loaded", p.name, "schema", p.schema_version, "correction", p.correction["bandwidth"], "points", points,
          "residual trees", count(p.trees) if p.trees else None)
    print("calibration_seconds", p.provenance.get("calibration_seconds"))
    model = torchvision.models.resnet50().cuda().eval()
    x = torch.randn(1, 3, 224, 224, device="cuda")
    with AlphaProfiler(model, profile=p) as prof, torch.no_grad():
        model(x)
    print("resnet50 b1 predicted ms (fresh profile):", prof.predicted_ms, "device", torch.cuda.get_device_name())


if __name__ == "__main__":
    main(sys.argv[1])
