#!/usr/bin/env bash
# One device run for op plan v2 (session 8): measure the 128 rows it adds (8 of each memory-bound
# kind at networks' activations, opplan.network_rows) by resuming the committed calibrations, both
# dtypes. The layer and channels-last CSVs are copied in too, so nothing of theirs is re-measured;
# the host costs are re-timed by calibrate, but only the op CSV is kept. Usage (on the GPU
# machine, from the repo root): bash benchmarks/gpu_op_plan_v2.sh OUTDIR
# Writes OUTDIR/op-plan-v2.tar.gz: resumed/calib-DTYPE-ops.csv, this run's calibrate log.
set -uo pipefail
out=${1:-${OUT:-/tmp/out}}
top=$(mktemp -d)
mkdir -p "$out" "$top/resumed"
export PYTHONUNBUFFERED=1
{
python3 -c "import torch, torchvision; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'cudnn', torch.backends.cudnn.version())"
for dtype in float32 bfloat16; do
    for s in "" -ops -nhwc; do cp "benchmarks/data/calib-$dtype$s.csv" "$top/resumed/"; done
    t0=$(date +%s)
    python3 -m torch_alpha_profiler calibrate --device cuda --dtype "$dtype" --out "$top/resumed/calib-$dtype" \
        --quiet --name "calib-$dtype" --force
    echo "resumed calibration wall time ($dtype): $(($(date +%s) - t0)) s"
    rm -f "$top/resumed/calib-$dtype.csv" "$top/resumed/calib-$dtype-nhwc.csv" "$top/resumed/calib-$dtype-host.csv" \
        "$top/resumed/calib-$dtype.json"
done
} 2>&1 | tee "$top/gpu-op-plan-v2.log"
tar -czf "$out/op-plan-v2.tar.gz" -C "$top" .
ls -la "$top"/*
