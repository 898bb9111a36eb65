#!/usr/bin/env bash
# The README's quick start: a tiny LAOM + supervision, all three stages on data/example-data.hdf5, into
# runs/example-laom-labels-seed0/. Sets up the Python environment first where it is missing (scripts/python_env.sh,
# the same as bash .ci/run's). Any further arguments are config fields (--run_dir=..., --wandb_mode=disabled).
#   bash scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python_env.sh
exec "$PYTHON" -m train_laom_labels --config_path configs/example/laom-labels.yaml "$@"
