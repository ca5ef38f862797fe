//! Restore drills (docs/check.md §4): restore a sample of a snapshot into a
//! scratch directory with the ordinary restore, then read it back and
//! compare every chunk with the snapshot's keyed chunk ids.

use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::ser_seconds;
use crate::cache::DrillRecord;
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::progress::Progress;
use crate::repository::{Repository, now_ns};
use crate::size::format_bytes as human_bytes;
use crate::snapshot::SnapshotEntry;
use crate::tree::{Node, NodeKind};

/// Which files a drill restores.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Sample {
    /// Every file of the snapshot.
    #[default]
    All,
    /// This many files (all when the snapshot has fewer).
    Count(u64),
    /// This share of the files (0 < f ≤ 1), each file drawn independently.
    Fraction(f64),
}

/// Parses `--sample`: `all`, a count (`100`) or a percentage (`5%`).
impl FromStr for Sample {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "sample {s:?}: {why} (expected all, a file count, or x%)"
            ))
        };
        if t.eq_ignore_ascii_case("all") {
            return Ok(Sample::All);
        }
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad("not a percentage"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad("the percentage must be above 0 and at most 100"));
            }
            return Ok(Sample::Fraction(p / 100.0));
        }
        let n: u64 = t.parse().map_err(|_| bad("not a number"))?;
        if n == 0 {
            return Err(bad("the count must not be zero"));
        }
        Ok(Sample::Count(n))
    }
}

/// Options for [`Repository::drill`].
#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// Which files to restore.
    pub sample: Sample,
    /// Where the scratch directory is made (`None`: the system's temporary
    /// directory). The drill creates a fresh directory inside and removes
    /// only that.
    pub scratch_dir: Option<PathBuf>,
    /// Seed of the sample (`None`: a random one, recorded in the report so
    /// the same sample can be drawn again).
    pub seed: Option<u64>,
}

/// A restored file that did not come back as the snapshot recorded it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DrillFailure {
    /// Path in the snapshot (lossy UTF-8).
    pub path: String,
    /// What differed or failed.
    pub reason: String,
}

/// What [`Repository::drill`] found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrillReport {
    /// The snapshot drilled.
    pub snapshot: SnapshotId,
    /// When the drill started, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// The sample's seed.
    pub seed: u64,
    /// Files in the snapshot.
    pub files_total: u64,
    /// Files restored and compared.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Time spent restoring.
    #[serde(rename = "restore_duration_s", serialize_with = "ser_seconds")]
    pub restore_duration: Duration,
    /// Total wall time (restore, comparison, clean-up).
    #[serde(rename = "duration_s", serialize_with = "ser_seconds")]
    pub duration: Duration,
    /// Files that differ or could not be restored.
    pub failures: Vec<DrillFailure>,
    /// True when every sampled file came back identical.
    pub ok: bool,
    /// The scratch directory used (removed afterwards).
    pub scratch_dir: String,
    /// Why the scratch directory could not be removed, if it could not.
    pub cleanup_error: Option<String>,
    /// Why the drill's verification record could not be stored in the
    /// repository (SPEC §32), if it could not; the drill itself stands.
    pub record_error: Option<String>,
}

impl fmt::Display for DrillReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.duration.as_secs_f64();
        writeln!(
            f,
            "drill of snapshot {}: {} of {} files ({}) restored and compared in {:.1}s{} (seed {})",
            self.snapshot.short(),
            self.files,
            self.files_total,
            human_bytes(self.bytes),
            secs,
            if secs > 0.0 {
                format!(", {}/s", human_bytes((self.bytes as f64 / secs) as u64))
            } else {
                String::new()
            },
            self.seed
        )?;
        for fl in &self.failures {
            writeln!(f, "FAILED {}: {}", fl.path, fl.reason)?;
        }
        if let Some(e) = &self.cleanup_error {
            writeln!(
                f,
                "warning: scratch directory {} not removed: {e}",
                self.scratch_dir
            )?;
        }
        if self.ok {
            write!(f, "ok: every restored byte matches the snapshot")
        } else {
            write!(
                f,
                "FAILED: {} file(s) differ or did not restore",
                self.failures.len()
            )
        }
    }
}

/// Removes a directory tree on drop, making read-only directories writable
/// first (restored modes may forbid deleting their contents).
struct Scratch {
    path: PathBuf,
    removed: Option<std::io::Result<()>>,
}

impl Scratch {
    fn remove(&mut self) -> std::io::Result<()> {
        if let Some(r) = &self.removed {
            return r
                .as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::new(e.kind(), e.to_string()));
        }
        let r = remove_tree(&self.path);
        let out = r
            .as_ref()
            .map(|_| ())
            .map_err(|e| std::io::Error::new(e.kind(), e.to_string()));
        self.removed = Some(r);
        out
    }
}

/// Removes the directory tree `top`, making each directory writable before
/// emptying it (restored modes may forbid deleting its contents). A restored
/// tree can be nested deeper than a path (PATH_MAX) or a thread's stack
/// reaches, so this neither recurses nor builds deep paths: the entries of a
/// non-empty subdirectory are moved up into `top`, until `top` is empty.
fn remove_tree(top: &Path) -> std::io::Result<()> {
    use std::io::ErrorKind;
    use std::os::unix::fs::PermissionsExt;
    let writable = |p: &Path| fs::set_permissions(p, fs::Permissions::from_mode(0o700));
    writable(top)?;
    let mut moved = 0u64;
    loop {
        let mut empty = true;
        for e in fs::read_dir(top)? {
            empty = false;
            let e = e?;
            let path = e.path();
            if !e.file_type()?.is_dir() {
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                    _ => continue,
                }
            }
            let _ = writable(&path);
            match fs::remove_dir(&path) {
                Ok(()) => continue,
                Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => {}
                Err(e) => return Err(e),
            }
            for c in fs::read_dir(&path)? {
                let from = c?.path();
                let to = loop {
                    moved += 1;
                    let to = top.join(format!(".cairn-drill-up-{moved}"));
                    if fs::symlink_metadata(&to).is_err() {
                        break to;
                    }
                };
                fs::rename(from, to)?;
            }
        }
        if empty {
            return fs::remove_dir(top);
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

/// Sample rank of a path: the first 8 bytes of BLAKE3(seed ‖ path). Files
/// with the lowest ranks are drawn, so a seed always draws the same files.
fn rank(seed: u64, path: &[u8]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(path);
    let b = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&b.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// `/a/b[1]` → a glob matching exactly that path (SPEC §16 globs).
fn literal_glob(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    for c in path.chars() {
        match c {
            '?' | '*' | '[' | ']' | '{' | '}' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out
}

/// A drill set up by [`Repository::drill`], run by [`Drill::run`]; the
/// same builder shape as backup and restore.
#[must_use = "a drill does nothing until `run`"]
pub struct Drill<'a> {
    repo: &'a Repository,
    snapshot: &'a SnapshotEntry,
    opts: &'a DrillOptions,
    progress: &'a dyn Progress,
}

impl<'a> Drill<'a> {
    /// Reports the restore's progress to `p`.
    pub fn progress(mut self, p: &'a dyn Progress) -> Self {
        self.progress = p;
        self
    }

    /// Runs the drill.
    pub fn run(self) -> Result<DrillReport> {
        self.repo.run_drill(self.snapshot, self.opts, self.progress)
    }
}

impl Repository {
    /// A restore drill (docs/check.md §4): draws a sample of the snapshot's files
    /// (deterministic for a seed), restores them with the ordinary restore
    /// into a fresh scratch directory, re-reads every restored file and
    /// compares it chunk by chunk with the snapshot's chunk ids (keyed
    /// hashes over the recorded chunk lengths), checks size and mtime,
    /// removes the scratch directory, and records the result in the local
    /// cache. A file that differs is a failure in the report, not an `Err`.
    /// Nothing happens until [`Drill::run`].
    pub fn drill<'a>(&'a self, snapshot: &'a SnapshotEntry, opts: &'a DrillOptions) -> Drill<'a> {
        Drill {
            repo: self,
            snapshot,
            opts,
            progress: &crate::progress::NoProgress,
        }
    }

    fn run_drill(
        &self,
        snapshot: &SnapshotEntry,
        opts: &DrillOptions,
        progress: &dyn Progress,
    ) -> Result<DrillReport> {
        let valid = match opts.sample {
            Sample::All => true,
            Sample::Count(n) => n > 0,
            Sample::Fraction(f) => f > 0.0 && f <= 1.0,
        };
        if !valid {
            return Err(Error::InvalidArgument(format!(
                "drill sample {:?} selects nothing",
                opts.sample
            )));
        }
        let started = Instant::now();
        let time_ns = now_ns();
        let seed = opts
            .seed
            .unwrap_or_else(|| rand::RngCore::next_u64(&mut rand::rngs::OsRng));

        // Draw the sample while walking, keeping only the chosen nodes.
        let mut total = 0u64;
        let mut chosen: Vec<(u64, Vec<u8>, Node)> = Vec::new();
        let threshold = match opts.sample {
            Sample::Fraction(f) => (f * u64::MAX as f64) as u64,
            _ => u64::MAX,
        };
        let mut failures = Vec::new();
        let walked = self.walk(&snapshot.snapshot.tree, &mut |path, node| {
            if node.kind == NodeKind::File {
                total += 1;
                let r = rank(seed, path);
                let take = match opts.sample {
                    Sample::All => true,
                    Sample::Fraction(_) => r <= threshold,
                    Sample::Count(n) => {
                        chosen.len() < n as usize || chosen.last().is_some_and(|l| r < l.0)
                    }
                };
                if take {
                    if let Sample::Count(n) = opts.sample {
                        let at = chosen.partition_point(|c| c.0 <= r);
                        chosen.insert(at, (r, path.to_vec(), node.clone()));
                        chosen.truncate(n as usize);
                    } else {
                        chosen.push((r, path.to_vec(), node.clone()));
                    }
                }
            }
            Ok(true)
        });
        if let Err(e) = walked {
            // A snapshot whose trees cannot be read fails the drill; the
            // failure is recorded like any other, not lost as an error.
            failures.push(DrillFailure {
                path: "/".into(),
                reason: format!("cannot read the snapshot's trees: {e}"),
            });
            chosen.clear();
        }
        chosen.sort_by(|a, b| a.1.cmp(&b.1));

        let base = opts.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
        fs::create_dir_all(&base).map_err(|source| Error::Target {
            path: base.clone(),
            source,
        })?;
        let mut suffix = [0u8; 6];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut suffix);
        let dir = base.join(format!(
            "cairn-drill-{}-{}",
            snapshot.id.short(),
            hex::encode(suffix)
        ));
        // Owner only: the drill restores files that may be anyone's.
        std::os::unix::fs::DirBuilderExt::mode(&mut fs::DirBuilder::new(), 0o700)
            .create(&dir)
            .map_err(|source| Error::Target {
                path: dir.clone(),
                source,
            })?;
        let mut scratch = Scratch {
            path: dir.clone(),
            removed: None,
        };

        let mut restore = self.restore(snapshot).to(&dir).progress(progress);
        let mut by_hand = Vec::new();
        let mut includes = 0usize;
        if opts.sample != Sample::All {
            for (_, path, node) in &chosen {
                match std::str::from_utf8(path) {
                    Ok(p) => {
                        restore = restore.include(literal_glob(p));
                        includes += 1;
                    }
                    // A glob cannot name bytes that are not UTF-8: write
                    // these through the same verified read path instead.
                    Err(_) => by_hand.push((path.clone(), node.clone())),
                }
            }
        }
        let restore_started = Instant::now();
        let readable = failures.is_empty();
        if readable
            && (opts.sample == Sample::All || includes > 0)
            && let Err(e) = restore.run()
        {
            failures.push(DrillFailure {
                path: "/".into(),
                reason: format!("restore failed: {e}"),
            });
        }
        for (path, node) in &by_hand {
            let target = dir.join(Path::new(std::ffi::OsStr::from_bytes(&path[1..])));
            let r = target
                .parent()
                .map_or(Ok(()), fs::create_dir_all)
                .map_err(|source| Error::Target {
                    path: target.clone(),
                    source,
                })
                .and_then(|_| {
                    let mut f = fs::File::create(&target).map_err(|source| Error::Target {
                        path: target.clone(),
                        source,
                    })?;
                    self.dump_node(node, &mut f)?;
                    let t = filetime::FileTime::from_unix_time(
                        node.mtime_ns.div_euclid(1_000_000_000),
                        node.mtime_ns.rem_euclid(1_000_000_000) as u32,
                    );
                    filetime::set_file_mtime(&target, t).map_err(|source| Error::Target {
                        path: target.clone(),
                        source,
                    })
                });
            if let Err(e) = r {
                failures.push(DrillFailure {
                    path: String::from_utf8_lossy(path).into_owned(),
                    reason: format!("restore failed: {e}"),
                });
            }
        }
        let restore_duration = restore_started.elapsed();

        // Compare every restored file with the snapshot, in parallel.
        let results: Vec<(u64, Option<DrillFailure>)> = chosen
            .par_iter()
            .map(|(_, path, node)| {
                let target = dir.join(Path::new(std::ffi::OsStr::from_bytes(&path[1..])));
                match self.compare_restored(&target, node) {
                    Ok(()) => (node.size, None),
                    Err(reason) => (
                        node.size,
                        Some(DrillFailure {
                            path: String::from_utf8_lossy(path).into_owned(),
                            reason,
                        }),
                    ),
                }
            })
            .collect();
        let mut bytes = 0u64;
        for (n, f) in results {
            bytes += n;
            failures.extend(f);
        }
        let cleanup_error = scratch.remove().err().map(|e| e.to_string());
        let ok = failures.is_empty();
        let report = DrillReport {
            snapshot: snapshot.id,
            time_ns,
            seed,
            files_total: total,
            files: chosen.len() as u64,
            bytes,
            restore_duration,
            duration: started.elapsed(),
            failures,
            ok,
            scratch_dir: dir.display().to_string(),
            cleanup_error,
            record_error: None,
        };
        let mut report = report;
        let record = crate::verification::drill_record(
            self,
            time_ns,
            report.duration.as_nanos() as u64,
            crate::verification::DrillOutcome {
                snapshot: snapshot.id,
                files: report.files,
                bytes: report.bytes,
                failures: report.failures.len() as u64,
                ok,
            },
        );
        if let Err(e) = self.store_verification(&record, None) {
            report.record_error = Some(e.to_string());
        }
        let tag = crate::verification::location_tag(&record.location);
        self.index().cache().claim_ledger(tag)?;
        self.index().cache().record_drill(&DrillRecord {
            snapshot: snapshot.id,
            time_ns,
            files: report.files,
            bytes: report.bytes,
            duration_ns: report.duration.as_nanos() as u64,
            ok,
            report_json: serde_json::to_string(&report).unwrap_or_default(),
        })?;
        Ok(report)
    }

    /// Reads a restored file back chunk by chunk, over the chunk lengths the
    /// index records, and compares each chunk's keyed hash with the
    /// snapshot's id; then its size and mtime.
    fn compare_restored(&self, path: &Path, node: &Node) -> std::result::Result<(), String> {
        let md = fs::symlink_metadata(path).map_err(|e| format!("not restored: {e}"))?;
        if !md.is_file() {
            return Err("restored as something other than a regular file".into());
        }
        if md.len() != node.size {
            return Err(format!("size {} instead of {}", md.len(), node.size));
        }
        let mut f = fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let mut buf = Vec::new();
        let mut at = 0u64;
        for (i, id) in node.content.iter().enumerate() {
            let loc = self
                .index()
                .lookup(id)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("chunk {i} ({}) is not in the index", id.short()))?;
            let len = loc.entry.raw_length as usize;
            buf.resize(len, 0);
            f.read_exact(&mut buf)
                .map_err(|e| format!("chunk {i} at offset {at}: {e}"))?;
            if self.hasher().chunk_id(&buf) != *id {
                return Err(format!(
                    "chunk {i} at offset {at} differs from the snapshot"
                ));
            }
            at += len as u64;
        }
        let mut rest = [0u8; 1];
        if at != node.size || f.read(&mut rest).map_err(|e| e.to_string())? != 0 {
            return Err(format!(
                "content is {at} bytes by the chunk list, {} by the snapshot",
                node.size
            ));
        }
        let mtime = filetime::FileTime::from_last_modification_time(&md);
        let ns = mtime.unix_seconds() * 1_000_000_000 + i64::from(mtime.nanoseconds());
        if ns != node.mtime_ns {
            return Err(format!("mtime {ns} instead of {}", node.mtime_ns));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_syntax() {
        assert_eq!("all".parse::<Sample>().unwrap(), Sample::All);
        assert_eq!("12".parse::<Sample>().unwrap(), Sample::Count(12));
        assert_eq!("5%".parse::<Sample>().unwrap(), Sample::Fraction(0.05));
        assert!("0".parse::<Sample>().is_err() && "150%".parse::<Sample>().is_err());
    }

    #[test]
    fn literal_globs_escape_metacharacters() {
        assert_eq!(literal_glob("/a/b[1]*?{x}"), "/a/b[[]1[]][*][?][{]x[}]");
        assert_eq!(literal_glob("/a\\b"), "/a\\\\b");
        let g = globset::Glob::new(&literal_glob("/d/we*rd [x] {a,b}?\\z"))
            .unwrap()
            .compile_matcher();
        assert!(g.is_match("/d/we*rd [x] {a,b}?\\z"));
        assert!(!g.is_match("/d/weXrd x a?\\z"));
    }
}
