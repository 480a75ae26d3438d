#!/usr/bin/env bash
# The lines a GPU run script logs first: the device and library versions, its clocks and power,
# and the commit (where the tree has a .git). Run from the repo root: bash benchmarks/_gpu_header.sh
python3 -c "import torch, torchvision; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'cudnn', torch.backends.cudnn.version())"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu,memory.used --format=csv
git log -1 --format='commit %h %s' 2>/dev/null || true
