//! `cairn rekey`: rewrite objects sealed under an older data-key epoch
//! (SPEC §30).

use anyhow::Result;
use repo_core::{RekeyOptions, RekeyReport};

use super::{Status, open};
use crate::cli::{GlobalArgs, RekeyArgs};
use crate::output::{self, Output};
use crate::progress::TermProgress;

/// Runs the rekey; [`Status::Incomplete`] when stale objects remain
/// (stopped by `--max-duration`, or damaged snapshots).
pub fn run(g: &GlobalArgs, out: Output, a: &RekeyArgs) -> Result<Status> {
    let repo = open(g, out)?;
    let mut opts = RekeyOptions::default();
    opts.max_duration = a.max_duration;
    opts.grace = a.grace;
    let progress = TermProgress::new(out);
    let report = repo.rekey_with_progress(&opts, &progress)?;
    progress.finish();
    if out.json {
        out.json_value(&report)?;
    } else {
        for line in render(&report) {
            out.line(line)?;
        }
    }
    Ok(if report.is_complete() {
        Status::Ok
    } else {
        Status::Incomplete
    })
}

/// Human lines for a rekey's result.
fn render(r: &RekeyReport) -> Vec<String> {
    if !r.epochs_differ {
        return vec!["one data-key epoch: nothing to rekey".into()];
    }
    let mut lines = Vec::new();
    for s in &r.snapshots {
        lines.push(format!(
            "snapshot {} is now {}",
            s.old.short(),
            s.new.short()
        ));
    }
    lines.push(format!(
        "rewrote {} packs ({}) into {}, {} index files, {} snapshots",
        r.packs_rewritten,
        output::bytes(r.bytes_rewritten),
        r.packs_written,
        r.index_files_written,
        r.snapshots.len()
    ));
    if r.dictionaries_rewritten
        + r.wal_files_rewritten
        + r.marks_rewritten
        + r.audit_objects_rewritten
        + r.verification_records_rewritten
        > 0
    {
        lines.push(format!(
            "rewrote {} dictionaries, {} archived WAL files, {} prune marks, {} audit objects, \
             {} verification records",
            r.dictionaries_rewritten,
            r.wal_files_rewritten,
            r.marks_rewritten,
            r.audit_objects_rewritten,
            r.verification_records_rewritten
        ));
    }
    let left = &r.remaining;
    if r.is_complete() {
        lines.push("nothing is sealed under an older epoch any more".into());
    } else {
        lines.push(format!(
            "incomplete{}: {} packs ({}), {} index files and {} snapshots remain; run `cairn rekey` again",
            if r.stopped_early { " (time limit)" } else { "" },
            left.packs,
            output::bytes(left.bytes),
            left.index_files,
            left.snapshots
        ));
    }
    if r.sweep.packs_deleted > 0 {
        lines.push(format!(
            "deleted {} old packs ({})",
            r.sweep.packs_deleted,
            output::bytes(r.sweep.bytes_deleted)
        ));
    }
    if left.condemned_packs > 0 {
        lines.push(format!(
            "{} condemned packs await their grace period{}; a later prune or rekey deletes them",
            left.condemned_packs,
            if r.sweep.waiting_for.is_empty() {
                String::new()
            } else {
                format!(
                    " and running backup(s) locks/{}",
                    r.sweep.waiting_for.join(", locks/")
                )
            }
        ));
    }
    if left.unindexed_packs > 0 {
        lines.push(format!(
            "{} packs no index names (interrupted or running backups): prune removes leftovers",
            left.unindexed_packs
        ));
    }
    lines
}
