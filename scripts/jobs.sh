# The job runner of studies/small/tune.sh and studies/small/reproduce.sh (sourced, not run): a job is one training
# run in its own directory; `job DIR MODULE ARGS...` queues it, `run_jobs` runs the queue LANES at a time (one thread
# each), a job whose DIR holds results.json is skipped, an interrupted one resumes from its stage checkpoints (the
# method scripts do that), each logs to DIR/train.log. run_jobs returns 1 when a job failed (the others still run).
LANES=${LANES:-2}
PYTHON=${PYTHON:-python}
_JOBS=()

job() {  # run_dir module args...
    local dir=$1
    shift
    _JOBS+=("$dir"$'\t'"$*")
}

_run_one() {  # run_dir command
    local dir=$1 cmd=$2 t=$SECONDS status=0
    if [[ -f "$dir/results.json" ]]; then
        echo "skip  $dir (finished: results.json)"
        return 0
    fi
    mkdir -p "$dir"
    echo "start $dir"
    # shellcheck disable=SC2086  # the command is a list of words
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $PYTHON -u -m $cmd --run_dir="$dir" >>"$dir/train.log" 2>&1 || status=$?
    if [[ $status -eq 0 ]]; then
        echo "done  $dir ($((SECONDS - t)) s)"
    else
        echo "FAILED $dir (exit $status, $((SECONDS - t)) s): see $dir/train.log" >&2
    fi
    return $status
}

run_jobs() {
    local status=0 entry running=0
    for entry in "${_JOBS[@]}"; do
        if [[ $running -ge $LANES ]]; then
            wait -n || status=1
            running=$((running - 1))
        fi
        _run_one "${entry%%$'\t'*}" "${entry#*$'\t'}" &
        running=$((running + 1))
    done
    while [[ $running -gt 0 ]]; do
        wait -n || status=1
        running=$((running - 1))
    done
    _JOBS=()
    return $status
}
