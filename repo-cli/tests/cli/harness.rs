//! Runs `cairn` against a repository in a temporary directory.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

/// The password every test repository uses.
pub const PASSWORD: &str = "correct horse battery staple";

/// A temporary directory holding a repository (`repo/`), a cache
/// (`cache/`) and whatever source trees a test makes.
pub struct Env {
    pub dir: TempDir,
}

impl Env {
    /// A directory with no repository yet.
    pub fn empty() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A directory with an initialized repository.
    pub fn init() -> Self {
        let env = Self::empty();
        env.ok(["init", "--kdf-memory", "64", "--kdf-iterations", "1"]);
        env
    }

    /// The repository path.
    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// A path inside the temporary directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `cairn -r REPO --cache-dir CACHE`, with a clean environment: only the
    /// password comes from `CAIRN_PASSWORD`.
    pub fn cmd(&self) -> Command {
        self.cmd_at(self.repo().as_os_str())
    }

    /// [`Env::cmd`] for the repository at `location` (a path or an `s3:`
    /// URL).
    pub fn cmd_at(&self, location: &OsStr) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        for v in [
            "CAIRN_REPOSITORY",
            "CAIRN_PASSWORD_FILE",
            "CAIRN_PASSWORD_COMMAND",
            "CAIRN_KEY_FILE",
            "CAIRN_KEY",
            "CAIRN_CACHE_DIR",
            "CAIRN_CONNECTIONS",
            "CAIRN_QDRANT_API_KEY",
            "CAIRN_PG_DSN",
            "CAIRN_REDIS_URL",
        ] {
            c.env_remove(v);
        }
        c.env("CAIRN_PASSWORD", PASSWORD)
            .arg("-r")
            .arg(location)
            .arg("--cache-dir")
            .arg(self.path("cache"))
            .stdin(Stdio::null());
        c
    }

    /// Runs with the given arguments.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd().args(args).output().expect("run cairn")
    }

    /// Runs and asserts success.
    pub fn ok<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.run(args);
        assert_success(&out);
        out
    }

    /// Runs with `input` on standard input.
    pub fn run_with_stdin<I, S>(&self, args: I, input: &[u8]) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
        child.wait_with_output().expect("wait cairn")
    }

    /// `--json` output parsed.
    pub fn json<I, S>(&self, args: I) -> serde_json::Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self
            .cmd()
            .arg("--json")
            .args(args)
            .output()
            .expect("run cairn");
        assert_success(&out);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Every snapshot, as `snapshots --json` prints them.
    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        self.json(["snapshots"]).as_array().expect("array").clone()
    }
}

/// Panics with the command's output unless it exited 0.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "cairn failed ({:?})\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes `content` to `path`, creating parent directories.
pub fn write(path: &Path, content: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("mkdir");
    }
    std::fs::write(path, content).expect("write");
}

/// The one snapshot in a backup-like command's `--json` report
/// (`{"snapshots": [...], "failed": [...]}`, docs/scripting.md).
pub fn only_snapshot(report: &serde_json::Value) -> serde_json::Value {
    let snaps = report["snapshots"].as_array().expect("snapshots array");
    assert_eq!(snaps.len(), 1, "expected one snapshot: {report}");
    assert_eq!(report["failed"], serde_json::json!([]), "{report}");
    snaps[0].clone()
}
