#!/usr/bin/env bash
# A 2-node Slurm cluster on this one host, for tests: munged, slurmctld and two slurmd (-N n1, -N n2) on
# 127.0.0.1 with their own ports. Everything lives in STATE_DIR; `down` stops the daemons by their pid files.
#
#   scripts/slurm_cluster.sh install          # apt-get install slurm-wlm munge (as root), once
#   scripts/slurm_cluster.sh up STATE_DIR     # prints the SLURM_CONF to export
#   scripts/slurm_cluster.sh down STATE_DIR
set -euo pipefail

cmd=${1:?usage: $0 install | up STATE_DIR | down STATE_DIR}

if [ "$cmd" = install ]; then
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q slurm-wlm munge >/dev/null \
            || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; }
    fi
    exit 0
fi

state=$(realpath -m "${2:?state dir}")
conf=$state/slurm.conf

stop() {
    for pidfile in "$state"/slurmd-n1.pid "$state"/slurmd-n2.pid "$state"/slurmctld.pid "$state"/munged.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$pidfile"
    done
}

if [ "$cmd" = down ]; then
    stop
    exit 0
fi
[ "$cmd" = up ] || { echo "unknown command $cmd" >&2; exit 2; }

for bin in munged slurmctld slurmd; do
    command -v $bin >/dev/null || { echo "$bin not found: run '$0 install' as root first" >&2; exit 1; }
done
mkdir -p "$state"/ctld "$state"/spool-n1 "$state"/spool-n2
chmod 700 "$state"

# munge: its own key, socket and pid file in the state dir
dd if=/dev/urandom of="$state/munge.key" bs=1024 count=1 status=none
chmod 400 "$state/munge.key"
munged --force --key-file="$state/munge.key" --socket="$state/munge.sock" --pid-file="$state/munged.pid" \
    --log-file="$state/munged.log" --seed-file="$state/munge.seed"

# free ports for the controller and the two nodes
read -r ctld_port port1 port2 < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
EOF
)
cpus=1  # one task per node in the tests; the two nodes share this host's cores
cat > "$conf" <<EOF
ClusterName=mvitlocal
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/munge.sock
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool-%n
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd-%n.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
MailProg=/bin/true
SlurmdParameters=config_overrides
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
NodeName=n1 NodeHostname=$(hostname) NodeAddr=127.0.0.1 Port=$port1 CPUs=$cpus RealMemory=4000 State=UNKNOWN
NodeName=n2 NodeHostname=$(hostname) NodeAddr=127.0.0.1 Port=$port2 CPUs=$cpus RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF

export SLURM_CONF=$conf
slurmctld -f "$conf"
slurmd -f "$conf" -N n1
slurmd -f "$conf" -N n2

# wait until both nodes are up
for _ in $(seq 60); do
    idle=$(sinfo -h -N -o "%N %t" 2>/dev/null | grep -c -E "idle|mix|alloc" || true)
    [ "$idle" -ge 2 ] && break
    sleep 0.5
done
if [ "$idle" -lt 2 ]; then
    echo "Slurm nodes did not come up; sinfo:" >&2
    sinfo -N >&2 || true
    tail -n 20 "$state"/*.log >&2 || true
    stop
    exit 1
fi
echo "SLURM_CONF=$conf"
