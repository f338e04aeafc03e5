#!/usr/bin/env bash
# Stop the daemons started by .ci/slurm/start.sh, by their pid files; wait until they are gone.
# Then remove what start.sh made for the namespaced nodes (NODES >= 2): their network
# namespaces rp-rnode*, veth pairs, the bridge rpbr0 and /etc/netns/rp-rnode*.
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
# slurmd-NODE.pid: one per node; slurmd.pid: the name before there were several.
for f in /run/slurm/slurmd-*.pid /run/slurm/slurmd.pid /run/slurm/slurmctld.pid /run/slurm/slurmdbd.pid; do
  [ -e "$f" ] && stop_pidfile "$f"
done
if [ -s /run/mysqld/mysqld.pid ]; then mysqladmin shutdown 2>/dev/null || true; fi
stop_pidfile /run/munge/munged.pid
for path in /run/netns/rp-rnode*; do
  [ -e "$path" ] || continue
  ns=$(basename "$path")
  ip link del "rpv${ns#rp-rnode}" 2>/dev/null || true
  ip netns del "$ns" || echo "slurm: could not remove network namespace $ns" >&2
  rm -rf "/etc/netns/$ns"
done
rmdir /etc/netns 2>/dev/null || true
ip link show rpbr0 >/dev/null 2>&1 && { ip link del rpbr0 || echo "slurm: could not remove bridge rpbr0" >&2; }
echo "slurm: stopped"
