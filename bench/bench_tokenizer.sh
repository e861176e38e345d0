#!/usr/bin/env bash
# bench_tokenizer: encode throughput (tokens/s) of snaptp's tokenizer and of HF
# `tokenizers` (single thread: RAYON_NUM_THREADS=1, TOKENIZERS_PARALLELISM=false) on the
# same 1 MiB document (tests/data/tokenizer/corpus/large_1mb.txt), same machine. Times
# are the best of REPEATS encodes after loading; load time is reported apart.
#
# usage: bench/bench_tokenizer.sh [BUILD_DIR] [REPEATS]
#   BUILD_DIR  a CMake build of snaptp holding libsnaptp_core.a (default: build)
#   env: PYTHON (default /work/venv/bin/python, else python3), SNAPTP_SHARED_DIR,
#        SNAPTP_SMOLLM2_GGUF (adds SmolLM2 when set)
# Writes the table to stdout and to bench/results/tokenizer.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
REPEATS=${2:-5}
SHARED=${SNAPTP_SHARED_DIR:-$ROOT/../shared}
PY=${PYTHON:-/work/venv/bin/python}
[ -x "$PY" ] || PY=python3
TEXT=$ROOT/tests/data/tokenizer/corpus/large_1mb.txt
OUT=$ROOT/bench/results/tokenizer.md
TMP=$(mktemp -d /tmp/snaptp_bench_tok.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

[ -f "$BUILD/libsnaptp_core.a" ] || { echo "bench_tokenizer: $BUILD/libsnaptp_core.a not found (build snaptp first)" >&2; exit 1; }
cc -O3 -march=native -I"$ROOT" "$ROOT/bench/bench_tokenizer.c" "$BUILD/libsnaptp_core.a" \
  $(pkg-config --libs libcjson libpcre2-8 libutf8proc) -lm -o "$TMP/bench_tokenizer"

names=(llama2 llama3 qwen3)
paths=("$SHARED/tokenizers/llama2" "$SHARED/tokenizers/llama3" "$SHARED/tokenizers/qwen3")
if [ -n "${SNAPTP_SMOLLM2_GGUF:-}" ]; then names+=(smollm2); paths+=("$SNAPTP_SMOLLM2_GGUF"); fi

hf_bench() { # name path -> "tokens best_s load_s"
  RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 "$PY" - "$1" "$2" "$TEXT" "$REPEATS" <<'EOF' 2>/dev/null
import gzip, os, sys, time
name, path, text_path, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
text = open(text_path, encoding="utf-8", newline="").read()
t0 = time.perf_counter()
if path.endswith(".gguf"):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path)).backend_tokenizer
else:
    from tokenizers import Tokenizer
    tok = Tokenizer.from_str(gzip.open(os.path.join(path, "tokenizer.json.gz")).read().decode())
load = time.perf_counter() - t0
best, n = 1e9, 0
for _ in range(repeats):
    t0 = time.perf_counter()
    n = len(tok.encode(text, add_special_tokens=False).ids)
    best = min(best, time.perf_counter() - t0)
print(n, best, load)
EOF
}

cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
hfver=$("$PY" -c "import tokenizers; print(tokenizers.__version__)" 2>/dev/null || echo "?")
{
  echo "# Tokenizer encode throughput"
  echo
  echo "Text: tests/data/tokenizer/corpus/large_1mb.txt ($(wc -c < "$TEXT") bytes). One thread each;"
  echo "best of $REPEATS encodes, load excluded. HF: tokenizers $hfver, encode(text,"
  echo "add_special_tokens=False), RAYON_NUM_THREADS=1. CPU: $cpu. Date: $(date -u +%Y-%m-%d)."
  echo "Load average while measuring: $(cut -d" " -f1-3 /proc/loadavg) (2-core machine shared with builds; ratios are more stable than absolute times)."
  echo "Made by bench/bench_tokenizer.sh."
  echo
  echo "| tokenizer | tokens | snaptp ms | snaptp Mtok/s | HF ms | HF Mtok/s | speedup | same n_ids | snaptp load ms | HF load ms |"
  echo "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"
} > "$TMP/table"
for i in "${!names[@]}"; do
  read -r s_tok s_n s_best s_med s_load < <("$TMP/bench_tokenizer" "${paths[$i]}" "$TEXT" "$REPEATS")
  read -r h_tok h_best h_load < <(hf_bench "${names[$i]}" "${paths[$i]}")
  awk -v n="${names[$i]}" -v st="$s_tok" -v sb="$s_best" -v sl="$s_load" -v ht="$h_tok" -v hb="$h_best" -v hl="$h_load" 'BEGIN {
    printf "| %s | %d | %.1f | %.2f | %.1f | %.2f | %.1fx | %s | %.0f | %.0f |\n",
      n, st, sb * 1e3, st / sb / 1e6, hb * 1e3, ht / hb / 1e6, hb / sb, (st == ht ? "yes" : "NO"), sl * 1e3, hl * 1e3 }' >> "$TMP/table"
done
{ echo; cat <<'EOF'
Notes:
- Both sides produce the same ids on this text (checked by tests/test_tokenizer_parity, which
  compares every id against the committed HF output; "same n_ids" above only compares counts).
- snaptp: PCRE2 JIT for the pre-tokenizer split, open-addressing hash maps for the
  vocabulary and merges, a per-call word cache, linear-scan merges for short words and a
  binary heap for long ones. SentencePiece text, which HF treats as one word, is cut before
  each '▁' that follows another character when no merge can join across such a cut (checked
  at load), so its words hit the cache too.
- HF's encode also computes offsets and other per-token fields that snaptp does not.
- Load time is reading tokenizer.json(.gz) or the GGUF metadata; HF's SmolLM2 load goes
  through transformers' GGUF converter, hence the seconds.
EOF
} >> "$TMP/table"
cat "$TMP/table"
cp "$TMP/table" "$OUT"
echo "(written to $OUT)" >&2
