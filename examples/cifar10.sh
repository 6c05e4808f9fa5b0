#!/usr/bin/env bash
# The CIFAR-10 results pipeline of docs/results.md (issue 14), with cfgdiff's own commands only:
#   1. prepare the train (50k) and test (10k) splits at 32²;
#   2. train on the train split;
#   3. sweep w with the fast solver (dpmpp-2m, ~20 steps), N class-balanced samples a point, the same
#      seeds throughout, scored against the test split; two points again from a disjoint seed set
#      (error bars); the paper's ancestral sampler at T = 256 against the fast solver on the same
#      PAPER_N seeds (with that N's seed noise); a Fig. 3 grid of the same seeds at growing w.
# Every step's wall time (and peak memory, via /usr/bin/time -v where it exists) goes to $WORK/times.log.
# Rerunning resumes: prepare and train resume, sweeps compute only their missing rows.
#
#   bash examples/cifar10.sh                          # the defaults below
#   KIMG=100 PRESET=tiny N=1000 PAPER_N=200 bash examples/cifar10.sh
set -euo pipefail

CFGDIFF=${CFGDIFF:-cfgdiff}
DATA=${DATA:-../shared/data/cifar10-jpg.tar.gz}
WORK=${WORK:-work/cifar10}
PRESET=${PRESET:-tiny}          # see docs/results.md for the presets and widths tried
KIMG=${KIMG:-200}               # training length; about 2 h of 2 CPU cores for tiny at 32²
TRAIN_SET=${TRAIN_SET:-}        # extra train flags, e.g. "--set model.model_channels=48"
N=${N:-2000}                    # samples a point (a multiple of 10: class-balanced)
BATCH=${BATCH:-250}             # sampling / Inception batch per process
FAST_SAMPLER=${FAST_SAMPLER:-dpmpp-2m}
FAST_STEPS=${FAST_STEPS:-20}
FAST_W=${FAST_W:-0,0.1,0.2,0.3,0.5,1,2,3,4}
PAPER_STEPS=${PAPER_STEPS:-256}
PAPER_W=${PAPER_W:-0,0.3,1,4}
PAPER_N=${PAPER_N:-$N}          # samples a point of the T = 256 check (512 evaluations a sample: the cost)
NOISE_W=${NOISE_W:-0.3,1}       # points sampled again from disjoint seeds, for the error bars
GRID_CLASSES=${GRID_CLASSES:-1,3,7,8}  # automobile, cat, horse, ship: the Fig. 3 grid's columns
GRID_W=${GRID_W:-0,0.3,1,2,4}
INCEPTION=${INCEPTION:-}        # Inception weights file (IS needs the full weights; default: cfgdiff's search)
# Sampling and scoring on several processes, e.g. LAUNCH="torchrun --standalone --nproc_per_node 2" with
# CFGDIFF=$(which cfgdiff) (torchrun runs a script path); OMP_NUM_THREADS=1 for one core each on a CPU.
LAUNCH=${LAUNCH:-}

mkdir -p "$WORK"
LOG="$WORK/times.log"
TRAIN_H5=${TRAIN_H5:-$WORK/cifar10-train32.h5}
TEST_H5=${TEST_H5:-$WORK/cifar10-test32.h5}
RUN=${RUN:-$WORK/runs/$PRESET}
INC=()
[[ -n "$INCEPTION" ]] && INC=(--inception "$INCEPTION")

step() {  # step NAME CMD...: run CMD, append its wall time (and /usr/bin/time -v's peak RSS) to $LOG
    local name=$1
    shift
    local t0 t1
    t0=$(date +%s)
    echo "[$(date -u +%FT%TZ)] $name: $*" | tee -a "$LOG"
    if [[ -x /usr/bin/time ]]; then
        /usr/bin/time -v -o "$WORK/.time-$name" "$@"
        grep -E "Elapsed|Maximum resident" "$WORK/.time-$name" | sed "s/^/    $name: /" >>"$LOG"
    else
        "$@"
    fi
    t1=$(date +%s)
    echo "[$(date -u +%FT%TZ)] $name: done in $((t1 - t0)) s" | tee -a "$LOG"
}

step prepare-train "$CFGDIFF" prepare "$DATA" --split train --size 32 --out "$TRAIN_H5"
step prepare-test "$CFGDIFF" prepare "$DATA" --split test --size 32 --out "$TEST_H5"

# shellcheck disable=SC2086  # TRAIN_SET is a list of flags
step train "$CFGDIFF" train --data "$TRAIN_H5" --preset "$PRESET" --kimg "$KIMG" --run-dir "$RUN" $TRAIN_SET

COMMON=(--balanced --ref "$TEST_H5" --batch-per-device "$BATCH" "${INC[@]}")
# the curve: the fast solver over every w, N samples a point, seeds 0..N-1
step sweep-fast $LAUNCH "$CFGDIFF" sweep "$RUN" --sampler "$FAST_SAMPLER" --steps "$FAST_STEPS" --w "$FAST_W" \
    -n "$N" --out-dir "$WORK/sweep" "${COMMON[@]}"
# its error bars: two points again from seeds N..2N-1
step sweep-seeds2 $LAUNCH "$CFGDIFF" sweep "$RUN" --sampler "$FAST_SAMPLER" --steps "$FAST_STEPS" --w "$NOISE_W" \
    -n "$N" --seeds "$N-$((2 * N - 1))" --out-dir "$WORK/sweep-seeds2" "${COMMON[@]}"
# the check: the paper's ancestral sampler at T = 256 against the fast solver on the same PAPER_N seeds
step sweep-paper $LAUNCH "$CFGDIFF" sweep "$RUN" --sampler ancestral --steps "$PAPER_STEPS" --w "$PAPER_W" \
    -n "$PAPER_N" --out-dir "$WORK/sweep-check" "${COMMON[@]}"
step sweep-check-fast $LAUNCH "$CFGDIFF" sweep "$RUN" --sampler "$FAST_SAMPLER" --steps "$FAST_STEPS" --w "$PAPER_W" \
    -n "$PAPER_N" --out-dir "$WORK/sweep-check" "${COMMON[@]}"
# ... and the seed noise at that N, from seeds PAPER_N..2·PAPER_N-1
step sweep-check-seeds2 $LAUNCH "$CFGDIFF" sweep "$RUN" --sampler "$FAST_SAMPLER" --steps "$FAST_STEPS" --w "$PAPER_W" \
    -n "$PAPER_N" --seeds "$PAPER_N-$((2 * PAPER_N - 1))" --out-dir "$WORK/sweep-check-seeds2" "${COMMON[@]}"

# Fig. 3: the same seeds 0..15 (four a class, one class a column) at growing w
mkdir -p "$WORK/grid"
IFS=, read -r -a grid_ws <<<"$GRID_W"
for w in "${grid_ws[@]}"; do
    [[ -f "$WORK/grid/w$w.png" ]] && continue
    step "grid-w$w" "$CFGDIFF" sample "$RUN" --w "$w" --sampler "$FAST_SAMPLER" --steps "$FAST_STEPS" -n 16 \
        --seeds 0-15 --classes "$GRID_CLASSES" --out "$WORK/grid/w$w.npz" --preview "$WORK/grid/w$w.png"
done

echo "results: $WORK/sweep/table.md, $WORK/sweep-seeds2/table.md, $WORK/sweep-check/table.md," \
    "$WORK/sweep-check-seeds2/table.md, $WORK/grid/; wall times: $LOG"
