#!/usr/bin/env bash
# IDM baseline over label budgets, seeds and environments: one IDM per budget on its labeled trajectories, then BC on
# the full dataset relabeled by it. With $DATA_DIR/<env>-eval.hdf5 present, the IDM's action MSE on novel
# distractors (paper Fig. 9a) is reported.
#   bash scripts/sweeps/idm.sh                       # all budgets x seeds x envs (settings: scripts/sweeps/common.sh)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
CONFIG=${CONFIG:-$CONFIG_DIR/idm.yaml}
for env in $ENVS; do
    full=$(full_data "$env")
    need_data "$full"
    ev=$(eval_data_if_exists "$env")
    for budget in $BUDGETS; do
        labeled=$(labeled_data "$env" "$budget")
        need_data "$labeled"
        for seed in $SEEDS; do
            add_job 1 "$(run_dir idm "$env" "$budget" "$seed")" "" train_idm --config_path="$CONFIG" \
                --seed="$seed" --idm.data_path="$labeled" ${ev:+"--idm.eval_data_path=$ev"} --bc.data_path="$full" \
                ${DCS_BACKGROUNDS:+"--bc.dcs_backgrounds_path=$DCS_BACKGROUNDS"}
        done
    done
done
run_sweep idm
