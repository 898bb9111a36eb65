# Shared machinery of the sweep scripts (sourced, not run): settings, data and run naming, the job list, run by
# scripts/jobs.sh or, with LAUNCHER=slurm, as SLURM batch jobs (docs/DISTRIBUTED.md, "Running on a SLURM cluster").
#
# Settings (environment variables, defaults below; docs/REPRODUCING.md): ENVS, BUDGETS, SEEDS, DATA_DIR, RUNS_DIR,
# CONFIG_DIR (configs/example) or CONFIG (a method's YAML, over CONFIG_DIR); EXTRA_ARGS (word-split, appended to every
# command, winning over the sweep's own); DCS_BACKGROUNDS (evaluation's DAVIS folder or "builtin" [the dataset's]);
# RUN_NAME_PREFIX of the wandb names <method>-<env>-budget<N>-seed<S>; LAUNCHER: "local" [PARALLEL at once] or "slurm".
#
# Data naming convention (scripts/data/make_labeled_sets.sh writes it):
#   $DATA_DIR/<env>.hdf5                   the full dataset (5000 trajectories, "unlabeled")
#   $DATA_DIR/<env>-labeled-1000x<N>.hdf5  N whole labeled trajectories sampled from it
#   $DATA_DIR/<env>-eval.hdf5              evaluation set recorded with the validation (novel) videos
# Run layout: $RUNS_DIR/<method>/<env>/budget<N>|full/seed<S>: config.yaml, results.json, checkpoints, train.log.

# The default ENVS is src/dcs/constants.py PAPER_ENVS (tests/test_consolidation.py checks that they agree).
ENVS=${ENVS:-"cheetah-run walker-run hopper-hop humanoid-walk"}
BUDGETS=${BUDGETS:-"2 4 8 16 32 64 128"}
SEEDS=${SEEDS:-"0 1 2"}
DATA_DIR=${DATA_DIR:-data}
CONFIG_DIR=${CONFIG_DIR:-configs}
RUNS_DIR=${RUNS_DIR:-runs}
EXTRA_ARGS=${EXTRA_ARGS:-}
DCS_BACKGROUNDS=${DCS_BACKGROUNDS:-}
LAUNCHER=${LAUNCHER:-local}

# Must be run from the repository root (python -m train_<method> finds the scripts there).
if [[ ! -f train_bc.py ]]; then
    echo "error: run the sweeps from the repository root (no train_bc.py in $PWD)" >&2
    exit 2
fi

source "$(dirname "${BASH_SOURCE[0]}")/../jobs.sh"
case "$LAUNCHER" in
local) ;;
slurm) source "$(dirname "${BASH_SOURCE[0]}")/../slurm/launcher.sh" ;;
*)
    echo "error: LAUNCHER=$LAUNCHER; expected local or slurm" >&2
    exit 2
    ;;
esac

_MISSING_DATA=()

full_data() { echo "$DATA_DIR/$1.hdf5"; }
# Data of the LAM stage: the full set, or with CROSS_EMBODIED=1 the leave-one-out mixture (make_cross_embodied.py).
lam_data() {
    if [[ "${CROSS_EMBODIED:-0}" == 1 ]]; then echo "$DATA_DIR/$1-mixed.hdf5"; else full_data "$1"; fi
}
labeled_data() { echo "$DATA_DIR/$1-labeled-1000x$2.hdf5"; }
run_dir() { echo "$RUNS_DIR/$1/$2/budget$3/seed$4"; }  # method env budget seed

need_data() {  # datasets the sweep needs: a missing one stops the sweep before anything runs (DRY_RUN only warns)
    local path
    for path in "$@"; do
        [[ -f "$path" ]] || _MISSING_DATA+=("$path")
    done
}

# The evaluation set of an environment if it exists, else a warning and ""; "" with CROSS_EMBODIED=1 (action sizes).
eval_data_if_exists() {
    local path="$DATA_DIR/$1-eval.hdf5"
    [[ "${CROSS_EMBODIED:-0}" == 1 ]] && return 0
    if [[ -f "$path" ]]; then
        echo "$path"
    else
        echo "warning: $path not found; $1 runs will not report the novel-distractor action MSE" >&2
    fi
}

run_name() {  # run_dir: <prefix><method>-<env>-budget<N>-seed<S> (wandb, SLURM job name)
    local name=${1#"$RUNS_DIR"/}
    echo "${RUN_NAME_PREFIX:-}${name//\//-}"
}

# add_job PHASE RUN_DIR REQUIRES MODULE ARGS...: queues `$PYTHON -m MODULE ARGS...` (queue_job, scripts/jobs.sh)
# with the run directory and name appended; phase-2 runs reuse checkpoints of phase-1 runs (REQUIRES: that file, or "").
add_job() {
    local phase=$1 dir=$2 requires=$3 name cmd
    shift 3
    name=$(run_name "$dir")
    # shellcheck disable=SC2086  # PYTHON may hold several words
    cmd="$(printf '%q ' $PYTHON -m "$@")--run_dir=$(printf '%q' "$dir") --name=$(printf '%q' "$name") $EXTRA_ARGS"
    queue_job "$phase" "$dir" "$requires" "$cmd"
}

# Runs every job added with add_job, phase by phase (scripts/jobs.sh or SLURM); returns non-zero if any failed.
run_sweep() {
    local label=$1
    if [[ ${#_MISSING_DATA[@]} -gt 0 ]]; then
        if [[ "$DRY_RUN" == 1 ]]; then
            echo "warning: missing datasets (a real run would stop here):" >&2
        else
            echo "error: missing datasets; make them first (scripts/data/make_labeled_sets.sh ENV):" >&2
        fi
        printf '  %s\n' "${_MISSING_DATA[@]}" | sort -u >&2
        [[ "$DRY_RUN" == 1 ]] || exit 2
    fi
    if [[ "$LAUNCHER" == slurm ]]; then
        slurm_sweep "$label"
    else
        run_jobs "$label" "$RUNS_DIR"
    fi
}

# LAPO and LAOM: the LAM and latent BC see no labels: trained once per (env, seed) by the first budget's run, reused
# by the others, which train only their decoder (paper, Appendix E) and skip the latent BC's evaluation.
sweep_reused_lam() {  # method module config
    local method=$1 module=$2 config=$3 env seed budget base ev full lam budgets
    read -r -a budgets <<<"$BUDGETS"
    for env in $ENVS; do
        full=$(full_data "$env")
        lam=$(lam_data "$env")
        need_data "$full" "$lam"
        for budget in "${budgets[@]}"; do need_data "$(labeled_data "$env" "$budget")"; done
        ev=$(eval_data_if_exists "$env")  # the LAM's action-probe MSE on novel distractors
        [[ "${CROSS_EMBODIED:-0}" == 1 ]] && ev=null  # none, whatever the config says
        for seed in $SEEDS; do
            base=$(run_dir "$method" "$env" "${budgets[0]}" "$seed")
            for budget in "${budgets[@]}"; do
                local dir phase=1 requires="" reuse=()
                dir=$(run_dir "$method" "$env" "$budget" "$seed")
                if [[ "$budget" != "${budgets[0]}" ]]; then
                    phase=2 requires="$base/latent_bc.pt"
                    reuse=(--lapo.checkpoint_path="$base/lam.pt" --bc.checkpoint_path="$base/latent_bc.pt"
                        --bc.eval_episodes=0)
                fi
                add_job "$phase" "$dir" "$requires" "$module" --config_path="$config" --seed="$seed" \
                    --lapo.data_path="$lam" ${ev:+"--lapo.eval_data_path=$ev"} --bc.data_path="$full" \
                    --decoder.data_path="$(labeled_data "$env" "$budget")" \
                    ${DCS_BACKGROUNDS:+"--bc.dcs_backgrounds_path=$DCS_BACKGROUNDS"} \
                    ${DCS_BACKGROUNDS:+"--decoder.dcs_backgrounds_path=$DCS_BACKGROUNDS"} "${reuse[@]}"
            done
        done
    done
}
