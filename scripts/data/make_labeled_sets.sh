#!/usr/bin/env bash
# The labeled subsets of every budget ($DATA_DIR/<env>-labeled-1000x<N>.hdf5) and the novel-distractor evaluation set
# ($DATA_DIR/<env>-eval.hdf5) of one environment, named as scripts/sweeps/common.sh reads them.
#   bash scripts/data/make_labeled_sets.sh ENV [EXPERT_CHECKPOINT]
#   DCS_BACKGROUNDS=DAVIS/JPEGImages/480p bash scripts/data/make_labeled_sets.sh walker-run <experts>/walker-run-expert
#
# EXPERT_CHECKPOINT: the expert (PPO folder or SAC zip), needed for the evaluation set. Existing files are kept (an
# interrupted evaluation set resumes). Settings (environment variables; defaults in brackets):
#   DATA_DIR [data]  BUDGETS [2 4 8 16 32 64 128]  SAMPLE_SEED [0]: seed of the sampling (the same for every budget)
#   DCS_BACKGROUNDS: DAVIS folder <root>/<video>/<frame>.jpg, or "builtin" (required for the evaluation set)
#   EVAL_TRAJECTORIES [50]  EVAL_SEED [100]: base episode seed of the evaluation set (the training set's differs)
#   EPISODE_STEPS [collect_data.py's]  CHUNK_SIZE [1000]  NUM_WORKERS [1]: collection processes  PYTHON [python]
set -euo pipefail
if [[ $# -lt 1 || $# -gt 2 ]]; then
    sed -n '2,15p' "$0" >&2
    exit 2
fi
env=$1
expert=${2:-}
DATA_DIR=${DATA_DIR:-data}
BUDGETS=${BUDGETS:-"2 4 8 16 32 64 128"}
SAMPLE_SEED=${SAMPLE_SEED:-0}
EVAL_TRAJECTORIES=${EVAL_TRAJECTORIES:-50}
EVAL_SEED=${EVAL_SEED:-100}
CHUNK_SIZE=${CHUNK_SIZE:-1000}
NUM_WORKERS=${NUM_WORKERS:-1}
PYTHON=${PYTHON:-python}

full="$DATA_DIR/$env.hdf5"
if [[ ! -f "$full" ]]; then
    echo "error: full dataset $full not found (collect it with scripts/data_collection/collect_data.py)" >&2
    exit 1
fi
for n in $BUDGETS; do
    out="$DATA_DIR/$env-labeled-1000x$n.hdf5"
    if [[ -f "$out" ]]; then
        echo "exists: $out"
        continue
    fi
    # shellcheck disable=SC2086  # PYTHON may hold several words
    $PYTHON -m scripts.sample_labeled_data --data_path="$full" --save_path="$out" --chunk_size="$CHUNK_SIZE" \
        --num_trajectories="$n" --seed="$SAMPLE_SEED"
done

if [[ -z "$expert" ]]; then
    [[ -f "$DATA_DIR/$env-eval.hdf5" ]] || echo "no expert checkpoint given: $DATA_DIR/$env-eval.hdf5 not made"
    exit 0
fi
if [[ -z "${DCS_BACKGROUNDS:-}" ]]; then
    echo "error: set DCS_BACKGROUNDS to the DAVIS folder (DAVIS/JPEGImages/480p) or 'builtin' (evaluation set)" >&2
    exit 2
fi
# The training datasets use difficulty scale_easy_video_hard (paper, Section 3); the validation videos are novel.
# shellcheck disable=SC2086
$PYTHON -m scripts.data_collection.collect_data --checkpoint_path="$expert" --domain_name="${env%%-*}" \
    --task_name="${env#*-}" --dcs_backgrounds_path="$DCS_BACKGROUNDS" --save_path="$DATA_DIR/$env-eval.hdf5" \
    --num_trajectories="$EVAL_TRAJECTORIES" --dcs_difficulty=scale_easy_video_hard --dcs_backgrounds_split=val \
    --dcs_img_hw=64 --seed="$EVAL_SEED" --num_workers="$NUM_WORKERS" \
    ${EPISODE_STEPS:+"--max_episode_steps=$EPISODE_STEPS"}
