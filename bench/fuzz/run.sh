#!/usr/bin/env bash
# bench/fuzz/run.sh: the long fuzzing run of issue 14: each harness of tests/fuzz for
# 10 million executions or an hour, whichever comes first (about 6 hours for all six
# on a slow machine), through tests/fuzz/run.sh. Writes the table (executions,
# coverage in edges and features, corpus size, crashes) to
# bench/results/fuzz.md and, like CI, exits 1 if a fuzzer crashed; the input is then
# in build-fuzz/crashes/<target>/.
#
#   bash bench/fuzz/run.sh [SECONDS [RUNS]]      (defaults 3600, 10000000)
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-3600}"
runs="${2:-10000000}"
out=bench/results/fuzz.md
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
set +e
nice -n 19 bash tests/fuzz/run.sh "$seconds" "$runs" | tee "$tmp"
rc=${PIPESTATUS[0]}
set -e
{
    echo "# Fuzzing: each harness for $runs executions or $seconds s"
    echo
    echo "\`bash bench/fuzz/run.sh $seconds $runs\`, $(date -u +%Y-%m-%d), $(getconf _NPROCESSORS_ONLN) cores," \
        "$(clang --version | head -n 1), commit $(git rev-parse --short HEAD)."
    echo "Coverage is libFuzzer's: \`cov\` edges of the instrumented code, \`ft\` features."
    echo
    echo '```'
    cat "$tmp"
    echo '```'
} >"$out"
echo "bench/fuzz: table written to $out"
exit "$rc"
