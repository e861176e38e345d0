"""lines: LongEval-style line retrieval on SmolLM2-135M-Instruct through `snaptp qa`: a record
of N lines "line brave-otter: REGISTER_CONTENT is <48213>", then "What is the REGISTER_CONTENT
in line <name>?" for targets at several positions; full KV vs SnapKV budgets. Writes
bench/results/snapkv_lines.csv and snapkv_lines.md; each run's JSON is kept in
bench/out/snapkv/lines/ and reused (--fresh to redo)."""

import argparse
import csv
import os
import random
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

ADJ = ("brave calm eager fancy gentle happy jolly kind lively merry nice proud silly witty zany "
       "bold quiet swift bright clever daring fierce grumpy humble icy jumpy keen lucky mighty "
       "noble odd plucky rapid shy tidy upbeat vivid wild young dusty").split()
ANIMALS = ("otter falcon badger heron lynx panda raven tiger walrus yak zebra bison camel dingo "
           "eagle ferret gecko hyena ibis jackal koala lemur marmot newt ocelot puffin quail "
           "rabbit salmon tapir urchin viper weasel wombat beaver cobra donkey finch gibbon "
           "hamster").split()
HEADER = ("Below is a record of lines I want you to remember. Each line begins with 'line <line "
          "index>' and contains a '<REGISTER_CONTENT>' at the end of the line. For each line index, "
          "memorize its corresponding <REGISTER_CONTENT>. At the end of the record, I will ask you "
          "to retrieve the corresponding <REGISTER_CONTENT> of a certain line index. Now the record "
          "start:\n")
FOOTER = "\nNow the record is over."


def record(seed, n):
    """n (name, value) pairs: distinct adjective-animal names, distinct 5-digit values."""
    r = random.Random(seed)
    names = [a + "-" + b for a in ADJ for b in ANIMALS]
    r.shuffle(names)
    values = r.sample(range(10000, 100000), n)
    return list(zip(names[:n], values))


def document(lines):
    return HEADER + "\n".join("line %s: REGISTER_CONTENT is <%d>" % nv for nv in lines) + FOOTER


def question(name):
    return "What is the REGISTER_CONTENT in line %s? Answer with the number only." % name


def n_lines_for(tc, seed, target):
    """The most lines whose qa prompt (with the longest question) stays within target tokens."""
    lo, hi = 1, 2000
    q = question("upbeat-hamster")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if tc.prompt_tokens(document(record(seed, mid)), q) <= target:
            lo = mid
        else:
            hi = mid - 1
    return lo


def grade(answer, lines, target):
    """(score, digits, retrieved_index): the target value in the answer; the share of its 5
    digits matched in place by the answer's first 5-digit number; the record index of that
    number when it is some other line's value (-1: none), for mis-retrievals."""
    want = str(lines[target][1])
    m = re.search(r"\d{5}", answer)
    got = m.group(0) if m else ""
    digits = sum(1 for a, b in zip(got, want) if a == b) / 5.0
    idx = -1
    if got:
        for i, (_, v) in enumerate(lines):
            if str(v) == got:
                idx = i
                break
    return int(want in answer), digits, idx


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", default="1024,2048,4096,8192", help="target prompt tokens")
    ap.add_argument("--positions", default="0,25,50,75,100", help="target line, %% of the record")
    common.add_grid_args(ap, "snapkv_lines", max_tokens=32, seed=7)
    args = ap.parse_args()

    binary, model, tc, configs = common.apply_grid_args(args)
    lengths = [int(x) for x in args.lengths.split(",")]
    positions = [int(x) for x in args.positions.split(",")]
    doc_dir = os.path.join(common.RAW, "lines_docs")
    os.makedirs(doc_dir, exist_ok=True)

    rows = []
    for L in lengths:
        target_tokens = min(L, 8192 - args.max_tokens)
        n = n_lines_for(tc, args.seed + L, target_tokens)
        lines = record(args.seed + L, n)
        doc = document(lines)
        path = os.path.join(doc_dir, "L%d_s%d.txt" % (L, args.seed))
        with open(path, "w") as f:
            f.write(doc)
        for pos in positions:
            t = min(n - 1, round(pos / 100.0 * (n - 1)))
            q = question(lines[t][0])
            full_answer = None
            for policy, budget in configs:
                name = common.config_name(policy, budget)
                cmd = common.qa_command(binary, model, path, q, policy, budget, args.max_tokens,
                                        args.threads)
                key = "L%d_p%d_%s_%s" % (L, pos, name,
                                         common.short_hash(doc, q, args.max_tokens, args.threads))
                if args.max_load > 0:
                    common.wait_for_load(args.max_load, 900)
                rec = common.run_cached("lines", key, cmd, fresh=args.fresh)
                row = {"length": L, "n_lines": n, "position_pct": pos, "target_line": t,
                       "policy": policy, "budget": budget, "config": name,
                       "want": lines[t][1], "load1_before": rec["load_before"][0]}
                if "error" in rec:
                    print("FAILED: %s\n  %s" % (common.shell_quote(cmd), rec["error"]),
                          file=sys.stderr)
                    row.update({"score": "", "error": rec["error"]})
                    rows.append(row)
                    continue
                r = rec["result"][-1]
                sc, digits, idx = grade(r["answer"], lines, t)
                if policy == "full":
                    full_answer = r["answer"]
                row.update({"score": sc, "digits": digits, "retrieved_line": idx,
                            "same_as_full": "" if full_answer is None else
                            int(r["answer"] == full_answer),
                            "prompt_tokens": r["prompt_tokens"],
                            "prefill_s": round(r["prefill_s"], 3),
                            "decode_tok_s": round(r["decode_tokens_per_s"], 2),
                            "kv_bytes": r["kv_bytes"], "answer": r["answer"], "error": ""})
                rows.append(row)
                print("L=%-5d lines=%-3d pos=%3d%% %-11s score=%d got_line=%d load=%.2f %r" % (
                    L, n, pos, name, sc, idx, rec["load_before"][0], r["answer"][:70]),
                    file=sys.stderr)

    fields = ["length", "n_lines", "position_pct", "target_line", "policy", "budget", "config",
              "score", "digits", "retrieved_line", "same_as_full", "want", "prompt_tokens",
              "prefill_s", "decode_tok_s", "kv_bytes", "load1_before", "answer", "error"]
    path = os.path.join(args.out_dir, "%s.csv" % args.prefix)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    print("wrote", path, file=sys.stderr)
    summary(rows, lengths, configs, args, os.path.join(args.out_dir, "%s.md" % args.prefix))


def _mean(xs):
    xs = [x for x in xs if x != ""]
    return sum(xs) / len(xs) if xs else float("nan")


def summary(rows, lengths, configs, args, path):
    names = [common.config_name(p, b) for p, b in configs]
    ok = [r for r in rows if r["score"] != ""]
    loads = [r["load1_before"] for r in rows]
    out = ["## LongEval-style line retrieval (`bench/snapkv/lines.py`)", "",
           "Units: score = %% of questions whose answer contains the target line's 5-digit value "
           "(greedy, --max-tokens %d); digits = %% of the value's digits right in place (first "
           "5-digit number of the answer); some line = %% of answers giving the value of any line "
           "of the record; same as full = %% of answers identical to full KV's. Targets at %s%% of "
           "the record; lengths are target prompt tokens (8K: at most %d). SnapKV window %d, kernel "
           "%d, %s pooling; %d threads. 1-min load before runs: min %.2f, mean %.2f, max %.2f." % (
               args.max_tokens, args.positions, 8192 - args.max_tokens, common.WINDOW,
               common.KERNEL, common.POOLING, args.threads, min(loads), sum(loads) / len(loads),
               max(loads)), "",
           "| config | score % | digits % | some line % | same as full % | questions |",
           "|---|---:|---:|---:|---:|---:|"]
    for n in names:
        rs = [r for r in ok if r["config"] == n]
        same = "-" if n == "full" else "%.0f" % (100 * _mean([r["same_as_full"] for r in rs]))
        out.append("| %s | %.0f | %.0f | %.0f | %s | %d |" % (
            n, 100 * _mean([r["score"] for r in rs]), 100 * _mean([r["digits"] for r in rs]),
            100 * _mean([int(r["retrieved_line"] >= 0) for r in rs]), same, len(rs)))
    out += ["", "Score % per length (same as full % in parentheses):", "",
            "| length | lines | prompt tokens | " + " | ".join(names) + " |",
            "|---:|---:|---:|" + "---:|" * len(names)]
    for L in lengths:
        rs = [r for r in ok if r["length"] == L]
        if not rs:
            continue
        cells = []
        for n in names:
            q = [r for r in rs if r["config"] == n]
            same = "" if n == "full" else " (%.0f)" % (100 * _mean([r["same_as_full"] for r in q]))
            cells.append("%.0f%s" % (100 * _mean([r["score"] for r in q]), same))
        toks = sorted({r["prompt_tokens"] for r in rs})
        out.append("| %d | %d | %s | %s |" % (L, rs[0]["n_lines"], "%d-%d" % (toks[0], toks[-1]),
                                              " | ".join(cells)))
    out += ["", "Score per target position (all lengths):", "",
            "| position | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for p in sorted({r["position_pct"] for r in ok}):
        out.append("| %d%% | %s |" % (p, " | ".join(
            "%.0f" % (100 * _mean([r["score"] for r in ok if r["config"] == n and
                                   r["position_pct"] == p])) for n in names)))
    failed = [r for r in rows if r.get("error")]
    if failed:
        out += ["", "Failed runs: %d (see the CSV's error column)." % len(failed)]
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    print("wrote", path, file=sys.stderr)


if __name__ == "__main__":
    main()
