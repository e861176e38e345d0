"""memory: peak memory and KV bytes of `snaptp bench` on SmolLM2-135M-Instruct, full KV vs SnapKV
(one budget), one process per (policy, length) since peak RSS is per process. Records snaptp's
peak_rss_bytes (ru_maxrss) and, sampled from /proc every 20 ms, the peak RssAnon (the run's own
allocations, without the GGUF's transient file pages); fits the growth per prompt token and
compares it with `snaptp inspect`'s plan. Writes bench/results/snapkv_memory.csv and
snapkv_memory.md; raw JSON in bench/out/snapkv/memory/."""

import argparse
import csv
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

MIB = 1024.0 * 1024.0
PLAN_ITEMS = {"weights": "weights", "hidden states": "hidden", "one layer's K/V": "layer_kv",
              "KV cache (decode)": "kv_cache", "workspace": "workspace", "total": "total"}


def bench_command(binary, model, L, gen, repeat, threads, policy, budget):
    cmd = [binary, "bench", "--model", model, "--prompt-tokens", str(L), "--gen-tokens", str(gen),
           "--repeat", str(repeat), "--threads", str(threads), "--kv-policy", policy, "--json"]
    if policy == "snapkv":
        cmd += ["--budget", str(budget), "--window", str(common.WINDOW),
                "--kernel", str(common.KERNEL), "--pooling", common.POOLING]
    return cmd


def inspect_plan(binary, model, L, gen, policy, budget):
    """snaptp inspect's memory plan in bytes, by item (plan MiB values are rounded to 0.1)."""
    cmd = [binary, "inspect", "--model", model, "--prompt-tokens", str(L), "--max-tokens",
           str(gen), "--kv-policy", policy, "--budget", str(budget)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError("%s: %s" % (common.shell_quote(cmd), out.stderr.strip()))
    plan = {}
    for line in out.stdout.splitlines():
        m = re.match(r"\s+(.+?)\s+([0-9.]+)$", line)
        if m and m.group(1) in PLAN_ITEMS:
            plan[PLAN_ITEMS[m.group(1)]] = float(m.group(2)) * MIB
    return plan, cmd


def fit(xs, ys):
    """Least-squares slope and intercept."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else float("nan")
    return slope, my - slope * mx


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", default="2048,4096,6144,8000")
    ap.add_argument("--gen-tokens", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-load", type=float, default=0)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--out-dir", default=common.RESULTS)
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    binary, model = common.snaptp_bin(), common.model_path()
    lengths = [int(x) for x in args.lengths.split(",")]
    rows, cmds = [], []
    # Baseline process: the model loaded, a 1-token prompt, one decode step.
    base_cmd = bench_command(binary, model, 0, 1, 1, args.threads, "full", 0)
    rec = common.run_cached("memory", "base_" + common.short_hash(*base_cmd), base_cmd,
                            fresh=args.fresh, poll_rss=True)
    base_rss = rec["result"][-1]["peak_rss_bytes"] if "error" not in rec else float("nan")
    base_anon = rec["polled"]["max_rss_anon_bytes"] if "error" not in rec else float("nan")
    cmds.append(common.shell_quote(base_cmd))
    for policy in ("full", "snapkv"):
        for L in lengths:
            cmd = bench_command(binary, model, L, args.gen_tokens, args.repeat, args.threads,
                                policy, args.budget)
            if args.max_load > 0:
                common.wait_for_load(args.max_load, 1800)
            rec = common.run_cached("memory", "%s_L%d_%s" % (policy, L, common.short_hash(*cmd)),
                                    cmd, fresh=args.fresh, poll_rss=True)
            cmds.append(common.shell_quote(cmd))
            if "error" in rec:
                print("FAILED: %s\n  %s" % (common.shell_quote(cmd), rec["error"]), file=sys.stderr)
                continue
            r = rec["result"][-1]
            plan, icmd = inspect_plan(binary, model, L, args.gen_tokens, policy, args.budget)
            rows.append({"policy": policy, "budget": args.budget if policy == "snapkv" else 0,
                         "prompt_tokens": L, "gen_tokens": args.gen_tokens, "repeat": args.repeat,
                         "peak_rss_bytes": r["peak_rss_bytes"],
                         "polled_peak_anon_bytes": rec["polled"]["max_rss_anon_bytes"],
                         "polled_peak_vmrss_bytes": rec["polled"]["max_vmrss_bytes"],
                         "kv_bytes": r["kv_bytes"],
                         "prefill_tok_s": round(r["prefill_tokens_per_s"], 2),
                         "prefill_tok_s_std": round(r["prefill_tokens_per_s_std"], 2),
                         "decode_tok_s": round(r["decode_tokens_per_s"], 2),
                         "decode_tok_s_std": round(r["decode_tokens_per_s_std"], 2),
                         "plan_total_bytes": round(plan.get("total", 0)),
                         "plan_hidden_bytes": round(plan.get("hidden", 0)),
                         "plan_layer_kv_bytes": round(plan.get("layer_kv", 0)),
                         "plan_kv_cache_bytes": round(plan.get("kv_cache", 0)),
                         "plan_workspace_bytes": round(plan.get("workspace", 0)),
                         "plan_weights_bytes": round(plan.get("weights", 0)),
                         "load1_before": rec["load_before"][0], "load1_after": rec["load_after"][0],
                         "wall_s": round(rec["wall_s"], 1)})
            print("%-6s L=%-5d peak=%.1f MiB anon=%.1f MiB kv=%.1f MiB plan=%.1f MiB pp=%.1f tg=%.2f load=%.2f" % (
                policy, L, r["peak_rss_bytes"] / MIB,
                rec["polled"]["max_rss_anon_bytes"] / MIB, r["kv_bytes"] / MIB,
                plan.get("total", 0) / MIB, r["prefill_tokens_per_s"], r["decode_tokens_per_s"],
                rec["load_before"][0]), file=sys.stderr)

    fields = list(rows[0].keys()) if rows else ["policy"]
    path = os.path.join(args.out_dir, "snapkv_memory.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    print("wrote", path, file=sys.stderr)
    write_md(rows, base_rss, base_anon, cmds, args, binary, model,
             os.path.join(args.out_dir, "snapkv_memory.md"))


def write_md(rows, base_rss, base_anon, cmds, args, binary, model, path):
    loads = [r["load1_before"] for r in rows] or [float("nan")]
    out = ["## Peak memory vs prompt length (`bench/snapkv/memory.py`)", "",
           "Units: MiB = 2^20 bytes, bytes/token. peak RSS = snaptp's `peak_rss_bytes` "
           "(ru_maxrss); peak anon = the largest RssAnon of the process, sampled from /proc every "
           "20 ms (the CPU backend uses the GGUF's mapped pages in place: RSS counts those file "
           "pages, the weights, and anon does not; builds before that copied the weights at load "
           "and held a load-time peak of about weights x 2 in ru_maxrss); KV = the decode cache after %d generated tokens (`kv_bytes`); "
           "plan = `snaptp inspect --max-tokens %d` total. SnapKV budget %d, window %d, kernel %d, "
           "%s pooling. %d threads, random token ids, one process per row. A process with a 1-token "
           "prompt peaks at %.1f MiB RSS, %.1f MiB anon. 1-min load before runs: min %.2f, mean "
           "%.2f, max %.2f (memory does not depend on load)." % (
               args.gen_tokens, args.gen_tokens, args.budget, common.WINDOW, common.KERNEL,
               common.POOLING, args.threads, base_rss / MIB, base_anon / MIB, min(loads),
               sum(loads) / len(loads), max(loads)), "",
           "| policy | prompt tokens | peak RSS MiB | peak anon MiB | plan MiB | plan: hidden + "
           "layer K/V + KV cache MiB | KV MiB |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        name = "full" if r["policy"] == "full" else "snapkv-%d" % r["budget"]
        out.append("| %s | %d | %.1f | %.1f | %.1f | %.1f + %.1f + %.1f | %.1f |" % (
            name, r["prompt_tokens"], r["peak_rss_bytes"] / MIB,
            r["polled_peak_anon_bytes"] / MIB, r["plan_total_bytes"] / MIB,
            r["plan_hidden_bytes"] / MIB, r["plan_layer_kv_bytes"] / MIB,
            r["plan_kv_cache_bytes"] / MIB, r["kv_bytes"] / MIB))
    out += ["", "Growth per prompt token (least-squares slope over the lengths above), bytes/token. "
            "Expected from the model (fp32 activations): hidden states 576 x 4 = 2304; one "
            "layer's K/V 2 x 3 KV heads x 64 x 4 = 1536; all 30 layers' K/V 46080. So full "
            "~ 2304 + 46080 = 48384, snapkv ~ 2304 + 1536 = 3840 (+ 48 of vote scratch).", "",
            "| policy | peak anon slope | peak RSS slope | plan total slope | KV cache slope | "
            "expected |", "|---|---:|---:|---:|---:|---:|"]
    for policy, expect in (("full", 48384), ("snapkv", 3840)):
        rs = [r for r in rows if r["policy"] == policy]
        if len(rs) < 2:
            continue
        xs = [r["prompt_tokens"] for r in rs]
        s_anon = fit(xs, [r["polled_peak_anon_bytes"] for r in rs])[0]
        s_rss = fit(xs, [r["peak_rss_bytes"] for r in rs])[0]
        s_plan = fit(xs, [r["plan_total_bytes"] for r in rs])[0]
        s_kv = fit(xs, [r["kv_bytes"] for r in rs])[0]
        out.append("| %s | %.0f | %.0f | %.0f | %.0f | %d |" % (policy, s_anon, s_rss, s_plan,
                                                             s_kv, expect))
    fulls = {r["prompt_tokens"]: r for r in rows if r["policy"] == "full"}
    snaps = {r["prompt_tokens"]: r for r in rows if r["policy"] == "snapkv"}
    common_l = sorted(set(fulls) & set(snaps))
    if common_l:
        out += ["", "SnapKV vs full at the same length:", "",
                "| prompt tokens | peak anon full / snapkv MiB | saved MiB | peak RSS full / "
                "snapkv MiB | KV full / snapkv MiB |", "|---:|---:|---:|---:|---:|"]
        for L in common_l:
            f, s = fulls[L], snaps[L]
            out.append("| %d | %.1f / %.1f | %.1f | %.1f / %.1f | %.1f / %.1f |" % (
                L, f["polled_peak_anon_bytes"] / MIB, s["polled_peak_anon_bytes"] / MIB,
                (f["polled_peak_anon_bytes"] - s["polled_peak_anon_bytes"]) / MIB,
                f["peak_rss_bytes"] / MIB, s["peak_rss_bytes"] / MIB, f["kv_bytes"] / MIB,
                s["kv_bytes"] / MIB))
    out += ["", "Commands (one process each):", "", "```"] + cmds + ["```"]
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    print("wrote", path, file=sys.stderr)


if __name__ == "__main__":
    main()
