//! `cairn repair index|snapshots` (docs/repair.md).

use anyhow::Result;

use super::{Status, open};
use crate::cli::{GlobalArgs, RepairArgs, RepairWhat};
use crate::output::Output;

/// Runs the chosen repair and reports what it changed.
pub fn run(g: &GlobalArgs, out: Output, a: &RepairArgs) -> Result<Status> {
    let repo = open(g, out)?;
    match a.what {
        RepairWhat::Index { read_data } => {
            let r = repo.repair_index(read_data)?;
            if out.json {
                out.json_value(&r)?;
            } else {
                out.line(format!(
                    "indexed {} packs ({} blobs), replaced {} index files",
                    r.packs_indexed, r.blobs_indexed, r.index_files_replaced
                ))?;
                for p in &r.packs_salvaged {
                    out.line(format!(
                        "salvaged damaged pack {p}: good blobs copied, pack deleted"
                    ))?;
                }
                for b in &r.blobs_lost {
                    out.line(format!("lost blob {b} (run `cairn repair snapshots`)"))?;
                }
                for p in &r.packs_unreadable {
                    out.warn(format!(
                        "pack {p} is unreadable and was left out of the index"
                    ));
                }
            }
        }
        RepairWhat::Snapshots { forget_damaged } => {
            let r = repo.repair_snapshots_with(forget_damaged)?;
            if out.json {
                out.json_value(&r)?;
            } else {
                if r.damaged_files_deleted {
                    for f in &r.damaged_files {
                        out.line(format!("deleted damaged snapshot file {f}"))?;
                    }
                }
                for d in &r.damaged {
                    out.line(format!(
                        "damaged: {} ({} blobs lost) in snapshot {}",
                        d.path,
                        d.missing_blobs,
                        d.snapshot.short()
                    ))?;
                }
                for (old, new) in &r.rewritten {
                    out.line(format!(
                        "snapshot {} rewritten as {}",
                        old.short(),
                        new.short()
                    ))?;
                }
                out.line(format!(
                    "{} snapshots checked, {} rewritten",
                    r.snapshots,
                    r.rewritten.len()
                ))?;
            }
        }
    }
    Ok(Status::Ok)
}
