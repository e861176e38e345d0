#!/usr/bin/env bash
# test_readme_demo: the README's main command, taken from the README itself (the sh
# block after the "demo-command" marker) and run as it is written, minus its leading
# `bash tests/setup.sh &&` (run_all.sh has just done that), must answer the shipped
# question right: the answer names Ingrid Halvorsen. Then the same with --json, whose
# fields say that SnapKV ran with the SmolLM2 preset's kernel over an f16 cache and
# compressed the document.
set -u -o pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=0
pass() { echo "ok   $*"; }
fail() { echo "FAIL: $*"; failed=1; }

# The block: lines after the marker between ```sh and ```, continuations joined.
cmd="$(awk '/<!-- demo-command/ {m = 1; next} m && /^```sh/ {b = 1; next} b && /^```/ {exit}
            b {print}' README.md | sed -e 's/\\$//' | tr '\n' ' ')"
[ -n "$cmd" ] || { echo "FAIL: no demo-command block in README.md"; exit 1; }
case "$cmd" in
"bash tests/setup.sh && "*) cmd="${cmd#bash tests/setup.sh && }" ;;
*) fail "the README's main command no longer starts with 'bash tests/setup.sh &&': $cmd" ;;
esac
echo "# README command: $cmd"
[ -x build/snaptp ] || { echo "FAIL: build/snaptp is not built"; exit 1; }
# The command as written; OMPI_MCA_plm_rsh_agent= only because CI containers lack ssh.
if OMPI_MCA_plm_rsh_agent= timeout -k 5 300 bash -c "$cmd" >"$work/out" 2>"$work/err"; then
    answer="$(cat "$work/out")"
    if grep -q "Ingrid Halvorsen" "$work/out"; then
        pass "the README's main command answers: $answer"
    else
        fail "the README's main command answered '$answer', not naming Ingrid Halvorsen"
    fi
    if grep -q "snapkv budget 1024, window 32, kernel 31 max, preset SmolLM2-135M" "$work/err"; then
        pass "its stats line names SnapKV and the preset: $(grep '^# prompt' "$work/err")"
    else
        fail "the stats line does not say which SnapKV settings ran:"; cat "$work/err"
    fi
else
    fail "the README's main command failed (exit $?)"; cat "$work/err"
fi

if OMPI_MCA_plm_rsh_agent= timeout -k 5 300 bash -c "$cmd --json" >"$work/json" 2>"$work/json.err" &&
    python3 - "$work/json" <<'PY'
import json, sys
o = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
assert "Ingrid Halvorsen" in o["answer"], o["answer"]
assert o["kv_policy"] == "snapkv" and o["kernel"] == 31 and o["budget"] == 1024, o
assert o["snapkv_preset"] == "SmolLM2-135M" and o["kv_dtype"] == "F16", o
assert o["tp"] == 3 and o["prompt_tokens"] > 1500, o
assert 0 < o["kv_bytes"] < o["kv_bytes_full"], o
print("ok   --json: %s, %d prompt tokens, KV %d of %d bytes" % (
    o["answer"], o["prompt_tokens"], o["kv_bytes"], o["kv_bytes_full"]))
PY
then :; else
    fail "the README command with --json"; cat "$work/json.err" "$work/json"
fi
[ $failed = 0 ] && echo "test_readme_demo: passed" || echo "test_readme_demo: FAILED"
exit $failed
