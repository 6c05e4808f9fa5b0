#!/usr/bin/env bash
# Every GPU check in one run (< 8 minutes on one H200), for a session that is lent a GPU:
#   1. adm64 bf16 training MFU        (bench/train.py --mfu)
#   2. guided sampling img/s of adm64 and the guided-step / 2B-forward ratio (bench/sampler_step.py)
#   3. Inception img/s and FID-from-statistics time (bench/inception.py)
#   4. a short CUDA smoke test of every command: prepare, train, sample, score, sweep, demo-sized
# Usage (repository root, on the GPU machine):  bash bench/gpu.sh 2>&1 | tee gpu.log
# It installs cfgdiff into a venv that sees the machine's CUDA torch (no download of torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .gpuvenv/bin/python ]; then
    $PY -m venv --system-site-packages .gpuvenv
    .gpuvenv/bin/pip install -q --no-deps --no-build-isolation -e . || .gpuvenv/bin/pip install -q --no-deps -e .
fi
P=.gpuvenv/bin/python
$P - <<'PY'
import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))
PY
echo "== 1. adm64 bf16 training MFU"
timeout 150 $P bench/train.py --mfu --preset adm64 --batch 128 --steps 20
echo "== 2. guided sampling (adm64, 64px, B=256)"
timeout 90 $P bench/sampler_step.py --preset adm64 --res 64 --classes 1000 --batch 256 --steps 10 --repeats 3
echo "== 3. Inception"
timeout 90 $P bench/inception.py --images 2048 --batch 256
echo "== 4. CUDA smoke test of each command"
W=$(mktemp -d)
C="$PWD/.gpuvenv/bin/cfgdiff"
(
    cd "$W"
    timeout 30 $C prepare builtin:shapes --size 32 --limit 2000
    timeout 60 $C train --preset tiny --kimg 2 --batch 64 --json | tail -c 400
    timeout 60 $C sample --w 1 --n 500 --steps 32 --balanced --out s.npz --grid s.png --json | tail -c 300
    $P -c "import h5py, numpy as np; f = h5py.File('data/shapes32.h5'); np.savez('ref.npz', arr_0=f['images'][:1000])"
    timeout 90 $C score s.npz --ref ref.npz --json | tail -c 600
    timeout 90 $C sweep --w 0,2 -n 200 --steps 16 --ref ref.npz --out sw --json | tail -c 600
)
echo "gpu.sh: all checks ran"
