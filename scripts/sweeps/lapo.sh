#!/usr/bin/env bash
# LAPO over label budgets, seeds and environments. The LAM and latent BC are trained once per (env, seed), by the
# run of the first budget; every other budget reuses them and trains only its decoder (paper, Appendix E).
# With $DATA_DIR/<env>-eval.hdf5 present, the LAM's action-probe MSE on novel distractors is reported too.
#   bash scripts/sweeps/lapo.sh                      # all budgets x seeds x envs (settings: scripts/sweeps/common.sh)
#   ENVS=walker-run SEEDS=0 PARALLEL=2 GPUS="0 1" bash scripts/sweeps/lapo.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
sweep_reused_lam lapo train_lapo "${CONFIG:-$CONFIG_DIR/lapo.yaml}"
run_sweep lapo
