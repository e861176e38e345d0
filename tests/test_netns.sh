#!/usr/bin/env bash
# test_netns.sh: snaptp across three hosts, each a network namespace on one bridge
# (tests/netns/netns.sh), mpirun over TCP only with a hostfile and a launch agent.
#  1. test_tp at tp = 3 on SmolLM2: logits, greedy tokens and SnapKV positions as tp = 1.
#  2. `generate --json` at tp = 3 across hosts: the same text as tp = 1 (full and
#     SnapKV), and the all-reduces' bytes over the network, measured (> 0 here).
#  3. Faults: host 2's link pulled at the switch mid-prefill, and rank 2 SIGKILLed
#     mid-decode: ranks 0 and 1 are gone within 10 s, the output names rank 2 and
#     its host.
# Without the privilege to make namespaces it prints "skipped: <reason>" and passes.
set -uo pipefail
root="${SNAPTP_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
bin="${SNAPTP_BIN:-$root/build/snaptp}"
test_tp="$(dirname "$bin")/tests/test_tp"
gguf="${SNAPTP_SMOLLM2_GGUF:-}"
for f in "$bin" "$test_tp"; do
    [ -x "$f" ] || { echo "test_netns.sh: $f not built" >&2; exit 1; }
done
command -v mpirun >/dev/null 2>&1 || { echo "test_netns.sh: no mpirun on PATH" >&2; exit 1; }
if [ -z "$gguf" ]; then
    echo "test_netns.sh: SNAPTP_SMOLLM2_GGUF is not set (bash tests/fetch_smollm2.sh)" >&2
    exit 1
fi
source "$root/tests/netns/netns.sh"
unset SNAPTP_FAULT SNAPTP_COMM_TIMEOUT_S
netns_up 3
case $? in
0) ;;
1) echo "test_netns.sh: skipped: $netns_why"; exit 0 ;;
*) netns_down; exit 1 ;;
esac
work="$(mktemp -d /tmp/snaptp_test_netns.XXXXXX)"
trap 'netns_down; rm -rf "$work"' EXIT
trap 'exit 1' TERM INT HUP # an interrupt tears the hosts down too
h=("${netns_hosts[@]}")
echo "hosts: ${h[*]} (${netns_addrs[*]}), bridge in $netns_switch"

# Three ranks on two cores: one thread each. Remote ranks start with an empty
# environment (as over ssh), so what they need is forwarded with -x.
export OMP_NUM_THREADS=1 SNAPTP_THREADS=1 SNAPTP_SOURCE_DIR="$root" SNAPTP_SMOLLM2_GGUF="$gguf"
fwd=(-x OMP_NUM_THREADS -x SNAPTP_THREADS)

passed=0 failed=0
pass() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
now() { date +%s.%N; }
elapsed() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }

if netns_mpirun -np 3 "${fwd[@]}" -x SNAPTP_SOURCE_DIR -x SNAPTP_SMOLLM2_GGUF "$test_tp" \
    >"$work/tp3" 2>&1; then
    pass "test_tp at tp=3 across 3 hosts over TCP: $(tail -n 1 "$work/tp3")"
else
    fail "test_tp at tp=3 across hosts"; cat "$work/tp3"
fi

# The same greedy text at tp = 3 across hosts as at tp = 1, with full and SnapKV
# caches (a budget well under the prompt, so SnapKV really drops rows).
prompt="$work/prompt.txt"
head -c 3000 "$root/README.md" >"$prompt"
for policy in full snapkv; do
    args=(generate --model "$gguf" --prompt-file "$prompt" --max-tokens 12 --json
        --kv-policy "$policy" --budget 128 --window 16)
    "$bin" "${args[@]}" >"$work/tp1.$policy" 2>"$work/tp1.$policy.err" ||
        { fail "tp=1 $policy"; cat "$work/tp1.$policy.err"; continue; }
    if ! netns_mpirun -np 3 "${fwd[@]}" "$bin" "${args[@]}" >"$work/tp3.$policy" \
        2>"$work/tp3.$policy.err"; then
        fail "generate --json at tp=3 across hosts ($policy)"; cat "$work/tp3.$policy.err"; continue
    fi
    if python3 - "$work/tp1.$policy" "$work/tp3.$policy" <<'PY'; then
import json, sys
one, three = (json.loads(open(p).read().strip().splitlines()[-1]) for p in sys.argv[1:3])
assert three["tp"] == 3 and one["text"] == three["text"], (one["text"], three["text"])
c = three["collectives"]
payload = 576 * 4  # one decode all-reduce: the hidden state, fp32
per_call = c["allreduce_net_bytes_per_call"]
# Rank 0 sends at least part of every all-reduce to another host; MPI's algorithm
# for 3 ranks sends it a payload or two (plus a few header bytes), never 2(p-1)x more.
assert c["decode_allreduce_net_bytes"] > 0 and c["prefill_allreduce_net_bytes"] > 0, c
assert 0.5 * payload <= per_call <= 4 * payload + 256, (per_call, c)
print("%d bytes over the network per decode all-reduce of %d bytes, %d per token" % (
    per_call, payload, c["allreduce_net_bytes_per_token"]))
PY
        pass "tp=3 across hosts ($policy) gives tp=1's text; bytes measured above"
    else
        fail "tp=3 across hosts ($policy) vs tp=1"; cat "$work/tp3.$policy"
    fi
done

# snaptp processes still alive on a host.
ranks_on() { ip netns pids "$1" 2>/dev/null | xargs -r ps -o comm= -p 2>/dev/null | grep -c '^snaptp$'; }

# Waits until ranks 0 and 1 (hosts 0 and 1) are gone, at most 30 s; prints seconds.
wait_survivors_gone() {
    local t0="$1"
    while [ "$(ranks_on "${h[0]}")" != 0 ] || [ "$(ranks_on "${h[1]}")" != 0 ]; do
        [ "$(echo "$(now) - $t0 > 30" | bc)" = 1 ] && break
        sleep 0.1
    done
    elapsed "$t0"
}

# Fault 1: host 2's cable pulled at the switch in the middle of the prefill. Nothing
# tells ranks 0 and 1: they wait in an all-reduce until SNAPTP_COMM_TIMEOUT_S, then
# ping every peer and name the one that is silent.
port=$(netns_port "${h[2]}")
export SNAPTP_COMM_TIMEOUT_S=3
netns_mpirun -np 3 "${fwd[@]}" -x SNAPTP_COMM_TIMEOUT_S "$bin" generate --model "$gguf" \
    --prompt-file "$root/examples/kestrel_ridge.md" --max-tokens 4 --chunk 256 >"$work/link.out" \
    2>"$work/link.err" &
mpirun_pid=$!
# Mid-prefill: the prefill's all-reduces (~2,000 tokens in chunks of 256) move tens
# of MB through host 2's port; loading moves almost nothing. Pull the cable once 4 MB
# more have gone by; the message must then be about a chunk's all-reduce (256 x 576
# floats), not a decode step's.
port_bytes() { ip netns exec "$netns_switch" cat "/sys/class/net/$port/statistics/tx_bytes"; }
b0=$(port_bytes)
t0=$(now)
while :; do
    b=$(($(port_bytes) - b0))
    [ "$b" -gt 4000000 ] && break
    kill -0 "$mpirun_pid" 2>/dev/null || break
    [ "$(echo "$(now) - $t0 > 120" | bc)" = 1 ] && break
    sleep 0.05
done
tf=$(now)
ip -n "$netns_switch" link set "$port" down
dt=$(wait_survivors_gone "$tf")
wait "$mpirun_pid"
rc=$?
unset SNAPTP_COMM_TIMEOUT_S
if [ "$b" -gt 4000000 ] && [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ "$(echo "$dt < 10" | bc)" = 1 ] &&
    grep -q "rank 2 (${h[2]})" "$work/link.err" &&
    grep -q "all-reduce of $((256 * 576 * 4)) bytes did not complete" "$work/link.err"; then
    pass "link of ${h[2]} down mid-prefill: ranks 0 and 1 gone after $dt s, mpirun exit $rc after" \
        "$(elapsed "$tf") s: $(grep -m1 -o 'no answer within.*' "$work/link.err")"
else
    fail "link down: $b bytes before the pull, ranks gone after $dt s, mpirun exit $rc"
    cat "$work/link.err"
fi
# What the cut-off host still runs (rank 2 and its daemon, which never heard of the
# abort) would hold its ports; the test started them, so it ends them.
pids=$(ip netns pids "${h[2]}")
# shellcheck disable=SC2086
[ -n "$pids" ] && kill -9 $pids 2>/dev/null
ip -n "$netns_switch" link set "$port" up
netns_reachable 20 || fail "host ${h[2]} unreachable after its link came back up"

# Fault 2: rank 2 SIGKILLs itself in the middle of the decode (its 190th all-reduce:
# the prefill of a short prompt is 60, each decode step 60). Its host's daemon sees
# the death and mpirun ends the others.
SNAPTP_FAULT="rank=2,at=allreduce:190,mode=kill" netns_mpirun -np 3 "${fwd[@]}" -x SNAPTP_FAULT \
    "$bin" generate --model "$gguf" --prompt "Name a color." --max-tokens 16 \
    >"$work/kill.out" 2>"$work/kill.err" &
mpirun_pid=$!
t0=$(now)
seen=0
while :; do
    n=$(ranks_on "${h[2]}")
    [ "$n" != 0 ] && seen=1
    [ "$seen" = 1 ] && [ "$n" = 0 ] && break
    kill -0 "$mpirun_pid" 2>/dev/null || break
    [ "$(echo "$(now) - $t0 > 120" | bc)" = 1 ] && break
    sleep 0.05
done
tf=$(now)
dt=$(wait_survivors_gone "$tf")
wait "$mpirun_pid"
rc=$?
if [ "$seen" = 1 ] && [ -s "$work/kill.out" ] && [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ "$(echo "$dt < 10" | bc)" = 1 ] &&
    grep -qE "rank 2 with PID [0-9]+ on node ${h[2]} exited on signal 9" "$work/kill.err"; then
    pass "rank 2 SIGKILLed mid-decode: ranks 0 and 1 gone after $dt s, mpirun exit $rc:" \
        "$(grep -m1 -o 'process rank 2 .*' "$work/kill.err")"
else
    fail "rank 2 killed: seen $seen, decode output \"$(cat "$work/kill.out")\", ranks gone after $dt s, mpirun exit $rc"; cat "$work/kill.err"
fi

echo "test_netns.sh: $passed passed, $failed failed"
[ $failed -eq 0 ]
