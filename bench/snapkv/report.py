"""report: assembles bench/results/snapkv.md from the SnapKV benchmarks' outputs (snapkv_niah.*,
snapkv_lines.*, snapkv_memory.*, snapkv_speed.*, snapkv_hf_check.csv): a header with units,
machine, load, commands and date, a summary, then each benchmark's own section.
Usage: python bench/snapkv/report.py [--dir bench/results]"""

import argparse
import csv
import glob
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def mean(xs):
    xs = [float(x) for x in xs if x not in ("", None)]
    return sum(xs) / len(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=common.RESULTS)
    ap.add_argument("--quick", action="store_true", help="say that this is a smoke run")
    a = ap.parse_args()
    d = a.dir
    commit = subprocess.run(["git", "-C", common.REPO, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", common.REPO, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    binary = common.snaptp_bin()
    niah = read_csv(os.path.join(d, "snapkv_niah.csv"))
    lines = read_csv(os.path.join(d, "snapkv_lines.csv"))
    # The whole grids again with another pooling kernel (snapkv_niah_k<K>_grid.csv,
    # snapkv_lines_k<K>.csv from niah.py/lines.py --kernel K): their snapkv rows join the
    # summary (their full rows are the same cached runs as above).
    niah_grids = sorted(glob.glob(os.path.join(d, "snapkv_niah_k*_grid.csv")))
    lines_grids = sorted(glob.glob(os.path.join(d, "snapkv_lines_k*.csv")))
    niah_all = niah + [r for p in niah_grids for r in read_csv(p) if r["policy"] == "snapkv"]
    lines_all = lines + [r for p in lines_grids for r in read_csv(p) if r["policy"] == "snapkv"]
    mem = read_csv(os.path.join(d, "snapkv_memory.csv"))
    speed = read_csv(os.path.join(d, "snapkv_speed.csv"))
    hf = read_csv(os.path.join(d, "snapkv_hf_check.csv"))
    loads = [float(r["load1_before"]) for r in niah + lines + mem + speed if r.get("load1_before")]

    out = ["# SnapKV on SmolLM2-135M-Instruct (Q4_1 GGUF), snaptp CPU backend%s" %
           (" -- QUICK SMOKE RUN, not results" if a.quick else ""),
           "# date: %s; snaptp %s (commit %s%s); machine: %s" % (
               common.today(), binary, commit, ", working tree modified" if dirty else "",
               common.machine()),
           "# units: accuracy in % of questions; memory in MiB (2^20 B) and bytes/token; speed in "
           "tokens/s; times in s",
           "# 1-min load average before the runs: min %.2f, mean %.2f, max %.2f (2 cores shared "
           "with other work: accuracy does not depend on it; speed rows say their own load)" % (
               min(loads or [0]), mean(loads), max(loads or [0])),
           "# commands: `bash bench/snapkv/run_all.sh` runs niah.py, lines.py, memory.py, speed.py, "
           "hf_check.py and this report; each snaptp call is `snaptp qa --model M --document F "
           "--question Q --kv-policy full|snapkv [--budget C --window 32 --kernel 7 --pooling max] "
           "--max-tokens N --threads 2 --temperature 0 --json --quiet` or `snaptp bench` (listed "
           "in the memory and speed sections); the raw JSON of every run, with its exact command, "
           "is in bench/out/snapkv/<task>/",
           ""]

    # ---- summary
    out += ["## Summary", ""]
    if niah or lines:
        names = []
        for r in niah_all + lines_all:
            if r["config"] not in names:
                names.append(r["config"])
        out += ["Accuracy (% exact answers), averaged over each grid (needle: 5 depths x 4 "
                "lengths; lines: 5 targets x 4 lengths), with the needle's partial credit and the "
                "share of answers identical to full KV's. Rows ending in -w32-kK-max use pooling "
                "kernel K instead of snaptp's default 7 (same documents and questions; a dash: "
                "not run):", "",
                "| config | needle | needle partial | line retrieval | "
                "same answer as full (needle / lines) |", "|---|---:|---:|---:|---:|"]
        for n in names:
            nr = [r for r in niah_all if r["config"] == n and r["score"] != ""]
            lr = [r for r in lines_all if r["config"] == n and r["score"] != ""]
            def pct(rows, key):
                return "%.0f" % (100 * mean([r[key] for r in rows])) if rows else "-"
            same = "-" if n == "full" else "%s / %s" % (pct(nr, "same_as_full"),
                                                        pct(lr, "same_as_full"))
            out.append("| %s | %s | %s | %s | %s |" % (
                n, pct(nr, "score"), pct(nr, "partial"), pct(lr, "score"), same))
        lengths = sorted({int(r["length"]) for r in niah_all})
        if lengths:
            out += ["", "Needle score per length (%):", "",
                    "| config | " + " | ".join(str(L) for L in lengths) + " |",
                    "|---|" + "---:|" * len(lengths)]
            for n in names:
                out.append("| %s | %s |" % (n, " | ".join(
                    "%.0f" % (100 * mean([r["score"] for r in niah_all if r["config"] == n and
                                          int(r["length"]) == L and r["score"] != ""]))
                    for L in lengths)))
        out.append("")
    if hf:
        out += ["Cross-check against the published algorithm on Hugging Face transformers "
                "(`hf_check.py`: fp32, SmolLM2 from the same GGUF, the same prompt ids; "
                "tests/gen_snapkv_golden.py's reference): where snaptp's SnapKV answer differs "
                "from full KV's, does the reference differ the same way?", "",
                "| document | prompt tokens | budget | HF full | HF SnapKV | snaptp SnapKV |",
                "|---|---:|---:|---|---|---|"]
        for r in hf:
            doc = r["document"]
            L, dep = doc.split("_")[0][1:], doc.split("_")[1][1:]
            sn = [x for x in niah if x["length"] == L and x["depth_pct"] == dep and
                  x["config"] == "snapkv-%s" % r["budget"]]
            out.append("| %s | %s | %s | %s | %s | %s |" % (
                doc, r["prompt_tokens"], r["budget"], r["hf_full_answer"], r["hf_snapkv_answer"],
                sn[0]["answer"] if sn else "?"))
        out += ["", "Needle tokens kept by the reference, per layer (layer:min/mean over the 3 KV "
                "heads, of the needle's tokens):", ""]
        for r in hf:
            out.append("- %s, budget %s: %s" % (r["document"], r["budget"],
                                                r["needle_kept_per_layer_min_mean"]))
        out.append("")
    variants = []
    for vp in sorted(glob.glob(os.path.join(d, "snapkv_niah_*.csv"))):
        if vp.endswith("_grid.csv"):
            continue
        variants += [r for r in read_csv(vp) if r["policy"] == "snapkv"]
    if variants:
        vl = sorted({int(r["length"]) for r in variants})
        base = [r for r in niah if r["policy"] == "snapkv" and int(r["length"]) in vl and
                r["budget"] in {v["budget"] for v in variants}]
        out += ["Needle score with other SnapKV settings (`niah.py --window/--kernel/--pooling`, "
                "same documents; exact score %, partial % in parentheses; the first rows are the "
                "defaults above):", "",
                "| config | " + " | ".join(str(L) for L in vl) + " | all |",
                "|---|" + "---:|" * (len(vl) + 1)]
        names = []
        for r in base + variants:
            if r["config"] not in names:
                names.append(r["config"])
        for n in names:
            rs = [r for r in base + variants if r["config"] == n and r["score"] != ""]
            cells = ["%.0f (%.0f)" % (100 * mean([r["score"] for r in rs if int(r["length"]) == L]),
                                      100 * mean([r["partial"] for r in rs if int(r["length"]) == L]))
                     for L in vl]
            out.append("| %s | %s | %.0f (%.0f) |" % (n, " | ".join(cells),
                                                     100 * mean([r["score"] for r in rs]),
                                                     100 * mean([r["partial"] for r in rs])))
        out.append("")
    if mem:
        out += ["Peak memory growth per prompt token (bytes/token, peak RssAnon; expected: full "
                "48384 = 2304 hidden + 46080 K/V of 30 layers, snapkv 3840 = 2304 + 1536 one "
                "layer's K/V): see the memory section's slope table.", ""]
    if speed:
        out += ["Decode at the longest prompt (2 threads):", ""]
        Lmax = max(int(r["prompt_tokens"]) for r in speed)
        for r in speed:
            if int(r["prompt_tokens"]) == Lmax:
                out.append("- %s, %d prompt tokens: %.2f ± %.2f decode tok/s, %.1f ± %.1f prefill "
                           "tok/s (load %s -> %s)" % (
                               "full" if r["policy"] == "full" else "snapkv-%s" % r["budget"],
                               Lmax, float(r["decode_tok_s"]), float(r["decode_tok_s_std"]),
                               float(r["prefill_tok_s"]), float(r["prefill_tok_s_std"]),
                               r["load1_before"], r["load1_after"]))
        out.append("")

    grid_names = [os.path.basename(p)[:-4] for p in niah_grids + lines_grids]
    for name in (["snapkv_niah", "snapkv_lines"] + grid_names + ["snapkv_memory", "snapkv_speed"]):
        p = os.path.join(d, name + ".md")
        if os.path.exists(p):
            body = open(p).read().rstrip("\n")
            kernel = re.search(r"_k(\d+)(_grid)?$", name)
            if kernel:
                body = body.replace("`)", "` with --kernel %s)" % kernel.group(1), 1)
            if os.path.exists(os.path.join(d, name + ".png")):
                body += "\n\n![needle heatmaps](%s.png)" % name
            out += [body, ""]
    path = os.path.join(d, "snapkv.md")
    with open(path, "w") as f:
        f.write("\n".join(out))
    print("wrote", path, file=sys.stderr)


if __name__ == "__main__":
    main()
