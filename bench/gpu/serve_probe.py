"""serve_probe: the GPU plan's short `snaptp serve` check (step "serve").

The GPU machine reaches no package registry, so the benchmark clients of
bench/serve/ (from PyPI) cannot run there; this is the short stand-in the plan can
afford: one server on the run's model (--backend cuda), prompts of token ids (no
tokenizer difference to account for), streamed with the standard library's HTTP
client at a few concurrency levels, and per level the output tokens/s, time to
first token and inter-token latency (p50/p99) read off the SSE events' arrival
times. Its numbers are labelled as this probe's, not bench/serve's.
"""
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import threading
import time


def _pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def _stream_one(port, ids, max_tokens, policy, out):
    try:
        _stream(port, ids, max_tokens, policy, out)
    except Exception as e:  # recorded, so a failed request shows in the row
        out.append(dict(status=None, t0=0, times=[], tokens=0, error=f"{type(e).__name__}: {e}"))


def _stream(port, ids, max_tokens, policy, out):
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = json.dumps({"prompt": ids, "max_tokens": max_tokens, "ignore_eos": True,
                       "temperature": 0, "stream": True, "kv_policy": policy,
                       "stream_options": {"include_usage": True}})
    c.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    times, status, tokens = [], r.status, 0
    if status != 200:
        out.append(dict(status=status, t0=t0, times=[], tokens=0,
                        error=r.read()[:300].decode("utf-8", "replace")))
        return
    buf = b""
    while True:
        chunk = r.read1(65536) if hasattr(r, "read1") else r.read(1)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            if event.startswith(b"data: ") and event != b"data: [DONE]":
                js = json.loads(event[6:])
                # Text chunks (a token whose bytes end no character sends none yet).
                ch = js.get("choices") or [{}]
                if ch[0].get("text") and ch[0].get("finish_reason") is None:
                    times.append(time.perf_counter())
                if js.get("usage"):
                    tokens = js["usage"]["completion_tokens"]
    c.close()
    out.append(dict(status=status, t0=t0, times=times, tokens=tokens))


def run(snaptp, env, model_dir, tokenizer, backend, levels, prompt_tokens, max_tokens, policy,
        timeout_s, log, extra=(), vocab=1000):
    """One server, one level after another, prompts of ids in [10, vocab + 10);
    returns (rows, the server's exit code, its log's tail)."""
    cmd = [str(snaptp), "serve", "--model", str(model_dir), "--tokenizer", str(tokenizer),
           "--backend", backend, "--port", "0", "--max-seqs", str(max(levels)),
           "--chunk", str(max(512, max(levels))), *extra]
    logf = open(os.path.join(os.path.dirname(str(model_dir)), "serve_probe.log"), "w+")
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=logf, env=env,
                         start_new_session=True)
    t_end = time.monotonic() + timeout_s
    rows = []
    try:
        port = None
        while time.monotonic() < t_end and p.poll() is None:
            logf.seek(0)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", logf.read())
            if m:
                port = int(m.group(1))
                break
            time.sleep(0.2)
        if not port:
            logf.seek(0)
            raise RuntimeError("serve did not start: " + logf.read()[-600:])
        log(f"serve: listening on {port}")
        for c in levels:
            if time.monotonic() > t_end - 5:
                rows.append(dict(concurrency=c, status="not reached"))
                continue
            n_req = max(2, c)
            results, threads = [], []
            t0 = time.perf_counter()
            for i in range(n_req):
                ids = [(i * 7919 + j * 104729) % vocab + 10 for j in range(prompt_tokens)]
                # At most c at once: wait for a slot.
                while sum(t.is_alive() for t in threads) >= c:
                    time.sleep(0.01)
                th = threading.Thread(target=_stream_one,
                                      args=(port, ids, max_tokens, policy, results))
                threads.append(th)
                th.start()
            for th in threads:
                th.join(max(1.0, t_end - time.monotonic()))
            wall = time.perf_counter() - t0
            done = [x for x in results if x["status"] == 200 and x.get("tokens") == max_tokens
                    and x["times"]]
            ttft = [x["times"][0] - x["t0"] for x in done]
            itl = [b - a for x in done for a, b in zip(x["times"], x["times"][1:])]
            row = dict(concurrency=c, status="ok" if len(done) == n_req else "incomplete",
                       requests=n_req, completed=len(done), wall_s=round(wall, 3),
                       output_tokens_per_s=round(sum(x["tokens"] for x in done) / wall, 2),
                       ttft_p50_s=_pct(ttft, 50), ttft_p99_s=_pct(ttft, 99),
                       itl_p50_s=_pct(itl, 50), itl_p99_s=_pct(itl, 99),
                       itl_mean_s=statistics.mean(itl) if itl else None)
            errors = [x.get("error") for x in results if x.get("error")]
            if errors:
                row["errors"] = errors[:3]
            rows.append(row)
            log(f"serve: {row}")
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        logf.seek(0)
        tail = logf.read()[-400:]
        logf.close()
    return rows, p.returncode, tail
