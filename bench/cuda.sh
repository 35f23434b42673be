#!/usr/bin/env bash
# The CUDA path on a GPU machine: the CUDA-vs-CPU tests, then each torch stage's benchmark
# on the GPU and (CPU=1) on 2 cores of the same machine, for ratios. JSON lines on stdout.
#   bash bench/cuda.sh            PY=python3 CPU=1 bash bench/cuda.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
nvidia-smi -L || { echo "no NVIDIA GPU visible" >&2; exit 1; }
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
$PY -m pytest -q -s -p no:cacheprovider --noconftest tests/test_cuda.py \
    "tests/test_recon.py::test_cuda_matches_cpu"
devices=(cuda)
[ "${CPU:-0}" = 1 ] && devices+=(cpu)
for dev in "${devices[@]}"; do
    pin=()
    [ "$dev" = cpu ] && pin=(taskset -c 0,1)
    "${pin[@]}" $PY bench/segment.py --ga 36 --tta --device "$dev"
    "${pin[@]}" $PY bench/brainage.py --n 6 --device "$dev"
    "${pin[@]}" $PY bench/recon.py --motion moderate --stacks 3 --no-baseline --device "$dev"
done
