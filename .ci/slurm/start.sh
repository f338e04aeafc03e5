#!/usr/bin/env bash
# Start a real single-node SLURM cluster with accounting on this machine, as root, without
# systemd: munged, MariaDB, slurmdbd, slurmctld, slurmd. Idempotent: running daemons are kept
# and checked. Fails loudly (exit 1, daemon logs) unless sinfo, sacctmgr and `srun hostname`
# all work at the end. Install the packages first: bash .ci/slurm/install.sh
# Stop it with: bash .ci/slurm/stop.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CONF=/etc/slurm/slurm.conf
CLUSTER=reproci
MARK="# written by .ci/slurm/start.sh"

die() {
  echo "slurm: FAILED: $*" >&2
  for log in /var/log/slurm/slurmdbd.log /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log; do
    [ -s "$log" ] && { echo "--- last lines of $log" >&2; tail -n 15 "$log" >&2; }
  done
  exit 1
}
wait_for() {  # wait_for SECONDS COMMAND...: retry every 0.2 s
  local tries=$(( $1 * 5 )); shift
  for _ in $(seq "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}
running() { pgrep -x "$1" >/dev/null; }

[ "$(id -u)" = 0 ] || die "run as root (the daemons run as root or munge)"
for bin in munged slurmctld slurmd slurmdbd sacctmgr mysqld_safe; do
  command -v "$bin" >/dev/null || die "$bin not found: run bash .ci/slurm/install.sh first"
done
# Never overwrite a real cluster's configuration.
if [ -e "$CONF" ] && ! head -n 1 "$CONF" | grep -qF "$MARK"; then
  die "$CONF exists and was not written by this script: not touching a real cluster's config"
fi

# 1. munge (authentication between all SLURM daemons and commands)
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
mkdir -p /run/munge; chown munge:munge /run/munge
running munged || su -s /bin/sh munge -c /usr/sbin/munged
wait_for 10 sh -c 'munge -n | unmunge' || die "munged does not answer"

# 2. configuration, from this machine's name and hardware
mkdir -p /run/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm /etc/slurm
node=$(hostname -s)
hw=$(slurmd -C | head -n 1)                        # NodeName=... CPUs=... ... RealMemory=N
detected_mb=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
[ -n "$detected_mb" ] || die "slurmd -C did not report RealMemory: $hw"
memory_mb=$(( detected_mb * 95 / 100 ))            # leave room: a node claiming more is drained
hw=$(sed 's/ RealMemory=[0-9]*//' <<<"$hw")
new=$(mktemp)
sed -e "s|@NODE_HW@|$hw|" -e "s|@NODE@|$node|g" -e "s|@MEMORY_MB@|$memory_mb|" "$HERE/slurm.conf.in" > "$new"
changed=0
cmp -s "$new" "$CONF" || { install -m 644 "$new" "$CONF"; changed=1; }
rm -f "$new"
install -m 600 "$HERE/slurmdbd.conf" /etc/slurm/slurmdbd.conf

# 3. MariaDB and slurmdbd (accounting: sacct, which submitit reads job states from)
mkdir -p /run/mysqld; chown mysql:mysql /run/mysqld
if ! mysqladmin ping >/dev/null 2>&1; then (setsid mysqld_safe --user=mysql >/dev/null 2>&1 &); fi
wait_for 30 mysqladmin ping || die "MariaDB did not start"
if [ ! -e /var/lib/slurm/slurmctld/job_state ] && ! running slurmctld && ! running slurmdbd; then
  # A new controller state numbers jobs from 1 again: records of an earlier cluster's jobs
  # with the same numbers would answer sacct (and submitit) for the new ones. Start afresh.
  mysql -e "DROP DATABASE IF EXISTS slurm_acct_db"
fi
mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
          CREATE DATABASE IF NOT EXISTS slurm_acct_db;
          GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
running slurmdbd || /usr/sbin/slurmdbd
wait_for 30 sacctmgr -n list cluster || die "slurmdbd does not answer sacctmgr"
sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null

# 4. slurmctld and slurmd
if [ "$changed" = 1 ] && running slurmctld; then scontrol reconfigure || true; fi
running slurmctld || /usr/sbin/slurmctld
wait_for 30 scontrol ping || die "slurmctld does not answer"
running slurmd || /usr/sbin/slurmd
node_state() { sinfo -h -n "$node" -o %T 2>/dev/null | head -n 1; }
node_ready() { case "$(node_state)" in idle|mixed|allocated|completing) return 0;; *) return 1;; esac; }
wait_for 30 node_ready || die "node $node is '$(node_state)', not idle ($(sinfo -h -R 2>/dev/null | head -n 1))"

# 5. the checks: the scheduler, accounting, and a real job step
sinfo
sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || die "cluster $CLUSTER is not in the accounting database"
out=$(timeout 60 srun -N1 -n1 -t 1 hostname 2>&1) || die "srun hostname failed: $out"
[ "$out" = "$(hostname)" ] || [ "$out" = "$node" ] || die "srun hostname printed '$out'"
echo "slurm: cluster $CLUSTER is up on $node ($(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw") CPUs, ${memory_mb} MB; srun OK)"
