#!/usr/bin/env bash
# Install SLURM and MUNGE (Debian's slurm-wlm) for the cluster test (tests/test_slurm.py, which
# starts its own one-node cluster with tests/slurm/start-cluster.sh). Idempotent.
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
    && command -v sbatch >/dev/null; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    SUDO="sudo"
fi
$SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm >/dev/null
