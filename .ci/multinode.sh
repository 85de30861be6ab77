#!/usr/bin/env bash
# Several "nodes" on this one machine, for real multi-node runs: each node is a
# Linux network namespace with its own address, host name and sshd, so that
# DeepSpeed's pdsh and OpenMPI backends reach it over a real remote shell.
#
#     .ci/multinode.sh up [NODES [SLOTS]]   # default 2 nodes, 1 slot each
#     . /tmp/llmbench-nodes/env             # PATH (ssh with the throwaway key), mpirun as root
#     llmbench run scenario.yaml            # run.hostfile: /tmp/llmbench-nodes/hostfile
#     .ci/multinode.sh slurm                # optional: SLURM on the nodes (slurmd in each)
#     .ci/multinode.sh sshd 2               # restart node 2's sshd (a test kills it)
#     .ci/multinode.sh down                 # fails, naming it, if anything is left behind
#
# Exit codes: 0 done; 1 failed (a failed `up` leaves nothing); 3 this machine cannot
# make nodes at all (not root, a tool missing, network namespaces refused).
#
# What `up` makes (root; iproute2, openssh-server, openssh-client):
# * a bridge PREFIXbr with NET.1/24 here, and per node i (1..NODES) a namespace
#   PREFIXi joined to it by a veth pair (PREFIXih here, eth0 inside: the name
#   DeepSpeed's OpenMPI backend passes to btl_tcp_if_include) at NET.(i+1);
#   only these addresses and loopback are ever used, and nodes have no route
#   elsewhere;
# * /etc/netns/PREFIXi/hosts (ip-netns(8) binds it over /etc/hosts inside the
#   node), so each node resolves its own name to its address: gloo binds to the
#   address of the host name, and loopback would not reach the other nodes;
# * an sshd per node in its own UTS namespace (hostname PREFIXi, so each node
#   agent writes its own timeline file), listening on the node's address only,
#   accepting only a key made for this run (root login, no password, no PAM);
# * DIR/hostfile ("NET.(i+1) slots=SLOTS" per node), DIR/ssh_config,
#   DIR/bin/ssh (ssh with that config, first on PATH for pdsh, mpirun and
#   DeepSpeed's own ssh check) and DIR/env.
# * inside each node, this machine's cgroup mounts again (ip netns exec mounts a
#   fresh /sys without them, and slurmd will not start without them).
# `slurm` adds a SLURM cluster of the nodes: its own slurmctld here (port 6917,
# so a cluster of .ci/slurm-setup.sh keeps running beside it), one slurmd per
# node, partition PREFIX, and SLURM_CONF in DIR/env; munged must be running.
# Everything else — the filesystem, the Python environment, the run directory —
# is shared, as on a cluster with a shared filesystem.
#
# `down` kills every process inside the nodes (ranks a failed case left behind
# included), removes the namespaces, the bridge and DIR, then checks that no
# namespace, interface or process of it remains; `up` runs it first, and runs
# it again if anything fails half-way.
#
# Environment: LLMBENCH_NODES_DIR (default /tmp/llmbench-nodes),
# LLMBENCH_NODES_PREFIX (default llmbn; at most 10 characters),
# LLMBENCH_NODES_NET (first three octets of a /24 this machine does not use;
# default 10.213.77), LLMBENCH_NODES_SSHD (default /usr/sbin/sshd).
set -euo pipefail

DIR=${LLMBENCH_NODES_DIR:-/tmp/llmbench-nodes}
PREFIX=${LLMBENCH_NODES_PREFIX:-llmbn}
NET=${LLMBENCH_NODES_NET:-10.213.77}
BRIDGE=${PREFIX}br
SSHD=${LLMBENCH_NODES_SSHD:-/usr/sbin/sshd}

say() { echo "multinode: $*" >&2; }
die() {
    say "$*"
    exit 1
}
cannot() {
    say "cannot make nodes here: $*"
    exit 3
}

our_namespaces() { ip netns list | awk '{print $1}' | grep -E "^${PREFIX}[0-9]+$" || true; }
our_links() { ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^${PREFIX}" || true; }

down() {
    local ns pids left="" all
    all=$(our_namespaces)
    # Every node's processes go first, and ssh clients talking to the nodes
    # (an mpirun or pdsh whose llmbench was killed); only then the namespaces:
    # a socket closed after its peer's namespace is gone resends its FIN for
    # minutes, and keeps its namespace and veth alive, nameless, until then.
    if [ -s "$DIR/slurm/slurmctld.pid" ]; then kill -KILL "$(cat "$DIR/slurm/slurmctld.pid")" 2>/dev/null || true; fi
    for _ in $(seq 50); do
        pids=$(for ns in $all; do ip netns pids "$ns"; done; pgrep -f -- "-F $DIR/ssh_config" || true)
        [ -z "$pids" ] && break
        # shellcheck disable=SC2086 # one pid per word
        kill -KILL $pids 2>/dev/null || true
        sleep 0.1
    done
    for ns in $all; do
        pids=$(ip netns pids "$ns")
        [ -n "$pids" ] && left="$left process(es) $pids in $ns;"
    done
    sleep 0.2 # closing handshakes between live network stacks
    for ns in $all; do
        ip netns delete "$ns" # the veth pair goes with it once the kernel frees the namespace
        rm -rf "/etc/netns/$ns"
    done
    for _ in $(seq 50); do
        [ -z "$(our_links | grep -vx "$BRIDGE")" ] && break
        sleep 0.1
    done
    ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
    [ -n "$(our_namespaces)" ] && left="$left namespace(s) $(our_namespaces | xargs);"
    [ -n "$(our_links)" ] && left="$left interface(s) $(our_links | xargs);"
    pids=$(pgrep -f -- "$DIR/" || true)
    [ -n "$pids" ] && left="$left process(es) $(echo "$pids" | xargs) using $DIR;"
    rm -rf "$DIR"
    [ -z "$left" ] || die "left behind:$left"
}

start_sshd() {  # node number: its sshd, in its own UTS namespace named after the node
    local ns=${PREFIX}$1
    ip netns exec "$ns" unshare --uts sh -c \
        "hostname $ns && $(cgroup_mounts) exec $SSHD -f $DIR/sshd_config.$ns -E $DIR/sshd.$ns.log"
}

cgroup_mounts() {  # commands that repeat this machine's cgroup mounts inside a node
    # ip netns exec mounts a fresh /sys, without them; slurmd refuses to start without them
    awk '$2 ~ "^/sys/fs/cgroup" && ($3 == "tmpfs" || $3 ~ /^cgroup/) {
        printf "mkdir -p %s && mount -t %s -o %s %s %s && ", $2, $3, $4, $1, $2 }' /proc/self/mounts
}

slurm() {  # a SLURM cluster of the nodes: slurmctld here (port 6917), one slurmd per node
    local conf=$DIR/slurm/slurm.conf i n cpus host state
    for tool in slurmctld slurmd sbatch munge; do
        command -v "$tool" >/dev/null || cannot "$tool is missing (.ci/slurm-setup.sh installs SLURM)"
    done
    munge -n >/dev/null 2>&1 || cannot "munged does not answer (.ci/slurm-setup.sh starts it)"
    [ -s "$DIR/hostfile" ] || die "no nodes; run '$0 up' first"
    n=$(wc -l <"$DIR/hostfile")
    cpus=$(nproc)
    host=$(hostname -s)
    mkdir -p "$DIR/slurm/state"
    {
        echo "ClusterName=${PREFIX}"
        echo "SlurmctldHost=$host($NET.1)"
        echo "SlurmctldPort=6917"
        echo "SlurmUser=root"
        echo "AuthType=auth/munge"
        echo "StateSaveLocation=$DIR/slurm/state"
        echo "SlurmdSpoolDir=$DIR/slurm/spool.%n"
        echo "SlurmctldPidFile=$DIR/slurm/slurmctld.pid"
        echo "SlurmdPidFile=$DIR/slurm/slurmd.%n.pid"
        echo "SlurmctldLogFile=$DIR/slurm/slurmctld.log"
        echo "SlurmdLogFile=$DIR/slurm/slurmd.%n.log"
        echo "ProctrackType=proctrack/linuxproc"
        echo "TaskPlugin=task/none"
        echo "SelectType=select/cons_tres"
        echo "SelectTypeParameters=CR_Core"
        echo "MpiDefault=none"
        echo "ReturnToService=2"
        echo "JobAcctGatherType=jobacct_gather/none"
        echo "AccountingStorageType=accounting_storage/none"
        echo "KillWait=5"
        for i in $(seq "$n"); do
            echo "NodeName=${PREFIX}$i NodeAddr=$NET.$((i + 1)) CPUs=$cpus State=UNKNOWN"
        done
        echo "PartitionName=${PREFIX} Nodes=${PREFIX}[1-$n] Default=YES MaxTime=INFINITE State=UP"
    } >"$conf"
    export SLURM_CONF=$conf
    slurmctld -f "$conf"
    for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
    for i in $(seq "$n"); do
        "$DIR/bin/ssh" "$NET.$((i + 1))" "SLURM_CONF=$conf slurmd -f $conf -N ${PREFIX}$i"
    done
    for _ in $(seq 150); do
        state=$(sinfo -h -p "$PREFIX" -o %t | sort -u | xargs)
        [ "$state" = idle ] && break
        sleep 0.2
    done
    [ "$state" = idle ] || die "SLURM nodes are '$state', not idle; see $DIR/slurm/*.log"
    echo "export SLURM_CONF=$conf" >>"$DIR/env"
    say "SLURM partition $PREFIX: ${PREFIX}[1-$n], $cpus CPUs each — SLURM_CONF=$conf (in $DIR/env)"
}

wait_for_ssh() {  # node number
    local addr=$NET.$(($1 + 1))
    for _ in $(seq 50); do
        "$DIR/bin/ssh" "$addr" true 2>/dev/null && break
        sleep 0.1
    done
    [ "$("$DIR/bin/ssh" "$addr" hostname 2>&1)" = "${PREFIX}$1" ] || die "no ssh to node ${PREFIX}$1 ($addr)"
}

on_failure() {  # exit trap of `up`: take back whatever a failed step left
    local rc=$?
    [ "$rc" = 0 ] && return
    say "setup failed; removing what it made"
    (down) || true
    exit "$rc"
}

up() {
    local nodes=${1:-2} slots=${2:-1} i ns addr
    [ "$(id -u)" = 0 ] || cannot "needs root (network namespaces, sshd)"
    for tool in ip unshare "$SSHD" ssh ssh-keygen; do
        command -v "$tool" >/dev/null || cannot "$tool is missing (apt-get install iproute2 openssh-server openssh-client)"
    done
    local why
    why=$(ip netns add "${PREFIX}probe" 2>&1 && ip netns delete "${PREFIX}probe") \
        || cannot "network namespaces refused: $why"
    [ "${#PREFIX}" -le 10 ] || die "LLMBENCH_NODES_PREFIX is longer than 10 characters (interface names)"
    if ip -4 route show | grep -qE "^${NET//./\\.}\.0/24 " && ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        die "$NET.0/24 is already in use here; set LLMBENCH_NODES_NET"
    fi
    down
    trap 'on_failure' EXIT

    mkdir -p -m 700 "$DIR/bin"
    mkdir -p /run/sshd # sshd's privilege-separation directory
    ssh-keygen -q -t ed25519 -N '' -C llmbench-nodes -f "$DIR/id_ed25519"
    ssh-keygen -q -t ed25519 -N '' -C llmbench-nodes-host -f "$DIR/host_ed25519"
    cp "$DIR/id_ed25519.pub" "$DIR/authorized_keys"
    cat >"$DIR/ssh_config" <<EOF
Host ${NET}.*
    User root
    IdentityFile $DIR/id_ed25519
    IdentitiesOnly yes
    BatchMode yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    ConnectTimeout 5
    LogLevel ERROR
EOF
    printf '#!/bin/sh\nexec /usr/bin/ssh -F %s "$@"\n' "$DIR/ssh_config" >"$DIR/bin/ssh"
    chmod +x "$DIR/bin/ssh"

    ip link add "$BRIDGE" type bridge
    ip addr add "$NET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up

    local hosts="127.0.0.1 localhost"$'\n'
    for i in $(seq "$nodes"); do hosts+="$NET.$((i + 1)) ${PREFIX}$i"$'\n'; done
    : >"$DIR/hostfile"
    for i in $(seq "$nodes"); do
        ns=${PREFIX}$i
        addr=$NET.$((i + 1))
        ip netns add "$ns"
        ip link add "${ns}h" type veth peer name eth0 netns "$ns"
        ip link set "${ns}h" master "$BRIDGE" up
        ip -n "$ns" addr add "$addr/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
        mkdir -p "/etc/netns/$ns"
        printf '%s' "$hosts" >"/etc/netns/$ns/hosts"
        cat >"$DIR/sshd_config.$ns" <<EOF
ListenAddress $addr
HostKey $DIR/host_ed25519
PidFile $DIR/sshd.$ns.pid
AuthorizedKeysFile $DIR/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 64
MaxSessions 64
LogLevel ERROR
EOF
        start_sshd "$i"
        echo "$addr slots=$slots" >>"$DIR/hostfile"
    done
    for i in $(seq "$nodes"); do wait_for_ssh "$i"; done
    cat >"$DIR/env" <<EOF
export PATH="$DIR/bin:\$PATH"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
EOF
    trap - EXIT
    say "$nodes node(s) up: $(tr '\n' ' ' <"$DIR/hostfile")— hostfile $DIR/hostfile, env $DIR/env"
}

case "${1:-}" in
    up) up "${@:2}" ;;
    slurm) slurm ;;
    sshd) # restart node N's sshd (after a test killed it)
        start_sshd "$2"
        wait_for_ssh "$2"
        ;;
    down) down && say "nothing left" ;;
    *) die "usage: $0 up [NODES [SLOTS]] | slurm | sshd N | down" ;;
esac
