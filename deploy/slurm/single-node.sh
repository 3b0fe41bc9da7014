#!/usr/bin/env bash
# A one-machine Slurm cluster from Debian's packages (slurm-wlm, munge), for trying analyze-array.sh and for the
# project's Slurm test. As root, without systemd: installs the packages if missing, writes a munge key and a
# slurm.conf for this host, starts munged, slurmctld and slurmd. `stop` stops the three daemons.
set -euo pipefail
fail() { echo "error: $*" >&2; exit 1; }
conf=/etc/slurm/slurm.conf

stop() {
  scontrol shutdown >/dev/null 2>&1 || true
  for d in slurmd slurmctld munged; do pkill -x "$d" >/dev/null 2>&1 || true; done
  running() { pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || pgrep -x munged >/dev/null; }
  for _ in $(seq 50); do running || return 0; sleep 0.2; done
  for d in slurmd slurmctld munged; do pkill -9 -x "$d" >/dev/null 2>&1 || true; done
}

start() {
  [[ "$(id -u)" == 0 ]] || fail "single-node.sh start needs root (it installs packages and starts daemons)."
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; } \
      || fail "could not install slurm-wlm and munge with apt-get."
  fi
  stop
  host="$(hostname -s)"
  mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  [[ -s /etc/munge/munge.key ]] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
  chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged || fail "munged did not start."
  cat > "$conf" <<EOF
# Written by relu-sparsity's deploy/slurm/single-node.sh: one node, no cgroups, no accounting.
ClusterName=relu-sparsity-test
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=600
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host CPUs=$(nproc) State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  slurmctld || fail "slurmctld did not start (see /var/log/slurm/slurmctld.log)."
  slurmd || fail "slurmd did not start (see /var/log/slurm/slurmd.log)."
  for _ in $(seq 120); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qx 'idle'; then echo "Slurm is up: one node ($host, $(nproc) CPUs), partition main."; return 0; fi
    sleep 0.5
  done
  fail "the node did not become idle within 60 s: $(sinfo -h -o '%T %E' 2>&1 | head -1) (see /var/log/slurm)."
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "Usage: single-node.sh start|stop" >&2; exit 2 ;;
esac
