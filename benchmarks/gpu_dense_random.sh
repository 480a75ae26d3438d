#!/usr/bin/env bash
# One device run (session 9): time 3,000 dense random layers of each dtype for the learning curve
# of benchmarks/dense_random_rows.py (nothing else is measured). Usage, on the GPU machine from the
# repo root:
#     bash benchmarks/gpu_dense_random.sh OUTDIR
# Writes OUTDIR/dense-random.tar.gz after each dtype: dense-DTYPE.csv (+ .env.json) and a log.
# Each dtype stops after ${LIMIT_S:-240} s; its CSV keeps every row timed until then.
set -uo pipefail
out=${1:-${OUT:-/tmp/out}}
top=$(mktemp -d)
mkdir -p "$out"
export PYTHONUNBUFFERED=1
pack() { tar -czf "$out/dense-random.tar.gz" -C "$top" .; }
{
bash benchmarks/_gpu_header.sh
for dtype in float32 bfloat16; do
    timeout "${LIMIT_S:-240}" python3 benchmarks/dense_random_rows.py measure --dtype "$dtype" \
        --count "${COUNT:-3000}" --out "$top"
    echo "exit $? ($dtype)"
    pack
done
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv
} 2>&1 | tee "$top/gpu-dense-random.log"
pack
