#!/usr/bin/env python3
# Makes the reference data for snaptp's SnapKV parity test: tiny random models (BF16 safetensors),
# the positions SnapKV keeps per layer and KV head, and the logits of a greedy decode over the
# compressed cache, from Hugging Face transformers in fp32. See tests/golden_snapkv/README.md.
#
#   HF_HUB_OFFLINE=1 /work/venv/bin/python tests/gen_snapkv_golden.py [--only MODEL ...]
import argparse
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
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import (  # noqa: E402
    AttentionInterface,
    AutoModelForCausalLM,
    Glm4Config,
    GlmConfig,
    LlamaConfig,
    Qwen2Config,
    Qwen3Config,
)
from transformers.cache_utils import DynamicLayer  # noqa: E402
from transformers.masking_utils import AttentionMaskInterface, eager_mask  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402
from transformers.models.llama.modeling_llama import eager_attention_forward  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_golden_models import (  # noqa: E402
    COMMON, add_legacy_config_keys, build_config, fresh_rope, write_json)

OUT = Path(__file__).resolve().parent / "golden_snapkv"
N_GREEDY = 8
PROMPT_SEED = 4321
GAP_MIN = 2e-4        # minimum relative selection margin a case must have (see rel_gaps)
MARGIN_MIN = 2e-3     # minimum top1 - top2 logit margin of every greedy step
PERTURB = 1e-5        # relative noise on the raw votes that must not change the selection
PERTURB_TRIALS = 20
SEED_TRIES = 20       # model seeds, each with up to PROMPT_TRIES prompts per case
PROMPT_TRIES = 100
ATTN = "snaptp_snapkv_ref"

MODELS = {
    "llama_gqa": dict(
        seed=1100, qk_std=0.1,
        config_cls=LlamaConfig,
        rope=dict(rope_theta=10000.0, rope_scaling=None),
        kw=dict(num_attention_heads=8, num_key_value_heads=2, head_dim=32,
                tie_word_embeddings=False, rms_norm_eps=1e-5),
        about="Llama, GQA 8 q / 2 kv heads (G=4), head_dim 32, rope theta 1e4, untied",
    ),
    "qwen2_mha": dict(
        seed=2200, qk_std=0.1,
        config_cls=Qwen2Config,
        rope=dict(rope_theta=1000000.0, rope_scaling=None),
        kw=dict(num_attention_heads=8, num_key_value_heads=8, head_dim=32,
                tie_word_embeddings=True, rms_norm_eps=1e-6, use_sliding_window=False),
        about="Qwen2, MHA 8 heads, head_dim 32, q/k/v bias, tied embeddings",
    ),
    "qwen3": dict(
        seed=3300, qk_std=0.15,
        config_cls=Qwen3Config,
        rope=dict(rope_theta=1000000.0, rope_scaling=None),
        kw=dict(num_attention_heads=8, num_key_value_heads=4, head_dim=64,
                tie_word_embeddings=False, rms_norm_eps=1e-6, use_sliding_window=False),
        about="Qwen3, GQA 8 q / 4 kv heads, head_dim 64, q/k RMSNorm, untied",
    ),
    # The RoPE variants on the same shape: contexts small enough that the 200-token prompts run
    # past the original one (yarn: original 64 x factor 4 = 256; dynamic NTK: the base grows
    # past max_position_embeddings 64, at the prefill and at every decode step).
    "llama_yarn": dict(
        seed=4400, qk_std=0.1,
        config_cls=LlamaConfig,
        rope=dict(rope_theta=10000.0, rope_scaling={
            "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}),
        kw=dict(num_attention_heads=8, num_key_value_heads=2, head_dim=32,
                tie_word_embeddings=False, rms_norm_eps=1e-5, max_position_embeddings=256),
        about="Llama, GQA 8 q / 2 kv heads, yarn factor 4, original 64 (beta 32/1, attention "
              "factor 0.1 ln 4 + 1), untied",
    ),
    "qwen2_yarn": dict(
        seed=5500, qk_std=0.1,
        config_cls=Qwen2Config,
        rope=dict(rope_theta=10000.0, rope_scaling={
            "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
            "beta_fast": 8.0, "beta_slow": 0.5, "attention_factor": 1.25}),
        kw=dict(num_attention_heads=8, num_key_value_heads=4, head_dim=32,
                tie_word_embeddings=False, rms_norm_eps=1e-6, use_sliding_window=False,
                max_position_embeddings=256),
        about="Qwen2 (q/k/v bias), GQA 8 q / 4 kv heads, yarn factor 4, original 64, beta 8/0.5, "
              "attention_factor 1.25, untied",
    ),
    "llama_dynamic": dict(
        seed=6600, qk_std=0.1,
        config_cls=LlamaConfig,
        rope=dict(rope_theta=10000.0, rope_scaling={"rope_type": "dynamic", "factor": 4.0}),
        kw=dict(num_attention_heads=8, num_key_value_heads=2, head_dim=32,
                tie_word_embeddings=False, rms_norm_eps=1e-5, max_position_embeddings=64),
        about="Llama, GQA 8 q / 2 kv heads, dynamic NTK factor 4 past max_position_embeddings 64",
    ),
    "glm": dict(
        seed=7700, qk_std=0.1,
        config_cls=GlmConfig,
        rope=dict(rope_theta=10000.0, rope_scaling=None, partial_rotary_factor=0.5),
        kw=dict(num_attention_heads=8, num_key_value_heads=2, head_dim=32, attention_bias=True,
                tie_word_embeddings=False, rms_norm_eps=1e-5),
        about="GLM-4 (GlmForCausalLM), GQA 8 q / 2 kv heads of 32, partial rotary 0.5 on "
              "adjacent pairs, q/k/v bias, fused gate_up_proj",
    ),
    "glm4": dict(
        seed=8800, qk_std=0.1,
        config_cls=Glm4Config,
        rope=dict(rope_theta=500000.0, rope_scaling=None, partial_rotary_factor=0.5),
        kw=dict(num_attention_heads=8, num_key_value_heads=2, head_dim=32, attention_bias=True,
                tie_word_embeddings=False, rms_norm_eps=1.5625e-07),
        about="GLM-4-0414 (Glm4ForCausalLM): glm plus post-attention and post-MLP norms",
    ),
}

CASES = {
    "llama_gqa": [
        dict(name="L200_w8_C64_k5_max", L=200, window=8, budget=64, kernel=5, pooling="max"),
        dict(name="L200_w16_C64_k7_avg", L=200, window=16, budget=64, kernel=7, pooling="avg"),
        dict(name="L48_w8_C64_short", L=48, window=8, budget=64, kernel=5, pooling="max"),
        dict(name="L64_w8_C64_equal", L=64, window=8, budget=64, kernel=5, pooling="max"),
    ],
    "qwen2_mha": [
        dict(name="L200_w8_C64_k5_avg", L=200, window=8, budget=64, kernel=5, pooling="avg"),
        dict(name="L200_w16_C96_k7_max", L=200, window=16, budget=96, kernel=7, pooling="max"),
    ],
    "qwen3": [
        dict(name="L160_w8_C48_k7_max", L=160, window=8, budget=48, kernel=7, pooling="max"),
    ],
    "llama_yarn": [
        dict(name="L200_w8_C64_k5_max", L=200, window=8, budget=64, kernel=5, pooling="max"),
    ],
    "qwen2_yarn": [
        dict(name="L200_w16_C64_k7_avg", L=200, window=16, budget=64, kernel=7, pooling="avg"),
    ],
    "llama_dynamic": [
        dict(name="L200_w8_C64_k5_max", L=200, window=8, budget=64, kernel=5, pooling="max"),
    ],
    "glm": [
        dict(name="L200_w8_C64_k5_max", L=200, window=8, budget=64, kernel=5, pooling="max"),
        dict(name="L200_w16_C96_k7_avg", L=200, window=16, budget=96, kernel=7, pooling="avg"),
    ],
    "glm4": [
        dict(name="L160_w8_C48_k7_max", L=160, window=8, budget=48, kernel=7, pooling="max"),
    ],
}


def log(*a):
    print(*a, flush=True)


class Reject(Exception):
    """A random model whose selections or greedy steps are too close to a tie."""


# ---------------------------------------------------------------- the SnapKV reference (torch)


def snapkv_votes(q, k, window):
    """Raw votes [H, P]: last `window` queries vs all L keys, causal inside the window, softmax
    in fp32 over all L columns, summed over the window rows, prefix columns only
    (FasterDecoding/SnapKV update_kv). q [H, L, D] and k [Hkv, L, D] are post-RoPE."""
    H, L, D = q.shape
    G = H // k.shape[0]
    P = L - window
    kr = k.repeat_interleave(G, dim=0)
    s = torch.matmul(q[:, -window:], kr.transpose(1, 2)) / math.sqrt(D)
    s[:, :, P:] += torch.triu(torch.full((window, window), float("-inf")), diagonal=1)
    p = torch.softmax(s, dim=-1, dtype=torch.float32)
    return p[:, :, :P].sum(dim=1)


def snapkv_scores(votes, n_kv, kernel, pooling):
    """Pool each query head's votes (stride 1, padding k//2), then average the G query heads of
    each KV head (kvpress; for MHA the published reference exactly). Returns [Hkv, P]."""
    pool = F.avg_pool1d if pooling == "avg" else F.max_pool1d
    pooled = pool(votes[None], kernel_size=kernel, padding=kernel // 2, stride=1)[0]
    H, P = pooled.shape
    return pooled.view(n_kv, H // n_kv, P).mean(dim=1)


def snapkv_keep(scores, L, window, budget):
    """Kept positions [Hkv, C]: top C - w prefix positions by a stable sort on (-score, position),
    ascending, then the window (L > C only)."""
    n_kv = scores.shape[0]
    order = torch.sort(-scores, dim=-1, stable=True).indices[:, :budget - window]
    prefix = torch.sort(order, dim=-1).values
    win = torch.arange(L - window, L).expand(n_kv, window)
    return torch.cat([prefix, win], dim=-1)


# ---------------------------------------------------------------- hooking HF attention


class Hook:
    """While `capture` is set (one prefill), the attention function stores q/k per layer here."""
    capture = False
    qk = {}


def snapkv_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
    """Eager attention (the output is HF's own); on prefill it also keeps the layer's post-RoPE
    (post q/k-norm) query [H, L, D] and full key [Hkv, L, D] for the selection."""
    if query.shape[2] == 1 and attention_mask is not None:
        # Decode over a compressed cache: HF's mask must not hide any cache row.
        assert bool((attention_mask == 0).all()), "decode mask hides cache rows"
    if Hook.capture:
        Hook.qk[module.layer_idx] = (query[0].detach().clone(), key[0].detach().clone())
    return eager_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                   dropout=dropout, **kw)


AttentionInterface.register(ATTN, snapkv_attention)
AttentionMaskInterface.register(ATTN, eager_mask)


@torch.no_grad()
def hf_prefill(model, ids):
    fresh_rope(model)  # dynamic NTK: each case as a freshly loaded model runs it
    Hook.capture, Hook.qk = True, {}
    try:
        out = model(input_ids=torch.tensor([ids]), use_cache=True)
    finally:
        Hook.capture = False
    return out, dict(Hook.qk)


def compress_cache(cache, keep):
    """Replace each layer's DynamicCache K/V [1, Hkv, L, D] by the kept rows [1, Hkv, C, D]."""
    for li, idx in keep.items():
        layer = cache.layers[li]
        assert isinstance(layer, DynamicLayer), type(layer)
        gi = idx[None, :, :, None].expand(1, -1, -1, layer.keys.shape[-1])
        layer.keys = torch.gather(layer.keys, 2, gi).contiguous()
        layer.values = torch.gather(layer.values, 2, gi).contiguous()


@torch.no_grad()
def hf_decode(model, cache, first_logits, L, n=N_GREEDY, pos_base=None):
    """Greedy decode: token t is fed at position pos_base + t (default L: positions continue after
    the prompt, not after the compressed cache; negative: HF's own, from the cache length).
    Returns (greedy [n], logits [n, V])."""
    pos_base = L if pos_base is None else pos_base
    row, greedy, rows = first_logits, [], []
    for t in range(n):
        tok = int(torch.argmax(row))
        greedy.append(tok)
        rows.append(row.clone())
        if t == n - 1:
            break
        pos = {} if pos_base < 0 else {"position_ids": torch.tensor([[pos_base + t]])}
        out = model(input_ids=torch.tensor([[tok]]), past_key_values=cache, use_cache=True, **pos)
        row = out.logits[0, -1].float()
    return greedy, torch.stack(rows)


@torch.no_grad()
def hf_case(model, ids, case, compress=True, pos_base=None):
    """Prefill, select, compress, decode. Returns a dict with the torch results."""
    L, w, C = len(ids), case["window"], case["budget"]
    out, qk = hf_prefill(model, ids)
    n_kv = model.config.num_key_value_heads
    keep, votes, scores = {}, {}, {}
    for li, (q, k) in sorted(qk.items()):
        assert q.shape[1] == L and k.shape[1] == L and k.shape[0] == n_kv
        if L > C:
            votes[li] = snapkv_votes(q, k, w)
            scores[li] = snapkv_scores(votes[li], n_kv, case["kernel"], case["pooling"])
            keep[li] = snapkv_keep(scores[li], L, w, C)
        else:
            keep[li] = torch.arange(L).expand(n_kv, L)
    cache = out.past_key_values
    if compress:
        compress_cache(cache, keep)
        want = C if L > C else L
        assert all(cache.layers[li].keys.shape[2] == want for li in keep)
    prefill_logits = out.logits[0, -1].float().clone()
    greedy, rows = hf_decode(model, cache, prefill_logits, L, pos_base=pos_base)
    return dict(keep=keep, votes=votes, scores=scores, greedy=greedy, rows=rows,
                prefill_logits=prefill_logits)


# ---------------------------------------------------------------- selection margins


def rel_gaps(votes, scores, keep_prefix_n, kernel, pooling):
    """Per KV head, how far the selection is from flipping, relative to the head's largest score.

    boundary: score[(C-w)-th] - score[(C-w+1)-th] (0 on a max-pool plateau: exact copies, decided
    by the tie rule). robust: the distance from that boundary score to the nearest score not
    exactly equal to it; for max pooling whose boundary is a plateau of exact copies, also the
    top1 - top2 raw-vote gap of every pooling window on the plateau (a near tie there would change
    which vote the plateau copies). Returns (robust [Hkv], boundary [Hkv])."""
    votes = votes.double().numpy()
    scores = scores.double().numpy()
    n_kv, P = scores.shape
    G = votes.shape[0] // n_kv
    robust, boundary = [], []
    for j in range(n_kv):
        s = scores[j]
        top = s.max()
        order = np.lexsort((np.arange(P), -s))
        a, b = s[order[keep_prefix_n - 1]], s[order[keep_prefix_n]]
        boundary.append(float((a - b) / top))
        others = s[s != a]
        gap = float(np.abs(others - a).min() / top)
        tie = np.nonzero(s == a)[0]
        if len(tie) > 1:
            if pooling != "max":
                gap = 0.0  # an exact tie that is not a copy: undecidable across implementations
            else:
                for pos in tie:
                    lo, hi = max(0, pos - kernel // 2), min(P, pos + kernel // 2 + 1)
                    for h in range(j * G, (j + 1) * G):
                        win = np.sort(votes[h, lo:hi])[::-1]
                        if len(win) > 1:
                            gap = min(gap, float((win[0] - win[1]) / top))
        robust.append(gap)
    return robust, boundary


def perturbation_check(votes, keep, n_kv, case, seed):
    """The selection must survive noise of PERTURB times its KV head's largest score on every raw
    vote (PERTURB_TRIALS draws): an empirical check of rel_gaps' reasoning."""
    g = torch.Generator().manual_seed(seed)
    scores = snapkv_scores(votes, n_kv, case["kernel"], case["pooling"]).double()
    scale = scores.max(dim=-1).values.repeat_interleave(votes.shape[0] // n_kv)[:, None]
    for _ in range(PERTURB_TRIALS):
        noise = (torch.rand(votes.shape, generator=g, dtype=torch.float64) * 2 - 1)
        v = (votes.double() + PERTURB * scale * noise).float()
        sc = snapkv_scores(v, n_kv, case["kernel"], case["pooling"])
        k2 = snapkv_keep(sc, votes.shape[1] + case["window"], case["window"], case["budget"])
        if not torch.equal(k2, keep):
            return False
    return True


# ---------------------------------------------------------------- independent numpy (fp64) model


class NumpyModel:
    """Our own fp64 forward of the saved safetensors (Llama / Qwen2 / Qwen3 layouts), with SnapKV
    written again from SNAPKV.md, to check the hooked HF path end to end."""

    def __init__(self, path, cfg):
        sd = load_file(str(path / "model.safetensors"))
        self.w = {k: v.double().numpy() for k, v in sd.items()}
        self.cfg = cfg
        self.H, self.Hkv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.D = cfg.head_dim
        self.eps = cfg.rms_norm_eps
        rp = cfg.rope_parameters
        theta = rp["rope_theta"]
        # GLM: the first n_rot dims rotate, on adjacent pairs (its rotate_half); else halves.
        self.n_rot = int(self.D * rp.get("partial_rotary_factor", 1.0))
        self.pairs = cfg.model_type in ("glm", "glm4")
        self.rope_type = rp.get("rope_type", "default")
        self.cs_scale = 1.0
        if self.rope_type == "default":
            self.inv_freq = 1.0 / (theta ** (np.arange(0, self.n_rot, 2, dtype=np.float64)
                                             / self.n_rot))
        else:  # yarn, dynamic: transformers' own frequency sets (fp32), used in fp64 here
            inv, self.cs_scale = ROPE_INIT_FUNCTIONS[self.rope_type](cfg, None)
            self.inv_freq = inv.double().numpy()
        self.lm_head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])
        if cfg.tie_word_embeddings:
            assert "lm_head.weight" not in self.w or np.array_equal(
                self.w["lm_head.weight"], self.w["model.embed_tokens.weight"])
            self.lm_head = self.w["model.embed_tokens.weight"]

    def rms(self, x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w

    def freqs(self, seq_len):
        """Dynamic NTK: the set for a call whose largest position is seq_len - 1 (HF passes
        seq_len as a tensor there, so the base is computed in fp32)."""
        if self.rope_type == "dynamic" and seq_len > self.cfg.max_position_embeddings:
            inv, _ = ROPE_INIT_FUNCTIONS["dynamic"](self.cfg, None, seq_len=torch.tensor(seq_len))
            return inv.double().numpy()
        return self.inv_freq

    def rope(self, x, pos):
        ang = np.asarray(pos, dtype=np.float64)[:, None] * self.freqs(int(max(pos)) + 1)[None]
        cos, sin = np.cos(ang) * self.cs_scale, np.sin(ang) * self.cs_scale
        r, h = self.n_rot, self.n_rot // 2
        rot, rest = x[..., :r], x[..., r:]
        if self.pairs:
            x1, x2 = rot[..., 0::2], rot[..., 1::2]
            out = np.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
            out = out.reshape(rot.shape)
        else:
            x1, x2 = rot[..., :h], rot[..., h:]
            out = np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
        return np.concatenate([out, rest], axis=-1)

    def lin(self, x, name):
        y = x @ self.w[name + ".weight"].T
        if name + ".bias" in self.w:
            y = y + self.w[name + ".bias"]
        return y

    def qkv(self, li, x, pos):
        """x [T, hidden] -> q [H, T, D], k/v [Hkv, T, D], post q/k-norm and RoPE."""
        p = f"model.layers.{li}.self_attn."
        T = x.shape[0]
        q = self.lin(x, p + "q_proj").reshape(T, self.H, self.D).transpose(1, 0, 2)
        k = self.lin(x, p + "k_proj").reshape(T, self.Hkv, self.D).transpose(1, 0, 2)
        v = self.lin(x, p + "v_proj").reshape(T, self.Hkv, self.D).transpose(1, 0, 2)
        if p + "q_norm.weight" in self.w:
            q = self.rms(q, self.w[p + "q_norm.weight"])
            k = self.rms(k, self.w[p + "k_norm.weight"])
        return self.rope(q, pos), self.rope(k, pos), v

    def attend(self, q, k, v, causal_from):
        """q [H, T, D] vs k/v [Hkv, N, D]; query t sees keys <= causal_from + t (None: all)."""
        G = self.H // k.shape[0]
        kk, vv = np.repeat(k, G, axis=0), np.repeat(v, G, axis=0)
        s = q @ kk.transpose(0, 2, 1) / math.sqrt(self.D)
        if causal_from is not None:
            T, N = s.shape[1:]
            s = np.where(np.arange(N)[None] > causal_from + np.arange(T)[:, None], -np.inf, s)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        return (s @ vv).transpose(1, 0, 2).reshape(q.shape[1], -1)

    def post(self, y, name):
        """GLM-4-0414's norm of a block's output before the residual add (absent: y)."""
        return self.rms(y, self.w[name]) if name in self.w else y

    def block_rest(self, li, x, att):
        p = f"model.layers.{li}."
        x = x + self.post(self.lin(att, p + "self_attn.o_proj"),
                          p + "post_self_attn_layernorm.weight")
        h = self.rms(x, self.w[p + "post_attention_layernorm.weight"])
        if p + "mlp.gate_up_proj.weight" in self.w:  # GLM: gate rows, then up rows
            g, u = np.split(self.lin(h, p + "mlp.gate_up_proj"), 2, axis=-1)
        else:
            g, u = self.lin(h, p + "mlp.gate_proj"), self.lin(h, p + "mlp.up_proj")
        h = (g / (1 + np.exp(-g))) * u
        return x + self.post(self.lin(h, p + "mlp.down_proj"), p + "post_mlp_layernorm.weight")

    def logits(self, x):
        return self.rms(x, self.w["model.norm.weight"]) @ self.lm_head.T

    def run(self, ids, case, greedy):
        """Prefill + SnapKV + decode of the given greedy tokens. Returns (keep [layers][Hkv][..],
        scores [layers] ([Hkv, P] or None), logits [len(greedy), V]); logits row 0 is the last
        prompt row."""
        L, w, C = len(ids), case["window"], case["budget"]
        x = self.w["model.embed_tokens.weight"][ids]
        caches, keeps, scores = [], [], []
        for li in range(self.cfg.num_hidden_layers):
            hn = self.rms(x, self.w[f"model.layers.{li}.input_layernorm.weight"])
            q, k, v = self.qkv(li, hn, np.arange(L))
            keep, sc = np_select(q, k, w, C, case["kernel"], case["pooling"])
            keeps.append(keep)
            scores.append(sc)
            caches.append([np.stack([k[j, keep[j]] for j in range(self.Hkv)]),
                           np.stack([v[j, keep[j]] for j in range(self.Hkv)])])
            x = self.block_rest(li, x, self.attend(q, k, v, 0))
        rows = [self.logits(x[-1])]
        for t, tok in enumerate(greedy[:-1]):
            x = self.w["model.embed_tokens.weight"][[tok]]
            for li in range(self.cfg.num_hidden_layers):
                hn = self.rms(x, self.w[f"model.layers.{li}.input_layernorm.weight"])
                q, k, v = self.qkv(li, hn, [L + t])
                caches[li][0] = np.concatenate([caches[li][0], k], axis=1)
                caches[li][1] = np.concatenate([caches[li][1], v], axis=1)
                x = self.block_rest(li, x, self.attend(q, caches[li][0], caches[li][1], None))
            rows.append(self.logits(x[-1]))
        return keeps, scores, np.stack(rows)


def np_select(q, k, w, C, kernel, pooling):
    """SNAPKV.md steps 1-9 in fp64 numpy; returns (kept positions per KV head, scores [Hkv, P])."""
    H, L, D = q.shape
    n_kv = k.shape[0]
    if L <= C:
        return [np.arange(L) for _ in range(n_kv)], None
    P, G = L - w, H // n_kv
    votes = np.zeros((H, P))
    for h in range(H):
        kh = k[h // G]
        for i in range(w):
            row = kh[:P + i + 1] @ q[h, P + i] / math.sqrt(D)
            e = np.exp(row - row.max())
            votes[h] += (e / e.sum())[:P]
    r = kernel // 2
    pooled = np.zeros((H, P))
    for h in range(H):
        for p in range(P):
            seg = votes[h, max(0, p - r):min(P, p + r + 1)]
            pooled[h, p] = seg.sum() / kernel if pooling == "avg" else seg.max()
    keep, scores = [], []
    for j in range(n_kv):
        s = pooled[j * G:(j + 1) * G].mean(axis=0)
        top = np.lexsort((np.arange(P), -s))[:C - w]
        keep.append(np.concatenate([np.sort(top), np.arange(P, L)]))
        scores.append(s)
    return keep, np.stack(scores)


# ---------------------------------------------------------------- making the models


@torch.no_grad()
def randomize(model, seed, qk_std):
    """Random weights like gen_golden_models.py, with q/k wider so attention is peaked."""
    g = torch.Generator().manual_seed(seed)
    for pname, p in sorted(model.named_parameters(), key=lambda t: t[0]):
        if pname.endswith("norm.weight"):
            val = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
        elif pname.endswith(".bias"):
            val = 0.1 * torch.randn(p.shape, generator=g)
        elif "q_proj" in pname or "k_proj" in pname:
            val = qk_std * torch.randn(p.shape, generator=g)
        elif "embed_tokens" in pname or "lm_head" in pname:
            val = 0.1 * torch.randn(p.shape, generator=g)
        else:
            val = 0.05 * torch.randn(p.shape, generator=g)
        p.copy_(val)


def case_ids(name, case, attempt):
    seed = PROMPT_SEED + sum(ord(c) for c in name + case["name"]) + 1000 * attempt
    ids = np.random.default_rng(seed).integers(0, COMMON["vocab_size"], size=case["L"]).tolist()
    return seed, ids


def top_margins(rows):
    top2 = torch.topk(rows, 2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]).tolist()


@torch.no_grad()
def evaluate(model, name):
    """All cases of one model, each with the first prompt seed whose selections and greedy steps
    are clear of ties; raises Reject when a case finds none."""
    results = []
    for case in CASES[name]:
        why = []
        for attempt in range(PROMPT_TRIES):
            seed, ids = case_ids(name, case, attempt)
            try:
                info = evaluate_case(model, name, case, ids)
                info["prompt_seed"] = seed
                results.append(info)
                break
            except Reject as e:
                why.append(str(e))
        else:
            raise Reject(f"{case['name']}: no prompt in {PROMPT_TRIES} (last: {why[-1]})")
        if attempt:
            log(f"  {case['name']}: prompt attempt {attempt} ({why[-1]} before)")
    return results


@torch.no_grad()
def evaluate_case(model, name, case, ids):
    """One case on one prompt: the hooked run plus its checks (Reject: too close to a tie, or the
    test would not tell a broken compression or wrong decode positions from a good one)."""
    n_kv = model.config.num_key_value_heads
    L, w, C = len(ids), case["window"], case["budget"]
    r = hf_case(model, ids, case)
    full = hf_case(model, ids, case, compress=False)
    d_full = float((r["rows"] - full["rows"]).abs().max())
    margins = top_margins(r["rows"])
    info = dict(case=case, ids=ids, r=r, d_full=d_full, margins=margins)
    if min(margins) < MARGIN_MIN:
        raise Reject(f"{case['name']}: greedy margin {min(margins):.2e}")
    if L <= C:
        # Nothing to compress: must be exactly the plain HF decode (positions from the cache).
        _, plain_rows = hf_decode(model, hf_prefill(model, ids)[0].past_key_values,
                                             full["prefill_logits"], L, pos_base=-1)
        d_plain = float((r["rows"] - plain_rows).abs().max())
        if r["greedy"] != full["greedy"] or d_full != 0.0 or d_plain != 0.0:
            raise RuntimeError(f"{name}/{case['name']}: L <= C decode differs from full KV "
                               f"by {d_full}, from HF's plain decode by {d_plain}")
        info.update(min_gap=None, boundary_gap=None, gaps=None)
    else:
        gaps, bounds = [], []
        for li in sorted(r["keep"]):
            rb, bd = rel_gaps(r["votes"][li], r["scores"][li], C - w, case["kernel"],
                              case["pooling"])
            gaps.append(rb)
            bounds.append(bd)
        min_gap = min(min(g) for g in gaps)
        if min_gap < GAP_MIN:
            raise Reject(f"{case['name']}: min relative gap {min_gap:.2e}")
        # Where the boundary is no tie, plain torch.topk (the references' call) keeps the same set.
        for li, bd in zip(sorted(r["keep"]), bounds):
            topk = torch.sort(r["scores"][li].topk(C - w, dim=-1).indices, dim=-1).values
            for j, b in enumerate(bd):
                if b > 0 and not torch.equal(topk[j], r["keep"][li][j, :C - w]):
                    raise RuntimeError(f"{name}/{case['name']}: topk differs, layer {li} head {j}")
        for li in sorted(r["keep"]):
            if not perturbation_check(r["votes"][li], r["keep"][li], n_kv, case, 77 + li):
                raise RuntimeError(f"{name}/{case['name']} layer {li}: selection moves under "
                                   f"{PERTURB:g} noise although its gap is {min_gap:.2e}")
        if d_full < 1e-3:
            raise Reject(f"{case['name']}: compression changes decode logits by only {d_full}")
        wrong = hf_case(model, ids, case, pos_base=C)
        d_pos = float((wrong["rows"][1:] - r["rows"][1:]).abs().max())
        if d_pos < 1e-3:
            raise Reject(f"{case['name']}: decode positions C vs L differ by only {d_pos}")
        info.update(min_gap=min_gap, boundary_gap=min(min(b) for b in bounds), gaps=gaps,
                    d_pos=d_pos)
    return info


def make_model(name, seed):
    spec = MODELS[name]
    cfg = build_config(spec)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    randomize(model, seed, spec["qk_std"])
    # Round the weights to the BF16 the files hold, compute in fp32 (parameters only: casting the
    # whole model would round the rotary inv_freq buffer too).
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    model.set_attn_implementation(ATTN)
    return model.eval()


def check_case(name, info, npm):
    """One evaluated case's kept positions: their shape (ascending, the window last), and the
    same selection, scores and logits from the numpy fp64 model npm; logs the margins.
    Returns keep [layer][kv head] lists."""
    case, r = info["case"], info["r"]
    keep = [r["keep"][li].tolist() for li in sorted(r["keep"])]
    L, w, C = case["L"], case["window"], case["budget"]
    for layer in keep:
        for kept in layer:
            assert kept == (list(range(L)) if L <= C else sorted(set(kept)))
            assert L <= C or (len(kept) == C and kept[-w:] == list(range(L - w, L))
                              and kept[C - w - 1] < L - w)
    np_keep, np_scores, np_rows = npm.run(info["ids"], case, r["greedy"])
    d_score = 0.0
    for li, sc in enumerate(np_scores):
        if sc is not None:
            ref = r["scores"][li].double().numpy()
            d_score = max(d_score, float((np.abs(ref - sc) / sc.max(-1, keepdims=True)).max()))
    np_keep = [[kk.tolist() for kk in layer] for layer in np_keep]
    if np_keep != keep:
        raise RuntimeError(f"{name}/{case['name']}: numpy fp64 selection differs from HF's")
    d_np = float(np.abs(np_rows - r["rows"].double().numpy()).max())
    if d_np > 1e-3:
        raise RuntimeError(f"{name}/{case['name']}: numpy fp64 logits differ by {d_np}")
    gap = "n/a (L <= C)" if info["min_gap"] is None else (
        f"{info['min_gap']:.3e} (boundary {info['boundary_gap']:.3e}), "
        f"positions C vs L change decode by {info['d_pos']:.3f}")
    log(f"  {case['name']}: min rel gap {gap}; compressed vs full decode max |d| "
        f"{info['d_full']:.4f}; greedy {r['greedy']}; min margin {min(info['margins']):.4f}; "
        f"numpy fp64 selection equal, scores max rel |d| {d_score:.1e}, "
        f"logits max |d| {d_np:.2e}")
    return keep


def gen_model(name):
    spec = MODELS[name]
    for seed in range(spec["seed"], spec["seed"] + SEED_TRIES):
        model = make_model(name, seed)
        try:
            evaluate(model, name)
            break
        except Reject as e:
            log(f"  seed {seed} rejected: {e}")
    else:
        raise RuntimeError(f"{name}: no seed in {SEED_TRIES} tries gives clear selections")

    out = OUT / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    ref_sd = {k: v.clone() for k, v in model.state_dict().items()}
    model.to(torch.bfloat16).save_pretrained(out)
    (out / "generation_config.json").unlink(missing_ok=True)
    add_legacy_config_keys(out / "config.json", spec)

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32,
                                                 attn_implementation=ATTN).eval()
    for k, v in model.state_dict().items():
        if not torch.equal(v, ref_sd[k]):
            raise RuntimeError(f"{name}: reloaded {k} differs from the model that was checked")
    results = evaluate(model, name)
    npm = NumpyModel(out, model.config)
    cases = []
    for info in results:
        case, r = info["case"], info["r"]
        keep = check_case(name, info, npm)
        cases.append({
            "name": case["name"],
            "ids": info["ids"],
            "prompt_seed": info["prompt_seed"],
            "window": case["window"],
            "budget": case["budget"],
            "kernel": case["kernel"],
            "pooling": case["pooling"],
            "selected": keep,
            "prefill_logits": r["prefill_logits"].tolist(),
            "greedy": r["greedy"],
            "greedy_logits": r["rows"].tolist(),
            "min_rel_gap": info["min_gap"],
            "boundary_rel_gap": info["boundary_gap"],
            "rel_gaps": info["gaps"],
            "greedy_margins": info["margins"],
            "full_kv_max_abs_diff": info["d_full"],
        })
    doc = {"model": name, "path": ".", "about": spec["about"], "seed": seed,
           "qk_std": spec["qk_std"], "cases": cases}
    write_json(out / "golden.json", doc)
    return min((c["min_rel_gap"] for c in cases if c["min_rel_gap"] is not None), default=None)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", action="append", choices=list(MODELS), help="model (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # bit-for-bit reruns: fp32 sums must not depend on the core count
    torch.use_deterministic_algorithms(True)
    OUT.mkdir(exist_ok=True)
    for name in args.only or MODELS:
        log(f"[{name}]")
        g = gen_model(name)
        log(f"  {name}: min relative selection gap over its cases {g:.3e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
