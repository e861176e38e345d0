#!/usr/bin/env bash
# test_json_schema: generate, qa and bench --json, in the modes that print each
# optional field (chat and raw prompts, full and snapkv, a KV store written and
# read, decode-only and prompted bench rows, tp 1 and 3), checked against the
# README's table by tests/json_schema_check.py.
set -u -o pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/tests/mpi_env.sh"
bin="$root/build/snaptp"
gguf="${SNAPTP_SMOLLM2_GGUF:-$(bash "$root/tests/fetch_smollm2.sh")}"
doc="$root/examples/kestrel_ridge.md"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=0
run() { # run NAME CMD...: the command's stdout to $work/NAME
    local name="$1"
    shift
    if ! timeout -k 5 300 "$@" >"$work/$name" 2>"$work/$name.err"; then
        echo "FAIL: $name: exit $?"; cat "$work/$name.err"; failed=1
    fi
}
run gen_chat "$bin" generate --model "$gguf" --prompt "Name a color." --max-tokens 4 --json
run gen_raw "$bin" generate --model "$gguf" --raw --prompt "The sea is wide and the sky is blue, and" \
    --kv-policy snapkv --window 4 --budget 8 --max-tokens 4 --json
run gen_tp3 mpirun "${mpi_flags[@]}" -np 3 "$bin" generate --model "$gguf" --prompt "Hi" \
    --max-tokens 2 --json
run qa_store "$bin" qa --model "$gguf" --document "$doc" --question "Who was the first director?" \
    --question "What was the dome made of?" --max-tokens 4 --json
run qa_full "$bin" qa --model "$gguf" --document "$doc" --question "Who was the first director?" \
    --kv-policy full --max-tokens 0 --json
run bench "$bin" bench --model "$gguf" --prompt-tokens 0,64 --gen-tokens 2 --repeat 1 \
    --kv-policy full,snapkv --window 8 --budget 16 --batch 1,3 --json
check() {
    python3 "$root/tests/json_schema_check.py" "$root/README.md" "$@" || failed=1
}
check generate "$work/gen_chat" "$work/gen_raw" "$work/gen_tp3"
check qa "$work/qa_store" "$work/qa_full"
check bench "$work/bench"
# The optional fields did appear (else the checks above proved less than they say).
grep -q '"mode":"read"' "$work/qa_store" || { echo "FAIL: the second question did not read the store"; failed=1; }
grep -q '"snapkv_preset"' "$work/bench" || { echo "FAIL: bench printed no snapkv row"; failed=1; }
grep -q '"prefill_tokens_per_s":null' "$work/bench" || { echo "FAIL: bench printed no decode-only row"; failed=1; }
# A batch of 3 holds three caches of the single sequence's size, under each policy.
python3 - "$work/bench" <<'PY' || failed=1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
one = {(r["prompt_tokens"], r["kv_policy"]): r["kv_bytes"] for r in rows if r["batch"] == 1}
for r in rows:
    if r["batch"] == 3:
        want = 3 * one[(r["prompt_tokens"], r["kv_policy"])]
        assert r["kv_bytes"] == want, (r, want)
        assert abs(r["decode_tokens_per_s_per_seq"] * 3 - r["decode_tokens_per_s"]) < 1e-6 * r["decode_tokens_per_s"]
print("ok   bench --batch 3: three caches per row, tokens/s per sequence a third")
PY
[ $failed = 0 ] && echo "test_json_schema: passed" || echo "test_json_schema: FAILED"
exit $failed
