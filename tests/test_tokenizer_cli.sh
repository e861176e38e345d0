#!/usr/bin/env bash
# test_tokenizer_cli: `snaptp tokenize` / `snaptp detokenize` as a user drives them:
# ids equal HF's golden ids (tests/data/tokenizer), detokenize inverts tokenize, and bad
# input (invalid UTF-8, a broken tokenizer.json, no --model) fails with a message and a
# non-zero status. SmolLM2 parts need SNAPTP_SMOLLM2_GGUF (skipped when unset, unless CI=true).
set -u
BIN=${SNAPTP_BIN:?SNAPTP_BIN not set}
SRC=${SNAPTP_SOURCE_DIR:?SNAPTP_SOURCE_DIR not set}
SHARED=${SNAPTP_SHARED_DIR:?SNAPTP_SHARED_DIR not set}
DATA=$SRC/tests/data/tokenizer
TMP=$(mktemp -d /tmp/snaptp_tok_cli.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0

ok() { echo "  ok    $*"; pass=$((pass + 1)); }
bad() { echo "  FAIL  $*"; fail=$((fail + 1)); }

# --help
if "$BIN" tokenize --help | grep -q "usage: snaptp tokenize"; then ok "tokenize --help"; else bad "tokenize --help"; fi
if "$BIN" detokenize --help | grep -q "usage: snaptp detokenize"; then ok "detokenize --help"; else bad "detokenize --help"; fi

# ids equal HF's, and the round trip through detokenize, for each shared tokenizer
for tok in llama2 llama3 qwen3; do
  for f in english whitespace emoji special_tokens; do
    "$BIN" tokenize --tokenizer "$SHARED/tokenizers/$tok" --no-bos < "$DATA/corpus/$f.txt" > "$TMP/ids" 2> "$TMP/err"
    if cmp -s "$TMP/ids" "$DATA/expected/$tok/$f.ids"; then ok "$tok $f: tokenize == HF"; else bad "$tok $f: tokenize differs from HF ($(head -c 300 "$TMP/err"))"; fi
    want="$DATA/corpus/$f.txt"
    [ -f "$DATA/expected/$tok/$f.decoded.txt" ] && want="$DATA/expected/$tok/$f.decoded.txt"
    "$BIN" detokenize --tokenizer "$SHARED/tokenizers/$tok" < "$TMP/ids" > "$TMP/text"
    if cmp -s "$TMP/text" "$want"; then ok "$tok $f: detokenize(tokenize(text)) == HF decode"; else bad "$tok $f: round trip differs"; fi
  done
done

# the 1 MB document through the CLI (expected ids stored as little-endian int32)
od -An -v -td4 -w4 "$DATA/expected/llama3/large_1mb.bin" | tr -d ' ' > "$TMP/large.want"
"$BIN" tokenize --tokenizer "$SHARED/tokenizers/llama3" --no-bos < "$DATA/corpus/large_1mb.txt" > "$TMP/large.ids"
if cmp -s "$TMP/large.ids" "$TMP/large.want"; then ok "llama3 large_1mb: $(wc -l < "$TMP/large.ids") ids == HF"; else bad "llama3 large_1mb differs"; fi

# --json, and BOS by the model's default
out=$(printf 'Hello' | "$BIN" tokenize --tokenizer "$SHARED/tokenizers/llama2" --json)
if [ "$out" = "[1, 22557]" ]; then ok "llama2 --json with default BOS: $out"; else bad "llama2 --json: $out"; fi
out=$(printf '[1, 22557]' | "$BIN" detokenize --tokenizer "$SHARED/tokenizers/llama2" --json)
if [ "$out" = '"<s> Hello"' ]; then ok "detokenize --json: $out"; else bad "detokenize --json: $out"; fi

# invalid UTF-8: clear message naming the byte offset, non-zero status
printf 'abc\xff\xfe' | "$BIN" tokenize --tokenizer "$SHARED/tokenizers/qwen3" > /dev/null 2> "$TMP/err"
rc=$?
if [ $rc -ne 0 ] && grep -q "^snaptp tokenize: stdin: .*byte offset 3" "$TMP/err"; then ok "invalid UTF-8 -> status $rc: $(head -1 "$TMP/err")"; else bad "invalid UTF-8 (status $rc): $(cat "$TMP/err")"; fi

# a truncated tokenizer.json names the file; an unknown model type names the field
head -c 5000 "$DATA/tiny/tokenizer.json" > "$TMP/tokenizer.json"
echo hi | "$BIN" tokenize --tokenizer "$TMP/tokenizer.json" > /dev/null 2> "$TMP/err"
rc=$?
if [ $rc -ne 0 ] && grep -q "$TMP/tokenizer.json: not valid JSON" "$TMP/err"; then ok "truncated tokenizer.json -> status $rc: $(head -1 "$TMP/err")"; else bad "truncated tokenizer.json (status $rc): $(cat "$TMP/err")"; fi
sed 's/"type":"BPE"/"type":"WordPiece"/; s/"type": "BPE"/"type": "WordPiece"/' "$DATA/tiny/tokenizer.json" > "$TMP/tokenizer.json"
echo hi | "$BIN" tokenize --tokenizer "$TMP/tokenizer.json" > /dev/null 2> "$TMP/err"
rc=$?
if [ $rc -ne 0 ] && grep -q "model.type 'WordPiece' is not supported" "$TMP/err"; then ok "unknown model type -> status $rc"; else bad "unknown model type (status $rc): $(cat "$TMP/err")"; fi
echo hi | "$BIN" tokenize > /dev/null 2> "$TMP/err"
rc=$?
if [ $rc -eq 2 ] && grep -q "\-\-model or \-\-tokenizer is required" "$TMP/err"; then ok "no --model -> status 2"; else bad "no --model (status $rc)"; fi

# SmolLM2 from its GGUF
GGUF=${SNAPTP_SMOLLM2_GGUF:-}
if [ -z "$GGUF" ]; then
  if [ "${CI:-}" = "true" ]; then bad "SNAPTP_SMOLLM2_GGUF not set, and CI=true requires it"; else echo "skipped: SNAPTP_SMOLLM2_GGUF not set"; fi
else
  for f in special_tokens numbers_dates; do
    "$BIN" tokenize --model "$GGUF" < "$DATA/corpus/$f.txt" > "$TMP/ids"
    if cmp -s "$TMP/ids" "$DATA/expected/smollm2/$f.ids"; then ok "smollm2 $f: tokenize == HF"; else bad "smollm2 $f differs"; fi
  done
  first=$(printf 'Hi' | "$BIN" tokenize --model "$GGUF" --chat | head -1)
  if [ "$first" = "1" ]; then ok "smollm2 --chat starts with <|im_start|> (1)"; else bad "smollm2 --chat first id $first"; fi
fi

echo "test_tokenizer_cli: $pass passed, $fail failed"
[ $fail -eq 0 ]
