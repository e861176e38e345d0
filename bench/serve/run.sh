#!/usr/bin/env bash
# bench/serve/run.sh: serving throughput of snaptp serve (full KV and SnapKV) against
# llama.cpp's llama-server, on the same GGUF and machine, in one run, driven by
# GuideLLM (a maintained serving benchmark from PyPI: bench/serve/README.md says why).
# Per system and concurrency level: request throughput, output tokens/s, TTFT and
# ITL p50/p99, on synthetic ~4K-token prompts with 128 output tokens (ignore_eos).
#
#   bash bench/serve/setup.sh && bash bench/serve/run.sh [options]
#     --levels 1,4,16        concurrency levels
#     --requests 8,16,16     requests per level (one per level, or one for all)
#     --prompt-tokens 4000 --output-tokens 128 --budget 1024
#     --threads N            server threads (default: the cores left to the servers)
#     --client-cpus LIST     cores for GuideLLM (default 0); the servers get the rest,
#                            so the load generator does not take the servers' cores
#                            (GuideLLM at concurrency 16 uses more than one core).
#                            --client-cpus none: no pinning, servers get every core
#     --backend cpu|cuda     passed to snaptp; llama-server then gets -ngl 99
#     --systems snaptp-full,snaptp-snapkv,llama-server
#     --out DIR              raw GuideLLM JSON (default bench/out/serve)
# Writes bench/results/serve.md, bench/results/serve/serve.{json,csv,png}.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${SERVE_BENCH_VENV:-/work/venv-gl3}"
tok="${SERVE_BENCH_TOKENIZER:-/work/bench-tok-smollm2}"
llama_server="${LLAMA_SERVER:-/work/llamacpp/build/bin/llama-server}"
levels=1,4,16 requests=4,8,16 prompt=4000 output=128 threads= budget=1024 backend=cpu
client_cpus=0
systems=snaptp-full,snaptp-snapkv,llama-server out="$root/bench/out/serve"
while [ $# -gt 0 ]; do
    case "$1" in
    --levels) levels="$2" ;; --requests) requests="$2" ;; --prompt-tokens) prompt="$2" ;;
    --output-tokens) output="$2" ;; --threads) threads="$2" ;; --budget) budget="$2" ;;
    --backend) backend="$2" ;; --systems) systems="$2" ;; --out) out="$2" ;;
    --client-cpus) client_cpus="$2" ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done
gguf="$(bash "$root/tests/fetch_smollm2.sh")"
# The servers' cores: every core not given to the client.
n_cpus=$(nproc)
client=() server=()
if [ "$client_cpus" != none ]; then
    server_cpus=$(python3 -c "
import sys
client = set()
for part in sys.argv[1].split(','):
    a, _, b = part.partition('-')
    client.update(range(int(a), int(b or a) + 1))
print(','.join(str(c) for c in range(int(sys.argv[2])) if c not in client))" "$client_cpus" "$n_cpus")
    [ -n "$server_cpus" ] || { echo "run.sh: --client-cpus $client_cpus leaves no core to the servers" >&2; exit 2; }
    client=(taskset -c "$client_cpus") server=(taskset -c "$server_cpus")
    [ -n "$threads" ] || threads=$(($(tr ',' '\n' <<<"$server_cpus" | wc -l)))
fi
[ -n "$threads" ] || threads=$n_cpus
snaptp="$root/build/snaptp"
mkdir -p "$out"
IFS=, read -r -a lv <<<"$levels"
IFS=, read -r -a rq <<<"$requests"
IFS=, read -r -a sy <<<"$systems"
max_level=0
for l in "${lv[@]}"; do [ "$l" -gt "$max_level" ] && max_level=$l; done
port=18080

start_server() { # system -> sets pid; waits for /health
    local s="$1"
    case "$s" in
    snaptp-full | snaptp-snapkv)
        "${server[@]}" "$snaptp" serve --model "$gguf" --port "$port" --threads "$threads" --backend "$backend" \
            --max-seqs "$max_level" --kv-policy "${s#snaptp-}" --budget "$budget" \
            --served-model-name SmolLM2-135M-Instruct \
            $([ "$backend" = cuda ] && echo --kv-memory 20G) >"$out/$s.server.log" 2>&1 &
        ;;
    llama-server)
        [ -x "$llama_server" ] || { echo "run.sh: no llama-server at $llama_server (bench/build_llamacpp.sh)" >&2; return 1; }
        local ngl=()
        [ "$backend" = cuda ] && ngl=(-ngl 99)
        "${server[@]}" "$llama_server" -m "$gguf" --host 127.0.0.1 --port "$port" -t "$threads" -tb "$threads" \
            -c $((max_level * (prompt + output + 256))) --parallel "$max_level" --cont-batching \
            --alias SmolLM2-135M-Instruct \
            "${ngl[@]}" >"$out/$s.server.log" 2>&1 &
        ;;
    esac
    pid=$!
    for _ in $(seq 1 600); do
        curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$out/$s.server.log" >&2; return 1; }
        sleep 0.2
    done
    echo "run.sh: $s did not become healthy" >&2
    return 1
}

# GuideLLM ends a request after 300 s by default; at concurrency 16 on 2 cores a
# 4K-token request waits longer than that behind the others' prefills (llama-server
# lost 5 of 16 that way), and a dropped request would leave its system's row short.
export GUIDELLM__REQUEST_TIMEOUT="${GUIDELLM__REQUEST_TIMEOUT:-7200}"
# A server left behind by a failed step must not hold the port for the next run.
trap '[ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; true' EXIT
t0=$(date +%s)
for s in "${sy[@]}"; do
    start_server "$s"
    for i in "${!lv[@]}"; do
        c=${lv[$i]}
        n=${rq[$i]:-${rq[0]}}
        echo "== $s: concurrency $c, $n requests ($(($(date +%s) - t0)) s so far)"
        HF_HUB_OFFLINE=1 "${client[@]}" "$venv/bin/guidellm" benchmark run --target "http://127.0.0.1:$port" \
            --model SmolLM2-135M-Instruct --processor "$tok" \
            --data "prompt_tokens=$prompt,output_tokens=$output" --random-seed 42 \
            --rate-type concurrent --rate "$c" --max-requests "$n" \
            --output-path "$out/$s.c$c.json" --disable-progress --disable-console-outputs
    done
    kill -TERM "$pid"
    wait "$pid" || true
done
wall=$(($(date +%s) - t0))
"$venv/bin/python" "$root/bench/serve/report.py" --raw "$out" --systems "$systems" \
    --levels "$levels" --meta "prompt_tokens=$prompt output_tokens=$output threads=$threads client_cpus=$client_cpus server_cpus=${server_cpus:-all} budget=$budget backend=$backend requests=$requests wall_s=$wall commit=$(git -C "$root" rev-parse --short HEAD)"
