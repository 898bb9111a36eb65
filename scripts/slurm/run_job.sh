#!/usr/bin/env bash
# One run of a sweep as a SLURM batch job; scripts/sweeps/common.sh submits it with LAUNCHER=slurm:
#   sbatch --requeue --signal=B:USR1@<seconds> ... scripts/slurm/run_job.sh RUN_DIR REQUIRES COMMAND
# REQUIRES: a file the run reuses, or "-"; COMMAND: shell-quoted. USR1 (the time-limit warning) is forwarded to the
# run, which checkpoints and exits 75, and the job requeued (it resumes); TERM checkpoints and ends the job.

set -uo pipefail
PREEMPTED_EXIT_CODE=75  # src/stage.py PREEMPTED_EXIT_CODE
if [[ $# -ne 3 ]]; then
    echo "usage: sbatch ... $0 RUN_DIR REQUIRES COMMAND (see scripts/sweeps/common.sh)" >&2
    exit 2
fi
dir=$1 requires=$2 cmd=$3
# Threads of the run: the cores of the job, not of the node (unless the sweep's environment sets them).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
job=${SLURM_JOB_ID:-none}
say() { echo "# $(date '+%F %T') job $job$*"; }  # a line of the job's log
say " (start $((${SLURM_RESTART_COUNT:-0} + 1))) on $(hostname): $cmd"
if [[ "$requires" != - && ! -f "$requires" ]]; then
    echo "error: $dir needs $requires, which its base run did not produce" >&2
    exit 2
fi

got="" pid=""  # the signal this script received, the run's process
# shellcheck disable=SC2317  # called by the traps below
forward() {
    got=$1
    printf "\n"
    say " got SIG$1: the run checkpoints after its current update"
    [[ -n "$pid" ]] && kill -s "$1" -- "-$pid" 2>/dev/null
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM
# The run leads a process group of its own (exec): a signal to the group also reaches torchrun's workers.
eval "exec setsid $cmd" &
pid=$!
while :; do
    wait "$pid"
    status=$?
    # A wait interrupted by a trapped signal returns > 128 while the run goes on: wait again.
    [[ $status -gt 128 ]] && kill -0 "$pid" 2>/dev/null && continue
    break
done
# Processes of the run still finishing (workers writing their checkpoint) end before the job is requeued or ends.
for _ in $(seq 60); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 1
done
[[ $status == 0 ]] && say ": the run finished" && exit 0
if [[ "$got" == USR1 && ($status == "$PREEMPTED_EXIT_CODE" || $status -gt 128) ]]; then
    # Stopped on the warning (checkpointed, or killed outside an update loop: it resumes either way); requeue it.
    # SLURM ends this incarnation of the job (SIGTERM) as it requeues it: the line comes first.
    say ": requeueing (exit $status); it starts again and resumes the run"
    scontrol requeue "$job" && exit 0
    echo "error: job $job stopped on SIGUSR1 (exit $status) but could not be requeued; submit the sweep again to" \
        "resume $dir" >&2
    exit "$PREEMPTED_EXIT_CODE"
fi
if [[ $status == "$PREEMPTED_EXIT_CODE" ]]; then
    say ": the run checkpointed on SIG${got:-TERM} and stopped; submit the sweep again (or requeue the job) to" \
        "resume $dir" >&2
elif [[ -n "$got" ]]; then
    say ": the run was stopped by SIG$got (exit $status) outside a stage's update loop; when the job is requeued or" \
        "the sweep submitted again it resumes $dir from its last checkpoint" >&2
else
    echo "error: job $job: the run failed (exit $status); see above. Submitting the sweep again resumes $dir from" \
        "its last checkpoint" >&2
fi
exit "$status"
