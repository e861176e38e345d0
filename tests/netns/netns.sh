# netns.sh: sourced by the multi-host tests. Makes N "hosts" on this machine, each a
# Linux network namespace with its own address and hostname, joined by veth pairs to
# a bridge that lives in a namespace of its own (the "switch"), so the test's traffic
# never touches the machine's real interfaces. Open MPI then runs across them as it
# would across nodes: a hostfile, TCP only, and a launch agent (netns_agent.sh) that
# starts each remote daemon inside its host's namespace where ssh would log in.
#
#   source tests/netns/netns.sh
#   netns_up 3 || { echo "skipped: $netns_why"; exit 0; }   # sets the variables below
#   trap netns_down EXIT
#   netns_mpirun -np 3 build/snaptp generate ...            # mpirun on host 0
#
# After netns_up: netns_hosts (array of host names = namespace names), netns_addrs
# (their addresses), netns_hostfile (Open MPI hostfile, one slot per host),
# netns_switch (the bridge's namespace), netns_port HOST (the switch port of HOST,
# for `ip -n "$netns_switch" link set PORT down`: the cable pulled at the switch).
#
# Names carry the test's pid (snp<pid>-h<i>), so two tests can run at once. Each
# namespace gets /etc/netns/<name>/hosts, which `ip netns exec` binds over
# /etc/hosts, so every host resolves every other by name and MPI reports those names.

netns_root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
netns_hosts=()
netns_addrs=()
netns_switch=""
netns_hostfile=""
netns_why=""
netns_dir=""

# netns_privileged: 0 when this process may make network namespaces (root, or
# CAP_SYS_ADMIN + CAP_NET_ADMIN); else 1 with the reason in netns_why.
netns_privileged() {
    if ! command -v ip >/dev/null 2>&1; then
        netns_why="no 'ip' command (iproute2)"; return 1
    fi
    if [ "$(id -u)" != 0 ]; then
        netns_why="not root: named network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN"
        return 1
    fi
    local probe="snp$$-probe" err
    if ! err=$(ip netns add "$probe" 2>&1); then
        netns_why="ip netns add refused: $err"; return 1
    fi
    if ! err=$(ip -n "$probe" link add "probe0" type bridge 2>&1); then
        ip netns del "$probe" 2>/dev/null
        netns_why="no bridge in a namespace: $err"; return 1
    fi
    ip netns del "$probe"
    return 0
}

# netns_up N [SUBNET_PREFIX]: N hosts at PREFIX.1 .. PREFIX.N/24 (default 10.77.0).
# Returns 1 with netns_why set when namespaces are refused (the caller skips); any
# later failure is an error (returns 2 after printing the failing command).
netns_up() {
    local n="$1" prefix="${2:-10.77.0}" i h
    netns_privileged || return 1
    netns_dir="$(mktemp -d /tmp/snaptp_netns.XXXXXX)"
    netns_switch="snp$$-sw"
    netns_step ip netns add "$netns_switch" || return 2
    netns_step ip -n "$netns_switch" link add br0 type bridge || return 2
    netns_step ip -n "$netns_switch" link set br0 up || return 2
    for ((i = 0; i < n; i++)); do
        h="snp$$-h$i"
        netns_hosts+=("$h")
        netns_addrs+=("$prefix.$((i + 1))")
        netns_step ip netns add "$h" || return 2
        # One end of the cable in the host (eth0), the other a port of the bridge.
        netns_step ip -n "$netns_switch" link add "p$i" type veth peer name eth0 netns "$h" ||
            return 2
        netns_step ip -n "$netns_switch" link set "p$i" master br0 up || return 2
        netns_step ip -n "$h" addr add "$prefix.$((i + 1))/24" dev eth0 || return 2
        netns_step ip -n "$h" link set eth0 up || return 2
        netns_step ip -n "$h" link set lo up || return 2
        # A host cut off while a message to it is in flight is only given up on when
        # TCP's retransmissions run out: 15 (about 15 minutes) by default, 3 (a few
        # seconds) here, so mpirun ends once its abort cannot reach the lost host.
        # cluster/README.md gives the same advice for the node that runs mpirun.
        netns_step ip netns exec "$h" sysctl -qw net.ipv4.tcp_retries2=3 || return 2
    done
    mkdir -p /etc/netns
    for h in "${netns_hosts[@]}"; do
        mkdir -p "/etc/netns/$h"
        {
            echo "127.0.0.1 localhost"
            for ((i = 0; i < n; i++)); do echo "${netns_addrs[$i]} ${netns_hosts[$i]}"; done
        } >"/etc/netns/$h/hosts"
    done
    netns_hostfile="$netns_dir/hostfile"
    for h in "${netns_hosts[@]}"; do echo "$h slots=1"; done >"$netns_hostfile"
    netns_reachable || return 2
    return 0
}

# netns_reachable [SECONDS]: 0 once host 0 reaches every other host (waiting up to
# SECONDS, default 10, for links just brought up); else 1 naming the host. A TCP
# connect to a closed port is refused at once by a reachable host (no ping needed),
# and times out when the bridge does not forward.
netns_reachable() {
    local deadline=$((SECONDS + ${1:-10})) i out
    for ((i = 1; i < ${#netns_hosts[@]}; i++)); do
        while :; do
            out=$(ip netns exec "${netns_hosts[0]}" timeout 2 bash -c \
                "echo >/dev/tcp/${netns_addrs[$i]}/9" 2>&1)
            case "$out" in *refused*) break ;; esac
            if [ $SECONDS -ge $deadline ]; then
                echo "netns: ${netns_hosts[0]} cannot reach ${netns_hosts[$i]} (${netns_addrs[$i]}):" \
                    "${out:-timed out}" >&2
                return 1
            fi
            sleep 0.2
        done
    done
}

netns_step() {
    local err
    if ! err=$("$@" 2>&1); then
        echo "netns: '$*' failed: $err" >&2
        return 1
    fi
}

netns_port() {
    local i
    for i in "${!netns_hosts[@]}"; do
        [ "${netns_hosts[$i]}" = "$1" ] && { echo "p$i"; return 0; }
    done
    return 1
}

# netns_down: kills whatever still runs in the test's namespaces (a daemon cut off
# by a fault test would otherwise outlive it) and deletes them. Safe to call twice.
netns_down() {
    local h pids
    for h in "${netns_hosts[@]}" "$netns_switch"; do
        [ -n "$h" ] || continue
        pids=$(ip netns pids "$h" 2>/dev/null)
        # shellcheck disable=SC2086
        [ -n "$pids" ] && kill -9 $pids 2>/dev/null
    done
    for h in "${netns_hosts[@]}" "$netns_switch"; do
        [ -n "$h" ] || continue
        ip netns del "$h" 2>/dev/null
        rm -rf "/etc/netns/$h"
    done
    rmdir /etc/netns 2>/dev/null
    [ -n "$netns_dir" ] && rm -rf "$netns_dir"
    netns_hosts=()
    netns_addrs=()
    netns_switch=""
}

# netns_exec HOST CMD...: runs CMD on HOST (its namespace and hostname).
netns_exec() {
    local h="$1"
    shift
    ip netns exec "$h" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$h" "$@"
}

# The Open MPI settings of a run across the hosts (cluster/README.md explains each):
# TCP between hosts and self within a process (no shared memory, which hosts do not
# have); daemons and ranks talk over eth0 only; the agent in place of ssh; one rank
# per host in hostfile order. The oob keepalive makes mpirun notice a host whose link
# is gone while its control connection is idle, after 5 + 1 x 2 s (Open MPI's default
# is 300 s idle, then 9 probes 20 s apart); a lost host inside a collective is found
# sooner by SNAPTP_COMM_TIMEOUT_S, which names the rank (see cluster/README.md).
# The hosts share this machine's cores, which Open MPI cannot see (each host has one
# slot and one rank): a waiting rank must yield as an oversubscribed one does, or its
# busy polling starves the rank it waits for (decode 400 ms/token instead of 49).
#
# netns_mpirun ARGS...: mpirun on host 0 across every host, ended (exit 124) after
# $netns_timeout seconds (default 300), so a hang fails the test instead of CI.
netns_mpirun() {
    local flags=(--hostfile "$netns_hostfile" --map-by node --bind-to none
        --mca plm rsh --mca plm_rsh_agent "$netns_root/netns_agent.sh"
        --mca pml ob1 --mca btl tcp,self
        --mca btl_tcp_if_include eth0 --mca oob_tcp_if_include eth0
        --mca oob_tcp_keepalive_time 5 --mca oob_tcp_keepalive_intvl 1
        --mca oob_tcp_keepalive_probes 2
        --mca mpi_yield_when_idle 1)
    [ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
    timeout -k 5 "${netns_timeout:-300}" ip netns exec "${netns_hosts[0]}" unshare --uts \
        sh -c 'hostname "$0" && exec "$@"' "${netns_hosts[0]}" \
        env -u OMPI_MCA_plm_rsh_agent mpirun "${flags[@]}" "$@"
}
