#!/usr/bin/env python3
"""PostgreSQL point-in-time recovery: cairn against pgBackRest and Barman.

Every tool gets its own throw-away PostgreSQL cluster (initdb as the
`postgres` user, loopback port, private socket directory) with the same
pgbench workload, and archives its WAL through its own `archive_command`:

    cairn              cairn --key-file TOKEN pg archive-wal %p   (unattended key)
    pgbackrest         pgbackrest archive-push %p, a full backup every day
    pgbackrest-incr    the same, but a full backup on day 1 and incremental ones after
    barman             cp %p to Barman's incoming directory; `barman archive-wal` files it

Every archive_command runs under a small wrapper that logs its wall time and
exit code, so the per-segment median and p99 are measured the same way for
every tool. A simulated day is a base backup followed by a pgbench period at
full speed (a fixed number of transactions, so every tool sees the same WAL
volume); while pgbench runs, pg_stat_archiver is sampled every 0.5 s and the
backlog (completed segments not archived yet) recorded. After the last day
the moment T is taken with the row count of pgbench_history, more pgbench
follows, and the cluster is restored to T into a new data directory, started
on another port and promoted; the wall time from the restore command to a
promoted, queryable server is the restore-to-time time, and the row count
must be T's. The restore is repeated --restore-repeat times (a new data
directory each time); the median and the range are reported, split into the
restore command and recovery (start, replay, promotion), with the number of
segments recovery fetched through restore_command (the server log's
"restored log file" lines).

The WAL between the last base backup and T is the same for every tool: the
clusters run with checkpoint_timeout = 1h and max_wal_size = 16GB, so no
checkpoint (and no burst of full-page writes after it) lands between the base
backup's own checkpoint and T at a moment that differs by tool.
pgBackRest runs at its defaults (no archive-async: its restore_command gets
one segment per call); cairn at its own (a local repository: no read-ahead),
or restore-cluster --prefetch N with --cairn-prefetch N. Repository bytes are the size of the tool's repository
directory (for cairn also the WAL it stores outside snapshots; for Barman its
whole home: base backups and WAL).

    cargo build --release -p repo-cli
    python3 benches/pitr.py                             # all tools, defaults below
    python3 benches/pitr.py --tools cairn,pgbackrest --days 7 --scale 20 \\
        --transactions 20000 --clients 4
    python3 benches/pitr.py --tools cairn,pgbackrest,pgbackrest-incr --days 7 --scale 10 \\
        --transactions 4000 --clients 4 --restore-repeat 5

Needs root (clusters and tools run as `postgres` through runuser), PostgreSQL
server binaries (/usr/lib/postgresql/N/bin), and for the anchors the Debian
packages `pgbackrest` and `barman`; a missing tool is skipped and the run
says so. cairn is CAIRN_BIN, else target/release/cairn under
CARGO_TARGET_DIR or the workspace; it needs `pg archive-wal`, `pg
basebackup` and `pg restore-cluster`. Results go to WORKDIR/results.json and
WORKDIR/results.md. Only the Python 3 standard library is used.
"""
import argparse
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PASSWORD = "cairn-pitr-bench"
ALL_TOOLS = ["cairn", "pgbackrest", "pgbackrest-incr", "barman"]


def pg_bindir():
    best = None
    for d in os.listdir("/usr/lib/postgresql"):
        b = f"/usr/lib/postgresql/{d}/bin"
        if d.isdigit() and os.path.exists(f"{b}/initdb") and (best is None or int(d) > best[0]):
            best = (int(d), b)
    if not best:
        sys.exit("no PostgreSQL server under /usr/lib/postgresql/N/bin")
    return best[1]


def cairn_bin():
    if os.environ.get("CAIRN_BIN"):
        return os.environ["CAIRN_BIN"]
    tgt = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(tgt, "release", "cairn")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def as_pg(argv, env=None, check=True, capture=True, timeout=None):
    """Runs argv as the postgres user, with `env` added (HOME included)."""
    full = ["runuser", "-u", "postgres", "--", "env"]
    full += [f"{k}={v}" for k, v in (env or {}).items()]
    full += argv
    r = subprocess.run(full, capture_output=capture, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(shlex.quote, argv))} failed ({r.returncode}):\n"
                           f"{r.stdout}\n{r.stderr}")
    return r


def du(path):
    total = 0
    for dp, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dp, f)).st_size
            except FileNotFoundError:
                pass
    return total


def segno(walname):
    """24-hex WAL file name -> segment number (16 MiB segments)."""
    return int(walname[8:16], 16) * 256 + int(walname[16:24], 16)


class Cluster:
    def __init__(self, bindir, datadir, sockdir, home):
        self.bin, self.data, self.sock, self.home = bindir, datadir, sockdir, home
        self.port = free_port()
        self.env = {"HOME": home, "PGHOST": sockdir, "PGUSER": "postgres"}

    def initdb(self, conf):
        as_pg([f"{self.bin}/initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
               "--no-sync"], env=self.env)
        with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as f:
            f.write(f"port = {self.port}\nunix_socket_directories = '{self.sock}'\n"
                    "listen_addresses = ''\nwal_level = replica\nmax_wal_senders = 4\n"
                    "archive_mode = on\nmax_wal_size = '16GB'\ncheckpoint_timeout = '1h'\n"
                    "fsync = on\n")
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")

    def start(self, data=None, port=None, extra=""):
        data = data or self.data
        port = port or self.port
        opts = f"-p {port} -k {self.sock} {extra}"
        as_pg([f"{self.bin}/pg_ctl", "-D", data, "-l", f"{data}.log", "-w", "-t", "3600",
               "-o", opts, "start"], env=self.env)

    def stop(self, data=None):
        as_pg([f"{self.bin}/pg_ctl", "-D", data or self.data, "-m", "fast", "-w", "stop"],
              env=self.env, check=False)

    def sql(self, q, port=None, db="postgres"):
        r = as_pg([f"{self.bin}/psql", "-X", "-At", "-p", str(port or self.port), "-d", db,
                   "-c", q], env=self.env)
        return r.stdout.strip()

    def dsn(self):
        return f"postgresql://postgres@/postgres?host={self.sock}&port={self.port}"


def wrapper_script(path, logfile):
    """archive_command wrapper: runs "$@", appends `microseconds rc` to logfile."""
    with open(path, "w") as f:
        f.write("#!/bin/sh\n"
                "s=$(date +%s%N)\n\"$@\"\nrc=$?\ne=$(date +%s%N)\n"
                f"echo \"$(( (e - s) / 1000 )) $rc\" >> {shlex.quote(logfile)}\n"
                "exit $rc\n")
    os.chmod(path, 0o755)


# --- tools ------------------------------------------------------------------

class Tool:
    name = ""

    def __init__(self, w, cl, args):
        self.w, self.cl, self.args = w, cl, args

    def available(self):
        return True

    def archive_command(self):
        raise NotImplementedError

    def pre_init(self):
        """Before initdb: the repository, configuration, credentials."""

    def setup(self):
        """After the cluster runs, before the first base backup."""

    def base_backup(self, day):
        raise NotImplementedError

    def after_day(self):
        """After a day's WAL is archived (Barman files its incoming WAL here)."""

    def repo_paths(self):
        raise NotImplementedError

    def restore(self, target_time, newdata):
        """Restores to target_time into newdata (not started)."""
        raise NotImplementedError


class Cairn(Tool):
    name = "cairn"

    def __init__(self, *a):
        super().__init__(*a)
        self.exe = os.path.join(self.w, "bin", "cairn")
        self.repo = os.path.join(self.w, "repo")
        self.key = os.path.join(self.w, "pg.key")

    def available(self):
        src = cairn_bin()
        if not os.path.exists(src):
            return f"no cairn binary at {src}"
        r = subprocess.run([src, "pg", "--help"], capture_output=True, text=True)
        missing = [c for c in ("archive-wal", "basebackup", "restore-cluster") if c not in r.stdout]
        if missing:
            return f"{src} has no `pg {'`, `pg '.join(missing)}` (merge the wal and base branches)"
        os.makedirs(os.path.dirname(self.exe), exist_ok=True)
        shutil.copy2(src, self.exe)
        os.chmod(self.exe, 0o755)
        return True

    def base(self):
        return [self.exe, "-r", self.repo, "--key-file", self.key, "-q"]

    def archive_command(self):
        return " ".join(map(shlex.quote, self.base() + ["pg", "archive-wal"])) + " %p"

    def pre_init(self):
        # The repository and its unattended key exist before the server archives.
        env = dict(self.cl.env, CAIRN_PASSWORD=PASSWORD)
        as_pg([self.exe, "-r", self.repo, "init"], env=env)
        as_pg([self.exe, "-r", self.repo, "key", "add", "--unattended", "--output", self.key],
              env=env)

    def base_backup(self, day):
        # --fast: an immediate checkpoint, as pgBackRest's start-fast and
        # Barman's immediate_checkpoint below.
        as_pg(self.base() + ["pg", "basebackup", "--fast", "--dsn", self.cl.dsn()], env=self.cl.env)

    def repo_paths(self):
        return [self.repo]

    def restore(self, target_time, newdata):
        extra = [] if self.args.cairn_prefetch is None else ["--prefetch", str(self.args.cairn_prefetch)]
        as_pg(self.base() + ["pg", "restore-cluster", "latest", "--pgdata", newdata,
                             "--target-time", target_time, "--target-action", "promote"] + extra,
              env=self.cl.env)


class PgBackRest(Tool):
    name = "pgbackrest"
    incremental = False

    def __init__(self, *a):
        super().__init__(*a)
        self.conf = os.path.join(self.w, "pgbackrest.conf")
        self.repo = os.path.join(self.w, "repo")

    def available(self):
        return True if shutil.which("pgbackrest") else "pgbackrest not installed (apt-get install pgbackrest)"

    def cmd(self, *rest):
        return ["pgbackrest", f"--config={self.conf}", "--stanza=bench", *rest]

    def pre_init(self):
        for d in ("repo", "log", "lock", "spool"):
            os.makedirs(os.path.join(self.w, d), exist_ok=True)
        with open(self.conf, "w") as f:
            f.write(f"[global]\nrepo1-path={self.repo}\nrepo1-retention-full=99\n"
                    f"log-path={self.w}/log\nlock-path={self.w}/lock\nspool-path={self.w}/spool\n"
                    "start-fast=y\nlog-level-console=warn\n"
                    f"[bench]\npg1-path={self.cl.data}\npg1-port={self.cl.port}\n"
                    f"pg1-socket-path={self.cl.sock}\n")
        subprocess.run(["chown", "-R", "postgres:postgres", self.w], check=True)

    def archive_command(self):
        return " ".join(map(shlex.quote, self.cmd("archive-push"))) + " %p"

    def setup(self):
        as_pg(self.cmd("stanza-create"), env=self.cl.env)

    def base_backup(self, day):
        kind = "incr" if self.incremental and day > 1 else "full"
        as_pg(self.cmd(f"--type={kind}", "backup"), env=self.cl.env)

    def repo_paths(self):
        return [self.repo]

    def restore(self, target_time, newdata):
        os.makedirs(newdata, mode=0o700)
        subprocess.run(["chown", "postgres:postgres", newdata], check=True)
        as_pg(self.cmd(f"--pg1-path={newdata}", "--type=time", f"--target={target_time}",
                       "--target-action=promote", "restore"), env=self.cl.env)


class PgBackRestIncr(PgBackRest):
    name = "pgbackrest-incr"
    incremental = True


class Barman(Tool):
    name = "barman"

    def __init__(self, *a):
        super().__init__(*a)
        self.conf = os.path.join(self.w, "barman.conf")
        self.home = os.path.join(self.w, "home")
        self.incoming = os.path.join(self.home, "pg", "incoming")

    def available(self):
        return True if shutil.which("barman") else "barman not installed (apt-get install barman)"

    def cmd(self, *rest):
        return ["barman", "-c", self.conf, "-q", *rest]

    def pre_init(self):
        os.makedirs(self.incoming, exist_ok=True)
        conninfo = f"host={self.cl.sock} port={self.cl.port} user=postgres dbname=postgres"
        with open(self.conf, "w") as f:
            f.write(f"[barman]\nbarman_home = {self.home}\nbarman_user = postgres\n"
                    f"log_file = {self.w}/barman.log\nlog_level = WARNING\n"
                    f"[pg]\ndescription = bench\nconninfo = {conninfo}\n"
                    f"streaming_conninfo = {conninfo}\nbackup_method = postgres\n"
                    "archiver = on\nstreaming_archiver = off\n"
                    "backup_options = concurrent_backup\nimmediate_checkpoint = true\n")
        subprocess.run(["chown", "-R", "postgres:postgres", self.w], check=True)

    def archive_command(self):
        inc = shlex.quote(self.incoming)
        return f"test ! -f {inc}/%f && cp %p {inc}/%f"

    def setup(self):
        # `barman backup` wants to have seen WAL arrive.
        self.cl.sql("SELECT pg_switch_wal()")
        time.sleep(2)
        self.after_day()

    def base_backup(self, day):
        # No --wait: that waits for WAL only `barman archive-wal` (cron) files.
        as_pg(self.cmd("backup", "pg"), env=self.cl.env, timeout=3600)

    def after_day(self):
        as_pg(self.cmd("archive-wal", "pg"), env=self.cl.env)

    def repo_paths(self):
        return [self.home]

    def restore(self, target_time, newdata):
        as_pg(self.cmd("recover", "--target-time", target_time, "--target-action", "promote",
                       "pg", "latest", newdata), env=self.cl.env)


TOOLS = {t.name: t for t in (Cairn, PgBackRest, PgBackRestIncr, Barman)}


# --- the run ------------------------------------------------------------------

def archiver_state(cl):
    row = cl.sql("SELECT archived_count, failed_count, "
                 "pg_walfile_name(pg_current_wal_lsn()) FROM pg_stat_archiver")
    archived, failed, current = row.split("|")
    return int(archived), int(failed), current


def ready(cl):
    """Completed segments waiting for archive_command: the backlog. (The
    archiver marks each with .ready and renames it .done once archived;
    pg_stat_archiver's last_archived_wal is not ordered, a .backup file may
    come after a newer segment.)"""
    d = os.path.join(cl.data, "pg_wal", "archive_status")
    return sum(1 for f in os.listdir(d) if f.endswith(".ready"))


def pgbench(cl, args, transactions, seed):
    """Runs pgbench at full speed while sampling the archiver; returns stats."""
    before = archiver_state(cl)
    cmd = ["runuser", "-u", "postgres", "--", "env", f"HOME={cl.home}", f"PGHOST={cl.sock}",
           f"{cl.bin}/pgbench", "-n", "-p", str(cl.port), "-c", str(args.clients),
           "-j", str(args.clients), "-t", str(transactions), f"--random-seed={seed}", "postgres"]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    max_behind, samples = 0, 0
    while p.poll() is None:
        time.sleep(0.5)
        samples += 1
        max_behind = max(max_behind, ready(cl))
    out = p.communicate()[0]
    if p.returncode != 0:
        raise RuntimeError(f"pgbench failed:\n{out}")
    elapsed = time.monotonic() - t0
    end_lsn = cl.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    # Let the archiver catch up: how long after pgbench stopped.
    t1 = time.monotonic()
    while ready(cl):
        if time.monotonic() - t1 > 1800:
            raise RuntimeError("archiving did not catch up within 30 minutes")
        time.sleep(0.2)
    catch_up = time.monotonic() - t1
    after = archiver_state(cl)
    tps = next((float(l.split("=")[1].split()[0]) for l in out.splitlines()
                if l.startswith("tps")), None)
    return {"seconds": elapsed, "tps": tps, "segments_written": segno(end_lsn) - segno(before[2]),
            "segments_archived": after[0] - before[0], "failed": after[1] - before[1],
            "max_backlog_segments": max_behind, "catch_up_s": catch_up, "samples": samples}


def wait_archived(cl, timeout=600):
    """Switches WAL and waits until every completed segment is archived."""
    cl.sql("SELECT pg_switch_wal()")
    t0 = time.monotonic()
    while ready(cl):
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"WAL not archived within {timeout} s")
        time.sleep(0.2)


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    k = min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))
    return xs[k]


def segments_fetched(logfile):
    """Segments the server got from restore_command (not history files)."""
    n = 0
    with open(logfile, errors="replace") as f:
        for line in f:
            i = line.find('restored log file "')
            if i >= 0 and len(line) > i + 43 and line[i + 43] == '"':
                n += 1
    return n


def restore_once(tool, cl, target, newdata, args):
    """Restores to target into newdata, starts it until promoted, counts.
    Dirty pages of what ran before (the cluster's shutdown checkpoint, the
    previous restore) are flushed first, so no restore pays for them."""
    if os.path.exists(f"{newdata}.log"):
        os.remove(f"{newdata}.log")  # pg_ctl -l appends; segments are counted in it
    os.sync()
    time.sleep(1)
    t0 = time.monotonic()
    tool.restore(target, newdata)
    command_s = time.monotonic() - t0
    subprocess.run(["chown", "-R", "postgres:postgres", newdata], check=True)
    os.chmod(newdata, 0o700)
    port = free_port()
    try:
        cl.start(data=newdata, port=port, extra="-c archive_mode=off")
        while cl.sql("SELECT pg_is_in_recovery()", port=port) == "t":
            time.sleep(0.05)
        total = time.monotonic() - t0
        got = int(cl.sql("SELECT count(*) FROM pgbench_history", port=port))
    finally:
        cl.stop(data=newdata)
    out = {"restore_s": total, "restore_command_s": command_s, "recovery_s": total - command_s,
           "segments_replayed": segments_fetched(f"{newdata}.log"), "rows": got,
           "loadavg_1min": float(open("/proc/loadavg").read().split()[0])}
    if not args.keep:
        shutil.rmtree(newdata, ignore_errors=True)
    return out


def run_tool(name, args, bindir):
    w = os.path.join(args.workdir, name)
    if os.path.exists(w):
        shutil.rmtree(w)
    os.makedirs(w)
    sock = os.path.join(w, "sock")
    home = os.path.join(w, "pghome")
    os.makedirs(sock)
    os.makedirs(home)
    subprocess.run(["chown", "-R", "postgres:postgres", w], check=True)
    cl = Cluster(bindir, os.path.join(w, "pgdata"), sock, home)
    tool = TOOLS[name](w, cl, args)
    ok = tool.available()
    if ok is not True:
        log(f"{name}: skipped: {ok}")
        return {"tool": name, "skipped": ok}
    subprocess.run(["chown", "-R", "postgres:postgres", w], check=True)
    tool.pre_init()
    subprocess.run(["chown", "-R", "postgres:postgres", w], check=True)
    timing_log = os.path.join(w, "archive-times.log")
    wrapper = os.path.join(w, "timed-archive")
    wrapper_script(wrapper, timing_log)
    cl.initdb({"archive_command": "'" + f"{wrapper} {tool.archive_command()}".replace("'", "''") + "'"})
    res = {"tool": name, "days": []}
    try:
        cl.start()
        tool.setup()
        log(f"{name}: pgbench -i -s {args.scale}")
        as_pg([f"{bindir}/pgbench", "-i", "-q", "-s", str(args.scale), "-p", str(cl.port),
               "postgres"], env=cl.env)
        wait_archived(cl)
        for day in range(1, args.days + 1):
            t0 = time.monotonic()
            tool.base_backup(day)
            bb = time.monotonic() - t0
            log(f"{name}: day {day}: base backup {bb:.1f} s; pgbench")
            st = pgbench(cl, args, args.transactions, seed=day)
            tool.after_day()
            st.update(day=day, base_backup_s=bb, repo_bytes=sum(du(p) for p in tool.repo_paths()))
            log(f"{name}: day {day}: {st['segments_archived']} segments in {st['seconds']:.1f} s "
                f"({st['tps']} tps), max backlog {st['max_backlog_segments']}, "
                f"caught up {st['catch_up_s']:.1f} s after; repository {st['repo_bytes'] / 2**20:.1f} MiB")
            res["days"].append(st)
        # The moment to restore to, then more work that must not show.
        time.sleep(1.1)
        target = cl.sql("SELECT now()::text")
        rows = int(cl.sql("SELECT count(*) FROM pgbench_history"))
        time.sleep(1.1)
        pgbench(cl, args, max(1, args.transactions // 4), seed=999)
        final_rows = int(cl.sql("SELECT count(*) FROM pgbench_history"))
        wait_archived(cl)
        tool.after_day()
        res["repo_bytes"] = sum(du(p) for p in tool.repo_paths())
        res["db_bytes"] = int(cl.sql("SELECT pg_database_size('postgres')"))
        cl.stop()
        # Restore to T on a new data directory and a new port, N times.
        log(f"{name}: restore to {target} ({rows} rows; {final_rows} at the end), "
            f"{args.restore_repeat} times")
        runs = []
        for i in range(args.restore_repeat):
            runs.append(restore_once(tool, cl, target, os.path.join(w, f"restored-{i}"), args))
            r = runs[-1]
            log(f"{name}: restore {i + 1}: {r['restore_s']:.2f} s ({r['restore_command_s']:.2f} s "
                f"the restore command, {r['recovery_s']:.2f} s recovery, "
                f"{r['segments_replayed']} segments fetched): {r['rows']} rows, expected {rows}; "
                f"load {r['loadavg_1min']}")
        res["restores"] = runs
        res["target"] = target
        for k in ("restore_s", "restore_command_s", "recovery_s"):
            xs = [r[k] for r in runs]
            res[k] = statistics.median(xs)
            res[k + "_range"] = [min(xs), max(xs)]
        res["segments_replayed"] = [r["segments_replayed"] for r in runs]
        got = runs[-1]["rows"]
        res.update(restore_rows=got, expected_rows=rows,
                   restore_ok=all(r["rows"] == rows for r in runs))
    except Exception as e:  # noqa: BLE001 - a failed tool is reported, the others still run
        res["error"] = str(e)[-2000:]
        log(f"{name}: FAILED: {res['error']}")
    finally:
        cl.stop()
    times = []
    fails = 0
    if os.path.exists(timing_log):
        for line in open(timing_log):
            us, rc = line.split()
            if rc == "0":
                times.append(int(us) / 1000)
            else:
                fails += 1
    res.update(archive_calls=len(times), archive_failures=fails,
               archive_median_ms=statistics.median(times) if times else None,
               archive_p99_ms=percentile(times, 99))
    if not args.keep:
        shutil.rmtree(os.path.join(w, "pgdata"), ignore_errors=True)
    return res


def restore_only(args, bindir):
    """--restore-only: the restores of an earlier run's WORKDIR again (its
    repositories stay; results.json names T and its rows), the tools taking
    turns each round so the machine's load falls on all of them alike."""
    with open(os.path.join(args.workdir, "results.json")) as f:
        earlier = {r["tool"]: r for r in json.load(f)["results"]}
    tools = []
    for name in args.tools.split(","):
        r = earlier.get(name, {})
        if "target" not in r:
            sys.exit(f"{name}: no restore target in {args.workdir}/results.json")
        w = os.path.join(args.workdir, name)
        cl = Cluster(bindir, os.path.join(w, "pgdata"), os.path.join(w, "sock"),
                     os.path.join(w, "pghome"))
        tool = TOOLS[name](w, cl, args)
        ok = tool.available()
        if ok is not True:
            sys.exit(f"{name}: {ok}")
        tools.append((name, tool, cl, r))
    runs = {name: [] for name, *_ in tools}
    for i in range(args.restore_repeat):
        for name, tool, cl, r in tools:
            x = restore_once(tool, cl, r["target"], os.path.join(tool.w, f"again-{i}"), args)
            runs[name].append(x)
            log(f"{name}: round {i + 1}: {x['restore_s']:.2f} s ({x['restore_command_s']:.2f} + "
                f"{x['recovery_s']:.2f}), {x['segments_replayed']} segments, rows "
                f"{'exact' if x['rows'] == r['expected_rows'] else x['rows']}, load {x['loadavg_1min']}")
    results = []
    for name, _, _, r in tools:
        res = {"tool": name, "restores": runs[name], "expected_rows": r["expected_rows"]}
        for k in ("restore_s", "restore_command_s", "recovery_s"):
            xs = [x[k] for x in runs[name]]
            res[k] = statistics.median(xs)
            res[k + "_range"] = [min(xs), max(xs)]
        res["segments_replayed"] = [x["segments_replayed"] for x in runs[name]]
        res["restore_ok"] = all(x["rows"] == r["expected_rows"] for x in runs[name])
        res["restore_rows"] = runs[name][-1]["rows"]
        results.append(res)
    lines = ["| tool | restore to T s, median (range) | restore command s | recovery s | "
             "segments fetched | rows at T |", "|---|---|---|---|---|---|"]
    for res in results:
        lines.append(f"| {res['tool']} | {rng(res, 'restore_s')} | {rng(res, 'restore_command_s')} | "
                     f"{rng(res, 'recovery_s')} | {'/'.join(map(str, res['segments_replayed']))} | "
                     f"{'exact' if res['restore_ok'] else 'WRONG'} |")
    md = "\n".join(lines)
    with open(os.path.join(args.workdir, "restore-only.json"), "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=1)
    print(md)


def fmt(v, spec="{:.1f}"):
    return "—" if v is None else spec.format(v)


def rng(r, k):
    if r.get(k) is None:
        return "—"
    lo, hi = r[k + "_range"]
    return f"{r[k]:.2f} ({lo:.2f}–{hi:.2f})"


def table(results):
    lines = ["| tool | segments/s while pgbench ran | max backlog (segments) | archive_command median / p99 ms | "
             "repository MiB after the week | restore to T s, median (range) | restore command s | "
             "recovery s | segments fetched | rows at T |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.get("skipped"):
            lines.append(f"| {r['tool']} | skipped: {r['skipped']} |||||||||")
            continue
        days = r.get("days", [])
        segs = sum(d["segments_archived"] for d in days)
        secs = sum(d["seconds"] + d["catch_up_s"] for d in days)
        rate = segs / secs if secs else None
        backlog_max = max((d["max_backlog_segments"] for d in days), default=None)
        ok = r.get("restore_ok")
        rows = "—" if ok is None else ("exact" if ok else f"{r['restore_rows']} ≠ {r['expected_rows']}")
        err = f" (failed: {r['error'][:80]})" if r.get("error") else ""
        lines.append(f"| {r['tool']}{err} | {fmt(rate)} | {fmt(backlog_max, '{}')} | "
                     f"{fmt(r.get('archive_median_ms'))} / {fmt(r.get('archive_p99_ms'))} | "
                     f"{fmt(r['repo_bytes'] / 2**20 if r.get('repo_bytes') else None)} | "
                     f"{rng(r, 'restore_s')} | {rng(r, 'restore_command_s')} | "
                     f"{rng(r, 'recovery_s')} | {'/'.join(map(str, r.get('segments_replayed', []))) or '—'} | "
                     f"{rows} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tools", default=",".join(ALL_TOOLS))
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--scale", type=int, default=20, help="pgbench -i scale (20: ~300 MB)")
    ap.add_argument("--transactions", type=int, default=20000, help="per client per day")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--workdir", default="/var/tmp/cairn-pitr-bench")
    ap.add_argument("--keep", action="store_true", help="keep the data directories")
    ap.add_argument("--restore-repeat", type=int, default=3,
                    help="restores to T per tool (median and range reported)")
    ap.add_argument("--cairn-prefetch", type=int, default=None,
                    help="restore-cluster --prefetch N for cairn [default: cairn's]")
    ap.add_argument("--restore-only", action="store_true",
                    help="only restore again, the tools taking turns, from an earlier run's "
                         "--workdir (its results.json names T)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the clusters and tools run as the postgres user through runuser")
    bindir = pg_bindir()
    if args.restore_only:
        return restore_only(args, bindir)
    os.makedirs(args.workdir, exist_ok=True)
    os.chmod(args.workdir, 0o755)
    results = []
    for name in args.tools.split(","):
        if name not in TOOLS:
            sys.exit(f"unknown tool {name}; known: {', '.join(ALL_TOOLS)}")
        results.append(run_tool(name, args, bindir))
        with open(os.path.join(args.workdir, "results.json"), "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    load = open("/proc/loadavg").read().split()[:3]
    md = table(results) + f"\n\nload average at the end: {' '.join(load)}"
    with open(os.path.join(args.workdir, "results.md"), "w") as f:
        f.write(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
