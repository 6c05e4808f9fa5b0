#!/usr/bin/env bash
# Every GPU check in one run, for a session that is lent a GPU; under 8 minutes on one H200 (each
# step's timeout is cut to what is left of a 450 s budget, so a slow step cannot push past it):
#   1. adm64 bf16 training MFU        (bench/train.py --mfu)
#   2. guided sampling img/s of adm64 and the guided-step / 2B-forward ratio (bench/sampler_step.py)
#   3. Inception img/s and FID-from-statistics time (bench/inception.py)
#   4. a CUDA smoke test of every command at demo size: prepare, train, sample, score, sweep, demo
#   5. adm64 bf16 training MFU again with torch.compile (fuses GroupNorm + SiLU + scale-shift, which ADM
#      fused by hand to reach its 41%); last, so that a long compile only eats the spare budget
# A failed step is reported and the others still run; the exit status is 1 if any failed.
# Usage (repository root, on the GPU machine):  bash bench/gpu.sh 2>&1 | tee gpu.log
# Through the device tool:  command "set -o pipefail; bash bench/gpu.sh 2>&1 | tee $OUT/gpu.log", timeout_s 540.
#
# The GPU machine has no network. Its python3 (/opt/torch/.venv) already holds everything cfgdiff
# needs (torch with CUDA, typer, rich, numpy, pillow, scipy, h5py, matplotlib: /work/.library/device/
# KINDS.md), so cfgdiff is installed without dependencies into .gpuvenv, a venv that sees python3's
# packages through a .pth file (`venv --system-site-packages` made from a venv sees the base
# interpreter's packages, not that venv's torch).
# If the import check below names a missing package, carry it as a wheel. Here, in the repository
# root (.whl/ is in .gitignore already), for each missing NAME==VERSION:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl NAME==VERSION
# then run with carry [".whl"] and the command prefixed by
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit;
# No Inception weights can be downloaded there either: unless some resolve (--inception,
# $CFGDIFF_INCEPTION, the cache), steps 3 and 4 use random stand-in weights of the right shapes
# (real speed and code paths, meaningless FID/IS values).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BUDGET=450  # seconds for the whole script, setup included
if [ ! -x .gpuvenv/bin/python ]; then
    $PY -m venv --without-pip .gpuvenv || exit 1
    site=$(.gpuvenv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || exit 1
    $PY -c 'import sys; print("import site; " + "; ".join(f"site.addsitedir({p!r})" for p in sys.path
            if p.endswith(("site-packages", "dist-packages"))))' > "$site/_gpu_sh_parent.pth" || exit 1
    .gpuvenv/bin/python -m pip install -q --no-deps --no-build-isolation --no-index -e . || exit 1
fi
P=$PWD/.gpuvenv/bin/python
C=$PWD/.gpuvenv/bin/cfgdiff
$P - <<'PY' || exit 1
import importlib, sys
missing = []
for name in ("torch", "typer", "rich", "numpy", "PIL", "scipy", "h5py", "matplotlib", "cfgdiff"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except ImportError:
        missing.append(name)
if missing:
    sys.exit(f"gpu.sh: missing {', '.join(missing)}; carry wheels as this script's header says")
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu.sh: torch {torch.__version__} sees no GPU")
print("cuda", torch.version.cuda, torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
PY

FAILED=()
step() {  # step NAME SECONDS CMD...: run CMD under a timeout of min(SECONDS, what is left of BUDGET)
    local name=$1 cap=$2 left=$((BUDGET - SECONDS))
    shift 2
    echo "== $name (${SECONDS}s into the run)"
    if [ "$left" -lt 5 ]; then
        echo "gpu.sh: $name skipped: the ${BUDGET}s budget is spent"
        FAILED+=("$name")
        return
    fi
    timeout $((cap < left ? cap : left)) "$@" || { echo "gpu.sh: $name FAILED (exit $?; 124 = timed out)"; FAILED+=("$name"); }
}

W=$(mktemp -d)
export CFGDIFF_INCEPTION_URL=  # offline: never try to download the Inception weights
if ! $P -c 'from cfgdiff.metrics.weights import resolve_weights; print(resolve_weights())'; then
    export CFGDIFF_INCEPTION="$W/inception-random.pt"
    echo "no Inception weights: random stand-ins at $CFGDIFF_INCEPTION"
    $P - "$CFGDIFF_INCEPTION" <<'PY' || exit 1
import sys, torch
from cfgdiff.metrics.inception import FIDInception
g = torch.Generator().manual_seed(0)
state = {}
for name, t in FIDInception().state_dict().items():
    if t.ndim == 4:  # He-scaled convolutions keep the activations O(1) through the ReLUs
        state[name] = torch.randn(t.shape, generator=g) * (2 / t[0].numel()) ** 0.5
    elif name == "output.weight":
        state[name] = torch.randn(t.shape, generator=g) * 0.05
    else:  # batch norm: mean 0, variance 1, shift 0
        state[name] = torch.ones(t.shape) if name.endswith(".var") else torch.zeros(t.shape)
torch.save(state, sys.argv[1])  # cfgdiff's own state-dict format
PY
fi

step "1. adm64 bf16 training MFU" 120 $P bench/train.py --mfu --preset adm64 --batch 128 --steps 20
step "2. guided sampling (adm64, 64px, B=256)" 75 \
    $P bench/sampler_step.py --preset adm64 --res 64 --classes 1000 --batch 256 --steps 10 --repeats 3
step "3. Inception" 75 $P bench/inception.py --images 2048 --batch 256
cd "$W"
step "4a. prepare" 30 $C prepare builtin:shapes --size 32 --limit 2000
step "4b. train" 60 bash -o pipefail -c "$C train --preset tiny --kimg 2 --batch 64 --json | tail -c 400"
step "4c. sample" 45 bash -o pipefail -c "$C sample --w 1 --n 500 --steps 32 --balanced --out s.npz --grid s.png --json | tail -c 300"
$P -c "import h5py, numpy as np; f = h5py.File('data/shapes32.h5', 'r'); np.savez('ref.npz', arr_0=f['images'][:1000])"
step "4d. score" 45 bash -o pipefail -c "$C score s.npz --ref ref.npz --json | tail -c 600"
step "4e. sweep" 60 bash -o pipefail -c "$C sweep --w 0,2 -n 200 --steps 16 --ref ref.npz --out-dir sw --json | tail -c 600"
step "4f. demo (train and score in one process)" 90 \
    bash -o pipefail -c "$C demo --out-dir demo --kimg 1 --n 20 --steps 4 --w 0,1 --json | tail -c 600"
cd - >/dev/null
step "5. adm64 bf16 training MFU, torch.compile" 180 $P bench/train.py --mfu --preset adm64 --batch 128 --steps 20 --compile
echo "gpu.sh: ${SECONDS}s; failed: ${FAILED[*]:-none}"
[ ${#FAILED[@]} -eq 0 ]
