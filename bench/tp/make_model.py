"""make_model: a random Llama of about SmolLM2's size whose heads divide by 2 and 4 (hidden 768,
12 query / 4 KV heads, 12 layers, MLP 2048, vocabulary 32000), saved as bf16 safetensors with
config.json for the tensor-parallel benchmark. Never committed: written under /tmp by default.
Usage: python bench/tp/make_model.py [OUT_DIR]   (default /tmp/snaptp_tp_bench_model)"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/snaptp_tp_bench_model"
    if os.path.exists(os.path.join(out, "config.json")):
        print(out)
        return
    cfg = LlamaConfig(hidden_size=768, num_attention_heads=12, num_key_value_heads=4,
                      num_hidden_layers=12, intermediate_size=2048, vocab_size=32000,
                      max_position_embeddings=8192, rope_theta=10000.0, rms_norm_eps=1e-5,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    n = sum(p.numel() for p in model.parameters())
    print("%s: %.1fM parameters, bf16" % (out, n / 1e6), file=sys.stderr)
    print(out)


if __name__ == "__main__":
    main()
