//! A real, throw-away PostgreSQL server for the tests: initdb + pg_ctl as
//! the unprivileged `postgres` user, on a free loopback port, socket and
//! data directory in a temporary directory, stopped on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// The newest `/usr/lib/postgresql/N/bin` holding a server. Fails (does not
/// skip) when PostgreSQL is missing: `.ci/run` installs it.
pub(super) fn pg_bindir() -> PathBuf {
    let mut best: Option<(u32, PathBuf)> = None;
    for e in std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
            let bin = e.path().join("bin");
            if bin.join("initdb").exists() && best.as_ref().is_none_or(|(b, _)| n > *b) {
                best = Some((n, bin));
            }
        }
    }
    best.map(|(_, b)| b).expect(
        "PostgreSQL is not installed (no /usr/lib/postgresql/N/bin/initdb): \
         install the `postgresql` package (.ci/run does) to run the pg tests",
    )
}

pub(super) fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A command run as `postgres` when we are root (initdb refuses root).
pub(super) fn as_pg_user(prog: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(prog);
        c
    } else {
        Command::new(prog)
    }
}

pub(super) fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running server; stopped (immediate mode) on drop.
pub(super) struct PgServer {
    dir: TempDir,
    pub(super) bindir: PathBuf,
    pub(super) port: u16,
}

impl PgServer {
    pub(super) fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `-c name=value` settings (for example
    /// `wal_level=replica` or an `archive_command`).
    pub(super) fn start_with(settings: &[&str]) -> Self {
        let bindir = pg_bindir();
        let dir = tempfile::tempdir().expect("tempdir");
        if is_root() {
            let st = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(st.success(), "chown postgres failed");
        }
        let data = dir.path().join("data");
        let out = as_pg_user(&bindir.join("initdb"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .expect("run initdb");
        check(&out, "initdb");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            dir.path().display()
        );
        for s in settings {
            opts.push_str(" -c ");
            opts.push_str(s);
        }
        let out = as_pg_user(&bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("log"))
            .args(["-w", "-o", &opts, "start"])
            .output()
            .expect("run pg_ctl");
        let server = Self { dir, bindir, port };
        if !out.status.success() {
            let log = std::fs::read_to_string(server.dir.path().join("log")).unwrap_or_default();
            panic!(
                "pg_ctl start failed: {}\n{log}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        server
    }

    /// The temporary directory holding `data/`, the socket and `log`.
    pub(super) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory.
    pub(super) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(super) fn dsn(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL (stopping at the first error) and returns the unaligned output.
    pub(super) fn sql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bindir.join("psql"))
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.dsn(db))
            .arg("-c")
            .arg(sql)
            .output()
            .expect("run psql");
        check(&out, &format!("psql {sql}"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = as_pg_user(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}
