#!/usr/bin/env python3
"""cairn in the shared backup-tool harness (../shared/bench/run.py).

Registers a `cairn` adapter with the shared harness and runs it, so cairn and
whichever anchors are installed (restic, borg, rustic, bupstash) go through the
same steps on the same corpus in one run:

    cargo build --release -p repo-cli
    python3 benches/harness.py --tools cairn,restic,borg --repeat all=3 \
        --restore-dir /dev/shm/bench-restore

Options are run.py's. The harness location defaults to ../shared/bench beside
the project; override with CAIRN_BENCH_HARNESS. The binary defaults to
target/release/cairn; override with CAIRN_BIN.
"""
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HARNESS = os.environ.get("CAIRN_BENCH_HARNESS", os.path.join(ROOT, "..", "shared", "bench"))
CAIRN = os.environ.get("CAIRN_BIN", os.path.join(ROOT, "target", "release", "cairn"))

spec = importlib.util.spec_from_file_location("run", os.path.join(HARNESS, "run.py"))
run = importlib.util.module_from_spec(spec)
sys.modules["run"] = run
spec.loader.exec_module(run)


@run.register
class Cairn(run.Tool):
    name, exe = "cairn", CAIRN
    note = ("defaults: FastCDC 512K/1M/8M keyed, BLAKE3-keyed ids, zstd -3, "
            "XChaCha20-Poly1305, 16 MiB packs, sorted-run index cache")

    def env(self, ctx):
        return {"CAIRN_PASSWORD": run.PASSWORD, "CAIRN_REPOSITORY": ctx.repo}

    def init(self, ctx):
        return [run.Cmd([ctx.exe, "init"])]

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


if __name__ == "__main__":
    run.main()
