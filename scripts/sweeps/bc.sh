#!/usr/bin/env bash
# BC baseline over label budgets, seeds and environments: BC from scratch on each budget's labeled trajectories.
#   bash scripts/sweeps/bc.sh                        # all budgets x seeds x envs (settings: scripts/sweeps/common.sh)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
CONFIG=${CONFIG:-$CONFIG_DIR/bc.yaml}
for env in $ENVS; do
    for budget in $BUDGETS; do
        labeled=$(labeled_data "$env" "$budget")
        need_data "$labeled"
        for seed in $SEEDS; do
            add_job 1 "$(run_dir bc "$env" "$budget" "$seed")" "" train_bc --config_path="$CONFIG" --seed="$seed" \
                --bc.data_path="$labeled" ${DCS_BACKGROUNDS:+"--bc.dcs_backgrounds_path=$DCS_BACKGROUNDS"}
        done
    done
done
run_sweep bc
