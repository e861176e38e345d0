#!/usr/bin/env python3
"""make_seeds: writes the seed corpora of tests/fuzz/corpus/<target>/ from the test
data, each a few files of a few KB (committed; rerun after a format change):

  gguf           a tiny Llama with a byte-level BPE vocabulary and chat template (v3
                 and v2), and the first 2 KiB of tests/golden/llama_gqa_gguf
  safetensors    F32/F16/BF16 tensors with metadata, and the head of a golden model
  tokenizer_json tests/data/tokenizer/tiny, and ../shared/tokenizers' llama2, llama3
                 and qwen3 cut to their first 160 ids (merges and added tokens kept
                 where they fit)
  config         configs/*.json (first byte 0: run_config) and the golden models'
                 config.json (first byte 1: model_config)
  chat_template  template NUL system NUL user, for the shared tokenizers' templates
  kv_store       written by the harness itself (tests/fuzz/make_seeds.sh)

usage: make_seeds.py SOURCE_DIR SHARED_DIR
"""
import gzip
import json
import os
import struct
import sys

root, shared = sys.argv[1], sys.argv[2]
out = os.path.join(root, "tests", "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# ---- GGUF -------------------------------------------------------------------------
def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_value(v):
    """(type, bytes) of a Python value: str, int (u32), float (f32), bool, lists."""
    if isinstance(v, bool):
        return 7, struct.pack("<B", v)
    if isinstance(v, str):
        return 8, gguf_str(v)
    if isinstance(v, int):
        return 4, struct.pack("<I", v)
    if isinstance(v, float):
        return 6, struct.pack("<f", v)
    if isinstance(v, tuple) and v[0] == "i32":  # ("i32", [..]) an INT32 array
        return 9, struct.pack("<IQ", 5, len(v[1])) + b"".join(struct.pack("<i", x) for x in v[1])
    assert isinstance(v, list)
    return 9, struct.pack("<IQ", 8, len(v)) + b"".join(gguf_str(x) for x in v)


def gguf(version, kv, tensors, alignment=32):
    """tensors: (name, ne list, ggml type, raw bytes)."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kv))
    for k, v in kv.items():
        t, b = gguf_value(v)
        head += gguf_str(k) + struct.pack("<I", t) + b
    data, offsets = b"", []
    for name, ne, ty, raw in tensors:
        data += b"\0" * (-len(data) % alignment)
        offsets.append(len(data))
        data += raw
    for (name, ne, ty, raw), off in zip(tensors, offsets):
        head += gguf_str(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        head += struct.pack("<IQ", ty, off)
    head += b"\0" * (-len(head) % alignment)
    return head + data


# A byte-level BPE over "hello world" and a few merges (GPT-2's alphabet: 'Ġ' = ' ').
letters = list("abcdefghijklmnopqrstuvwxyz0123456789") + ["Ġ", "Ċ", "!", ",", ".", "<", ">", "|", "_"]
merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"]
tokens = letters + ["he", "ll", "hell", "hello", "Ġw", "or", "Ġwor", "ld", "Ġworld"]
specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
tokens += specials
types = [1] * (len(tokens) - len(specials)) + [3] * len(specials)
chatml = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM<|im_end|>\\n' }}"
          "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\\n' }}{% endif %}")
C, FF, V = 8, 16, len(tokens)
kv = {
    "general.architecture": "llama", "general.alignment": 32, "llama.block_count": 1,
    "llama.context_length": 64, "llama.embedding_length": C, "llama.feed_forward_length": FF,
    "llama.attention.head_count": 2, "llama.attention.head_count_kv": 1,
    "llama.rope.freq_base": 10000.0, "llama.attention.layer_norm_rms_epsilon": 1e-5,
    "llama.vocab_size": V, "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm",
    "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": ("i32", types),
    "tokenizer.ggml.merges": merges, "tokenizer.ggml.bos_token_id": V - 3,
    "tokenizer.ggml.eos_token_id": V - 1, "tokenizer.ggml.add_bos_token": False,
    "tokenizer.chat_template": chatml,
}
f32 = lambda n: struct.pack("<%df" % n, *[(i % 7) * 0.125 - 0.25 for i in range(n)])
q8_0 = struct.pack("<e", 0.5) + bytes(range(32))  # one block of 32
q4_1 = struct.pack("<ee", 0.25, -1.0) + bytes(range(16))
tensors = [("token_embd.weight", [C, V], 0, f32(C * V)), ("output_norm.weight", [C], 0, f32(C)),
           ("blk.0.ffn_up.weight", [32, 1], 8, q8_0), ("blk.0.ffn_gate.weight", [32, 1], 3, q4_1),
           ("blk.0.attn_norm.weight", [C], 1, struct.pack("<%de" % C, *[1.0] * C))]
put("gguf", "tiny_llama_v3.gguf", gguf(3, kv, tensors))
put("gguf", "tiny_llama_v2.gguf", gguf(2, {k: v for k, v in kv.items() if "chat" not in k}, tensors[:2]))
with open(os.path.join(root, "tests/golden/llama_gqa_gguf/model.gguf"), "rb") as f:
    put("gguf", "golden_head.gguf", f.read(2048))


# ---- safetensors --------------------------------------------------------------------
def safetensors(tensors, metadata):
    header, data = {"__metadata__": metadata}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


put("safetensors", "three_dtypes.safetensors", safetensors(
    [("a.weight", "F32", [2, 3], f32(6)), ("b.weight", "F16", [4], struct.pack("<4e", 1, 2, 3, 4)),
     ("c.weight", "BF16", [2, 2], b"\x80\x3f" * 4), ("scalar", "F32", [], f32(1))],
    {"format": "pt"}))
put("safetensors", "empty.safetensors", safetensors([], {}))
with open(os.path.join(root, "tests/golden/llama_gqa/model.safetensors"), "rb") as f:
    put("safetensors", "golden_head.safetensors", f.read(4096))


# ---- tokenizer.json ---------------------------------------------------------------
with open(os.path.join(root, "tests/data/tokenizer/tiny/tokenizer.json"), "rb") as f:
    put("tokenizer_json", "tiny.json", f.read())


def cut(tok, n):
    """The tokenizer with ids 0..n-1 of its vocabulary, merges among them, and its
    added tokens renumbered after them."""
    model = tok["model"]
    vocab = {k: v for k, v in model["vocab"].items() if v < n}
    if "merges" in model:
        keep = []
        for m in model["merges"]:
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            if a in vocab and b in vocab and a + b in vocab:
                keep.append(m)
        model["merges"] = keep
    model["vocab"] = vocab
    added = []
    for i, a in enumerate(tok.get("added_tokens", [])[:8]):
        a = dict(a)
        a["id"] = n + i
        added.append(a)
    tok["added_tokens"] = added
    # Ids a post-processor names must stay inside the vocabulary.
    post = tok.get("post_processor")
    if isinstance(post, dict) and "special_tokens" in post:
        for st in post["special_tokens"].values():
            st["ids"] = [min(i, n + len(added) - 1) for i in st["ids"]]
    return tok


for name in ("llama2", "llama3", "qwen3"):
    with gzip.open(os.path.join(shared, "tokenizers", name, "tokenizer.json.gz"), "rt") as f:
        tok = json.load(f)
    put("tokenizer_json", name + "_cut.json", json.dumps(cut(tok, 160), ensure_ascii=False))


# ---- configs ----------------------------------------------------------------------
for name in sorted(os.listdir(os.path.join(root, "configs"))):
    with open(os.path.join(root, "configs", name), "rb") as f:
        put("config", "run_" + name, b"\0" + f.read())
for name in ("llama_gqa", "mistral", "qwen2_mha", "qwen3"):
    with open(os.path.join(root, "tests/golden", name, "config.json"), "rb") as f:
        put("config", "model_" + name + ".json", b"\1" + f.read())


# ---- chat templates ---------------------------------------------------------------
put("chat_template", "chatml_smollm2", chatml + "\0Be brief.\0  What does snaptp compress?  ")
put("chat_template", "vocabulary_only", "\0\0hello")
for name in ("llama2", "llama3", "qwen3"):
    with open(os.path.join(shared, "tokenizers", name, "tokenizer_config.json")) as f:
        tmpl = json.load(f).get("chat_template")
    if isinstance(tmpl, str):
        put("chat_template", name, tmpl + "\0\0 \u00a0Who wrote the letter?\u3000\n")
print("seeds written under", out)
