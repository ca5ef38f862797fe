//! `cairn restore`: a snapshot, or part of it, into a directory.

use std::time::Instant;

use anyhow::Result;
use repo_core::Overwrite;
use serde::Serialize;

use super::{Status, open, select};
use crate::cli::{GlobalArgs, OverwriteArg, RestoreArgs};
use crate::contract::Requests;
use crate::output::{self, Output};
use crate::progress::TermProgress;

#[derive(Serialize)]
struct RestoreJson<'a> {
    snapshot_id: String,
    target: String,
    files: u64,
    dirs: u64,
    others: u64,
    skipped: u64,
    /// Apparent size (holes included), as backup's `bytes_read`.
    bytes_restored: u64,
    duration_s: f64,
    warnings: &'a [repo_core::Warning],
    requests: Requests,
}

/// Restores the selected snapshot and prints a summary.
pub fn run(g: &GlobalArgs, out: Output, a: &RestoreArgs) -> Result<Status> {
    let repo = open(g, out)?;
    let snap = select(&repo, &a.snapshot, &a.filter)?;
    out.verbose(
        1,
        format!(
            "restoring snapshot {} to {}",
            snap.id.short(),
            a.target.display()
        ),
    );
    let progress = TermProgress::new(out);
    let started = Instant::now();
    let mut r = repo
        .restore(&snap)
        .to(&a.target)
        .numeric_ids(a.numeric_ids)
        .overwrite(match a.overwrite {
            OverwriteArg::Always => Overwrite::Always,
            OverwriteArg::IfChanged => Overwrite::IfChanged,
            OverwriteArg::Never => Overwrite::Never,
        })
        .all_xattrs(a.all_xattrs)
        .progress(&progress);
    for i in &a.includes {
        r = r.include(i);
    }
    for e in &a.excludes {
        r = r.exclude(e);
    }
    let sum = r.run()?;
    let ns = started.elapsed().as_nanos() as u64;
    progress.finish();
    if out.json {
        out.json_value(&RestoreJson {
            snapshot_id: snap.id.to_hex(),
            target: a.target.display().to_string(),
            files: sum.files,
            dirs: sum.dirs,
            others: sum.others,
            skipped: sum.skipped,
            bytes_restored: sum.bytes_restored,
            duration_s: output::seconds(ns),
            warnings: &sum.warnings,
            requests: repo.request_stats(),
        })?;
    } else {
        out.line(format!(
            "restored snapshot {} to {}: {} files, {} dirs, {} others, {} (apparent size) in {}",
            snap.id.short(),
            a.target.display(),
            sum.files,
            sum.dirs,
            sum.others,
            output::bytes(sum.bytes_restored),
            output::duration(ns)
        ))?;
        if sum.skipped > 0 {
            out.line(format!(
                "skipped {} existing entries (--overwrite {})",
                sum.skipped,
                match a.overwrite {
                    OverwriteArg::Always => "always",
                    OverwriteArg::IfChanged => "if-changed",
                    OverwriteArg::Never => "never",
                }
            ))?;
        }
    }
    Ok(Status::Ok)
}
