#!/usr/bin/env bash
# bench/dca/run.sh: what Dual Chunk Attention costs on the CPU: `snaptp bench` on two random
# Qwen2 models of SmolLM2-135M's shape with the same weights, one with
# dual_chunk_attention_config (chunk 1024, local 128: chunks of 896 positions, so a 4096-token
# prompt spans 5 of them; length scaling past 2048 tokens) and one without, under the full
# policy and SnapKV. Writes bench/results/dca.md (and .json).
#
#   bash bench/dca/run.sh [PROMPT_TOKENS [GEN_TOKENS [REPEAT]]]   (defaults 4096, 64, 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-4096}" gen="${2:-64}" rep="${3:-3}"
py="${PYTHON:-python3}" # with numpy (pip install numpy)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$py" bench/dca/make_models.py "$work" 1024 128 2048 >/dev/null
out=bench/results/dca.json
: >"$out"
for m in plain dca; do
    ./build/snaptp bench --model "$work/$m" --prompt-tokens "$n" --gen-tokens "$gen" \
        --repeat "$rep" --kv-policy full,snapkv --budget 1024 --json |
        sed "s/^{/{\"variant\": \"$m\", /" >>"$out"
done
python3 - "$out" "$n" "$gen" "$rep" <<'PY'
import json, subprocess, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
n, gen, rep = sys.argv[2:5]
cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True,
                     text=True).stdout.strip()
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                        text=True).stdout.strip()
def key(r):
    return r["kv_policy"]
by = {(r["variant"], key(r)): r for r in rows}
lines = ["# Dual Chunk Attention on the CPU: what it costs", "",
         f"`bash bench/dca/run.sh {n} {gen} {rep}`, {cpu}, commit {commit}. Random Qwen2 of "
         "SmolLM2-135M's shape (30 layers, 9 / 3 heads of 64), the same weights with and without "
         "`dual_chunk_attention_config` (chunk 1024, local 128: 896-position chunks, a "
         f"{n}-token prompt spans {-(-int(n) // 896)} of them; length scaling past 2048), "
         f"{gen} decoded tokens, {rep} repetitions (mean ± std), SnapKV budget 1024.", "",
         "| policy | attention | prefill tok/s | decode tok/s |", "| --- | --- | --- | --- |"]
for pol in ("full", "snapkv"):
    for m in ("plain", "dca"):
        r = by.get((m, pol))
        if not r:
            continue
        lines.append(f"| {pol} | {m} | {r['prefill_tokens_per_s']:.1f} ± "
                     f"{r['prefill_tokens_per_s_std']:.1f} | {r['decode_tokens_per_s']:.1f} ± "
                     f"{r['decode_tokens_per_s_std']:.1f} |")
open("bench/results/dca.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
