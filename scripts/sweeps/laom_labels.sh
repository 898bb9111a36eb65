#!/usr/bin/env bash
# LAOM + supervision over label budgets, seeds and environments: one LAM per budget (paper, Appendix E).
# labeled_loss_coef: 0.001 for cheetah-run, 0.01 elsewhere (the paper's); LABELED_LOSS_COEF=<x> for every environment.
#   bash scripts/sweeps/laom_labels.sh               # all budgets x seeds x envs (settings: scripts/sweeps/common.sh)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
CONFIG=${CONFIG:-$CONFIG_DIR/laom-labels.yaml}
for env in $ENVS; do
    full=$(full_data "$env")
    lam=$(lam_data "$env")
    need_data "$full" "$lam"
    ev=$(eval_data_if_exists "$env")
    [[ "${CROSS_EMBODIED:-0}" == 1 ]] && ev=null  # none, whatever the config says
    coef=${LABELED_LOSS_COEF:-}
    [[ -z "$coef" && "$env" == cheetah-run ]] && coef=0.001
    for budget in $BUDGETS; do
        labeled=$(labeled_data "$env" "$budget")
        need_data "$labeled"
        for seed in $SEEDS; do
            add_job 1 "$(run_dir laom_labels "$env" "$budget" "$seed")" "" train_laom_labels \
                --config_path="$CONFIG" --seed="$seed" --lapo.data_path="$lam" --lapo.labeled_data_path="$labeled" \
                ${ev:+"--lapo.eval_data_path=$ev"} ${coef:+"--lapo.labeled_loss_coef=$coef"} \
                --bc.data_path="$full" --decoder.data_path="$labeled" \
                ${DCS_BACKGROUNDS:+"--bc.dcs_backgrounds_path=$DCS_BACKGROUNDS"} \
                ${DCS_BACKGROUNDS:+"--decoder.dcs_backgrounds_path=$DCS_BACKGROUNDS"}
        done
    done
done
run_sweep laom_labels
