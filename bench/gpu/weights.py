"""weights: the benchmark's model shapes, a writer that saves a model's weights as
a sharded safetensors directory snaptp reads (config.json with the legacy top-level
rope keys as well, as tests/gen_golden_models.py writes them), and cut_layers, which
makes the first n layers of such a directory into a model of its own (pure Python:
the 2-layer model of the 1M-token run is cut from the 8B's bytes, not built again).

The weights are made on the machine that runs the benchmark (random, transformers'
own init) and never travel: the 8B shape is about 16 GB in bf16. torch, safetensors
and transformers are imported by the functions that need them, so that the CPU dry
run works on a machine without them.
"""
import json
import re
import struct
import time
from pathlib import Path
from types import SimpleNamespace

# Llama 3.1 8B: the shape, rope theta and llama3 scaling of the real model.
LLAMA3_8B = dict(
    hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
    head_dim=128, intermediate_size=14336, vocab_size=128256, rms_norm_eps=1e-5,
    rope_theta=500000.0,
    rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                      original_max_position_embeddings=8192),
)

# SmolLM2-135M's shape (untied head here): test_backend_parity's real-sized model on a
# GPU machine, where the GGUF itself does not travel.
SMOLLM2_135M = dict(
    hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
    head_dim=64, intermediate_size=1536, vocab_size=49152, rms_norm_eps=1e-5,
    rope_theta=100000.0, rope_scaling=None,
)

# The tiny golden model's shape (tests/golden/llama_gqa): what --tiny runs on the CPU.
TINY = dict(
    hidden_size=256, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=4,
    head_dim=32, intermediate_size=512, vocab_size=512, rms_norm_eps=1e-5, rope_theta=500000.0,
    rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                      original_max_position_embeddings=256),
)


def make_config(shape, n_layers=None, n_ctx=131072):
    """A LlamaConfig of `shape` (optionally with fewer layers) whose context allows
    prompts of n_ctx tokens. Random weights have no trained context length, so n_ctx
    only bounds what snaptp accepts; rope scaling does not depend on it."""
    from transformers import LlamaConfig

    s = dict(shape)
    if n_layers:
        s["num_hidden_layers"] = n_layers
    rope = {"rope_type": "default", "rope_theta": s.pop("rope_theta")}
    rope.update(s.pop("rope_scaling") or {})
    return LlamaConfig(rope_parameters=rope, max_position_embeddings=n_ctx,
                       tie_word_embeddings=False, bos_token_id=None, eos_token_id=None,
                       pad_token_id=None, **s)


def legacy_config_dict(cfg):
    """config.json as transformers writes it, plus rope_theta / rope_scaling at the top
    level (snaptp's reader and transformers 4 read those)."""
    d = cfg.to_dict()
    rp = dict(cfg.rope_parameters)
    d["rope_theta"] = rp.pop("rope_theta")
    d["rope_scaling"] = rp if rp.get("rope_type", "default") != "default" else None
    d["torch_dtype"] = "bfloat16"
    d["architectures"] = ["LlamaForCausalLM"]
    return d


def write_model(model, out_dir, shard_bytes=4 << 30, log=print):
    """Writes model's weights (bf16) as model-0000i-of-0000n.safetensors shards plus the
    index and config.json into out_dir. Returns (total bytes, seconds)."""
    import torch
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sd = model.state_dict()
    names = [n for n in sd if not n.endswith("rotary_emb.inv_freq")]
    shards, cur, cur_bytes = [], [], 0
    for n in names:
        nb = sd[n].numel() * sd[n].element_size()
        if cur and cur_bytes + nb > shard_bytes:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(n)
        cur_bytes += nb
    if cur:
        shards.append(cur)
    weight_map, total = {}, 0
    for i, group in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {n: sd[n].detach().to(torch.bfloat16).contiguous().cpu() for n in group}
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
        for n in group:
            weight_map[n] = fname
            total += tensors[n].numel() * 2
        del tensors
        log(f"  wrote {fname} ({len(group)} tensors)")
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    (out / "config.json").write_text(
        json.dumps(legacy_config_dict(model.config), indent=2, sort_keys=True) + "\n")
    # No sync: snaptp reads the files back through the page cache.
    return total, time.perf_counter() - t0


def param_bytes(cfg):
    """bf16 bytes of every weight, and of those a decode step reads (all but the
    embedding table, of which it reads one row)."""
    C, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    H, Hkv, D, n = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, \
        cfg.num_hidden_layers
    layer = C * H * D * 2 + C * Hkv * D * 2 + 3 * C * F + 2 * C
    total = (n * layer + 2 * V * C + C) * 2
    return total, total - (V * C - C) * 2


def kv_bytes_per_row(cfg):
    """bf16 bytes of K and V of one position over all layers."""
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 2


def config_of(model_dir):
    """The fields of model_dir/config.json that param_bytes and kv_bytes_per_row read,
    as attributes (no transformers needed)."""
    d = json.loads((Path(model_dir) / "config.json").read_text())
    d.setdefault("head_dim", d["hidden_size"] // d["num_attention_heads"])
    return SimpleNamespace(**d)


def _safetensors_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        if n > (100 << 20):
            raise ValueError(f"{path}: header of {n} bytes")
        return json.loads(f.read(n)), 8 + n


_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def cut_layers(src_dir, dst_dir, n_layers=None, n_ctx=None, log=print):
    """Writes into dst_dir a model made of src_dir's tensors, less those of layers >=
    n_layers (None: keep all), as one model.safetensors, with config.json's
    num_hidden_layers and max_position_embeddings (n_ctx) set to match. The bytes are
    copied as they are (the same random weights). Returns (bytes written, seconds)."""
    t0 = time.perf_counter()
    src, dst = Path(src_dir), Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    index = src / "model.safetensors.index.json"
    files = (sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists()
             else ["model.safetensors"])
    picked = []  # (name, entry, file, data start)
    for fname in files:
        header, base = _safetensors_header(src / fname)
        for name, e in header.items():
            if name == "__metadata__":
                continue
            m = _LAYER.match(name)
            if n_layers is not None and m and int(m.group(1)) >= n_layers:
                continue
            picked.append((name, e, src / fname, base))
    picked.sort(key=lambda p: p[0])
    out_header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, e, _, _ in picked:
        b, end = e["data_offsets"]
        out_header[name] = {"dtype": e["dtype"], "shape": e["shape"], "data_offsets": [off, off + end - b]}
        off += end - b
    hdr = json.dumps(out_header, separators=(",", ":")).encode()
    hdr += b" " * (-len(hdr) % 8)  # the data starts 8-byte aligned
    with open(dst / "model.safetensors", "wb") as out:
        out.write(struct.pack("<Q", len(hdr)) + hdr)
        for name, e, path, base in picked:
            b, end = e["data_offsets"]
            with open(path, "rb") as f:
                f.seek(base + b)
                left = end - b
                while left:
                    chunk = f.read(min(left, 64 << 20))
                    if not chunk:
                        raise IOError(f"{path}: tensor {name} is cut short")
                    out.write(chunk)
                    left -= len(chunk)
    stale = dst / "model.safetensors.index.json"
    if stale.exists():
        stale.unlink()
    cfg = json.loads((src / "config.json").read_text())
    layers = max([int(m.group(1)) + 1 for m in (_LAYER.match(p[0]) for p in picked) if m] or [0])
    cfg["num_hidden_layers"] = layers
    if n_ctx:
        cfg["max_position_embeddings"] = int(n_ctx)
    (dst / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    secs = time.perf_counter() - t0
    log(f"  cut {src.name} to {layers} layers: {len(picked)} tensors, {off / 2**30:.2f} GiB "
        f"in {secs:.1f} s into {dst}")
    return off, secs
