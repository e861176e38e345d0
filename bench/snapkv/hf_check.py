"""hf_check: cross-checks a `snaptp qa` answer against the published SnapKV algorithm run on Hugging
Face transformers (the reference of tests/gen_snapkv_golden.py, fp32, SmolLM2 loaded from the
same GGUF), on the same prompt ids (`snaptp tokenize --chat`). Prints the greedy answer with full
KV and with SnapKV, and how many of the needle's tokens each layer keeps (min/mean over KV heads),
so a needle lost by SnapKV can be told apart from a snaptp bug.

Usage: python bench/snapkv/hf_check.py --document F --question Q [--budget 1024] [--needle TEXT]
       [--max-tokens 24] [--window 32 --kernel 7 --pooling max]"""

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

sys.path.insert(0, os.path.join(common.REPO, "tests"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--document", required=True)
    ap.add_argument("--question", required=True)
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--window", type=int, default=common.WINDOW)
    ap.add_argument("--kernel", type=int, default=common.KERNEL)
    ap.add_argument("--pooling", default=common.POOLING)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--needle", default="amber-falcon-7391", help="text whose tokens to track")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--append-csv", help="append one row (document, budget, answers) to this CSV")
    args = ap.parse_args()

    import torch
    import gen_snapkv_golden as ref  # registers the hooked attention
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    binary, model_path = common.snaptp_bin(), common.model_path()
    tc = common.TokenCounter(binary, model_path)
    doc = open(args.document).read()
    ids = tc.ids(common.QA_USER_FMT % (doc, args.question))
    L = len(ids)
    # The needle's token span: the first place where its tokens (after a space or a quote) occur.
    span = None
    for pre in ("'", " ", ""):
        sub = tc.ids(pre + args.needle, chat=False)[1 if pre else 0:]
        for i in range(L - len(sub) + 1):
            if ids[i:i + len(sub)] == sub:
                span = (i, i + len(sub))
                break
        if span:
            break
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(model_path), gguf_file=os.path.basename(model_path), dtype=torch.float32,
        attn_implementation=ref.ATTN).eval()
    eos = 2

    def detok(toks):
        out = []
        for t in toks:
            if t == eos:
                break
            out.append(t)
        import subprocess
        p = subprocess.run([binary, "detokenize", "--model", model_path], input="\n".join(
            map(str, out)), capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else str(out)

    print("prompt tokens %d, needle tokens %s" % (L, span))
    answers, kept_layers = {}, ""
    for name, C in (("full", 10**9), ("snapkv-%d" % args.budget, args.budget)):
        case = dict(window=args.window, budget=C, kernel=args.kernel, pooling=args.pooling)
        # n, pos_base (None: L, as snaptp); hf_decode is wrapped by torch.no_grad
        getattr(ref.hf_decode, "__wrapped__", ref.hf_decode).__defaults__ = (args.max_tokens, None)
        r = ref.hf_case(model, ids, case, compress=C < L)
        answers[name] = detok(r["greedy"])
        print("%s: %r  ids %s" % (name, answers[name], r["greedy"]))
        if C < L and span:
            n = span[1] - span[0]
            per_layer = []
            for li in sorted(r["keep"]):
                kept = r["keep"][li]  # [Hkv, C]
                cnt = [int(((kept >= span[0]) & (kept < span[1])).sum()) for kept in kept]
                per_layer.append("%d:%d/%.1f" % (li, min(cnt), sum(cnt) / len(cnt)))
            kept_layers = " ".join(per_layer)
            print("  needle tokens kept per layer (layer:min/mean over KV heads, of %d): %s" % (
                n, kept_layers))
    if args.append_csv:
        import csv
        new = not os.path.exists(args.append_csv)
        with open(args.append_csv, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["document", "prompt_tokens", "budget", "window", "kernel", "pooling",
                            "hf_full_answer", "hf_snapkv_answer", "needle_tokens",
                            "needle_kept_per_layer_min_mean"])
            w.writerow([os.path.basename(args.document), L, args.budget, args.window, args.kernel,
                        args.pooling, answers["full"], answers["snapkv-%d" % args.budget],
                        span[1] - span[0] if span else "", kept_layers])


if __name__ == "__main__":
    main()
