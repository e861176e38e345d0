#!/usr/bin/env bash
# bench/fuzz/run.sh: the long fuzzing run of issue 14: each harness of tests/fuzz for
# 10 million executions or an hour, whichever comes first, through tests/fuzz/run.sh,
# JOBS harnesses side by side (default 1; each is one process on one core). Writes the
# table (executions, coverage in edges and features, corpus size, crashes) to
# bench/results/fuzz.md and, like CI, exits 1 if a fuzzer crashed; the input is then
# in build-fuzz/crashes/<target>/.
#
#   bash bench/fuzz/run.sh [SECONDS [RUNS [JOBS [TARGETS]]]]  (defaults 3600, 10000000, 1, all)
# TARGETS: a comma-separated subset (e.g. gguf,config), for a run split over sessions.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-3600}"
runs="${2:-10000000}"
jobs="${3:-1}"
out="${FUZZ_OUT:-bench/results/fuzz.md}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

targets=()
for src in tests/fuzz/fuzz_*.c; do
    t="$(basename "$src" .c)"
    [ "$t" = fuzz_support ] || targets+=("${t#fuzz_}")
done
if [ -n "${4:-}" ]; then
    IFS=, read -r -a chosen <<<"$4"
    for t in "${chosen[@]}"; do
        [ -f "tests/fuzz/fuzz_$t.c" ] || { echo "bench/fuzz: no harness tests/fuzz/fuzz_$t.c" >&2; exit 2; }
    done
    targets=("${chosen[@]}")
fi
# Build once (a one-execution pass of the first target), then deal the targets out
# round-robin to JOBS lanes that skip the build.
nice -n 19 bash tests/fuzz/run.sh 1 1 "${targets[0]}" >/dev/null
start=$(date +%s)
pids=()
for ((lane = 0; lane < jobs; lane++)); do
    mine=()
    for ((i = lane; i < ${#targets[@]}; i += jobs)); do mine+=("${targets[$i]}"); done
    [ ${#mine[@]} -gt 0 ] || continue
    SNAPTP_FUZZ_SKIP_BUILD=1 nice -n 19 bash tests/fuzz/run.sh "$seconds" "$runs" "${mine[@]}" \
        >"$tmp/lane$lane" 2>"$tmp/lane$lane.err" &
    pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
wall=$(($(date +%s) - start))
{
    head -n 1 "$tmp/lane0"
    for ((lane = 0; lane < jobs; lane++)); do
        [ -f "$tmp/lane$lane" ] && grep -v "^#" "$tmp/lane$lane" || true
    done | sort
} >"$tmp/table"
cat "$tmp/table" "$tmp"/lane*.err
{
    echo "# Fuzzing: each harness for $runs executions or $seconds s"
    echo
    echo "\`bash bench/fuzz/run.sh $seconds $runs $jobs${4:+ $4}\`, $(date -u +%Y-%m-%d), $(getconf _NPROCESSORS_ONLN) cores," \
        "$jobs harness(es) at a time, $wall s in all, $(clang --version | head -n 1), commit $(git rev-parse --short HEAD)."
    echo "Coverage is libFuzzer's: \`cov\` edges of the instrumented code, \`ft\` features."
    echo "\`seconds\` is the cap; a harness that reached the execution count first stopped early."
    echo
    echo '```'
    cat "$tmp/table"
    echo '```'
    if cat "$tmp"/lane*.err | grep -q .; then
        echo
        echo "Failures:"
        echo '```'
        cat "$tmp"/lane*.err
        echo '```'
    fi
} >"$out"
echo "bench/fuzz: table written to $out"
exit "$rc"
