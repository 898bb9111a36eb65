#!/usr/bin/env bash
# shellcheck disable=SC2086  # PYTHON, EXTRA_ARGS and $curve / $common / $only may hold several words
# The paper's findings and their mechanism at a scale a 2-core CPU runs (studies/small/README.md): cheetah-run with and
# without distractors, every method, with the settings studies/small/tune.sh chose on a separate tuning seed.
#
#   bash studies/small/reproduce.sh                                  # -> runs/small/{data,data-vanilla,runs,report}
#   OUT=studies/small/results bash studies/small/reproduce.sh     # how the committed report was made
#
# Steps, each skipped when its output exists (the same command resumes): 1. the data ($DATA, $DATA_VANILLA; the
# labeled subset from the first 80%, the probe's validation and test trajectories stay unlabeled); 2. the runs, $LANES
# at a time (scripts/jobs.sh), in $RUNS in scripts/plot_results.py's layout; 3. the report and run-info.md into $OUT.
# Settings (environment variables, defaults in brackets): SMALL_DIR [runs/small], OUT [$SMALL_DIR/report],
# EXPERT [../shared/experts/cheetah-run-expert], NUM_TRAJ [20], NUM_EVAL [3], STEPS [1000], BUDGET [2],
# SEEDS ["0 1 2 3 4 5 6 7 8 9"], RETURN_SEEDS ["none"] (the seeds that also train and evaluate the policies, e.g. "0":
# about 12 more minutes; at this scale no policy learns, studies/small/README.md), CONFIG_DIR
# [studies/small/configs], LANES [2], PYTHON [python], PRECISION [fp32] (bf16 autocast, as the committed run: about
# 0.6x the wall time on a CPU with AVX512-BF16, 7x slower on an AVX2-only one), NOAUG [0] (1: also LAOM without
# augmentations), ONLY (the variants to run; unset: "lapo lapo_vanilla laom laom_labels lapo_mask laom_noaug idm bc
# bc_full", those the findings and the mechanism compare; empty: all, laom_vanilla included), EXTRA_ARGS (appended to
# every training command), RIDGE_EVERY [155] (updates between the points of the probe curves), ONLY_DATA=1 (stop
# after step 1).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SMALL_DIR=${SMALL_DIR:-runs/small}
OUT=${OUT:-$SMALL_DIR/report}
EXPERT=${EXPERT:-../shared/experts/cheetah-run-expert}
NUM_TRAJ=${NUM_TRAJ:-20}
NUM_EVAL=${NUM_EVAL:-3}
STEPS=${STEPS:-1000}
BUDGET=${BUDGET:-2}
SEEDS=${SEEDS:-"0 1 2 3 4 5 6 7 8 9"}
RETURN_SEEDS=${RETURN_SEEDS:-none}
CONFIG_DIR=${CONFIG_DIR:-studies/small/configs}
EXTRA_ARGS=${EXTRA_ARGS:-}
PRECISION=${PRECISION:-fp32}
NOAUG=${NOAUG:-0}
ONLY=${ONLY-"lapo lapo_vanilla laom laom_labels lapo_mask laom_noaug idm bc bc_full"}
RIDGE_EVERY=${RIDGE_EVERY:-155}
LANES=${LANES:-2}
export MUJOCO_GL=${MUJOCO_GL:-egl}
PARALLEL=$LANES JOB_THREADS=${OMP_NUM_THREADS:-1}  # the runs one thread each, LANES at once
source scripts/jobs.sh
cores=$(nproc 2>/dev/null || echo 2)
DATA=$SMALL_DIR/data
DATA_VANILLA=$SMALL_DIR/data-vanilla
RUNS=$SMALL_DIR/runs
start=$SECONDS
timings="$SMALL_DIR/timings.txt"

if [[ ! -d "$EXPERT" ]]; then
    echo "error: EXPERT=$EXPERT is not a folder; point it at the released cheetah-run expert (config.pt, checkpoint.pt)" >&2
    exit 2
fi
for config in lapo laom laom-labels lapo-mask idm bc bc-full; do
    if [[ ! -f "$CONFIG_DIR/$config.yaml" ]]; then
        echo "error: CONFIG_DIR=$CONFIG_DIR has no $config.yaml" >&2
        exit 2
    fi
done
mkdir -p "$DATA" "$DATA_VANILLA" "$RUNS" "$OUT"
echo "# $(date '+%F %T') bash studies/small/reproduce.sh (NUM_TRAJ=$NUM_TRAJ STEPS=$STEPS BUDGET=$BUDGET SEEDS=\"$SEEDS\")" \
    >>"$timings"

# ---------------------------------------------------------------- 1. data
t=$SECONDS
collect() {  # save_path num_trajectories difficulty split seed [extra args]: every frame's distractor state too
    $PYTHON -m scripts.data_collection.collect_data --checkpoint_path="$EXPERT" --dcs_backgrounds_path=builtin \
        --save_path="$1" --num_trajectories="$2" --max_episode_steps="$STEPS" --dcs_difficulty="$3" \
        --dcs_backgrounds_split="$4" --dcs_img_hw=64 --seed="$5" --num_workers="$cores" "${@:6}"
}
subset() {  # save_path args...: a labeled subset of the distracted set, written whole or not at all
    [[ -f "$1" ]] || $PYTHON -m scripts.sample_labeled_data --data_path="$DATA/cheetah-run.hdf5" --save_path="$1" \
        --chunk_size="$STEPS" "${@:2}"
}
set -e
echo "== data: $NUM_TRAJ distracted + $NUM_TRAJ vanilla + $NUM_EVAL evaluation trajectories of $STEPS steps (the collector resumes a partial file)"
collect "$DATA/cheetah-run.hdf5" "$NUM_TRAJ" scale_easy_video_hard train 0 --record_masks=true
collect "$DATA_VANILLA/cheetah-run.hdf5" "$NUM_TRAJ" vanilla train 0
collect "$DATA/cheetah-run-eval.hdf5" "$NUM_EVAL" scale_easy_video_hard val 100
# The probe's split (src/probes.py): last tenth test, the tenth before validation; the labeled subset from the rest.
k=$((NUM_TRAJ / 10 > 0 ? NUM_TRAJ / 10 : 1))
subset "$DATA/cheetah-run-labeled-1000x$BUDGET.hdf5" --num_trajectories="$BUDGET" --first=$((NUM_TRAJ - 2 * k)) --seed=0
subset "$DATA/cheetah-run-val.hdf5" --num_trajectories="$k" \
    --indices="$(seq -s, $((NUM_TRAJ - 2 * k)) $((NUM_TRAJ - k - 1)))"
set +e
echo "data: $((SECONDS - t)) s" | tee -a "$timings"
[[ "${ONLY_DATA:-0}" == 1 ]] && exit 0

# ---------------------------------------------------------------- 2. runs
t=$SECONDS
full=$DATA/cheetah-run.hdf5
labeled=$DATA/cheetah-run-labeled-1000x$BUDGET.hdf5
ev=$DATA/cheetah-run-eval.hdf5
curve="--lapo.ridge_probe_every=$RIDGE_EVERY"
# Every seed trains every LAM (F1-F3, F5); the seeds of RETURN_SEEDS also train and evaluate the policies (F4). The
# others run with --lam_only / --idm_only in run directories of their own (suffix -lam).
pick() {  # the variants ONLY names (all when ONLY is empty)
    [[ -z "$ONLY" || " $ONLY " == *" $1 "* ]]
}
for seed in $SEEDS; do
    common="--seed=$seed --precision=$PRECISION $EXTRA_ARGS"
    at() { echo "$RUNS/$1/cheetah-run/budget$BUDGET/seed$seed"; }
    lam_at=-lam  # the run directory of a LAPO / LAOM / IDM run without its returns
    only="--lam_only=true"
    if [[ " $RETURN_SEEDS " == *" $seed "* ]]; then
        lam_at="" only=""
    fi
    lam=(--lapo.data_path="$full" --lapo.eval_data_path="$ev")
    policy=(--bc.data_path="$full" --decoder.data_path="$labeled")
    vanilla=(--lam_only=true --lapo.data_path="$DATA_VANILLA/cheetah-run.hdf5")
    # the longest first, so that the two lanes end together
    pick lapo && job "$(at lapo)$lam_at" train_lapo --config_path="$CONFIG_DIR/lapo.yaml" $curve $only "${lam[@]}" \
        "${policy[@]}" $common
    pick laom_labels && job "$(at laom_labels)$lam_at" train_laom_labels --config_path="$CONFIG_DIR/laom-labels.yaml" \
        $curve $only --lapo.labeled_data_path="$labeled" "${lam[@]}" "${policy[@]}" $common
    pick lapo_vanilla && job "$(at vanilla/lapo)" train_lapo --config_path="$CONFIG_DIR/lapo.yaml" $curve "${vanilla[@]}" \
        $common
    pick laom && job "$(at laom)$lam_at" train_laom --config_path="$CONFIG_DIR/laom.yaml" $curve $only "${lam[@]}" \
        "${policy[@]}" $common
    pick laom_vanilla && job "$(at vanilla/laom)" train_laom --config_path="$CONFIG_DIR/laom.yaml" $curve "${vanilla[@]}" \
        $common
    pick lapo_mask && job "$(at lapo_mask)" train_lapo_mask --config_path="$CONFIG_DIR/lapo-mask.yaml" $curve \
        --lam_only=true --lapo.masks_path="$DATA/cheetah-run-masks.hdf5" "${lam[@]}" $common
    [[ $NOAUG == 1 ]] && pick laom_noaug && job "$(at noaug/laom)" train_laom --config_path="$CONFIG_DIR/laom.yaml" \
        $curve --lam_only=true --lapo.use_aug=false "${lam[@]}" $common
    pick idm && job "$(at idm)$lam_at" train_idm --config_path="$CONFIG_DIR/idm.yaml" ${only:+--idm_only=true} \
        --idm.data_path="$labeled" --idm.eval_data_path="$ev" --bc.data_path="$full" $common
    if [[ -z $only ]]; then
        pick bc && job "$(at bc)" train_bc --config_path="$CONFIG_DIR/bc.yaml" --bc.data_path="$labeled" $common
        pick bc_full && job "$RUNS/bc_full/cheetah-run/full/seed$seed" train_bc --config_path="$CONFIG_DIR/bc-full.yaml" \
            --bc.data_path="$full" $common
    fi
done
mapfile -t queued < <(queued_jobs)  # run_jobs empties the queue
echo "runs: $(wc -w <<<"$SEEDS") seeds; returns for seeds $RETURN_SEEDS; $JOB_THREADS thread(s) each"
run_jobs runs "$RUNS"
status=$?
found=0  # of the runs queued above (not the -lam runs an earlier RETURN_SEEDS left beside them)
for dir in "${queued[@]}"; do
    [[ -f "$dir/results.json" ]] && found=$((found + 1))
done
echo "runs: $((SECONDS - t)) s ($found of ${#queued[@]} runs finished)" | tee -a "$timings"

# ---------------------------------------------------------------- 3. report
t=$SECONDS
$PYTHON -m scripts.plot_results --runs_dir "$RUNS" --out "$OUT/sweep" --normalize_by=bc_full >/dev/null || status=1
$PYTHON -m studies.small.pixel_ceiling --data_path "$DATA/cheetah-run.hdf5" --out "$OUT/pixel_ceiling.json" || status=1
$PYTHON -m studies.small.pixel_ceiling --data_path "$DATA_VANILLA/cheetah-run.hdf5" \
    --out "$OUT/pixel_ceiling_vanilla.json" || status=1
$PYTHON -m studies.small.latent_sources --small_dir "$SMALL_DIR" --seeds "$SEEDS" --budget "$BUDGET" \
    --out "$OUT/latent_sources.json" || status=1
$PYTHON -m studies.small.report --small_dir "$SMALL_DIR" --out "$OUT" --seeds "$SEEDS" --budget "$BUDGET" || status=1
echo "report: $((SECONDS - t)) s" | tee -a "$timings"
total=$((SECONDS - start))
echo "total: $total s" | tee -a "$timings"
{
    echo "# How this report was made"
    echo
    echo "- command: \`bash studies/small/reproduce.sh\` (NUM_TRAJ=$NUM_TRAJ NUM_EVAL=$NUM_EVAL STEPS=$STEPS" \
        "BUDGET=$BUDGET SEEDS=\"$SEEDS\" RETURN_SEEDS=\"$RETURN_SEEDS\" PRECISION=$PRECISION CONFIG_DIR=$CONFIG_DIR LANES=$LANES${EXTRA_ARGS:+ EXTRA_ARGS=\"$EXTRA_ARGS\"})"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "- machine: $cores cores ($(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | xargs)), one thread per run, $LANES runs at a time"
    echo "- wall time of every invocation (a resumed invocation skips what was done; from $timings):"
    echo
    echo '```'
    cat "$timings"
    echo '```'
} >"$OUT/run-info.md"
tail -n 12 "$OUT/verdicts.md" 2>/dev/null
echo "studies/small/reproduce.sh: $total s; report in $OUT (README tables: verdicts.md, summary.json, figures)"
exit $status
