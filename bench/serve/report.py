#!/usr/bin/env python3
"""report: bench/serve/run.sh's GuideLLM results as one table, CSV/JSON and a plot.

Reads RAW/<system>.c<level>.json (GuideLLM 0.3 reports), writes
bench/results/serve/serve.{json,csv,png} and bench/results/serve.md.
"""
import argparse
import csv
import datetime
import json
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def metrics(path):
    b = json.load(open(path))["benchmarks"][0]
    m = b["metrics"]
    ok = lambda k: m[k]["successful"]  # noqa: E731
    done = b["request_totals"]["successful"] if "request_totals" in b else None
    return dict(
        requests=done,
        errored=b["request_totals"].get("errored") if "request_totals" in b else None,
        duration_s=b.get("duration"),
        requests_per_s=ok("requests_per_second")["mean"],
        output_tokens_per_s=ok("output_tokens_per_second")["mean"],
        prompt_tokens_mean=ok("prompt_token_count")["mean"],
        output_tokens_mean=ok("output_token_count")["mean"],
        ttft_p50_ms=ok("time_to_first_token_ms")["percentiles"]["p50"],
        ttft_p99_ms=ok("time_to_first_token_ms")["percentiles"]["p99"],
        itl_p50_ms=ok("inter_token_latency_ms")["percentiles"]["p50"],
        itl_p99_ms=ok("inter_token_latency_ms")["percentiles"]["p99"],
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--systems", required=True)
    ap.add_argument("--levels", required=True)
    ap.add_argument("--meta", default="")
    ap.add_argument("--note", default="", help="a paragraph added under the header")
    a = ap.parse_args()
    meta = dict(kv.split("=", 1) for kv in a.meta.split())
    rows = []
    for s in a.systems.split(","):
        for c in a.levels.split(","):
            p = Path(a.raw) / f"{s}.c{c}.json"
            if p.exists():
                rows.append(dict(system=s, concurrency=int(c), **metrics(p)))
    out = ROOT / "bench/results/serve"
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    with open(out / "serve.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    for s in a.systems.split(","):
        rs = [r for r in rows if r["system"] == s]
        if not rs:
            continue
        x = [r["concurrency"] for r in rs]
        ax[0].plot(x, [r["output_tokens_per_s"] for r in rs], marker="o", label=s)
        ax[1].plot(x, [r["itl_p99_ms"] for r in rs], marker="o", label=s)
        ax[2].plot(x, [r["ttft_p50_ms"] / 1000 for r in rs], marker="o", label=s)
    for i, t in enumerate(["output tokens/s", "ITL p99 (ms)", "TTFT p50 (s)"]):
        ax[i].set_xscale("log", base=2)
        ax[i].set_xticks([int(c) for c in a.levels.split(",")])
        ax[i].get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax[i].set_xlabel("concurrency")
        ax[i].set_title(t)
        ax[i].grid(alpha=0.3)
    ax[1].set_yscale("log")
    ax[0].legend()
    fig.suptitle(f"SmolLM2-135M Q4_1, {meta.get('prompt_tokens')}-token prompts, "
                 f"{meta.get('output_tokens')} output tokens, {meta.get('threads')} threads "
                 f"({meta.get('backend')}), GuideLLM 0.3.1")
    fig.tight_layout()
    fig.savefig(out / "serve.png", dpi=110)

    lines = [
        "# Serving: snaptp serve (full, SnapKV) against llama.cpp's llama-server",
        "",
        f"`bash bench/serve/run.sh` ({meta.get('wall_s')} s), {datetime.date.today()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, commit "
        f"{meta.get('commit')}. Client: GuideLLM 0.3.1 (`guidellm benchmark run --rate-type "
        f"concurrent`), synthetic prompts of {meta.get('prompt_tokens')} tokens in SmolLM2's "
        f"tokenizer, {meta.get('output_tokens')} output tokens with `ignore_eos`, requests per "
        f"level {meta.get('requests')}. Both servers: the same GGUF "
        f"(SmolLM2-135M-Instruct Q4_1), {meta.get('threads')} threads pinned to cores "
        f"{meta.get('server_cpus')} (GuideLLM on cores {meta.get('client_cpus')}: at "
        f"concurrency 16 it takes more than a core, which it would otherwise take from the "
        f"server), as many sequences or "
        f"slots as the top concurrency; snaptp's SnapKV keeps {meta.get('budget')} rows per KV "
        f"head. One run each (no repetitions: the spread is not measured).",
        *(["", a.note] if a.note else []),
        "",
        "| system | concurrency | requests | req/s | output tok/s | TTFT p50 (s) | TTFT p99 (s) "
        "| ITL p50 (ms) | ITL p99 (ms) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['system']} | {r['concurrency']} | {r['requests']} | "
                     f"{r['requests_per_s']:.3f} | {r['output_tokens_per_s']:.1f} | "
                     f"{r['ttft_p50_ms'] / 1000:.2f} | {r['ttft_p99_ms'] / 1000:.2f} | "
                     f"{r['itl_p50_ms']:.1f} | {r['itl_p99_ms']:.1f} |")
    by = {(r["system"], r["concurrency"]): r for r in rows}
    top = max(int(c) for c in a.levels.split(","))
    sk, ls = by.get(("snaptp-snapkv", top)), by.get(("llama-server", top))
    if sk and ls:
        lines += ["", f"At concurrency {top}: snaptp SnapKV gives "
                  f"{sk['output_tokens_per_s'] / ls['output_tokens_per_s']:.2f}x llama-server's "
                  f"output tokens/s, with ITL p99 {sk['itl_p99_ms']:.0f} ms against "
                  f"{ls['itl_p99_ms']:.0f} ms (the issue's goal: at least 2x, with lower p99 ITL)."]
    lines += ["", "![serving throughput](serve/serve.png)", "",
              "Raw GuideLLM reports: `bench/out/serve/` (not committed); these rows: "
              "`bench/results/serve/serve.json` and `.csv`."]
    (ROOT / "bench/results/serve.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
