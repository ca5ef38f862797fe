#!/usr/bin/env python3
"""cairn in an external backup-tool benchmark harness.

The harness is not part of this project. It is a Python program, `run.py`,
that generates a deterministic corpus (1 GiB by default: a pg_dump-like SQL
file, 100 binary files of mixed compressibility and 20,000 small text files;
seed 42), runs every registered tool through the same steps (initial backup,
backup with nothing changed, backup after a simulated day of changes, full
restore, a full data check, listing snapshots) and reports wall time, peak
RSS and repository size per step. It exposes `run.Tool`, `run.Cmd`,
`run.register`, `run.PASSWORD`, `run.tool_env`, `run.run_quiet` and
`run.main`, and has adapters of its own for restic, borg, rustic and bupstash
(the anchors), used when their binaries are installed.

This file registers a `cairn` adapter with it and runs it, so cairn and
the installed anchors go through the same steps on the same corpus in one run:

    cargo build --release -p repo-cli
    CAIRN_BENCH_HARNESS=/path/to/harness python3 benches/harness.py \
        --tools cairn,restic,borg,bupstash --repeat all=3 \
        --restore-dir /dev/shm/bench-restore

CAIRN_BENCH_HARNESS (required) names the directory holding `run.py`; the
options are run.py's. The binary defaults to target/release/cairn; override
with CAIRN_BIN. CAIRN_BENCH_INIT_ARGS adds arguments to the adapters' `cairn
init` (e.g. `--compression 1` to measure another zstd level).
"""
import importlib.util
import os
import shlex
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HARNESS = os.environ.get("CAIRN_BENCH_HARNESS")
if not HARNESS or not os.path.isfile(os.path.join(HARNESS, "run.py")):
    sys.exit("set CAIRN_BENCH_HARNESS to the directory of the benchmark harness's run.py "
             "(see this file's docstring)")
CAIRN = os.environ.get("CAIRN_BIN", os.path.join(ROOT, "target", "release", "cairn"))
INIT_ARGS = shlex.split(os.environ.get("CAIRN_BENCH_INIT_ARGS", ""))

spec = importlib.util.spec_from_file_location("run", os.path.join(HARNESS, "run.py"))
run = importlib.util.module_from_spec(spec)
sys.modules["run"] = run
spec.loader.exec_module(run)


@run.register
class Cairn(run.Tool):
    name, exe = "cairn", CAIRN
    note = ("defaults: FastCDC 512K/1M/8M keyed, BLAKE3-keyed ids, zstd -3, "
            "XChaCha20-Poly1305, 16 MiB packs, sorted-run index cache"
            + (f"; init {' '.join(INIT_ARGS)}" if INIT_ARGS else ""))

    def env(self, ctx):
        return {"CAIRN_PASSWORD": run.PASSWORD, "CAIRN_REPOSITORY": ctx.repo}

    def init(self, ctx):
        return [run.Cmd([ctx.exe, "init", *INIT_ARGS])]

    def backup(self, ctx, label):
        return run.Cmd([ctx.exe, "-q", "backup", "--host", "bench", "--tag", label, ctx.src])

    def restore(self, ctx, dst):
        return run.Cmd([ctx.exe, "-q", "restore", "latest", "--target", dst])

    def check(self, ctx):
        return run.Cmd([ctx.exe, "-q", "check", "--read-data"])

    def snapshots(self, ctx):
        return run.Cmd([ctx.exe, "snapshots"])

    def describe(self, ctx):
        return run.run_quiet([ctx.exe, "cat", "config"], env=run.tool_env(self, ctx))


@run.register
class CairnKeyFile(Cairn):
    """cairn opened with an unattended key (`key add --unattended`, SPEC §4.2),
    as a nightly plan or archive_command would: no password, no argon2 cost
    per command. The password only creates the repository and the key."""
    name = "cairn-keyfile"
    note = Cairn.note + "; opened with an unattended key file (--key-file), no argon2"

    def env(self, ctx):
        return {"CAIRN_REPOSITORY": ctx.repo,
                "CAIRN_KEY_FILE": os.path.join(ctx.home, "bench.key")}

    def init(self, ctx):
        exe, key = shlex.quote(ctx.exe), shlex.quote(os.path.join(ctx.home, "bench.key"))
        pw = "CAIRN_PASSWORD=" + shlex.quote(run.PASSWORD)
        init = " ".join([exe, "init", *map(shlex.quote, INIT_ARGS)])
        return [run.Cmd(f"{pw} {init} && env -u CAIRN_KEY_FILE {pw} {exe} -q key add "
                        f"--unattended --output {key}", shell=True)]


if __name__ == "__main__":
    run.main()
