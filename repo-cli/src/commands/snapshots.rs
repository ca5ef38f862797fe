//! `cairn snapshots`: list snapshots as a table or JSON.

use anyhow::Result;

use super::{Status, filter, open};
use crate::cli::{GlobalArgs, SnapshotsArgs};
use crate::output::{self, Output, SnapshotJson, Table};

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
    // Copies (`cairn copy`) get a column naming the snapshot they came from.
    let copies = snaps.iter().any(|s| s.snapshot.original.is_some());
    let mut header = vec!["ID", "Time", "Host", "Tags", "Paths", "Size"];
    if copies {
        header.push("Copy of");
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    for s in &snaps {
        let sn = &s.snapshot;
        let paths = sn.paths_lossy();
        let mut row = vec![
            s.id.short(),
            output::local_time(sn.time_ns),
            sn.host.clone(),
            sn.tags.join(","),
            paths.first().cloned().unwrap_or_default(),
            output::bytes(sn.summary.total_bytes),
        ];
        if copies {
            row.push(sn.original.map(|o| o.short()).unwrap_or_default());
        }
        rows.push(row);
        for p in paths.iter().skip(1) {
            let mut more = vec![String::new(); header.len()];
            more[4] = p.clone();
            rows.push(more);
        }
    }
    let mut table = Table::new(&header).right(5);
    for r in rows {
        table.row(r);
    }
    let rule = "-".repeat(table.total_width());
    out.line(table.header_line())?;
    out.line(&rule)?;
    for l in table.row_lines() {
        out.line(l)?;
    }
    out.line(&rule)?;
    out.line(format!(
        "{} snapshot{}",
        snaps.len(),
        if snaps.len() == 1 { "" } else { "s" }
    ))?;
    Ok(Status::Ok)
}
