#!/usr/bin/env python3
"""Header-only checkpoints of the real long-context models' shapes, for `snaptp inspect` plans.

Each is a directory with the model's config.json fields that snaptp reads and one
model.safetensors whose header lists every tensor (real names, shapes, BF16) and whose data is
a sparse hole: the file has its full logical size but takes no disk, and `inspect` reads only
headers. Usage:  python3 bench/plans/make_header_only.py OUT_DIR   (no torch needed)

Shapes (config.json of each model; where it was read is said per model):
  glm-4-9b-chat-1m-hf   THUDM's glm-4-9b-chat-1m config.json (model_type chatglm) as quoted in a
                        public repository's test (found with the code search, "as published"):
                        40 layers, hidden 4096, 32 heads, multi_query_group_num 4 (KV heads),
                        kv_channels 128, ffn 13696, vocab 151552, seq_length 1048576,
                        rope_ratio 10000 (theta 10000 x 10000 = 1e8), eps 1.5625e-7, qkv bias;
                        written here in the -hf layout (model_type glm, partial_rotary_factor 0.5).
  llama3-8b-gradient-1048k  gradientai/Llama-3-8B-Instruct-Gradient-1048k: Llama-3-8B's shapes
                        (32 layers, 4096, 32/8 heads, 14336, vocab 128256), max_position_embeddings
                        1048576, rope_theta 3580165449 (the value quoted in several public
                        repositories' configs and notes; no rope_scaling).
  qwen2.5-7b-instruct-1m  Qwen/Qwen2.5-7B-Instruct-1M: 28 layers, hidden 3584, 28 / 4 heads,
                        18944, vocab 152064, max_position_embeddings 1010000, rope_theta 1e7,
                        eps 1e-5, q/k/v bias, dual_chunk_attention_config {chunk_size 262144,
                        local_size 8192, original_max_position_embeddings 262144}. From memory of
                        the published config.json (not re-read here: not found in the corpora).
"""
import json
import os
import struct
import sys

MODELS = {
    "glm-4-9b-chat-1m-hf": dict(
        model_type="glm", architectures=["GlmForCausalLM"], num_hidden_layers=40,
        hidden_size=4096, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
        intermediate_size=13696, vocab_size=151552, max_position_embeddings=1048576,
        rope_theta=100000000.0, rms_norm_eps=1.5625e-07, partial_rotary_factor=0.5,
        attention_bias=True, tie_word_embeddings=False, hidden_act="silu"),
    "llama3-8b-gradient-1048k": dict(
        model_type="llama", architectures=["LlamaForCausalLM"], num_hidden_layers=32,
        hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=14336, vocab_size=128256, max_position_embeddings=1048576,
        rope_theta=3580165449.0, rms_norm_eps=1e-05, tie_word_embeddings=False,
        hidden_act="silu"),
    "qwen2.5-7b-instruct-1m": dict(
        model_type="qwen2", architectures=["Qwen2ForCausalLM"], num_hidden_layers=28,
        hidden_size=3584, num_attention_heads=28, num_key_value_heads=4,
        intermediate_size=18944, vocab_size=152064, max_position_embeddings=1010000,
        rope_theta=10000000.0, rms_norm_eps=1e-05, tie_word_embeddings=False,
        hidden_act="silu", use_sliding_window=False, sliding_window=32768,
        dual_chunk_attention_config={"chunk_size": 262144, "local_size": 8192,
                                     "original_max_position_embeddings": 262144}),
}


def tensors(c):
    C, L, V, F = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"], c["intermediate_size"]
    H, Hkv = c["num_attention_heads"], c["num_key_value_heads"]
    D = c.get("head_dim") or C // H
    glm = c["model_type"] == "glm"
    bias = c.get("attention_bias", False) or c["model_type"] == "qwen2"
    out = {"model.embed_tokens.weight": [V, C], "model.norm.weight": [C], "lm_head.weight": [V, C]}
    for i in range(L):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = [C]
        out[p + "post_attention_layernorm.weight"] = [C]
        for n, rows in (("q_proj", H * D), ("k_proj", Hkv * D), ("v_proj", Hkv * D)):
            out[p + f"self_attn.{n}.weight"] = [rows, C]
            if bias:
                out[p + f"self_attn.{n}.bias"] = [rows]
        out[p + "self_attn.o_proj.weight"] = [C, H * D]
        if glm:
            out[p + "mlp.gate_up_proj.weight"] = [2 * F, C]
        else:
            out[p + "mlp.gate_proj.weight"] = [F, C]
            out[p + "mlp.up_proj.weight"] = [F, C]
        out[p + "mlp.down_proj.weight"] = [C, F]
    return out


def write(out_dir, name, cfg):
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(dict(cfg, torch_dtype="bfloat16"), f, indent=2)
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for tname, shape in tensors(cfg).items():
        n = 2
        for s in shape:
            n *= s
        header[tname] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        f.truncate(8 + len(h) + off)  # a hole: the data is never read
    print(f"{d}: {off / 2**30:.1f} GiB of BF16 weights (sparse)")


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/snaptp_header_only"
    for name, cfg in MODELS.items():
        write(out, name, cfg)
