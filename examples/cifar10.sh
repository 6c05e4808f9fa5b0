#!/usr/bin/env bash
# The CIFAR-10 results pipeline of docs/results.md (issues 14 and 26), with cfgdiff's own commands only:
#   1. prepare the train (50k) and test (10k) splits at 32²;
#   2. train on the train split (every snapshot kept: an early one guides autoguidance), and the width
#      check: a wider net (WIDE_SET) against the main run's snapshot at equal CPU time, scored alike;
#   3. the same N class-balanced seeds and the test split's statistics for every row, each row again
#      from SETS - 1 disjoint seed sets (error bars), with FID, KID, precision/recall, NFE and wall time:
#      - the paper's sampler (ancestral, T = 256) at w ∈ PAPER_W;
#      - dpmpp-2m-sde T = 16 (paper grid) and dpmpp-2m T = 20 (linear grid) at the same w;
#      - the guidance methods at their small searches on METHOD_SAMPLER (the stochastic 2M: on this
#        model the deterministic solvers sit far behind, FID 141 against 51 unguided): cfg's interval,
#        APG's η and momentum, autoguidance with an early EMA snapshot as the guide (sweep --guide-with);
#        CFG++'s λ on ddim, the one sampler that takes it, beside CFG on ddim;
#      - the distilled student (cfgdiff distill) at 8 and 4 steps (9 and 5 evaluations);
#   4. the Fig. 3 grid of the same seeds at growing w with GRID_SAMPLER;
#   5. the page's tables and figures (examples/cifar10_report.py): each row on every seed set, each line
#      at its best w, FID against w and NFE with the seed sets' spread as bars, the loss curve; the fast
#      solver's NOISE_W points on NOISE_SETS seed sets give FID's seed std at N.
# Every step's wall time (and peak memory, via /usr/bin/time -v where it exists) goes to $WORK/times.log.
# Rerunning resumes: prepare, train and distill resume, sweeps compute only their missing rows, and a run
# whose final EMA file is there is not trained again.
#
# The default WORK is results/cifar10, the page's own files, committed (results/cifar10/README.md): run
# from the repository's root, the script computes only what the folder lacks. WORK=elsewhere starts afresh.
#
#   bash examples/cifar10.sh                          # the defaults below
#   WORK=/tmp/c10 KIMG=20 N=100 DISTILL_KIMG=2 TINY_KIMG=20 WIDE_KIMG=2 WIDTH_N=100 bash examples/cifar10.sh  # every step, quickly
set -euo pipefail

CFGDIFF=${CFGDIFF:-cfgdiff}
DATA=${DATA:-../shared/data/cifar10-jpg.tar.gz}
WORK=${WORK:-results/cifar10}
PRESET=${PRESET:-tiny}          # see docs/results.md for the presets and widths tried
KIMG=${KIMG:-700}               # training length; about 2 h of 2 free CPU cores for tiny at 32²
TRAIN_SET=${TRAIN_SET:-}        # extra train flags, e.g. "--set model.model_channels=48"
N=${N:-1000}                    # samples a point (a multiple of 10: class-balanced); seed set k: (k-1)N..kN-1
SETS=${SETS:-2}                 # disjoint seed sets per row (the first in <name>/, set k in <name>-seeds<k>/)
BATCH=${BATCH:-250}             # sampling / Inception batch per process
FAST_SAMPLER=${FAST_SAMPLER:-dpmpp-2m}
FAST_STEPS=${FAST_STEPS:-20}
FAST_W=${FAST_W:-0,0.1,0.2,0.3,0.5,1,2,3,4,6,8}
PAPER_STEPS=${PAPER_STEPS:-256}
PAPER_W=${PAPER_W:-0,0.3,1,2,4} # the w of the samplers' rows (the paper's sampler and the fast solvers)
METHOD_W=${METHOD_W:-0.3,1,2,4} # the w of the guidance methods' rows (at w = 0 each is the unguided sweep row)
METHOD_SAMPLER=${METHOD_SAMPLER:-dpmpp-2m-sde}  # the sampler the methods are compared on, and its T
METHOD_STEPS=${METHOD_STEPS:-16}
SDE_W=${SDE_W:-0,0.3,0.5,1,1.5,2,4}  # dpmpp-2m-sde's w: the paper's, and finer where its FID is lowest
NOISE_W=${NOISE_W:-0.3,1}       # (fast-solver curve) points sampled again from disjoint seeds,
NOISE_SETS=${NOISE_SETS:-5}     # in this many seed sets in all: FID's seed std at N
INTERVALS=${INTERVALS:--3.4:2.6,-5:5,0:10}  # guidance intervals in λ searched (Kynkäänniemi et al.'s first)
# APG's settings searched, flag sets split by ";": η at the default momentum and norm cap, then η = 0
# without momentum (Δx̂ = -(σ/α)(ε_c - ε_u), and σ/α = e^10 at the grid's first point λ = -20 against about
# 9.5 at the next: a β = -0.75 momentum buffer keeps that first update for the whole run; docs/sample.md)
APG_SEARCH=${APG_SEARCH:---apg-eta=0,1;--apg-eta=0 --apg-momentum=0}
CFGPP_W=${CFGPP_W:-0.2,0.4,0.6,0.8,1}  # CFG++'s λ searched (its w; ddim only)
GUIDE_KIMGS=${GUIDE_KIMGS:-10,80}  # autoguidance's guides searched: the run's EMA snapshots nearest these kimg
DISTILL_KIMG=${DISTILL_KIMG:-40}  # per distillation stage and round
GRID_SAMPLER=${GRID_SAMPLER:-dpmpp-2m-sde}  # the Fig. 3 grid's sampler: the rows' best (lowest FID), and
GRID_STEPS=${GRID_STEPS:-16}                # its T
GRID_CLASSES=${GRID_CLASSES:-1,3,7,8}  # automobile, cat, horse, ship: the Fig. 3 grid's columns
GRID_W=${GRID_W:-0,0.3,1,2,4}
WIDE_SET=${WIDE_SET:---set model.model_channels=64}  # the wider net compared with $PRESET at equal CPU time
# ... trained to WIDE_KIMG while the main run trains to TINY_KIMG: the kimg each reached when both trained side by
# side, one thread each, for the same 2.6 h (2026-12-07: 30 and 80 kimg); both scored alike. WIDE_KIMG=0 skips it.
WIDE_KIMG=${WIDE_KIMG:-30}
TINY_KIMG=${TINY_KIMG:-80}
WIDTH_N=${WIDTH_N:-500}
INCEPTION=${INCEPTION:-}        # Inception weights file (IS needs the full weights; default: cfgdiff's search)
# Sampling and scoring on several processes, e.g. LAUNCH="torchrun --standalone --nproc_per_node 2" with
# CFGDIFF=$(which cfgdiff) (torchrun runs a script path); OMP_NUM_THREADS=1 for one core each on a CPU.
# For several GPUs. On a 2-core CPU one process on both cores is faster: 500 guided samples of the tiny
# net at 32², T = 16 (16,000 evaluations), took 62-68 s in one process against 96 s as two (2026-12-07).
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

ema_near() {  # ema_near RUN KIMG: the run's EMA snapshot nearest KIMG thousand images
    python3 - "$1" "$2" <<'PY'
import json, pathlib, sys
run, want = pathlib.Path(sys.argv[1]), float(sys.argv[2]) * 1000
batch = json.loads((run / "config.json").read_text())["batch"]
print(min(sorted(run.glob("ema-*.pt")), key=lambda p: abs(int(p.stem.split("-")[1]) * batch - want)))
PY
}

step prepare-train "$CFGDIFF" prepare "$DATA" --split train --size 32 --out "$TRAIN_H5"
step prepare-test "$CFGDIFF" prepare "$DATA" --split test --size 32 --out "$TEST_H5"

final_ema() {  # final_ema RUN KIMG: the EMA file a run of KIMG thousand images ends with (loop.total_steps)
    python3 - "$1" "$2" <<'PY'
import json, math, pathlib, sys
run, kimg = pathlib.Path(sys.argv[1]), float(sys.argv[2])
batch = json.loads((run / "config.json").read_text())["batch"] if (run / "config.json").exists() else 1
print(run / f"ema-{max(1, math.ceil(kimg * 1000 / batch - 1e-9)):08d}.pt")
PY
}

if [[ -f "$(final_ema "$RUN" "$KIMG")" ]]; then  # trained to KIMG (the committed run keeps only its EMA files)
    echo "train: $RUN is trained to $KIMG kimg ($(final_ema "$RUN" "$KIMG"))" | tee -a "$LOG"
else
    # shellcheck disable=SC2086  # TRAIN_SET is a list of flags
    step train "$CFGDIFF" train --data "$TRAIN_H5" --preset "$PRESET" --kimg "$KIMG" --run-dir "$RUN" --keep 100000 $TRAIN_SET
fi

COMMON=(--balanced --ref "$TEST_H5" --batch-per-device "$BATCH" "${INC[@]}")

# the width check: the main run's snapshot at TINY_KIMG against the wider net at WIDE_KIMG (equal CPU time);
# a side scored earlier is not redone (the committed folder keeps its scores, not these snapshots)
if [[ "$WIDE_KIMG" != 0 ]]; then
    if [[ ! -f "$WORK/width/$(basename "$RUN-wide")/sweep.jsonl" && ! -f "$(final_ema "$RUN-wide" "$WIDE_KIMG")" ]]; then
        # shellcheck disable=SC2086  # WIDE_SET is a list of flags
        step train-wide "$CFGDIFF" train --data "$TRAIN_H5" --preset "$PRESET" --kimg "$WIDE_KIMG" --run-dir "$RUN-wide" \
            --keep 100000 $WIDE_SET
    fi
    for pair in "$RUN:$TINY_KIMG" "$RUN-wide:$WIDE_KIMG"; do
        run=${pair%:*} kimg=${pair##*:}
        [[ -f "$WORK/width/$(basename "$run")/sweep.jsonl" ]] && continue
        ema=$(ema_near "$run" "$kimg")
        step "width-$(basename "$run")" $LAUNCH "$CFGDIFF" sweep "$ema" --sampler dpmpp-2m-sde --steps 16 --w 1 \
            -n "$WIDTH_N" --out-dir "$WORK/width/$(basename "$run")" "${COMMON[@]}"
    done
fi
seed_set() {  # seed_set NAME K: seed set K's folder (NAME itself for the first) and its seeds
    local k=$2
    if [[ $k == 1 ]]; then echo "$WORK/$1 0-$((N - 1))"; else echo "$WORK/$1-seeds$k $(((k - 1) * N))-$((k * N - 1))"; fi
}
sets() {  # sets NAME CHECKPOINT ARGS...: a sweep on each of the first $SETS seed sets, into NAME, NAME-seeds2, ...
    local name=$1 checkpoint=$2 k out seeds
    shift 2
    for ((k = 1; k <= SETS; k++)); do
        read -r out seeds <<<"$(seed_set "$name" "$k")"
        step "$(basename "$out")" $LAUNCH "$CFGDIFF" sweep "$checkpoint" -n "$N" --seeds "$seeds" --out-dir "$out" \
            "${COMMON[@]}" "$@"
    done
}
best_flags() {  # best_flags FOLDER: the flags that give FOLDER's line with the lowest FID (any w): its
    # guidance interval, or every setting of its guidance method (--apg-eta=0 --apg-momentum=0 ...)
    python3 - "$1" <<'PY'
import json, pathlib, sys
rows = [json.loads(line) for line in (pathlib.Path(sys.argv[1]) / "sweep.jsonl").read_text().splitlines() if line.strip()]
best = min((r for r in rows if r.get("fid") is not None), key=lambda r: r["fid"])
flags = ["--guidance-interval={:g}:{:g}".format(*best["guidance_interval"])] if best.get("guidance_interval") else []
flags += [f"--{best['guidance']}-{k.replace('_', '-')}={v:g}" for k, v in sorted(best["guidance_settings"].items())]
print(" ".join(flags))
PY
}
search() {  # search NAME CANDIDATES CHECKPOINT ARGS...: seed set 1 on each candidate (CANDIDATES: flag sets
    # split by ";", each one sweep, e.g. "--apg-eta=0,1;--apg-momentum=0": the search the page shows),
    # then sets 2..SETS on the best line only (its error bar)
    local name=$1 candidates=$2 checkpoint=$3 k out seeds best c
    shift 3
    read -r out seeds <<<"$(seed_set "$name" 1)"
    IFS=";" read -r -a cands <<<"$candidates"
    for c in "${cands[@]}"; do
        # shellcheck disable=SC2086  # a candidate is a list of flags
        step "$name" $LAUNCH "$CFGDIFF" sweep "$checkpoint" -n "$N" --seeds "$seeds" --out-dir "$out" "${COMMON[@]}" "$@" $c
    done
    best=$(best_flags "$out")
    echo "$name: best $best" | tee -a "$LOG"
    for ((k = 2; k <= SETS; k++)); do
        read -r out seeds <<<"$(seed_set "$name" "$k")"
        # shellcheck disable=SC2086  # the best line's flags
        step "$(basename "$out")" $LAUNCH "$CFGDIFF" sweep "$checkpoint" -n "$N" --seeds "$seeds" --out-dir "$out" \
            "${COMMON[@]}" "$@" $best
    done
}
# the curve: the fast solver over every w; then NOISE_W again on seed sets 2..NOISE_SETS
step sweep-fast $LAUNCH "$CFGDIFF" sweep "$RUN" --sampler "$FAST_SAMPLER" --steps "$FAST_STEPS" --w "$FAST_W" \
    -n "$N" --out-dir "$WORK/sweep" "${COMMON[@]}"
for ((k = 2; k <= NOISE_SETS; k++)); do
    read -r out seeds <<<"$(seed_set sweep "$k")"
    step "sweep-seeds$k" $LAUNCH "$CFGDIFF" sweep "$RUN" --sampler "$FAST_SAMPLER" --steps "$FAST_STEPS" \
        --w "$NOISE_W" -n "$N" --seeds "$seeds" --out-dir "$out" "${COMMON[@]}"
done
# the two fast solvers at the paper's w (the paper's own sampler, the slowest rows, comes last)
sets sweep-2m-sde "$RUN" --sampler dpmpp-2m-sde --steps 16 --w "$SDE_W"
sets sweep-2m-linear "$RUN" --sampler dpmpp-2m --steps 20 --grid linear --w "$PAPER_W"
# autoguidance: an earlier EMA snapshot of the same run guides (Karras et al. 2024) in place of the ∅ pass;
# the snapshot is its setting, searched on seed set 1 (one folder per guide), the best again on sets 2..SETS
for g in ${GUIDE_KIMGS//,/ }; do
    read -r out seeds <<<"$(seed_set "sweep-autoguidance-$g" 1)"
    step "sweep-autoguidance-$g" $LAUNCH "$CFGDIFF" sweep "$RUN" -n "$N" --seeds "$seeds" --out-dir "$out" "${COMMON[@]}" \
        --sampler "$METHOD_SAMPLER" --steps "$METHOD_STEPS" --w "$METHOD_W" --guide-with "$(ema_near "$RUN" "$g")"
done
g=$(python3 - "$WORK" "$GUIDE_KIMGS" <<'PY'
import json, pathlib, sys
work, guides = pathlib.Path(sys.argv[1]), sys.argv[2].split(",")
def best(g):
    rows = [json.loads(x) for x in (work / f"sweep-autoguidance-{g}" / "sweep.jsonl").read_text().splitlines() if x]
    return min(r["fid"] for r in rows if r.get("fid") is not None)
print(min(guides, key=best))
PY
)
echo "autoguidance: best guide the snapshot nearest $g kimg ($(ema_near "$RUN" "$g"))" | tee -a "$LOG"
for ((k = 2; k <= SETS; k++)); do
    read -r out seeds <<<"$(seed_set "sweep-autoguidance-$g" "$k")"
    step "$(basename "$out")" $LAUNCH "$CFGDIFF" sweep "$RUN" -n "$N" --seeds "$seeds" --out-dir "$out" "${COMMON[@]}" \
        --sampler "$METHOD_SAMPLER" --steps "$METHOD_STEPS" --w "$METHOD_W" --guide-with "$(ema_near "$RUN" "$g")"
done
# APG searched on METHOD_SAMPLER (its CFG is sweep-2m-sde's rows on the same seeds); the other methods
# follow the distilled students
search sweep-apg "$APG_SEARCH" "$RUN" --sampler "$METHOD_SAMPLER" --steps "$METHOD_STEPS" --w "$METHOD_W" \
    --guidance apg
# the distilled student: stage 1, then rounds 17 -> 9 -> 5 (8 and 4 steps: 9 and 5 evaluations)
# (skipped when the last student's final EMA is here: the committed folders keep the students' final EMA
# files, not the training checkpoints a rerun would resume from)
if [[ ! -f "$(final_ema "$WORK/distill/steps-5" "$DISTILL_KIMG")" ]]; then
    step distill "$CFGDIFF" distill "$RUN" --steps 5 --rounds 2 --kimg "$DISTILL_KIMG" --w-range "0:4" \
        --out "$WORK/distill"
fi
for t in 9 5; do  # each student with its own sampler: ddim on its grid, one evaluation a step
    sets "sweep-student$t" "$WORK/distill/steps-$t" --w "$PAPER_W"
done
# CFG++ (ddim only, with CFG on ddim beside it) and the guidance interval on METHOD_SAMPLER
sets sweep-cfgpp "$RUN" --sampler ddim --steps "$FAST_STEPS" --w "$CFGPP_W" --guidance cfgpp
sets sweep-ddim "$RUN" --sampler ddim --steps "$FAST_STEPS" --w "$PAPER_W"
search sweep-interval "--guidance-interval=$INTERVALS" "$RUN" --sampler "$METHOD_SAMPLER" \
    --steps "$METHOD_STEPS" --w "$METHOD_W"

# Fig. 3: the same seeds 0..15 (four a class, one class a column) at growing w
mkdir -p "$WORK/grid"
IFS=, read -r -a grid_ws <<<"$GRID_W"
for w in "${grid_ws[@]}"; do
    [[ -f "$WORK/grid/w$w.png" ]] && continue
    step "grid-w$w" "$CFGDIFF" sample "$RUN" --w "$w" --sampler "$GRID_SAMPLER" --steps "$GRID_STEPS" -n 16 \
        --seeds 0-15 --classes "$GRID_CLASSES" --out "$WORK/grid/w$w.npz" --preview "$WORK/grid/w$w.png"
done

# the paper's sampler at the paper's w: 256 steps, about 1.3 h a seed set on 2 CPU cores
sets sweep-paper "$RUN" --sampler ancestral --steps "$PAPER_STEPS" --w "$PAPER_W"

# the page's tables and figures, from the files above only
PYTHON=${PYTHON:-python3}   # a python with cfgdiff installed
step report "$PYTHON" "$(dirname "$0")/cifar10_report.py" "$WORK" "$RUN" --out "$WORK/report" --grid-classes "$GRID_CLASSES"

echo "results: $WORK/report/ (tables.md, fid_vs_w.png, fid_vs_nfe.png, fig3.png, training.md, loss.png, width.md)," \
    "$WORK/sweep*/table.md and sweep.jsonl, $WORK/distill/, $WORK/grid/; wall times: $LOG"
