#!/usr/bin/env python3
"""Per-call cost of `cairn pg archive-wal` and `cairn pg restore-wal`.

PostgreSQL runs archive_command once per 16 MiB segment and restore_command
once per segment during recovery, each as a new process, so the wall time
of one call (open, unlock, one object) is what matters. This script times
each call as PostgreSQL would make it, into a fresh local repository, and
prints the median and the 99th percentile per segment, for:

  * random segments: a valid long page header, then 16 MiB of random bytes
    (incompressible: the worst case for zstd and for the bytes written);
  * real segments (--segments DIR): files PostgreSQL archived, e.g. with
    `archive_command = 'cp %p DIR/%f'` under pgbench.

The repository key is made with the default argon2id parameters (what a
password file costs per call) or, with --weak-kdf, with 64 KiB / 1 pass,
which stands in for an unattended credential without KDF cost; with
--key-file, every call uses an unattended key (`cairn key add --unattended`,
then CAIRN_KEY_FILE), as a PostgreSQL service would.

    cargo build --release -p repo-cli
    python3 benches/wal.py --count 50
    python3 benches/wal.py --count 50 --weak-kdf --segments /tmp/walsegs
    python3 benches/wal.py --count 50 --key-file --segments /tmp/walsegs

Only the Python 3 standard library is used. The binary is CAIRN_BIN, else
target/release/cairn under CARGO_TARGET_DIR or the workspace.
"""
import argparse
import os
import shutil
import statistics
import struct
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SEG = 16 << 20
SYSID = 7301234567890123456
PASSWORD = "wal bench password"


def cairn_bin():
    if os.environ.get("CAIRN_BIN"):
        return os.environ["CAIRN_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "cairn")


def random_segment(path, segno):
    """A segment of timeline 1 whose first page is a valid long header."""
    header = struct.pack("<HHIQI4xQII", 0xD110, 0x0002, 1, segno * SEG, 0, SYSID, SEG, 8192)
    with open(path, "wb") as f:
        f.write(header)
        f.write(os.urandom(SEG - len(header)))


def segment_name(segno):
    return "%08X%08X%08X" % (1, segno // 256, segno % 256)


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def timed(cmd, env, cwd):
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit("%s failed (%d): %s" % (" ".join(cmd), r.returncode, r.stderr.decode()))
    return dt


def run(label, files, args, exe, work):
    repo = os.path.join(work, "repo-" + label)
    pwfile = os.path.join(work, "pw")
    with open(pwfile, "w") as f:
        f.write(PASSWORD)
    env = {"PATH": os.environ.get("PATH", ""), "CAIRN_PASSWORD_FILE": pwfile,
           "CAIRN_REPOSITORY": repo, "HOME": work}
    init = [exe, "init"]
    if args.weak_kdf:
        init += ["--kdf-memory", "64", "--kdf-iterations", "1"]
    subprocess.run(init, env=env, check=True, stdout=subprocess.DEVNULL)
    if args.key_file:
        token = os.path.join(work, "token-" + label)
        subprocess.run([exe, "key", "add", "--unattended", "--output", token], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        env = dict(env, CAIRN_KEY_FILE=token)
        del env["CAIRN_PASSWORD_FILE"]
    archive, restore = [], []
    for path in files:
        archive.append(timed([exe, "pg", "archive-wal", path], env, os.path.dirname(path)))
    stored = sum(os.path.getsize(os.path.join(repo, "wal", n)) for n in os.listdir(os.path.join(repo, "wal"))
                 if not n.startswith("."))
    sysid = struct.unpack_from("<Q", open(files[0], "rb").read(32), 24)[0]
    dest = os.path.join(work, "RECOVERYXLOG")
    for path in files:
        name = os.path.basename(path)
        restore.append(timed([exe, "pg", "restore-wal", "--system-identifier", str(sysid), name, dest],
                             env, work))
        if args.compare and open(dest, "rb").read() != open(path, "rb").read():
            raise SystemExit("%s restored different bytes" % name)
    size = sum(os.path.getsize(p) for p in files)
    print("%-8s %3d segments, %7.1f MiB -> %7.1f MiB stored | archive-wal median %6.1f ms  p99 %6.1f ms"
          " | restore-wal median %6.1f ms  p99 %6.1f ms" % (
              label, len(files), size / 2**20, stored / 2**20,
              1000 * statistics.median(archive), 1000 * pct(archive, 99),
              1000 * statistics.median(restore), 1000 * pct(restore, 99)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=50, help="random segments (default 50)")
    ap.add_argument("--segments", help="a directory of real archived segments")
    ap.add_argument("--weak-kdf", action="store_true", help="key with 64 KiB / 1 pass argon2id")
    ap.add_argument("--key-file", action="store_true", help="archive and restore with an unattended key")
    ap.add_argument("--compare", action="store_true", help="compare every restored file")
    ap.add_argument("--work", help="scratch directory (default: a new one in $TMPDIR)")
    args = ap.parse_args()
    exe = cairn_bin()
    work = tempfile.mkdtemp(prefix="walbench-", dir=args.work)
    try:
        print("cairn %s, %s" % (exe, "unattended key" if args.key_file else
                                 ("weak" if args.weak_kdf else "default") + " KDF"))
        if args.count:
            segdir = os.path.join(work, "random")
            os.makedirs(segdir)
            files = []
            for i in range(args.count):
                p = os.path.join(segdir, segment_name(i + 1))
                random_segment(p, i + 1)
                files.append(p)
            run("random", files, args, exe, work)
        if args.segments:
            files = sorted(os.path.join(args.segments, n) for n in os.listdir(args.segments)
                           if len(n) == 24)
            run("real", files, args, exe, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
