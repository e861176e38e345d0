"""niah: needle-in-a-haystack on SmolLM2-135M-Instruct through `snaptp qa`, full KV vs SnapKV
budgets, over haystack lengths x needle depths. Writes bench/results/snapkv_niah.csv,
snapkv_niah.png (one heatmap per policy/budget) and snapkv_niah.md (summary tables).
Each run's JSON is kept in bench/out/snapkv/niah/ and reused (delete it, or --fresh, to redo)."""

import argparse
import csv
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import haystack  # noqa: E402

NEEDLE = "The secret passphrase for the vault is 'amber-falcon-7391'."
ANSWER = "amber-falcon-7391"
PARTS = ["amber", "falcon", "7391"]
QUESTION = "What is the secret passphrase for the vault? Reply with the passphrase only."


def score(answer):
    """(exact, partial, number): the passphrase as a whole; the share of its three parts; its
    number alone (case-insensitive)."""
    a = answer.lower()
    exact = 1 if ANSWER in a else 0
    partial = sum(1 for p in PARTS if re.search(r"\b%s\b" % p, a)) / len(PARTS)
    number = 1 if "7391" in a else 0
    return exact, round(partial, 3), number


def needle_token_pos(tc, document):
    """Index of the needle's first token in the qa prompt (None when BPE merged it away)."""
    ids = tc.ids(common.QA_USER_FMT % (document, QUESTION))
    for prefix in (" ", "\n\n", ""):
        sub = tc.ids(prefix + "The secret passphrase", chat=False)
        sub = sub[1:] if prefix == "\n\n" else sub  # the paragraph break is its own token
        for i in range(len(ids) - len(sub) + 1):
            if ids[i:i + len(sub)] == sub:
                return i
    return None


def build_documents(tc, length, depths, max_tokens, seed, n_ctx=8192):
    """One haystack per length (a prefix of the same seeded sentence stream), the needle at each
    depth; the filler is the longest that keeps the qa prompt within the target tokens
    (min(length, n_ctx - max_tokens)). Returns {depth: (document, prompt_tokens, needle_pos)}."""
    target = min(length, n_ctx - max_tokens)
    est = max(8, target // 16)
    sents = haystack.sentences(seed, est * 3)
    breaks = haystack.paragraph_breaks(seed, len(sents))

    def doc(n, depth):
        return haystack.compose(sents[:n], breaks, round(depth / 100.0 * n), NEEDLE)

    def fits(n, depth):
        return tc.prompt_tokens(doc(n, depth), QUESTION) <= target

    lo, hi = 1, len(sents)
    while lo < hi:  # the largest n that fits with the needle in the middle
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid, 50) else (lo, mid - 1)
    out = {}
    for depth in depths:
        n = lo
        while n > 1 and not fits(n, depth):
            n -= 1
        while n < len(sents) and fits(n + 1, depth):
            n += 1
        d = doc(n, depth)
        out[depth] = (d, tc.prompt_tokens(d, QUESTION), needle_token_pos(tc, d))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", default="1024,2048,4096,8192")
    ap.add_argument("--depths", default="0,25,50,75,100")
    common.add_grid_args(ap, "snapkv_niah", max_tokens=24, seed=2024)
    args = ap.parse_args()

    binary, model, tc, configs = common.apply_grid_args(args)
    lengths = [int(x) for x in args.lengths.split(",")]
    depths = [int(x) for x in args.depths.split(",")]
    doc_dir = os.path.join(common.RAW, "niah_docs")
    os.makedirs(doc_dir, exist_ok=True)

    rows = []
    for L in lengths:
        docs = build_documents(tc, L, depths, args.max_tokens, args.seed)
        for depth in depths:
            document, n_prompt, pos = docs[depth]
            path = os.path.join(doc_dir, "L%d_d%d_s%d.txt" % (L, depth, args.seed))
            with open(path, "w") as f:
                f.write(document)
            full_answer = None
            for policy, budget in configs:
                name = common.config_name(policy, budget)
                cmd = common.qa_command(binary, model, path, QUESTION, policy, budget,
                                        args.max_tokens, args.threads)
                key = "L%d_d%d_%s_%s" % (L, depth, name,
                                         common.short_hash(document, QUESTION, args.max_tokens,
                                                           args.threads))
                if args.max_load > 0:
                    common.wait_for_load(args.max_load, 900)
                rec = common.run_cached("niah", key, cmd, fresh=args.fresh)
                row = {"length": L, "depth_pct": depth, "policy": policy, "budget": budget,
                       "config": name, "prompt_tokens_planned": n_prompt,
                       "needle_token_pos": pos if pos is not None else "",
                       "load1_before": rec["load_before"][0]}
                if "error" in rec:
                    print("FAILED: %s\n  %s" % (common.shell_quote(cmd), rec["error"]),
                          file=sys.stderr)
                    row.update({"score": "", "partial": "", "number": "", "error": rec["error"]})
                    rows.append(row)
                    continue
                r = rec["result"][-1]
                ex, part, num = score(r["answer"])
                if policy == "full":
                    full_answer = r["answer"]
                row.update({
                    "score": ex, "partial": part, "number": num,
                    "same_as_full": "" if full_answer is None else int(r["answer"] == full_answer),
                    "prompt_tokens": r["prompt_tokens"], "prefill_s": round(r["prefill_s"], 3),
                    "prefill_tok_s": round(r["prefill_tokens_per_s"], 2),
                    "decode_tok_s": round(r["decode_tokens_per_s"], 2),
                    "kv_bytes": r["kv_bytes"], "kv_bytes_full": r["kv_bytes_full"],
                    "peak_rss_bytes": r["peak_rss_bytes"], "answer": r["answer"], "error": ""})
                rows.append(row)
                print("L=%-5d depth=%3d%% %-12s prompt=%d score=%d partial=%.2f load=%.2f "
                      "prefill=%.1fs  %r" % (L, depth, name, r["prompt_tokens"], ex, part,
                                             rec["load_before"][0], r["prefill_s"],
                                             r["answer"][:60]), file=sys.stderr)

    fields = ["length", "depth_pct", "policy", "budget", "config", "score", "partial", "number",
              "same_as_full", "prompt_tokens", "prompt_tokens_planned", "needle_token_pos",
              "prefill_s", "prefill_tok_s", "decode_tok_s", "kv_bytes", "kv_bytes_full",
              "peak_rss_bytes", "load1_before", "answer", "error"]
    csv_path = os.path.join(args.out_dir, "%s.csv" % args.prefix)
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    print("wrote", csv_path, file=sys.stderr)
    heatmap(rows, lengths, depths, configs, os.path.join(args.out_dir, "%s.png" % args.prefix))
    summary(rows, lengths, configs, args, os.path.join(args.out_dir, "%s.md" % args.prefix))


def heatmap(rows, lengths, depths, configs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(configs), figsize=(3.2 * len(configs) + 1, 3.6), squeeze=False)
    for ax, (policy, budget) in zip(axes[0], configs):
        name = common.config_name(policy, budget)
        grid = np.full((len(depths), len(lengths)), np.nan)
        text = [["" for _ in lengths] for _ in depths]
        for r in rows:
            if r["config"] != name or r["score"] == "":
                continue
            i, j = depths.index(r["depth_pct"]), lengths.index(r["length"])
            grid[i, j] = r["partial"]
            text[i][j] = "1" if r["score"] == 1 else ("%.2f" % r["partial"]).rstrip("0").rstrip(".")
        im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
        for i in range(len(depths)):
            for j in range(len(lengths)):
                ax.text(j, i, text[i][j], ha="center", va="center", fontsize=8)
        ok = [r["score"] for r in rows if r["config"] == name and r["score"] != ""]
        ax.set_title("%s: %.0f%%" % (name, 100.0 * sum(ok) / len(ok) if ok else float("nan")),
                     fontsize=10)
        ax.set_xticks(range(len(lengths)), [str(L) for L in lengths], fontsize=8)
        ax.set_yticks(range(len(depths)),
                      ["%d%%" % d for d in depths] if ax is axes[0][0] else [], fontsize=8)
        ax.set_xlabel("haystack (prompt tokens)", fontsize=8)
        if ax is axes[0][0]:
            ax.set_ylabel("needle depth", fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="partial credit (1 = exact)")
    fig.suptitle("Needle in a haystack, SmolLM2-135M-Instruct Q4_1, snaptp qa (greedy)",
                 fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    print("wrote", path, file=sys.stderr)


def _mean(xs):
    xs = [x for x in xs if x != ""]
    return sum(xs) / len(xs) if xs else float("nan")


def summary(rows, lengths, configs, args, path):
    names = [common.config_name(p, b) for p, b in configs]
    loads = [r["load1_before"] for r in rows]
    lines = ["## Needle in a haystack (`bench/snapkv/niah.py`)", "",
             "Units: score = %% of cells whose answer contains '%s' (greedy, --max-tokens %d); "
             "partial: mean share of its 3 parts (amber, falcon, 7391) in the answer; number: %% "
             "of answers with 7391; same as full: %% of answers identical to full KV's answer. "
             "Lengths %s tokens (prompt incl. chat template; the 8K row is %d tokens at most so "
             "prompt + answer fit the 8192 context), depths %s%%. SnapKV window %d, kernel %d, %s "
             "pooling. Threads %d. 1-min load before runs: min %.2f, mean %.2f, max %.2f." % (
                 ANSWER, args.max_tokens, ",".join(map(str, lengths)), 8192 - args.max_tokens,
                 args.depths, common.WINDOW, common.KERNEL, common.POOLING, args.threads,
                 min(loads), sum(loads) / len(loads), max(loads)), "",
             "| config | score % | partial % | number % | same as full % | cells |",
             "|---|---:|---:|---:|---:|---:|"]
    for n in names:
        rs = [r for r in rows if r["config"] == n and r["score"] != ""]
        same = "" if n == "full" else "%.0f" % (100 * _mean([r.get("same_as_full", "") for r in rs]))
        lines.append("| %s | %.0f | %.0f | %.0f | %s | %d |" % (
            n, 100 * _mean([r["score"] for r in rs]), 100 * _mean([r["partial"] for r in rs]),
            100 * _mean([r["number"] for r in rs]), same or "-", len(rs)))
    lines += ["", "Score % (exact) per length; partial % in parentheses:", "",
              "| length | actual prompt tokens | " + " | ".join(names) + " |",
              "|---:|---|" + "---:|" * len(names)]
    for L in lengths:
        toks = sorted({r.get("prompt_tokens") for r in rows if r["length"] == L and r.get("prompt_tokens")})
        cells = []
        for n in names:
            rs = [r for r in rows if r["config"] == n and r["length"] == L and r["score"] != ""]
            cells.append("%.0f (%.0f)" % (100 * _mean([r["score"] for r in rs]),
                                          100 * _mean([r["partial"] for r in rs])))
        lines.append("| %d | %s | %s |" % (L, "%d-%d" % (toks[0], toks[-1]) if toks else "?",
                                           " | ".join(cells)))
    lines += ["", "Prefill and decode speed per length (mean over depths; s and tokens/s; taken "
              "under varying load from other work on the 2 cores, so indicative only: the speed "
              "section has controlled numbers), KV cache after the answer and peak RSS (MiB):", "",
              "| length | config | prefill s | decode tok/s | KV MiB | full KV MiB | peak RSS MiB |",
              "|---:|---|---:|---:|---:|---:|---:|"]
    for L in lengths:
        for n in names:
            rs = [r for r in rows if r["config"] == n and r["length"] == L and r["score"] != ""]
            if not rs:
                continue
            lines.append("| %d | %s | %.1f | %.1f | %.1f | %.1f | %.0f |" % (
                L, n, _mean([r["prefill_s"] for r in rs]), _mean([r["decode_tok_s"] for r in rs]),
                _mean([r["kv_bytes"] for r in rs]) / 2**20,
                _mean([r["kv_bytes_full"] for r in rs]) / 2**20,
                _mean([r["peak_rss_bytes"] for r in rs]) / 2**20))
    failed = [r for r in rows if r.get("error")]
    if failed:
        lines += ["", "Failed runs: %d (see the CSV's error column)." % len(failed)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote", path, file=sys.stderr)


if __name__ == "__main__":
    main()
