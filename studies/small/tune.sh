#!/usr/bin/env bash
# Tuning of the small study on one tuning seed and validation data, by the paper's criteria (studies/small/README.md,
# "Tuning"); GRIDS=precision: fp32 against bf16 autocast. `python -m studies.small.report --tuning` makes the table.
#   bash studies/small/tune.sh            # after the data step of studies/small/reproduce.sh (it collects if missing)
#   GRIDS="laom_labels lapo_mask" bash studies/small/tune.sh                  # some of the grids only
# Settings: SMALL_DIR [runs/small], TUNE_SEED [100], BUDGET [2], LANES [2], PYTHON [python], GRIDS [lapo laom
# noaug policy idm laom_labels laom_labels_coef lapo_mask; also: precision], PRECISION [fp32, the study's], grid
# variables below. Resumes like the study.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SMALL_DIR=${SMALL_DIR:-runs/small}
TUNE_SEED=${TUNE_SEED:-100}
BUDGET=${BUDGET:-2}
CONFIG_DIR=${CONFIG_DIR:-studies/small/configs}
LANES=${LANES:-2}
export MUJOCO_GL=${MUJOCO_GL:-egl}
PARALLEL=$LANES JOB_THREADS=${OMP_NUM_THREADS:-1}  # the runs one thread each, LANES at once
source scripts/jobs.sh
D=$SMALL_DIR/data
T=$SMALL_DIR/tune
if [[ ! -f $D/cheetah-run-val.hdf5 ]]; then
    ONLY_DATA=1 bash studies/small/reproduce.sh || exit $?
fi
# Grids, searched one coordinate at a time (a choice at an edge extended its grid by one point: the README's table).
LAPO_LRS=${LAPO_LRS:-${LAM_LRS:-"0.0003 0.001 0.003 0.01"}}
LAOM_LRS=${LAOM_LRS:-${LAM_LRS:-"0.00001 0.00003 0.0001 0.0003 0.001 0.003"}}  # at tau 0.01 (extended down twice: edges)
TAU_LR=${TAU_LR:-0.0003}  # LAOM's chosen learning rate
TAUS=${TAUS:-"0.001 0.05"}  # LAOM's EMA rate at TAU_LR (and, from a first pass, at lr 0.001)
POLICY_LRS=${POLICY_LRS:-"0.001 0.003"}  # BC, BC on all data; the paper's 1e-4 left every policy at the mean action in the first study
IDM_LRS=${IDM_LRS:-"0.001 0.003 0.01 0.03"}  # extended up twice: 3e-3, then 1e-2 were at the edge
LAOM_LABELS_LRS=${LAOM_LABELS_LRS:-"0.00003 0.0001 0.0003 0.001"}  # at coefficient 0.001 (the paper's cheetah-run)
COEF_LR=${COEF_LR:-0.0001}  # LAOM + supervision's chosen learning rate
COEFS=${COEFS:-"0.01 0.1 1.0"}  # LAOM + supervision's coefficient at COEF_LR (0.001 is in the learning-rate grid)
LAPO_MASK_LRS=${LAPO_MASK_LRS:-"0.001 0.003 0.01"}
GRIDS=${GRIDS:-"lapo laom noaug policy idm laom_labels laom_labels_coef lapo_mask"}
PRECISION=${PRECISION:-fp32}
want() { [[ " $GRIDS " == *" $1 "* ]]; }
common="--seed=$TUNE_SEED --wandb_mode=disabled ${EXTRA_ARGS:-}"
lam="--lam_only=true --lapo.ridge_probe_every=${RIDGE_EVERY:-155} --lapo.data_path=$D/cheetah-run.hdf5"
labels="--lapo.labeled_data_path=$D/cheetah-run-labeled-1000x$BUDGET.hdf5"
want laom_labels || LAOM_LABELS_LRS=""
want laom_labels_coef || COEFS=""
want lapo_mask || LAPO_MASK_LRS=""
want precision || PRECISIONS=""
want lapo || LAPO_LRS=""
want laom || TAUS="" LAOM_LRS=""
want noaug || NOAUG_LRS=""
want policy || POLICY_LRS=""
want idm || IDM_LRS=""
for lr in $LAOM_LABELS_LRS; do
    job "$T/laom_labels/lr$lr-coef0.001" train_laom_labels --config_path=$CONFIG_DIR/laom-labels.yaml $common \
        $lam $labels --precision=$PRECISION --lapo.learning_rate=$lr --lapo.labeled_loss_coef=0.001
done
for coef in $COEFS; do
    job "$T/laom_labels/lr$COEF_LR-coef$coef" train_laom_labels --config_path=$CONFIG_DIR/laom-labels.yaml \
        $common $lam $labels --precision=$PRECISION --lapo.learning_rate=$COEF_LR --lapo.labeled_loss_coef=$coef
done
for lr in $LAPO_MASK_LRS; do
    job "$T/lapo_mask/lr$lr" train_lapo_mask --config_path=$CONFIG_DIR/lapo-mask.yaml $common $lam \
        --lapo.masks_path=$D/cheetah-run-masks.hdf5 --precision=$PRECISION --lapo.learning_rate=$lr
done
for p in ${PRECISIONS-fp32 bf16}; do  # LAPO and LAOM at their settings (studies/small/configs), fp32 against bf16
    job "$T/precision/lapo-$p" train_lapo --config_path=$CONFIG_DIR/lapo.yaml $common $lam --precision=$p
    job "$T/precision/laom-$p" train_laom --config_path=$CONFIG_DIR/laom.yaml $common $lam --precision=$p
done
for lr in $LAPO_LRS; do
    job "$T/lapo/lr$lr" train_lapo --config_path=$CONFIG_DIR/lapo.yaml $common $lam --lapo.learning_rate=$lr
done
for lr in $LAOM_LRS; do
    job "$T/laom/lr$lr-tau0.01" train_laom --config_path=$CONFIG_DIR/laom.yaml $common $lam \
        --lapo.learning_rate=$lr --lapo.target_tau=0.01
done
for tau in $TAUS; do
    for lr in $TAU_LR ${TAU_EXTRA_LRS-0.001}; do
        job "$T/laom/lr$lr-tau$tau" train_laom --config_path=$CONFIG_DIR/laom.yaml $common $lam \
            --lapo.learning_rate=$lr --lapo.target_tau=$tau
    done
done
for lr in ${NOAUG_LRS:-}; do  # LAOM without augmentations (optional: the study trains it with LAOM's settings)
    job "$T/laom_noaug/lr$lr-tau0.01" train_laom --config_path=$CONFIG_DIR/laom.yaml $common $lam \
        --lapo.learning_rate=$lr --lapo.target_tau=0.01 --lapo.use_aug=false
done
for lr in $POLICY_LRS; do
    job "$T/bc/lr$lr" train_bc --config_path=$CONFIG_DIR/bc.yaml $common --bc.data_path=$D/cheetah-run-labeled-1000x$BUDGET.hdf5 \
        --bc.learning_rate=$lr
    job "$T/bc_full/lr$lr" train_bc --config_path=$CONFIG_DIR/bc-full.yaml $common --bc.data_path=$D/cheetah-run.hdf5 \
        --bc.learning_rate=$lr
done
for lr in $IDM_LRS; do
    job "$T/idm/lr$lr" train_idm --config_path=$CONFIG_DIR/idm.yaml $common --idm_only=true \
        --idm.data_path=$D/cheetah-run-labeled-1000x$BUDGET.hdf5 --idm.eval_data_path=$D/cheetah-run-val.hdf5 \
        --bc.data_path=$D/cheetah-run.hdf5 --idm.learning_rate=$lr
done
t=$SECONDS
run_jobs tuning "$T"
status=$?
echo "studies/small/tune.sh: $((SECONDS - t)) s; results under $T (python -m studies.small.report --tuning)"
exit $status
