#!/usr/bin/env bash
# The GPU box's one prepared check, written under OUT_DIR (device_check.json, a log per row, the script runs):
#   bash scripts/bench/device_check.sh OUT_DIR                    # H100 / H200: paper configs, <8 min (est. 2026-12-06)
#   bash scripts/bench/device_check.sh OUT_DIR --peak_tflops=989  # a GPU whose name it does not know; any flag of
#                                                                 # scripts/bench/device_bench.py
#   bash scripts/bench/device_check.sh OUT_DIR --device=cpu       # the CPU mode: the same rows at tiny sizes
# Rows, most telling first, each in a process of its own (an out-of-memory error or a crash is its row's): each
# method's stage 1, latent BC at scale 32, BC (FLOPs, updates/s, peak memory, MFU; bf16 on CUDA); each method
# script's real command line on its example config for a few updates; one run stopped by SIGTERM and resumed; the
# other stages; the data path; the compiled stages. Rows not started within time_budget_s (400 s) are recorded as
# skipped; the check ends within 445 s. Without CUDA it says so in one line and runs the CPU mode.
set -euo pipefail
if [ $# -lt 1 ] || [[ "$1" == --* ]]; then
  echo "usage: bash scripts/bench/device_check.sh OUT_DIR [--flag=value ...]" >&2
  exit 2
fi
out_dir=$(realpath -m "$1")
shift
cd "$(dirname "$0")/../.."
export MUJOCO_GL=${MUJOCO_GL:-egl}
exec python -m scripts.bench.device_bench --out_dir="$out_dir" "$@"
