#!/usr/bin/env bash
# LAOM over label budgets, seeds and environments: the LAM and latent BC trained once per (env, seed) and reused
# by every budget (common.sh, sweep_reused_lam).
#   bash scripts/sweeps/laom.sh                      # all budgets x seeds x envs (settings: scripts/sweeps/common.sh)
#   ENVS=walker-run SEEDS=0 PARALLEL=2 GPUS="0 1" bash scripts/sweeps/laom.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
sweep_reused_lam laom train_laom "${CONFIG:-$CONFIG_DIR/laom.yaml}"
run_sweep laom
