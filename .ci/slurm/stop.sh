#!/usr/bin/env bash
# Stop the daemons started by .ci/slurm/start.sh, by their pid files; wait until they are gone.
# Queued jobs stay in the state folder and run again at the next start (scancel them first if
# that is not wanted).
set -uo pipefail
stop_pidfile() {  # stop_pidfile FILE: SIGTERM the pid in FILE, wait up to 10 s
  local pid
  [ -s "$1" ] || return 0
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  echo "slurm: pid $pid ($1) did not stop" >&2
}
for f in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid /run/slurm/slurmdbd.pid; do stop_pidfile "$f"; done
if [ -s /run/mysqld/mysqld.pid ]; then mysqladmin shutdown 2>/dev/null || true; fi
stop_pidfile /run/munge/munged.pid
echo "slurm: stopped"
