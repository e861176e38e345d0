#!/usr/bin/env python3
"""Two random Qwen2 checkpoints of SmolLM2-135M's shape for bench/dca/run.sh: the same weights,
one with Dual Chunk Attention (dual_chunk_attention_config) and one without, so `snaptp bench`
measures what DCA costs and nothing else. No torch: numpy only.

    python3 bench/dca/make_models.py OUT_DIR CHUNK_SIZE LOCAL_SIZE ORIGINAL

Shape: 30 layers, hidden 576, 9 query / 3 KV heads of 64, MLP 1536, vocab 49152, q/k/v bias,
untied LM head, weights N(0, 0.02) in BF16 (norm gains 1), theta 1e5.
"""
import json
import os
import sys

import numpy as np

L, C, H, HKV, D, F, V = 30, 576, 9, 3, 64, 1536, 49152


def bf16(a):
    """fp32 -> bf16 bits (round to nearest even), as uint16 viewed later as BF16 by the header."""
    u = a.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def write_bf16(path, tensors):
    """A safetensors file of BF16 tensors given as uint16 bit patterns (safetensors.numpy has
    no bfloat16): the header by hand, then the data in the header's order."""
    header, off = {}, 0
    names = sorted(tensors)
    for name in names:
        a = tensors[name]
        header[name] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for name in names:
            f.write(np.ascontiguousarray(tensors[name]).tobytes())


def tensors(rng):
    def w(*shape, std=0.02):
        return bf16(rng.standard_normal(shape, dtype=np.float32) * std)

    out = {"model.embed_tokens.weight": w(V, C), "lm_head.weight": w(V, C),
           "model.norm.weight": bf16(np.ones(C, np.float32))}
    for i in range(L):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = bf16(np.ones(C, np.float32))
        out[p + "post_attention_layernorm.weight"] = bf16(np.ones(C, np.float32))
        for n, rows in (("q_proj", H * D), ("k_proj", HKV * D), ("v_proj", HKV * D)):
            out[p + f"self_attn.{n}.weight"] = w(rows, C)
            out[p + f"self_attn.{n}.bias"] = w(rows)
        out[p + "self_attn.o_proj.weight"] = w(C, H * D)
        out[p + "mlp.gate_proj.weight"] = w(F, C)
        out[p + "mlp.up_proj.weight"] = w(F, C)
        out[p + "mlp.down_proj.weight"] = w(C, F)
    return out


def main():
    out_dir, chunk, local, orig = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    t = tensors(np.random.default_rng(7))
    cfg = dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], num_hidden_layers=L,
               hidden_size=C, num_attention_heads=H, num_key_value_heads=HKV,
               intermediate_size=F, vocab_size=V, max_position_embeddings=1010000,
               rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
               hidden_act="silu", use_sliding_window=False, torch_dtype="bfloat16")
    for name, dca in (("plain", None), ("dca", {"chunk_size": chunk, "local_size": local,
                                               "original_max_position_embeddings": orig})):
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        c = dict(cfg)
        if dca:
            c["dual_chunk_attention_config"] = dca
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(c, f, indent=2)
        write_bf16(os.path.join(d, "model.safetensors"), t)
    print(f"{out_dir}/plain and {out_dir}/dca (chunk {chunk}, local {local}, original {orig})")


if __name__ == "__main__":
    main()
