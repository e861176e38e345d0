"""hf_bench: the Hugging Face transformers side of the GPU benchmark: prefill and
decode of a random Llama with the full KV cache (sdpa) and with SnapKV applied the
way the published implementation does it (each layer's cache compressed right after
that layer's prefill attention, so full K/V of one layer exists at a time).

The selection follows tests/gen_snapkv_golden.py (SNAPKV.md): votes of the last
`window` queries over all keys (fp32 softmax, causal inside the window), pooled
along positions (stride 1, padding k//2), averaged over each KV head's query heads,
top budget - window prefix positions kept in position order, plus the window. It is
rewritten here with one matmul per KV-head group instead of a repeat of K (at 128K
keys the golden script's repeat_interleave would copy 2 GiB per layer), and it is
checked against the golden script's functions in --tiny mode (check_selection).
"""
import math
import time

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AutoModelForCausalLM, DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTN = "snaptp_bench_snapkv"


def snapkv_keep(q, k, window, budget, kernel, pooling):
    """Kept positions [Hkv, budget] (int64, ascending) for one layer.
    q: [H, L, D] post-RoPE queries (only the last `window` rows are read); k: [Hkv, L, D]."""
    H, L, D = q.shape
    n_kv = k.shape[0]
    G = H // n_kv
    P = L - window
    # [Hkv, G*w, D]: the window rows of the G query heads that share KV head j.
    qw = q[:, -window:].float().reshape(n_kv, G * window, D)
    s = torch.matmul(qw, k.float().transpose(1, 2)) / math.sqrt(D)  # [Hkv, G*w, L]
    s = s.view(n_kv, G, window, L)
    mask = torch.triu(torch.full((window, window), float("-inf"), device=s.device), diagonal=1)
    s[..., P:] += mask
    p = torch.softmax(s, dim=-1)  # fp32
    votes = p[..., :P].sum(dim=2).reshape(H, P)  # [H, P]
    pool = F.avg_pool1d if pooling == "avg" else F.max_pool1d
    pooled = pool(votes[None], kernel_size=kernel, padding=kernel // 2, stride=1)[0]
    scores = pooled.view(n_kv, G, P).mean(dim=1)  # [Hkv, P]
    # Ties (max pooling copies one vote to its neighbours) go to the lower position,
    # as in the reference: a stable sort on -score.
    top = torch.sort(-scores, dim=-1, stable=True).indices[:, :budget - window]
    prefix = torch.sort(top, dim=-1).values
    win = torch.arange(P, L, device=q.device).expand(n_kv, window)
    return torch.cat([prefix, win], dim=-1)


class SnapHook:
    """Set around a SnapKV prefill: the cache to compress and the parameters."""
    cache = None
    params = None  # dict(window, budget, kernel, pooling)


def snapkv_sdpa(module, query, key, value, attention_mask, **kw):
    """sdpa attention; during a SnapKV prefill (more than `window` queries) it also
    replaces this layer's cache rows by the selected ones, after attending over all."""
    out = sdpa_attention_forward(module, query, key, value, attention_mask, **kw)
    prm = SnapHook.params
    L = key.shape[2]
    if SnapHook.cache is not None and query.shape[2] > 1 and L > prm["budget"]:
        keep = snapkv_keep(query[0], key[0], prm["window"], prm["budget"], prm["kernel"],
                           prm["pooling"])
        layer = SnapHook.cache.layers[module.layer_idx]
        gi = keep[None, :, :, None].expand(1, -1, -1, layer.keys.shape[-1])
        layer.keys = torch.gather(layer.keys, 2, gi).contiguous()
        layer.values = torch.gather(layer.values, 2, gi).contiguous()
    return out


AttentionInterface.register(ATTN, snapkv_sdpa)
AttentionMaskInterface.register(ATTN, sdpa_mask)


def make_model(cfg, device, dtype=torch.bfloat16):
    """A randomly initialised causal LM (transformers' own init: normal(0, 0.02)) built
    directly on `device` in `dtype`."""
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    # A transformers version that builds on the CPU whatever the context: move it.
    return model.to(device).eval()


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def run_one(model, L, G, policy, snap, device, seed=1234):
    """Prefill L random tokens and decode G greedy tokens. Returns a dict of timings
    and peak memory (torch allocator; allocated and reserved)."""
    cfg = model.config
    gen = torch.Generator(device=device).manual_seed(seed)
    ids = torch.randint(0, cfg.vocab_size, (1, L), device=device, generator=gen)
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    snap_on = policy == "snapkv" and L > snap["budget"]
    model.set_attn_implementation(ATTN if snap_on else "sdpa")
    cache = DynamicCache(config=cfg)
    SnapHook.cache, SnapHook.params = (cache, snap) if snap_on else (None, None)
    try:
        _sync(device)
        t0 = time.perf_counter()
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        tok = out.logits[0, -1].argmax()
        _sync(device)
        t1 = time.perf_counter()
    finally:
        SnapHook.cache = None
    rows = cache.get_seq_length()
    del out
    # Decode: positions continue after the prompt (not after the compressed cache).
    for g in range(G):
        pos = torch.tensor([[L + g]], device=device)
        out = model(input_ids=tok.view(1, 1), past_key_values=cache, use_cache=True,
                    position_ids=pos, logits_to_keep=1)
        tok = out.logits[0, -1].argmax()
    _sync(device)
    t2 = time.perf_counter()
    res = dict(prompt_tokens=L, gen_tokens=G, kv_rows_after_prefill=int(rows),
               prefill_s=t1 - t0, prefill_tokens_per_s=L / (t1 - t0),
               decode_ms_per_token=1e3 * (t2 - t1) / G if G else None)
    if cuda:
        res["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        res["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
    del cache
    return res


def check_selection(golden_module, device="cpu", trials=5):
    """--tiny dry run: this file's snapkv_keep against tests/gen_snapkv_golden.py's
    reference on random peaked q/k (max and avg pooling). Returns the number of
    (trial, pooling) cases whose kept positions differ."""
    bad = 0
    g = torch.Generator().manual_seed(7)
    for t in range(trials):
        H, Hkv, L, D, w, C = 8, 2, 300 + 37 * t, 32, 16, 96
        q = torch.randn(H, L, D, generator=g) * 2
        k = torch.randn(Hkv, L, D, generator=g) * 2
        for pooling in ("max", "avg"):
            mine = snapkv_keep(q.to(device), k.to(device), w, C, 7, pooling).cpu()
            votes = golden_module.snapkv_votes(q, k, w)
            scores = golden_module.snapkv_scores(votes, Hkv, 7, pooling)
            ref = golden_module.snapkv_keep(scores, L, w, C)
            bad += int(not torch.equal(mine, ref))
    return bad
