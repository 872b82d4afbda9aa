#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try slurm/*.sbatch and run tests/test_slurm.py.
# Not for production: the daemons run as root, no accounting, no cgroups (works in containers).
#   sudo scripts/slurm_local.sh start    # apt-get installs slurm-wlm + munge if missing, starts
#                                        # munged, slurmctld, slurmd; waits until the node is idle
#   scripts/slurm_local.sh status        # sinfo + squeue
#   sudo scripts/slurm_local.sh stop     # cancels its jobs, stops the daemons it started
# Config, state, spool and logs live in $SLURM_LOCAL_DIR (default /tmp/elastic-slurm);
# /etc/slurm/slurm.conf is linked to its slurm.conf while the cluster runs (unless that file is
# someone else's: then export SLURM_CONF=$SLURM_LOCAL_DIR/slurm.conf). start/stop are idempotent.
set -euo pipefail
DIR="${SLURM_LOCAL_DIR:-/tmp/elastic-slurm}"
CONF="$DIR/slurm.conf"
ETC=/etc/slurm/slurm.conf
export SLURM_CONF="$CONF"
die() { echo "slurm_local: $*" >&2; exit 1; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root (sudo $0 $1)"; }

install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
  need_root start
  echo "slurm_local: installing slurm-wlm and munge with apt-get" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >&2
}

write_conf() {
  local host node
  host="$(hostname -s)"
  node="$(slurmd -C | head -1 | sed "s/^NodeName=[^ ]*/NodeName=$host NodeAddr=127.0.0.1/")"  # CPUs, RealMemory, ...
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
  cat > "$CONF.new" <<EOF
# written by scripts/slurm_local.sh: one node, this host, daemons as root, no cgroups/accounting
ClusterName=elastic-local
MpiDefault=none
MailProg=/bin/true
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
SchedulerType=sched/backfill
SchedulerParameters=kill_invalid_depend
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MinJobAge=600
ReturnToService=2
$node State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.new" "$CONF"
  if [ ! -e "$ETC" ] || [ "$(readlink "$ETC")" = "$CONF" ]; then ln -sfn "$CONF" "$ETC"
  else echo "slurm_local: $ETC exists; export SLURM_CONF=$CONF before sbatch/sinfo" >&2; fi
}

start() {
  install
  need_root start
  write_conf
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then  # no munged answering yet: start ours
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- munged && touch "$DIR/munged.ours"
  fi
  alive "$DIR/slurmctld.pid" || slurmctld
  alive "$DIR/slurmd.pid" || slurmd
  for _ in $(seq 60); do
    case "$(sinfo -h -N -o %t 2>/dev/null)" in idle|mix|alloc) status; return;; esac
    sleep 1
  done
  die "node not idle after 60 s; see $DIR/log/"
}

stop() {
  need_root stop
  local jobs
  jobs="$(squeue -h -o %A 2>/dev/null || true)"
  if [ -n "$jobs" ]; then scancel $jobs; sleep 3; fi  # our private cluster: every job is ours
  for d in slurmd slurmctld; do
    if alive "$DIR/$d.pid"; then kill "$(cat "$DIR/$d.pid")"; fi
  done
  if [ -f "$DIR/munged.ours" ] && alive /run/munge/munged.pid; then kill "$(cat /run/munge/munged.pid)"; fi
  rm -f "$DIR/munged.ours"
  for _ in $(seq 20); do alive "$DIR/slurmd.pid" || alive "$DIR/slurmctld.pid" || break; sleep 0.5; done
  [ "$(readlink "$ETC" 2>/dev/null)" = "$CONF" ] && rm -f "$ETC"
  echo "slurm_local: stopped"
}

status() {
  [ -f "$CONF" ] || die "not configured ($CONF missing): $0 start"
  sinfo && squeue || die "no controller answers: $0 start"
}

case "${1:-}" in
  start|stop|status) "$1" ;;
  *) echo "usage: $0 start|stop|status   (one-node SLURM cluster in ${DIR})" >&2; exit 2 ;;
esac
