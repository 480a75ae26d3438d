#!/usr/bin/env bash
# Time dense random layers of each dtype for the learning curve of benchmarks/dense_random_rows.py
# and the shipped profiles' layer fit (nothing else is measured). Usage, on the GPU machine from
# the repo root:
#     bash benchmarks/gpu_dense_random.sh OUTDIR
# Writes OUTDIR/dense-random.tar.gz after each dtype: dense-DTYPE.csv (+ .env.json) and a log.
# Each dtype stops after ${LIMIT_S:-240} s; its CSV keeps every row timed until then.
# COUNT (default 3000): layers a dtype, the first COUNT of plan.dense_rows' draw.
# DTYPES (default "float32 bfloat16"): the dtypes, in order.
# RESUME (optional): a folder holding earlier dense-DTYPE.csv files (benchmarks/data/dense-random):
# they are copied first, so that only the layers they lack are timed (the draw is prefix-stable).
set -uo pipefail
out=${1:-${OUT:-/tmp/out}}
top=$(mktemp -d)
mkdir -p "$out"
export PYTHONUNBUFFERED=1
pack() { tar -czf "$out/dense-random.tar.gz" -C "$top" .; }
{
bash benchmarks/_gpu_header.sh
for dtype in ${DTYPES:-float32 bfloat16}; do
    if [ -n "${RESUME:-}" ] && [ -f "$RESUME/dense-$dtype.csv" ]; then
        cp "$RESUME/dense-$dtype.csv" "$top/"
        echo "resuming from $RESUME/dense-$dtype.csv: $(($(wc -l < "$top/dense-$dtype.csv") - 1)) rows"
    fi
    timeout "${LIMIT_S:-240}" python3 benchmarks/dense_random_rows.py measure --dtype "$dtype" \
        --count "${COUNT:-3000}" --out "$top"
    echo "exit $? ($dtype)"
    pack
done
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv
} 2>&1 | tee "$top/gpu-dense-random.log"
pack
