#!/usr/bin/env bash
# A one-node SLURM cluster for the tests, entirely under one directory:
#
#   tests/slurm/start-cluster.sh DIR
#
# writes DIR/slurm.conf for this host (CPUs and RealMemory from `slurmd -C`), a MUNGE key, and
# starts munged, slurmctld and slurmd in the foreground of background processes whose pids go to
# DIR/munged.pid, DIR/slurmctld.pid and DIR/slurmd.pid (the caller stops them by those pids; the
# daemons' logs are DIR/*.log). State, spool, sockets and logs all live under DIR; nothing
# system-wide is written, and free TCP ports are chosen, so a real SLURM on the host is left
# alone. Clients find the cluster with SLURM_CONF=DIR/slurm.conf (printed as the last line) and
# jobs need DIR/bin first on PATH (see DIR/bin/srun below).
# Waits until `sinfo` shows the node idle; on failure it stops what it started, prints the
# daemons' logs and exits non-zero.
#
# Needs root (slurmd launches jobs as their user; SlurmUser=root keeps one user for everything).
# No accounting database: AccountingStorageType=accounting_storage/none, so `sacct` knows no
# jobs; every finished job is written to DIR/jobcomp.log by jobcomp/filetxt instead.
set -euo pipefail

DIR=${1:?usage: start-cluster.sh DIR}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
TIMEOUT=${SLURM_START_TIMEOUT:-60}
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

for cmd in munged slurmctld slurmd sinfo srun; do
    command -v "$cmd" >/dev/null || { echo "start-cluster.sh: $cmd not found (apt-get install slurm-wlm)" >&2; exit 3; }
done
if [ "$(id -u)" != "0" ]; then
    echo "start-cluster.sh: must run as root (slurmd starts jobs as their user)" >&2
    exit 3
fi

started=()
cleanup() {
    for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${started[@]}"; do wait "$pid" 2>/dev/null || true; done
}
fail() {
    echo "start-cluster.sh: $*" >&2
    cleanup
    for log in "$DIR"/*.log; do
        [ -f "$log" ] && { echo "--- $log" >&2; tail -n 30 "$log" >&2; }
    done
    exit 1
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- MUNGE: own key, socket, pid, log and seed files under DIR
mkdir -p "$DIR/munge" "$DIR/state" "$DIR/spool"
chmod 755 "$DIR/munge"
KEY="$DIR/munge/munge.key"
[ -f "$KEY" ] || { dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none; chmod 400 "$KEY"; }
SOCKET="$DIR/munge/munge.socket"
munged --foreground --force --key-file="$KEY" --socket="$SOCKET" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munged.log" \
    --seed-file="$DIR/munge/munged.seed" </dev/null >>"$DIR/munged.log" 2>&1 &
started+=($!)
echo $! >"$DIR/munged.pid"
for _ in $(seq 50); do [ -S "$SOCKET" ] && break; sleep 0.1; done
[ -S "$SOCKET" ] || fail "munged did not create its socket $SOCKET"

# --- slurm.conf for this host
read -r NODE CPUS MEMORY < <(slurmd -C | head -n 1 | sed -E 's/^NodeName=([^ ]+).* CPUs=([0-9]+).* RealMemory=([0-9]+).*/\1 \2 \3/')
[ -n "${MEMORY:-}" ] || fail "could not read CPUs and RealMemory from 'slurmd -C'"
CTLD_PORT=$(free_port)
SLURMD_PORT=$(free_port)
while [ "$SLURMD_PORT" = "$CTLD_PORT" ]; do SLURMD_PORT=$(free_port); done
: >"$DIR/plugstack.conf"
cat >"$DIR/slurm.conf" <<EOF
# Written by tests/slurm/start-cluster.sh: a one-node test cluster under $DIR.
ClusterName=natv2test
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd-%n
SlurmctldPidFile=$DIR/state/slurmctld.daemon.pid
SlurmdPidFile=$DIR/spool/slurmd.daemon.pid
MailProg=/bin/true
PlugStackConfig=$DIR/plugstack.conf
# no cgroups, no accounting: starts in seconds in a container
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.log
# cores are scheduled, memory is checked against RealMemory but not consumed
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
MinJobAge=3600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$CPUS RealMemory=$MEMORY State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$DIR/slurm.conf"

# The slurm-jobstep executor plugin (0.6.1) drops every SLURM_* variable, SLURM_CONF included,
# before the `srun` it starts inside each job; that srun then looks for /etc/slurm/slurm.conf and
# fails ("Could not establish a configuration source"). Rather than write a system-wide config,
# DIR/bin/srun puts SLURM_CONF back: put DIR/bin first on the PATH of the submitting process.
mkdir -p "$DIR/bin"
printf '#!/bin/sh\nSLURM_CONF=%s exec %s "$@"\n' "'$SLURM_CONF'" "$(command -v srun)" >"$DIR/bin/srun"
chmod +x "$DIR/bin/srun"

# --- the daemons, in the foreground (-D) of background processes: their pids are exact, and
# without a LogFile in slurm.conf they log to stderr, DIR/slurmctld.log and DIR/slurmd.log
slurmctld -D -i -f "$SLURM_CONF" </dev/null >>"$DIR/slurmctld.log" 2>&1 &
started+=($!)
echo $! >"$DIR/slurmctld.pid"
slurmd -D -f "$SLURM_CONF" -N "$NODE" </dev/null >>"$DIR/slurmd.log" 2>&1 &
started+=($!)
echo $! >"$DIR/slurmd.pid"

deadline=$((SECONDS + TIMEOUT))
until [ "$(sinfo -h -n "$NODE" -o %t 2>/dev/null)" = "idle" ]; do
    for pid in "${started[@]}"; do
        kill -0 "$pid" 2>/dev/null || fail "a daemon (pid $pid) exited during start-up"
    done
    [ $SECONDS -lt $deadline ] || fail "node $NODE not idle after ${TIMEOUT}s: $(sinfo -h -o '%n %t' 2>&1)"
    sleep 0.5
done
echo "SLURM_CONF=$SLURM_CONF"
