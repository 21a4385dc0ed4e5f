#!/usr/bin/env bash
# Stops the cluster started by tools/slurm/up.sh: cancels its jobs, then stops slurmd, slurmctld
# and (only if up.sh started it) munged, each by the PID in its PID file, never by name.
# Usage: tools/slurm/down.sh [BASE]   (the BASE given to up.sh; default /tmp/gradmm-slurm)
set -uo pipefail

BASE=${1:-${SLURM_CI_BASE:-/tmp/gradmm-slurm}}
export SLURM_CONF=$BASE/slurm.conf
export PATH=$PATH:/usr/sbin:/sbin

# live PID NAME: as in up.sh (a zombie does not count: PID 1 may reap exited daemons late).
live() {
  local state
  [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] || return 1
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# Cancel what is left so that slurmd takes its job steps down with it.
if live "$(cat "$BASE/slurmctld.pid" 2>/dev/null)" slurmctld; then
  jobs=$(timeout 5 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    # shellcheck disable=SC2086 # one argument per job id
    timeout 5 scancel $jobs
    for _ in $(seq 100); do [ -z "$(timeout 5 squeue -h 2>/dev/null)" ] && break; sleep 0.1; done
  fi
fi

pids=()
names=()
stop() { # stop PIDFILE NAME
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  if live "$pid" "$2"; then
    kill -TERM "$pid" && pids+=("$pid") && names+=("$2")
  fi
  rm -f "$1"
}
stop "$BASE/slurmd.pid" slurmd
stop "$BASE/slurmctld.pid" slurmctld
if [ -f "$BASE/munged.pid" ]; then
  stop "$BASE/munged.pid" munged
  rm -f /run/munge/munged.pid
fi

# Each daemon needs a second or two to exit; after 10 s, SIGKILL what is left.
left=()
for _ in $(seq 100); do
  left=()
  for i in "${!pids[@]}"; do live "${pids[$i]}" "${names[$i]}" && left+=("${pids[$i]}"); done
  [ ${#left[@]} -eq 0 ] && break
  sleep 0.1
done
for pid in "${left[@]}"; do
  echo "slurm down: killing $pid" >&2
  kill -KILL "$pid"
done
echo "slurm down"
