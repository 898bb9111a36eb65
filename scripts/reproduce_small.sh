#!/usr/bin/env bash
# The paper's two central findings at a scale a laptop can run (docs/small-reproduction/README.md): latent-action
# quality (linear-probe MSE, latent -> true action; paper Fig. 5 / 6) and the normalised return after decoding
# (Fig. 1 / 8) of LAPO, LAOM, LAOM + supervision, IDM and BC, normalised by BC on all the data.
#
#   bash scripts/reproduce_small.sh                                  # -> runs/small/{data,runs,report}
#   OUT=docs/small-reproduction bash scripts/reproduce_small.sh     # how the committed report was made
#
# What it does, each step skipped when its output exists, so the same command resumes after an interruption:
#   1. data, with the released cheetah-run expert ($EXPERT) and the DCS port's built-in distractor videos:
#      cheetah-run.hdf5 ($NUM_TRAJ trajectories of $STEPS steps, training videos, seed 0), cheetah-run-eval.hdf5
#      ($NUM_EVAL trajectories with the validation videos: novel distractors, seed 100) and
#      cheetah-run-labeled-1000x$BUDGET.hdf5 ($BUDGET trajectories sampled from the first);
#   2. the runs: LAPO, LAOM, LAOM + supervision, IDM, BC on the labeled subset and BC on all the data, each with the
#      seeds $SEEDS and the configs of $CONFIG_DIR (configs/small: what was scaled and why is in their comments),
#      through the sweep scripts (scripts/sweeps; a finished run, one with results.json, is skipped); two lanes of
#      runs at a time, one thread each;
#   3. the report: scripts/plot_results.py with scores normalised by this sweep's own BC-on-all-data return, and
#      run-info.md (the command, the commit, the machine, the wall time of each step).
# Progress: each lane prints its runs' start / done lines; a run's own log is train.log in its run directory.
#
# Settings (environment variables, defaults in brackets): SMALL_DIR [runs/small], OUT [$SMALL_DIR/report],
# EXPERT [../shared/experts/cheetah-run-expert], NUM_TRAJ [20], NUM_EVAL [3], STEPS [1000], BUDGET [2],
# SEEDS ["0 1"], CONFIG_DIR [configs/small], PYTHON [python], EXTRA_ARGS (appended to every training command).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SMALL_DIR=${SMALL_DIR:-runs/small}
OUT=${OUT:-$SMALL_DIR/report}
EXPERT=${EXPERT:-../shared/experts/cheetah-run-expert}
NUM_TRAJ=${NUM_TRAJ:-20}
NUM_EVAL=${NUM_EVAL:-3}
STEPS=${STEPS:-1000}
BUDGET=${BUDGET:-2}
PYTHON=${PYTHON:-python}
export MUJOCO_GL=${MUJOCO_GL:-egl}
export ENVS=cheetah-run BUDGETS=$BUDGET SEEDS=${SEEDS:-"0 1"} PYTHON EXTRA_ARGS=${EXTRA_ARGS:-}
export DATA_DIR=$SMALL_DIR/data RUNS_DIR=$SMALL_DIR/runs CONFIG_DIR=${CONFIG_DIR:-configs/small}
export PARALLEL=1
cores=$(nproc 2>/dev/null || echo 2)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$((cores / 2 > 0 ? cores / 2 : 1))}  # two lanes share the cores
LANES=("lapo laom_labels" "laom idm bc bc_full")  # about equal work each (LAPO's and LAOM+sup.'s LAMs cost most)
start=$SECONDS
mkdir -p "$DATA_DIR" "$RUNS_DIR" "$OUT"
timings="$SMALL_DIR/timings.txt"
echo "# $(date '+%F %T') bash scripts/reproduce_small.sh (NUM_TRAJ=$NUM_TRAJ STEPS=$STEPS BUDGET=$BUDGET SEEDS=\"$SEEDS\")" \
    >>"$timings"

if [[ ! -d "$EXPERT" ]]; then
    echo "error: EXPERT=$EXPERT is not a folder; point it at the released cheetah-run expert (config.pt, checkpoint.pt)" >&2
    exit 2
fi
for config in lapo laom laom-labels idm bc bc-full; do
    if [[ ! -f "$CONFIG_DIR/$config.yaml" ]]; then
        echo "error: CONFIG_DIR=$CONFIG_DIR has no $config.yaml" >&2
        exit 2
    fi
done

# ---------------------------------------------------------------- 1. data
t=$SECONDS
collect() {  # save_path num_trajectories split seed
    # shellcheck disable=SC2086  # PYTHON may hold several words
    $PYTHON -m scripts.data_collection.collect_data --checkpoint_path="$EXPERT" --dcs_backgrounds_path=builtin \
        --save_path="$1" --num_trajectories="$2" --max_episode_steps="$STEPS" \
        --dcs_difficulty=scale_easy_video_hard --dcs_backgrounds_split="$3" --dcs_img_hw=64 --seed="$4" \
        --num_workers="$cores"
}
set -e
echo "== data: $NUM_TRAJ + $NUM_EVAL trajectories of $STEPS steps into $DATA_DIR (the collector resumes a partial file)"
collect "$DATA_DIR/cheetah-run.hdf5" "$NUM_TRAJ" train 0
collect "$DATA_DIR/cheetah-run-eval.hdf5" "$NUM_EVAL" val 100
labeled="$DATA_DIR/cheetah-run-labeled-1000x$BUDGET.hdf5"
if [[ ! -f "$labeled" ]]; then
    # shellcheck disable=SC2086
    $PYTHON -m scripts.sample_labeled_data --data_path="$DATA_DIR/cheetah-run.hdf5" --save_path="$labeled.tmp" \
        --chunk_size="$STEPS" --num_trajectories="$BUDGET" --seed=0
    mv "$labeled.tmp" "$labeled"
fi
set +e
echo "data: $((SECONDS - t)) s" | tee -a "$timings"

# ---------------------------------------------------------------- 2. runs
t=$SECONDS
lane() {  # name methods
    local name=$1 method status=0 m
    for method in $2; do
        m=$SECONDS
        bash "scripts/sweeps/$method.sh" || status=1
        echo "== lane $name: $method $((SECONDS - m)) s"
    done
    return $status
}
echo "== runs: ${LANES[0]} | ${LANES[1]} (two lanes, $OMP_NUM_THREADS thread(s) each), under $RUNS_DIR"
pids=()
for i in "${!LANES[@]}"; do
    lane "$((i + 1))" "${LANES[$i]}" 2>&1 | sed -u "s/^/[lane $((i + 1))] /" &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
# A lane's failures are printed by its sweep; the pipe hides their exit status, so count results instead.
expected=$((6 * $(wc -w <<<"$SEEDS")))
found=$(find "$RUNS_DIR" -name results.json | wc -l)
[[ "$found" -lt "$expected" ]] && status=1
echo "runs: $((SECONDS - t)) s ($found of $expected runs finished)" | tee -a "$timings"

# ---------------------------------------------------------------- 3. report
t=$SECONDS
# shellcheck disable=SC2086
$PYTHON -m scripts.plot_results --runs_dir "$RUNS_DIR" --out "$OUT" --normalize_by=bc_full || status=1
echo "report: $((SECONDS - t)) s" | tee -a "$timings"
total=$((SECONDS - start))
echo "total: $total s" | tee -a "$timings"
{
    echo "# How this report was made"
    echo
    echo "- command: \`bash scripts/reproduce_small.sh\` (NUM_TRAJ=$NUM_TRAJ NUM_EVAL=$NUM_EVAL STEPS=$STEPS" \
        "BUDGET=$BUDGET SEEDS=\"$SEEDS\" CONFIG_DIR=$CONFIG_DIR${EXTRA_ARGS:+ EXTRA_ARGS=\"$EXTRA_ARGS\"})"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "- machine: $cores cores ($(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | xargs)), $OMP_NUM_THREADS thread(s) per run, two runs at a time"
    echo "- wall time of every invocation (a resumed invocation skips what was done; from $timings):"
    echo
    echo '```'
    cat "$timings"
    echo '```'
} >"$OUT/run-info.md"
echo "reproduce_small: $total s; report in $OUT (results.md, scores.png, probe_mse.png, run-info.md)"
exit $status
