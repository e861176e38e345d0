#!/usr/bin/env bash
# bench_contention: CPU prefill and decode speed on a machine that other work shares.
# Runs `snaptp bench` (and llama.cpp's llama-bench, and optionally another snaptp
# binary as a baseline) with every core free, then again while HOGS busy-loop
# processes compete for the cores, and writes a markdown table of both.
#
# Why: each op of a decode step waits for its slowest thread, ~200 times per token.
# When another process takes a core, a thread pool whose waiters spin without
# yielding loses whole scheduler time slices at those waits (snaptp's OpenMP teams
# did: decode at 2 threads fell to 13-20 tokens/s next to one other busy job).
#
# Usage (from the repo root):  bash bench/bench_contention.sh [options]
#   --threads N       threads of every engine                   (default: all cores)
#   --hogs N          busy-loop processes during the loaded runs (default: cores)
#   --baseline BIN    another snaptp binary to measure the same way (e.g. an older build)
#   --out FILE        markdown written                          (bench/results/contention.md)
# Env: SNAPTP_BIN (default build/snaptp), SNAPTP_SMOLLM2_GGUF (default tests/fetch_smollm2.sh),
#      LLAMA_BENCH (default /work/llamacpp/build/bin/llama-bench; skipped when absent).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cores="$(nproc)"
threads="$cores" hogs="$cores" baseline="" out="$repo/bench/results/contention.md"
while [ $# -gt 0 ]; do
    case "$1" in
    --threads) threads="${2:?}"; shift 2 ;;
    --hogs) hogs="${2:?}"; shift 2 ;;
    --baseline) baseline="${2:?}"; shift 2 ;;
    --out) out="${2:?}"; shift 2 ;;
    -h | --help) sed -n '2,/^set -e/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_contention: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
bin="${SNAPTP_BIN:-$repo/build/snaptp}"
model="${SNAPTP_SMOLLM2_GGUF:-$(bash "$repo/tests/fetch_smollm2.sh")}"
llama="${LLAMA_BENCH:-/work/llamacpp/build/bin/llama-bench}"
[ -x "$bin" ] || { echo "bench_contention: no snaptp at $bin (set SNAPTP_BIN)" >&2; exit 1; }
py="$(command -v python3)"

hog_pids=()
start_hogs() {
    for _ in $(seq "$hogs"); do
        sh -c 'while :; do :; done' &
        hog_pids+=($!)
    done
    sleep 1
}
stop_hogs() {
    [ ${#hog_pids[@]} -gt 0 ] && kill "${hog_pids[@]}" 2>/dev/null || true
    wait "${hog_pids[@]}" 2>/dev/null || true
    hog_pids=()
}
trap stop_hogs EXIT

# snaptp_row NAME BIN: "prefill ± std | decode ± std" of one `snaptp bench` run.
snaptp_row() {
    "$2" bench --model "$model" --prompt-tokens 512 --gen-tokens 64 --repeat 3 --threads "$threads" \
        --json 2>/dev/null | "$py" -c '
import json, sys
r = json.load(sys.stdin)
r = r["results"][0] if "results" in r else r
print("%.1f ± %.1f | %.1f ± %.1f" % (r["prefill_tokens_per_s"], r["prefill_tokens_per_s_std"],
                                     r["decode_tokens_per_s"], r["decode_tokens_per_s_std"]))'
}

llama_row() {
    "$llama" -m "$model" -p 512 -n 64 -t "$threads" -r 3 -o json 2>/dev/null | "$py" -c '
import json, sys
rows = {("pp" if r["n_prompt"] else "tg"): r for r in json.load(sys.stdin)}
f = lambda r: "%.1f ± %.1f" % (r["avg_ts"], r["stddev_ts"])
print("%s | %s" % (f(rows["pp"]), f(rows["tg"])))'
}

engines=("snaptp:$bin")
[ -n "$baseline" ] && engines+=("baseline:$baseline")
[ -x "$llama" ] && engines+=("llama.cpp:$llama")
declare -A res
for phase in idle loaded; do
    [ "$phase" = loaded ] && start_hogs
    for e in "${engines[@]}"; do
        name="${e%%:*}" exe="${e#*:}"
        echo "bench_contention: $phase: $name (load $(cut -d' ' -f1 /proc/loadavg))" >&2
        if [ "$name" = llama.cpp ]; then res[$name,$phase]="$(llama_row)"
        else res[$name,$phase]="$(snaptp_row "$name" "$exe")"; fi
    done
    [ "$phase" = loaded ] && stop_hogs
done

{
    echo "# CPU speed with and without other work on the cores (\`bench/bench_contention.sh\`)"
    echo "# units: tokens/s, mean ± std over 3 repetitions; pp512 = prefill of 512 tokens, tg64 = 64 decoded tokens"
    echo "# machine: $(lscpu | sed -n 's/^Model name: *//p'), $cores cores; $threads threads per engine; loaded = $hogs busy-loop processes running"
    echo "# model: $(basename "$model"); date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "# snaptp: $bin${baseline:+; baseline: $baseline}; llama.cpp: $llama"
    echo
    echo "| engine | idle pp512 | idle tg64 | loaded pp512 | loaded tg64 |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    for e in "${engines[@]}"; do
        name="${e%%:*}"
        echo "| $name | ${res[$name,idle]} | ${res[$name,loaded]} |"
    done
} >"$out"
cat "$out"
