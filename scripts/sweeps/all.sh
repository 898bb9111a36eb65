#!/usr/bin/env bash
# Every method of the paper's main result (Fig. 1 / 8), one after the other, with the same settings
# (scripts/sweeps/common.sh), then the figures and tables. A method's failures do not stop the others;
# the exit status is non-zero if any run failed.
#   GPUS="0 1 2 3" bash scripts/sweeps/all.sh
set -uo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
unset CONFIG  # one config cannot serve every method: each takes its own from $CONFIG_DIR
status=0
for method in ${METHODS:-bc_full bc idm lapo laom laom_labels}; do
    bash "$here/$method.sh" || status=1
done
if [[ "${DRY_RUN:-0}" != 1 ]]; then
    ${PYTHON:-python} -m scripts.plot_results --runs_dir "${RUNS_DIR:-runs}" --out "${RESULTS_DIR:-${RUNS_DIR:-runs}/results}" ||
        status=1
fi
exit $status
