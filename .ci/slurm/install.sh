#!/usr/bin/env bash
# Install SLURM 22.05 (Debian 12 packages) with accounting: munge, MariaDB, slurmdbd.
# About 20 s on a fresh machine; a no-op when everything is installed. Needs root.
set -euo pipefail
need=()
for bin in sbatch slurmctld slurmd munged; do command -v "$bin" >/dev/null || need+=(slurm-wlm munge); done
command -v slurmdbd >/dev/null || need+=(slurmdbd)
command -v mysqld_safe >/dev/null || need+=(mariadb-server)
if [ ${#need[@]} -eq 0 ]; then echo "slurm: already installed (slurm-wlm $(dpkg-query -W -f '${Version}' slurm-wlm))"; exit 0; fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q slurm-wlm munge
# --no-install-recommends: the recommends pull in a mail server and perl modules we do not use.
apt-get install -y -q --no-install-recommends slurmdbd mariadb-server
echo "slurm: installed (slurm-wlm $(dpkg-query -W -f '${Version}' slurm-wlm))"
