#!/usr/bin/env python3
"""run_bench: the whole first GPU check of snaptp in one device call (--phase all):
correctness first, then snaptp against Hugging Face transformers on one GPU (tp = 1)
on a random Llama-3.1-8B-shaped model made on that machine. See bench/gpu/README.md
for the exact device call; nothing CUDA has run on a GPU yet.

Steps of --phase all, most valuable first; each has a hard cap (CAPS) and the results
are rewritten after every step, so a call stopped by `timeout` returns what ran:
  env          GPU, driver, versions; snaptp's shared libraries resolve (ldd)
  cuda_ops     tests/test_cuda_ops (every CUDA op against the CPU one); on failure
               rerun once under CUDA_LAUNCH_BLOCKING=1 + SNAPTP_CUDA_SYNC=1 (the op
               and shapes at fault) and once under compute-sanitizer memcheck
  parity       tests/test_backend_parity: whole models, CPU vs CUDA, on the golden
               models and SmolLM2-shaped random weights made here
  tp2          tests/test_tp under mpirun -np 2, both ranks on the one GPU, host-
               staged all-reduce (SNAPTP_COMM=mpi); the ranks run in their own
               process group, killed as a group at the cap
  comm_select  tests/test_comm_select, then its --child with SNAPTP_COMM=nccl: a real
               NCCL all-reduce on the CUDA backend's stream (one rank)
  hbm          device-to-device copy bandwidth (torch, 4 GiB, median of 20)
  model        random 8B model (transformers init, bf16, on the GPU), written once as
               safetensors to --work, then parked in host memory for the HF steps
  snaptp       `snaptp bench --backend cuda --kv-policy full,snapkv` at --lengths:
               one process, the weights loaded once for both policies
  hf_full      transformers (sdpa), full KV cache
  hf_snapkv    transformers with SnapKV applied per layer during prefill
  plan         `snaptp inspect`'s memory plan for each snaptp run, beside its peak
  long         the 8B's first 2 layers cut into a model of their own (the same
               weights): a SnapKV prefill of --long-tokens (1M) in the time left, or
               of half that (512K, labelled) when the forecast says 1M will not fit
  serve        if time remains: `snaptp serve --backend cuda` on the 8B, 4K-token
               prompts, 128 tokens, concurrency 1/4/16 (bench/gpu/serve_probe.py)
--tiny runs the same steps on the CPU with the tiny golden model's shape (a dry run
of this script that CI runs; numbers mean nothing). Without torch (CI) the model is
cut from tests/golden/llama_gqa and the torch steps are recorded as skipped.

Results: OUT/results_all.json, OUT/results_all.md, OUT/log_all.txt (OUT: --out, else
$OUT, else bench/out/gpu).
"""
import argparse
import datetime
import json
import os
import platform
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

try:
    import torch
except ImportError:  # the CPU dry run in CI: the torch steps are skipped, not failed
    torch = None

import report  # noqa: E402
import rt  # noqa: E402
import weights  # noqa: E402
from gpu_mem import GpuSampler  # noqa: E402

PHASES = {
    "all": "env cuda_ops parity tp2 comm_select hbm model snaptp hf_full hf_snapkv plan long serve",
}
# Hard caps per step, in seconds (on the H200; --tiny uses the same). The checks are
# capped tightly so that a hang cannot eat the benchmark; the benchmark steps get
# what is left after RESERVE_S of the steps after them.
CAPS = dict(env=60, cuda_ops=60, cuda_ops_blocking=60, cuda_ops_memcheck=120, parity=120,
            tp2=75, comm_select=45, hbm=20, model=150, snaptp=300, hf_full=120, hf_snapkv=90,
            plan=45, long=420, serve=120)
RESERVE_S = dict(snaptp=100 + 10 + 90, hf_full=10 + 90 + 30, hf_snapkv=10 + 90)  # later steps


class StepTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise StepTimeout()


class Run:
    """The state of one invocation: arguments, clock, results, log."""

    def __init__(self, a):
        self.a = a
        self.t0 = time.monotonic()
        self.out = Path(a.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.phase = "all"
        self.log_path = self.out / f"log_{self.phase}.txt"
        self.log_path.write_text("")
        self.device = "cpu" if a.tiny else "cuda"
        self.backend = "cpu" if a.tiny else "cuda"
        self.snap = dict(window=a.window, budget=a.budget, kernel=a.kernel, pooling=a.pooling)
        self.res = {"meta": {"phase": self.phase, "tiny": a.tiny,
                             "date": datetime.datetime.now().isoformat(timespec="seconds"),
                             "host": platform.node(), "args": vars(a)},
                    "steps": {}, "checks": {}, "rows": [], "errors": []}
        self.hf_model = None
        self.model_dir = None
        self.env = None  # snaptp's environment
        self.snaptp_broken = False

    def left(self):
        return self.a.budget_s - (time.monotonic() - self.t0)

    def log(self, msg):
        line = f"[{time.monotonic() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    def error(self, msg):
        self.log("ERROR: " + msg)
        self.res["errors"].append(msg)

    def save(self):
        (self.out / f"results_{self.phase}.json").write_text(json.dumps(self.res, indent=1))
        (self.out / f"results_{self.phase}.md").write_text(report.table(self.res))

    def exe(self, name):
        """A test binary carried beside snaptp (.gpu/bin) or in its build's tests/."""
        bindir = Path(self.a.snaptp).parent
        return next((e for e in (bindir / name, bindir / "tests" / name) if e.exists()), None)

    def test_env(self, **extra):
        # Parity and op tests: cuBLAS may not reduce split-K partials in bf16.
        env = dict(self.env, SNAPTP_SOURCE_DIR=str(REPO), SNAPTP_CUDA_STRICT_REDUCTION="1")
        env.update(extra)
        return env


def run_group(r, cmd, env, timeout_s, tag):
    """Runs cmd in a process group of its own, killed as a group at timeout_s (so
    mpirun's ranks and anything else it started die with it). Returns (status,
    exit code or None, output lines); status is "ok", "failed" or "timeout"."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=env, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=max(1.0, timeout_s))
        status = "ok" if p.returncode == 0 else "failed"
    except (subprocess.TimeoutExpired, StepTimeout):
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        status = "timeout"
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    lines = (out or "").strip().splitlines()
    r.log(f"{tag}: {status} (exit {p.returncode}) in {time.monotonic() - t0:.1f} s")
    return status, p.returncode, lines


def record_check(r, name, status, rc, lines, show=8):
    fails = [ln for ln in lines if ln.startswith("FAIL")][:20]
    last = lines[-1] if lines else ""
    r.res["checks"][name] = dict(status=status, exit=rc, last=last, fails=fails)
    r.log(f"  {name}:\n    " + "\n    ".join(fails + lines[-show:]))
    if status != "ok":
        r.error(f"{name} {status} (exit {rc}): {last}")
    return status


# ---------------------------------------------------------------- steps


def step_env(r):
    meta = r.res["meta"]
    meta.update(python=platform.python_version(), torch=torch.__version__ if torch else None)
    try:
        import transformers
        meta["transformers"] = transformers.__version__
    except ImportError as e:
        meta["transformers"] = None
        if not r.a.tiny:
            r.error(f"transformers: {e}")
    if r.device == "cuda":
        if torch is None or not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
        p = torch.cuda.get_device_properties(0)
        meta.update(gpu=p.name, gpu_bytes=p.total_memory, sms=p.multi_processor_count)
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,"
                              "clocks.max.mem", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        meta["nvidia_smi"] = smi.stdout.strip()
    else:
        meta["gpu"] = "none (--tiny on the CPU)"
    meta["snaptp"] = str(r.a.snaptp)
    if not r.a.no_rt:
        root = rt.unpack(r.a.debs, r.a.rt_root, log=r.log)
        r.env = rt.snaptp_env(root)
    else:
        r.env = dict(os.environ)
    ldd = subprocess.run(["ldd", str(r.a.snaptp)], capture_output=True, text=True, env=r.env,
                         timeout=30)
    missing = [ln.strip() for ln in ldd.stdout.splitlines() if "not found" in ln]
    meta["ldd_missing"] = missing
    if missing:  # the transformers steps can still run
        r.snaptp_broken = True
        r.error(f"snaptp's libraries do not resolve (its steps are skipped): {missing}")
    r.log(f"env: {meta.get('gpu')}, torch {meta['torch']}, transformers "
          f"{meta.get('transformers')}, snaptp {r.a.snaptp}: "
          f"{'libraries missing' if missing else 'all libraries found'}")


def step_cuda_ops(r):
    """Every CUDA op against the CPU one. A failure is rerun once with launches made
    blocking and a sync after every op (so the message names the op that faulted,
    not the next launch), then once under compute-sanitizer's memcheck."""
    exe = r.exe("test_cuda_ops")
    if exe is None:
        r.res["checks"]["test_cuda_ops"] = dict(status="not carried")
        return "skipped"
    st, rc, out = run_group(r, [str(exe)], r.test_env(), min(CAPS["cuda_ops"], r.left()),
                            "test_cuda_ops")
    record_check(r, "test_cuda_ops", st, rc, out)
    if st == "ok" and r.a.diag != "always":
        return st
    # The diagnostic reruns (forced by --diag always in the dry run, so they cannot rot).
    st2, rc2, out2 = run_group(r, [str(exe)], r.test_env(CUDA_LAUNCH_BLOCKING="1",
                                                         SNAPTP_CUDA_SYNC="1"),
                               min(CAPS["cuda_ops_blocking"], r.left()), "test_cuda_ops blocking")
    r.res["checks"]["test_cuda_ops_blocking"] = dict(status=st2, exit=rc2, tail=out2[-15:])
    r.log("  blocking rerun:\n    " + "\n    ".join(out2[-15:]))
    san = shutil.which("compute-sanitizer") or next(
        (p for p in ("/usr/local/cuda/bin/compute-sanitizer",) if os.path.exists(p)), None)
    if san is None:
        r.res["checks"]["test_cuda_ops_memcheck"] = dict(status="no compute-sanitizer here")
        r.log("  memcheck: no compute-sanitizer here")
    else:
        st3, rc3, out3 = run_group(r, [san, "--tool", "memcheck", "--print-limit", "20",
                                       "--error-exitcode", "99", str(exe)],
                                   r.test_env(SNAPTP_CUDA_SYNC="1"),
                                   min(CAPS["cuda_ops_memcheck"], r.left()), "test_cuda_ops memcheck")
        r.res["checks"]["test_cuda_ops_memcheck"] = dict(status=st3, exit=rc3, tail=out3[-30:])
        r.log("  memcheck:\n    " + "\n    ".join(out3[-30:]))
    return st


def parity_model(r):
    """SmolLM2-shaped random weights for test_backend_parity; their directory, or
    None without torch (the golden models are still compared)."""
    if torch is None:
        r.log("parity: no torch here: the golden models only")
        return None
    import hf_bench
    shape = weights.TINY if r.a.tiny else weights.SMOLLM2_135M
    cfg = weights.make_config(shape, n_ctx=2048)
    torch.manual_seed(4321)
    model = hf_bench.make_model(cfg, r.device)
    d = Path(r.a.work) / ("parity_tiny" if r.a.tiny else "parity_smollm2_shape")
    weights.write_model(model, d, log=r.log)
    del model
    if r.device == "cuda":
        torch.cuda.empty_cache()
    return d


def step_parity(r):
    exe = r.exe("test_backend_parity")
    if exe is None:
        r.res["checks"]["test_backend_parity"] = dict(status="not carried")
        return "skipped"
    extra = {}
    try:
        pm = parity_model(r)
        if pm:
            extra["SNAPTP_PARITY_MODELS"] = str(pm)
    except Exception as e:  # the golden models are still worth comparing
        r.error(f"parity model: {type(e).__name__}: {e}")
    st, rc, out = run_group(r, [str(exe)], r.test_env(**extra),
                            min(CAPS["parity"], r.left()), "test_backend_parity")
    return record_check(r, "test_backend_parity", st, rc, out, show=40)  # its per-model lines


def mpirun_path(r):
    if not r.a.no_rt:
        p = Path(r.a.rt_root) / "usr/bin/orterun"
        return str(p) if p.exists() else None
    return shutil.which("mpirun")


def step_tp2(r):
    """tp = 2 on one GPU: both ranks on device 0 (the local rank wraps), all-reduces
    staged through host memory over MPI: every rank's shard against the whole model.
    The GPU image has no MPI: orterun comes from the carried openmpi-bin."""
    exe, launcher = r.exe("test_tp"), mpirun_path(r)
    if exe is None or launcher is None:
        r.res["checks"]["test_tp_np2"] = dict(status="not carried" if exe is None else "no mpirun")
        return "skipped"
    env = r.test_env(SNAPTP_TP_BACKEND=r.backend, SNAPTP_COMM="mpi", OMPI_MCA_btl="self,vader",
                     OMPI_MCA_pml="ob1", OMPI_MCA_btl_vader_single_copy_mechanism="none")
    env.pop("OMPI_MCA_ess_singleton_isolated", None)  # mpirun starts these ranks
    cap = min(CAPS["tp2"], r.left())
    # mpirun's own --timeout ends the job first, cleanly; the group kill is the backstop.
    cmd = [launcher, "--oversubscribe", "--bind-to", "none", "--allow-run-as-root",
           "--timeout", str(max(5, int(cap) - 10)), "-np", "2", str(exe)]
    st, rc, out = run_group(r, cmd, env, cap, f"tp2 ({r.backend}, SNAPTP_COMM=mpi)")
    return record_check(r, "test_tp_np2", st, rc, out, show=12)


def step_comm_select(r):
    """The NCCL/MPI choice: the pure-C checks, then one rank with SNAPTP_COMM=nccl, which
    on a GPU runs a real NCCL all-reduce through the CUDA backend's stream (on the CPU
    it must be refused with "no CUDA device")."""
    exe = r.exe("test_comm_select")
    if exe is None:
        r.res["checks"]["test_comm_select"] = dict(status="not carried")
        return "skipped"
    cap = CAPS["comm_select"] / 2
    st, rc, out = run_group(r, [str(exe)], r.test_env(), min(cap, r.left()), "test_comm_select")
    st = record_check(r, "test_comm_select", st, rc, out, show=4)
    st2, rc2, out2 = run_group(r, [str(exe), "--child"], r.test_env(SNAPTP_COMM="nccl"),
                               min(cap, r.left()), "test_comm_select --child, SNAPTP_COMM=nccl")
    st2 = record_check(r, "test_comm_select_nccl", st2, rc2, out2, show=6)
    skipped = [ln for ln in out2 if ln.startswith("skipped") or "refused at init" in ln]
    if r.device == "cuda" and st2 == "ok" and skipped:
        r.error("test_comm_select_nccl: passed without running the NCCL all-reduce: "
                + " / ".join(out2[-3:]))
    return st if st != "ok" else st2


def step_hbm(r):
    if torch is None:  # CPU dry run without torch: a bytes copy, so the step still runs
        n = 64 << 20
        a, b = bytearray(os.urandom(1 << 20)) * 64, bytearray(n)
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            b[:] = a
            times.append(time.perf_counter() - t0)
    else:
        n = (256 << 20) if r.device == "cpu" else (4 << 30)
        a = torch.empty(n, dtype=torch.uint8, device=r.device)
        a.random_(0, 255)  # not zeros (METHOD.md)
        b = torch.empty_like(a)
        times = []
        for i in range(23):
            if r.device == "cuda":
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                b.copy_(a)
                e1.record()
                e1.synchronize()
                t = e0.elapsed_time(e1) / 1e3
            else:
                t0 = time.perf_counter()
                b.copy_(a)
                t = time.perf_counter() - t0
            if i >= 3:
                times.append(t)
    t = sorted(times)[len(times) // 2]
    r.res["hbm"] = {"bytes": n, "median_s": t, "copy_bytes_per_s": 2 * n / t}
    r.log(f"hbm: copy of {n >> 20} MiB in {t * 1e3:.3f} ms: {2 * n / t / 1e12:.3f} TB/s (r+w)")
    del a, b
    if r.device == "cuda":
        torch.cuda.empty_cache()


def model_info(r, cfg, name):
    total, decode = weights.param_bytes(cfg)
    r.res["model"] = dict(name=name, layers=cfg.num_hidden_layers, total_weight_bytes=total,
                          decode_weight_bytes=decode, kv_bytes_per_row=weights.kv_bytes_per_row(cfg),
                          snapkv_budget=r.a.budget, snapkv_window=r.a.window,
                          snapkv_kernel=r.a.kernel, snapkv_pooling=r.a.pooling)


def step_model(r):
    """The one model of the run, made once: its 2-layer cut (step long) reuses its bytes."""
    n_ctx = max(r.lengths) + r.a.gen + 64
    d = Path(r.a.work) / ("llama8b" if not r.a.tiny else "tiny")
    if torch is None:
        if not r.a.tiny:
            raise RuntimeError("no torch: the 8B cannot be made")
        weights.cut_layers(REPO / "tests/golden/llama_gqa", d, None, n_ctx, log=r.log)
        model_info(r, weights.config_of(d), "tiny golden llama_gqa (no torch here)")
        r.model_dir = d
        return
    import hf_bench
    shape = weights.TINY if r.a.tiny else weights.LLAMA3_8B
    cfg = weights.make_config(shape, n_ctx=n_ctx)
    t0 = time.perf_counter()
    torch.manual_seed(1234)
    model = hf_bench.make_model(cfg, r.device)
    t1 = time.perf_counter()
    total, secs = weights.write_model(model, d, log=r.log)
    r.log(f"model: {cfg.num_hidden_layers} layers, built in {t1 - t0:.1f} s, "
          f"{total / 2**30:.2f} GiB written in {secs:.1f} s to {d}")
    model_info(r, model.config, "random Llama-3.1-8B shape" if not r.a.tiny else "tiny llama")
    r.model_dir = d
    r.hf_model = model
    if r.device == "cuda":  # parked in host memory while snaptp has the GPU
        model.to("cpu")
        torch.cuda.empty_cache()


def _reader(stream, q):
    for line in iter(stream.readline, ""):
        q.put(line)
    q.put(None)


def snaptp_bench(r, model_dir, policies, lengths, gen, chunk, timeout_s, tag):
    """Runs `snaptp bench --json` once for every policy and length (lengths outer),
    one row per JSON line as it arrives (so a timeout keeps what was done). The
    process runs in its own group, killed as a group at timeout_s. Returns the rows."""
    cmd = [str(r.a.snaptp), "bench", "--model", str(model_dir), "--backend", r.backend,
           "--prompt-tokens", ",".join(str(n) for n in lengths), "--gen-tokens", str(gen),
           "--repeat", "1", "--chunk", str(chunk), "--json", "--kv-policy", ",".join(policies)]
    if "snapkv" in policies:
        cmd += ["--window", str(r.a.window), "--budget", str(r.a.budget), "--kernel",
                str(r.a.kernel), "--pooling", r.a.pooling]
    if r.a.tiny:
        cmd += ["--threads", "2"]
    todo = [(L, p) for L in lengths for p in policies]
    if r.snaptp_broken:
        r.error(f"{tag}: skipped, snaptp cannot start here")
        return [dict(system="snaptp", policy=p, prompt_tokens=L, gen_tokens=gen, chunk=chunk,
                     status="not run", warmup=L == r.a.warmup) for L, p in todo]
    r.log(f"{tag}: {' '.join(cmd)} (timeout {timeout_s:.0f} s)")
    err_path = Path(r.a.work) / f"stderr_{tag}.txt"
    err_path.parent.mkdir(parents=True, exist_ok=True)
    with open(err_path, "w") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=r.env,
                             start_new_session=True)
    sampler = GpuSampler(p.pid) if r.device == "cuda" else None
    q = queue.Queue()
    threading.Thread(target=_reader, args=(p.stdout, q), daemon=True).start()
    rows, deadline, status = [], time.monotonic() + timeout_s, "ok"
    t_seg = time.monotonic()
    try:
        while True:
            try:
                line = q.get(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() > deadline:
                    status = "timeout"
                    break
                continue
            if line is None:
                break
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                o = json.loads(line)
            except json.JSONDecodeError:
                r.error(f"{tag}: unreadable output line: {line[:200]}")
                continue
            proc_peak, dev_peak = sampler.mark() if sampler else (0, 0)
            L = o["prompt_tokens"]
            tps, dtps = o.get("prefill_tokens_per_s"), o.get("decode_tokens_per_s")
            row = dict(system="snaptp", policy=o.get("kv_policy"), prompt_tokens=L,
                       gen_tokens=o["gen_tokens"], chunk=chunk,
                       prefill_tokens_per_s=tps, prefill_s=L / tps if tps else None,
                       decode_ms_per_token=1e3 / dtps if dtps else None,
                       kv_bytes=o.get("kv_bytes"), allreduce_path=o.get("allreduce_path"),
                       peak_gpu_bytes=proc_peak or dev_peak or None, peak_gpu_device_bytes=dev_peak,
                       peak_rss_bytes=o.get("peak_rss_bytes"), wall_s=time.monotonic() - t_seg,
                       warmup=L == r.a.warmup, status="ok")
            t_seg = time.monotonic()
            rows.append(row)
            r.res["rows"].append(row)  # saved as it comes: a later kill loses nothing
            r.save()
            r.log(f"{tag}: L={L} {row['policy']}: prefill {tps or 0:,.0f} tok/s, decode "
                  f"{row['decode_ms_per_token'] or 0:.2f} ms/token, peak GPU "
                  f"{(row['peak_gpu_bytes'] or 0) / 2**30:.2f} GiB")
    except StepTimeout:
        status = "timeout"
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        rc = p.wait()
        if sampler:
            sampler.stop()
    tail = err_path.read_text(errors="replace").strip().splitlines()[-12:]
    done = {(row["prompt_tokens"], row["policy"]) for row in rows}
    if rc != 0 or status != "ok":
        why = status if status != "ok" else f"exit {rc}"
        r.error(f"{tag}: snaptp {why} after {sorted(done)}; stderr tail:\n    " +
                "\n    ".join(tail))
        pending = [(L, pol) for L, pol in todo if (L, pol) not in done]
        for i, (L, pol) in enumerate(pending):
            row = dict(system="snaptp", policy=pol, prompt_tokens=L, gen_tokens=gen, chunk=chunk,
                       status=(why if i == 0 else "not reached"), warmup=L == r.a.warmup)
            rows.append(row)
            r.res["rows"].append(row)
    return rows


def _bench_lengths(r):
    return ([r.a.warmup] if r.a.warmup else []) + r.lengths


def step_snaptp(r):
    if r.model_dir is None:
        raise RuntimeError("no model (the model step did not finish)")
    avail = r.left() - (0 if r.a.tiny else RESERVE_S["snaptp"])
    if avail < 30:
        r.error(f"snaptp: skipped, {r.left():.0f} s left")
        return "skipped (time)"
    timeout = min(CAPS["snaptp"], avail)
    rows = snaptp_bench(r, r.model_dir, ["full", "snapkv"], _bench_lengths(r), r.a.gen,
                        r.a.chunk, timeout, "snaptp")
    return "ok" if all(x["status"] == "ok" for x in rows) else "failed"


def inspect_plan(r, model_dir, L, policy, gen, chunk):
    """`snaptp inspect`'s total for one run, in bytes (None when it fails)."""
    if r.snaptp_broken:
        return None
    cmd = [str(r.a.snaptp), "inspect", "--model", str(model_dir), "--prompt-tokens", str(L),
           "--max-tokens", str(gen), "--chunk", str(chunk), "--kv-policy", policy,
           "--backend", r.backend]
    if policy == "snapkv":
        cmd += ["--window", str(r.a.window), "--budget", str(r.a.budget), "--kernel",
                str(r.a.kernel), "--pooling", r.a.pooling]
    p = subprocess.run(cmd, capture_output=True, text=True, env=r.env, timeout=60)
    m = re.search(r"^\s+total\s+([0-9.]+)\s*$", p.stdout, re.M)
    if p.returncode != 0 or not m:
        r.error(f"inspect L={L} {policy}: exit {p.returncode}: {p.stderr.strip()[-300:]}")
        return None
    return int(float(m.group(1)) * (1 << 20))


def step_plan(r):
    for row in r.res["rows"]:
        if row["system"] == "snaptp" and "plan_bytes" not in row and not row.get("warmup"):
            row["plan_bytes"] = inspect_plan(r, r.model_dir, row["prompt_tokens"], row["policy"],
                                             row["gen_tokens"], row.get("chunk", r.a.chunk))
            peak = row.get("peak_gpu_bytes")
            if peak and row["plan_bytes"]:
                row["peak_over_plan"] = peak / row["plan_bytes"]


def step_hf(r, policy):
    if torch is None:
        r.log(f"hf_{policy}: no torch here")
        return "skipped (no torch)"
    import hf_bench
    if r.hf_model is None:
        raise RuntimeError("no model (the model step did not run)")
    if next(r.hf_model.parameters()).device.type != r.device:
        r.hf_model.to(r.device)
    reserve = 0 if r.a.tiny else RESERVE_S[f"hf_{policy}"]
    last = None  # (L, prefill_s, decode_ms) of the previous length
    for L in _bench_lengths(r):
        if last:  # attention grows with L^2: a pessimistic forecast from the last run
            need = last[1] * (L / last[0]) ** 2 + r.a.gen * last[2] / 1e3 * (L / last[0]) + 5
            if need > r.left() - reserve:
                r.log(f"hf_{policy}: L={L} skipped: needs ~{need:.0f} s, {r.left():.0f} s left")
                r.res["rows"].append(dict(system="transformers", policy=policy, prompt_tokens=L,
                                          gen_tokens=r.a.gen, status="skipped (time)"))
                continue
        try:
            o = hf_bench.run_one(r.hf_model, L, r.a.gen, policy, r.snap, r.device)
        except torch.OutOfMemoryError as e:
            torch.cuda.empty_cache()
            r.error(f"hf_{policy}: L={L}: out of GPU memory: {str(e)[:200]}")
            r.res["rows"].append(dict(system="transformers", policy=policy, prompt_tokens=L,
                                      gen_tokens=r.a.gen, status="OOM"))
            break
        o.update(system="transformers", policy=policy, status="ok", warmup=L == r.a.warmup,
                 peak_gpu_bytes=o.get("peak_reserved_bytes"))
        r.res["rows"].append(o)
        last = (L, o["prefill_s"], o["decode_ms_per_token"] or 0)
        r.log(f"hf_{policy}: L={L}: prefill {o['prefill_tokens_per_s']:,.0f} tok/s, decode "
              f"{o['decode_ms_per_token'] or 0:.2f} ms/token, {o['kv_rows_after_prefill']} KV "
              f"rows, peak {(o.get('peak_gpu_bytes') or 0) / 2**30:.2f} GiB")
        r.save()
    if policy == "snapkv" and r.device == "cuda":  # the GPU goes back to snaptp
        r.hf_model = None
        torch.cuda.empty_cache()
    return "ok"


def long_forecast(r, L, n_layers):
    """Seconds a SnapKV prefill of L tokens on n_layers layers should take, from the
    longest snaptp SnapKV row of this run, all of it scaled as L^2 (pessimistic: the
    linear part grows as L only); None without such a row."""
    ref = [x for x in r.res["rows"] if x["system"] == "snaptp" and x["policy"] == "snapkv"
           and x.get("status") == "ok" and x.get("prefill_s") and not x.get("warmup")]
    m = r.res.get("model") or {}
    if not ref or not m.get("layers"):
        return None
    x = max(ref, key=lambda x: x["prompt_tokens"])
    return x["prefill_s"] * (n_layers / m["layers"]) * (L / x["prompt_tokens"]) ** 2


def step_long(r):
    """The first --long-layers layers of the run's model, cut into a model of their
    own (the same weights, no second build), and one SnapKV prefill of --long-tokens
    in the time left; half of it (labelled) when the forecast says it will not fit."""
    if r.model_dir is None:
        raise RuntimeError("no model to cut the short model from")
    n = r.a.long_layers
    L, gen, chunk = r.a.long_tokens, 8, r.a.long_chunk
    d = Path(r.a.work) / f"cut_{n}layer"
    weights.cut_layers(r.model_dir, d, n, L + gen + 64, log=r.log)
    label, need = f"{L}", long_forecast(r, L, n)
    load_s = 20  # weights to the GPU and the CUDA start, a guess: logged against the actual
    if need is not None and need + load_s > r.left() - 5:
        half = L // 2
        need_half = long_forecast(r, half, n)
        r.log(f"long: {L} tokens need ~{need:.0f} s, {r.left():.0f} s left: {half} instead")
        label = f"{half} (short of time for {L}: forecast {need:.0f} s, {r.left():.0f} s left)"
        L, need = half, need_half
    plan = inspect_plan(r, d, L, "snapkv", gen, chunk)
    timeout = max(30.0, min(CAPS["long"], r.left() - 5))
    rows = snaptp_bench(r, d, ["snapkv"], [L], gen, chunk, timeout, "long")
    row = rows[0]
    r.res["rows"] = [x for x in r.res["rows"] if x is not row]  # reported on its own
    long = dict(layers=n, prompt_tokens=L, label=label, chunk=chunk, plan_bytes=plan,
                forecast_s=need, status=row["status"], prefill_s=row.get("prefill_s"),
                prefill_tokens_per_s=row.get("prefill_tokens_per_s"),
                decode_ms_per_token=row.get("decode_ms_per_token"),
                peak_gpu_bytes=row.get("peak_gpu_bytes"), peak_rss_bytes=row.get("peak_rss_bytes"))
    r.res["long"] = long
    r.log(f"long: {long}")
    return "ok" if row["status"] == "ok" else row["status"]


def step_serve(r):
    """If time remains: `snaptp serve` on the run's model at concurrency 1, 4, 16
    (serve_probe.py: standard-library HTTP, since no PyPI client reaches the GPU)."""
    import serve_probe
    if r.model_dir is None:
        raise RuntimeError("no model (the model step did not finish)")
    if r.left() < 45:
        r.error(f"serve: skipped, {r.left():.0f} s left")
        return "skipped (time)"
    tok = REPO.parent / "shared/tokenizers" / ("llama3" if not r.a.tiny else "llama2") / "tokenizer.json.gz"
    levels = [1, 4, 16] if not r.a.tiny else [1, 2]
    prompt, gen = (4096, 128) if not r.a.tiny else (200, 8)
    extra = ["--kv-memory", "60G"] if not r.a.tiny else ["--threads", "2"]
    extra += ["--budget", str(r.a.budget), "--window", str(r.a.window), "--kernel", str(r.a.kernel)]
    rows, rc, tail = serve_probe.run(r.a.snaptp, r.env, r.model_dir, tok, r.backend, levels, prompt,
                                     gen, "snapkv", min(CAPS["serve"], r.left() - 5), r.log, extra,
                                     vocab=400 if r.a.tiny else 100000)
    r.res["serve"] = dict(prompt_tokens=prompt, max_tokens=gen, policy="snapkv", rows=rows,
                          exit=rc, log_tail=tail,
                          client="bench/gpu/serve_probe.py (stdlib http.client, streamed)")
    ok = rows and all(x["status"] == "ok" for x in rows) and rc == 0
    return "ok" if ok else "failed"


STEPS = {
    "env": step_env, "cuda_ops": step_cuda_ops, "parity": step_parity, "tp2": step_tp2,
    "comm_select": step_comm_select, "hbm": step_hbm, "model": step_model,
    "snaptp": step_snaptp, "hf_full": lambda r: step_hf(r, "full"),
    "hf_snapkv": lambda r: step_hf(r, "snapkv"), "plan": step_plan, "long": step_long,
    "serve": step_serve,
}
assert set(STEPS) == set(CAPS) - {"cuda_ops_blocking", "cuda_ops_memcheck"}


def check_reference(r):
    """--tiny with torch only: hf_bench's selection against tests/gen_snapkv_golden.py's."""
    import hf_bench
    sys.path.insert(0, str(REPO / "tests"))
    import gen_snapkv_golden
    bad = hf_bench.check_selection(gen_snapkv_golden)
    r.res["meta"]["selection_check"] = f"{bad} of 10 cases differ from the golden reference"
    (r.error if bad else r.log)(f"selection check: {r.res['meta']['selection_check']}")


def default_work():
    """/dev/shm when it can hold the 8B and its 2-layer cut (about 19 GB; writing
    them to a disk could take minutes of device time), else /tmp."""
    try:
        if shutil.disk_usage("/dev/shm").free > (24 << 30):
            return "/dev/shm/snaptp_bench"
    except OSError:
        pass
    return "/tmp/snaptp_bench"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", choices=sorted(PHASES), default="all")
    ap.add_argument("--steps", help="space- or comma-separated steps (overrides --phase)")
    ap.add_argument("--tiny", action="store_true", help="CPU dry run, tiny shape")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "bench/out/gpu"))
    ap.add_argument("--work", default=default_work(),
                    help="weights and logs, not returned (default: /dev/shm when it has room)")
    ap.add_argument("--snaptp", help="binary (default .gpu/bin/snaptp, else build*/snaptp)")
    ap.add_argument("--debs", default=str(REPO / ".gpu/debs"))
    ap.add_argument("--rt-root", default="/tmp/snaptp-rt")
    ap.add_argument("--no-rt", action="store_true", help="use this machine's libraries")
    ap.add_argument("--with-rt", action="store_true",
                    help="--tiny with the carried libraries (a check of .gpu here)")
    ap.add_argument("--diag", choices=["on-failure", "always"], default="on-failure",
                    help="test_cuda_ops' blocking and memcheck reruns (always: the dry run)")
    ap.add_argument("--cap", action="append", default=[], metavar="STEP=S",
                    help="override a step's cap in seconds (the dry run tests the kill path)")
    ap.add_argument("--budget-s", type=float, default=530.0)
    ap.add_argument("--lengths", default="4096,32768,131072")
    ap.add_argument("--warmup", type=int, default=512, help="first, unreported length (0: none)")
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--budget", type=int, default=4096)
    ap.add_argument("--kernel", type=int, default=7)
    ap.add_argument("--pooling", default="max", choices=["max", "avg"])
    ap.add_argument("--long-tokens", type=int, default=1 << 20)
    ap.add_argument("--long-layers", type=int, default=2)
    ap.add_argument("--long-chunk", type=int, default=8192)
    a = ap.parse_args(argv)
    for c in a.cap:
        k, _, v = c.partition("=")
        if k not in CAPS or not v:
            ap.error(f"--cap {c}: expected STEP=SECONDS with STEP one of {' '.join(CAPS)}")
        CAPS[k] = float(v)
    if a.tiny:  # the same steps at a size the CPU runs in seconds (unless given)
        tiny = dict(lengths="256,1024", gen=4, warmup=64, chunk=128, budget=128, window=16,
                    long_tokens=4096, long_chunk=512, long_layers=1, budget_s=240.0)
        for k, v in tiny.items():
            if getattr(a, k) == ap.get_default(k):
                setattr(a, k, v)
        a.no_rt = not a.with_rt
    if not a.snaptp:
        cands = [REPO / ".gpu/bin/snaptp", REPO / "build/snaptp"] + sorted(REPO.glob("build*/snaptp"))
        a.snaptp = next((str(c) for c in cands if c.exists()), None)
        if not a.snaptp:
            ap.error("no snaptp binary: run bench/gpu/build_carry.sh, or give --snaptp")
    return a


def main(argv=None):
    a = parse_args(argv)
    r = Run(a)
    r.lengths = [int(x) for x in a.lengths.split(",") if x]
    r.steps = (a.steps.replace(",", " ") if a.steps else PHASES[a.phase]).split()
    unknown = [s for s in r.steps if s not in STEPS]
    if unknown:
        sys.exit(f"run_bench: unknown steps {unknown}; known: {' '.join(STEPS)}")
    r.log(f"run_bench {r.phase}: steps {' '.join(r.steps)}; budget {a.budget_s:.0f} s")
    if a.tiny and torch is not None:
        check_reference(r)
    signal.signal(signal.SIGALRM, _alarm)
    for s in r.steps:
        rec = r.res["steps"][s] = dict(status="running", cap_s=CAPS[s])
        if r.left() < 5:
            rec["status"] = "skipped (out of time)"
            r.error(f"{s}: skipped, out of time")
            r.save()
            continue
        if s != "env" and r.env is None:
            rec["status"] = "skipped (env failed)"
            r.save()
            continue
        r.log(f"--- {s} ({r.left():.0f} s left, cap {CAPS[s]} s)")
        t0 = time.monotonic()
        r.save()  # a kill during this step still shows it as the one running
        # The hard cap: SIGALRM interrupts Python code (torch, the readers) at the cap;
        # subprocesses carry their own timeouts, below it.
        signal.setitimer(signal.ITIMER_REAL, max(1.0, min(CAPS[s], r.left())) + 5)
        try:
            rec["status"] = STEPS[s](r) or "ok"
        except StepTimeout:
            rec["status"] = "timeout"
            r.error(f"{s}: stopped at its cap of {CAPS[s]} s")
        except Exception as e:  # one step's failure must not lose the others' results
            rec["status"] = "error"
            r.error(f"{s}: {type(e).__name__}: {e}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        rec["s"] = round(time.monotonic() - t0, 1)
        r.save()
    r.res["meta"]["wall_s"] = round(time.monotonic() - r.t0, 1)
    r.save()
    print()
    print(report.table(r.res))
    bad = [s for s, v in r.res["steps"].items() if v["status"] not in ("ok",)
           and not v["status"].startswith("skipped")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
