#!/usr/bin/env bash
# Install and start a single-node SLURM cluster on this machine, for the tests
# of `run.launcher: slurm` (tests/test_launch_slurm.py).
#
# Debian's packages (slurmctld, slurmd, slurm-client, munge); no systemd is
# assumed: every daemon is started directly and writes its own pid file.
# Idempotent: when the configuration is unchanged and the daemons answer, it
# returns in well under a second. Needs root. Stop everything it started with
#     .ci/slurm-setup.sh stop
#
# Environment: LLMBENCH_SLURM_CONF (default /etc/slurm/slurm.conf) — a file
# that this script did not write is never overwritten.
set -euo pipefail

CONF=${LLMBENCH_SLURM_CONF:-/etc/slurm/slurm.conf}
MARK="# written by llmbench .ci/slurm-setup.sh"
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOGS=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid
export SLURM_CONF=$CONF

say() { echo "slurm-setup: $*"; }

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_daemon() {  # pid file: TERM, then wait until it is gone
    local pidfile=$1 pid
    alive "$pidfile" || return 0
    pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

if [ "${1:-}" = "stop" ]; then
    stop_daemon "$SLURMD_PID"
    stop_daemon "$CTLD_PID"
    stop_daemon "$MUNGE_PID"
    say "stopped"
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurmctld, slurmd, slurm-client and munge"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
fi

host=$(hostname -s)
cpus=$(nproc)
mem_mib=$(free -m | awk '/^Mem:/ {print $2}')

# Memory limits make SLURM kill a job's tasks for memory (the OOM test needs
# them); slurmstepd enforces them through a writable cgroup-v1 memory
# controller. Without one the cluster runs, but nothing is enforced.
probe=/sys/fs/cgroup/memory/llmbench-probe
if mkdir "$probe" 2>/dev/null && rmdir "$probe"; then
    task_plugin=task/cgroup
    select_params=CR_Core_Memory
    wanted_cgroup="$MARK
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainRAMSpace=yes
ConstrainSwapSpace=no
ConstrainCores=no
ConstrainDevices=no"
else
    task_plugin=task/none
    select_params=CR_Core
    wanted_cgroup=""
fi
wanted="$MARK
ClusterName=llmbench
SlurmctldHost=$host
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=$task_plugin
SelectType=select/cons_tres
SelectTypeParameters=$select_params
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=600
KillWait=5
NodeName=$host CPUs=$cpus RealMemory=$mem_mib State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP"

changed=0
write_conf() {  # path, content ("" removes the file): only files this script wrote
    local path=$1 content=$2
    if [ -e "$path" ] && ! head -n1 "$path" | grep -qF "$MARK"; then
        say "$path was not written by this script; using it as it is"
    elif [ "$(cat "$path" 2>/dev/null)" != "$content" ]; then
        mkdir -p "$(dirname "$path")"
        if [ -n "$content" ]; then printf '%s\n' "$content" >"$path"; else rm -f "$path"; fi
        changed=1
    fi
}
write_conf "$CONF" "$wanted"
write_conf "$(dirname "$CONF")/cgroup.conf" "$wanted_cgroup"

mkdir -p "$STATE" "$SPOOL" "$LOGS" /run/munge
chown slurm:slurm "$STATE" "$LOGS"
chown munge:munge /run/munge

if ! alive "$MUNGE_PID"; then
    [ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    runuser -u munge -- munged --pid-file="$MUNGE_PID"
fi

if [ "$changed" = 1 ]; then  # daemons read the configuration only when they start
    stop_daemon "$SLURMD_PID"
    stop_daemon "$CTLD_PID"
fi
alive "$CTLD_PID" || slurmctld
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
alive "$SLURMD_PID" || slurmd

state=""
for _ in $(seq 150); do
    state=$(sinfo -h -n "$host" -o %t 2>/dev/null | head -n1)
    case "$state" in
        idle | mix | alloc) break ;;
        down* | drain* | drng*) scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.2
done
case "$state" in
    idle | mix | alloc) say "node $host $state ($cpus CPUs, $mem_mib MiB, $task_plugin) — config $CONF" ;;
    *)
        say "node $host did not become idle (state '${state:-none}'); see $LOGS/"
        exit 1
        ;;
esac
