"""speed: prefill and decode tokens/s of `snaptp bench` on SmolLM2-135M-Instruct at long context,
full KV vs SnapKV (one budget), one process per (policy, length), started when the load is low.
Writes bench/results/snapkv_speed.csv and snapkv_speed.md; raw JSON in bench/out/snapkv/speed/."""

import argparse
import csv
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from memory import bench_command  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", default="2048,4096,8000")
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-load", type=float, default=1.0,
                    help="wait (up to --max-wait s) before each run while the 1-min load is above this")
    ap.add_argument("--max-wait", type=int, default=900)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--out-dir", default=common.RESULTS)
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    binary, model = common.snaptp_bin(), common.model_path()
    rows, cmds = [], []
    for L in [int(x) for x in args.lengths.split(",")]:
        for policy in ("full", "snapkv"):  # alternate, so a load change hits both alike
            cmd = bench_command(binary, model, L, args.gen_tokens, args.repeat, args.threads,
                                policy, args.budget)
            if args.max_load > 0:
                common.wait_for_load(args.max_load, args.max_wait)
            rec = common.run_cached("speed", "%s_L%d_%s" % (policy, L, common.short_hash(*cmd)),
                                    cmd, fresh=args.fresh)
            cmds.append(common.shell_quote(cmd))
            if "error" in rec:
                print("FAILED: %s\n  %s" % (common.shell_quote(cmd), rec["error"]), file=sys.stderr)
                continue
            r = rec["result"][-1]
            rows.append({"policy": policy, "budget": args.budget if policy == "snapkv" else 0,
                         "prompt_tokens": L, "gen_tokens": args.gen_tokens, "repeat": args.repeat,
                         "threads": args.threads,
                         "prefill_tok_s": round(r["prefill_tokens_per_s"], 2),
                         "prefill_tok_s_std": round(r["prefill_tokens_per_s_std"], 2),
                         "decode_tok_s": round(r["decode_tokens_per_s"], 2),
                         "decode_tok_s_std": round(r["decode_tokens_per_s_std"], 2),
                         "kv_bytes": r["kv_bytes"], "load1_before": rec["load_before"][0],
                         "load1_after": rec["load_after"][0], "wall_s": round(rec["wall_s"], 1)})
            print("%-6s L=%-5d pp=%.1f tg=%.2f load %.2f -> %.2f" % (
                policy, L, r["prefill_tokens_per_s"], r["decode_tokens_per_s"],
                rec["load_before"][0], rec["load_after"][0]), file=sys.stderr)

    path = os.path.join(args.out_dir, "snapkv_speed.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["policy"])
        w.writeheader()
        for r in rows:
            w.writerow(r)
    print("wrote", path, file=sys.stderr)

    loads = [r["load1_before"] for r in rows] + [r["load1_after"] for r in rows]
    out = ["## Decode and prefill speed at long context (`bench/snapkv/speed.py`)", "",
           "Units: tokens/s, mean ± std over %d repeats in one process (each: prefill the prompt, "
           "then decode %d tokens greedily); random token ids; %d threads; SnapKV budget %d, "
           "window %d, kernel %d, %s pooling. Each run started when the 1-min load was <= %.1f (or "
           "after %d s of waiting); 1-min load before/after runs: min %.2f, max %.2f." % (
               args.repeat, args.gen_tokens, args.threads, args.budget, common.WINDOW,
               common.KERNEL, common.POOLING, args.max_load, args.max_wait, min(loads or [0]),
               max(loads or [0])), "",
           "| prompt tokens | policy | prefill tok/s | decode tok/s | KV MiB | load before -> after |",
           "|---:|---|---:|---:|---:|---|"]
    for r in rows:
        out.append("| %d | %s | %.1f ± %.1f | %.2f ± %.2f | %.1f | %.2f -> %.2f |" % (
            r["prompt_tokens"], "full" if r["policy"] == "full" else "snapkv-%d" % r["budget"],
            r["prefill_tok_s"], r["prefill_tok_s_std"], r["decode_tok_s"], r["decode_tok_s_std"],
            r["kv_bytes"] / 2**20, r["load1_before"], r["load1_after"]))
    by = {(r["policy"], r["prompt_tokens"]): r for r in rows}
    ratio = ["%d: %.2fx" % (L, by[("snapkv", L)]["decode_tok_s"] / by[("full", L)]["decode_tok_s"])
             for (p, L) in sorted(by) if p == "full" and ("snapkv", L) in by]
    if ratio:
        out += ["", "Decode speedup snapkv / full by prompt tokens: " + ", ".join(ratio) + "."]
    out += ["", "Commands:", "", "```"] + cmds + ["```"]
    path = os.path.join(args.out_dir, "snapkv_speed.md")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    print("wrote", path, file=sys.stderr)


if __name__ == "__main__":
    main()
