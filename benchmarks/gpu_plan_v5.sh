#!/usr/bin/env bash
# One device run for plan v5 (session 8): measure the rows plan v5 adds (a second draw of 300
# random layers) by resuming the committed calibrations, both dtypes, Conv2d/Linear layers only
# (calibrate --no-ops: the op, host, channels-last, training and energy CSVs stay as they are);
# then a fresh calibration (nothing resumed, no training or energy stage) of each dtype, to time
# plan v5 against the 120 s target. Usage (on the GPU machine, from the repo root):
#     bash benchmarks/gpu_plan_v5.sh OUTDIR
# Writes OUTDIR/plan-v5.tar.gz after every stage: resumed/calib-DTYPE.csv (the committed rows and
# the new ones), resumed/calib-DTYPE.csv.env.json (this run's environment), fresh/ and a log.
set -uo pipefail
out=${1:-${OUT:-/tmp/out}}
top=$(mktemp -d)
mkdir -p "$out" "$top/resumed" "$top/fresh"
export PYTHONUNBUFFERED=1
pack() { tar -czf "$out/plan-v5.tar.gz" -C "$top" .; }
{
bash benchmarks/_gpu_header.sh
for dtype in float32 bfloat16; do
    cp "benchmarks/data/calib-$dtype.csv" "$top/resumed/"
    t0=$(date +%s)
    python3 -m torch_alpha_profiler calibrate --device cuda --dtype "$dtype" --out "$top/resumed/calib-$dtype" \
        --quiet --name "calib-$dtype" --no-ops --force
    echo "resumed calibration wall time ($dtype): $(($(date +%s) - t0)) s"
    pack
done
for dtype in float32 bfloat16; do
    t0=$(date +%s)
    timeout "${LIMIT_S:-200}" python3 -m torch_alpha_profiler calibrate --device cuda --dtype "$dtype" \
        --out "$top/fresh/fresh-$dtype" --quiet --name "fresh-$dtype"
    echo "fresh calibration wall time ($dtype): $(($(date +%s) - t0)) s"
    python3 -c "import json, sys; print(json.dumps(json.load(open(sys.argv[1]))['provenance'].get('calibration_seconds')))" \
        "$top/fresh/fresh-$dtype.json" || echo "no profile: the calibration did not finish"
    rm -f "$top/fresh/fresh-$dtype.json"  # its CSVs are what is kept; the profile repeats them
    pack
done
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv
} 2>&1 | tee "$top/gpu-plan-v5.log"
pack
ls -la "$top"/*
