//! `cairn diff`: what changed between two snapshots, restic style.

use std::io::{self, BufWriter, Write};

use anyhow::Result;
use repo_core::{Change, DiffEntry, NodeKind};

use super::{Status, open, select};
use crate::cli::{DiffArgs, GlobalArgs};
use crate::output::{self, Output};

/// The one-letter marker of a change, as restic prints it.
fn marker(c: Change) -> char {
    match c {
        Change::Added => '+',
        Change::Removed => '-',
        Change::Modified => 'M',
        Change::MetadataOnly => 'U',
        Change::TypeChanged => 'T',
    }
}

/// Prints the changes from A to B, then totals.
pub fn run(g: &GlobalArgs, out: Output, a: &DiffArgs) -> Result<Status> {
    let repo = open(g, out)?;
    let old = select(&repo, &a.a, &a.filter)?;
    let new = select(&repo, &a.b, &a.filter)?;
    let diff = repo.diff(&old, &new)?;
    if out.json {
        out.json_value(&diff)?;
        return Ok(Status::Ok);
    }
    if !out.text() {
        return Ok(Status::Ok);
    }
    let mut w = BufWriter::new(io::stdout().lock());
    writeln!(
        w,
        "comparing snapshot {} to {}:\n",
        old.id.short(),
        new.id.short()
    )?;
    for e in &diff.changes {
        // Paths are raw bytes, as `ls` prints them: names that are not
        // UTF-8 come out as they were.
        write!(w, "{}    ", marker(e.change))?;
        w.write_all(&e.path)?;
        if is_dir(e) {
            w.write_all(b"/")?;
        }
        w.write_all(b"\n")?;
    }
    let t = &diff.totals;
    if !diff.changes.is_empty() {
        writeln!(w)?;
    }
    writeln!(
        w,
        "Files:          {} new, {} removed, {} changed",
        t.files_added, t.files_removed, t.files_modified
    )?;
    writeln!(
        w,
        "Dirs:           {} new, {} removed",
        t.dirs_added, t.dirs_removed
    )?;
    writeln!(w, "Metadata only:  {}", t.metadata_only)?;
    writeln!(w, "Type changed:   {}", t.type_changed)?;
    writeln!(w, "Added:          {}", output::bytes(t.bytes_added))?;
    writeln!(w, "Removed:        {}", output::bytes(t.bytes_removed))?;
    w.flush()?;
    Ok(Status::Ok)
}

/// True when the entry is a directory in the snapshot it is shown for (the
/// newer one, unless it was removed).
fn is_dir(e: &DiffEntry) -> bool {
    e.new_kind.or(e.old_kind) == Some(NodeKind::Dir)
}
