#!/bin/sh
# slurm.sh: a private single-node Slurm for the specs (as root): munged,
# slurmctld and slurmd with their own key, socket, ports, state, spool,
# pid and log files, all inside DIR; nothing system-wide is touched.
#
#   slurm.sh start DIR   make DIR/slurm.conf, start the three daemons, wait
#                        until the node is idle; prints SLURM_CONF's path.
#                        Exit 77: this machine cannot run them (not root, no cgroup file system,
#                        a program missing), with the reason on stderr.
#   slurm.sh stop DIR    stop every daemon started in DIR (by its pid file)
#
# Debian 12's Slurm 22.05, without slurmdbd (so no sacct: the specs look at
# jobs with squeue and scontrol).
set -u
cmd=$1 dir=$2

# The pids of the daemons started in DIR, from their pid files.
pids() {
    for f in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
        [ -s "$f" ] && cat "$f" 2>/dev/null
    done
}

stop() {
    for p in $(pids); do kill "$p" 2>/dev/null; done
    # Each daemon removes its pid file as it ends; wait up to 5 s, then
    # kill what is left.
    for _ in $(seq 50); do
        alive=
        for p in $(pids); do
            # A zombie (no init reaps it here) has ended.
            [ -r "/proc/$p/stat" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$p/stat" && alive=1
        done
        [ -z "$alive" ] && return 0
        sleep 0.1
    done
    for p in $(pids); do kill -9 "$p" 2>/dev/null; done
    return 0
}

# A TCP port from 20000 to 59999 that nothing listens on or uses (not
# in /proc/net/tcp or tcp6), picked at random; $1 makes two calls differ.
free_port() {
    seed=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
    for i in $(seq 200); do
        port=$((20000 + (seed + i * 7919 + $1 * 104729) % 40000))
        hex=$(printf ':%04X ' "$port")
        if ! cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -q "$hex"; then
            echo "$port"
            return 0
        fi
    done
    echo "slurm.sh: no free port found" >&2
    return 1
}

start() {
    if [ "$(id -u)" != 0 ]; then
        echo "slurm.sh: the private Slurm daemons need root (slurmd runs jobs as their users)" >&2
        exit 77
    fi
    for p in munged slurmctld slurmd sbatch squeue scancel sinfo scontrol runuser; do
        if ! command -v "$p" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$p" ]; then
            echo "slurm.sh: $p is missing: install the Debian packages slurmctld slurmd slurm-client munge" >&2
            exit 77
        fi
    done
    # slurmd's cgroup plugin needs the cgroup file system, which every
    # booted Debian has mounted; a bare chroot (fresh-debian's) has not.
    if ! awk '$2 == "/sys/fs/cgroup" { found = 1 } END { exit !found }' /proc/mounts; then
        echo "slurm.sh: slurmd needs a cgroup file system at /sys/fs/cgroup, and this machine (a chroot?) has none mounted" >&2
        exit 77
    fi
    PATH=$PATH:/usr/sbin
    chmod 755 "$dir"
    mkdir -p "$dir/munge" "$dir/state" "$dir/spool"
    chown munge: "$dir/munge"
    chmod 700 "$dir/munge"
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 2>/dev/null
    chown munge: "$dir/munge/munge.key"
    chmod 400 "$dir/munge/munge.key"
    runuser -u munge -- munged --socket="$dir/munge/sock" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed" --force || { echo "slurm.sh: munged did not start" >&2; exit 1; }
    # Addresses given outright: the machine's name need not resolve (a
    # minimal Debian has no /etc/hosts entry for it).
    host=$(hostname -s)
    ctld_port=$(free_port 0)
    d_port=$(free_port 1)
    while [ "$d_port" = "$ctld_port" ]; do d_port=$(free_port 1); done
    cat >"$dir/slurm.conf" <<CONF
ClusterName=fflua
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/sock
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
KillWait=2
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -f "$SLURM_CONF" || { echo "slurm.sh: slurmctld did not start" >&2; stop; exit 1; }
    slurmd -f "$SLURM_CONF" || { echo "slurm.sh: slurmd did not start" >&2; stop; exit 1; }
    for _ in $(seq 150); do
        state=$(sinfo -h -o %T 2>/dev/null)
        if [ "$state" = idle ]; then
            echo "$SLURM_CONF"
            return 0
        fi
        sleep 0.1
    done
    echo "slurm.sh: the node is not idle after 15 s (sinfo: ${state:-nothing})" >&2
    tail -5 "$dir/slurmctld.log" "$dir/slurmd.log" >&2
    stop
    exit 1
}

case $cmd in
start) start ;;
stop) stop ;;
*) echo "usage: slurm.sh start|stop DIR" >&2; exit 2 ;;
esac
