#!/usr/bin/env python3
"""run_bench: snaptp against Hugging Face transformers on one GPU (tp = 1), on a random
Llama-3.1-8B-shaped model made on that machine. See bench/gpu/README.md for the
device calls that run it; nothing here has run on a GPU yet.

Steps (--phase picks a list, --steps overrides it):
  env            GPU, driver, versions; snaptp's shared libraries resolve (ldd)
  checks         tests/test_cuda_ops, tests/test_backend_parity (whole models, CPU vs
                 CUDA, on the golden models and SmolLM2-shaped random weights made
                 here) and tests/test_comm_select (SNAPTP_COMM=nccl on one GPU), when
                 carried beside the binary (build_carry.sh does)
  tp2            tests/test_tp under mpirun -np 2 on one GPU, host-staged all-reduce
                 (SNAPTP_COMM=mpi): tp = 2 against tp = 1 (carried orterun)
  hbm            device-to-device copy bandwidth (torch, 4 GiB, median of 20)
  model          random 8B model (transformers init, bf16, on the GPU), written as
                 safetensors to --work; kept, parked in host memory, for the HF steps
  snaptp_full    `snaptp bench --backend cuda` at --lengths, full KV
  snaptp_snapkv  the same with --kv-policy snapkv (budget 4096, window 32, kernel 7)
  plan           `snaptp inspect`'s memory plan for each of those runs
  hf_full        transformers (sdpa), full KV cache
  hf_snapkv      transformers with SnapKV applied per layer during prefill
  long           a 2-layer model of the same shape: 1M-token SnapKV prefill with
                 snaptp, its peak GPU memory against `snaptp inspect`'s plan
  ladder         the 8B with SnapKV at longer prompts (--ladder) while time remains
Phases: main = env checks hbm model snaptp_full snaptp_snapkv plan hf_full hf_snapkv;
        long = env hbm long ladder. --tiny runs every step on the CPU with the tiny
golden model's shape (a dry run of this script; numbers mean nothing).

Every step checks the time left (--budget-s) first and records what it skipped.
Results: OUT/results_<phase>.json, OUT/results_<phase>.md, OUT/log_<phase>.txt
(OUT: --out, else $OUT, else bench/out/gpu), rewritten after every step.
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

import torch  # noqa: E402

import report  # noqa: E402
import rt  # noqa: E402
import weights  # noqa: E402
from gpu_mem import GpuSampler  # noqa: E402

PHASES = {
    "main": "env checks tp2 hbm model snaptp_full snaptp_snapkv plan hf_full hf_snapkv",
    "long": "env hbm long ladder",
    "tiny": "env checks tp2 hbm model snaptp_full snaptp_snapkv plan hf_full hf_snapkv long ladder",
}
HF_RESERVE_S = 120  # kept for the HF steps while snaptp runs (their expected cost, 8B)


class Run:
    """The state of one invocation: arguments, clock, results, log."""

    def __init__(self, a):
        self.a = a
        self.t0 = time.monotonic()
        self.out = Path(a.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.phase = "tiny" if a.tiny else a.phase
        self.log_path = self.out / f"log_{self.phase}.txt"
        self.log_path.write_text("")
        self.device = "cpu" if a.tiny else "cuda"
        self.snap = dict(window=a.window, budget=a.budget, kernel=a.kernel, pooling=a.pooling)
        self.res = {"meta": {"phase": self.phase, "date": datetime.datetime.now().isoformat(
            timespec="seconds"), "host": platform.node(), "args": vars(a)},
            "rows": [], "errors": []}
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


# ---------------------------------------------------------------- steps


def step_env(r):
    meta = r.res["meta"]
    meta.update(python=platform.python_version(), torch=torch.__version__)
    try:
        import transformers
        meta["transformers"] = transformers.__version__
    except ImportError as e:
        r.error(f"transformers: {e}")
    if r.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
        p = torch.cuda.get_device_properties(0)
        meta.update(gpu=p.name, gpu_bytes=p.total_memory, sms=p.multi_processor_count)
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,"
                              "clocks.max.mem", "--format=csv,noheader"],
                             capture_output=True, text=True)
        meta["nvidia_smi"] = smi.stdout.strip()
    else:
        meta["gpu"] = "none (--tiny on the CPU)"
    meta["snaptp"] = str(r.a.snaptp)
    if not r.a.no_rt:
        root = rt.unpack(r.a.debs, r.a.rt_root, log=r.log)
        r.env = rt.snaptp_env(root)
    else:
        r.env = dict(os.environ)
    ldd = subprocess.run(["ldd", str(r.a.snaptp)], capture_output=True, text=True, env=r.env)
    missing = [ln.strip() for ln in ldd.stdout.splitlines() if "not found" in ln]
    meta["ldd_missing"] = missing
    if missing:  # the transformers steps can still run
        r.snaptp_broken = True
        r.error(f"snaptp's libraries do not resolve (its steps are skipped): {missing}")
    r.log(f"env: {meta.get('gpu')}, torch {meta['torch']}, transformers "
          f"{meta.get('transformers')}, snaptp {r.a.snaptp}: "
          f"{'libraries missing' if missing else 'all libraries found'}")


def parity_model(r):
    """SmolLM2-shaped random weights for test_backend_parity (the tiny shape in --tiny);
    their directory, or None when they could not be made."""
    import hf_bench
    try:
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
    except Exception as e:  # the op tests still run
        r.error(f"parity model: {e!r}")
        return None


def step_checks(r):
    """The CUDA backend's op test, the whole-model CPU-vs-CUDA parity test (golden
    models and SmolLM2-shaped random weights) and the NCCL selection test, when
    carried: a benchmark of kernels that compute the wrong thing means nothing."""
    checks = {}
    env = dict(r.env, SNAPTP_SOURCE_DIR=str(REPO))
    pm = parity_model(r)
    if pm:
        env["SNAPTP_PARITY_MODELS"] = str(pm)
    for name, limit in (("test_cuda_ops", 150), ("test_backend_parity", 240),
                        ("test_comm_select", 90)):
        bindir = Path(r.a.snaptp).parent
        exe = next((e for e in (bindir / name, bindir / "tests" / name) if e.exists()), None)
        if exe is None:
            checks[name] = "not carried"
            continue
        try:
            p = subprocess.run([str(exe)], capture_output=True, text=True, env=env,
                               timeout=min(limit, max(10.0, r.left() - 300)))
            out = (p.stdout + p.stderr).strip().splitlines()
            checks[name] = f"exit {p.returncode}: {out[-1] if out else ''}"
            fails = [ln for ln in out if ln.startswith("FAIL")][:20]
            shown = out if name == "test_backend_parity" else out[-6:]  # its per-model lines
            r.log(f"{name}: exit {p.returncode}\n    " + "\n    ".join(fails + shown))
            if p.returncode != 0:
                r.error(f"{name} failed: {checks[name]}")
        except subprocess.TimeoutExpired:
            checks[name] = f"timeout after {limit} s"
            r.error(f"{name}: {checks[name]}")
    r.res["meta"]["checks"] = checks


def step_tp2(r):
    """tp = 2 on one GPU: tests/test_tp under mpirun -np 2 on the CUDA backend, both
    ranks on device 0 (the local rank wraps), all-reduces staged through host memory
    over MPI (SNAPTP_COMM=mpi): every rank's shard against the whole model. The GPU
    image has no MPI: mpirun (orterun) comes from the carried openmpi-bin."""
    checks = r.res["meta"].setdefault("checks", {})
    bindir = Path(r.a.snaptp).parent
    exe = next((e for e in (bindir / "test_tp", bindir / "tests" / "test_tp") if e.exists()), None)
    launcher = (str(Path(r.a.rt_root) / "usr/bin/orterun") if not r.a.no_rt
                else shutil.which("mpirun"))
    if exe is None or not launcher or not Path(launcher).exists():
        checks["test_tp_np2"] = "not carried" if exe is None else "no mpirun"
        r.log(f"tp2: {checks['test_tp_np2']}")
        return
    env = dict(r.env, SNAPTP_SOURCE_DIR=str(REPO), SNAPTP_TP_BACKEND=r.backend,
               SNAPTP_COMM="mpi", OMPI_MCA_btl="self,vader", OMPI_MCA_pml="ob1",
               OMPI_MCA_btl_vader_single_copy_mechanism="none")
    env.pop("OMPI_MCA_ess_singleton_isolated", None)  # mpirun starts these ranks
    cmd = [launcher, "--oversubscribe", "--bind-to", "none", "--allow-run-as-root", "-np", "2",
           str(exe)]
    limit = min(300, max(10.0, r.left() - 300))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=limit)
        out = (p.stdout + p.stderr).strip().splitlines()
        checks["test_tp_np2"] = f"exit {p.returncode}: {out[-1] if out else ''}"
        r.log(f"tp2 ({r.backend}, SNAPTP_COMM=mpi): exit {p.returncode}\n    " + "\n    ".join(out))
        if p.returncode != 0:
            r.error(f"test_tp at tp=2 failed: {checks['test_tp_np2']}")
    except subprocess.TimeoutExpired:
        checks["test_tp_np2"] = f"timeout after {limit:.0f} s"
        r.error(f"tp2: {checks['test_tp_np2']}")


def step_hbm(r):
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


def build_and_write(r, n_layers, n_ctx, subdir):
    """A random model on the device, written to --work/subdir. Returns (model, dir)."""
    import hf_bench
    shape = weights.TINY if r.a.tiny else weights.LLAMA3_8B
    cfg = weights.make_config(shape, n_layers=n_layers, n_ctx=n_ctx)
    t0 = time.perf_counter()
    torch.manual_seed(1234)
    model = hf_bench.make_model(cfg, r.device)
    t1 = time.perf_counter()
    d = Path(r.a.work) / subdir
    total, secs = weights.write_model(model, d, log=r.log)
    r.log(f"model {subdir}: {cfg.num_hidden_layers} layers, built in {t1 - t0:.1f} s, "
          f"{total / 2**30:.2f} GiB written in {secs:.1f} s to {d}")
    return model, d


def step_model(r):
    n_ctx = max(r.lengths + r.ladder) + r.a.gen + 64
    model, d = build_and_write(r, None, n_ctx, "llama8b" if not r.a.tiny else "tiny")
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


def snaptp_bench(r, model_dir, policy, lengths, gen, chunk, timeout_s, tag):
    """Runs `snaptp bench --json`, one row per length as its JSON line arrives (so a
    timeout keeps the lengths already done). Returns the rows."""
    cmd = [str(r.a.snaptp), "bench", "--model", str(model_dir), "--backend", r.backend,
           "--prompt-tokens", ",".join(str(n) for n in lengths), "--gen-tokens", str(gen),
           "--repeat", "1", "--chunk", str(chunk), "--json"]
    if policy == "snapkv":
        cmd += ["--kv-policy", "snapkv", "--window", str(r.a.window), "--budget",
                str(r.a.budget), "--kernel", str(r.a.kernel), "--pooling", r.a.pooling]
    if r.a.tiny:
        cmd += ["--threads", "2"]
    if r.snaptp_broken:
        r.error(f"{tag}: skipped, snaptp cannot start here")
        return [dict(system="snaptp", policy=policy, prompt_tokens=L, gen_tokens=gen,
                     chunk=chunk, status="not run", warmup=L == r.a.warmup) for L in lengths]
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
    while True:
        try:
            line = q.get(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
        except queue.Empty:
            if time.monotonic() > deadline:
                status = "timeout"
                os.killpg(p.pid, signal.SIGKILL)
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
        row = dict(system="snaptp", policy=policy, prompt_tokens=L, gen_tokens=o["gen_tokens"],
                   chunk=chunk,
                   prefill_tokens_per_s=tps, prefill_s=L / tps if tps else None,
                   decode_ms_per_token=1e3 / dtps if dtps else None, kv_bytes=o.get("kv_bytes"),
                   peak_gpu_bytes=proc_peak or dev_peak or None, peak_gpu_device_bytes=dev_peak,
                   peak_rss_bytes=o.get("peak_rss_bytes"), wall_s=time.monotonic() - t_seg,
                   warmup=L == r.a.warmup, status="ok")
        t_seg = time.monotonic()
        rows.append(row)
        r.log(f"{tag}: L={L}: prefill {row['prefill_tokens_per_s'] or 0:,.0f} tok/s, decode "
              f"{row['decode_ms_per_token'] or 0:.2f} ms/token, peak GPU "
              f"{(row['peak_gpu_bytes'] or 0) / 2**30:.2f} GiB")
    rc = p.wait()
    if sampler:
        sampler.stop()
    tail = err_path.read_text(errors="replace").strip().splitlines()[-12:]
    done = {row["prompt_tokens"] for row in rows}
    if rc != 0 or status != "ok":
        why = status if status != "ok" else f"exit {rc}"
        r.error(f"{tag}: snaptp {why} after lengths {sorted(done)}; stderr tail:\n    " +
                "\n    ".join(tail))
        pending = [L for L in lengths if L not in done]
        for i, L in enumerate(pending):
            rows.append(dict(system="snaptp", policy=policy, prompt_tokens=L, gen_tokens=gen,
                             chunk=chunk,
                             status=(why if i == 0 else "not reached"), warmup=L == r.a.warmup))
    return rows


def _bench_lengths(r):
    return ([r.a.warmup] if r.a.warmup else []) + r.lengths


def step_snaptp(r, policy, share):
    later = HF_RESERVE_S if ("hf_full" in r.steps and not r.a.tiny) else 0
    timeout = (r.left() - later) * share
    if timeout < 30:
        r.error(f"snaptp_{policy}: skipped, {r.left():.0f} s left")
        return
    r.res["rows"] += snaptp_bench(r, r.model_dir, policy, _bench_lengths(r), r.a.gen,
                                  r.a.chunk, timeout, f"snaptp_{policy}")


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
    p = subprocess.run(cmd, capture_output=True, text=True, env=r.env, timeout=120)
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


def step_hf(r, policy):
    import hf_bench
    if r.hf_model is None:
        r.error(f"hf_{policy}: no model (the model step did not run)")
        return
    if next(r.hf_model.parameters()).device.type != r.device:
        r.hf_model.to(r.device)
    last = None  # (L, prefill_s, decode_ms) of the previous length
    for i, L in enumerate(_bench_lengths(r)):
        if last:  # attention grows with L^2: a pessimistic forecast from the last run
            need = last[1] * (L / last[0]) ** 2 + r.a.gen * last[2] / 1e3 * (L / last[0]) + 5
            if need > r.left() - (5 if policy == "snapkv" else 60):
                r.error(f"hf_{policy}: L={L} skipped: needs ~{need:.0f} s, {r.left():.0f} s left")
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


def step_long(r):
    """A 2-layer model of the same shape, one SnapKV prefill of --long-tokens."""
    L, gen, chunk = r.a.long_tokens, 8, r.a.long_chunk
    model, d = build_and_write(r, 2, L + gen + 64, "llama_2layer")
    if "model" not in r.res:
        model_info(r, model.config, "random 8B shape, 2 layers")
    del model
    if r.device == "cuda":
        torch.cuda.empty_cache()
    plan = inspect_plan(r, d, L, "snapkv", gen, chunk)
    rows = snaptp_bench(r, d, "snapkv", [L], gen, chunk, max(30.0, r.left() - 20), "long")
    row = rows[0]
    long = dict(layers=2, prompt_tokens=L, chunk=chunk, plan_bytes=plan, status=row["status"],
                prefill_s=row.get("prefill_s"), prefill_tokens_per_s=row.get("prefill_tokens_per_s"),
                decode_ms_per_token=row.get("decode_ms_per_token"),
                peak_gpu_bytes=row.get("peak_gpu_bytes"), peak_rss_bytes=row.get("peak_rss_bytes"))
    r.res["long"] = long
    r.log(f"long: {long}")


def step_ladder(r):
    """SnapKV on the full-depth model at each --ladder length while time remains."""
    if not r.ladder:
        return
    if r.model_dir is None:
        if r.left() < 200 and not r.a.tiny:
            r.error(f"ladder: skipped, {r.left():.0f} s left (the 8B must be made first)")
            return
        r.lengths = []
        step_model(r)
        r.hf_model = None
        if r.device == "cuda":
            torch.cuda.empty_cache()
    timeout = r.left() - 10
    if timeout < 60:
        r.error(f"ladder: skipped, {r.left():.0f} s left")
        return
    r.res["rows"] += snaptp_bench(r, r.model_dir, "snapkv", r.ladder, r.a.gen, r.a.long_chunk,
                                  timeout, "ladder")
    step_plan(r)


STEPS = {
    "env": step_env, "checks": step_checks, "tp2": step_tp2, "hbm": step_hbm, "model": step_model,
    "snaptp_full": lambda r: step_snaptp(r, "full", 0.5),
    "snaptp_snapkv": lambda r: step_snaptp(r, "snapkv", 1.0),
    "plan": step_plan,
    "hf_full": lambda r: step_hf(r, "full"), "hf_snapkv": lambda r: step_hf(r, "snapkv"),
    "long": step_long, "ladder": step_ladder,
}


def check_reference(r):
    """--tiny only: hf_bench's selection against tests/gen_snapkv_golden.py's."""
    import hf_bench
    sys.path.insert(0, str(REPO / "tests"))
    import gen_snapkv_golden
    bad = hf_bench.check_selection(gen_snapkv_golden)
    r.res["meta"]["selection_check"] = f"{bad} of 10 cases differ from the golden reference"
    (r.error if bad else r.log)(f"selection check: {r.res['meta']['selection_check']}")


def default_work():
    """/dev/shm when it can hold the 8B and the 2-layer model (about 19 GB; writing
    them to a disk could take minutes of device time), else /tmp."""
    try:
        if shutil.disk_usage("/dev/shm").free > (24 << 30):
            return "/dev/shm/snaptp_bench"
    except OSError:
        pass
    return "/tmp/snaptp_bench"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", choices=["main", "long"], default="main")
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
    ap.add_argument("--budget-s", type=float, default=540.0)
    ap.add_argument("--lengths", default="4096,32768,131072")
    ap.add_argument("--warmup", type=int, default=512, help="first, unreported length (0: none)")
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--budget", type=int, default=4096)
    ap.add_argument("--kernel", type=int, default=7)
    ap.add_argument("--pooling", default="max", choices=["max", "avg"])
    ap.add_argument("--long-tokens", type=int, default=1 << 20)
    ap.add_argument("--long-chunk", type=int, default=8192)
    ap.add_argument("--ladder", default="262144,524288")
    a = ap.parse_args()
    if a.tiny:  # the same steps at a size the CPU runs in seconds (unless given)
        tiny = dict(lengths="256,1024", gen=4, warmup=64, chunk=128, budget=128, window=16,
                    long_tokens=4096, long_chunk=512, ladder="2048")
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


def main():
    a = parse_args()
    r = Run(a)
    r.backend = "cpu" if a.tiny else "cuda"
    r.lengths = [int(x) for x in a.lengths.split(",") if x]
    r.ladder = [int(x) for x in a.ladder.split(",") if x]
    r.steps = (a.steps.replace(",", " ") if a.steps else PHASES[r.phase]).split()
    r.log(f"run_bench {r.phase}: steps {' '.join(r.steps)}; budget {a.budget_s:.0f} s")
    if a.tiny:
        check_reference(r)
    for s in r.steps:
        if r.left() < 5:
            r.error(f"{s}: skipped, out of time")
            continue
        r.log(f"--- {s} ({r.left():.0f} s left)")
        try:
            STEPS[s](r)
        except Exception as e:  # one step's failure must not lose the others' results
            r.error(f"{s}: {type(e).__name__}: {e}")
            if s == "env":
                r.save()
                break
        r.save()
    r.save()
    print()
    print(report.table(r.res))
    return 1 if r.res["errors"] and not any(x.get("status") == "ok" for x in r.res["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
