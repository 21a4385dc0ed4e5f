#!/usr/bin/env bash
# Starts a throwaway one-node Slurm cluster (munge + slurmctld + slurmd) for tests and CI, with no
# systemd. Needs root and Debian's packages:
#   apt-get install -y slurmctld slurmd slurm-client munge
# Usage: tools/slurm/up.sh [BASE]     (BASE: state folder, default /tmp/gradmm-slurm)
# Then:  export SLURM_CONF=BASE/slurm.conf; sbatch ...;  tools/slurm/down.sh [BASE]
#
# Everything Slurm writes lives under BASE with its own slurm.conf and ports (16817/16818, or
# SLURMCTLD_PORT/SLURMD_PORT), so a real /etc/slurm setup is left alone. munge is shared: a
# munged that already answers is used as it is; otherwise one is started and stopped by down.sh.
set -euo pipefail

BASE=${1:-${SLURM_CI_BASE:-/tmp/gradmm-slurm}}
CTLD_PORT=${SLURMCTLD_PORT:-16817}
SLURMD_PORT=${SLURMD_PORT:-16818}
NODE=$(hostname -s)
export SLURM_CONF=$BASE/slurm.conf
export PATH=$PATH:/usr/sbin:/sbin

fail() { echo "slurm up: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (munged runs as user munge, slurmd as root); run as root or skip"
for b in munged munge unmunge slurmctld slurmd sinfo sbatch; do
  command -v "$b" >/dev/null || fail "'$b' not found: apt-get install -y slurmctld slurmd slurm-client munge"
done

# live PID NAME: the process exists, is called NAME, and is not a zombie. Without a real init as
# PID 1 a daemon that exited can linger as a zombie, so a bare `kill -0` would call it alive.
live() {
  local state
  [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] || return 1
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
munge_ok() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

mkdir -p "$BASE/state" "$BASE/spool" "$BASE/log"

# ---- munge: credentials between the Slurm daemons and clients
if ! munge_ok; then
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null ||
      head -c 1024 /dev/urandom >/etc/munge/munge.key
  fi
  # munged refuses keys and folders that others can read or write.
  chown munge:munge /etc/munge /etc/munge/munge.key
  chmod 700 /etc/munge
  chmod 400 /etc/munge/munge.key
  # /run is a tmpfs on a fresh boot or container: the package's folder may be gone.
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge
  chmod 755 /run/munge
  rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
  runuser -u munge -- munged
  for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
  munge_ok || fail "munged did not answer; see /var/log/munge/munged.log"
  cp /run/munge/munged.pid "$BASE/munged.pid" # ours: down.sh stops it
fi

# ---- slurm.conf: one node, one partition, no accounting, no cgroups, no mail
CPUS=$(slurmd -C 2>/dev/null | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -1)
CPUS=${CPUS:-$(nproc)}
cat >"$SLURM_CONF" <<EOF
ClusterName=gradmm-ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
# Debian's default MailProg (/usr/bin/mail) is not installed; slurmctld refuses to start without it.
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/slurmctld.pid
SlurmdPidFile=$BASE/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

# ---- daemons (both fork into the background and write their PID files)
if ! live "$(cat "$BASE/slurmctld.pid" 2>/dev/null)" slurmctld; then
  rm -rf "$BASE/state"/* # a throwaway cluster starts with no jobs
  slurmctld -f "$SLURM_CONF"
fi
if ! live "$(cat "$BASE/slurmd.pid" 2>/dev/null)" slurmd; then
  slurmd -f "$SLURM_CONF" -N "$NODE"
fi

state=""
for _ in $(seq 300); do
  state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  if [ "$state" = idle ]; then
    echo "slurm up: node $NODE ($CPUS CPUs); export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.1
done
fail "node $NODE did not become idle (state '$state'); logs in $BASE/log"
