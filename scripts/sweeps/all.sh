#!/usr/bin/env bash
# Every method of the paper's main result (Fig. 1 / 8), then the figures and tables (scripts/sweeps/common.sh).
# A method's failures do not stop the others; the exit status is non-zero if any run failed.
#   GPUS="0 1 2 3" bash scripts/sweeps/all.sh
#   LAUNCHER=slurm SLURM_WAIT=1 ... bash scripts/sweeps/all.sh   # every job submitted at once, then waited for
set -uo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
unset CONFIG  # one config cannot serve every method: each takes its own from $CONFIG_DIR
status=0
methods=${METHODS:-bc_full bc idm lapo laom laom_labels}
if [[ "${LAUNCHER:-local}" == slurm && "${SLURM_WAIT:-0}" == 1 && "${DRY_RUN:-0}" != 1 ]]; then
    # Every method's jobs are submitted first; the loop below then finds them queued and waits for them all.
    for method in $methods; do
        SLURM_WAIT=0 bash "$here/$method.sh" || true  # failures are reported by the loop below
    done
fi
for method in $methods; do
    bash "$here/$method.sh" || status=1
done
if [[ "${DRY_RUN:-0}" != 1 ]]; then
    ${PYTHON:-python} -m scripts.plot_results --runs_dir "${RUNS_DIR:-runs}" --out "${RESULTS_DIR:-${RUNS_DIR:-runs}/results}" ||
        status=1
fi
exit $status
