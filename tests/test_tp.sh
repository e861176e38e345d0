#!/usr/bin/env bash
# test_tp.sh: tensor parallelism on several ranks.
#  1. test_tp (sharded vs whole-model logits, greedy tokens, SnapKV positions) under
#     mpirun -np 2 and 4 on the tiny golden models, and -np 3 on SmolLM2.
#  2. SmolLM2 at tp = 2 is refused with the head counts named, on every rank.
#  3. `snaptp generate --json` at tp = 3 reports 2 all-reduces per layer per token
#     and the bytes moved.
#  4. A fault in one of 4 ranks mid-prefill (error and kill) ends every rank
#     non-zero within 10 s, naming the rank; bounded by `timeout`, so a hang fails.
set -uo pipefail
root="${SNAPTP_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
bin="${SNAPTP_BIN:-$root/build/snaptp}"
test_tp="$(dirname "$bin")/tests/test_tp"
gguf="${SNAPTP_SMOLLM2_GGUF:-}"
for f in "$bin" "$test_tp"; do
    [ -x "$f" ] || { echo "test_tp.sh: $f not built" >&2; exit 1; }
done
if ! command -v mpirun >/dev/null 2>&1; then
    echo "test_tp.sh: skipped: no mpirun on PATH"
    [ "${CI:-}" = true ] && exit 1
    exit 0
fi
source "$root/tests/mpi_env.sh"
unset SNAPTP_FAULT SNAPTP_COMM_TIMEOUT_S
export OMP_NUM_THREADS=1 SNAPTP_SOURCE_DIR="$root"

passed=0 failed=0 skipped=0
pass() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
work="$(mktemp -d /tmp/snaptp_test_tp.XXXXXX)"
trap 'rm -rf "$work"' EXIT

for np in 2 4; do
    if timeout -k 5 300 mpirun "${mpi_flags[@]}" -np "$np" "$test_tp" >"$work/tp$np" 2>&1; then
        pass "test_tp at tp=$np: $(tail -n 1 "$work/tp$np")"
    else
        fail "test_tp at tp=$np"; cat "$work/tp$np"
    fi
done

if [ -z "$gguf" ]; then
    echo "skipped: SNAPTP_SMOLLM2_GGUF not set: no SmolLM2 checks"
    skipped=$((skipped + 1))
    [ "${CI:-}" = true ] && failed=$((failed + 1))
else
    if timeout -k 5 300 mpirun "${mpi_flags[@]}" -np 3 -x SNAPTP_SMOLLM2_GGUF "$test_tp" \
        >"$work/tp3" 2>&1; then
        pass "test_tp at tp=3 with SmolLM2: $(tail -n 1 "$work/tp3")"
    else
        fail "test_tp at tp=3"; cat "$work/tp3"
    fi

    timeout -k 5 120 mpirun "${mpi_flags[@]}" -np 2 "$bin" generate --model "$gguf" \
        --prompt "Hi" --max-tokens 4 >"$work/tp2.out" 2>"$work/tp2.err"
    rc=$?
    if [ $rc -ne 0 ] && grep -q "9 query heads cannot be split over tp = 2" "$work/tp2.err" &&
        grep -q "\[rank " "$work/tp2.err"; then
        pass "SmolLM2 at tp=2 refused (exit $rc): $(grep -m1 -o 'model: .*' "$work/tp2.err")"
    else
        fail "SmolLM2 at tp=2: exit $rc"; cat "$work/tp2.err"
    fi

    if timeout -k 5 300 mpirun "${mpi_flags[@]}" -np 3 "$bin" generate --model "$gguf" --chat \
        --prompt "Name a color." --max-tokens 8 --json >"$work/json" 2>"$work/json.err"; then
        if python3 - "$work/json" <<'PY'
import json, sys
o = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
c = o["collectives"]
assert o["tp"] == 3, o
# A value, not a message: the CPU backend's all-reduces are MPI's on host buffers.
assert o["allreduce_path"] == "mpi", o
assert c["decode_steps"] > 0, c
assert c["allreduce_per_layer_per_token"] == 2, c
# Two all-reduces of hidden size 576 fp32 per layer, 30 layers, one token.
assert c["allreduce_bytes_per_token"] == 2 * 30 * 576 * 4, c
# One host, shared memory: nothing crosses a network (test_netns.sh checks the other side).
assert c["decode_allreduce_net_bytes"] == 0 and c["prefill_allreduce_net_bytes"] == 0, c
print("tp=3: %.0f all-reduces per layer per token, %d bytes per token" % (
    c["allreduce_per_layer_per_token"], c["allreduce_bytes_per_token"]))
PY
        then pass "collective counts"; else fail "collective counts"; cat "$work/json"; fi
    else
        fail "generate --json at tp=3"; cat "$work/json.err"
    fi
fi

# tokenize under mpirun prints once (rank 0 has stdin; the others print nothing).
if [ -n "$gguf" ]; then
    got=$(echo "hello world" | timeout -k 5 60 mpirun "${mpi_flags[@]}" -np 3 "$bin" tokenize --model "$gguf" --json)
    want=$(echo "hello world" | "$bin" tokenize --model "$gguf" --json)
    if [ "$got" = "$want" ]; then pass "tokenize under mpirun -np 3 prints once: $got"
    else fail "tokenize under mpirun: got '$got', want '$want'"; fi
fi

# An error every rank meets alike is printed once (rank 0's), not once per rank.
timeout -k 5 60 mpirun "${mpi_flags[@]}" -np 3 "$bin" generate --model "$root/README.md" --prompt hi \
    >"$work/same.out" 2>"$work/same.err"
rc=$?
n=$(grep -c "neither a GGUF file" "$work/same.err")
if [ $rc -ne 0 ] && [ "$n" = 1 ] && grep -q "^\[rank 0/3 " "$work/same.err"; then
    pass "the same error on 3 ranks is printed once, by rank 0 (exit $rc)"
else
    fail "the same error on 3 ranks: exit $rc, printed $n times"; cat "$work/same.err"
fi

# Faults: rank 2 of 4 fails at its 40th all-reduce, in the middle of the prefill
# (2 layers x 8 chunks x 2 all-reduces = 32 per prefill pass; bench repeats).
for mode in error kill; do
    t0=$(date +%s.%N)
    SNAPTP_FAULT="rank=2,at=allreduce:40,mode=$mode" timeout -k 5 60 mpirun "${mpi_flags[@]}" \
        -np 4 -x SNAPTP_FAULT "$bin" bench --model "$root/tests/golden/llama_gqa" \
        --prompt-tokens 256 --gen-tokens 4 --repeat 2 --chunk 32 >"$work/fault.out" 2>"$work/fault.err"
    rc=$?
    dt=$(echo "$(date +%s.%N) - $t0" | bc)
    if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ "$(echo "$dt < 10" | bc)" = 1 ] &&
        grep -qE "rank 2|rank 2/4" "$work/fault.err"; then
        pass "fault mode=$mode: all ranks exited $rc after ${dt%???????} s, stderr names rank 2"
    else
        fail "fault mode=$mode: exit $rc after $dt s"; cat "$work/fault.err"
    fi
done

echo "test_tp.sh: $passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
