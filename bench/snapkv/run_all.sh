#!/usr/bin/env bash
# bench/snapkv/run_all.sh: reproduces every SnapKV benchmark on SmolLM2-135M-Instruct and
# writes bench/results/snapkv*.{csv,md,png} (see bench/snapkv/README.md):
#   1. niah.py      needle in a haystack, 1K-8K tokens x 5 depths, full vs snapkv 256/512/1024
#   2. lines.py     LongEval-style line retrieval, 1K-8K tokens x 5 target positions
#   3. memory.py    peak memory vs prompt length (2K-8K), full vs snapkv 1024, a process each
#   4. speed.py     prefill/decode tokens/s at 2K/4K/8K, full vs snapkv 1024 (waits for low load)
#   then the needle at 2K/4K with other window/kernel/pooling settings, and the whole needle
#   and line grids again with pooling kernel 15 (and the needle with 31 at budget 1024)
#   5. hf_check.py  a few needle cells against the published algorithm on HF transformers
#   6. report.py    bench/results/snapkv.md
# Finished runs are cached in bench/out/snapkv/<task>/ (gitignored), so an interrupted run
# resumes where it stopped; --fresh reruns everything.
#
# Usage (from anywhere):  bash bench/snapkv/run_all.sh [--quick] [--fresh] [--max-load X]
#   --quick        a short smoke run (1K tokens, 2 depths, budget 256; small memory and speed
#                  runs); results go to bench/out/snapkv/quick/, never to bench/results/
#   --fresh        rerun measurements that have a cached result
#   --max-load X   speed runs wait until the 1-min load is <= X (default 1.0) ...
#   --max-wait S   ... for at most S seconds each (default 900)
#   --skip-hf      skip the Hugging Face cross-check (it needs torch/transformers; ~5-20 min)
# Env: SNAPTP_BIN (default build-lead/snaptp), SNAPTP_SMOLLM2_GGUF (default tests/fetch_smollm2.sh),
#      BENCH_PYTHON (default /work/venv/bin/python; needs matplotlib, and torch/transformers
#      for hf_check.py).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
py="${BENCH_PYTHON:-/work/venv/bin/python}"
[ -x "$py" ] || py=python3
quick=0 fresh=() max_load=1.0 max_wait=900 hf=1
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) quick=1; shift ;;
    --fresh) fresh=(--fresh); shift ;;
    --max-load) max_load="${2:?}"; shift 2 ;;
    --max-wait) max_wait="${2:?}"; shift 2 ;;
    --skip-hf) hf=0; shift ;;
    -h | --help) sed -n '2,/^set -e/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run_all.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
export HF_HUB_OFFLINE=1
cd "$repo"
s=bench/snapkv
echo "run_all.sh: load $(cut -d' ' -f1-3 /proc/loadavg), $(date)" >&2

if [ $quick = 1 ]; then
    out=bench/out/snapkv/quick
    mkdir -p "$out"
    "$py" $s/niah.py --lengths 1024 --depths 0,100 --budgets 256 --out-dir $out "${fresh[@]}"
    "$py" $s/lines.py --lengths 1024 --positions 0,100 --budgets 256 --out-dir $out "${fresh[@]}"
    "$py" $s/memory.py --lengths 512,1024 --budget 256 --gen-tokens 4 --out-dir $out "${fresh[@]}"
    "$py" $s/speed.py --lengths 1024 --gen-tokens 8 --repeat 1 --max-load 0 --out-dir $out "${fresh[@]}"
    if [ $hf = 1 ]; then
        rm -f $out/snapkv_hf_check.csv
        "$py" $s/hf_check.py --document bench/out/snapkv/niah_docs/L1024_d0_s2024.txt --budget 256 \
            --question "What is the secret passphrase for the vault? Reply with the passphrase only." \
            --append-csv $out/snapkv_hf_check.csv
    fi
    "$py" $s/report.py --dir $out --quick
    exit 0
fi

"$py" $s/niah.py "${fresh[@]}"
"$py" $s/lines.py "${fresh[@]}"
"$py" $s/memory.py "${fresh[@]}"
"$py" $s/speed.py --max-load "$max_load" --max-wait "$max_wait" "${fresh[@]}"
# Other SnapKV settings at budget 1024 on the 2K and 4K haystacks: a wider pooling kernel, avg
# pooling, and the paper's needle-test settings (window 16, kernel 5).
for v in "--kernel 15:k15" "--kernel 31:k31" "--pooling avg:avg" "--window 16 --kernel 5:w16k5"; do
    # shellcheck disable=SC2086
    "$py" $s/niah.py --lengths 2048,4096 --budgets 1024 ${v%%:*} --prefix "snapkv_niah_${v##*:}" "${fresh[@]}"
done
# The kernels that won there, over the whole grids (full KV's runs are shared with the first
# grid through the cache): kernel 15 at every budget, kernel 31 at budget 1024.
"$py" $s/niah.py --kernel 15 --prefix snapkv_niah_k15_grid "${fresh[@]}"
"$py" $s/lines.py --kernel 15 --prefix snapkv_lines_k15 "${fresh[@]}"
"$py" $s/niah.py --kernel 31 --budgets 1024 --prefix snapkv_niah_k31_grid "${fresh[@]}"
"$py" $s/lines.py --kernel 31 --budgets 1024 --prefix snapkv_lines_k31 "${fresh[@]}"
if [ $hf = 1 ]; then
    # Cells where snapkv's answer differed from full KV's in the first full run (document L<len>_d<depth>).
    csv=bench/results/snapkv_hf_check.csv
    rm -f $csv
    for cell in L1024_d25:256 L2048_d0:1024 L4096_d50:1024; do  # 8K: ~10 GB in HF eager attention
        "$py" $s/hf_check.py --document "bench/out/snapkv/niah_docs/${cell%%:*}_s2024.txt" \
            --budget "${cell##*:}" --append-csv $csv \
            --question "What is the secret passphrase for the vault? Reply with the passphrase only."
    done
fi
"$py" $s/report.py
