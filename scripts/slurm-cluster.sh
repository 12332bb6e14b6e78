#!/usr/bin/env bash
# A private single-host SLURM cluster for tests: munged, slurmctld and four slurmd
# ("nodes" n1 to n4 on this host, so the groups of a heterogeneous job start: SLURM gives
# each group its own nodes, and the client group may use two), on free ports, under one
# directory.
#
#   scripts/slurm-cluster.sh up DIR     start it; prints `export SLURM_CONF=DIR/etc/slurm.conf`
#   scripts/slurm-cluster.sh down DIR   stop every daemon started by `up DIR`
#
# Needs root (slurmd runs jobs as their submitter) and Debian's slurm-wlm and munge.
# Nothing under /etc is touched: every command finds the cluster through SLURM_CONF.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 up|down DIR" >&2; exit 2; }

stop_pidfile() {
    local f=$1
    [ -f "$f" ] || return 0
    local pid
    pid=$(cat "$f" 2>/dev/null || true)
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
}

if [ "$cmd" = down ]; then
    for f in "$dir"/slurmd-*.pid "$dir"/slurmctld.pid "$dir"/munge/munged.pid; do
        stop_pidfile "$f"
    done
    exit 0
fi
[ "$cmd" = up ] || { echo "usage: $0 up|down DIR" >&2; exit 2; }

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
mkdir -p "$dir"/{etc,munge,state,log,gres}
# Ports: five consecutive free ones (slurmctld, two slurmd, srun range start).
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
n = int(sys.argv[1])
socks = []
for _ in range(n):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
read -r ctld_port n1_port n2_port n3_port n4_port <<<"$(free_ports 5)"
srun_lo=$(( (ctld_port % 20000) + 40000 ))

chown munge:munge "$dir/munge"
chmod 755 "$dir/munge"
cp /etc/munge/munge.key "$dir/munge/munge.key"
chown munge:munge "$dir/munge/munge.key"
chmod 400 "$dir/munge/munge.key"
runuser -u munge -- /usr/sbin/munged --socket="$dir/munge/munge.socket" \
    --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"

host=$(hostname -s)
# Four CPUs per node whatever the host has (config_overrides below): tests size jobs for
# that, and the roles of a run mostly wait on each other.
cpus=4
for i in 0 1 2 3; do
    [ -e "$dir/gres/gpu$i" ] || mknod "$dir/gres/gpu$i" c 1 3
done
cat >"$dir/etc/slurm.conf" <<EOF
ClusterName=aifbtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SrunPortRange=$srun_lo-$((srun_lo + 200))
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
SlurmdParameters=config_overrides
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool-%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.log
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
DefMemPerCPU=256
SchedulerType=sched/backfill
# Heterogeneous jobs are started by the backfill scheduler only: run it every second.
SchedulerParameters=bf_interval=1,sched_interval=1,bf_hetjob_immediate,bf_continue
KillWait=5
MinJobAge=600
GresTypes=gpu
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=$n1_port CPUs=$cpus RealMemory=4000 Gres=gpu:2 State=UNKNOWN
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=$n2_port CPUs=$cpus RealMemory=4000 Gres=gpu:2 State=UNKNOWN
NodeName=n3 NodeHostname=$host NodeAddr=127.0.0.1 Port=$n3_port CPUs=$cpus RealMemory=4000 State=UNKNOWN
NodeName=n4 NodeHostname=$host NodeAddr=127.0.0.1 Port=$n4_port CPUs=$cpus RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=n1,n2,n3,n4 Default=YES MaxTime=INFINITE OverSubscribe=YES State=UP
EOF
cat >"$dir/etc/gres.conf" <<EOF
NodeName=n1 Name=gpu File=$dir/gres/gpu[0-1]
NodeName=n2 Name=gpu File=$dir/gres/gpu[2-3]
EOF
export SLURM_CONF="$dir/etc/slurm.conf"
mkdir -p "$dir/spool-n1" "$dir/spool-n2" "$dir/spool-n3" "$dir/spool-n4"
slurmctld -i
for n in n1 n2 n3 n4; do
    slurmd -N "$n"
done
for _ in $(seq 200); do
    if [ "$(sinfo -h -o '%T' 2>/dev/null | grep -c idle)" -ge 1 ] \
        && [ "$(sinfo -h -N -o '%N %T' 2>/dev/null | grep -c idle)" -ge 4 ]; then
        echo "export SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.1
done
echo "$0: the nodes did not become idle within 20 s; see $dir/log" >&2
sinfo -N >&2 || true
exit 1
