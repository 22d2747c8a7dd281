#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the SLURM end-to-end test and CI.
#
#   tests/e2e/local_slurm.sh start   # start munged, slurmctld, slurmd; wait until the node is idle
#   tests/e2e/local_slurm.sh stop    # stop the daemons this script started
#   tests/e2e/local_slurm.sh status  # exit 0 if the cluster answers
#
# Needs Debian's slurm-wlm and munge (apt-get install -y slurm-wlm munge) and root (the
# daemons run as root). Config and state live in $XAIPIPE_SLURM_DIR (default
# /tmp/xaipipe-slurm); clients find the cluster through SLURM_CONF=$XAIPIPE_SLURM_DIR/slurm.conf.
# One partition "local" with this node: CPUs=2 (or nproc if smaller), RealMemory from
# /proc/meminfo, two stand-in GPU gres, proctrack/linuxproc, task/none, no accounting (sacct does not work, so
# Snakemake's SLURM executor is told to use squeue for job status).
set -euo pipefail

DIR="${XAIPIPE_SLURM_DIR:-/tmp/xaipipe-slurm}"
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"

write_config() {
  local node cpus mem
  node="$(hostname -s)"
  cpus="$(nproc)"; [ "$cpus" -gt 2 ] && cpus=2
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  rm -rf "$DIR/state"  # a fresh cluster each start: no old jobs or drained nodes
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/munge"
  cat > "$CONF" <<CONF
ClusterName=xaipipe-local
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6917
SlurmdPort=6918
MinJobAge=600
GresTypes=gpu
NodeName=$node CPUs=$cpus RealMemory=$mem Gres=gpu:2 State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
  # Two stand-in "GPUs" (/dev/null, /dev/zero: never opened) so that `sbatch --gpus=1`, which the profile's GPU
  # rules request, is accepted and scheduled, and at most two GPU jobs run at once.
  printf "NodeName=$node Name=gpu File=/dev/null\nNodeName=$node Name=gpu File=/dev/zero\n" > "$DIR/gres.conf"
}

start() {
  if [ -f "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null \
     && sinfo -h >/dev/null 2>&1; then
    echo "local_slurm: already running; export SLURM_CONF=$CONF"
    return 0
  fi
  for tool in munged slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || { echo "local_slurm: $tool not found (apt-get install -y slurm-wlm munge)" >&2; exit 2; }
  done
  write_config
  # Slurm's auth/munge talks to munged on its default socket; use a running one or start ours
  if ! munge -n >/dev/null 2>&1; then
    [ -f /etc/munge/munge.key ] || { echo "local_slurm: /etc/munge/munge.key missing (reinstall munge or run mungekey)" >&2; exit 2; }
    mkdir -p /run/munge
    munged --force --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
           --seed-file="$DIR/munge/munged.seed"
  fi
  # Commands inside jobs (srun of Snakemake's jobstep executor) do not inherit SLURM_CONF:
  # they read the default /etc/slurm/slurm.conf, so link ours there unless one exists.
  if [ ! -e /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf)" = "$CONF" ]; then
    mkdir -p /etc/slurm
    ln -sfn "$CONF" /etc/slurm/slurm.conf
  elif ! cmp -s /etc/slurm/slurm.conf "$CONF"; then
    echo "local_slurm: /etc/slurm/slurm.conf belongs to another cluster; not starting" >&2
    exit 2
  fi
  slurmctld -f "$CONF"
  slurmd -f "$CONF"
  for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
      echo "local_slurm: node idle; export SLURM_CONF=$CONF"
      return 0
    fi
    sleep 1
  done
  echo "local_slurm: node did not become idle; logs in $DIR/log" >&2
  sinfo >&2 || true
  exit 1
}

stop_pidfile() {
  local pidfile="$1"
  if [ -f "$pidfile" ]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  fi
}

stop() {
  stop_pidfile "$DIR/slurmd.pid"
  stop_pidfile "$DIR/slurmctld.pid"
  stop_pidfile "$DIR/munge/munged.pid"
  if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$CONF" ]; then
    rm -f /etc/slurm/slurm.conf
  fi
  echo "local_slurm: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo -h >/dev/null 2>&1 ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
