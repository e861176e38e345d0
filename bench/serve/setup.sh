#!/usr/bin/env bash
# setup.sh: the benchmark's client and its tokenizer, outside the repository.
#  - GuideLLM 0.3.1 from PyPI in a venv (default /work/venv-gl3, or $SERVE_BENCH_VENV),
#    with matplotlib for the plot;
#  - SmolLM2's tokenizer as a Hugging Face folder (GuideLLM's synthetic prompts are
#    counted in the model's own tokens), written from the GGUF's vocabulary and merges
#    (the `gguf` package, installed into the same venv).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${SERVE_BENCH_VENV:-/work/venv-gl3}"
tok="${SERVE_BENCH_TOKENIZER:-/work/bench-tok-smollm2}"
[ -x "$venv/bin/guidellm" ] || { python3 -m venv "$venv"; "$venv/bin/pip" install -q "guidellm==0.3.1" matplotlib gguf; }
"$venv/bin/python" -c "import gguf" 2>/dev/null || "$venv/bin/pip" install -q gguf
gguf_path="$(bash "$root/tests/fetch_smollm2.sh")"
if [ ! -f "$tok/tokenizer.json" ]; then
    # Written with the `tokenizers` library from the GGUF's vocabulary and merges
    # (transformers' own GGUF conversion imports torch, which this venv does not need).
    # SmolLM2's pre-tokenizer ("smollm" in GGUF): digits one by one, then GPT-2 bytes.
    "$venv/bin/python" - "$gguf_path" "$tok" <<'PY'
import json, os, sys
import gguf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
g, out = sys.argv[1], sys.argv[2]
r = gguf.GGUFReader(g)
def strings(key):
    f = r.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
def scalar(key):
    f = r.fields[key]
    return int(f.parts[f.data[0]][0])
tokens, merges = strings("tokenizer.ggml.tokens"), strings("tokenizer.ggml.merges")
types = [int(r.fields["tokenizer.ggml.token_type"].parts[i][0]) for i in r.fields["tokenizer.ggml.token_type"].data]
vocab = {t: i for i, t in enumerate(tokens)}
tk = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges]))
tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
tk.decoder = decoders.ByteLevel()
tk.add_special_tokens([t for t, ty in zip(tokens, types) if ty == 3])  # GGUF type 3: control
os.makedirs(out, exist_ok=True)
tk.save(os.path.join(out, "tokenizer.json"))
name = lambda k: tokens[scalar(k)]
json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 8192,
           "bos_token": name("tokenizer.ggml.bos_token_id"), "eos_token": name("tokenizer.ggml.eos_token_id"),
           "unk_token": name("tokenizer.ggml.unknown_token_id")},
          open(os.path.join(out, "tokenizer_config.json"), "w"), indent=1)
PY
fi
echo "setup: GuideLLM in $venv, tokenizer in $tok"
