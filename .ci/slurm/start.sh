#!/usr/bin/env bash
# Start a real SLURM cluster with accounting on this machine, as root, without systemd:
# munged, MariaDB, slurmdbd, slurmctld, and slurmd. Idempotent: running daemons are kept and
# checked. Fails loudly (exit 1, daemon logs) unless sinfo, sacctmgr and `srun hostname` all
# work at the end. Install the packages first: bash .ci/slurm/install.sh
#
# NODES=1 (the default): one node, this machine (`hostname -s`), partition `ci`.
# NODES=N (2 or more): also N nodes rnode1..rnodeN in partition `multi`, each a slurmd in its
# own network namespace (rp-rnodeI), UTS namespace (host name rnodeI) and mount namespace, joined to the
# controller by a bridge (rpbr0, 10.229.0.1/24) and veth pairs (rpvI <-> eth0 in the node,
# 10.229.0.(10+I)). Each namespace sees /etc/netns/rp-rnodeI/hosts as /etc/hosts, naming the
# nodes' addresses (what DNS is on a real cluster), in the node's own mount namespace. Private test addresses on this machine
# only: no route leaves it. The munge socket is a path on the shared file system, so every
# node reaches the one munged. Each multi node declares 4 CPUs (SlurmdParameters=
# config_overrides): more than this machine has, on purpose, so that one node holds the
# 4 tasks that a 2 x 2 job is compared with.
# Stop it with: bash .ci/slurm/stop.sh (it removes the namespaces, links and bridge too).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CONF=/etc/slurm/slurm.conf
CLUSTER=reproci
MARK="# written by .ci/slurm/start.sh"
NODES=${NODES:-1}
BRIDGE=rpbr0
NET=10.229.0          # a /24 of private addresses for the bridge and the namespaced nodes
CTL_IP=$NET.1
MULTI_CPUS=4

die() {
  echo "slurm: FAILED: $*" >&2
  for log in /var/log/slurm/slurmdbd.log /var/log/slurm/slurmctld.log /var/log/slurm/slurmd-*.log; do
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
[[ "$NODES" =~ ^[1-9]$ ]] || die "NODES=$NODES: give 1 to 9 nodes"
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
mkdir -p /run/slurm /var/lib/slurm/slurmctld /var/log/slurm /etc/slurm
node=$(hostname -s)
multi=()                                           # the namespaced nodes (NODES >= 2)
ctl_addr=127.0.0.1
if [ "$NODES" -ge 2 ]; then
  for i in $(seq "$NODES"); do multi+=("rnode$i"); done
  ctl_addr=$CTL_IP
fi
addr_of() { echo "$NET.$(( 10 + ${1#rnode} ))"; }   # rnodeI -> 10.229.0.(10+I)
hw=$(slurmd -C | head -n 1)                        # NodeName=... CPUs=... ... RealMemory=N
detected_mb=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
[ -n "$detected_mb" ] || die "slurmd -C did not report RealMemory: $hw"
memory_mb=$(( detected_mb * 95 / 100 ))            # leave room: a node claiming more is drained
hw=$(sed 's/ RealMemory=[0-9]*//' <<<"$hw")
new=$(mktemp)
sed -e "s|@NODE_HW@|$hw|" -e "s|@NODE@|$node|g" -e "s|@MEMORY_MB@|$memory_mb|" -e "s|@CTL_ADDR@|$ctl_addr|" \
  "$HERE/slurm.conf.in" > "$new"
if [ "$NODES" -ge 2 ]; then
  multi_mb=$(( memory_mb / NODES ))
  {
    echo "# NODES=$NODES: the namespaced nodes (start.sh), $MULTI_CPUS CPUs each whatever this machine has"
    echo "SlurmdParameters=config_overrides"
    for n in "${multi[@]}"; do
      echo "NodeName=$n NodeHostname=$n NodeAddr=$(addr_of "$n") CPUs=$MULTI_CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$MULTI_CPUS ThreadsPerCore=1 RealMemory=$multi_mb State=UNKNOWN"
    done
    echo "PartitionName=multi Nodes=$(IFS=,; echo "${multi[*]}") Default=NO MaxTime=INFINITE State=UP"
  } >> "$new"
fi
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

# 4. the namespaced nodes' network: a bridge, and per node a network namespace joined to it
# by a veth pair, with its own hosts file (/etc/netns/NS/hosts, bound on /etc/hosts in the node).
if [ "$NODES" -ge 2 ]; then
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip -br addr show dev "$BRIDGE" | grep -qF "$CTL_IP/24" || ip addr add "$CTL_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  hosts=$(printf '127.0.0.1 localhost\n%s %s\n' "$CTL_IP" "$node"; for n in "${multi[@]}"; do echo "$(addr_of "$n") $n"; done)
  for n in "${multi[@]}"; do
    ns=rp-$n veth=rpv${n#rnode}
    [ -e "/run/netns/$ns" ] || ip netns add "$ns"
    if ! ip link show "$veth" >/dev/null 2>&1; then
      ip -n "$ns" link del eth0 2>/dev/null || true
      ip link add "$veth" type veth peer name eth0 netns "$ns"
    fi
    ip link set "$veth" master "$BRIDGE" up
    ip -n "$ns" -br addr show dev eth0 | grep -qF "$(addr_of "$n")/24" || ip -n "$ns" addr add "$(addr_of "$n")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    mkdir -p "/etc/netns/$ns"
    echo "$hosts" > "/etc/netns/$ns/hosts"
  done
fi

# 5. slurmctld and slurmd (a changed configuration restarts them: the controller's address
# and the node set are read at start only)
slurmd_pid() { local f=/run/slurm/slurmd-$1.pid; [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"; }
if [ "$changed" = 1 ]; then
  for f in /run/slurm/slurmd-*.pid /run/slurm/slurmd.pid /run/slurm/slurmctld.pid; do
    [ -s "$f" ] || continue
    pid=$(cat "$f"); kill "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  done
fi
running slurmctld || /usr/sbin/slurmctld
wait_for 30 scontrol ping || die "slurmctld does not answer"
slurmd_pid "$node" >/dev/null || /usr/sbin/slurmd -N "$node"
for n in "${multi[@]}"; do
  mkdir -p "/var/lib/slurm/slurmd-$n"
  # Not `ip netns exec`: it mounts a fresh /sys, without the cgroup file system that slurmd
  # 22.05 insists on reading. Its own mount namespace gives the node its hosts file.
  slurmd_pid "$n" >/dev/null || nsenter --net="/run/netns/rp-$n" unshare --uts --mount --propagation slave \
    sh -c "mount --bind /etc/netns/rp-$n/hosts /etc/hosts && hostname $n && exec /usr/sbin/slurmd -N $n"
done
node_state() { sinfo -h -n "$1" -o %T 2>/dev/null | head -n 1; }
node_ready() { case "$(node_state "$1")" in idle|mixed|allocated|completing) return 0;; *) return 1;; esac; }
for n in "$node" "${multi[@]}"; do
  wait_for 30 node_ready "$n" || die "node $n is '$(node_state "$n")', not idle ($(sinfo -h -R 2>/dev/null | head -n 1))"
done

# 6. the checks: the scheduler, accounting, and a real job step (on every node)
sinfo
sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || die "cluster $CLUSTER is not in the accounting database"
out=$(timeout 60 srun -N1 -n1 -t 1 hostname 2>&1) || die "srun hostname failed: $out"
[ "$out" = "$(hostname)" ] || [ "$out" = "$node" ] || die "srun hostname printed '$out'"
if [ "$NODES" -ge 2 ]; then
  # One step over all the namespaced nodes: each task prints its node's host name and
  # address, which must be its own.
  out=$(timeout 60 srun -p multi -N "$NODES" --ntasks-per-node=1 -t 1 sh -c 'echo $(hostname) $SLURMD_NODENAME' 2>&1 | sort) \
    || die "srun over the multi partition failed: $out"
  want=$(for n in "${multi[@]}"; do echo "$n $n"; done | sort)
  [ "$out" = "$want" ] || die "srun over the multi partition printed '$out', not '$want'"
  echo "slurm: partition multi: ${multi[*]} (own network and UTS namespaces, $MULTI_CPUS CPUs each; srun OK)"
fi
echo "slurm: cluster $CLUSTER is up on $node ($(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw") CPUs, ${memory_mb} MB; srun OK)"
