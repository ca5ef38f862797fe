//! `cairn snapshots`: list snapshots as a table or JSON.

use anyhow::Result;

use super::{Status, filter, open};
use crate::cli::{GlobalArgs, SnapshotsArgs};
use crate::output::{self, Output, SnapshotJson};

/// Lists the snapshots passing the filters, oldest first.
pub fn run(g: &GlobalArgs, out: Output, a: &SnapshotsArgs) -> Result<Status> {
    let repo = open(g, out)?;
    let f = filter(&a.filter)?;
    let snaps: Vec<_> = repo
        .snapshots()?
        .into_iter()
        .filter(|s| f.matches(&s.snapshot))
        .collect();
    if out.json {
        let v: Vec<_> = snaps.iter().map(SnapshotJson::new).collect();
        out.json_value(&v)?;
        return Ok(Status::Ok);
    }
    // One row per snapshot; extra paths continue on lines of their own.
    let header = ["ID", "Time", "Host", "Tags", "Paths", "Size"];
    let mut rows: Vec<[String; 6]> = Vec::new();
    for s in &snaps {
        let sn = &s.snapshot;
        let paths = sn.paths_lossy();
        rows.push([
            s.id.short(),
            output::local_time(sn.time_ns),
            sn.host.clone(),
            sn.tags.join(","),
            paths.first().cloned().unwrap_or_default(),
            output::bytes(sn.summary.total_bytes),
        ]);
        for p in paths.iter().skip(1) {
            rows.push([
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                p.clone(),
                String::new(),
            ]);
        }
    }
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let fmt = |cells: [&str; 6]| -> String {
        let mut line = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            if i == 5 {
                line.push_str(&format!("{c:>w$}"));
            } else {
                line.push_str(&format!("{c:<w$}"));
            }
        }
        line.trim_end().to_string()
    };
    let total: usize = width.iter().sum::<usize>() + 2 * (width.len() - 1);
    out.line(fmt(header))?;
    out.line("-".repeat(total))?;
    for r in &rows {
        out.line(fmt(r.each_ref().map(String::as_str)))?;
    }
    out.line("-".repeat(total))?;
    out.line(format!(
        "{} snapshot{}",
        snaps.len(),
        if snaps.len() == 1 { "" } else { "s" }
    ))?;
    Ok(Status::Ok)
}
