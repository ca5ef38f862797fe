#!/usr/bin/env python3
"""cairn against restic (and rustic) on one Garage cluster: S3 benchmark.

Starts a 3-node Garage cluster on loopback (replication factor 3) in a
temporary directory, creates a bucket and a key with Garage's own CLI, and
runs every tool through the same steps on the same corpus against it:

    init, backup (initial), backup (nothing changed), restore,
    init of a second repository with the first one's chunker parameters,
    copy of every snapshot into it, a simulated day of changes,
    backup (after the day), copy of that day's snapshot.

Each step's wall time and peak RSS (of the tool's process, from wait4) are
measured, and so are the S3 requests it made: Garage's own counters
(`api_s3_request_counter` on the node the tools talk to), the same for every
tool, plus cairn's `requests` object from `--json` where cairn prints one.
Results go to DIR/results.json and DIR/results.md; the ratios of cairn to the
best anchor are printed next to the targets of issue 14.

    cargo build --release -p repo-cli
    python3 benches/s3.py --size 1G                 # loopback, no added latency
    python3 benches/s3.py --size 1G --rtt-ms 20     # through a 20 ms round-trip proxy

The corpus comes from the external harness's generator when
CAIRN_BENCH_HARNESS names a directory holding `gen_dataset.py` (the same
corpus as benches/harness.py), else from a small deterministic generator
built in here (see `builtin_generate`). Only the Python 3 standard library
is used. Tools: cairn (CAIRN_BIN, else target/release/cairn under
CARGO_TARGET_DIR or the workspace), restic and rustic from PATH (RESTIC_BIN,
RUSTIC_BIN); a missing tool is skipped and the run says so. Garage: the
GARAGE_BIN environment variable, else `garage` on PATH, else
~/.cargo/bin/garage.
"""
import argparse
import datetime
import hashlib
import json
import os
import queue
import random
import re
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PASSWORD = "cairn-s3-bench"
REGION = "garage"
BUCKET = "bench"

# Issue 14's targets: cairn's time (or count) divided by the best anchor's.
TARGETS = {
    "backup_initial": 0.6,
    "backup_nochange": 1.0,
    "restore": 0.5,
    "copy_day": 0.5,
}
REQUESTS_TARGET = ("backup_nochange", 1.0)  # requests, cairn / best anchor
RSS_TARGET_MIB = 150
REPEATABLE = ("backup_nochange", "restore")
STEPS = ["init", "backup_initial", "backup_nochange", "restore", "init_copy",
         "copy_initial", "backup_day", "copy_day"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_size(s):
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgG]?)(i?[bB])?\s*", s)
    if not m:
        sys.exit(f"bad size: {s}")
    return int(float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20,
                                    "g": 1 << 30}[m.group(2).lower()])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- Garage

class Garage:
    """A 3-node Garage cluster on loopback, replication factor 3.

    What Garage needs, as found when setting this up: one TOML file per node
    with `metadata_dir`, `data_dir`, `db_engine` (sqlite needs no tuning),
    `replication_factor`, an RPC address (bind and public, one free port
    each) and the same 64-hex-digit `rpc_secret` on every node; `[s3_api]`
    with `s3_region`, `api_bind_addr` and a `root_domain`; `[admin]` with
    `api_bind_addr`, `admin_token` and `metrics_token`. Each node runs
    `garage -c FILE server`. `node id -q` prints `ID@ADDR`; the first node
    connects to the others, every node gets `layout assign` into a zone of
    its own (so the three copies land on three nodes), and `layout apply`
    makes the layout live. `bucket create`, `key create` (prints "Key ID:"
    and "Secret key:") and `bucket allow --read --write --owner` give the
    tools a bucket; they reach it path-style at http://127.0.0.1:PORT with
    region `garage`.
    """

    def __init__(self, binary, root, compression="1"):
        self.bin, self.root = binary, root
        self.secret = secrets.token_hex(32)
        self.metrics_token = secrets.token_hex(16)
        self.nodes, self.procs = [], []
        for i in range(3):
            d = os.path.join(root, f"node{i}")
            os.makedirs(d)
            n = {"dir": d, "config": os.path.join(d, "garage.toml"),
                 "rpc": free_port(), "s3": free_port(), "admin": free_port()}
            with open(n["config"], "w") as f:
                f.write(f"""metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = 3
compression_level = {'"none"' if compression == "none" else int(compression)}
rpc_bind_addr = "127.0.0.1:{n['rpc']}"
rpc_public_addr = "127.0.0.1:{n['rpc']}"
rpc_secret = "{self.secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{n['s3']}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{n['admin']}"
admin_token = "{self.secret}"
metrics_token = "{self.metrics_token}"
""")
            self.nodes.append(n)

    def cli(self, *args, node=0, check=True):
        r = subprocess.run([self.bin, "-c", self.nodes[node]["config"], *args],
                           capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise RuntimeError(f"garage {' '.join(args)}: {r.stderr.strip()}")
        return r

    def wait(self, what, fn, timeout=90):
        end = time.time() + timeout
        while time.time() < end:
            try:
                v = fn()
                if v:
                    return v
            except (OSError, RuntimeError, subprocess.SubprocessError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"Garage: timed out waiting for {what}; logs in {self.root}")

    def start(self):
        for n in self.nodes:
            lf = open(os.path.join(n["dir"], "log"), "ab")
            self.procs.append(subprocess.Popen(
                [self.bin, "-c", n["config"], "server"], stdin=subprocess.DEVNULL,
                stdout=lf, stderr=lf, env={**os.environ, "RUST_LOG": "warn"}))
        ids = []
        for i in range(3):
            ids.append(self.wait(f"node {i}", lambda i=i: (
                lambda r: r.returncode == 0 and r.stdout.strip())(
                    self.cli("node", "id", "-q", node=i, check=False))))
        for peer in ids[1:]:
            self.wait("node connect", lambda p=peer: self.cli("node", "connect", p,
                                                              check=False).returncode == 0)
        for i, full in enumerate(ids):
            self.cli("layout", "assign", "-z", f"dc{i + 1}", "-c", "1G", full.split("@")[0])
        self.cli("layout", "apply", "--version", "1")
        for n in self.nodes:
            self.wait("health", lambda n=n: b"fully operational" in
                      urllib.request.urlopen(f"http://127.0.0.1:{n['admin']}/health",
                                             timeout=5).read())
        self.wait("bucket create", lambda: self.cli("bucket", "create", BUCKET,
                                                    check=False).returncode == 0)
        out = self.cli("key", "create", "bench").stdout
        field = lambda name: re.search(rf"{name}:\s*(\S+)", out).group(1)
        self.key_id, self.secret_key = field("Key ID"), field("Secret key")
        self.cli("bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "bench")

    def endpoint_port(self):
        return self.nodes[0]["s3"]

    def env(self):
        return {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}

    def requests(self):
        """S3 requests answered by node 0 so far, by API endpoint."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.nodes[0]['admin']}/metrics",
            headers={"Authorization": f"Bearer {self.metrics_token}"})
        text = urllib.request.urlopen(req, timeout=10).read().decode()
        counts = {}
        for line in text.splitlines():
            m = re.match(r'api_s3_request_counter\{([^}]*)\}\s+([0-9.e+]+)', line)
            if m:
                ep = re.search(r'api_endpoint="([^"]*)"', m.group(1))
                k = ep.group(1) if ep else "?"
                counts[k] = counts.get(k, 0) + int(float(m.group(2)))
        return counts

    def cpu_seconds(self):
        """User + system CPU seconds the three Garage servers have used so far
        (from /proc), so a step's server-side cost can be told from the
        tool's own on a machine where both share the cores."""
        tick, total = os.sysconf("SC_CLK_TCK"), 0.0
        for p in self.procs:
            try:
                with open(f"/proc/{p.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError, ValueError):
                pass
        return total

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def diff_counts(after, before):
    d = {k: v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in sorted(d.items()) if v}


# ---------------------------------------------------------------- proxy

class DelayProxy:
    """A TCP proxy adding `rtt_ms` to every round trip: each direction holds
    every chunk it forwards for half of it. A delay line, not a throttle: it
    keeps reading while earlier chunks wait, so bandwidth is not capped."""

    def __init__(self, target_port, rtt_ms):
        self.target, self.half = target_port, rtt_ms / 2000.0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            for a, b in ((c, s), (s, c)):
                a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                q = queue.Queue()
                threading.Thread(target=self.read, args=(a, q), daemon=True).start()
                threading.Thread(target=self.write, args=(q, b), daemon=True).start()

    def read(self, src, q):
        while True:
            try:
                data = src.recv(262144)
            except OSError:
                data = b""
            q.put((time.monotonic() + self.half, data))
            if not data:
                return

    def write(self, q, dst):
        while True:
            due, data = q.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                # The peer went away: drain so the reader is never blocked.
                while q.get()[1]:
                    pass
                return

    def close(self):
        self.sock.close()


class LoopbackQuickAck:
    """Sets the `quickack` attribute on the local routes of 127.0.0.0/8 (ip
    route, needs root), so the kernel acknowledges every loopback segment at
    once; `off` puts the routes back as they were. Only connections opened
    after `on` are affected, so it is set before Garage starts."""

    def __init__(self):
        self.saved = []

    def routes(self):
        out = subprocess.run(["ip", "route", "show", "table", "local"],
                             capture_output=True, text=True, check=True).stdout
        return [ln.split() for ln in out.splitlines()
                if ln.startswith("local 127.")]

    def on(self):
        for r in self.routes():
            self.saved.append(r)
            base = [w for i, w in enumerate(r)
                    if w != "quickack" and (i == 0 or r[i - 1] != "quickack")]
            subprocess.run(["ip", "route", "change", *base, "table", "local",
                            "quickack", "1"], check=True)

    def off(self):
        for r in self.saved:
            subprocess.run(["ip", "route", "change", *r, "table", "local"], check=False)


# ---------------------------------------------------------------- corpus

def builtin_generate(root, size, seed):
    """A deterministic corpus shaped like the harness's: 40 % one SQL-like
    text file, 40 % binary files mixing random, zero and repetitive blocks,
    20 % small text files in nested directories. A pure function of
    (size, seed); mtimes are fixed."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
             for _ in range(2000)]
    lines = [("\t".join([str(i), rng.choice(words), rng.choice(words) + "@example.org",
                         f"2024-{rng.randint(1, 12):02}-{rng.randint(1, 28):02}",
                         " ".join(rng.choices(words, k=rng.randint(3, 20)))]) + "\n").encode()
             for i in range(20000)]
    os.makedirs(os.path.join(root, "sql"))
    with open(os.path.join(root, "sql", "dump.sql"), "wb") as f:
        left, n = size * 40 // 100, 0
        while left > 0:
            block = b"".join(rng.choices(lines, k=2000))
            f.write(b"COPY public.t%d (id, name, email, day, note) FROM stdin;\n" % n)
            f.write(block[:left])
            f.write(b"\\.\n\n")
            left -= len(block)
            n += 1
    os.makedirs(os.path.join(root, "bin"))
    left, i = size * 40 // 100, 0
    while left > 0:
        n = min(left, int(2 ** rng.uniform(18, 24)))
        with open(os.path.join(root, "bin", f"f{i:03}.bin"), "wb") as f:
            f.write(binary_blocks(rng, f"{seed}-bin-{i}", n))
        left -= n
        i += 1
    left, i = size * 20 // 100, 0
    while left > 0:
        d = os.path.join(root, "small", f"d{rng.randrange(40):02}", f"e{rng.randrange(5)}")
        os.makedirs(d, exist_ok=True)
        body = b"".join(rng.choices(lines, k=rng.randint(5, 150)))
        with open(os.path.join(d, f"file{i:05}.txt"), "wb") as f:
            f.write(body)
        left -= len(body)
        i += 1
    set_mtimes(root, 1704067200)


def binary_blocks(rng, tag, n):
    out, k = [], 0
    while sum(map(len, out)) < n:
        r = rng.random()
        if r < 0.5:
            out.append(hashlib.shake_128(f"{tag}-{k}".encode()).digest(65536))
        elif r < 0.65:
            out.append(bytes(65536))
        else:
            out.append((b"%08d" % rng.randrange(10 ** 8)) * 8192)
        k += 1
    return b"".join(out)[:n]


def builtin_mutate(root, seed):
    """A day of changes: rows inserted in the middle of the SQL file, a few
    ranges overwritten in 2 % of the binary files, 1 % of the small files
    edited, 1 % deleted and 1 % added."""
    rng = random.Random(f"{seed}-day")
    sql = os.path.join(root, "sql", "dump.sql")
    with open(sql, "rb") as f:
        data = f.read()
    cuts = sorted(rng.randrange(len(data)) for _ in range(20))
    parts, last = [], 0
    for c in cuts:
        c = data.find(b"\n", c) + 1 or len(data)
        rows = (b"%d\tnew\trow\t2024-02-01\tday one\n" % rng.randrange(10 ** 9)
                for _ in range(200))
        parts += [data[last:c], b"".join(rows)]
        last = c
    with open(sql, "wb") as f:
        f.write(b"".join(parts) + data[last:])
    bins = sorted(os.listdir(os.path.join(root, "bin")))
    for name in rng.sample(bins, max(1, len(bins) // 50)):
        p = os.path.join(root, "bin", name)
        size = os.path.getsize(p)
        with open(p, "r+b") as f:
            for j in range(rng.randint(1, 8)):
                n = rng.randint(4096, 65536)
                f.seek(rng.randrange(max(1, size - n)))
                f.write(hashlib.shake_128(f"{seed}-day-{name}-{j}".encode()).digest(n))
    small = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(root, "small"))
                   for f in fs)
    k = max(1, len(small) // 100)
    for p in rng.sample(small, k):
        with open(p, "ab") as f:
            f.write(b"edited on day one\n")
    for p in rng.sample(small, k):
        os.remove(p)
    for j in range(k):
        with open(os.path.join(root, "small", f"new{j:04}.txt"), "wb") as f:
            f.write(b"new on day one %d\n" % j * 50)
    set_mtimes(root, 1704067200 + 86400)


def set_mtimes(root, t):
    for d, _, fs in os.walk(root):
        for f in fs:
            p = os.path.join(d, f)
            if os.stat(p).st_mtime != 1704067200 or t == 1704067200:
                os.utime(p, (t, t))


def manifest(root):
    """sha256 of every regular file, by path relative to root."""
    out = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            p = os.path.join(d, f)
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for b in iter(lambda: fh.read(1 << 20), b""):
                    h.update(b)
            out[os.path.relpath(p, root)] = h.hexdigest()
    return out


class Corpus:
    def __init__(self, root, size, seed):
        self.root, self.size, self.seed = root, size, seed
        h = os.environ.get("CAIRN_BENCH_HARNESS")
        self.gen = os.path.join(h, "gen_dataset.py") if h else None
        if self.gen and not os.path.isfile(self.gen):
            sys.exit(f"CAIRN_BENCH_HARNESS={h} holds no gen_dataset.py")
        self.kind = "harness gen_dataset.py" if self.gen else "built-in generator"

    def generate(self):
        if self.gen:
            subprocess.run([sys.executable, self.gen, "generate", self.root,
                            "--size", str(self.size), "--seed", str(self.seed)],
                           check=True, stdout=subprocess.DEVNULL)
        else:
            builtin_generate(self.root, self.size, self.seed)

    def mutate(self):
        if self.gen:
            subprocess.run([sys.executable, self.gen, "mutate", self.root, "--round", "1",
                            "--seed", str(self.seed)], check=True, stdout=subprocess.DEVNULL)
        else:
            builtin_mutate(self.root, self.seed)


# ---------------------------------------------------------------- tools

GNU_TIME = "/usr/bin/time"


def run_measured(argv, env, timeout):
    """Runs argv; returns (seconds, peak RSS in KiB, exit code, stdout, stderr,
    user + system CPU seconds of the tool and its children).

    The peak RSS comes from GNU time when it is there: Linux carries the
    high-water mark of the process that execs over to the program it runs,
    and Python starts children from (a vfork of) itself, so wait4's figure
    is never below this script's own peak, proxy buffers included. time is
    a small process; what it forks starts from almost nothing."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as rss_file:
        timed = os.access(GNU_TIME, os.X_OK)
        if timed:
            argv = [GNU_TIME, "-f", "%M", "-o", rss_file.name, *argv]
        t0 = time.monotonic()
        p = subprocess.Popen(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        rss = ru.ru_maxrss
        cpu = ru.ru_utime + ru.ru_stime
        if timed:
            lines = rss_file.read().split()
            rss = int(lines[-1]) if lines and lines[-1].isdigit() else 0
        out.seek(0)
        err.seek(0)
        return wall, rss, p.returncode, out.read().decode(errors="replace"), \
            err.read().decode(errors="replace"), cpu


class Tool:
    name = exe = None
    has_copy = False

    def __init__(self, exe, work, s3_url, aws_env, connections):
        self.exe, self.work, self.url, self.connections = exe, work, s3_url, connections
        self.pwfile = os.path.join(work, "password")
        with open(self.pwfile, "w") as f:
            f.write(PASSWORD + "\n")
        self.base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                         "HOME": work, "XDG_CACHE_HOME": os.path.join(work, "cache"),
                         "XDG_CONFIG_HOME": os.path.join(work, "config"), **aws_env}

    def repo(self, which):
        return f"{self.url}/{self.name}-{which}"

    def parse(self, step, stdout):
        """Extra numbers the tool reports about a step (cairn: requests)."""
        return {}


class Cairn(Tool):
    name = "cairn"

    def __init__(self, *a):
        super().__init__(*a)
        help_text = subprocess.run([self.exe, "--help"], capture_output=True, text=True).stdout
        self.has_connections = "--connections" in help_text
        self.has_copy = re.search(r"^\s+copy\s", help_text, re.M) is not None

    def env(self, which):
        return {**self.base_env, "CAIRN_PASSWORD": PASSWORD,
                "CAIRN_REPOSITORY": self.repo(which)}

    def g(self):
        return ["--connections", str(self.connections)] if (
            self.connections and self.has_connections) else []

    def commands(self, src, restore_dir):
        c = [self.exe, *self.g()]
        from_a = ["--from-repo", self.repo("a"), "--from-password-file", self.pwfile]
        return {
            "init": ("a", c + ["init"]),
            "backup_initial": ("a", c + ["backup", "--json", "--host", "bench", src]),
            "backup_nochange": ("a", c + ["backup", "--json", "--host", "bench", src]),
            "restore": ("a", c + ["restore", "--json", "latest", "--target", restore_dir]),
            "init_copy": ("b", c + ["init", "--copy-chunker-params", *from_a]),
            "copy_initial": ("b", c + ["copy", "--json", *from_a]),
            "backup_day": ("a", c + ["backup", "--json", "--host", "bench", src]),
            "copy_day": ("b", c + ["copy", "--json", *from_a]),
        }

    def parse(self, step, stdout):
        try:
            j = json.loads(stdout)
        except ValueError:
            return {}
        return {"tool_requests": j["requests"]} if isinstance(j, dict) and "requests" in j else {}


class Restic(Tool):
    name = "restic"
    has_copy = True

    def env(self, which):
        return {**self.base_env, "RESTIC_PASSWORD": PASSWORD,
                "RESTIC_REPOSITORY": self.repo(which),
                "RESTIC_CACHE_DIR": os.path.join(self.work, "cache")}

    def commands(self, src, restore_dir):
        c = [self.exe, "-q"]
        from_a = ["--from-repo", self.repo("a"), "--from-password-file", self.pwfile]
        return {
            "init": ("a", c + ["init"]),
            "backup_initial": ("a", c + ["backup", "--host", "bench", src]),
            "backup_nochange": ("a", c + ["backup", "--host", "bench", src]),
            "restore": ("a", c + ["restore", "latest", "--target", restore_dir]),
            "init_copy": ("b", c + ["init", "--copy-chunker-params", *from_a]),
            "copy_initial": ("b", c + ["copy", *from_a]),
            "backup_day": ("a", c + ["backup", "--host", "bench", src]),
            "copy_day": ("b", c + ["copy", *from_a]),
        }


class Rustic(Tool):
    """rustic reaches S3 through OpenDAL; it is configured by a profile file
    (`-P bench-a` reads $XDG_CONFIG_HOME/rustic/bench-a.toml). Not measured
    by the first runs recorded in benches/README.md: no rustic binary was installed."""
    name = "rustic"

    def __init__(self, *a):
        super().__init__(*a)
        m = re.match(r"s3:(https?://[^/]+)/([^/]+)(/.*)?", self.url)
        endpoint, bucket, prefix = m.group(1), m.group(2), m.group(3) or ""
        d = os.path.join(self.work, "config", "rustic")
        os.makedirs(d, exist_ok=True)
        for which in ("a", "b"):
            with open(os.path.join(d, f"bench-{which}.toml"), "w") as f:
                f.write(f"""[repository]
repository = "opendal:s3"
password = "{PASSWORD}"

[repository.options]
endpoint = "{endpoint}"
bucket = "{bucket}"
root = "{prefix}/{self.name}-{which}"
region = "{REGION}"
""")

    def env(self, which):
        return {**self.base_env, "RUSTIC_NO_PROGRESS": "true"}

    def commands(self, src, restore_dir):
        c = [self.exe, "-P", "bench-a"]
        return {
            "init": ("a", c + ["init"]),
            "backup_initial": ("a", c + ["backup", "--host", "bench", src]),
            "backup_nochange": ("a", c + ["backup", "--host", "bench", src]),
            "restore": ("a", c + ["restore", "latest", restore_dir]),
            "backup_day": ("a", c + ["backup", "--host", "bench", src]),
        }


TOOLS = {"cairn": Cairn, "restic": Restic, "rustic": Rustic}


def find_exe(name):
    if name == "cairn":
        if os.environ.get("CAIRN_BIN"):
            return os.environ["CAIRN_BIN"]
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        p = os.path.join(target, "release", "cairn")
        return p if os.access(p, os.X_OK) else None
    return os.environ.get(f"{name.upper()}_BIN") or shutil.which(name)


def find_garage():
    for p in (os.environ.get("GARAGE_BIN"), shutil.which("garage"),
              os.path.expanduser("~/.cargo/bin/garage")):
        if p and os.access(p, os.X_OK):
            return p
    sys.exit("no garage binary: install it with `cargo install --locked garage` "
             "or set GARAGE_BIN")


# ---------------------------------------------------------------- run

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tools", default="cairn,restic,rustic")
    ap.add_argument("--size", default="1G", help="corpus size (default 1G)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--garage-compression", default="1",
                    help="Garage's compression_level: 1 (its default) or 'none'; every tool "
                         "sends encrypted data, which does not compress, so 'none' saves the "
                         "servers' CPU on the machine the tools share")
    ap.add_argument("--rtt-ms", type=float, default=0,
                    help="route every tool through a proxy adding this round trip")
    ap.add_argument("--connections", type=int, default=0,
                    help="cairn --connections N (default: cairn's own default)")
    ap.add_argument("--workdir", default=None, help="default: a new temporary directory")
    ap.add_argument("--out", default=None, help="results directory (default s3-bench-DATE)")
    ap.add_argument("--restore-dir", default=None,
                    help="where restores go (default: the work directory); "
                    "/dev/shm/... keeps disk writes out of the restore times")
    ap.add_argument("--timeout", type=int, default=3600, help="per command, seconds")
    ap.add_argument("--no-verify", action="store_true", help="skip comparing the restore")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the repeatable steps (%s) N times; report the median"
                    % ", ".join(REPEATABLE))
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--loopback-quickack", action="store_true",
                    help="(root) turn off delayed ACKs on the loopback routes for the run: "
                         "Garage's nodes talk to each other in small back-to-back writes "
                         "without TCP_NODELAY, so on loopback many requests wait 40 ms for a "
                         "delayed ACK, whichever tool sent them; restored afterwards")
    a = ap.parse_args()

    tools, skipped = [], {}
    for name in a.tools.split(","):
        if name not in TOOLS:
            sys.exit(f"unknown tool {name}; known: {','.join(TOOLS)}")
        exe = find_exe(name)
        if exe:
            tools.append((name, exe))
        else:
            skipped[name] = "binary not found"
            hint = "cargo build --release -p repo-cli" if name == "cairn" else "not on PATH"
            log(f"skipping {name}: no binary found ({hint})")
    if not tools:
        sys.exit("no tool to run")
    size = parse_size(a.size)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%MZ")
    out_dir = os.path.abspath(a.out or f"s3-bench-{stamp}")
    work = a.workdir or tempfile.mkdtemp(prefix="cairn-s3-bench-")
    os.makedirs(work, exist_ok=True)
    garage = Garage(find_garage(), os.path.join(work, "garage"), a.garage_compression)
    proxy = None
    results = {"started": stamp, "size": size, "seed": a.seed, "rtt_ms": a.rtt_ms,
               "garage_compression": a.garage_compression,
               "repeat": a.repeat, "restore_dir": a.restore_dir, "command": sys.argv[1:],
               "connections": a.connections or None, "load_before": os.getloadavg(),
               "skipped": skipped, "tools": {}}
    quickack = LoopbackQuickAck() if a.loopback_quickack else None
    results["loopback_quickack"] = bool(quickack)
    try:
        if quickack:
            quickack.on()
            log("loopback routes: quickack 1 (no delayed ACKs)")
        log(f"starting Garage (3 nodes, replication 3) in {garage.root}")
        garage.start()
        port = garage.endpoint_port()
        if a.rtt_ms > 0:
            proxy = DelayProxy(port, a.rtt_ms)
            port = proxy.port
            log(f"proxy on port {port}: +{a.rtt_ms:g} ms per round trip")
        url = f"s3:http://127.0.0.1:{port}/{BUCKET}"
        corpus = Corpus(os.path.join(work, "corpus"), size, a.seed)
        log(f"generating a {a.size} corpus ({corpus.kind}, seed {a.seed})")
        corpus.generate()
        results["corpus"] = corpus.kind
        src_manifest = None if a.no_verify else manifest(corpus.root)
        inst = {}
        for name, exe in tools:
            w = os.path.join(work, name)
            os.makedirs(w)
            inst[name] = TOOLS[name](exe, w, url, garage.env(), a.connections)
            results["tools"][name] = {"exe": exe, "version": version(exe), "steps": {}}
            if not inst[name].has_copy:
                log(f"{name}: no copy command here, copy steps skipped")
        restore_dir = {n: os.path.join(a.restore_dir or t.work, f"restore-{n}")
                       for n, t in inst.items()}
        cmds = {n: t.commands(corpus.root, restore_dir[n]) for n, t in inst.items()}

        def step(name, s):
            if s not in cmds[name] or (s.startswith(("copy", "init_copy")) and
                                       not inst[name].has_copy):
                return
            which, argv = cmds[name][s]
            t = inst[name]
            before, server_before = garage.requests(), garage.cpu_seconds()
            wall, rss, rc, out, err, cpu = run_measured(argv, t.env(which), a.timeout)
            server_cpu = garage.cpu_seconds() - server_before
            reqs = diff_counts(garage.requests(), before)
            r = {"seconds": round(wall, 3), "rss_kib": rss, "exit": rc,
                 "cpu_seconds": round(cpu, 2), "server_cpu_seconds": round(server_cpu, 2),
                 "requests": sum(reqs.values()), "requests_by_kind": reqs,
                 **t.parse(s, out)}
            if rc != 0:
                r["stderr"] = err[-2000:]
            if s == "restore" and src_manifest is not None and rc == 0:
                r["verified"] = verify(src_manifest, restore_dir[name], corpus.root)
            if s == "restore":
                shutil.rmtree(restore_dir[name], ignore_errors=True)
            results["tools"][name]["steps"].setdefault(s, []).append(r)
            log(f"{name:7} {s:16} {wall:8.2f} s  {rss / 1024:7.1f} MiB  "
                f"{r['requests']:6} requests  CPU {cpu:6.2f} s + Garage {server_cpu:6.2f} s  "
                f"exit {rc}"
                + (f"  restore {'identical' if r.get('verified') else 'DIFFERS'}"
                   if "verified" in r else ""))
            if rc != 0:
                log(f"  {err.strip().splitlines()[-1] if err.strip() else ''}")

        # A step is run by every tool before the next step starts, so load
        # that changes during the run hits all tools alike.
        for s in STEPS[:6]:
            for _ in range(a.repeat if s in REPEATABLE else 1):
                for name in inst:
                    step(name, s)
        log("simulating a day of changes")
        corpus.mutate()
        for s in STEPS[6:]:
            for name in inst:
                step(name, s)
        # Each step's figures are those of its median run; all runs are kept.
        for tr in results["tools"].values():
            for s, runs in tr["steps"].items():
                med = sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]
                tr["steps"][s] = {**med, "runs_seconds": [r["seconds"] for r in runs]} \
                    if len(runs) > 1 else med
    finally:
        if proxy:
            proxy.close()
        garage.stop()
        if quickack:
            quickack.off()
        results["load_after"] = os.getloadavg()
        results["rss_source"] = "GNU time %M" if os.access(GNU_TIME, os.X_OK) else \
            "wait4 (never below this script's own peak, reported as harness_rss_kib)"
        results["harness_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if not a.keep and not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
        if a.restore_dir and os.path.isdir(a.restore_dir) and not os.listdir(a.restore_dir):
            os.rmdir(a.restore_dir)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    md = report(results)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md)
    print()
    print(md)
    log(f"results in {out_dir}")


def version(exe):
    try:
        r = subprocess.run([exe, "version" if exe.endswith("restic") else "--version"],
                           capture_output=True, text=True, timeout=30)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def verify(src_manifest, target, src_root):
    """True when the restored tree equals the corpus. Tools restore below the
    target by the absolute path backed up; use that when it is there."""
    nested = os.path.join(target, src_root.lstrip("/"))
    return manifest(nested if os.path.isdir(nested) else target) == src_manifest


def report(res):
    tools = list(res["tools"])
    anchors = [t for t in tools if t != "cairn"]
    lines = [f"S3 benchmark {res['started']}: corpus {res['size'] / 2 ** 20:.0f} MiB "
             f"({res.get('corpus', '?')}, seed {res['seed']}), Garage 3 nodes / replication 3, "
             f"Garage compression_level {res.get('garage_compression', '1')}, "
             f"added round trip {res['rtt_ms']:g} ms, loopback delayed ACKs "
             f"{'off (--loopback-quickack)' if res.get('loopback_quickack') else 'on'}, load average "
             f"{res['load_before'][0]:.1f} before / {res['load_after'][0]:.1f} after.", ""]
    for name, skip in res["skipped"].items():
        lines.append(f"- {name}: skipped ({skip})")
    lines += ["", "| step | " + " | ".join(f"{t} s | {t} MiB | {t} req" for t in tools) + " |",
              "|---|" + "---:|" * (3 * len(tools))]
    for s in STEPS:
        row = []
        for t in tools:
            r = res["tools"][t]["steps"].get(s)
            if not r:
                row += ["–"] * 3
                continue
            sec = f"{r['seconds']:.2f}" + ("" if r["exit"] == 0 else f" (exit {r['exit']})")
            if len(r.get("runs_seconds", [])) > 1:
                sec += f" ({min(r['runs_seconds']):.2f}–{max(r['runs_seconds']):.2f})"
            row += [sec, f"{r['rss_kib'] / 1024:.0f}", str(r["requests"])]
        lines.append(f"| {s} | " + " | ".join(row) + " |")
    for s in ("backup_nochange", "copy_day"):
        kinds = [f"{t} {json.dumps(res['tools'][t]['steps'][s]['requests_by_kind'])}"
                 for t in tools if s in res["tools"][t]["steps"]]
        if kinds:
            lines += ["", f"Requests of {s} by S3 operation (Garage's count): " + "; ".join(kinds)]
    lines += ["", "CPU seconds (user + system) of the tool / of the three Garage servers during "
              "the step (median run): " + "; ".join(
                  f"{s}: " + ", ".join(
                      f"{t} {res['tools'][t]['steps'][s].get('cpu_seconds', 0):.2f} / "
                      f"{res['tools'][t]['steps'][s].get('server_cpu_seconds', 0):.2f}"
                      for t in tools if s in res["tools"][t]["steps"])
                  for s in STEPS if any(s in res["tools"][t]["steps"] for t in tools))]
    c = res["tools"].get("cairn", {}).get("steps", {})
    tr = {s: r["tool_requests"] for s, r in c.items() if "tool_requests" in r}
    if tr:
        lines += ["", "cairn's own count (`--json` `requests`): " + "; ".join(
            f"{s}: {sum(v for k, v in r.items() if not k.startswith('bytes'))} requests, "
            f"{r.get('bytes_sent', 0) / 2 ** 20:.1f} MiB sent, "
            f"{r.get('bytes_received', 0) / 2 ** 20:.1f} MiB received"
            for s, r in tr.items())]
    if c and anchors:
        lines += ["", "| cairn / best anchor | ratio | target | best anchor |",
                  "|---|---:|---:|---|"]

        def best(s, key):
            vals = [(res["tools"][t]["steps"][s][key], t) for t in anchors
                    if s in res["tools"][t]["steps"] and res["tools"][t]["steps"][s]["exit"] == 0]
            return min(vals) if vals else None

        for s, target in TARGETS.items():
            b = best(s, "seconds")
            if s in c and b and c[s]["exit"] == 0:
                ratio = c[s]["seconds"] / b[0]
                ok = "ok" if ratio <= target else "MISSED"
                lines.append(f"| {s} time | {ratio:.2f} | ≤ {target} ({ok}) | {b[1]} |")
        s, target = REQUESTS_TARGET
        b = best(s, "requests")
        if s in c and b:
            ratio = c[s]["requests"] / b[0] if b[0] else float("inf")
            lines.append(f"| {s} requests | {ratio:.2f} ({c[s]['requests']} vs {b[0]}) | "
                         f"≤ {target} ({'ok' if ratio <= target else 'MISSED'}) | {b[1]} |")
        peak = max(r["rss_kib"] for r in c.values()) / 1024
        lines.append(f"| cairn peak RSS (any step) | {peak:.0f} MiB | ≤ {RSS_TARGET_MIB} MiB "
                     f"({'ok' if peak <= RSS_TARGET_MIB else 'MISSED'}) | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
