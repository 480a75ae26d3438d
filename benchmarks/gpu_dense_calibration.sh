#!/usr/bin/env bash
# One device run (session 9): a fresh fp32 calibration with `--dense 15000`, end to end on the GPU
# machine (its wall time against the README's "about 3 minutes" for the dense layers), then
# check_fresh_profile.py on the profile it wrote. Usage, on the GPU machine from the repo root:
#     bash benchmarks/gpu_dense_calibration.sh OUTDIR
# Writes OUTDIR/fresh-float32.tar.gz (CSVs, profile, log) and OUTDIR/check.log.
set -uo pipefail
out=${1:-${OUT:-/tmp/out}}
mkdir -p "$out"
{
python3 -c "import sklearn; print('scikit-learn', sklearn.__version__)" || echo "no scikit-learn on this machine"
DENSE=15000 LIMIT_S=${LIMIT_S:-480} bash benchmarks/fresh_calibration.sh float32 "$out"
tmp=$(mktemp -d)
tar -xzf "$out/fresh-float32.tar.gz" -C "$tmp"
PYTHONPATH=. python3 benchmarks/check_fresh_profile.py "$tmp/fresh-float32.json"
} 2>&1 | tee "$out/check.log"
