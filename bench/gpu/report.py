"""report: the GPU benchmark's markdown tables from its JSON results, and the decode
HBM bound: the bytes one decode step must read (every weight but the embedding
table, plus the K/V rows it attends over), divided by the copy bandwidth measured on
the same GPU. Also merges the JSON of several device calls:

    python3 bench/gpu/report.py results_all.json > gpu.md
"""
import json
import sys

GIB = float(1 << 30)


def decode_bound_ms(res, row):
    """The HBM floor of one decode step for `row`, in ms, or None without a bandwidth."""
    bw = (res.get("hbm") or {}).get("copy_bytes_per_s")
    m = res.get("model") or {}
    if not bw or not m or row.get("decode_ms_per_token") is None:
        return None
    L, G = row["prompt_tokens"], row.get("gen_tokens") or 0
    kept = L if row["policy"] == "full" else min(L, m["snapkv_budget"])
    rows = kept + G / 2.0  # the cache grows by one row per generated token
    return 1e3 * (m["decode_weight_bytes"] + rows * m["kv_bytes_per_row"]) / bw


def _fmt(v, spec):
    return "—" if v is None else format(v, spec)


def table(res):
    lines = []
    meta = res.get("meta", {})
    hbm = res.get("hbm") or {}
    m = res.get("model") or {}
    lines.append(f"### {meta.get('gpu', '?')} — {meta.get('phase', '?')} "
                 f"({meta.get('date', '')})\n")
    steps = res.get("steps") or {}
    if steps:
        lines.append("| step | status | seconds (cap) |")
        lines.append("|---|---|---:|")
        for name, v in steps.items():
            lines.append(f"| {name} | {v.get('status')} | {_fmt(v.get('s'), '.1f')} "
                         f"({v.get('cap_s')}) |")
        lines.append("")
    checks = res.get("checks") or {}
    if checks:
        lines.append("Checks: " + "; ".join(
            f"{k}: {v.get('status')}" + (f" ({v['last']})" if v.get("last") else "")
            for k, v in checks.items()) + ".\n")
    if m:
        lines.append(f"Model: {m.get('name')}, {m.get('total_weight_bytes', 0) / GIB:.2f} GiB of "
                     f"bf16 weights ({m.get('decode_weight_bytes', 0) / GIB:.2f} GiB read per decode "
                     f"step), {m.get('kv_bytes_per_row', 0) / 1024:.0f} KiB of K/V per position. "
                     f"SnapKV: budget {m.get('snapkv_budget')}, window {m.get('snapkv_window')}, "
                     f"kernel {m.get('snapkv_kernel')}, {m.get('snapkv_pooling')} pooling.\n")
    if hbm:
        lines.append(f"Copy bandwidth (device-to-device, read + write): "
                     f"{hbm.get('copy_bytes_per_s', 0) / 1e12:.2f} TB/s over "
                     f"{hbm.get('bytes', 0) / GIB:.1f} GiB.\n")
    rows = [r for r in res.get("rows", []) if not r.get("warmup")]
    if rows:
        lines.append("| system | KV policy | prompt tokens | prefill tok/s | prefill s | "
                     "decode ms/token | HBM bound ms/token | bound/measured | peak GPU GiB | "
                     "plan GiB | status |")
        lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in sorted(rows, key=lambda r: (r["policy"], r["prompt_tokens"], r["system"])):
            bound = decode_bound_ms(res, r)
            d = r.get("decode_ms_per_token")
            frac = f"{100 * bound / d:.0f}%" if bound and d else "—"
            peak, plan = r.get("peak_gpu_bytes"), r.get("plan_bytes")
            lines.append(
                f"| {r['system']} | {r['policy']} | {r['prompt_tokens']} | "
                f"{_fmt(r.get('prefill_tokens_per_s'), ',.0f')} | {_fmt(r.get('prefill_s'), '.2f')} | "
                f"{_fmt(d, '.2f')} | {_fmt(bound, '.2f')} | {frac} | "
                f"{_fmt(peak / GIB if peak else None, '.1f')} | "
                f"{_fmt(plan / GIB if plan else None, '.1f')} | {r.get('status', 'ok')} |")
        lines.append("")
        lines.append("Peak GPU memory: snaptp as NVML sees its process (sampled every 50 ms); "
                     "transformers as its allocator's peak reserved bytes (without the CUDA "
                     "context). Plan: `snaptp inspect`'s per-rank total for the same run. Decode "
                     "ms/token includes the host work of each step.\n")
        longest = {}
        for r in rows:
            k = (r["system"], r["policy"])
            if r.get("status", "ok") == "ok":
                longest[k] = max(longest.get(k, 0), r["prompt_tokens"])
        if longest:
            lines.append("Longest prompt that completed, per system and policy (of those tried): " +
                         ", ".join(f"{s} {p}: {n}" for (s, p), n in sorted(longest.items())) + ".\n")
    long = res.get("long")
    if long:
        lines.append(f"{long.get('label') or long.get('prompt_tokens')}-token SnapKV prefill on a "
                     f"{long.get('layers')}-layer model of the same shape: status {long.get('status')}, prefill "
                     f"{_fmt(long.get('prefill_s'), '.1f')} s "
                     f"({_fmt(long.get('prefill_tokens_per_s'), ',.0f')} tok/s), peak GPU "
                     f"{_fmt((long.get('peak_gpu_bytes') or 0) / GIB or None, '.2f')} GiB vs "
                     f"`snaptp inspect` plan {_fmt((long.get('plan_bytes') or 0) / GIB or None, '.2f')} "
                     f"GiB (the plan leaves out the CUDA context and cuBLAS workspace).\n")
    serve = res.get("serve")
    if serve and serve.get("rows"):
        lines.append(f"`snaptp serve` ({serve.get('client')}): {serve.get('prompt_tokens')}-token "
                     f"prompts, {serve.get('max_tokens')} tokens each, {serve.get('policy')}, "
                     f"server exit {serve.get('exit')}.\n")
        lines.append("| concurrency | status | output tok/s | TTFT p50 / p99 (s) | ITL p50 / p99 (ms) |")
        lines.append("|---:|---|---:|---|---|")
        for x in serve["rows"]:
            ms = lambda v: _fmt(v * 1000 if v is not None else None, ".1f")  # noqa: E731
            lines.append(f"| {x['concurrency']} | {x['status']} | {_fmt(x.get('output_tokens_per_s'), ',.1f')} | "
                         f"{_fmt(x.get('ttft_p50_s'), '.2f')} / {_fmt(x.get('ttft_p99_s'), '.2f')} | "
                         f"{ms(x.get('itl_p50_s'))} / {ms(x.get('itl_p99_s'))} |")
        lines.append("")
    for e in res.get("errors", []):
        lines.append(f"- error: {e}")
    return "\n".join(lines) + "\n"


def merge(results):
    """One results dict from several device calls (rows concatenated; the first
    call's bandwidth and model are kept)."""
    out = {"meta": {"phase": "+".join(r.get("meta", {}).get("phase", "?") for r in results),
                    "gpu": results[0].get("meta", {}).get("gpu"),
                    "date": results[0].get("meta", {}).get("date")},
           "rows": [], "errors": []}
    for r in results:
        for k in ("hbm", "model", "long", "serve", "steps", "checks"):
            if r.get(k) and not out.get(k):
                out[k] = r[k]
        out["rows"] += r.get("rows", [])
        out["errors"] += r.get("errors", [])
    return out


if __name__ == "__main__":
    res = [json.load(open(p)) for p in sys.argv[1:]]
    if not res:
        sys.exit("usage: report.py results.json [more.json ...]")
    print(table(merge(res) if len(res) > 1 else res[0]))
