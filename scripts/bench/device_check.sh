#!/usr/bin/env bash
# The GPU box's one prepared check (scripts/bench/device_bench.py says what it runs), written under OUT_DIR:
#   bash scripts/bench/device_check.sh OUT_DIR                    # H100 / H200: paper configs, <8 min (est. 2026-12-06)
#   bash scripts/bench/device_check.sh OUT_DIR --peak_tflops=989  # a GPU it does not know; any flag of device_bench.py
#   bash scripts/bench/device_check.sh OUT_DIR --device=cpu       # the CPU mode: the same rows at tiny sizes
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
