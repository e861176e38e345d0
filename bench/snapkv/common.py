"""common: shared helpers of the SnapKV benchmarks (paths, running snaptp, token counts,
machine and load information, the per-run result cache under bench/out/snapkv/)."""

import datetime
import glob
import hashlib
import json
import os
import platform
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RESULTS = os.path.join(REPO, "bench", "results")
RAW = os.path.join(REPO, "bench", "out", "snapkv")  # gitignored: one JSON per run

# The qa user message, as launcher/cmd_qa.c builds it (used to count prompt tokens exactly
# before running; every run also records snaptp's own prompt_tokens).
QA_USER_FMT = "%s\n\nAnswer the question using the document above.\nQuestion: %s"

# snaptp's SnapKV defaults (README.md), used by every snapkv run here.
WINDOW, KERNEL, POOLING = 32, 7, "max"
DEFAULTS = (WINDOW, KERNEL, POOLING)

# (policy, budget) pairs of the accuracy grids; budget 0 = full KV.
CONFIGS = [("full", 0), ("snapkv", 256), ("snapkv", 512), ("snapkv", 1024)]


def config_name(policy, budget):
    """full, snapkv-<budget>, and a -w<window>-k<kernel>-<pooling> suffix when those are not
    the defaults above."""
    if policy == "full":
        return "full"
    name = "snapkv-%d" % budget
    if (WINDOW, KERNEL, POOLING) != DEFAULTS:
        name += "-w%d-k%d-%s" % (WINDOW, KERNEL, POOLING)
    return name


def add_grid_args(ap, prefix, max_tokens, seed):
    """The options niah.py and lines.py share: which configs run and how, and where
    the results go (each adds its own lengths and needle/line positions)."""
    ap.add_argument("--budgets", default="256,512,1024", help="snapkv budgets (full always runs)")
    ap.add_argument("--window", type=int, default=WINDOW)
    ap.add_argument("--kernel", type=int, default=KERNEL)
    ap.add_argument("--pooling", default=POOLING)
    ap.add_argument("--max-tokens", type=int, default=max_tokens)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=seed)
    ap.add_argument("--max-load", type=float, default=0, help="wait before each run while the "
                    "1-min load is above this (0: never wait)")
    ap.add_argument("--fresh", action="store_true", help="rerun even when a cached result exists")
    ap.add_argument("--out-dir", default=RESULTS, help="where the results go")
    ap.add_argument("--prefix", default=prefix, help="output file names: PREFIX.csv/.md(/.png)")


def apply_grid_args(args):
    """Sets the SnapKV settings of every qa command from add_grid_args' options;
    returns (binary, model, token counter, [(policy, budget)] configs)."""
    global WINDOW, KERNEL, POOLING
    WINDOW, KERNEL, POOLING = args.window, args.kernel, args.pooling
    os.makedirs(args.out_dir, exist_ok=True)
    binary, model = snaptp_bin(), model_path()
    configs = [("full", 0)] + [("snapkv", int(b)) for b in args.budgets.split(",") if b]
    return binary, model, TokenCounter(binary, model), configs


def snaptp_bin():
    """The snaptp binary: $SNAPTP_BIN, else the lead's build, else the newest build*/snaptp."""
    env = os.environ.get("SNAPTP_BIN")
    if env:
        return env
    lead = os.path.join(REPO, "build-lead", "snaptp")
    if os.access(lead, os.X_OK):
        return lead
    found = sorted(glob.glob(os.path.join(REPO, "build*", "snaptp")), key=os.path.getmtime)
    if not found:
        sys.exit("no snaptp binary: set SNAPTP_BIN or build one")
    return found[-1]


def model_path():
    """The SmolLM2-135M-Instruct GGUF: $SNAPTP_SMOLLM2_GGUF, else tests/fetch_smollm2.sh."""
    env = os.environ.get("SNAPTP_SMOLLM2_GGUF")
    if env:
        return env
    out = subprocess.run(["bash", os.path.join(REPO, "tests", "fetch_smollm2.sh")],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def machine():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip() + ", %d cores" % os.cpu_count()
    except OSError:
        pass
    return platform.processor() or "unknown"


def today():
    return datetime.date.today().isoformat()


def wait_for_load(limit, max_wait_s, log=True):
    """Sleep (up to max_wait_s) while the 1-minute load average is above limit, so long
    measurements start when the shared 2-core machine is quiet; returns the load then."""
    t0 = time.time()
    while loadavg()[0] > limit and time.time() - t0 < max_wait_s:
        if log:
            print("  load %.2f > %.2f, waiting" % (loadavg()[0], limit), file=sys.stderr)
        time.sleep(30)
    return loadavg()


class TokenCounter:
    """Counts the tokens of the qa chat prompt with `snaptp tokenize --chat` (memoised)."""

    def __init__(self, binary, model):
        self.binary, self.model, self.memo = binary, model, {}

    def ids(self, text, chat=True):
        key = (text, chat)
        if key not in self.memo:
            cmd = [self.binary, "tokenize", "--model", self.model, "--json"]
            if chat:
                cmd.append("--chat")
            out = subprocess.run(cmd, input=text, capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError("snaptp tokenize failed: %s" % out.stderr.strip())
            self.memo[key] = json.loads(out.stdout)
        return self.memo[key]

    def prompt_tokens(self, document, question):
        return len(self.ids(QA_USER_FMT % (document, question)))


def qa_command(binary, model, doc_path, question, policy, budget, max_tokens, threads):
    cmd = [binary, "qa", "--model", model, "--document", doc_path, "--question", question,
           "--kv-policy", policy, "--max-tokens", str(max_tokens), "--threads", str(threads),
           "--temperature", "0", "--json", "--quiet"]
    if policy == "snapkv":
        cmd += ["--budget", str(budget), "--window", str(WINDOW), "--kernel", str(KERNEL),
                "--pooling", POOLING]
    return cmd


def run_polling_rss(cmd, period_s=0.02):
    """Runs cmd while sampling /proc/<pid>/status every period_s: returns stdout, stderr, rc
    and the largest VmRSS, RssAnon and RssFile seen (bytes). ru_maxrss (snaptp's
    peak_rss_bytes) includes the transient file pages of loading the GGUF; RssAnon's peak
    is the run's own allocations (weights copy, activations, KV)."""
    import tempfile
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, text=True)
        peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
        n = 0
        while p.poll() is None:
            try:
                with open("/proc/%d/status" % p.pid) as f:
                    for line in f:
                        k = line.split(":", 1)[0]
                        if k in peak:
                            peak[k] = max(peak[k], int(line.split()[1]) * 1024)
                n += 1
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(period_s)
        fo.seek(0)
        fe.seek(0)
        polled = {"max_vmrss_bytes": peak["VmRSS"], "max_rss_anon_bytes": peak["RssAnon"],
                  "max_rss_file_bytes": peak["RssFile"], "samples": n, "period_s": period_s}
        return fo.read(), fe.read(), p.returncode, polled


def run_cached(task, key, cmd, stdin_text=None, fresh=False, poll_rss=False):
    """Runs cmd (a snaptp --json command) once per key: the parsed JSON, plus the load
    average before/after, wall time and the command, is kept in bench/out/snapkv/<task>/ and
    reused on later calls unless fresh. A failure is recorded too (rc, stderr) and returned
    with 'error' set; it is retried on the next call."""
    d = os.path.join(RAW, task)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, key + ".json")
    bin_sha = file_sha1(cmd[0]) if os.path.isfile(cmd[0]) else None
    if bin_sha is None and "mpirun" in os.path.basename(cmd[0]):
        bin_sha = next((file_sha1(c) for c in cmd if c.endswith("snaptp")), None)
    if not fresh and os.path.exists(path):
        with open(path) as f:
            rec = json.load(f)
        # A result counts only if the same snaptp binary made it (the lead rebuilds now and then);
        # records older than this field count if they are newer than the binary.
        if "binary_sha1" in rec:
            same = rec["binary_sha1"] == bin_sha
        else:
            same = os.path.getmtime(path) > os.path.getmtime(cmd[0])
        if "error" not in rec and same:
            return rec
        if not same:
            print("  stale (another snaptp binary): %s" % key, file=sys.stderr)
    load0 = loadavg()
    t0 = time.time()
    if poll_rss:
        stdout, stderr, rc, polled = run_polling_rss(cmd)
    else:
        out = subprocess.run(cmd, input=stdin_text, capture_output=True, text=True)
        stdout, stderr, rc, polled = out.stdout, out.stderr, out.returncode, None
    wall = time.time() - t0
    rec = {"cmd": cmd, "rc": rc, "wall_s": wall, "load_before": load0,
           "load_after": loadavg(), "binary_sha1": bin_sha,
           "date": datetime.datetime.now().isoformat(timespec="seconds")}
    if polled:
        rec["polled"] = polled
    if rc != 0:
        rec["error"] = stderr.strip()[-2000:]
    else:
        try:
            lines = [l for l in stdout.splitlines() if l.strip().startswith("{")]
            rec["result"] = [json.loads(l) for l in lines]
        except json.JSONDecodeError as e:
            rec["error"] = "bad JSON from snaptp: %s: %s" % (e, stdout[-500:])
    with open(path, "w") as f:
        json.dump(rec, f, indent=1)
    return rec


def file_sha1(path):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def short_hash(*parts):
    return hashlib.sha1("\x00".join(str(p) for p in parts).encode()).hexdigest()[:10]


def shell_quote(cmd):
    import shlex
    return " ".join(shlex.quote(c) for c in cmd)
