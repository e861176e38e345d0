#!/usr/bin/env bash
# run.sh: builds the libFuzzer harnesses (clang, ASan + UBSan, into build-fuzz/) and
# runs each one in turn for SECONDS (default 30, what CI gives each) or RUNS
# executions, whichever comes first, starting from the committed seeds in
# tests/fuzz/corpus/<target> (what a run finds is kept in build-fuzz/corpus/, never in
# the tree). Prints one line per fuzzer: executions, coverage, crashes. Exits 1 when
# a fuzzer crashed; the input is then in build-fuzz/crashes/<target>/: fix the parser
# and commit the input under tests/fuzz/regress/<target>/, which ctest replays.
#
#   bash tests/fuzz/run.sh [SECONDS [RUNS]] [TARGET...]     e.g. run.sh 30, run.sh 5 0 gguf
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-30}"
runs="${2:-0}" # 0: no limit but time
shift $(($# > 2 ? 2 : $#))
build="${SNAPTP_FUZZ_BUILD:-build-fuzz}"

if ! command -v clang >/dev/null 2>&1; then
    echo "fuzz: clang not found (tests/setup.sh installs it)" >&2
    exit 1
fi
# SNAPTP_FUZZ_SKIP_BUILD=1: the build is done (bench/fuzz/run.sh builds once, then runs
# several of these side by side, which must not configure the same tree at once).
if [ "${SNAPTP_FUZZ_SKIP_BUILD:-0}" != 1 ]; then
    cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DSNAPTP_FUZZ=ON -DSNAPTP_CUDA=OFF -DSNAPTP_NATIVE=OFF >/dev/null
    cmake --build "$build" -j 2 --target fuzzers fuzz_kv_store_replay >/dev/null
fi

# The KV store's seed is a store its own writer made for the harness's identity.
if [ ! -s tests/fuzz/corpus/kv_store/valid_store.safetensors ]; then
    tmp="$(mktemp -d)"
    SNAPTP_FUZZ_WRITE_SEED="$tmp" "$build/tests/fuzz/fuzz_kv_store_replay" /dev/null
    mkdir -p tests/fuzz/corpus/kv_store
    cp "$tmp/rank-0-of-1.safetensors" tests/fuzz/corpus/kv_store/valid_store.safetensors
    rm -rf "$tmp"
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for src in tests/fuzz/fuzz_*.c; do
        t="$(basename "$src" .c)"
        [ "$t" = fuzz_support ] || targets+=("${t#fuzz_}")
    done
fi

# Open MPI keeps what MPI_Init allocates (no harness calls it, but the core links
# it); a leak in a parser is a finding like any other.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
crashed=0
echo "# fuzzer          seconds  executions  exec/s  coverage(edges)  features  corpus  crashes  slow"
for t in "${targets[@]}"; do
    bin="$build/tests/fuzz/fuzz_$t"
    [ -x "$bin" ] || { echo "fuzz: $bin not built" >&2; exit 1; }
    work="$build/corpus/$t"
    crashes="$build/crashes/$t"
    mkdir -p "$work" "$crashes"
    rm -f "$crashes"/* # what an earlier run found is in its log; count this run's only
    log="$build/fuzz_$t.log"
    args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536
        -print_final_stats=1 -artifact_prefix="$crashes/")
    [ "$runs" != 0 ] && args+=(-runs="$runs")
    set +e
    "$bin" "${args[@]}" "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -o '[0-9]*$' || echo 0)
    rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -o '[0-9]*$' || echo 0)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    cov=$(echo "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*' || echo 0)
    ft=$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*' || echo 0)
    corp=$(echo "$last" | grep -o 'corp: [0-9]*' | grep -o '[0-9]*' || echo 0)
    # libFuzzer also writes slow-unit-* there: inputs slower than the rest, not failures.
    n_crash=$(find "$crashes" -type f ! -name 'slow-unit-*' | wc -l)
    n_slow=$(find "$crashes" -type f -name 'slow-unit-*' | wc -l)
    printf "%-17s %7s  %10s  %6s  %15s  %8s  %6s  %7s  %4s\n" "$t" "$seconds" "${execs:-0}" \
        "${rate:-0}" "${cov:-0}" "${ft:-0}" "${corp:-0}" "$n_crash" "$n_slow"
    if [ $rc -ne 0 ] || [ "$n_crash" -ne 0 ]; then
        crashed=1
        echo "fuzz: fuzz_$t failed (exit $rc); its log ($log) ends:" >&2
        # (no match must not end the script: the other targets still run)
        grep -E "ERROR|SUMMARY|runtime error|#[0-9]+ 0x" "$log" | head -n 30 >&2 || true
        ls "$crashes" >&2 || true
    fi
done
exit $crashed
