#!/usr/bin/env bash
# One device run for issue 5 (whole models), both dtypes: the full calibration (Conv2d/Linear
# layers, other operations, eager host costs) and whole-model CUDA-graph and eager times.
# Usage (on the GPU machine, from the repo root): bash benchmarks/gpu_campaign_ops.sh OUTDIR
# Everything lands in OUTDIR/run-ops.tar.gz (raw CSVs, their .env.json provenance, the log).
set -uo pipefail
out=${1:-${OUT:-/tmp/out}}
work=$(mktemp -d)
export PYTHONUNBUFFERED=1
{
python3 -c "import torch, torchvision; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'cudnn', torch.backends.cudnn.version())"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu,memory.used --format=csv
lscpu | grep -E "Model name|^CPU\(s\)" || true
for dtype in float32 bfloat16; do
    t0=$(date +%s)
    python3 -m torch_alpha_profiler calibrate --device cuda --dtype "$dtype" --out "$work/calib-$dtype" \
        --quiet --name "calib-$dtype"
    t1=$(date +%s); echo "calibration wall time ($dtype): $((t1 - t0)) s"
    python3 benchmarks/validate_gpu.py measure --dtype "$dtype" --out-dir "$work" --heldout 0 --whole-only \
        --model-budget-s "${MODEL_BUDGET_S:-150}"
    t2=$(date +%s); echo "whole-model wall time ($dtype): $((t2 - t1)) s"
done
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv
} 2>&1 | tee "$work/gpu-campaign-ops.log"
tar -czf "$out/run-ops.tar.gz" -C "$work" .
ls -la "$work"
