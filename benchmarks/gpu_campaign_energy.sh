#!/usr/bin/env bash
# One device run per dtype for the energy and training issue: the full calibration with the
# training-step and energy stages (calibrate --train --energy), whole-model CUDA-graph and eager
# times, and per-model energy and training-step measurements (energy_train.py).
# Usage (on the GPU machine, from the repo root): bash benchmarks/gpu_campaign_energy.sh DTYPE OUTDIR
# Files are written straight into OUTDIR as they are taken (a run cut short keeps what it measured).
set -uo pipefail
dtype=${1:-float32}
out=${2:-${OUT:-/tmp/out}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{
python3 -c "import torch, torchvision; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'cudnn', torch.backends.cudnn.version())"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu,memory.used --format=csv
lscpu | grep -E "Model name|^CPU\(s\)" || true
t0=$(date +%s)
python3 -m torch_alpha_profiler calibrate --device cuda --dtype "$dtype" --out "$out/calib-$dtype" \
    --quiet --name "calib-$dtype" --train --energy
t1=$(date +%s); echo "calibration wall time ($dtype): $((t1 - t0)) s"
python3 benchmarks/validate_gpu.py measure --dtype "$dtype" --out-dir "$out" --heldout 0 --whole-only \
    --model-budget-s "${MODEL_BUDGET_S:-150}"
t2=$(date +%s); echo "whole-model wall time ($dtype): $((t2 - t1)) s"
python3 benchmarks/energy_train.py --dtype "$dtype" --out "$out"
t3=$(date +%s); echo "energy/training-step wall time ($dtype): $((t3 - t2)) s"
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv
} 2>&1 | tee "$out/gpu-campaign-energy-$dtype.log"
