#!/usr/bin/env bash
# test_kv_store.sh: `snaptp qa --kv-store` through the binary, on SmolLM2.
#  1. test_kv_store (the C exactness test) under mpirun -np 2 (golden models) and
#     -np 3 (SmolLM2): every rank writes and reads only its own file.
#  2. Three questions about one document, at tp 1 and tp 3: the answers of one run
#     that writes the store, and of a second run that reads it, equal those of a
#     fresh `qa` per question; the second run prefills none of the document.
#  3. Bad input, each a non-zero exit with the file and what differs named, and the
#     store never used: another model, document or tp size; a truncated or corrupted
#     file; a rank's file missing; an unwritable directory; a filesystem too small;
#     and two processes writing one store at once (one writes, the other waits and
#     reads, both answer alike).
set -uo pipefail
root="${SNAPTP_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
bin="${SNAPTP_BIN:-$root/build/snaptp}"
test_bin="$(dirname "$bin")/tests/test_kv_store"
gguf="${SNAPTP_SMOLLM2_GGUF:-}"
for f in "$bin" "$test_bin"; do
    [ -x "$f" ] || { echo "test_kv_store.sh: $f not built" >&2; exit 1; }
done
if [ -z "$gguf" ]; then
    echo "test_kv_store.sh: skipped: SNAPTP_SMOLLM2_GGUF not set"
    [ "${CI:-}" = true ] && exit 1
    exit 0
fi
have_mpi=1
command -v mpirun >/dev/null 2>&1 || have_mpi=0
[ $have_mpi = 1 ] && source "$root/tests/mpi_env.sh"
export OMP_NUM_THREADS=1 SNAPTP_SOURCE_DIR="$root"
unset SNAPTP_FAULT

passed=0 failed=0 skipped=0
pass() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
skip() { skipped=$((skipped + 1)); echo "skipped: $*"; }
work="$(mktemp -d /tmp/snaptp_test_kv_store.XXXXXX)"
cleanup() {
    mountpoint -q "$work/small" 2>/dev/null && umount "$work/small"
    rm -rf "$work"
}
trap cleanup EXIT

# A document of about 1,000 tokens and three questions about it.
head -c 4000 "$root/README.md" >"$work/doc.txt"
head -c 3000 "$root/../shared/DESIGN.md" >"$work/other.txt"
questions=("What does snaptp compress?" "Which model is the default?" "How are the ranks launched?")
printf '%s\n' "${questions[@]}" >"$work/questions.txt"
qa_flags=(--model "$gguf" --document "$work/doc.txt" --kv-policy snapkv --budget 128 --window 32
    --kernel 7 --max-tokens 12 --json --quiet)

# run_qa OUT [launcher args...] -- [qa args...]: one qa run, its JSON lines in OUT.
run_qa() {
    local out=$1; shift
    local launch=()
    while [ "$1" != "--" ]; do launch+=("$1"); shift; done
    shift
    timeout -k 5 300 "${launch[@]}" "$bin" qa "${qa_flags[@]}" "$@" >"$out" 2>"$out.err"
}

# answers_equal FRESH_PREFIX STORE_JSON: the store run's answers equal the fresh runs'.
answers_equal() {
    python3 - "$@" <<'PY'
import json, sys
fresh = [json.loads(open("%s.%d" % (sys.argv[1], i)).read().strip().splitlines()[-1]) for i in range(3)]
for path in sys.argv[2:]:
    got = [json.loads(l) for l in open(path).read().strip().splitlines()]
    assert len(got) == 3, (path, len(got))
    for i, (f, g) in enumerate(zip(fresh, got)):
        assert f["answer"] == g["answer"], (path, i, f["answer"], g["answer"])
        assert f["prompt_tokens"] == g["prompt_tokens"], (path, i)
        assert g["question_index"] == i + 1
print("answers:", " | ".join(repr(f["answer"]) for f in fresh))
PY
}

# modes JSON: the kv_store modes of a run's questions, comma separated.
modes() { python3 -c "import json,sys; print(','.join(json.loads(l)['kv_store']['mode'] for l in open(sys.argv[1])))" "$1"; }

check_exact() { # TP LAUNCH...
    local tp=$1; shift
    local store="$work/store_tp$tp"
    for i in 0 1 2; do
        run_qa "$work/fresh$tp.$i" "$@" -- --question "${questions[$i]}" ||
            { fail "tp=$tp fresh question $((i + 1))"; cat "$work/fresh$tp.$i.err"; return; }
    done
    run_qa "$work/write$tp" "$@" -- --questions "$work/questions.txt" --kv-store "$store" ||
        { fail "tp=$tp writing run"; cat "$work/write$tp.err"; return; }
    run_qa "$work/read$tp" "$@" -- --question "${questions[0]}" --question "${questions[1]}" \
        --question "${questions[2]}" --kv-store "$store" ||
        { fail "tp=$tp reading run"; cat "$work/read$tp.err"; return; }
    local m1 m2
    m1=$(modes "$work/write$tp") m2=$(modes "$work/read$tp")
    if [ "$m1" = write,read,read ] && [ "$m2" = read,read,read ] &&
        [ "$(ls "$store"/rank-*-of-$tp.safetensors | wc -l)" = "$tp" ]; then
        pass "tp=$tp store modes: first run $m1, second run $m2, $tp file(s)"
    else
        fail "tp=$tp store modes: $m1 / $m2"; ls -la "$store"
    fi
    if answers_equal "$work/fresh$tp" "$work/write$tp" "$work/read$tp" >"$work/eq" 2>&1; then
        pass "tp=$tp three questions with the store equal fresh qa: $(cat "$work/eq")"
    else
        fail "tp=$tp answers differ"; cat "$work/eq"
    fi
    python3 - "$work/read$tp" "$work/fresh$tp.0" <<'PY' && pass "tp=$tp: a read question runs only its own tokens" || fail "tp=$tp prefill tokens"
import json, sys
r = json.loads(open(sys.argv[1]).readline())
f = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
assert r["prefill_tokens_run"] == r["prompt_tokens"] - r["prefix_tokens"], r
assert r["prefill_tokens_run"] < 40 and f["prefill_tokens_run"] == f["prompt_tokens"], (r, f)
assert r["kv_store"]["bytes_read"] == r["kv_store"]["planned_bytes"], r["kv_store"]
PY
}

# 1. The C test under mpirun.
if [ $have_mpi = 1 ]; then
    for np in 2 3; do
        if timeout -k 5 300 mpirun "${mpi_flags[@]}" -np $np -x SNAPTP_SMOLLM2_GGUF -x SNAPTP_SOURCE_DIR \
            "$test_bin" >"$work/c$np" 2>&1; then
            pass "test_kv_store at tp=$np: $(tail -n 1 "$work/c$np")"
        else
            fail "test_kv_store at tp=$np"; cat "$work/c$np"
        fi
    done
else
    skip "no mpirun: multi-rank cases"
fi

# 2. Exactness through the binary.
check_exact 1
if [ $have_mpi = 1 ]; then check_exact 3 mpirun "${mpi_flags[@]}" -np 3; fi

# 3. Bad input.
# expect NAME WANT -- qa args...: qa fails with WANT on stderr (and no sanitizer report).
expect() {
    local name=$1 want=$2; shift 3
    local launch=()
    if [ "$1" = "@mpi3" ]; then launch=(mpirun "${mpi_flags[@]}" -np 3); shift; fi
    run_qa "$work/bad" "${launch[@]}" -- "$@"
    local rc=$?
    if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -qF -- "$want" "$work/bad.err" &&
        ! grep -qE "Sanitizer|runtime error:" "$work/bad.err"; then
        pass "$name (exit $rc): $(grep -m1 -F -- "$want" "$work/bad.err" | cut -c1-220)"
    else
        fail "$name: exit $rc, wanted '$want'"; head -20 "$work/bad.err"
    fi
}
s1="$work/store_tp1"
q=(--question "${questions[0]}")
# Another model: the same GGUF with bytes appended is another file to the fingerprint.
cp "$gguf" "$work/other.gguf" && head -c 64 /dev/zero >>"$work/other.gguf"
expect "another model" "was made by another model" -- "${q[@]}" --kv-store "$s1" --model "$work/other.gguf"
expect "another document" "holds another document" -- "${q[@]}" --kv-store "$s1" --document "$work/other.txt"
if [ $have_mpi = 1 ]; then
    expect "another tp size" "was written by a job of 1 ranks; this job has 3" -- @mpi3 "${q[@]}" --kv-store "$s1"
fi
cp -r "$s1" "$work/trunc"
f="$work/trunc/rank-0-of-1.safetensors"
truncate -s $(($(stat -c %s "$f") / 2)) "$f"
expect "truncated store" "is not a complete store" -- "${q[@]}" --kv-store "$work/trunc"
cp -r "$s1" "$work/corrupt"
f="$work/corrupt/rank-0-of-1.safetensors"
size=$(stat -c %s "$f")
# One byte of the last layer's queries, and one in the middle of the K/V.
printf '\x55' | dd of="$f" bs=1 seek=$((size - 100)) conv=notrunc status=none
printf '\x55' | dd of="$f" bs=1 seek=$((size / 2)) conv=notrunc status=none
expect "corrupted store" "fails its checksum" -- "${q[@]}" --kv-store "$work/corrupt"
if [ $have_mpi = 1 ]; then
    cp -r "$work/store_tp3" "$work/partial" && rm "$work/partial/rank-1-of-3.safetensors"
    expect "a rank's file missing" "holds the files of 2 of this job's 3 ranks" -- @mpi3 "${q[@]}" --kv-store "$work/partial"
fi
expect "unwritable directory" "kv-store: cannot create /proc/snaptp-kv-store" -- "${q[@]}" --kv-store /proc/snaptp-kv-store
: >"$work/a_file"
expect "directory is a file" "is not a directory" -- "${q[@]}" --kv-store "$work/a_file"
mkdir -p "$work/small"
if mount -t tmpfs -o size=1m tmpfs "$work/small" 2>"$work/mount.err"; then
    expect "filesystem too small" "MiB free; the store needs" -- "${q[@]}" --kv-store "$work/small/s"
    [ -z "$(ls -A "$work/small/s" 2>/dev/null | grep -v '^.snaptp-kv-store.lock$')" ] &&
        pass "nothing was written to the small filesystem" || fail "files left in $work/small/s"
else
    skip "filesystem too small: cannot mount a small tmpfs here ($(head -c 120 "$work/mount.err"))"
fi

# Two processes on one new store: the second waits for the first's lock, then reads.
both="$work/both"
run_qa "$work/p1" -- "${q[@]}" --kv-store "$both" & p1=$!
run_qa "$work/p2" -- "${q[@]}" --kv-store "$both" & p2=$!
wait $p1; r1=$?; wait $p2; r2=$?
got=$(printf '%s\n%s\n' "$(modes "$work/p1" 2>/dev/null)" "$(modes "$work/p2" 2>/dev/null)" | sort | tr '\n' ' ')
if [ $r1 = 0 ] && [ $r2 = 0 ] && [ "$got" = "read write " ] &&
    python3 -c "import json,sys; a,b=[json.loads(open(p).read())['answer'] for p in sys.argv[1:]]; assert a == b" \
        "$work/p1" "$work/p2" && [ -z "$(ls -A "$both" | grep tmp)" ]; then
    pass "two processes on one store: modes $got, same answer, no temporary file left"
else
    fail "two processes on one store: exits $r1 $r2, modes $got"; cat "$work/p1.err" "$work/p2.err"
fi

# On a terminal the answer starts on a line of its own, not after the progress line.
if command -v script >/dev/null 2>&1; then
    script -qc "$bin qa --model $gguf --document $work/doc.txt --question 'What is snaptp?' --max-tokens 4 --chunk 256" \
        /dev/null >"$work/tty.out" 2>&1
    if python3 - "$work/tty.out" <<'PY'; then pass "terminal: the answer is not printed on the progress line"; else fail "terminal: answer on the progress line"; cat -A "$work/tty.out" | tail -3; fi
import re, sys
text = open(sys.argv[1], "rb").read().decode("utf-8", "replace")
lines = text.replace("\r\n", "\n").split("\n")
last = [l for l in lines if "prefill layer" in l][-1]
tail = last.split("\x1b[K")[-1].rstrip("\r")
assert re.fullmatch(r"prefill layer (\d+)/\1 chunk (\d+)/\2 \| .* ETA \d+ s", tail), repr(tail)
PY
else
    skip "terminal: no script(1)"
fi

echo "test_kv_store.sh: $passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
