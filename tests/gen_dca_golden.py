#!/usr/bin/env python3
# Makes the golden data for snaptp's Dual Chunk Attention (DCA, the attention of Qwen2.5-7B/14B-
# Instruct-1M): tiny random Qwen2 models with `dual_chunk_attention_config`, their fp32 logits and
# greedy continuations (tests/golden/qwen2_dca) and SnapKV over DCA (tests/golden_snapkv/
# qwen2_dca), from Hugging Face transformers with a custom attention function. See the qwen2_dca
# sections of tests/golden/README.md and tests/golden_snapkv/README.md.
#
#   HF_HUB_OFFLINE=1 /work/venv/bin/python tests/gen_dca_golden.py [--only golden|snapkv ...]
import argparse
import copy
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
from transformers import AttentionInterface, AutoModelForCausalLM, Qwen2Config  # noqa: E402
from transformers.masking_utils import AttentionMaskInterface  # noqa: E402
from transformers.models.qwen2.modeling_qwen2 import rotate_half  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_golden_models as ggm  # noqa: E402
import gen_snapkv_golden as gsk  # noqa: E402

NAME = "qwen2_dca"
ATTN = "snaptp_dca_ref"        # the reference (its outputs are the goldens)
ATTN_VLLM = "snaptp_dca_vllm"  # the cross-check written after vLLM's structure
TOL = 1e-5                     # max |d| allowed between the two, and vs plain Qwen2
TOL_FP32 = 1e-4                # logits of two whole fp32 runs (rounding grows through layers)
BIG_CHUNK = dict(chunk_size=1 << 20, local_size=8, original_max_position_embeddings=0)

GOLDEN_SPEC = dict(
    seed=1111,  # the first seed tried; gen_golden takes the first with clear greedy steps
    config_cls=Qwen2Config,
    rope=dict(rope_theta=10000.0, rope_scaling=None),
    kw=dict(ggm.SMALL, max_position_embeddings=128, rms_norm_eps=1e-6, use_sliding_window=False),
    # chunk_len 16: the 64-token prompt spans 4 chunks and its decode 2 more; succ positions
    # r + 16 clamp at 24 for r > 8; s(64) = 1 + 0.1 ln 2; decode s(p + 1) > 1 from p = 32 on.
    dca=dict(chunk_size=24, local_size=8, original_max_position_embeddings=32),
    about="Qwen2 (q/k/v bias), dual chunk attention (chunk_size 24, local_size 8: chunk_len 16, "
          "original_max_position_embeddings 32), rope theta 1e4, GQA 4 q / 2 kv heads of 32, "
          "untied",
)
SNAP_SPEC = dict(
    seed=9900, qk_std=0.1,
    config_cls=Qwen2Config,
    rope=dict(rope_theta=10000.0, rope_scaling=None),
    kw=dict(num_attention_heads=8, num_key_value_heads=4, head_dim=32,
            tie_word_embeddings=False, rms_norm_eps=1e-6, use_sliding_window=False,
            max_position_embeddings=256),
    # chunk_len 32: the 200-token prompt spans 7 chunks.
    dca=dict(chunk_size=40, local_size=8, original_max_position_embeddings=64),
    about="Qwen2 (q/k/v bias), GQA 8 q / 4 kv heads, dual chunk attention (chunk_size 40, "
          "local_size 8: chunk_len 32, original_max_position_embeddings 64), rope theta 1e4, "
          "untied",
)
SNAP_CASES = gsk.CASES["qwen2_yarn"]  # the same cases as the other Qwen2 long-context model

log = ggm.log


# ---------------------------------------------------------------- DCA parameters


class Dca:
    """dual_chunk_attention_config: chunk_size C, local_size, original_max_position_embeddings O."""

    def __init__(self, d):
        self.chunk = int(d["chunk_size"])
        self.local = int(d["local_size"])
        self.orig = int(d.get("original_max_position_embeddings", 0))
        self.chunk_len = self.chunk - self.local
        assert self.chunk_len > 0

    def scale(self, n):
        """Length scaling of a call whose sequence is n tokens long (vLLM: orig_seq_len)."""
        if self.orig <= 0:
            return 1.0
        return max(1.0, 0.1 * math.log(n / self.orig) + 1.0)

    def q_positions(self, qpos):
        """The rotation positions of queries at absolute positions qpos: intra, succ, inter."""
        r = qpos % self.chunk_len
        succ = torch.clamp(r + self.chunk_len, max=self.chunk)
        inter = torch.full_like(r, min(2 * self.chunk_len - 1, self.chunk))
        return r, succ, inter


# ---------------------------------------------------------------- closure state of both functions


class State:
    """What the attention functions know besides q/k/v: the absolute positions of this call's
    queries (set before each forward) and, per layer, the positions and write scales of the cached
    keys (per KV head: SnapKV keeps different rows in each)."""

    def __init__(self):
        self.dca = None          # Dca the functions use
        self.rotary = None       # the model's Qwen2RotaryEmbedding (HF's frequencies)
        self.vllm_rope = None    # VllmRope tables
        self.variant = None      # a deliberately wrong variant (for the sensitivity report)
        self.reset()

    def reset(self):
        self.q_pos = None        # LongTensor [T]
        self.k_pos = {}          # layer -> LongTensor [Hkv, N]
        self.k_scale = {}        # layer -> float64 [Hkv, N]
        self.capture = None      # layer -> masked logits of the last `window` queries [H, w, N]
        self.window = 0
        self.trace = None        # list of the reference's calls (inputs and output), when set
        self.vllm = {}           # layer -> (keys rotated, scaled [N, Hkv, D], values [N, Hkv, D])
        self.decode_sees_all = False  # decode at wrong positions (SnapKV check): mask nothing


STATE = State()


def no_mask(*args, **kwargs):
    """Both functions build their own causal mask from absolute positions (HF's mask would read
    the all-zero position_ids as packed sequences)."""
    return None


def rope_hf(x, pos):
    """HF's neox rotation of x [..., n, D] at integer positions pos [B, n] (B 1 or x's lead dim),
    with HF's own cos/sin (Qwen2RotaryEmbedding, default rope)."""
    cos, sin = STATE.rotary(x, pos)
    return x * cos + rotate_half(x) * sin


def dca_ref_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
    """The reference. query [1, H, T, D], key/value [1, Hkv, N, D]: unrotated and unscaled (HF ran
    them through the identity RoPE of position 0); the last T keys are this call's. Each (query
    i, key j) pair gets the query rotation its chunks call for;
    logit = s_q s_k (R q . R k) / sqrt D, one fp32 softmax over the keys j <= i."""
    st, d = STATE, STATE.dca
    li = module.layer_idx
    q, k, v = query[0], key[0], value[0]
    H, T, D = q.shape
    Hkv, N = k.shape[:2]
    G = H // Hkv
    qpos = st.q_pos
    assert qpos.shape == (T,)
    s_call = d.scale(int(qpos.max()) + 1)
    if st.variant == "no_scale":
        s_call = 1.0
    new_pos = qpos.expand(Hkv, T)
    new_s = torch.full((Hkv, T), s_call, dtype=torch.float64)
    if li in st.k_pos:
        st.k_pos[li] = torch.cat([st.k_pos[li], new_pos], dim=1)
        st.k_scale[li] = torch.cat([st.k_scale[li], new_s], dim=1)
    else:
        st.k_pos[li], st.k_scale[li] = new_pos.clone(), new_s
    kpos, ks = st.k_pos[li], st.k_scale[li]
    assert kpos.shape == (Hkv, N), (kpos.shape, N)
    if st.variant == "rescale_cache":  # wrong on purpose: every key at this call's scale
        ks = torch.full_like(ks, s_call)

    CL = d.chunk_len
    kr = rope_hf(k, kpos % CL).repeat_interleave(G, dim=0)             # [H, N, D]
    r, succ, inter = d.q_positions(qpos)
    if st.variant == "no_clamp":
        succ = r + CL
    q_intra, q_succ, q_inter = (rope_hf(q, p[None]) for p in (r, succ, inter))
    kpos_h = kpos.repeat_interleave(G, dim=0)                          # [H, N]
    ks_h = ks.repeat_interleave(G, dim=0)
    dist = (qpos // CL)[None, :, None] - (kpos_h // CL)[:, None, :]    # [H, T, N]
    kt = kr.transpose(1, 2)
    s = torch.where(dist == 0, q_intra @ kt, torch.where(dist == 1, q_succ @ kt, q_inter @ kt))
    logits = s * (s_call * ks_h[:, None, :]).to(s.dtype) * scaling
    hidden = kpos_h[:, None, :] > qpos[None, :, None]                  # causal: key after query
    if T == 1 and st.decode_sees_all:  # decoding at wrong positions on purpose: no row hidden
        hidden = torch.zeros_like(hidden)
    elif T == 1:
        assert not bool(hidden.any()), "a decode position hides cache rows"
    logits = logits.masked_fill(hidden, float("-inf"))
    if st.capture is not None:
        st.capture[li] = logits[:, -st.window:].clone()
    p = torch.softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
    out = p @ v.repeat_interleave(G, dim=0)                            # [H, T, D]
    if st.trace is not None:  # the call, to replay through the vLLM-structured function
        st.trace.append(dict(module=module, query=query.clone(), key=key.clone(),
                             value=value.clone(), scaling=scaling, q_pos=qpos.clone(), out=out))
    return out.transpose(0, 1)[None].contiguous(), p[None]


# ---------------------------------------------------------------- vLLM-structured cross-check


def rotate_neox(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class VllmRope:
    """vLLM DualChunkRotaryEmbedding's cos/sin tables: q_cache (positions 0..CL-1), qc_cache
    (CL..2CL-1 clamped at chunk_size), k_cache (every position mod CL)."""

    def __init__(self, head_dim, theta, max_pos, dca):
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        CL = dca.chunk_len
        q_t = torch.arange(CL, dtype=torch.float)
        qc_t = (torch.arange(CL, dtype=torch.float) + CL).clamp(max=dca.chunk)
        k_t = torch.arange(max_pos, dtype=torch.float) % CL

        def table(t):
            f = torch.outer(t, inv_freq)
            return torch.cat((f.cos(), f.sin()), dim=-1)

        self.q_cache, self.qc_cache, self.k_cache = table(q_t), table(qc_t), table(k_t)
        self.chunk_len, self.max_pos = CL, max_pos

    @staticmethod
    def apply(cos_sin, x):
        """x [n, heads, D] at the table rows cos_sin [n, D]."""
        cos, sin = cos_sin.chunk(2, dim=-1)
        cos = cos.repeat(1, 2).unsqueeze(-2)
        sin = sin.repeat(1, 2).unsqueeze(-2)
        return x * cos + rotate_neox(x) * sin

    def forward(self, positions, q, k):
        assert int(positions.max()) < self.max_pos
        key = self.apply(self.k_cache[positions], k)
        r = positions % self.chunk_len
        query = self.apply(self.q_cache[r], q)
        query_succ = self.apply(self.qc_cache[r], q)
        query_inter = self.apply(self.qc_cache[self.chunk_len - 1].repeat(positions.shape[0], 1), q)
        return query, query_succ, query_inter, key


def flash(q, k, v, scale, causal):
    """One head: q [t, D], k/v [n, D]. Returns (out [t, D], lse [t]); causal aligns bottom-right
    (flash-attn's rule when t < n)."""
    s = (q @ k.T) * scale
    if causal:
        t, n = s.shape
        s = s.masked_fill(torch.arange(n)[None] > torch.arange(t)[:, None] + (n - t), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    return torch.exp(s - lse[:, None]) @ v, lse


def merge(results):
    """vLLM _merge_attn_outputs: per query chunk, weight each part by exp(lse - max lse)."""
    outs = []
    for parts in results:
        if len(parts) == 1:
            outs.append(parts[0][0])
            continue
        o = torch.stack([p[0] for p in parts])
        lse = torch.stack([p[1] for p in parts])
        w = torch.exp(lse - lse.max(dim=0).values[None])
        w = w / w.sum(dim=0)
        outs.append((o * w[..., None]).sum(dim=0))
    return torch.cat(outs, dim=0)


def vllm_prefill_head(q, q_succ, q_inter, k, v, scale, CL):
    """_dual_chunk_flash_attn_prefill_func, dense path: loop over query chunks; intra causal,
    succ (previous chunk) and inter (all before it) non-causal."""
    k_length, results = k.shape[0], []
    begin = k_length - q.shape[0]
    while begin < k_length:
        prev = (begin // CL) * CL
        end = min(prev + CL, k_length)
        qb, qe = begin - (k_length - q.shape[0]), end - (k_length - q.shape[0])
        parts = [flash(q[qb:qe], k[prev:end], v[prev:end], scale, True)]
        if prev - CL >= 0:
            parts.append(flash(q_succ[qb:qe], k[prev - CL:prev], v[prev - CL:prev], scale, False))
        if prev - 2 * CL >= 0:
            parts.append(flash(q_inter[qb:qe], k[:prev - CL], v[:prev - CL], scale, False))
        results.append(parts)
        begin = end
    return merge(results)


def vllm_decode_head(q, q_succ, q_inter, k, v, scale, CL):
    """_dual_chunk_flash_attn_decoding: one query, the cache split at the chunk boundaries."""
    n = k.shape[0]
    c = (n - 1) // CL
    parts = [flash(q, k[c * CL:n], v[c * CL:n], scale, False)]
    if c >= 1:
        parts.append(flash(q_succ, k[(c - 1) * CL:c * CL], v[(c - 1) * CL:c * CL], scale, False))
    if c >= 2:
        parts.append(flash(q_inter, k[:(c - 1) * CL], v[:(c - 1) * CL], scale, False))
    return merge([parts])


def vllm_scaling_factor(seq_len, orig):
    """The metadata's fp32 (0.1 log(orig_seq_len / O) + 1).clip(min=1)."""
    t = torch.tensor([seq_len], dtype=torch.int32)
    return float((0.1 * torch.log(t / orig) + 1.0).clip(min=1)[0])


def dca_vllm_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
    """vLLM's structure: rotate with the tables, multiply the new keys by the call's scaling
    factor and append them to its own cache (rotated, scaled), then prefill (chunk loop) or decode
    (three cache ranges), merged by log-sum-exp."""
    st, d, vr = STATE, STATE.dca, STATE.vllm_rope
    li = module.layer_idx
    H, T = query.shape[1], query.shape[2]
    positions = st.q_pos
    q = query[0].transpose(0, 1)                                       # [T, H, D]
    k_new = key[0, :, -T:].transpose(0, 1)                             # [T, Hkv, D]
    v_new = value[0, :, -T:].transpose(0, 1)
    query_, query_succ, query_inter, k_rot = vr.forward(positions, q, k_new)
    prefill = li not in st.vllm
    # orig_seq_len = max(prompt_len, seq_len): the prompt length at prefill, position + 1 after.
    seq_len = T if prefill else int(positions[-1]) + 1
    sf = vllm_scaling_factor(seq_len, d.orig) if d.orig > 0 else None
    if sf is not None:
        k_rot = k_rot * sf
    if prefill:
        st.vllm[li] = (k_rot, v_new)
    else:
        kc, vc = st.vllm[li]
        st.vllm[li] = (torch.cat([kc, k_rot]), torch.cat([vc, v_new]))
    kc, vc = st.vllm[li]
    G = H // kc.shape[1]
    out = torch.empty_like(q)
    for h in range(H):
        kh, vh = kc[:, h // G], vc[:, h // G]
        if prefill:
            scale = scaling * sf if sf is not None else scaling
            out[:, h] = vllm_prefill_head(query_[:, h], query_succ[:, h], query_inter[:, h],
                                          kh, vh, scale, d.chunk_len)
        else:
            assert T == 1
            m = sf if sf is not None else 1.0
            out[:, h] = vllm_decode_head(query_[:, h] * m, query_succ[:, h] * m,
                                         query_inter[:, h] * m, kh, vh, scaling, d.chunk_len)
    return out[None].contiguous(), None


AttentionInterface.register(ATTN, dca_ref_attention)
AttentionInterface.register(ATTN_VLLM, dca_vllm_attention)
AttentionMaskInterface.register(ATTN, no_mask)
AttentionMaskInterface.register(ATTN_VLLM, no_mask)


# ---------------------------------------------------------------- running the model


def use_dca(model, dca_cfg, impl=ATTN, variant=None):
    STATE.dca = Dca(dca_cfg)
    STATE.rotary = model.model.rotary_emb
    assert STATE.rotary.rope_type == "default" and STATE.rotary.attention_scaling == 1.0
    cfg = model.config
    STATE.vllm_rope = None  # vLLM's tables are as long as a chunk: not made for huge chunks
    if STATE.dca.chunk_len <= cfg.max_position_embeddings:
        STATE.vllm_rope = VllmRope(cfg.head_dim, cfg.rope_parameters["rope_theta"],
                                   cfg.max_position_embeddings, STATE.dca)
    STATE.variant = variant
    model.set_attn_implementation(impl)


@torch.no_grad()
def dca_forward(model, ids, positions, past):
    """One call: HF's RoPE is the identity (position_ids 0), so HF's cache holds raw keys."""
    STATE.q_pos = torch.as_tensor(positions, dtype=torch.long)
    return model(input_ids=torch.tensor([ids]), past_key_values=past, use_cache=True,
                 position_ids=torch.zeros((1, len(ids)), dtype=torch.long))


def at_least_f32(x):
    return x.to(torch.promote_types(x.dtype, torch.float32))


@torch.no_grad()
def dca_run(model, ids, n_new, forced=None, pos_base=None, keep_hook=None):
    """Prefill, then decode token by token through the cache: token t at position pos_base + t
    (default len(ids)). Greedy, or the given tokens (forced). keep_hook(out) may compress the cache
    after the prefill. Returns (prompt_logits [T, V], tokens [n_new], rows [n_new, V]); rows[0]
    is the last prompt row, argmax(rows[i]) == tokens[i] when greedy."""
    L = len(ids)
    pos_base = L if pos_base is None else pos_base
    out = dca_forward(model, ids, range(L), None)
    if keep_hook is not None:
        keep_hook(out)
    prompt_logits = at_least_f32(out.logits[0]).clone()
    past, row = out.past_key_values, prompt_logits[-1]
    toks, rows = [], []
    for t in range(n_new):
        tok = int(torch.argmax(row)) if forced is None else forced[t]
        toks.append(tok)
        rows.append(row.clone())
        if t == n_new - 1:
            break
        out = dca_forward(model, [tok], [pos_base + t], past)
        row = at_least_f32(out.logits[0, -1])
    return prompt_logits, toks, torch.stack(rows)


@torch.no_grad()
def plain_run(model, ids, forced):
    """HF's own Qwen2 (eager, real position_ids), teacher-forced on `forced`."""
    model.set_attn_implementation("eager")
    out = model(input_ids=torch.tensor([ids]), use_cache=True)
    prompt_logits = out.logits[0].float().clone()
    past, rows = out.past_key_values, [prompt_logits[-1].clone()]
    for tok in forced[:-1]:
        out = model(input_ids=torch.tensor([[tok]]), past_key_values=past, use_cache=True)
        rows.append(out.logits[0, -1].float())
    return prompt_logits, torch.stack(rows)


def max_diff(a, b):
    return float((a - b).abs().max())


@torch.no_grad()
def replay_vllm(calls, n_layers):
    """Feed the reference's recorded calls (same q/k/v, in order) to the vLLM-structured function.
    Returns the max |d| of the attention outputs: (prefill calls, decode calls)."""
    STATE.vllm, STATE.trace = {}, None
    d = [0.0, 0.0]
    for i, c in enumerate(calls):
        STATE.q_pos = c["q_pos"]
        out, _ = dca_vllm_attention(c["module"], c["query"], c["key"], c["value"], None,
                                    c["scaling"])
        d[i >= n_layers] = max(d[i >= n_layers], max_diff(out[0].transpose(0, 1), c["out"]))
    return d


@torch.no_grad()
def cross_checks(model, dca_cfg, ids, toks, prompt_logits, rows):
    """The vLLM-structured implementation and (with one huge chunk, O = 0) HF's plain Qwen2 must
    give the reference's numbers; teacher-forced on the reference's tokens. Returns the measured
    max |d|: attention outputs on the same inputs (fp32), logits of whole runs (fp32 and fp64)."""
    res = {}
    n_layers = model.config.num_hidden_layers
    use_dca(model, dca_cfg, ATTN)
    STATE.reset()
    STATE.trace = []
    pl_a, _, rw_a = dca_run(model, ids, len(toks), forced=toks)
    calls = STATE.trace
    assert torch.equal(pl_a, prompt_logits) and torch.equal(rw_a, rows)
    assert len(calls) == n_layers * len(toks)
    res["vllm_attn_prefill"], res["vllm_attn_decode"] = replay_vllm(calls, n_layers)
    # Whole runs, each implementation on its own: fp32 (rounding differences grow through the
    # layers) and fp64 (weights and activations; HF's Qwen2RMSNorm still normalises in fp32, and
    # vLLM's scaling factor is fp32, which is what remains).
    use_dca(model, dca_cfg, ATTN_VLLM)
    STATE.reset()
    pl_b, _, rw_b = dca_run(model, ids, len(toks), forced=toks)
    res["vllm_logits_prefill_fp32"] = max_diff(pl_a, pl_b)
    res["vllm_logits_decode_fp32"] = max_diff(rw_a, rw_b)
    m64 = copy.deepcopy(model).to(torch.float64)
    runs = []
    for impl in (ATTN, ATTN_VLLM):
        use_dca(m64, dca_cfg, impl)
        STATE.reset()
        runs.append(dca_run(m64, ids, len(toks), forced=toks))
    res["vllm_logits_fp64"] = max(max_diff(runs[0][0], runs[1][0]),
                                  max_diff(runs[0][2], runs[1][2]))
    # One chunk, no length scaling: plain Qwen2.
    use_dca(model, BIG_CHUNK, ATTN)
    STATE.reset()
    pl_c, _, rw_c = dca_run(model, ids, len(toks), forced=toks)
    pl_p, rw_p = plain_run(model, ids, toks)
    res["plain_prefill"] = max_diff(pl_c, pl_p)
    res["plain_decode"] = max_diff(rw_c, rw_p)
    use_dca(model, dca_cfg, ATTN)
    limits = dict(vllm_attn_prefill=TOL, vllm_attn_decode=TOL, vllm_logits_fp64=TOL,
                  plain_prefill=TOL, plain_decode=TOL,
                  vllm_logits_prefill_fp32=TOL_FP32, vllm_logits_decode_fp32=TOL_FP32)
    for key, lim in limits.items():
        if not res[key] < lim:
            raise RuntimeError(f"{key}: max |d| {res[key]:.3e} >= {lim}")
    return res


def format_checks(cc):
    return ("vs vLLM-structured: attention out on the same inputs max |d| prefill "
            f"{cc['vllm_attn_prefill']:.2e} decode {cc['vllm_attn_decode']:.2e}; whole-run logits "
            f"fp32 prefill {cc['vllm_logits_prefill_fp32']:.2e} decode "
            f"{cc['vllm_logits_decode_fp32']:.2e}, fp64 model {cc['vllm_logits_fp64']:.2e}; "
            f"one chunk, O=0 vs HF plain Qwen2: logits prefill {cc['plain_prefill']:.2e} decode "
            f"{cc['plain_decode']:.2e}")


@torch.no_grad()
def sensitivity(model, dca_cfg, ids, toks, prompt_logits, rows):
    """How far common mistakes land from the goldens (teacher-forced on the golden tokens)."""
    res = {}
    for variant in ("no_scale", "no_clamp", "rescale_cache"):
        use_dca(model, dca_cfg, ATTN, variant=variant)
        STATE.reset()
        pl, _, rw = dca_run(model, ids, len(toks), forced=toks)
        res[variant] = max(max_diff(pl, prompt_logits), max_diff(rw, rows))
    pl, rw = plain_run(model, ids, toks)
    res["plain_rope"] = max(max_diff(pl, prompt_logits), max_diff(rw, rows))
    use_dca(model, dca_cfg, ATTN)
    return res


def check_identity_rope(model, ids):
    """HF's cache must hold the raw k_proj output of layer 0 (the zero position_ids make HF's
    RoPE the identity), so that all rotation is ours."""
    STATE.reset()
    out = dca_forward(model, ids, range(len(ids)), None)
    layer = model.model.layers[0]
    h = layer.input_layernorm(model.model.embed_tokens(torch.tensor([ids])))
    k = layer.self_attn.k_proj(h).view(1, len(ids), -1, model.config.head_dim).transpose(1, 2)
    if not torch.equal(out.past_key_values.layers[0].keys, k):
        raise RuntimeError("HF's cache does not hold the unrotated keys")


def write_config(out, spec):
    ggm.add_legacy_config_keys(out / "config.json", spec)
    cfg = json.loads((out / "config.json").read_text())
    cfg["dual_chunk_attention_config"] = dict(spec["dca"])
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def reload(out, ref_sd, name):
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32,
                                                 attn_implementation=ATTN).eval()
    for k, v in model.state_dict().items():
        if not torch.equal(v, ref_sd[k]):
            raise RuntimeError(f"{name}: reloaded {k} differs from the saved bf16 weights")
    dca_cfg = dict(model.config.dual_chunk_attention_config)
    return model, dca_cfg


# ---------------------------------------------------------------- tests/golden/qwen2_dca


def golden_model(seed):
    """A random model whose weights are what its BF16 file will hold (fp32, parameters rounded)."""
    cfg = ggm.build_config(GOLDEN_SPEC)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    ggm.randomize(model, seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    return model.eval(), cfg


def gen_golden():
    spec = GOLDEN_SPEC
    # The first seed whose greedy steps are all clear of near ties (top1 - top2 >= 2e-3, as the
    # SnapKV goldens require), so that an fp32 implementation must reproduce every token.
    for seed in range(spec["seed"], spec["seed"] + gsk.SEED_TRIES):
        model, cfg = golden_model(seed)
        use_dca(model, spec["dca"])
        worst = math.inf
        for ids in ggm.prompts_ids():
            STATE.reset()
            worst = min(worst, min(ggm.margins(dca_run(model, ids, ggm.N_GREEDY)[2])))
        if worst >= gsk.MARGIN_MIN:
            break
        log(f"  seed {seed} rejected: greedy margin {worst:.2e}")
    else:
        raise RuntimeError(f"{NAME}: no seed in {gsk.SEED_TRIES} tries gives clear greedy steps")
    out = ggm.GOLDEN / NAME
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model = model.to(torch.bfloat16)
    ref_sd = {k: v.float().clone() for k, v in model.state_dict().items()}
    model.save_pretrained(out)
    (out / "generation_config.json").unlink(missing_ok=True)
    write_config(out, spec)
    model, dca_cfg = reload(out, ref_sd, NAME)
    if dca_cfg != spec["dca"] or dict(model.config.rope_parameters) != dict(cfg.rope_parameters):
        raise RuntimeError(f"reloaded config {dca_cfg} {model.config.rope_parameters}")
    use_dca(model, dca_cfg)
    prompts_ids = ggm.prompts_ids()
    check_identity_rope(model, prompts_ids[-1])

    prompts, worst = [], {}
    for pi, ids in enumerate(prompts_ids):
        use_dca(model, dca_cfg)
        STATE.reset()
        logits, greedy, steps = dca_run(model, ids, ggm.N_GREEDY)
        assert [int(torch.argmax(r)) for r in steps] == greedy
        m = ggm.margins(steps)
        cc = cross_checks(model, dca_cfg, ids, greedy, logits, steps)
        sens = sensitivity(model, dca_cfg, ids, greedy, logits, steps)
        for k, v in cc.items():
            worst[k] = max(worst.get(k, 0.0), v)
        log(f"  {NAME} prompt T={len(ids)}: logits std {float(logits.std()):.3f}, "
            f"greedy {greedy[:8]}..., min top1-top2 margin {min(m):.4f}")
        log("    " + format_checks(cc))
        log("    wrong variants move the logits by: "
            + ", ".join(f"{k} {v:.3f}" for k, v in sens.items()))
        p = {"ids": ids, "logits_file": f"prompt{pi}_logits.bin", "greedy": greedy,
             "greedy_margins": m}
        ggm.write_f32_bin(out / p["logits_file"], logits.numpy())
        if pi == ggm.GREEDY_LOGITS_PROMPT:
            p["greedy_logits_file"] = f"prompt{pi}_greedy_logits.bin"
            ggm.write_f32_bin(out / p["greedy_logits_file"], steps.numpy())
        prompts.append(p)
    doc = {"model": NAME, "format": "safetensors", "path": ".", "about": spec["about"],
           "seed": seed, "prompts": prompts}
    ggm.write_json(out / "golden.json", doc)
    log(f"  {NAME}: worst over prompts: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))


# ---------------------------------------------------------------- tests/golden_snapkv/qwen2_dca


def dca_votes(win_logits):
    """SNAPKV.md steps 3-5 on the reference's own masked logits of the last w queries
    [H, w, L] (DCA rotation of each pair, s(L) on query and keys): fp32 softmax over all L keys,
    summed over the window rows, prefix columns only."""
    H, w, L = win_logits.shape
    p = torch.softmax(win_logits, dim=-1, dtype=torch.float32)
    return p[:, :, :L - w].sum(dim=1)


@torch.no_grad()
def snap_case(model, dca_cfg, ids, case, compress=True, pos_base=None, variant=None):
    """Prefill (capturing the window logits), select, compress HF's cache and the state's key
    positions/scales alike, decode at positions pos_base + t (default L)."""
    use_dca(model, dca_cfg, variant=variant)
    STATE.reset()
    STATE.decode_sees_all = pos_base is not None
    L, w, B = len(ids), case["window"], case["budget"]
    n_kv = model.config.num_key_value_heads
    STATE.capture, STATE.window = {}, w
    keep, votes, scores = {}, {}, {}

    def hook(out):
        cap, STATE.capture = STATE.capture, None
        for li, lg in sorted(cap.items()):
            assert lg.shape[1:] == (w, L)
            if L > B:
                votes[li] = dca_votes(lg)
                scores[li] = gsk.snapkv_scores(votes[li], n_kv, case["kernel"], case["pooling"])
                keep[li] = gsk.snapkv_keep(scores[li], L, w, B)
            else:
                keep[li] = torch.arange(L).expand(n_kv, L)
        if compress:
            gsk.compress_cache(out.past_key_values, keep)
            for li, idx in keep.items():
                STATE.k_pos[li] = torch.gather(STATE.k_pos[li], 1, idx)
                STATE.k_scale[li] = torch.gather(STATE.k_scale[li], 1, idx)
            want = B if L > B else L
            assert all(out.past_key_values.layers[li].keys.shape[2] == want for li in keep)

    pl, greedy, rows = dca_run(model, ids, gsk.N_GREEDY, pos_base=pos_base, keep_hook=hook)
    return dict(keep=keep, votes=votes, scores=scores, greedy=greedy, rows=rows,
                prefill_logits=pl[-1].clone(), all_prefill_logits=pl)


@torch.no_grad()
def snap_evaluate_case(model, dca_cfg, case, ids):
    """gen_snapkv_golden.evaluate_case on DCA: Reject when too close to a tie or when the test
    would not tell a broken compression or wrong decode positions from a good one."""
    n_kv = model.config.num_key_value_heads
    L, w, B = len(ids), case["window"], case["budget"]
    r = snap_case(model, dca_cfg, ids, case)
    full = snap_case(model, dca_cfg, ids, case, compress=False)
    d_full = max_diff(r["rows"], full["rows"])
    margins = gsk.top_margins(r["rows"])
    info = dict(case=case, ids=ids, r=r, d_full=d_full, margins=margins)
    if min(margins) < gsk.MARGIN_MIN:
        raise gsk.Reject(f"{case['name']}: greedy margin {min(margins):.2e}")
    if L <= B:
        if r["greedy"] != full["greedy"] or d_full != 0.0:
            raise RuntimeError(f"{case['name']}: L <= C decode differs from full KV by {d_full}")
        info.update(min_gap=None, boundary_gap=None, gaps=None)
        return info
    gaps, bounds = [], []
    for li in sorted(r["keep"]):
        rb, bd = gsk.rel_gaps(r["votes"][li], r["scores"][li], B - w, case["kernel"],
                              case["pooling"])
        gaps.append(rb)
        bounds.append(bd)
    min_gap = min(min(g) for g in gaps)
    if min_gap < gsk.GAP_MIN:
        raise gsk.Reject(f"{case['name']}: min relative gap {min_gap:.2e}")
    for li, bd in zip(sorted(r["keep"]), bounds):
        topk = torch.sort(r["scores"][li].topk(B - w, dim=-1).indices, dim=-1).values
        for j, b in enumerate(bd):
            if b > 0 and not torch.equal(topk[j], r["keep"][li][j, :B - w]):
                raise RuntimeError(f"{case['name']}: topk differs, layer {li} head {j}")
    for li in sorted(r["keep"]):
        if not gsk.perturbation_check(r["votes"][li], r["keep"][li], n_kv, case, 77 + li):
            raise RuntimeError(f"{case['name']} layer {li}: selection moves under "
                               f"{gsk.PERTURB:g} noise although its gap is {min_gap:.2e}")
    if d_full < 1e-3:
        raise gsk.Reject(f"{case['name']}: compression changes decode logits by only {d_full}")
    wrong = snap_case(model, dca_cfg, ids, case, pos_base=B)
    d_pos = max_diff(wrong["rows"][1:], r["rows"][1:])
    if d_pos < 1e-3:
        raise gsk.Reject(f"{case['name']}: decode positions C vs L differ by only {d_pos}")
    info.update(min_gap=min_gap, boundary_gap=min(min(b) for b in bounds), gaps=gaps, d_pos=d_pos)
    return info


@torch.no_grad()
def snap_evaluate(model, dca_cfg):
    results = []
    for case in SNAP_CASES:
        why = []
        for attempt in range(gsk.PROMPT_TRIES):
            seed, ids = gsk.case_ids(NAME, case, attempt)
            try:
                info = snap_evaluate_case(model, dca_cfg, case, ids)
                info["prompt_seed"] = seed
                results.append(info)
                break
            except gsk.Reject as e:
                why.append(str(e))
        else:
            raise gsk.Reject(f"{case['name']}: no prompt in {gsk.PROMPT_TRIES} (last: {why[-1]})")
        if attempt:
            log(f"  {case['name']}: prompt attempt {attempt} ({why[-1]} before)")
    return results


class NumpyDca(gsk.NumpyModel):
    """An fp64 numpy forward of the saved safetensors (gen_snapkv_golden.NumpyModel's norms,
    projections, MLP and rotation) with DCA attention and SnapKV written again here: per KV head
    the cache keeps raw keys with their positions and write scales, rotated at each use."""

    def __init__(self, path, cfg, dca):
        super().__init__(path, cfg)
        assert self.rope_type == "default" and self.n_rot == self.D and not self.pairs
        self.dca = dca

    def raw_qkv(self, li, x):
        p = f"model.layers.{li}.self_attn."
        T = x.shape[0]
        q = self.lin(x, p + "q_proj").reshape(T, self.H, self.D).transpose(1, 0, 2)
        k = self.lin(x, p + "k_proj").reshape(T, self.Hkv, self.D).transpose(1, 0, 2)
        v = self.lin(x, p + "v_proj").reshape(T, self.Hkv, self.D).transpose(1, 0, 2)
        return q, k, v

    def dca_logits(self, q, qpos, s_q, k, kpos, s_k):
        """q [H, T, D] at qpos [T]; k [Hkv, N, D] at kpos [Hkv, N] written with s_k [Hkv, N].
        Returns the masked logits [H, T, N]."""
        d = self.dca
        CL, C = d.chunk_len, d.chunk
        H, T, _ = q.shape
        G = H // self.Hkv
        r = qpos % CL
        qr = {0: self.rope(q, r), 1: self.rope(q, np.minimum(r + CL, C)),
              2: self.rope(q, np.full(T, min(2 * CL - 1, C)))}
        out = np.empty((H, T, k.shape[1]))
        for h in range(H):
            j = h // G
            kr = self.rope(k[j], kpos[j] % CL)
            part = np.clip(qpos[:, None] // CL - kpos[j][None, :] // CL, 0, 2)    # [T, N]
            dots = np.stack([qr[i][h] @ kr.T for i in range(3)])                 # [3, T, N]
            lg = np.take_along_axis(dots, part[None], axis=0)[0]
            lg = lg * s_q * s_k[j][None, :] / math.sqrt(self.D)
            out[h] = np.where(kpos[j][None, :] > qpos[:, None], -np.inf, lg)
        return out

    def attend_logits(self, lg, v):
        G = self.H // v.shape[0]
        p = np.exp(lg - lg.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        return (p @ np.repeat(v, G, axis=0)).transpose(1, 0, 2).reshape(lg.shape[1], -1)

    def run(self, ids, case, greedy):
        L, w, B = len(ids), case["window"], case["budget"]
        x = self.w["model.embed_tokens.weight"][ids]
        pos = np.arange(L)
        sL = self.dca.scale(L)
        caches, keeps, scores = [], [], []
        for li in range(self.cfg.num_hidden_layers):
            hn = self.rms(x, self.w[f"model.layers.{li}.input_layernorm.weight"])
            q, k, v = self.raw_qkv(li, hn)
            kpos = np.tile(pos, (self.Hkv, 1))
            ks = np.full((self.Hkv, L), sL)
            lg = self.dca_logits(q, pos, sL, k, kpos, ks)
            keep, sc = np_select_logits(lg, self.Hkv, w, B, case["kernel"], case["pooling"])
            keeps.append(keep)
            scores.append(sc)
            caches.append([np.stack([a[j, keep[j]] for j in range(self.Hkv)])
                           for a in (k, v, kpos, ks)])
            x = self.block_rest(li, x, self.attend_logits(lg, v))
        rows = [self.logits(x[-1])]
        for t, tok in enumerate(greedy[:-1]):
            p = L + t
            s = self.dca.scale(p + 1)
            x = self.w["model.embed_tokens.weight"][[tok]]
            for li in range(self.cfg.num_hidden_layers):
                hn = self.rms(x, self.w[f"model.layers.{li}.input_layernorm.weight"])
                q, k, v = self.raw_qkv(li, hn)
                c = caches[li]
                c[0] = np.concatenate([c[0], k], axis=1)
                c[1] = np.concatenate([c[1], v], axis=1)
                c[2] = np.concatenate([c[2], np.full((self.Hkv, 1), p)], axis=1)
                c[3] = np.concatenate([c[3], np.full((self.Hkv, 1), s)], axis=1)
                lg = self.dca_logits(q, np.array([p]), s, c[0], c[2], c[3])
                x = self.block_rest(li, x, self.attend_logits(lg, c[1]))
            rows.append(self.logits(x[-1]))
        return keeps, scores, np.stack(rows)


def np_select_logits(lg, n_kv, w, B, kernel, pooling):
    """SNAPKV.md steps 1-9 in fp64 from the window rows of the DCA logits [H, L, L] (explicit
    loops). Returns (kept positions per KV head, scores [Hkv, P] or None)."""
    H, L, _ = lg.shape
    if L <= B:
        return [np.arange(L) for _ in range(n_kv)], None
    P, G = L - w, H // n_kv
    votes = np.zeros((H, P))
    for h in range(H):
        for i in range(w):
            row = lg[h, P + i, :P + i + 1]
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
        top = np.lexsort((np.arange(P), -s))[:B - w]
        keep.append(np.concatenate([np.sort(top), np.arange(P, L)]))
        scores.append(s)
    return keep, np.stack(scores)


def make_snap_model(seed):
    spec = SNAP_SPEC
    cfg = ggm.build_config(spec)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    gsk.randomize(model, seed, spec["qk_std"])
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    return model.eval()


def gen_snapkv():
    spec = SNAP_SPEC
    for seed in range(spec["seed"], spec["seed"] + gsk.SEED_TRIES):
        model = make_snap_model(seed)
        try:
            snap_evaluate(model, spec["dca"])
            break
        except gsk.Reject as e:
            log(f"  seed {seed} rejected: {e}")
    else:
        raise RuntimeError(f"{NAME}: no seed in {gsk.SEED_TRIES} tries gives clear selections")

    out = gsk.OUT / NAME
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    ref_sd = {k: v.clone() for k, v in model.state_dict().items()}
    model.to(torch.bfloat16).save_pretrained(out)
    (out / "generation_config.json").unlink(missing_ok=True)
    write_config(out, spec)
    model, dca_cfg = reload(out, ref_sd, NAME)
    if dca_cfg != spec["dca"]:
        raise RuntimeError(f"reloaded dual_chunk_attention_config {dca_cfg}")
    use_dca(model, dca_cfg)
    results = snap_evaluate(model, dca_cfg)
    npm = NumpyDca(out, model.config, Dca(dca_cfg))
    cases = []
    for info in results:
        case, r, ids = info["case"], info["r"], info["ids"]
        keep = gsk.check_case(NAME, info, npm)
        w, B = case["window"], case["budget"]
        # The full-prompt prefill (before compression) against the vLLM-structured code and,
        # with one huge chunk, HF's plain Qwen2.
        cc = cross_checks(model, dca_cfg, ids, r["greedy"][:1], r["all_prefill_logits"],
                          r["rows"][:1])
        log("    prefill vs vLLM-structured: attention out on the same inputs max |d| "
            f"{cc['vllm_attn_prefill']:.2e}; whole-run logits fp32 "
            f"{cc['vllm_logits_prefill_fp32']:.2e}, fp64 model {cc['vllm_logits_fp64']:.2e}; "
            f"one chunk, O=0 vs HF plain Qwen2: logits {cc['plain_prefill']:.2e}")
        # What a selection without DCA's rotations, or without its scaling, would keep instead.
        moved = {}
        for label, kw in (("plain_rope", dict(dca_cfg=BIG_CHUNK)),
                          ("no_scale", dict(dca_cfg=dca_cfg, variant="no_scale"))):
            other = snap_case(model, kw.pop("dca_cfg"), ids, case, **kw)
            moved[label] = sum(len(set(a.tolist()) - set(b.tolist())) for li in r["keep"]
                               for a, b in zip(r["keep"][li], other["keep"][li]))
        use_dca(model, dca_cfg)
        log(f"    kept positions (of {sum(k.numel() for k in r['keep'].values())}) that change "
            "when the votes use: " + ", ".join(f"{k} {v}" for k, v in moved.items()))
        cases.append({
            "name": case["name"],
            "ids": ids,
            "prompt_seed": info["prompt_seed"],
            "window": w,
            "budget": B,
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
    doc = {"model": NAME, "path": ".", "about": spec["about"], "seed": seed,
           "qk_std": spec["qk_std"], "cases": cases}
    ggm.write_json(out / "golden.json", doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", action="append", choices=["golden", "snapkv"],
                    help="which folder to make (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # bit-for-bit reruns: fp32 sums must not depend on the core count
    torch.use_deterministic_algorithms(True)
    todo = args.only or ["golden", "snapkv"]
    if "golden" in todo:
        log(f"[golden/{NAME}]")
        gen_golden()
    if "snapkv" in todo:
        log(f"[golden_snapkv/{NAME}]")
        gen_snapkv()
    return 0


if __name__ == "__main__":
    sys.exit(main())
