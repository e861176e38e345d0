#!/usr/bin/env bash
# test_gpu_bench_dry.sh: the GPU benchmark's one-call script (bench/gpu/run_bench.py
# --phase all) run on the CPU, so that it cannot rot between the rare GPU sessions:
# --tiny --with-rt runs every step on the tiny golden model with the carried Open MPI,
# OpenBLAS, cJSON... .debs unpacked as on the GPU machine (fetched once per build
# folder with bench/gpu/fetch_mpi_debs.sh); then each step's status, the rows of both
# KV policies, the 2-layer cut and the checks are read back from results_all.json.
# A second run caps the snaptp step at 2 s on a long prompt: it must be killed, its
# status recorded, and the results still written. Without torch (CI) the transformers
# steps must say "skipped (no torch)"; everything else must pass.
set -uo pipefail

root="${SNAPTP_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
bin="${SNAPTP_BIN:-$root/build/snaptp}"
build="$(cd "$(dirname "$bin")" && pwd)"
debs="${SNAPTP_GPU_DEBS:-$build/gpu_dry/debs}"
work="$(mktemp -d /tmp/snaptp_gpu_dry.XXXXXX)"
trap 'rm -rf "$work"' EXIT

fail() { echo "FAIL: $*"; exit 1; }

for f in "$root"/bench/gpu/*.py; do
    python3 -m py_compile "$f" || fail "$f does not compile"
done
# The tree a device call sends (after bench/gpu/slim.sh) leaves room for the ~22 MiB .gpu
# under the call's 64 MiB; a checkout without git (an export) has nothing to check.
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
    tree=$(cd "$root" && bash bench/gpu/slim.sh tree-bytes)
    [ "$tree" -le $((40 << 20)) ] ||
        fail "a device call would send $((tree >> 20)) MiB of tree after slim.sh (budget 40 MiB)"
    echo "ok: the slimmed tree a device call sends is $((tree >> 20)) MiB (budget 40)"
fi
if [ "$(ls "$debs"/*.deb 2>/dev/null | wc -l)" -lt 23 ]; then
    # A fresh machine may have no package lists yet: update once, then try again.
    bash "$root/bench/gpu/fetch_mpi_debs.sh" "$debs" >"$work/fetch.log" 2>&1 ||
        { apt-get update -q >>"$work/fetch.log" 2>&1 &&
          bash "$root/bench/gpu/fetch_mpi_debs.sh" "$debs" >>"$work/fetch.log" 2>&1; } ||
        { cat "$work/fetch.log"; fail "fetch_mpi_debs.sh: the carried .debs could not be fetched"; }
fi

t0=$(date +%s)
if ! timeout -k 5 110 python3 "$root/bench/gpu/run_bench.py" --tiny --with-rt --diag always \
    --snaptp "$bin" --debs "$debs" --rt-root "$work/rt" --out "$work/out" --work "$work/w" \
    >"$work/console" 2>&1; then
    cat "$work/console"
    fail "run_bench.py --tiny --with-rt exited non-zero"
fi
t1=$(date +%s)

python3 - "$work/out" <<'PY' || { cat "$work/console"; fail "results of the dry run"; }
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
res = json.loads((out / "results_all.json").read_text())
assert (out / "results_all.md").read_text().startswith("###"), "no markdown report"
assert (out / "log_all.txt").stat().st_size > 0, "empty log"
have_torch = res["meta"]["torch"] is not None
want = "env cuda_ops parity tp2 comm_select hbm model snaptp hf_full hf_snapkv plan long serve".split()
assert list(res["steps"]) == want, list(res["steps"])
for s, v in res["steps"].items():
    ok = v["status"] == "ok" or (not have_torch and s.startswith("hf_")
                                 and v["status"] == "skipped (no torch)")
    assert ok, (s, v)
for c in ("test_cuda_ops", "test_cuda_ops_blocking", "test_backend_parity", "test_tp_np2",
          "test_comm_select", "test_comm_select_nccl"):
    assert res["checks"][c]["status"] == "ok", (c, res["checks"][c])
rows = [r for r in res["rows"] if r["system"] == "snaptp" and not r.get("warmup")]
got = sorted((r["prompt_tokens"], r["policy"]) for r in rows)
assert got == [(256, "full"), (256, "snapkv"), (1024, "full"), (1024, "snapkv")], got
for r in rows:
    assert r["status"] == "ok" and r["prefill_tokens_per_s"] > 0 and r["plan_bytes"], r
    assert r["allreduce_path"] == "none", r  # tp = 1: nothing crosses ranks
long = res["long"]
assert long["status"] == "ok" and long["layers"] == 1 and long["prompt_tokens"] == 4096, long
serve = res["serve"]
assert serve["exit"] == 0 and [x["concurrency"] for x in serve["rows"]] == [1, 2], serve
for x in serve["rows"]:
    assert x["status"] == "ok" and x["output_tokens_per_s"] > 0 and x["itl_p99_s"] is not None, x
assert res["hbm"]["copy_bytes_per_s"] > 0 and res["model"]["layers"] == 2, res["model"]
assert not res["errors"], res["errors"]
print("dry run: %d steps, %d snaptp rows, long %s tokens, %d checks, %.1f s" % (
    len(res["steps"]), len(rows), long["prompt_tokens"], len(res["checks"]), res["meta"]["wall_s"]))
PY

# The kill path: snaptp capped at 2 s on a prompt the CPU needs far longer for.
timeout -k 5 60 python3 "$root/bench/gpu/run_bench.py" --tiny --steps env,model,snaptp \
    --cap snaptp=2 --lengths 60000 --warmup 0 --snaptp "$bin" --out "$work/out2" \
    --work "$work/w2" >"$work/console2" 2>&1
rc=$?
python3 - "$work/out2" "$rc" <<'PY' || { cat "$work/console2"; fail "the capped run"; }
import json, sys
res = json.loads(open(sys.argv[1] + "/results_all.json").read())
assert sys.argv[2] == "1", "exit %s, want 1 for a failed step" % sys.argv[2]
assert res["steps"]["snaptp"]["status"] == "failed", res["steps"]
assert res["steps"]["snaptp"]["s"] < 15, res["steps"]["snaptp"]
assert [r["status"] for r in res["rows"]] == ["timeout", "not reached"], res["rows"]
print("capped run: snaptp stopped after %.1f s, rows %s" % (
    res["steps"]["snaptp"]["s"], [r["status"] for r in res["rows"]]))
PY
if pgrep -f "snaptp bench --model $work/w2" >/dev/null; then
    fail "the capped snaptp is still running"
fi
echo "1 passed, 0 failed (dry run $((t1 - t0)) s)"
