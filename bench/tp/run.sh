#!/usr/bin/env bash
# bench/tp/run.sh: tensor-parallel overhead on this (2-core) CPU machine: `snaptp bench` prefill
# and decode tokens/s at tp=1 and tp=N, one thread per rank (--threads 1), so
# the cost of the two all-reduces per layer shows. Models: a random Llama of SmolLM2's size whose
# heads divide by 2 (bench/tp/make_model.py, bf16 safetensors under /tmp, never committed) at
# tp 1 vs 2; SmolLM2-135M-Instruct (9 heads, 3 KV heads) at tp 1 vs 3 (3 ranks on 2 cores:
# oversubscribed). A tp=1 run with 2 threads is the same-cores reference. Collective counts come
# from `snaptp generate --json`. Writes bench/results/tp.md and bench/results/tp_bench.csv; raw
# outputs go to bench/out/tp/ (gitignored).
#
# Usage (from anywhere):  bash bench/tp/run.sh [--quick] [--repeat N] [--gen-tokens N]
#                         [--prompt-tokens LIST] [--max-load X] [--fresh]
#   --quick          prompt 128, 8 generated tokens, 1 repeat: a smoke run (results to bench/out/tp/quick)
#   --max-load X     wait before each run while the 1-min load is above X (1.0) ...
#   --max-wait S     ... for at most S seconds (900)
#   --fresh          rerun measurements whose raw output already exists
# Env: SNAPTP_BIN (default build-lead/snaptp, else the newest build*/snaptp),
#      SNAPTP_SMOLLM2_GGUF (default: tests/fetch_smollm2.sh), BENCH_PYTHON (/work/venv/bin/python).
set -u -o pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
py="${BENCH_PYTHON:-/work/venv/bin/python}"
[ -x "$py" ] || py=python3
prompt_tokens=512,2048 gen=64 repeat=3 max_load=1.0 max_wait=900 fresh=0 quick=0
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) quick=1; prompt_tokens=128; gen=8; repeat=1; shift ;;
    --repeat) repeat="${2:?}"; shift 2 ;;
    --gen-tokens) gen="${2:?}"; shift 2 ;;
    --prompt-tokens) prompt_tokens="${2:?}"; shift 2 ;;
    --max-load) max_load="${2:?}"; shift 2 ;;
    --max-wait) max_wait="${2:?}"; shift 2 ;;
    --fresh) fresh=1; shift ;;
    -h | --help) sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

bin="${SNAPTP_BIN:-}"
if [ -z "$bin" ]; then
    if [ -x "$repo/build-lead/snaptp" ]; then bin="$repo/build-lead/snaptp"
    else bin="$(ls -t "$repo"/build*/snaptp 2>/dev/null | head -n 1)"; fi
fi
[ -x "$bin" ] || { echo "run.sh: no snaptp binary (set SNAPTP_BIN)" >&2; exit 1; }
gguf="${SNAPTP_SMOLLM2_GGUF:-$(bash "$repo/tests/fetch_smollm2.sh" | tail -n 1)}"
[ -f "$gguf" ] || { echo "run.sh: SmolLM2 GGUF not found" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "run.sh: no mpirun on PATH" >&2; exit 1; }
source "$repo/tests/mpi_env.sh"

raw="$repo/bench/out/tp"
out_dir="$repo/bench/results"
[ $quick = 1 ] && raw="$repo/bench/out/tp/quick" && out_dir="$raw"
mkdir -p "$raw"
rand_model="$("$py" "$repo/bench/tp/make_model.py")" || { echo "run.sh: make_model.py failed" >&2; exit 1; }
llama2_tok="${SNAPTP_SHARED_DIR:-/work/shared}/tokenizers/llama2"

wait_load() {
    local t0=$SECONDS
    while awk -v m="$max_load" '{exit !($1 > m)}' /proc/loadavg && [ $((SECONDS - t0)) -lt "$max_wait" ]; do
        echo "  load $(cut -d' ' -f1 /proc/loadavg) > $max_load, waiting" >&2
        sleep 30
    done
}

bin_sha="$(sha1sum "$bin" | cut -d' ' -f1)"

# run NAME CMD...: runs CMD once, keeping its stdout in NAME.json, stderr in NAME.err, and the
# command, snaptp's sha1 and the load before/after in NAME.meta. Skipped when NAME.meta shows
# a successful run of the same command by the same binary (unless --fresh).
run() {
    local name="$1"; shift
    local cmdline; cmdline="cmd=$(printf '%q ' "$@")"
    if [ $fresh = 0 ] && [ -s "$raw/$name.json" ] && grep -q '^rc=0$' "$raw/$name.meta" 2>/dev/null &&
        grep -qxF "$cmdline" "$raw/$name.meta" && grep -qx "bin_sha1=$bin_sha" "$raw/$name.meta"; then
        echo "cached: $name" >&2; return 0
    fi
    wait_load
    local load0; load0="$(cut -d' ' -f1-3 /proc/loadavg)"
    local t0; t0=$(date +%s.%N)
    timeout -k 10 1800 "$@" >"$raw/$name.json" 2>"$raw/$name.err"
    local rc=$?
    {
        echo "$cmdline"
        echo "bin_sha1=$bin_sha"
        echo "date=$(date -Iseconds)"
        echo "load_before=$load0"
        echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)"
        echo "wall_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}')"
        echo "rc=$rc"
    } >"$raw/$name.meta"
    if [ $rc -ne 0 ]; then
        echo "FAILED ($rc): $name: $*" >&2; tail -n 5 "$raw/$name.err" >&2
    else
        echo "done: $name (load before $load0)" >&2
    fi
}

bench_args=(bench --prompt-tokens "$prompt_tokens" --gen-tokens "$gen" --repeat "$repeat" --json)
for spec in "llama768:$rand_model:2" "smollm2:$gguf:3"; do
    IFS=: read -r tag model np <<<"$spec"
    run "${tag}_tp1_t1" "$bin" "${bench_args[@]}" --model "$model" --threads 1
    run "${tag}_tp${np}_t1" mpirun "${mpi_flags[@]}" -np "$np" \
        "$bin" "${bench_args[@]}" --model "$model" --threads 1
    run "${tag}_tp1_t2" "$bin" "${bench_args[@]}" --model "$model" --threads 2
    tok=()
    [ "$tag" = llama768 ] && tok=(--tokenizer "$llama2_tok")
    gen_args=(generate --model "$model" "${tok[@]}" --max-tokens 16 --threads 1 --json --prompt
        "Tensor parallelism splits every layer's heads over the ranks and joins them with all-reduce.")
    run "${tag}_gen_tp1" "$bin" "${gen_args[@]}"
    run "${tag}_gen_tp${np}" mpirun "${mpi_flags[@]}" -np "$np" "$bin" "${gen_args[@]}"
done

"$py" "$repo/bench/tp/report.py" --raw "$raw" --out-dir "$out_dir" --machine "$(lscpu | sed -n 's/^Model name: *//p')" \
    --bin "$bin" --max-load "$max_load" --max-wait "$max_wait"
