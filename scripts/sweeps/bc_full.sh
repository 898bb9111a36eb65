#!/usr/bin/env bash
# BC on the full dataset with every action revealed, once per (env, seed): the normalising returns (paper Table 3).
# Runs go to $RUNS_DIR/bc_full/<env>/full/seed<S>. BUDGETS is not used.
#   bash scripts/sweeps/bc_full.sh                   # all seeds x envs (settings: scripts/sweeps/common.sh)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
CONFIG=${CONFIG:-$CONFIG_DIR/bc-full.yaml}
for env in $ENVS; do
    full=$(full_data "$env")
    need_data "$full"
    for seed in $SEEDS; do
        add_job 1 "$RUNS_DIR/bc_full/$env/full/seed$seed" "" train_bc --config_path="$CONFIG" \
            --seed="$seed" --bc.data_path="$full" ${DCS_BACKGROUNDS:+"--bc.dcs_backgrounds_path=$DCS_BACKGROUNDS"}
    done
done
run_sweep bc_full
