#!/usr/bin/env bash
# One device run for one dtype: calibration sweep + validation measurements.
# Usage (on the GPU machine, from the repo root): bash benchmarks/gpu_campaign.sh float32 OUTDIR
# Everything lands in OUTDIR/run-DTYPE.tar.gz (raw CSVs and their .env.json provenance).
set -uo pipefail
dtype=${1:-float32}
out=${2:-${OUT:-/tmp/out}}
work=$(mktemp -d)
export PYTHONUNBUFFERED=1
python3 -c "import torch, torchvision; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'cudnn', torch.backends.cudnn.version())"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu,memory.used --format=csv
t0=$(date +%s)
python3 -m torch_alpha_profiler calibrate --device cuda --dtype "$dtype" --out "$work/calib-$dtype" \
    --family paper --quiet --name "calib-$dtype"
t1=$(date +%s); echo "calibration wall time: $((t1 - t0)) s"
python3 benchmarks/validate_gpu.py measure --dtype "$dtype" --out-dir "$work" --model-budget-s "${MODEL_BUDGET_S:-200}" --repeat-heldout
t2=$(date +%s); echo "validation wall time: $((t2 - t1)) s"
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv
tar -czf "$out/run-$dtype.tar.gz" -C "$work" .
ls -la "$work"
