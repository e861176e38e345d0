#!/usr/bin/env bash
# test_defaults: what a new user gets without flags. qa runs SnapKV with the model's
# preset (SmolLM2-135M: kernel 31) and says so; --kv-policy full and an explicit
# --kernel override it. generate wraps the prompt in the model's chat template
# (the instruct model answers "Write one sentence about the sea." instead of ending
# its turn at once) and says so; --raw gives plain completion. The CPU KV cache is
# f16 (half the bytes of --kv-dtype f32). inspect shows the preset. Bad choices are
# refused naming the flag or the config key.
set -u -o pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/build/snaptp"
gguf="${SNAPTP_SMOLLM2_GGUF:-$(bash "$root/tests/fetch_smollm2.sh")}"
doc="$root/examples/kestrel_ridge.md"
q="Who was the first director of the Kestrel Ridge Observatory?"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=0
fail() { echo "FAIL: $*"; failed=1; }
# field FILE EXPR: a Python expression over the last JSON line `o`
field() { python3 -c "import json,sys; o=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print($2)" "$1"; }
expect_eq() { # NAME GOT WANT
    if [ "$2" = "$3" ]; then echo "ok   $1: $2"; else fail "$1: got '$2', want '$3'"; fi
}

"$bin" qa --model "$gguf" --document "$doc" --question "$q" --max-tokens 24 --json >"$work/qa" 2>"$work/qa.err" ||
    fail "qa with defaults: $(cat "$work/qa.err")"
expect_eq "qa's default policy" "$(field "$work/qa" 'o["kv_policy"]')" snapkv
expect_eq "qa's kernel from the SmolLM2 preset" "$(field "$work/qa" 'o["kernel"], o["snapkv_preset"]')" "31 SmolLM2-135M"
expect_eq "qa's window and budget: snaptp's defaults" "$(field "$work/qa" 'o["window"], o["budget"]')" "32 2048"
expect_eq "qa's answer" "$(field "$work/qa" '"Ingrid Halvorsen" in o["answer"]')" True
"$bin" qa --model "$gguf" --document "$doc" --question "$q" --max-tokens 2 >/dev/null 2>"$work/line" ||
    fail "qa stats line run"
grep -q "snapkv budget 2048, window 32, kernel 31 max, preset SmolLM2-135M" "$work/line" &&
    echo "ok   qa's stats line names the settings and the preset" ||
    fail "qa's stats line: $(cat "$work/line")"

"$bin" qa --model "$gguf" --document "$doc" --question "$q" --kv-policy full --max-tokens 2 --json \
    >"$work/full" 2>/dev/null || fail "qa --kv-policy full"
expect_eq "qa --kv-policy full" "$(field "$work/full" 'o["kv_policy"], "kernel" in o')" "full False"
"$bin" qa --model "$gguf" --document "$doc" --question "$q" --kernel 7 --max-tokens 2 --json \
    >"$work/k7" 2>/dev/null || fail "qa --kernel 7"
expect_eq "qa --kernel 7 overrides the preset" "$(field "$work/k7" 'o["kernel"], o["snapkv_preset"]')" "7 None"

"$bin" generate --model "$gguf" --prompt "Write one sentence about the sea." --max-tokens 40 --json \
    >"$work/gen" 2>/dev/null || fail "generate"
expect_eq "generate's prompt format" "$(field "$work/gen" 'o["prompt_format"], o["chat_template"]')" "chat chatml"
expect_eq "generate answers through the template" "$(field "$work/gen" 'o["generated_tokens"] > 5 and "sea" in o["text"].lower()')" True
"$bin" generate --model "$gguf" --prompt "Write one sentence about the sea." --max-tokens 4 \
    >/dev/null 2>"$work/gen.err" || fail "generate (stats line)"
grep -q "^# chat template chatml (the model's) | prompt" "$work/gen.err" &&
    echo "ok   generate's stats line says the chat template" || fail "generate's stats line: $(cat "$work/gen.err")"
"$bin" generate --model "$gguf" --raw --prompt "Write one sentence about the sea." --max-tokens 4 --json \
    >"$work/raw" 2>/dev/null || fail "generate --raw"
expect_eq "generate --raw" "$(field "$work/raw" 'o["prompt_format"], o["chat_template"], o["prompt_tokens"]')" "raw None 7"
"$bin" generate --model "$gguf" --no-chat --prompt "x" --max-tokens 1 --json >"$work/nochat" 2>/dev/null
expect_eq "generate --no-chat" "$(field "$work/nochat" 'o["prompt_format"]')" raw

expect_error() { # NAME WANTED-TEXT CMD...
    local name="$1" want="$2"
    shift 2
    if "$@" >/dev/null 2>"$work/e"; then fail "$name: succeeded"; return; fi
    grep -qF -- "$want" "$work/e" && echo "ok   $name refused: $(head -c 160 "$work/e")" ||
        fail "$name: message lacks '$want': $(cat "$work/e")"
}
expect_error "--chat with --raw" "contradict" "$bin" generate --model "$gguf" --chat --raw --prompt x
expect_error "--system with --raw" "--system needs the chat template" "$bin" generate --model "$gguf" --raw --system s --prompt x
expect_error "--kernel 0" "--kernel" "$bin" qa --model "$gguf" --document "$doc" --question "$q" --kernel 0
expect_error "--kv-dtype bf16 on the CPU" "the cpu backend keeps f16 or f32" "$bin" qa --model "$gguf" --document "$doc" --question "$q" --kv-dtype bf16
expect_error "--kv-dtype f8" "--kv-dtype 'f8' must be f16, f32 or bf16" "$bin" generate --model "$gguf" --prompt x --kv-dtype f8
printf '{"kv_dtype": "q4"}\n' >"$work/bad.json"
expect_error "config kv_dtype q4" "'kv_dtype' is 'q4'" "$bin" qa --config "$work/bad.json" --model "$gguf" --document "$doc" --question "$q"

"$bin" bench --model "$gguf" --prompt-tokens 256 --gen-tokens 1 --repeat 1 --json >"$work/f16" 2>/dev/null &&
    "$bin" bench --model "$gguf" --prompt-tokens 256 --gen-tokens 1 --repeat 1 --kv-dtype f32 --json \
        >"$work/f32" 2>/dev/null || fail "bench f16 / f32"
expect_eq "the CPU KV cache is f16 by default" "$(field "$work/f16" 'o["kv_dtype"]')" F16
expect_eq "f32 KV takes twice the bytes" \
    "$(python3 -c "import json,sys; a,b=[json.loads(open(f).read().splitlines()[-1])['kv_bytes'] for f in sys.argv[1:]]; print(b == 2*a)" "$work/f16" "$work/f32")" True

"$bin" inspect --model "$gguf" >"$work/inspect" || fail "inspect"
grep -q "^snapkv preset SmolLM2-135M (matched by architecture and shape): kernel 31;" "$work/inspect" &&
    grep -q "^snapkv        window 32, budget 2048, kernel 31, max pooling" "$work/inspect" &&
    grep -q "^kv cache      F16" "$work/inspect" && echo "ok   inspect shows the preset and the KV type" ||
    fail "inspect: $(cat "$work/inspect")"
[ $failed = 0 ] && echo "test_defaults: passed" || echo "test_defaults: FAILED"
exit $failed
