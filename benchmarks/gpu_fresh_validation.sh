#!/usr/bin/env bash
# One device run: a fresh validation set for the shipped profiles, measured once and used for no
# choice (session 7): held-out layers of a new seed, and the layers and whole-model times of
# torchvision models that no earlier campaign timed (validate_gpu.FRESH_MODELS), both dtypes.
# Usage (on the GPU machine, from the repo root): bash benchmarks/gpu_fresh_validation.sh OUTDIR
# Everything lands in OUTDIR/fresh-validation.tar.gz; unpack it into benchmarks/data/, then,
# anywhere: python benchmarks/validate_gpu.py fresh  (writes docs/accuracy-fresh.md)
set -uo pipefail
out=${1:-${OUT:-/tmp/out}}
top=$(mktemp -d)
work=$top/fresh-validation
mkdir -p "$work"
export PYTHONUNBUFFERED=1
python3 -c "import torch, torchvision; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'cudnn', torch.backends.cudnn.version())"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu,memory.used --format=csv
models=$(python3 -c "import sys; sys.path.insert(0, 'benchmarks'); import validate_gpu as v; print(' '.join(v.FRESH_MODELS))")
seed=$(python3 -c "import sys; sys.path.insert(0, 'benchmarks'); import validate_gpu as v; print(v.FRESH_SEED)")
for dtype in float32 bfloat16; do
    t0=$(date +%s)
    python3 benchmarks/validate_gpu.py measure --dtype "$dtype" --out-dir "$work" --heldout-seed "$seed" \
        --models $models --model-budget-s "${MODEL_BUDGET_S:-150}" --repeat-heldout
    echo "$dtype validation wall time: $(( $(date +%s) - t0 )) s"
done
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv
ls -la "$work"
tar -czf "$out/fresh-validation.tar.gz" -C "$top" fresh-validation
