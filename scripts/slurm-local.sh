#!/usr/bin/env bash
# A real, single-node Slurm on this machine, for the sweep tests and for
# trying `collapse sweep --executor slurm` without a cluster.
#
#   scripts/slurm-local.sh start    install (apt) if missing, configure, start, wait until the node is idle
#   scripts/slurm-local.sh stop     cancel jobs, stop slurmd, slurmctld and the munged this script started
#   scripts/slurm-local.sh status   daemons and `sinfo`; exit 0 when the cluster answers
#
# Needs root (apt-get, daemons). Both commands are idempotent. The node is
# this machine (its cores and memory from `slurmd -C`), in one partition
# `debug`. No cgroups (containers lack them): proctrack/linuxproc and
# task/none. Requeue is allowed (JobRequeue=1) and a node that went down
# comes back by itself (ReturnToService=2). State, spool and logs live under
# $COLLAPSE_SLURM_DIR (default /var/spool/collapse-slurm); the config is
# written to /etc/slurm/slurm.conf, where every Slurm command finds it.
set -euo pipefail

DIR=${COLLAPSE_SLURM_DIR:-/var/spool/collapse-slurm}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARK="# written by collapse scripts/slurm-local.sh"
PARTITION=${COLLAPSE_SLURM_PARTITION:-debug}
WAIT_S=${COLLAPSE_SLURM_WAIT_S:-90}
NODE=$(hostname -s)

say() { echo "slurm-local: $*"; }
die() { echo "slurm-local: error: $*" >&2; exit 1; }

need_root() {
    [ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts the Slurm daemons)"
}

alive() {  # alive PIDFILE: the process in PIDFILE runs
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null 2>&1 || missing+=(slurmctld)
    command -v slurmd >/dev/null 2>&1 || missing+=(slurmd)
    command -v sinfo >/dev/null 2>&1 || missing+=(slurm-client)
    command -v munged >/dev/null 2>&1 || missing+=(munge)
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing slurm-wlm and munge (missing: ${missing[*]})"
    # Keep the packages' init scripts from starting daemons during the install:
    # this script starts them itself, with its own config.
    local policy=/usr/sbin/policy-rc.d placed=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && placed=1
    fi
    local rc=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge >"$DIR/apt.log" 2>&1; } || rc=$?
    [ $placed = 1 ] && rm -f "$policy"
    [ $rc = 0 ] || { tail -20 "$DIR/apt.log" >&2; die "apt-get install slurm-wlm munge failed (log: $DIR/apt.log)"; }
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0  # a munged already answers
    fi
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    if [ ! -s /etc/munge/munge.key ]; then
        say "creating a munge key"
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile=/etc/munge/munge.key --force
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
    fi
    if id munge >/dev/null 2>&1; then
        chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
        chmod 0700 /etc/munge /var/lib/munge /var/log/munge
        chmod 0755 /run/munge
        chmod 0400 /etc/munge/munge.key
        runuser -u munge -- /usr/sbin/munged
    else
        /usr/sbin/munged --force
    fi
    touch "$DIR/run/munged.ours"
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "munged did not come up (see /var/log/munge/munged.log)"
}

write_conf() {
    if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; move it away to use the local Slurm"
    fi
    # This machine as slurmd sees it: CPUs, sockets, cores, threads, RealMemory.
    local hw
    hw=$(slurmd -C 2>/dev/null | head -1 | sed -e 's/^NodeName=[^ ]* //') || true
    [ -n "$hw" ] || hw="CPUs=$(nproc) RealMemory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 ))"
    mkdir -p "$CONF_DIR"
    local tmp="$CONF.tmp$$"
    cat >"$tmp" <<EOF
$MARK
# A single-node cluster on this machine: $NODE, partition $PARTITION.
ClusterName=collapse-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
SlurmdTimeout=60
InactiveLimit=0
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=$NODE NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    if [ -f "$CONF" ] && cmp -s "$tmp" "$CONF"; then
        rm -f "$tmp"
        return 1  # unchanged
    fi
    mv "$tmp" "$CONF"
}

node_state() {
    timeout 10 sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -1 || true
}

start() {
    need_root
    mkdir -p "$DIR"/{state,spool,run,log}
    chmod 0755 "$DIR"
    install_packages
    start_munge
    local changed=0
    write_conf && changed=1
    if alive "$DIR/run/slurmctld.pid" && alive "$DIR/run/slurmd.pid"; then
        if [ $changed = 1 ]; then
            say "slurm.conf changed: reconfiguring"
            scontrol reconfigure
            sleep 2
        fi
        case "$(node_state)" in
            idle*|mixed*|alloc*|completing*) say "already running ($NODE: $(node_state))"; return 0 ;;
        esac
    fi
    alive "$DIR/run/slurmctld.pid" || slurmctld
    alive "$DIR/run/slurmd.pid" || slurmd
    local state="" waited=0
    while [ $waited -lt "$WAIT_S" ]; do
        state=$(node_state)
        case "$state" in
            idle*|mixed*|alloc*|completing*) say "up: node $NODE $state in partition $PARTITION"; return 0 ;;
            down*|drain*|drng*|fail*)
                # A state left over from an earlier run of this cluster.
                scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 1
        waited=$((waited + 1))
    done
    echo "--- slurmctld.log" >&2; tail -15 "$DIR/log/slurmctld.log" >&2 2>/dev/null || true
    echo "--- slurmd.log" >&2; tail -15 "$DIR/log/slurmd.log" >&2 2>/dev/null || true
    die "node $NODE not idle after ${WAIT_S}s (state: '${state:-no answer from sinfo}')"
}

stop_pid() {  # stop_pid PIDFILE NAME
    local f=$1 name=$2
    alive "$f" || return 0
    local pid
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { say "stopped $name"; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    say "killed $name (did not stop within 10s)"
}

stop() {
    need_root
    if [ -f "$CONF" ] && grep -qF "$MARK" "$CONF" && alive "$DIR/run/slurmctld.pid"; then
        local jobs
        jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)
        if [ -n "${jobs// }" ]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            say "cancelled jobs $jobs"
            for _ in $(seq 30); do
                [ -z "$(timeout 10 squeue -h -o %A 2>/dev/null)" ] && break
                sleep 0.5
            done
        fi
    fi
    stop_pid "$DIR/run/slurmd.pid" slurmd
    stop_pid "$DIR/run/slurmctld.pid" slurmctld
    local left
    left=$(pgrep -x slurmstepd 2>/dev/null | tr '\n' ' ' || true)
    [ -z "${left// }" ] || say "note: job step daemons still running (pids $left); they end with their jobs"
    if [ -f "$DIR/run/munged.ours" ]; then
        stop_pid /run/munge/munged.pid munged
        rm -f "$DIR/run/munged.ours"
    fi
    return 0
}

status() {
    local up=1
    for d in slurmctld slurmd; do
        if alive "$DIR/run/$d.pid"; then say "$d running (pid $(cat "$DIR/run/$d.pid"))"; else say "$d not running"; up=0; fi
    done
    if command -v sinfo >/dev/null 2>&1 && timeout 10 sinfo >/dev/null 2>&1; then
        timeout 10 sinfo -N -l || true
    else
        say "sinfo does not answer"
        up=0
    fi
    [ $up = 1 ]
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
