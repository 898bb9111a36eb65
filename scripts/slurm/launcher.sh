# shellcheck shell=bash
# The SLURM launcher of the sweeps (sourced by scripts/sweeps/common.sh when LAUNCHER=slurm; docs/DISTRIBUTED.md):
# one batch job of scripts/slurm/run_job.sh per run, in phase order, finished or queued runs skipped; prints the job
# ids, or with SLURM_WAIT=1 waits and reports per run.

_SLURM_JOB_SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/run_job.sh"
SLURM_GPUS_PER_RUN=${SLURM_GPUS_PER_RUN:-1}
SLURM_CPUS_PER_RUN=${SLURM_CPUS_PER_RUN:-8}
SLURM_SIGNAL_LEAD=${SLURM_SIGNAL_LEAD:-300}
SLURM_WAIT=${SLURM_WAIT:-0}
SLURM_POLL=${SLURM_POLL:-30}

_slurm_refuse() {
    echo "error: LAUNCHER=slurm: $*" >&2
    exit 2
}
[[ -n "${SLURM_PARTITION:-}" ]] || _slurm_refuse "set SLURM_PARTITION (the partition to submit to; sinfo lists them)"
[[ -n "${SLURM_TIME:-}" ]] || _slurm_refuse "set SLURM_TIME (each job's time limit, e.g. 24:00:00; a run that" \
    "reaches it checkpoints, requeues itself and resumes)"
for _var in SLURM_GPUS_PER_RUN SLURM_CPUS_PER_RUN SLURM_SIGNAL_LEAD SLURM_POLL; do
    [[ "${!_var}" =~ ^[0-9]+$ ]] || _slurm_refuse "$_var=${!_var}; expected a whole number"
done
[[ "$SLURM_CPUS_PER_RUN" -ge 1 ]] || _slurm_refuse "SLURM_CPUS_PER_RUN=$SLURM_CPUS_PER_RUN; expected 1 or more"

_slurm_seconds() {  # a SLURM time (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) in seconds; fails on anything else
    local d=0 h=0 m=0 s=0 n='([0-9]+)'
    if [[ $1 =~ ^$n-$n(:$n)?(:$n)?$ ]]; then
        d=${BASH_REMATCH[1]} h=${BASH_REMATCH[2]} m=${BASH_REMATCH[4]:-0} s=${BASH_REMATCH[6]:-0}
    elif [[ $1 =~ ^$n:$n:$n$ ]]; then
        h=${BASH_REMATCH[1]} m=${BASH_REMATCH[2]} s=${BASH_REMATCH[3]}
    elif [[ $1 =~ ^$n(:$n)?$ ]]; then
        m=${BASH_REMATCH[1]} s=${BASH_REMATCH[3]:-0}
    else
        return 1
    fi
    echo $((((10#$d * 24 + 10#$h) * 60 + 10#$m) * 60 + 10#$s))
}
_time=$(_slurm_seconds "$SLURM_TIME") || _slurm_refuse "SLURM_TIME=$SLURM_TIME; expected minutes, H:M:S or D-H:M:S"
# SLURM may send the warning up to 60 s early: a job that gets it at once would requeue itself forever.
[[ $_time -ge $((SLURM_SIGNAL_LEAD + 120)) ]] || _slurm_refuse "SLURM_TIME=$SLURM_TIME is too short for" \
    "SLURM_SIGNAL_LEAD=$SLURM_SIGNAL_LEAD: the time limit must exceed the warning's lead by 2 minutes or more"
if [[ "$DRY_RUN" != 1 ]] && ! command -v sbatch >/dev/null; then
    _slurm_refuse "sbatch not found; run the sweep on a machine that submits to the cluster (a login node)"
fi
declare -A _SLURM_JOB_OF=()  # run directory -> its job id

_slurm_submit_one() {  # line of the job list
    local dir requires cmd old after="" id
    IFS=$'\t' read -r dir requires cmd <<<"$1"
    _skip_done "$dir" && return 0
    old=$(cat "$dir/slurm.jobid" 2>/dev/null || true)
    if [[ -n "$old" && "$DRY_RUN" != 1 && -n "$(squeue -h -j "$old" -o %i 2>/dev/null)" ]]; then  # queued or running
        echo "[queued] $dir: job $old (submitted earlier, still queued or running)"
        _SLURM_JOB_OF[$dir]=$old
        echo "$dir" >>"$_SWEEP_TMP/submitted"
        return 0
    fi
    local args=(--parsable --job-name="$(run_name "$dir")" --output="$dir/slurm-%j.log" --open-mode=append
        --partition="$SLURM_PARTITION" --time="$SLURM_TIME" --cpus-per-task="$SLURM_CPUS_PER_RUN" --requeue
        --signal="B:USR1@$SLURM_SIGNAL_LEAD")
    [[ -n "${SLURM_ACCOUNT:-}" ]] && args+=(--account="$SLURM_ACCOUNT")
    [[ -n "${SLURM_MEM:-}" ]] && args+=(--mem="$SLURM_MEM")
    [[ "$SLURM_GPUS_PER_RUN" -gt 0 ]] && args+=(--gres="gpu:${SLURM_GPU_TYPE:+$SLURM_GPU_TYPE:}$SLURM_GPUS_PER_RUN")
    if [[ "$requires" != - && ! -f "$requires" ]]; then
        after=${_SLURM_JOB_OF[$(dirname "$requires")]:-}
        if [[ -z "$after" ]]; then
            _failed "$dir" "missing $requires" \
                "$dir: needs $requires, which its base run did not produce (and no job of it is queued)"
            return 0
        fi
        args+=(--dependency="afterok:$after" --kill-on-invalid-dep=yes)
    fi
    # shellcheck disable=SC2206  # SLURM_EXTRA_ARGS: several words
    args+=(${SLURM_EXTRA_ARGS:-})
    if [[ "$DRY_RUN" == 1 ]]; then
        echo "[dry-run] sbatch $(printf '%q ' "${args[@]}" "$_SLURM_JOB_SCRIPT" "$dir" "$requires" "$cmd")"
        _SLURM_JOB_OF[$dir]="<job of $dir>"
        return 0
    fi
    mkdir -p "$dir"
    if ! id=$(sbatch "${args[@]}" "$_SLURM_JOB_SCRIPT" "$dir" "$requires" "$cmd" 2>"$_SWEEP_TMP/sbatch.err"); then
        _failed "$dir" "sbatch: $(head -n 1 "$_SWEEP_TMP/sbatch.err")" \
            "$dir: sbatch refused the job: $(cat "$_SWEEP_TMP/sbatch.err")"
        return 0
    fi
    id=${id%%;*}  # --parsable: "id" or "id;cluster"
    echo "$id" >"$dir/slurm.jobid"
    _SLURM_JOB_OF[$dir]=$id
    echo "$dir" >>"$_SWEEP_TMP/submitted"
    echo "[submitted] $dir: job $id${after:+ (after job $after)}, log $dir/slurm-$id.log"
}

_slurm_job_state() {  # job id: "STATE, exit CODE" while SLURM remembers the job (MinJobAge), else "state unknown"
    local info
    info=$(scontrol show job -o "$1" 2>/dev/null) || { echo "state unknown"; return; }
    echo "$(sed -n 's/.*JobState=\([^ ]*\).*/\1/p' <<<"$info"), exit $(sed -n 's/.* ExitCode=\([^ ]*\).*/\1/p' <<<"$info")"
}

# Submits every job added with add_job; with SLURM_WAIT=1 waits and reports; exits non-zero if any run failed.
slurm_sweep() {  # label
    local label=$1 line start=$SECONDS
    echo "== $label: $(queued_jobs | wc -l) runs, submitted to SLURM (partition $SLURM_PARTITION), runs under $RUNS_DIR"
    touch "$_SWEEP_TMP/submitted"
    while IFS= read -r line; do
        _slurm_submit_one "$line"
    done < <(cat "$_SWEEP_TMP"/phase[0-9] 2>/dev/null)
    [[ "$DRY_RUN" == 1 ]] && return 0
    local dirs=() ids=() dir i joined active last=""
    mapfile -t dirs <"$_SWEEP_TMP/submitted"
    for dir in "${dirs[@]}"; do ids+=("${_SLURM_JOB_OF[$dir]}"); done
    joined=$(IFS=,; echo "${ids[*]}")
    if [[ ${#ids[@]} -gt 0 && "$SLURM_WAIT" != 1 ]]; then
        echo "== $label: jobs ${joined//,/ } submitted; watch them: squeue -j $joined (logs: <run dir>/slurm-<job>.log)."
        echo "   When they have ended, run the same sweep again: it skips the finished runs and resubmits (and resumes)"
        echo "   the others."
    elif [[ ${#ids[@]} -gt 0 ]]; then
        echo "== $label: waiting for jobs ${joined//,/ } (squeue -j $joined)"
        while :; do
            if ! active=$(squeue -h -j "$joined" -o "%i %T" 2>&1); then
                # Every job has left SLURM's memory ("Invalid job id"), or the controller did not answer: try again.
                [[ "$active" == *"Invalid job id"* ]] && break
            elif [[ -z "$active" ]]; then
                break
            elif [[ "$active" != "$last" ]]; then
                echo "   $(date '+%T') $(tr '\n' ' ' <<<"$active")"
                last=$active
            fi
            sleep "$SLURM_POLL"
        done
        for i in "${!dirs[@]}"; do
            dir=${dirs[$i]}
            if [[ -f "$dir/results.json" ]]; then
                echo "[done]   $dir (job ${ids[$i]})"
                printf '%s\t%s\n' "$dir" "${ids[$i]}" >>"$_SWEEP_TMP/done"
            else
                _failed "$dir" "$dir/slurm-${ids[$i]}.log" "$dir: job ${ids[$i]} ended" \
                    "($(_slurm_job_state "${ids[$i]}")) without results.json; log: $dir/slurm-${ids[$i]}.log"
            fi
        done
        _summary "$label" "$start"
    fi
    _list_failed
}
