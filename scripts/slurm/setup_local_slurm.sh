#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for tests and CI: Debian's slurm-wlm (slurmctld, slurmd) and munge,
# as root, the node "localhost" (this machine's CPUs, no GPUs) in the partition "debug", no accounting, no cgroups.
#   sudo bash scripts/slurm/setup_local_slurm.sh      # then: sinfo; LAUNCHER=slurm SLURM_PARTITION=debug ...
# Idempotent; no systemd (logs in /var/log/slurm/; stop: kill the pids in /run/slurmctld.pid, /run/slurmd.pid,
# /run/munge/munged.pid). Exit codes: 0 up; 3 cannot be set up here (not root, no apt-get, a slurm.conf this script
# did not write); 1 set up but did not come up (see the logs).
set -euo pipefail
CONF=/etc/slurm/slurm.conf
MARK="# written by scripts/slurm/setup_local_slurm.sh"
PARTITION=debug

cannot() { echo "setup_local_slurm: cannot set up SLURM here: $*" >&2; exit 3; }
fail() {
    echo "setup_local_slurm: $*" >&2
    tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log 2>/dev/null >&2 || true
    exit 1
}

[[ $(id -u) == 0 ]] || cannot "needs root (it installs packages and starts slurmctld, slurmd and munged)"
if [[ -f "$CONF" ]] && ! grep -qF "$MARK" "$CONF"; then
    cannot "$CONF exists and was not written by this script; not touching a real cluster's configuration"
fi

if [[ $(command -v slurmctld slurmd munged sbatch | wc -l) -lt 4 ]]; then  # a package missing
    command -v apt-get >/dev/null || cannot "slurmctld/slurmd/munged missing and no apt-get to install them"
    echo "setup_local_slurm: installing slurm-wlm and munge (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm slurm-client munge >/dev/null; } || cannot "apt-get install slurm-wlm munge failed"
fi

# munge: the key (the package makes one; made here if not), the daemon.
munge_ok() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key
if ! munge_ok; then
    runuser -u munge -- munged || fail "munged did not start (see /var/log/munge/munged.log)"
    for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
    munge_ok || fail "munge does not answer"
fi

# slurm.conf: rewritten only when what it would say changes (a rewrite needs the daemons restarted).
cpus=$(nproc)
mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2))  # MiB offered to jobs: half of the memory
host=$(hostname -s)
new=$(
    cat <<EOF
$MARK: a single-node test cluster.
ClusterName=laomtest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire seconds before it starts again (default 120 s; short here, for tests).
AuthInfo=cred_expire=5
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Pending jobs (a requeued one once its begin time has come) are looked at every few seconds, not every 30-60 s.
SchedulerParameters=bf_interval=2,sched_interval=5
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=30
SlurmdTimeout=60
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm

running() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop() {  # pidfile: ends that daemon (a changed configuration)
    running "$1" || return 0
    local pid
    pid=$(cat "$1")
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}
if [[ ! -f "$CONF" ]] || [[ "$(cat "$CONF")" != "$new" ]]; then
    echo "$new" >"$CONF"
    stop /run/slurmd.pid
    stop /run/slurmctld.pid
fi
running /run/slurmctld.pid || slurmctld || fail "slurmctld did not start"
running /run/slurmd.pid || slurmd -N localhost || fail "slurmd did not start"

# Up when the node is idle (or already running jobs) in the partition.
for _ in $(seq 120); do
    state=$(sinfo -h -p "$PARTITION" -n localhost -o %T 2>/dev/null || true)
    case "$state" in
    idle* | mixed* | allocated* | completing*) echo "setup_local_slurm: node localhost is $state"; exit 0 ;;
    down* | drain*) scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
fail "the node did not become idle within 60 s (sinfo: ${state:-no answer})"
