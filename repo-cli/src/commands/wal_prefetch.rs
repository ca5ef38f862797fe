//! Read-ahead for `pg restore-wal --prefetch N` (SPEC §28.4.1): a detached
//! worker fetches the next segments into a spool directory in the data
//! directory while PostgreSQL replays, so the next `restore_command` only
//! checks a file and renames it.
//!
//! The spool, `pg_wal/cairn-prefetch/` (mode 0700), holds:
//! * `<segment>.<sha256 hex>`: a fetched, MAC-checked segment; the name
//!   carries its digest, checked again before it is served;
//! * `<segment>.part`: the one the worker is writing now;
//! * `want`: the last segment served and its size (the worker fetches the
//!   `depth` segments after it); removed by `--clean-spool` to stop it;
//! * `lock`: held (flock) by the worker while it runs: one at a time.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use repo_core::{WalFileKind, WalFileName, WalStore};
use sha2::{Digest, Sha256};

/// The spool's directory, under `pg_wal/`: PostgreSQL ignores names that
/// are not WAL files there, and base backups do not copy `pg_wal/`.
pub(super) const SPOOL_DIR: &str = "cairn-prefetch";
/// The worker exits after this long without a new segment asked for.
const IDLE_EXIT: Duration = Duration::from_secs(60);
/// How long the foreground waits for a segment the worker is fetching.
const WAIT_FOR_WORKER: Duration = Duration::from_secs(120);
/// The hidden flag that makes `restore-wal` the worker.
pub(super) const WORKER_FLAG: &str = "--prefetch-worker";

/// The spool of a data directory.
pub(super) struct Spool {
    dir: PathBuf,
}

/// `want`: the segment PostgreSQL was last given, and the segment size.
#[derive(Clone, PartialEq, Eq)]
struct Want {
    file: WalFileName,
    segment_size: u64,
}

impl Spool {
    pub(super) fn of(pgdata: &Path) -> Self {
        Self {
            dir: pgdata.join("pg_wal").join(SPOOL_DIR),
        }
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory (0700) unless it exists.
    pub(super) fn create(&self) -> Result<()> {
        match std::fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && self.dir.is_dir() => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot create {}", self.dir.display())),
        }
    }

    fn lock_file(&self) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(self.dir.join("lock"))
    }

    /// Whether a worker holds the lock now.
    fn worker_running(&self) -> bool {
        match self.lock_file() {
            Ok(f) => Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err(),
            Err(_) => false,
        }
    }

    fn part(&self, file: &WalFileName) -> PathBuf {
        self.dir.join(format!("{file}.part"))
    }

    /// The spooled copies of `file` (normally one), with their digests.
    fn spooled(&self, file: &WalFileName) -> Vec<(PathBuf, String)> {
        let prefix = format!("{file}.");
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let digest = name.strip_prefix(&prefix)?;
                (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| (e.path(), digest.to_string()))
            })
            .collect()
    }

    /// Waits while the worker is fetching `file`, so it is not fetched
    /// twice; returns at once when no worker is at it.
    pub(super) fn wait_for(&self, file: &WalFileName) {
        let t = Instant::now();
        while self.part(file).exists() && t.elapsed() < WAIT_FOR_WORKER {
            if !self.worker_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Moves the spooled `file` of cluster `sysid` to `dest` if it passes
    /// its checks (digest in its name, segment header, size); a copy that
    /// fails them is deleted and reported in the error list.
    pub(super) fn take(&self, file: &WalFileName, sysid: u64, dest: &Path) -> Taken {
        let mut rejected = Vec::new();
        for (path, digest) in self.spooled(file) {
            match check(&path, file, sysid, &digest) {
                Ok(()) => match std::fs::rename(&path, dest) {
                    Ok(()) => {
                        return Taken {
                            served: true,
                            rejected,
                        };
                    }
                    Err(e) => rejected.push(format!("cannot move {}: {e}", path.display())),
                },
                Err(e) => rejected.push(format!("{}: {e:#}", path.display())),
            }
            let _ = std::fs::remove_file(&path);
        }
        Taken {
            served: false,
            rejected,
        }
    }

    fn read_want(&self) -> Option<Want> {
        let text = std::fs::read_to_string(self.dir.join("want")).ok()?;
        let (name, size) = text.trim().split_once(' ')?;
        Some(Want {
            file: WalFileName::parse(name).ok()?,
            segment_size: size.parse().ok()?,
        })
    }

    fn write_want(&self, file: &WalFileName, segment_size: u64) -> Result<()> {
        let tmp = self.dir.join(format!("want.{}", std::process::id()));
        std::fs::write(&tmp, format!("{file} {segment_size}\n"))
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, self.dir.join("want"))
            .with_context(|| format!("cannot write {}", self.dir.join("want").display()))
    }

    /// PostgreSQL asks for `file`: a running worker moves its window past
    /// it at once (it does not fetch again what is being served).
    pub(super) fn asked(&self, file: &WalFileName) {
        if let Some(w) = self.read_want()
            && w.file.timeline() == file.timeline()
            && w.file.position() < file.position()
        {
            let _ = self.write_want(file, w.segment_size);
        }
    }

    /// Records that `file` (`segment_size` bytes) was served, deletes the
    /// spooled segments at or before it, and starts a worker unless one
    /// runs. Errors only cost the read-ahead.
    pub(super) fn served(&self, file: &WalFileName, segment_size: u64) -> Result<()> {
        self.write_want(file, segment_size)?;
        for e in std::fs::read_dir(&self.dir)?.filter_map(|e| e.ok()) {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((seg, rest)) = name.split_once('.') else {
                continue;
            };
            if rest == "part" {
                continue;
            }
            if let Ok(f) = WalFileName::parse(seg)
                && f.kind() == WalFileKind::Segment
                && f.position() <= file.position()
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
        if !self.worker_running() {
            spawn_worker()?;
        }
        Ok(())
    }

    /// `--clean-spool` (recovery_end_command): stops the worker and
    /// removes the spool.
    pub(super) fn clean(&self) -> Result<()> {
        if !self.dir.exists() {
            return Ok(());
        }
        // No `want`: the worker stops after the segment it is fetching.
        let _ = std::fs::remove_file(self.dir.join("want"));
        let t = Instant::now();
        while self.worker_running() && t.elapsed() < WAIT_FOR_WORKER {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("cannot remove {}", self.dir.display()))
    }

    /// The worker: fetches the segments after `want` into the spool until
    /// `want` is gone or nothing new was asked for a minute.
    pub(super) fn work(&self, store: &WalStore, sysid: u64, depth: u32) -> Result<()> {
        loop {
            let lock = match self.lock_file() {
                Ok(f) => f,
                Err(_) => return Ok(()),
            };
            // A foreground probing the lock holds it for an instant.
            let mut lock = Flock::lock(lock, FlockArg::LockExclusiveNonblock);
            for _ in 0..10 {
                match lock {
                    Ok(_) => break,
                    Err((f, _)) => {
                        std::thread::sleep(Duration::from_millis(10));
                        lock = Flock::lock(f, FlockArg::LockExclusiveNonblock);
                    }
                }
            }
            let Ok(lock) = lock else {
                return Ok(()); // another worker runs
            };
            let last = self.fetch_ahead(store, sysid, depth);
            drop(lock);
            // A segment served while we were leaving finds the lock held
            // and starts no worker: look once more after letting go.
            match (self.read_want(), last) {
                (Some(w), Some(l)) if w != l => continue,
                _ => return Ok(()),
            }
        }
    }

    /// The worker's loop under the lock; returns the last `want` seen.
    fn fetch_ahead(&self, store: &WalStore, sysid: u64, depth: u32) -> Option<Want> {
        let mut last: Option<Want> = None;
        // Where the archive ended (or failed) for the current `want`.
        let mut stop_at: Option<u64> = None;
        let mut idle = Instant::now();
        loop {
            let want = self.read_want()?;
            if last.as_ref() != Some(&want) {
                last = Some(want.clone());
                stop_at = None;
                idle = Instant::now();
            }
            let size = want.segment_size;
            let first = want.file.segment_number(size) + 1;
            // One listing per round, not one per segment of the window.
            let present: std::collections::HashSet<String> = std::fs::read_dir(&self.dir)
                .ok()?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.len() == 24 + 1 + 64)
                .map(|n| n[..24].to_string())
                .collect();
            let next = (first..first + u64::from(depth))
                .take_while(|n| stop_at.is_none_or(|s| *n < s))
                .map(|n| {
                    WalFileName::segment(want.file.timeline(), WalFileName::position_of(n, size))
                })
                .find(|f| !present.contains(f.as_str()));
            let Some(file) = next else {
                if idle.elapsed() > IDLE_EXIT {
                    return last;
                }
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            idle = Instant::now();
            match self.fetch_one(store, sysid, &file) {
                Ok(true) => {}
                // Missing (the end of the archive or of this timeline) or
                // failing: the foreground fetches it, and says why.
                Ok(false) | Err(_) => stop_at = Some(file.segment_number(size)),
            }
            if !self.dir.is_dir() {
                return None;
            }
        }
    }

    /// Fetches one segment into `<name>.part`, then renames it to
    /// `<name>.<digest>` once the store checked its MAC.
    fn fetch_one(&self, store: &WalStore, sysid: u64, file: &WalFileName) -> Result<bool> {
        let part = self.part(file);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&part)?;
        let mut w = Hashing {
            inner: std::io::BufWriter::with_capacity(1 << 20, f),
            hash: Sha256::new(),
        };
        let got = store.fetch_to(sysid, file, &mut w);
        let flushed = w.inner.flush();
        match (got, flushed) {
            (Ok(Some(_)), Ok(())) => {
                // PostgreSQL is past it already (served by a direct fetch);
                // the one it asks for now is kept: the foreground waits.
                if self
                    .read_want()
                    .is_some_and(|w| w.file.position() > file.position())
                {
                    let _ = std::fs::remove_file(&part);
                    return Ok(true);
                }
                let digest = hex(&w.hash.finalize());
                std::fs::rename(&part, self.dir.join(format!("{file}.{digest}")))?;
                Ok(true)
            }
            (got, flushed) => {
                let _ = std::fs::remove_file(&part);
                flushed?;
                Ok(got?.is_some())
            }
        }
    }
}

/// What [`Spool::take`] did.
pub(super) struct Taken {
    pub served: bool,
    /// Spooled copies that failed their checks (deleted).
    pub rejected: Vec<String>,
}

/// A spooled copy is served only when its digest, header and size match.
fn check(path: &Path, file: &WalFileName, sysid: u64, digest: &str) -> Result<()> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    let header = repo_core::parse_segment(file, &bytes)?;
    anyhow::ensure!(
        header.system_identifier == sysid,
        "system identifier {} is not the cluster's {sysid}",
        header.system_identifier
    );
    anyhow::ensure!(
        hex(&Sha256::digest(&bytes)) == digest.to_ascii_lowercase(),
        "its content does not match its digest"
    );
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Starts this very command line again with [`WORKER_FLAG`], detached:
/// stdio on /dev/null (PostgreSQL's log and `system()` must not wait for
/// it) and a new session (set by the worker). The credential reaches it as
/// it reached us (a key or password file, a command, the environment),
/// never as an argument.
fn spawn_worker() -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the cairn executable")?;
    Command::new(exe)
        .args(std::env::args_os().skip(1))
        .arg(WORKER_FLAG)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the prefetch worker")?;
    Ok(())
}

/// Leaves the caller's session (the worker, first thing).
pub(super) fn detach() {
    let _ = nix::unistd::setsid();
}
