#!/usr/bin/env bash
# A tiny sweep of every method on a laptop CPU from the example data (docs/REPRODUCING.md), then the tables and
# figures: it exercises the whole workflow; its numbers mean nothing.
#   bash scripts/sweeps/tiny.sh                     # -> runs/tiny/runs, tables and figures in runs/tiny/results
#   OUT=docs/tiny-sweep bash scripts/sweeps/tiny.sh  # how docs/tiny-sweep was made
# Without EXPERT=<cheetah-run expert> the evaluation set is sampled from the example data (not novel distractors).
# Settings: TINY_DIR [runs/tiny], OUT [$TINY_DIR/results], BUDGETS ["2 4"], SEEDS ["0 1"], PARALLEL [2],
# METHODS [all], EXPERT, PYTHON [python].
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
TINY_DIR=${TINY_DIR:-runs/tiny}
OUT=${OUT:-$TINY_DIR/results}
PYTHON=${PYTHON:-python}
EXAMPLE=${EXAMPLE:-data/example-data.hdf5}  # the source of the tiny data
export ENVS=cheetah-run BUDGETS=${BUDGETS:-"2 4"} SEEDS=${SEEDS:-"0 1"} PARALLEL=${PARALLEL:-2} PYTHON
export DATA_DIR=$TINY_DIR/data RUNS_DIR=$TINY_DIR/runs CONFIG_DIR=configs/example
METHODS=${METHODS:-"bc_full bc idm lapo laom laom_labels"}
start=$SECONDS

set -e
if [[ ! -f "$EXAMPLE" ]]; then
    echo "error: $EXAMPLE not found (it is part of the repository)" >&2
    exit 2
fi
mkdir -p "$DATA_DIR"
[[ -f "$DATA_DIR/cheetah-run.hdf5" ]] || cp "$EXAMPLE" "$DATA_DIR/cheetah-run.hdf5"
eval_set="$DATA_DIR/cheetah-run-eval.hdf5"
[[ -f "$eval_set" ]] && EXPERT=""  # an evaluation set made before is kept, whichever way it was made
CHUNK_SIZE=100 EVAL_TRAJECTORIES=2 EPISODE_STEPS=100 DCS_BACKGROUNDS=builtin \
    bash scripts/data/make_labeled_sets.sh cheetah-run "${EXPERT:-}"
if [[ ! -f "$eval_set" ]]; then
    echo "note: no EXPERT given; $eval_set is a stand-in sampled from the example data (training videos)"
    # shellcheck disable=SC2086  # PYTHON may hold several words
    $PYTHON -m scripts.sample_labeled_data --data_path="$DATA_DIR/cheetah-run.hdf5" --save_path="$eval_set" \
        --chunk_size=100 --num_trajectories=2 --seed=1
fi
echo "data ready in $((SECONDS - start)) s"
set +e

status=0
for method in $METHODS; do
    t=$SECONDS
    if [[ "$method" == bc_full ]]; then
        CONFIG=configs/example/bc.yaml bash scripts/sweeps/bc_full.sh || status=1
    else
        bash "scripts/sweeps/$method.sh" || status=1
    fi
    echo "== $method: $((SECONDS - t)) s"
done
$PYTHON -m scripts.plot_results --runs_dir "$RUNS_DIR" --out "$OUT" || status=1
echo "tiny sweep: $((SECONDS - start)) s in all; tables and figures in $OUT"
exit $status
