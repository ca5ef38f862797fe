//! `cairn find`: entries matching a glob, per snapshot.

use std::io::{self, BufWriter, Write};

use anyhow::Result;
use repo_core::{FindMatch, NodeKind, Repository, SnapshotEntry};
use serde::Serialize;

use super::{Status, filter, open, select};
use crate::cli::{FilterArgs, FindArgs, GlobalArgs};
use crate::output::{self, Output};

/// One `find --json` match: names and times as `ls --json` and `snapshots
/// --json` print them.
#[derive(Debug, Serialize)]
struct MatchJson {
    /// Full snapshot id.
    snapshot: String,
    /// The snapshot's time, RFC 3339 UTC.
    snapshot_time: String,
    /// Full path (lossy UTF-8).
    path: String,
    /// The raw path in hex, only when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    path_hex: Option<String>,
    /// `file`, `dir`, `symlink`, …
    #[serde(rename = "type")]
    kind: &'static str,
    /// Content size.
    size: u64,
    /// Modification time, RFC 3339 UTC.
    mtime: String,
}

impl MatchJson {
    fn new(m: &FindMatch) -> Self {
        Self {
            snapshot: m.snapshot.to_hex(),
            snapshot_time: output::rfc3339(m.snapshot_time_ns),
            path: m.path_lossy(),
            path_hex: std::str::from_utf8(&m.path)
                .is_err()
                .then(|| m.path.iter().map(|b| format!("{b:02x}")).collect()),
            kind: output::kind_name(m.kind),
            size: m.size,
            mtime: output::rfc3339(m.mtime_ns),
        }
    }
}

/// The snapshots named by `specs` (each resolved like `latest` or an id
/// prefix, duplicates dropped), or all snapshots passing the filters when
/// there are none; oldest first.
pub(super) fn snapshots(
    repo: &Repository,
    specs: &[String],
    f: &FilterArgs,
) -> Result<Vec<SnapshotEntry>> {
    let mut snaps = if specs.is_empty() {
        let f = filter(f)?;
        repo.snapshots()?
            .into_iter()
            .filter(|s| f.matches(&s.snapshot))
            .collect()
    } else {
        let mut v = Vec::with_capacity(specs.len());
        for s in specs {
            v.push(select(repo, s, f)?);
        }
        v
    };
    snaps.sort_by_key(|s| (s.snapshot.time_ns, s.id));
    snaps.dedup_by(|a, b| a.id == b.id);
    Ok(snaps)
}

/// Lists the matches, grouped by snapshot.
pub fn run(g: &GlobalArgs, out: Output, a: &FindArgs) -> Result<Status> {
    let repo = open(g, out)?;
    let snaps = snapshots(&repo, &a.snapshots, &a.filter)?;
    // A snapshot whose trees cannot be read is reported and left out; the
    // others are still searched.
    let mut failed = 0usize;
    let matches = repo.find_with(&a.pattern, &snaps, &mut |s, e| {
        failed += 1;
        out.warn(format!(
            "snapshot {} not searched: {}",
            s.id.short(),
            crate::message(&e.into())
        ));
        Ok(())
    })?;
    let status = if failed > 0 {
        Status::Incomplete
    } else {
        Status::Ok
    };
    if out.json {
        let v: Vec<_> = matches.iter().map(MatchJson::new).collect();
        out.json_value(&v)?;
        return Ok(status);
    }
    if !out.text() {
        return Ok(status);
    }
    let mut w = BufWriter::new(io::stdout().lock());
    let mut current = None;
    let mut in_snapshots = 0usize;
    for m in &matches {
        if current != Some(m.snapshot) {
            if current.is_some() {
                writeln!(w)?;
            }
            current = Some(m.snapshot);
            in_snapshots += 1;
            writeln!(
                w,
                "Found matching entries in snapshot {} from {}",
                m.snapshot.short(),
                output::local_time(m.snapshot_time_ns)
            )?;
        }
        write!(
            w,
            "{:<8} {:>12} {} ",
            output::kind_name(m.kind),
            m.size,
            output::local_time(m.mtime_ns)
        )?;
        // Raw bytes, control characters escaped, as `ls` prints them.
        w.write_all(&output::escape_controls(&m.path))?;
        if m.kind == NodeKind::Dir {
            w.write_all(b"/")?;
        }
        w.write_all(b"\n")?;
    }
    if !matches.is_empty() {
        writeln!(w)?;
    }
    writeln!(
        w,
        "{} match{} in {} of {} snapshot{}",
        matches.len(),
        if matches.len() == 1 { "" } else { "es" },
        in_snapshots,
        snaps.len(),
        if snaps.len() == 1 { "" } else { "s" }
    )?;
    w.flush()?;
    Ok(status)
}
