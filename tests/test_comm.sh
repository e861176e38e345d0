#!/usr/bin/env bash
# test_comm.sh: the communicator on several ranks. Runs test_comm under mpirun with
# 1, 2 and 4 ranks, then the fault scenarios: 4 ranks, rank 2 fails at its 3rd
# all-reduce (SNAPTP_FAULT modes error, kill, exit, and hang with a collective
# timeout); every rank must be gone within 10 s and stderr must say what failed.
#
# The test binary: $SNAPTP_TEST_COMM if set, else the build's tests/test_comm next
# to the snaptp binary ($(dirname "$SNAPTP_BIN")/tests/test_comm, which is where
# tests/CMakeLists.txt puts it), else build/tests/test_comm under the repo root.
set -uo pipefail

root="${SNAPTP_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
bin="${SNAPTP_TEST_COMM:-}"
if [ -z "$bin" ] && [ -n "${SNAPTP_BIN:-}" ]; then bin="$(dirname "$SNAPTP_BIN")/tests/test_comm"; fi
[ -z "$bin" ] && bin="$root/build/tests/test_comm"
if [ ! -x "$bin" ]; then
    echo "test_comm.sh: test binary '$bin' not found (build the test_comm target)" >&2
    exit 1
fi
if ! command -v mpirun >/dev/null 2>&1; then
    # Without an MPI launcher only the job-of-one path can run; ctest runs that.
    echo "test_comm.sh: skipped: no mpirun on PATH"
    [ "${CI:-}" = true ] && exit 1
    exit 0
fi

source "$root/tests/mpi_env.sh"
unset SNAPTP_FAULT SNAPTP_COMM_TIMEOUT_S

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }

work="$(mktemp -d /tmp/snaptp_test_comm.XXXXXX)"
trap 'rm -rf "$work"' EXIT

for np in 1 2 4; do
    if timeout -k 5 60 mpirun "${mpi_flags[@]}" -np "$np" "$bin" >"$work/out.$np" 2>"$work/err.$np"; then
        pass "mpirun -np $np: $(tail -n 1 "$work/out.$np")"
    else
        fail "mpirun -np $np exited $?"
        cat "$work/out.$np" "$work/err.$np"
    fi
done

# A malformed fault spec is refused before the job starts, with the spec named.
if SNAPTP_FAULT="rank=2,at=bogus:1" "$bin" >/dev/null 2>"$work/err.bad"; then
    fail "malformed SNAPTP_FAULT was accepted"
elif grep -q "unknown op 'bogus'" "$work/err.bad"; then
    pass "malformed SNAPTP_FAULT refused: $(head -n 1 "$work/err.bad")"
else
    fail "malformed SNAPTP_FAULT: unexpected message: $(cat "$work/err.bad")"
fi

# alive PID: the process exists and is not a zombie (a dead rank whose parent,
# mpirun, exited before reaping it shows as Z until init reaps it).
alive() {
    local state
    state="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
    [ -n "$state" ] && [ "${state:0:1}" != Z ]
}

# fault_case MODE EXPECT [VAR=VALUE...]: 4 ranks, rank 2 fails at its 3rd all-reduce.
fault_case() {
    local mode="$1" expect="$2"
    shift 2
    local dir="$work/fault.$mode"
    mkdir -p "$dir"
    local t0 t1 rc
    t0="$(date +%s.%N)"
    env "$@" SNAPTP_FAULT="rank=2,at=allreduce:3,mode=$mode" \
        timeout -k 5 20 mpirun "${mpi_flags[@]}" -np 4 "$bin" --fault-run "$dir" \
        >"$dir/out" 2>"$dir/err"
    rc=$?
    t1="$(date +%s.%N)"
    local elapsed
    elapsed="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
    # Every rank wrote its pid before the fault; none may outlive mpirun (1 s grace).
    local started=0 left=""
    for p in "$dir"/pid.*; do [ -f "$p" ] && started=$((started + 1)); done
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        left=""
        for p in "$dir"/pid.*; do
            [ -f "$p" ] && alive "$(cat "$p")" && left="$left ${p##*.}"
        done
        [ -z "$left" ] && break
        sleep 0.1
    done
    local why=""
    [ "$rc" = 0 ] && why="$why; mpirun exited 0"
    # 124: timeout stopped mpirun (137, its -k, is also what mpirun returns for a
    # SIGKILLed rank: the elapsed-time check below catches that case).
    [ "$rc" = 124 ] && why="$why; timed out"
    [ "$started" = 4 ] || why="$why; $started of 4 ranks started"
    [ -n "$left" ] && why="$why; ranks still running:$left"
    awk -v e="$elapsed" 'BEGIN { exit !(e < 10) }' || why="$why; took $elapsed s (limit 10 s)"
    grep -q -- "$expect" "$dir/err" || why="$why; stderr lacks '$expect'"
    if [ -z "$why" ]; then
        pass "fault mode=$mode: mpirun exited $rc after $elapsed s, 4 of 4 ranks gone; stderr: $(grep -m 1 -- "$expect" "$dir/err" | cut -c 1-150)"
    else
        fail "fault mode=$mode: exit $rc after $elapsed s${why}"
        sed 's/^/  | /' "$dir/err"
    fi
}

# error: rank 2's all-reduce returns SNP_ERR_COMM, the test calls comm_fail, which
# prints "[rank 2/4 host] ..." and MPI_Aborts the job.
fault_case error "\[rank 2/4 .*injected fault at allreduce #3"
# kill: rank 2 dies of SIGKILL; mpirun notices and kills the ranks blocked in the
# all-reduce ("mpirun noticed that process rank 2 ... exited on signal 9").
fault_case kill "process rank 2 .*signal 9"
# exit: rank 2 leaves with _exit(3) and no MPI_Finalize (a bare exit()).
fault_case exit "Exit code: *3"
# hang: rank 2 sleeps forever; the other ranks' all-reduces time out after 3 s and
# the first of them to notice aborts the job.
fault_case hang "did not complete within 3 s" SNAPTP_COMM_TIMEOUT_S=3

echo "test_comm.sh: $passed passed, $failed failed"
[ "$failed" = 0 ]
