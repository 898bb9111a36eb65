#!/usr/bin/env bash
# Cross-embodied pre-training (paper, Fig. 10; docs/REPRODUCING.md): the LAM on the mixture of the OTHER environments
# (made if missing), the rest on the target's data. Settings: scripts/sweeps/common.sh, METHODS [laom laom_labels];
# runs go to $RUNS_DIR/cross_embodied/<method>/<env>/budget<N>/seed<S>.
#   bash scripts/sweeps/cross_embodied.sh
set -uo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
export CROSS_EMBODIED=1 RUN_NAME_PREFIX=cross_embodied-
export RUNS_DIR="${RUNS_DIR:-runs}/cross_embodied"
DATA_DIR=${DATA_DIR:-data}
status=0
if [[ "${DRY_RUN:-0}" != 1 ]]; then
    for env in ${ENVS:-cheetah-run walker-run hopper-hop humanoid-walk}; do  # PAPER_ENVS, as common.sh
        if [[ ! -f "$DATA_DIR/$env-mixed.hdf5" ]]; then
            ${PYTHON:-python} -m scripts.data.make_cross_embodied --target_env="$env" --data_dir="$DATA_DIR" || status=1
        fi
    done
fi
for method in ${METHODS:-laom laom_labels}; do
    bash "$here/$method.sh" || status=1
done
exit $status
