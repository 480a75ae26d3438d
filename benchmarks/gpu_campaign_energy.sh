#!/usr/bin/env bash
# One device run per dtype for the energy and training issue: the full calibration with the
# training-step and energy stages (calibrate --train --energy), whole-model CUDA-graph and eager
# times, and per-model energy and training-step measurements (energy_train.py).
# Usage (on the GPU machine, from the repo root):
#     bash benchmarks/gpu_campaign_energy.sh DTYPE OUTDIR [STAGES]
# STAGES: any of "calibrate models energy" (default: all three). With RESUME_FROM=DIR, the
# calibration starts from DIR's calib-DTYPE{,-ops,-nhwc,-train}.csv and measures only what they
# lack (calibrate resumes), re-timing the host costs; RESUME_SUFFIXES (default "base -ops -nhwc -train",
# base = calib-DTYPE.csv) says which of those files to start from. Results are measured into a work
# folder, and OUTDIR/run-energy-DTYPE.tar.gz is rewritten after every stage (a run cut short keeps
# the stages it finished; the device tool brings back at most 8 files).
set -uo pipefail
dtype=${1:-float32}
out=${2:-${OUT:-/tmp/out}}
stages=${3:-calibrate models energy}
work=$(mktemp -d)
mkdir -p "$out"
export PYTHONUNBUFFERED=1
log="$work/gpu-campaign-energy-$dtype.log"
pack() { tar -czf "$out/run-energy-$dtype.tar.gz" -C "$work" .; }
{
python3 -c "import torch, torchvision; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'cudnn', torch.backends.cudnn.version())"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu,memory.used --format=csv
lscpu | grep -E "Model name|^CPU\(s\)" || true
if [[ " $stages " == *" calibrate "* ]]; then
    if [[ -n "${RESUME_FROM:-}" ]]; then
        for s in ${RESUME_SUFFIXES:-base -ops -nhwc -train}; do
            [[ $s == base ]] && s=""
            cp "$RESUME_FROM/calib-$dtype$s.csv" "$work/"
        done
    fi
    t0=$(date +%s)
    python3 -m torch_alpha_profiler calibrate --device cuda --dtype "$dtype" --out "$work/calib-$dtype" \
        --quiet --name "calib-$dtype" --train --energy
    echo "calibration wall time ($dtype): $(($(date +%s) - t0)) s"
    pack
fi
if [[ " $stages " == *" models "* ]]; then
    t0=$(date +%s)
    python3 benchmarks/validate_gpu.py measure --dtype "$dtype" --out-dir "$work" --heldout 0 --whole-only \
        --model-budget-s "${MODEL_BUDGET_S:-150}"
    echo "whole-model wall time ($dtype): $(($(date +%s) - t0)) s"
    pack
fi
if [[ " $stages " == *" energy "* ]]; then
    t0=$(date +%s)
    python3 benchmarks/energy_train.py --dtype "$dtype" --out "$work"
    echo "energy/training-step wall time ($dtype): $(($(date +%s) - t0)) s"
fi
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv
} 2>&1 | tee "$log"
pack
ls -la "$work"
