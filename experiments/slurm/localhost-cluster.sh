#!/usr/bin/env bash
# A single-node Slurm "cluster" on this machine (controller and compute node both on
# localhost), for testing experiments/slurm/sweep.sbatch: Debian's slurm-wlm and munge.
#
#   bash experiments/slurm/localhost-cluster.sh start   # install if needed, configure, start
#   bash experiments/slurm/localhost-cluster.sh stop
#
# Needs root (it writes /etc/slurm/slurm.conf and starts daemons). Exit 0 once `sinfo` shows
# the node idle; otherwise exit 1 with the daemons' logs on stderr.
set -euo pipefail

cmd="${1:-start}"
host="$(hostname -s)"
logdir=/var/log/slurm-localhost
# The node declares more CPUs than the machine may have (config_overrides), so a few
# single-CPU array tasks run at once even on a 2-core machine.
cpus="${SAERUN_SLURM_CPUS:-4}"

stop() {
  for pidfile in /run/slurmctld.pid /run/slurmd.pid /run/munge/munged.pid; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    # Wait for it to exit, so a restart never meets the old daemon on its port.
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    rm -f "$pidfile"
  done
}

if [ "$cmd" = stop ]; then
  stop
  exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

mkdir -p "$logdir" /var/spool/slurmctld /var/spool/slurmd /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi

mkdir -p /etc/slurm
cat > /etc/slurm/slurm.conf <<CONF
# Written by experiments/slurm/localhost-cluster.sh: one node, everything on localhost.
ClusterName=saerun-localhost
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=${logdir}/slurmctld.log
SlurmdLogFile=${logdir}/slurmd.log
# No cgroups (a container may not delegate them): plain process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
MinJobAge=3600
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
# slurmd 22.05 reads cgroup.conf even without cgroup plugins; none is needed here.
rm -f /etc/slurm/cgroup.conf

stop
runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid 2>>"$logdir/munged.err" \
  || /usr/sbin/munged --force --pid-file=/run/munge/munged.pid
/usr/sbin/slurmctld
/usr/sbin/slurmd

for _ in $(seq 60); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
    sinfo
    exit 0
  fi
  sleep 1
done
echo "slurm did not come up; sinfo says: $(sinfo 2>&1)" >&2
tail -n 30 "$logdir"/*.log "$logdir"/*.err >&2 || true
exit 1
