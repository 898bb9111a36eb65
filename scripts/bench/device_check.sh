#!/usr/bin/env bash
# The GPU box's one prepared check: per-stage updates/s, samples/s, peak memory, FLOPs per update and MFU at the
# paper's configs (bf16), eager and compiled; the data path beside the release's; projected paper-run hours next to
# Table 2 (scripts/bench/device_bench.py). One H100 / H200: under 8 minutes (compiled rows stop at time_budget_s).
#   bash scripts/bench/device_check.sh                     # writes runs/device_check.json, prints the table
#   bash scripts/bench/device_check.sh --peak_tflops=989   # a GPU whose name it does not know; any device_bench flag
# Without CUDA it says so in one line and runs the CPU self-check at tiny sizes.
set -euo pipefail
cd "$(dirname "$0")/../.."
export MUJOCO_GL=${MUJOCO_GL:-egl}
exec python -m scripts.bench.device_bench "$@"
