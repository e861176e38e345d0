#!/usr/bin/env python3
"""serve_check: snaptp serve against real clients (tests/test_serve.sh runs it).

OpenAI's own Python client and raw HTTP (http.client) against a served SmolLM2:
greedy text over HTTP equals `snaptp generate` for the same prompt, streamed and
not, for completions and chat; 8 concurrent requests (full and SnapKV caches) each
equal their own single-request output; every bad input gets a 4xx with an
OpenAI-style error and the server keeps serving; a client killed mid-stream frees
its KV (seen in /metrics); tp=3 under mpirun serves tp=1's text and drains on
SIGUSR1; SIGTERM drains the running request and exits 0.

Environment: SNAPTP_BIN, SNAPTP_SMOLLM2_GGUF, SNAPTP_SOURCE_DIR, MPI_FLAGS (the
mpirun flags of tests/mpi_env.sh, space-separated).
"""
import concurrent.futures
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

from openai import OpenAI, APIStatusError

BIN = os.environ["SNAPTP_BIN"]
GGUF = os.environ["SNAPTP_SMOLLM2_GGUF"]
SRC = os.environ.get("SNAPTP_SOURCE_DIR", ".")
MPI_FLAGS = os.environ.get("MPI_FLAGS", "").split()
KEY = "test-key-41"
FAILED = []


def check(ok, what):
    print(("ok   " if ok else "FAIL: ") + what, flush=True)
    if not ok:
        FAILED.append(what)
    return ok


class Server:
    """snaptp serve on a free port (--port 0: it prints the port it got)."""

    def __init__(self, extra=(), np=None):
        self.err = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        cmd = [BIN, "serve", "--model", GGUF, "--port", "0", "--max-seqs", "8",
               "--api-key", KEY, "--max-body", "1M", *extra]
        if np:
            cmd = ["mpirun", "-np", str(np), *MPI_FLAGS, *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.err,
                                     start_new_session=True)
        self.port = None
        deadline = time.time() + 120
        while time.time() < deadline and self.proc.poll() is None:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", open(self.err.name).read())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.1)
        if not self.port:
            raise RuntimeError("serve did not start:\n" + open(self.err.name).read())
        self.client = OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=KEY,
                             max_retries=0, timeout=300)

    def log(self):
        return open(self.err.name).read()

    def raw(self, method, path, body=None, headers=None, timeout=120):
        """One request over http.client: (status, parsed JSON or text, headers)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        h.update(headers or {})
        data = body if isinstance(body, (bytes, type(None))) else body.encode()
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        text = r.read().decode("utf-8", "replace")
        c.close()
        try:
            return r.status, json.loads(text), dict(r.getheaders())
        except ValueError:
            return r.status, text, dict(r.getheaders())

    def metrics(self):
        status, text, _ = self.raw("GET", "/metrics")
        out = {}
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
        return out

    def metric(self, name, **labels):
        for k, v in self.metrics().items():
            if k.split("{")[0] == name and all(f'{a}="{b}"' in k for a, b in labels.items()):
                return v
        return None

    def stop(self, sig=signal.SIGTERM, timeout=60):
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            return None


def generate(prompt, max_tokens, raw, np=None):
    """`snaptp generate --json`'s text for the same prompt, the reference."""
    cmd = [BIN, "generate", "--model", GGUF, "--prompt", prompt, "--max-tokens", str(max_tokens),
           "--json"] + (["--raw"] if raw else [])
    if np:
        cmd = ["mpirun", "-np", str(np), *MPI_FLAGS, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["text"]


def complete(srv, prompt, max_tokens, stream=False, chat=False, **extra):
    c = srv.client
    model = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if chat:
        msgs = [{"role": "user", "content": prompt}]
        if not stream:
            r = c.chat.completions.create(model=model, messages=msgs, max_tokens=max_tokens,
                                          temperature=0, extra_body=extra)
            return r.choices[0].message.content, r.usage.completion_tokens
        parts, usage = [], None
        for ch in c.chat.completions.create(model=model, messages=msgs, max_tokens=max_tokens,
                                            temperature=0, stream=True, extra_body=extra,
                                            stream_options={"include_usage": True}):
            if ch.choices and ch.choices[0].delta.content:
                parts.append(ch.choices[0].delta.content)
            if ch.usage:
                usage = ch.usage.completion_tokens
        return "".join(parts), usage
    if not stream:
        r = c.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0,
                                 extra_body=extra)
        return r.choices[0].text, r.usage.completion_tokens
    parts, usage = [], None
    for ch in c.completions.create(model=model, prompt=prompt, max_tokens=max_tokens,
                                   temperature=0, stream=True, extra_body=extra,
                                   stream_options={"include_usage": True}):
        if ch.choices:
            parts.append(ch.choices[0].text)
        if ch.usage:
            usage = ch.usage.completion_tokens
    return "".join(parts), usage


def check_parity(srv):
    p = "The three primary colors are"
    want = generate(p, 32, raw=True)
    for stream in (False, True):
        got, n = complete(srv, p, 32, stream=stream)
        check(got == want, f"completions (stream={stream}) equal snaptp generate --raw: {got!r}")
        check(n is not None and n > 0, f"completions (stream={stream}) report usage: {n} tokens")
    q = "Name one thing that is blue."
    want = generate(q, 32, raw=False)
    for stream in (False, True):
        got, _ = complete(srv, q, 32, stream=stream, chat=True)
        check(got == want, f"chat (stream={stream}) equals snaptp generate (chat): {got!r}")


def document_prompt(n_chars, question):
    text = open(os.path.join(SRC, "examples", "kestrel_ridge.md")).read()
    return text[:n_chars] + "\n\nQuestion: " + question + "\nAnswer:"


def check_concurrency(srv):
    prompts = [document_prompt(6000, "Who was the first director?"),  # ~1.4K tokens: SnapKV
               "Once upon a time",
               document_prompt(5000, "What is the observatory's name?"),
               "def fibonacci(n):",
               "List three rivers in Europe:",
               document_prompt(4500, "Where is the ridge?"),
               "The weather today is",
               "Translate to French: good morning"]
    policies = ["snapkv", "full", "full", "snapkv", "full", "snapkv", "full", "snapkv"]
    alone = [complete(srv, p, 24, kv_policy=k, ignore_eos=True)[0] for p, k in zip(prompts, policies)]
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        futs = [ex.submit(complete, srv, p, 24, i % 2 == 1, False, kv_policy=k, ignore_eos=True)
                for i, (p, k) in enumerate(zip(prompts, policies))]
        together = [f.result()[0] for f in futs]
    same = sum(a == b for a, b in zip(alone, together))
    check(same == 8, f"8 concurrent requests (4 streamed; full and SnapKV) equal their single-"
                     f"request outputs: {same}/8")
    for i, (a, b) in enumerate(zip(alone, together)):
        if a != b:
            print(f"  request {i}: alone {a!r}\n  together {b!r}")
    sizes = {}
    for policy in ("snapkv", "full"):
        r = srv.raw("POST", "/v1/completions", json.dumps(
            {"prompt": prompts[0], "max_tokens": 4, "kv_policy": policy, "snapkv_budget": 1024,
             "temperature": 0}))[1]
        sizes[policy] = (r["snaptp"]["kv_policy_run"], r["snaptp"]["kv_bytes"])
    check(sizes["snapkv"][0] == "snapkv" and sizes["full"][0] == "full"
          and sizes["snapkv"][1] < sizes["full"][1],
          f"a {r['usage']['prompt_tokens']}-token prompt: SnapKV at budget 1024 keeps "
          f"{sizes['snapkv'][1]} KV bytes, full {sizes['full'][1]}")
    m = srv.metrics()
    gen = srv.metric("snaptp_generation_tokens_total")
    ttft = srv.metric("snaptp_time_to_first_token_seconds_count")
    check(gen is not None and gen >= 16 * 24 and ttft is not None and ttft >= 16,
          f"/metrics counts them: {gen} tokens generated, {ttft} first tokens timed, "
          f"{len(m)} series")


def check_bad_input(srv):
    def expect(status, body, param=None, path="/v1/completions", headers=None, what=""):
        got, js, hdr = srv.raw("POST", path, body, headers)
        err = js.get("error", {}) if isinstance(js, dict) else {}
        ok = (got == status and isinstance(err.get("message"), str) and err.get("type")
              and (param is None or err.get("param") == param))
        check(ok, f"{what}: HTTP {got} {err.get('type')} param={err.get('param')!r}: "
                  f"{str(err.get('message'))[:110]}")
        return hdr

    expect(400, "{not json", what="malformed JSON")
    expect(400, "[1, 2]", what="a body that is not an object")
    expect(400, '{"prompt": "hi", "max_tokens": "ten"}', "max_tokens", what="max_tokens a string")
    expect(400, '{"prompt": 42}', "prompt", what="prompt a number")
    expect(400, '{"prompt": "hi", "temperature": "hot"}', "temperature", what="temperature a string")
    expect(400, '{"prompt": "hi", "max_tokens": -5}', "max_tokens", what="negative max_tokens")
    expect(400, '{"prompt": "hi", "max_tokens": 1000000000}', "max_tokens",
           what="max_tokens past the context")
    expect(400, json.dumps({"prompt": [17] * 9000, "max_tokens": 8}), "prompt",
           what="a 9000-token prompt over the 8192-token context")
    expect(400, '{"prompt": "hi", "n": 3}', "n", what="n = 3")
    expect(400, '{"messages": "hello"}', "messages", path="/v1/chat/completions",
           what="messages a string")
    expect(400, '{"prompt": "hi", "kv_policy": "lossy"}', "kv_policy", what="an unknown KV policy")
    expect(404, '{"model": "gpt-9", "prompt": "hi"}', "model", what="an unknown model name")
    expect(413, json.dumps({"prompt": "x" * (2 << 20)}), what="a 2 MiB body over --max-body 1M")
    expect(401, '{"prompt": "hi"}', headers={"Authorization": "Bearer wrong"}, what="a wrong API key")
    status, js, _ = srv.raw("GET", "/v1/nothing")
    check(status == 404 and "error" in js, f"an unknown route: HTTP {status}")
    got, _ = complete(srv, "The capital of Italy is", 8)
    check(len(got) > 0, f"the server still serves after the bad input: {got!r}")
    status, js, _ = srv.raw("GET", "/v1/models")
    check(status == 200 and js["data"][0]["id"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
          and js["data"][0]["root"] == GGUF, f"/v1/models: {js['data'][0]['id']}")
    status, js, _ = srv.raw("GET", "/health", headers={"Authorization": ""})
    check(status == 200 and js["status"] == "ok", f"/health without a key: {js}")


KILLED_CLIENT = r"""
import sys
from openai import OpenAI
c = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0)
s = c.completions.create(model="SmolLM2-135M-Instruct.Q4_1.gguf", prompt="Count: 1, 2, 3,",
                         max_tokens=4000, stream=True, extra_body={"ignore_eos": True})
for i, ch in enumerate(s):
    if i == 3:
        print("streaming", flush=True)
"""


def check_disconnect(srv):
    before = srv.metric("snaptp_request_success_total", finished_reason="cancelled") or 0
    p = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, f"http://127.0.0.1:{srv.port}/v1", KEY],
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    running = srv.metric("snaptp_num_requests_running")
    used = srv.metric("snaptp_kv_cache_bytes_used")
    p.kill()
    p.wait()
    t0 = time.time()
    while time.time() - t0 < 10:
        if srv.metric("snaptp_num_requests_running") == 0 and srv.metric("snaptp_kv_cache_bytes_used") == 0:
            break
        time.sleep(0.1)
    freed = time.time() - t0
    after = srv.metric("snaptp_request_success_total", finished_reason="cancelled")
    check(line.strip() == "streaming" and running == 1 and used > 0,
          f"a streaming client held {used:.0f} KV bytes before it was killed")
    check(srv.metric("snaptp_num_requests_running") == 0 and srv.metric("snaptp_kv_cache_bytes_used") == 0
          and after == before + 1,
          f"killed mid-stream (SIGKILL): its KV freed {freed:.2f} s later, cancelled "
          f"{before:.0f} -> {after:.0f} in /metrics")


def check_drain(srv):
    result = {}

    def long_request():
        result["r"] = srv.raw("POST", "/v1/completions", json.dumps(
            {"prompt": "Write a long story:", "max_tokens": 48, "ignore_eos": True}))

    t = threading.Thread(target=long_request)
    t.start()
    deadline = time.time() + 30
    while time.time() < deadline and srv.metric("snaptp_generation_tokens_total") is not None:
        if (srv.metric("snaptp_num_requests_running") or 0) >= 1:
            break
        time.sleep(0.02)
    code = srv.stop(signal.SIGTERM)
    t.join(60)
    status, js, _ = result.get("r", (None, {}, {}))
    n = js.get("usage", {}).get("completion_tokens") if isinstance(js, dict) else None
    check(status == 200 and n == 48, f"SIGTERM mid-request: the request completed ({status}, {n} tokens)")
    check(code == 0, f"SIGTERM: the server drained and exited {code}")
    check("drained, exiting" in srv.log(), "the server said it drained")


def main():
    srv = Server()
    print(f"# snaptp serve on port {srv.port}", flush=True)
    try:
        check_parity(srv)
        check_bad_input(srv)
        check_concurrency(srv)
        check_disconnect(srv)
        one = complete(srv, "The three primary colors are", 32)[0]
        check_drain(srv)
    finally:
        if srv.proc.poll() is None:
            srv.stop(signal.SIGKILL)
    if MPI_FLAGS:
        tp = Server(np=3)
        try:
            got = complete(tp, "The three primary colors are", 32)[0]
            ref3 = generate("The three primary colors are", 32, raw=True, np=3)
            check(got == ref3, f"tp=3 under mpirun serves what tp=3 generate gives: {got!r}")
            check(got == one, f"tp=3 serves tp=1's text: {got == one}")
            code = tp.stop(signal.SIGUSR1)
            check(code == 0 and "drained, exiting" in tp.log(),
                  f"tp=3: SIGUSR1 to mpirun (which passes it on) drains every rank, exit {code}")
        finally:
            if tp.proc.poll() is None:
                os.killpg(tp.proc.pid, signal.SIGKILL)
                print(tp.log())
    print(f"serve_check: {len(FAILED)} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
