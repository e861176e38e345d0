"""report: turns bench/tp/run.sh's raw outputs (bench/out/tp/*.json, *.meta) into
bench/results/tp_bench.csv and bench/results/tp.md (tokens/s at tp=1 and tp=N, the parallel
efficiency, and the all-reduce counts and bytes from `snaptp generate --json`)."""

import argparse
import csv
import datetime
import glob
import json
import os
import re


def load(raw, name):
    path = os.path.join(raw, name + ".json")
    meta = {}
    if os.path.exists(os.path.join(raw, name + ".meta")):
        for line in open(os.path.join(raw, name + ".meta")):
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    objs = []
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                try:
                    objs.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return objs, meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--machine", default="")
    ap.add_argument("--bin", default="")
    ap.add_argument("--max-load", default="1.0")
    ap.add_argument("--max-wait", default="900")
    a = ap.parse_args()

    rows, failures, cmds, loads = [], [], [], []
    models = [("llama768", "random Llama (hidden 768, 12 q / 4 KV heads, 12 layers, MLP 2048, "
               "vocab 32000, bf16 safetensors)", 2),
              ("smollm2", "SmolLM2-135M-Instruct Q4_1 GGUF (9 q / 3 KV heads, 30 layers)", 3)]
    for tag, desc, np_ in models:
        for tp, threads in ((1, 1), (1, 2), (np_, 1)):
            name = "%s_tp%d_t%d" % (tag, tp, threads)
            objs, meta = load(a.raw, name)
            if meta.get("cmd"):
                cmds.append(meta["cmd"].strip())
            if meta.get("rc") != "0" or not objs:
                failures.append("%s: rc %s: %s" % (name, meta.get("rc", "?"), open(
                    os.path.join(a.raw, name + ".err")).read().strip()[-400:]
                    if os.path.exists(os.path.join(a.raw, name + ".err")) else "no output"))
                continue
            for key in ("load_before", "load_after"):
                if meta.get(key):
                    loads.append(float(meta[key].split()[0]))
            for o in objs:
                rows.append({"model": tag, "tp": o.get("tp", tp), "threads_per_rank": threads,
                             "ranks": tp, "cores_used": min(2, tp * threads),
                             "prompt_tokens": o["prompt_tokens"], "gen_tokens": o["gen_tokens"],
                             "repeat": o["repeat"],
                             "prefill_tok_s": round(o["prefill_tokens_per_s"], 2),
                             "prefill_tok_s_std": round(o["prefill_tokens_per_s_std"], 2),
                             "decode_tok_s": round(o["decode_tokens_per_s"], 2),
                             "decode_tok_s_std": round(o["decode_tokens_per_s_std"], 2),
                             "peak_rss_bytes_rank0": o.get("peak_rss_bytes", ""),
                             "load_before": meta.get("load_before", ""),
                             "load_after": meta.get("load_after", "")})
    os.makedirs(a.out_dir, exist_ok=True)
    with open(os.path.join(a.out_dir, "tp_bench.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["model"])
        w.writeheader()
        for r in rows:
            w.writerow(r)

    date = datetime.date.today().isoformat()
    lo = "%.2f-%.2f" % (min(loads), max(loads)) if loads else "?"
    out = ["# Tensor-parallel overhead on the CPU backend (`bench/tp/run.sh`)",
           "# units: tokens/s, mean ± std over the repeats of one process; speedup = tp=N tokens/s "
           "over tp=1 (1 thread) tokens/s; efficiency = speedup / ranks",
           "# machine: %s, 2 cores; Open MPI shared memory (btl self,vader); date %s" % (a.machine, date),
           "# 1-min load average before/after the runs: %s (each run first waited, up to %s s, for "
           "load <= %s)" % (lo, a.max_wait, a.max_load),
           "", "Every rank runs one thread (--threads 1), so tp=2 uses both "
           "cores and tp=1 (1 thread) one: a perfect split would double tokens/s. tp=1 with 2 "
           "threads is the same-cores reference (the thread pool inside one process instead of two ranks "
           "joined by all-reduce). SmolLM2's 9 heads do not split over 2 ranks (snaptp refuses "
           "tp=2 naming the head counts), so it runs at tp=3: **3 ranks on 2 cores is "
           "oversubscribed**, one rank always waits for a core; its numbers measure the "
           "oversubscription as much as the collectives. Random token ids; prompt and decode "
           "in one process per configuration (`snaptp bench`).", ""]
    for tag, desc, np_ in models:
        rs = [r for r in rows if r["model"] == tag]
        if not rs:
            continue
        out += ["## %s" % desc, "",
                "| prompt tokens | config | prefill tok/s | decode tok/s | prefill speedup | "
                "decode speedup | decode efficiency |", "|---:|---|---:|---:|---:|---:|---:|"]
        for L in sorted({r["prompt_tokens"] for r in rs}):
            base = [r for r in rs if r["prompt_tokens"] == L and r["ranks"] == 1 and
                    r["threads_per_rank"] == 1]
            base = base[0] if base else None
            for r in sorted([r for r in rs if r["prompt_tokens"] == L],
                            key=lambda r: (r["ranks"], r["threads_per_rank"])):
                cfg = "tp=%d, %d thread%s/rank" % (r["ranks"], r["threads_per_rank"],
                                                   "s" if r["threads_per_rank"] > 1 else "")
                sp = sd = eff = "-"
                if base and r is not base:
                    sp = "%.2fx" % (r["prefill_tok_s"] / base["prefill_tok_s"])
                    sd = "%.2fx" % (r["decode_tok_s"] / base["decode_tok_s"])
                    eff = "%.0f%%" % (100 * r["decode_tok_s"] / base["decode_tok_s"] /
                                      (r["ranks"] * r["threads_per_rank"]))
                out.append("| %d | %s | %.1f ± %.1f | %.2f ± %.2f | %s | %s | %s |" % (
                    L, cfg, r["prefill_tok_s"], r["prefill_tok_s_std"], r["decode_tok_s"],
                    r["decode_tok_s_std"], sp, sd, eff))
        # collectives from generate --json
        coll = []
        for gname in sorted(glob.glob(os.path.join(a.raw, "%s_gen_tp*.json" % tag))):
            objs, meta = load(a.raw, os.path.basename(gname)[:-5])
            if meta.get("cmd"):
                cmds.append(meta["cmd"].strip())
            if objs and "collectives" in objs[-1]:
                o = objs[-1]
                c = o["collectives"]
                coll.append("| %d | %d | %d | %d | %d | %s | %d | %.1f | %.2f |" % (
                    o["tp"], o["prompt_tokens"], c["prefill_allreduce_calls"],
                    c["prefill_allreduce_bytes"], c["decode_allreduce_calls"],
                    c["allreduce_per_layer_per_token"], c["allreduce_bytes_per_token"],
                    o["prefill_tokens_per_s"], o["decode_tokens_per_s"]))
        if coll:
            out += ["", "All-reduces from `snaptp generate --json` (16 new tokens, 1 thread per "
                    "rank; bytes are fp32 hidden states):", "",
                    "| tp | prompt tokens | prefill all-reduces | prefill bytes | decode all-reduces "
                    "| per layer per token | bytes per token | prefill tok/s | decode tok/s |",
                    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"] + coll
        out.append("")
    if failures:
        out += ["Failed runs:", ""] + ["- " + f for f in failures] + [""]
    out += ["Commands as run (mpirun flags from tests/mpi_env.sh):", "", "```"]
    out += cmds + ["```", ""]
    with open(os.path.join(a.out_dir, "tp.md"), "w") as f:
        f.write("\n".join(out))
    print("wrote", os.path.join(a.out_dir, "tp.md"))


if __name__ == "__main__":
    main()
