#!/usr/bin/env bash
# One device run (session 8): the op calibration plan plus 8 rows of each memory-bound kind at
# networks' activations (opplan.network_rows), timed by the calibration's op timer into a copy of
# the committed calib-DTYPE-ops.csv (resumed, so only the new rows are measured), both dtypes.
# Usage (on the GPU machine, from the repo root): bash benchmarks/gpu_op_network_rows.sh OUTDIR
# Writes OUTDIR/op-network-rows.tar.gz (ops-DTYPE.csv, a log); evaluate with
# python benchmarks/op_network_rows.py.
# (The committed data, benchmarks/data/op-network-rows/, was measured through `calibrate`
# resumed from the committed CSVs, while its op plan included these rows: the same rows and timer.)
set -uo pipefail
out=${1:-${OUT:-/tmp/out}}
top=$(mktemp -d)
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{
python3 -c "import torch; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())"
for dtype in float32 bfloat16; do
    cp "benchmarks/data/calib-$dtype-ops.csv" "$top/ops-$dtype.csv"
    python3 - "$dtype" "$top/ops-$dtype.csv" <<'PY'
import sys
from torch_alpha_profiler.calibrate.opmeasure import measure_op_plan
from torch_alpha_profiler.calibrate.opplan import make_op_plan
measure_op_plan(make_op_plan(network=8), sys.argv[2], device="cuda", dtype=sys.argv[1], resume=True)
PY
done
} 2>&1 | tee "$top/gpu-op-network-rows.log"
tar -czf "$out/op-network-rows.tar.gz" -C "$top" .
