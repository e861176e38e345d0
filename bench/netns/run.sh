#!/usr/bin/env bash
# bench/netns/run.sh: what a slow interconnect costs decode. SmolLM2 at tp = 3, one
# rank per "host", once over shared memory (three ranks of one host, btl vader) and
# once over TCP between three network namespaces on one bridge (tests/netns), each
# REPEAT times; per token: decode time, and the difference, which is the 60
# all-reduces' (30 layers x 2) extra cost over TCP. Writes bench/results/netns_tcp.md.
#
#   bash bench/netns/run.sh [TOKENS [REPEAT]]      (defaults 64, 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
tokens="${1:-64}"
repeat="${2:-3}"
bin=build/snaptp
gguf="${SNAPTP_SMOLLM2_GGUF:-$(bash tests/fetch_smollm2.sh)}"
source tests/mpi_env.sh
source tests/netns/netns.sh
netns_up 3 || { echo "bench/netns: cannot make namespaces: ${netns_why:-see above}" >&2; exit 1; }
out="$(mktemp -d)"
trap 'netns_down; rm -rf "$out"' EXIT
export SNAPTP_THREADS=1 OMP_NUM_THREADS=1
args=(generate --model "$gguf" --prompt "Write a long story about a lighthouse keeper." --chat
    --max-tokens "$tokens" --json)
row() { # label file...: mean decode ms/token and net bytes per token over the runs
    python3 - "$@" <<'PY'
import json, sys
label, files = sys.argv[1], sys.argv[2:]
ms, net, steps = [], [], []
for f in files:
    o = json.loads(open(f).read().strip().splitlines()[-1])
    c = o["collectives"]
    ms.append(1000.0 * o["decode_s"] / max(c["decode_steps"], 1))
    net.append(c.get("allreduce_net_bytes_per_token", 0))
    steps.append(c["decode_steps"])
print("%s %.2f %.2f %.2f %d %d" % (label, sum(ms) / len(ms), min(ms), max(ms), sum(net) / len(net), min(steps)))
PY
}
for r in $(seq "$repeat"); do
    mpirun "${mpi_flags[@]}" -np 3 -x SNAPTP_THREADS "$bin" "${args[@]}" >"$out/shm.$r" 2>/dev/null
    netns_mpirun -np 3 -x SNAPTP_THREADS "$bin" "${args[@]}" >"$out/tcp.$r" 2>/dev/null
done
shm=$(row shm "$out"/shm.*)
tcp=$(row tcp "$out"/tcp.*)
{
    echo "# Decode all-reduce cost: TCP between namespace hosts vs shared memory"
    echo
    echo "\`bash bench/netns/run.sh $tokens $repeat\`, $(date -u +%Y-%m-%d), $(getconf _NPROCESSORS_ONLN) cores," \
        "load $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD)."
    echo "SmolLM2-135M Q4_1, tp = 3, 1 thread per rank, greedy, $tokens tokens; $repeat runs each."
    echo "Each decode token is 60 all-reduces of 2,304 bytes (30 layers x 2)."
    echo
    echo "| transport | decode ms/token (mean) | min | max | bytes over the network per token (rank 0) | decode steps |"
    echo "| --- | --- | --- | --- | --- | --- |"
    for l in "$shm" "$tcp"; do
        set -- $l
        echo "| $1 | $2 | $3 | $4 | $5 | $6 |"
    done
    python3 -c "
s = '$shm'.split(); t = '$tcp'.split()
d = float(t[1]) - float(s[1])
print()
print('TCP costs %.2f ms more per token than shared memory: %.0f us per all-reduce.' % (d, 1000 * d / 60))"
} | tee bench/results/netns_tcp.md
