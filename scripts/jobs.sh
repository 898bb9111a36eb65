# The job runner of the sweeps (scripts/sweeps/common.sh) and of the small study (studies/small/reproduce.sh and
# tune.sh); sourced, not run. A job is one training run in its own directory:
#   queue_job PHASE RUN_DIR REQUIRES COMMAND  queues it: COMMAND one string of shell words (quoted as with printf %q),
#                                             REQUIRES a file that must exist when it starts ("" for none); every
#                                             job of phase 1 ends before phase 2 starts
#   job RUN_DIR MODULE ARGS...                queues `$PYTHON -u -m MODULE ARGS... --run_dir=RUN_DIR` in phase 1
#   run_jobs LABEL [WHERE]                    runs the queue, PARALLEL at once in queue order, then empties it
# A job whose RUN_DIR holds results.json is skipped, an interrupted one resumes; output goes to RUN_DIR/train.log.
# run_jobs prints a line per job and a summary, the failed jobs on stderr, and returns 1 if any failed.
# Settings (environment variables; defaults in brackets):
#   PARALLEL     jobs at once                                    [the number of GPUS, else 1]
#   GPUS         GPU ids, e.g. "0 1 2 3": a job gets CUDA_VISIBLE_DEVICES of its worker, round robin  [none]
#   JOB_THREADS  OMP_NUM_THREADS of each job  [OMP_NUM_THREADS; on CPU with PARALLEL > 1: cores / PARALLEL]
#   DRY_RUN=1    print the commands (and which jobs would be skipped), run nothing
#   PYTHON       interpreter of `job`                            [python]
GPUS=${GPUS:-}
PYTHON=${PYTHON:-python}
DRY_RUN=${DRY_RUN:-0}
read -r -a _GPU_LIST <<<"$GPUS"
PARALLEL=${PARALLEL:-$((${#_GPU_LIST[@]} > 0 ? ${#_GPU_LIST[@]} : 1))}
# On CPU, N jobs at once share the cores instead of each starting one thread per core.
if [[ -z "${JOB_THREADS:-}" && -z "${OMP_NUM_THREADS:-}" && -z "$GPUS" && "$PARALLEL" -gt 1 ]]; then
    _cores=$(nproc 2>/dev/null || echo 1)
    JOB_THREADS=$((_cores / PARALLEL > 0 ? _cores / PARALLEL : 1))
fi
JOB_THREADS=${JOB_THREADS:-${OMP_NUM_THREADS:-}}

# The queue (phase<N>: RUN_DIR <tab> REQUIRES or - <tab> COMMAND) and outcomes; scripts/slurm/launcher.sh reads them.
_SWEEP_TMP=$(mktemp -d "${TMPDIR:-/tmp}/jobs.XXXXXX")
trap 'rm -rf "$_SWEEP_TMP"' EXIT
touch "$_SWEEP_TMP/done" "$_SWEEP_TMP/skipped" "$_SWEEP_TMP/failed"

queue_job() {  # phase run_dir requires command
    printf '%s\t%s\t%s\n' "$2" "${3:--}" "$4" >>"$_SWEEP_TMP/phase$1"
}

job() {  # run_dir module args...
    local dir=$1
    shift
    # shellcheck disable=SC2086  # PYTHON may hold several words
    queue_job 1 "$dir" "" "$(printf '%q ' $PYTHON -u -m "$@")--run_dir=$(printf '%q' "$dir")"
}

queued_jobs() {  # the run directories in the queue, one a line
    cut -f1 "$_SWEEP_TMP"/phase[0-9] 2>/dev/null || true
}

# The outcomes, shared with the SLURM launcher.
_skip_done() {  # run_dir: true, and says so, when the run has finished (results.json)
    [[ -f "$1/results.json" ]] || return 1
    echo "[skip]   $1 (results.json exists)"
    echo "$1" >>"$_SWEEP_TMP/skipped"
}

_failed() {  # run_dir reason words...: "[FAILED] words", and the run with its log or reason in the list of failures
    printf '%s\t%s\n' "$1" "$2" >>"$_SWEEP_TMP/failed"
    shift 2
    echo "[FAILED] $*"
}

_summary() {  # label start
    echo "== $1: $(wc -l <"$_SWEEP_TMP/done") finished, $(wc -l <"$_SWEEP_TMP/skipped") skipped (already done)," \
        "$(wc -l <"$_SWEEP_TMP/failed") failed, $((SECONDS - $2)) s"
}

_list_failed() {  # the failed runs on stderr; fails when there is one
    [[ -s "$_SWEEP_TMP/failed" ]] || return 0
    echo "Failed runs (run directory, log or reason):" >&2
    sed 's/^/  /' "$_SWEEP_TMP/failed" >&2
    return 1
}

_run_one() {  # worker line gpu
    local worker=$1 line=$2 gpu=$3 dir requires cmd prefix=""
    IFS=$'\t' read -r dir requires cmd <<<"$line"
    _skip_done "$dir" && return 0
    [[ -n "$gpu" ]] && prefix="CUDA_VISIBLE_DEVICES=$gpu "
    if [[ "$DRY_RUN" == 1 ]]; then
        echo "[dry-run] ${prefix}$cmd"
        return 0
    fi
    if [[ "$requires" != "-" && ! -f "$requires" ]]; then
        _failed "$dir" "missing $requires" "$dir: needs $requires, which its base run did not produce"
        return 0
    fi
    mkdir -p "$dir"
    local log="$dir/train.log" start=$SECONDS
    echo "[start]  $dir ${prefix:+($prefix)}(log: $log)"
    if (
        [[ -n "$gpu" ]] && export CUDA_VISIBLE_DEVICES=$gpu
        [[ -n "$JOB_THREADS" ]] && export OMP_NUM_THREADS=$JOB_THREADS
        echo "# $(date '+%F %T') worker $worker: ${prefix}$cmd"
        eval "$cmd"
    ) >>"$log" 2>&1; then
        echo "[done]   $dir in $((SECONDS - start)) s"
        printf '%s\t%s\n' "$dir" "$((SECONDS - start))" >>"$_SWEEP_TMP/done"
    else
        _failed "$dir" "$log" "$dir after $((SECONDS - start)) s (exit $?); log: $log"
    fi
}

_worker() {  # worker queue: runs the jobs no other worker has claimed (mkdir is atomic), in queue order
    local worker=$1 queue=$2 gpu="" n total
    [[ ${#_GPU_LIST[@]} -gt 0 ]] && gpu=${_GPU_LIST[$((worker % ${#_GPU_LIST[@]}))]}
    total=$(wc -l <"$queue")
    for ((n = 1; n <= total; n++)); do
        mkdir "$queue.$n" 2>/dev/null && _run_one "$worker" "$(sed -n "${n}p" "$queue")" "$gpu"
    done
}

run_jobs() {  # label [where]
    local label=$1 where=${2:-} phase w start=$SECONDS status=0
    echo "== $label: $(queued_jobs | wc -l) runs, $PARALLEL at once${GPUS:+ on GPUs $GPUS}${where:+, runs under $where}"
    for phase in 1 2; do
        [[ -f "$_SWEEP_TMP/phase$phase" ]] || continue
        for ((w = 0; w < PARALLEL; w++)); do
            _worker "$w" "$_SWEEP_TMP/phase$phase" &
        done
        wait
    done
    _summary "$label" "$start"
    _list_failed || status=1
    rm -rf "$_SWEEP_TMP"/phase*
    : >"$_SWEEP_TMP/done" && : >"$_SWEEP_TMP/skipped" && : >"$_SWEEP_TMP/failed"
    return $status
}
