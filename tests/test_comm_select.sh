#!/usr/bin/env bash
# test_comm_select.sh: the NCCL/MPI choice on 2 ranks. Runs `test_comm_select
# --child` under mpirun -np 2 with SNAPTP_COMM = auto, mpi and nccl: every rank
# must reach the same decision (without a GPU: auto falls back to MPI, nccl is
# refused on both ranks naming "no CUDA device"), then ranks given different
# SNAPTP_COMM values must both fail with "differs between ranks". Each run is
# bounded by `timeout`, so a rank left waiting in a collective fails the test.
set -uo pipefail

root="${SNAPTP_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
bin="${SNAPTP_TEST_COMM_SELECT:-}"
if [ -z "$bin" ] && [ -n "${SNAPTP_BIN:-}" ]; then
    bin="$(dirname "$SNAPTP_BIN")/tests/test_comm_select"
fi
[ -z "$bin" ] && bin="$root/build/tests/test_comm_select"
if [ ! -x "$bin" ]; then
    echo "test_comm_select.sh: test binary '$bin' not found" >&2
    exit 1
fi
if ! command -v mpirun >/dev/null 2>&1; then
    echo "test_comm_select.sh: skipped: no mpirun on PATH"
    [ "${CI:-}" = true ] && exit 1
    exit 0
fi
source "$root/tests/mpi_env.sh"
unset SNAPTP_FAULT SNAPTP_COMM_TIMEOUT_S SNAPTP_TEST_MODE_MISMATCH

passed=0 failed=0
pass() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
work="$(mktemp -d /tmp/snaptp_test_comm_select.XXXXXX)"
trap 'rm -rf "$work"' EXIT

for mode in auto mpi nccl; do
    if SNAPTP_COMM=$mode timeout -k 5 90 mpirun "${mpi_flags[@]}" -np 2 "$bin" --child \
        >"$work/out.$mode" 2>"$work/err.$mode"; then
        pass "SNAPTP_COMM=$mode, 2 ranks: $(tail -n 1 "$work/out.$mode")"
    else
        fail "SNAPTP_COMM=$mode, 2 ranks: exited $?"
        cat "$work/out.$mode" "$work/err.$mode"
    fi
done

# Ranks that disagree must not enter NCCL's init one-sidedly: both fail, promptly.
if SNAPTP_TEST_MODE_MISMATCH=1 timeout -k 5 90 mpirun "${mpi_flags[@]}" \
    -np 1 -x SNAPTP_COMM=auto "$bin" --child : -np 1 -x SNAPTP_COMM=mpi "$bin" --child \
    >"$work/out.mix" 2>"$work/err.mix"; then
    pass "SNAPTP_COMM auto on rank 0, mpi on rank 1: $(tail -n 1 "$work/out.mix")"
else
    fail "mismatched SNAPTP_COMM: exited $?"
    cat "$work/out.mix" "$work/err.mix"
fi

echo "test_comm_select.sh: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
