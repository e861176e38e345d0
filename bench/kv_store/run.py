#!/usr/bin/env python3
"""Prefill once, ask many: time to first answer token with and without a KV store.

SmolLM2-135M-Instruct on the CPU, one document of about 8K tokens, five questions.
  without: one fresh `snaptp qa` per question (every question prefills the document)
  store, first run: one `qa --kv-store DIR` with all five questions (question 1
            prefills and writes the store; 2-5 read it)
  store, later run: the same command again in a new process (all five read it)
TTFT is the engine's prefill time, which includes sampling the first token; model
loading is not in it (it is the same either way). Writes bench/results/kv_store.json
and .md. Usage: python3 bench/kv_store/run.py [--tokens 8000] [--threads 2] [--repeat 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUESTIONS = [
    "What does snaptp compress?",
    "Which library does snaptp use for HTTP?",
    "How many all-reduces does a layer make?",
    "What is the default SnapKV window?",
    "Where does rank 0 sample?",
]


def gguf_path():
    if os.environ.get("SNAPTP_SMOLLM2_GGUF"):
        return os.environ["SNAPTP_SMOLLM2_GGUF"]
    return subprocess.check_output(["bash", os.path.join(ROOT, "tests/fetch_smollm2.sh")], text=True).strip()


def make_document(binary, gguf, n_tokens, path):
    """The repository's and ../shared's design notes, repeated and cut to n_tokens."""
    sources = ["README.md", "../shared/DESIGN.md", "../shared/SNAPKV.md", "bench/README.md", "cluster/README.md"]
    text = "\n\n".join(open(os.path.join(ROOT, s), encoding="utf-8").read() for s in sources)
    while len(text) < n_tokens * 6:
        text += "\n\n" + text
    ids = json.loads(subprocess.run([binary, "tokenize", "--model", gguf, "--json"], input=text,
                                    capture_output=True, text=True, check=True).stdout)
    ids = ids["ids"] if isinstance(ids, dict) else ids
    # Cut by characters in proportion, then trim to the token count.
    cut = text[: int(len(text) * n_tokens / len(ids))]
    with open(path, "w", encoding="utf-8") as f:
        f.write(cut)


def qa(binary, args):
    out = subprocess.run([binary, "qa", *args, "--json", "--quiet"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("bench_kv_store: snaptp qa failed:\n" + out.stderr)
    return [json.loads(line) for line in out.stdout.strip().splitlines()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=8000, help="document tokens (8000)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of each configuration (3)")
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/snaptp"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/results/kv_store"))
    a = ap.parse_args()
    gguf = gguf_path()
    load_before = open("/proc/loadavg").read().split()[:3]
    work = tempfile.mkdtemp(prefix="snaptp_bench_kv_store.")
    doc = os.path.join(work, "doc.txt")
    make_document(a.bin, gguf, a.tokens, doc)
    qfile = os.path.join(work, "questions.txt")
    open(qfile, "w").write("\n".join(QUESTIONS) + "\n")
    common = ["--model", gguf, "--document", doc, "--kv-policy", "snapkv", "--budget", str(a.budget),
              "--max-tokens", "16", "--threads", str(a.threads)]
    rows = {"without": [[] for _ in QUESTIONS], "store_first_run": [[] for _ in QUESTIONS],
            "store_later_run": [[] for _ in QUESTIONS]}
    answers = {}
    info = {}
    for rep in range(a.repeat):
        for i, q in enumerate(QUESTIONS):
            r = qa(a.bin, common + ["--question", q])[0]
            rows["without"][i].append(r["prefill_s"])
            answers.setdefault(("without", i), r["answer"])
            info["prompt_tokens"] = r["prompt_tokens"]
            info["prefix_tokens"] = r["prefix_tokens"]
        store = os.path.join(work, "store%d" % rep)
        for key in ("store_first_run", "store_later_run"):
            res = qa(a.bin, common + ["--questions", qfile, "--kv-store", store])
            for i, r in enumerate(res):
                rows[key][i].append(r["prefill_s"])
                answers.setdefault((key, i), r["answer"])
                if key == "store_later_run":
                    info["store_read_s"] = r["kv_store"]["read_s"]
                    info["store_bytes"] = r["kv_store"]["bytes_read"]
                    info["question_tokens_run"] = r["prefill_tokens_run"]
    same = all(answers[(k, i)] == answers[("without", i)] for k in rows for i in range(len(QUESTIONS)))
    med = {k: [statistics.median(v) for v in rows[k]] for k in rows}
    later_q = med["without"][1:]
    speedup_first = statistics.median(w / s for w, s in zip(med["without"][1:], med["store_first_run"][1:]))
    speedup_later = statistics.median(w / s for w, s in zip(later_q, med["store_later_run"][1:]))
    result = {
        "model": os.path.basename(gguf), "threads": a.threads, "repeat": a.repeat, "budget": a.budget,
        "load_before": load_before, "date": time.strftime("%Y-%m-%d %H:%M"), **info,
        "ttft_s_median": med, "answers_identical": same,
        "speedup_questions_2_5_first_run": speedup_first, "speedup_questions_2_5_later_run": speedup_later,
    }
    json.dump(result, open(a.out + ".json", "w"), indent=1)
    lines = [
        "# Prefill once, ask many: time to first answer token (bench/kv_store/run.py)",
        "",
        "SmolLM2-135M-Instruct Q4_1, CPU, %d threads, SnapKV budget %d; a document of %d tokens "
        "(prompts of ~%d), five questions; medians of %d runs; %s; load average before: %s." % (
            a.threads, a.budget, info["prefix_tokens"], info["prompt_tokens"], a.repeat, result["date"],
            " ".join(load_before)),
        "",
        "| question | without a store (s) | store, first run (s) | store, later run (s) |",
        "| --- | --- | --- | --- |",
    ]
    for i in range(len(QUESTIONS)):
        lines.append("| %d | %.3f | %.3f | %.3f |" % (i + 1, med["without"][i], med["store_first_run"][i],
                                                     med["store_later_run"][i]))
    lines += [
        "",
        "- Questions 2-5: %.1fx faster in the run that writes the store, %.1fx in a later run "
        "(median of the per-question ratios)." % (speedup_first, speedup_later),
        "- A read question runs %d tokens; reading and checking its store took %.3f s for %.1f MiB." % (
            info["question_tokens_run"], info["store_read_s"], info["store_bytes"] / 1048576),
        "- Answers identical with and without the store: %s." % ("yes" if same else "NO"),
    ]
    open(a.out + ".md", "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
