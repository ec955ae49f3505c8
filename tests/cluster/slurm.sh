#!/usr/bin/env bash
# A private one-node SLURM on this machine, for tests/cluster/test_slurm.py (`make test-cluster`).
#
#   tests/cluster/slurm.sh start    install (Debian packages, when missing), configure, start, wait for the node
#   tests/cluster/slurm.sh stop     stop exactly the daemons `start` started, restore the configuration
#   tests/cluster/slurm.sh status   print the node and the recorded daemons
#
# The node is this host (127.0.0.1) with its real CPU count, RealMemory a little below `free -m`, and two
# fake GPUs (gres.conf File=/dev/null and /dev/zero), so that `--gpus=1` and `--gpus=2` are schedulable. There is no accounting database:
# `sacct` cannot answer, so clients must query job status with `squeue`, and MinJobAge keeps finished jobs
# visible to squeue / `scontrol show job` long enough (two hours) for both the executor plugin and the tests.
#
# Needs root. SLURM's own files live in $PIPELINE_SLURM_STATE (default /var/tmp/pipeline-slurm): daemon
# PIDs, logs, spool and state. /etc/slurm/slurm.conf must be the real path: the executor plugin runs `srun`
# with the SLURM_* variables removed, so SLURM_CONF cannot point elsewhere. An existing slurm.conf or
# gres.conf is saved in the state directory and put back by `stop`.
#
# Exit codes: 0 ok; 77 the Debian packages cannot be installed here (callers skip); 2 usage;
# 3 a SLURM daemon this script did not start is already running; 4 a daemon did not come up in time.
set -euo pipefail

STATE=${PIPELINE_SLURM_STATE:-/var/tmp/pipeline-slurm}
CONF_DIR=/etc/slurm
PACKAGES=(slurmctld slurmd slurm-client munge)
MIN_JOB_AGE=7200          # seconds; >= 3x the plugin's status-check delay (40 s by default, at most 180 s)
GPU_TYPE=fake             # the fake GPU's gres type: --gpus=1 and --gpus=fake:1 both fit it
PARTITION=${PIPELINE_SLURM_PARTITION:-debug}
MARKER="# written by tests/cluster/slurm.sh"

log() { printf 'slurm.sh: %s\n' "$*" >&2; }

need_root() {
    if [[ $(id -u) -ne 0 ]]; then
        log "must run as root (it installs packages and writes /etc/slurm)"
        exit 77
    fi
}

have_binaries() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sinfo >/dev/null \
        && command -v munged >/dev/null && command -v squeue >/dev/null
}

install_packages() {
    have_binaries && return 0
    if ! command -v apt-get >/dev/null; then
        log "SKIP: no apt-get on this machine; install ${PACKAGES[*]} by hand"
        exit 77
    fi
    # Debian starts services from the packages' postinst unless policy-rc.d says no: we start our own
    # daemons with our own configuration, so forbid that for the duration of the install.
    local policy=/usr/sbin/policy-rc.d added_policy=""
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
    fi
    local ok=""
    export DEBIAN_FRONTEND=noninteractive
    local apt=(timeout -k 10 600 apt-get -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    if "${apt[@]}" install --no-install-recommends "${PACKAGES[@]}" >"$STATE/apt.log" 2>&1; then
        ok=1
    elif timeout -k 10 300 apt-get -q update >>"$STATE/apt.log" 2>&1 \
        && "${apt[@]}" install --no-install-recommends "${PACKAGES[@]}" >>"$STATE/apt.log" 2>&1; then
        ok=1
    fi
    [[ -n $added_policy ]] && rm -f "$policy"
    if [[ -z $ok ]] || ! have_binaries; then
        log "SKIP: apt-get could not install ${PACKAGES[*]} (see $STATE/apt.log):"
        tail -n 5 "$STATE/apt.log" >&2 || true
        exit 77
    fi
}

# The PID recorded for daemon $1, if that process is still alive and still that program.
recorded_pid() {
    local name=$1 file="$STATE/$1.pid" pid
    [[ -f $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$name" ]] || return 1
    echo "$pid"
}

# Refuse to start next to a daemon of the same name that is not ours (a site SLURM, another test run).
check_foreign() {
    local name=$1 ours others
    ours=$(recorded_pid "$name" || true)
    others=$(pgrep -x "$name" | grep -vx "${ours:-none}" || true)
    if [[ -n $others ]]; then
        log "a $name this script did not start is running (pid $others); stop it first, it is left alone"
        exit 3
    fi
}

save_config() {
    local file
    mkdir -p "$CONF_DIR" "$STATE/saved-config"
    for file in slurm.conf gres.conf; do
        if [[ -f $CONF_DIR/$file ]] && ! grep -qF "$MARKER" "$CONF_DIR/$file" \
            && [[ ! -e $STATE/saved-config/$file ]]; then
            cp -p "$CONF_DIR/$file" "$STATE/saved-config/$file"
        fi
    done
}

write_config() {
    local node cpus mem
    node=$(hostname -s)
    cpus=$(nproc --all)
    # RealMemory a little below what is free now, so that slurmd does not drain the node as too small.
    mem=$(free -m | awk '/^Mem:/ {print $2}')
    mem=$(( mem > 2048 ? mem - 1024 : mem * 3 / 4 ))
    mkdir -p "$STATE/ctld" "$STATE/spool"
    cat >"$CONF_DIR/slurm.conf" <<EOF
$MARKER (state in $STATE)
ClusterName=pipelinetest
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.daemon.pid
SlurmdPidFile=$STATE/slurmd.daemon.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in containers and VMs without systemd: plain process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No accounting database: sacct has nothing to ask; job status comes from squeue.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Finished jobs stay visible to squeue and scontrol this long (seconds).
MinJobAge=$MIN_JOB_AGE
ReturnToService=2
SlurmdTimeout=300
GresTypes=gpu
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:$GPU_TYPE:2 State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    # A gres line without File= leaves the node unusable (invalid GRES count); two character devices that
    # every machine has stand in for two GPUs (a 2-process torchrun job asks for both).
    cat >"$CONF_DIR/gres.conf" <<EOF
$MARKER
NodeName=$node Name=gpu Type=$GPU_TYPE File=/dev/null
NodeName=$node Name=gpu Type=$GPU_TYPE File=/dev/zero
EOF
}

start_munge() {
    if recorded_pid munged >/dev/null; then
        return 0
    fi
    if timeout -k 5 10 munge -n 2>/dev/null | timeout -k 5 10 unmunge >/dev/null 2>&1; then
        log "a munged this script did not start answers; using it (stop leaves it running)"
        return 0
    fi
    check_foreign munged
    if [[ ! -s /etc/munge/munge.key ]]; then
        install -d -o munge -g munge -m 700 /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 755 /run/munge
    install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
    setsid setpriv --reuid munge --regid munge --init-groups munged --foreground \
        </dev/null >>"$STATE/munged.out" 2>&1 &
    echo $! >"$STATE/munged.pid"
    wait_for 30 "munged" bash -c 'munge -n | unmunge >/dev/null 2>&1'
}

# wait_for SECONDS WHAT COMMAND...: poll COMMAND every second until it succeeds.
wait_for() {
    local seconds=$1 what=$2 i
    shift 2
    for ((i = 0; i < seconds; i++)); do
        if timeout -k 2 10 "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 1
    done
    log "$what did not come up within ${seconds}s; logs in $STATE"
    tail -n 20 "$STATE"/*.log >&2 2>/dev/null || true
    exit 4
}

start_daemon() {  # start_daemon NAME ARGS...: run NAME in the foreground of its own session, record its PID
    local name=$1
    shift
    if recorded_pid "$name" >/dev/null; then
        return 0
    fi
    check_foreign "$name"
    setsid "$name" "$@" </dev/null >>"$STATE/$name.out" 2>&1 &
    echo $! >"$STATE/$name.pid"
}

node_idle() {
    [[ $(sinfo -h -N -o %T 2>/dev/null) =~ ^idle ]]
}

start() {
    need_root
    mkdir -p "$STATE"
    chmod 755 "$STATE"
    install_packages
    save_config
    write_config
    start_munge
    # -i: ignore state left by a previous test cluster (jobs, node states), start clean.
    start_daemon slurmctld -D -i
    wait_for 60 "slurmctld" scontrol ping
    start_daemon slurmd -D
    # A node left down by an earlier run comes back with ReturnToService=2; resume it in case it does not.
    wait_for 60 "slurmd registration" bash -c '[[ -n $(sinfo -h -N -o %T) && $(sinfo -h -N -o %T) != *unk* ]]'
    if ! node_idle; then
        timeout -k 2 10 scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
    fi
    wait_for 60 "an idle node" bash -c '[[ $(sinfo -h -N -o %T) =~ ^idle ]]'
    log "SLURM is up: $(sinfo -h -N -o '%N %T cpus=%c mem=%m gres=%G partition=%P')"
}

stop_daemon() {
    local name=$1 pid i
    if pid=$(recorded_pid "$name"); then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 30; i++)); do
            [[ -d /proc/$pid ]] || break
            sleep 1
        done
        if [[ -d /proc/$pid ]]; then
            log "$name (pid $pid) ignored SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$STATE/$name.pid"
}

stop() {
    need_root
    [[ -d $STATE ]] || { log "nothing to stop ($STATE is absent)"; return 0; }
    # Jobs still running on our node would leave slurmstepd processes behind: cancel them while the
    # controller (ours) still answers.
    if recorded_pid slurmctld >/dev/null; then
        local jobs
        jobs=$(timeout -k 2 20 squeue -h -t PENDING,RUNNING,SUSPENDED,COMPLETING -o %i 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086
            timeout -k 2 20 scancel $jobs >/dev/null 2>&1 || true
            sleep 2
        fi
    fi
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
    local file
    for file in slurm.conf gres.conf; do
        if [[ -f $STATE/saved-config/$file ]]; then
            mv -f "$STATE/saved-config/$file" "$CONF_DIR/$file"
        elif [[ -f $CONF_DIR/$file ]] && grep -qF "$MARKER" "$CONF_DIR/$file"; then
            rm -f "$CONF_DIR/$file"
        fi
    done
    log "stopped"
}

status() {
    local name pid
    for name in munged slurmctld slurmd; do
        if pid=$(recorded_pid "$name"); then echo "$name: pid $pid (started by slurm.sh)"; else echo "$name: -"; fi
    done
    timeout -k 2 10 sinfo -N -o '%N %T %c %m %G %P' 2>&1 || true
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
