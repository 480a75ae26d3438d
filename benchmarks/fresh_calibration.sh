#!/usr/bin/env bash
# A fresh calibration (nothing resumed) of one dtype, to time each stage of plan v3 on the GPU
# machine and to compare its rows with the committed ones (another machine). Usage (on the GPU
# machine, from the repo root):
#     [TRAIN=1] [DENSE=N] [LIMIT_S=500] bash benchmarks/fresh_calibration.sh DTYPE OUTDIR
# TRAIN=1 adds the training-step stage (about 3 more minutes), DENSE=N N dense random layers
# (calibrate --dense). Writes OUTDIR/fresh-DTYPE.tar.gz
# (the CSVs, the profile with provenance.calibration_seconds, a log), also when LIMIT_S cuts the
# calibration short (its CSVs keep what was measured).
set -uo pipefail
dtype=${1:-float32}
out=${2:-${OUT:-/tmp/out}}
work=$(mktemp -d)
mkdir -p "$out"
{
python3 -c "import torch; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())"
t0=$(date +%s)
timeout "${LIMIT_S:-500}" python3 -m torch_alpha_profiler calibrate --device cuda --dtype "$dtype" \
    --out "$work/fresh-$dtype" --quiet --name "fresh-$dtype" ${TRAIN:+--train} ${DENSE:+--dense "$DENSE"}
echo "fresh calibration wall time ($dtype): $(($(date +%s) - t0)) s"
python3 -c "import json, sys; print(json.dumps(json.load(open(sys.argv[1]))['provenance'].get('calibration_seconds')))" \
    "$work/fresh-$dtype.json" || echo "no profile: the calibration did not finish"
} 2>&1 | tee "$work/fresh-calibration-$dtype.log"
tar -czf "$out/fresh-$dtype.tar.gz" -C "$work" .
