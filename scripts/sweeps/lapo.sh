#!/usr/bin/env bash
# LAPO over label budgets, seeds and environments: the LAM and latent BC trained once per (env, seed) and reused
# by every budget (common.sh, sweep_reused_lam).
#   bash scripts/sweeps/lapo.sh                      # all budgets x seeds x envs (settings: scripts/sweeps/common.sh)
#   ENVS=walker-run SEEDS=0 PARALLEL=2 GPUS="0 1" bash scripts/sweeps/lapo.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
sweep_reused_lam lapo train_lapo "${CONFIG:-$CONFIG_DIR/lapo.yaml}"
run_sweep lapo
