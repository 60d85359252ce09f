#!/usr/bin/env bash
# Install and start a real single-node SLURM cluster on this machine (loopback only), so the
# workflow's `--profile slurm` path can be tested against real sbatch/squeue/scancel.
#
# Idempotent: re-running it keeps an existing munge key, rewrites the config only when it
# changed, and restarts the daemons only when they are not running or the config changed.
# Must run as root (CI calls it before the test suite). Two *fake* GPUs (gres type "fake",
# backed by plain files) make GPU requests schedulable; nothing runs on them.
#
#   sudo scripts/slurm-local-setup.sh          # install + start; prints `sinfo` at the end
#   SLURM_FAKE_GPUS=4 scripts/slurm-local-setup.sh
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "slurm-local-setup: must run as root (it installs packages and starts daemons)" >&2
  exit 2
fi

FAKE_GPUS=${SLURM_FAKE_GPUS:-2}
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 1024 ))

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# --- munge: one key, owned by the munge user; then the daemon -------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  su -s /bin/sh munge -c /usr/sbin/munged
  for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
fi

# --- slurm.conf + gres.conf ------------------------------------------------------------------
mkdir -p /etc/slurm /var/spool/slurmd /var/spool/slurmctld
last=$((FAKE_GPUS - 1))
conf=$(cat <<CONF
ClusterName=local
SlurmctldHost=${HOST}(127.0.0.1)
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SlurmUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurmctld.log
SlurmdLogFile=/var/log/slurmd.log
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=600
GresTypes=gpu
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} Gres=gpu:fake:${FAKE_GPUS} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
CONF
)
gres="NodeName=${HOST} Name=gpu Type=fake File=/tmp/fakegpu[0-${last}]"
changed=0
if [[ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" != "$conf" ]]; then
  printf '%s\n' "$conf" >/etc/slurm/slurm.conf; changed=1
fi
if [[ "$(cat /etc/slurm/gres.conf 2>/dev/null)" != "$gres" ]]; then
  printf '%s\n' "$gres" >/etc/slurm/gres.conf; changed=1
fi
for i in $(seq 0 "$last"); do touch "/tmp/fakegpu$i"; done

# --- daemons: (re)start when missing or when the config changed ------------------------------
running() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop() { if running "$1"; then kill "$(cat "$1")"; for _ in $(seq 20); do running "$1" || break; sleep 0.5; done; fi; }
if [[ $changed -eq 1 ]]; then stop /run/slurmd.pid; stop /run/slurmctld.pid; fi
running /run/slurmctld.pid || slurmctld
running /run/slurmd.pid || slurmd

for _ in $(seq 60); do
  state=$(sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)
  if [[ $state == idle* || $state == mixed* || $state == allocated* ]]; then
    sinfo
    exit 0
  fi
  if [[ $state == down* || $state == drain* ]]; then
    scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
  fi
  sleep 1
done
echo "slurm-local-setup: node did not become idle; see /var/log/slurmctld.log and /var/log/slurmd.log" >&2
sinfo >&2 || true
exit 1
