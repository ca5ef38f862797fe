//! `cairn drill`: a restore drill on a sample of a snapshot.

use anyhow::{Result, bail};
use repo_core::{DrillOptions, DrillReport};
use serde::Serialize;

use super::{Status, open, select};
use crate::cli::{DrillArgs, GlobalArgs};
use crate::contract::Requests;
use crate::output::{self, Output};
use crate::progress::TermProgress;

/// `drill --json` in the contract's units (docs/scripting.md): the start
/// as RFC 3339 `time`, durations as `*_s`; not the library's `time_ns`.
#[derive(Serialize)]
struct DrillJson<'a> {
    snapshot: String,
    /// Start time.
    time: String,
    seed: u64,
    files_total: u64,
    files: u64,
    bytes: u64,
    restore_duration_s: f64,
    duration_s: f64,
    failures: &'a [repo_core::DrillFailure],
    ok: bool,
    scratch_dir: &'a str,
    cleanup_error: Option<&'a str>,
    requests: Requests,
}

impl<'a> DrillJson<'a> {
    fn new(r: &'a DrillReport, requests: Requests) -> Self {
        Self {
            snapshot: r.snapshot.to_hex(),
            time: output::rfc3339(r.time_ns),
            seed: r.seed,
            files_total: r.files_total,
            files: r.files,
            bytes: r.bytes,
            restore_duration_s: r.restore_duration.as_secs_f64(),
            duration_s: r.duration.as_secs_f64(),
            failures: &r.failures,
            ok: r.ok,
            scratch_dir: &r.scratch_dir,
            cleanup_error: r.cleanup_error.as_deref(),
            requests,
        }
    }
}

/// Runs the drill, prints the report, and fails (exit 1) if a file differs.
pub fn run(g: &GlobalArgs, out: Output, a: &DrillArgs) -> Result<Status> {
    let repo = open(g, out)?;
    let snap = select(&repo, &a.snapshot, &a.filter)?;
    let opts = DrillOptions {
        sample: a.sample,
        scratch_dir: a.scratch.clone(),
        seed: a.seed,
    };
    out.verbose(1, format!("drilling snapshot {}", snap.id.short()));
    let progress = TermProgress::new(out);
    let report = repo.drill(&snap, &opts).progress(&progress).run()?;
    progress.finish();
    if out.json {
        out.json_value(&DrillJson::new(&report, repo.request_stats()))?;
    } else {
        out.line(report.to_string())?;
    }
    if let Some(e) = &report.cleanup_error {
        out.warn(format!(
            "scratch directory {} could not be removed: {e}",
            report.scratch_dir
        ));
    }
    if let Some(e) = &report.record_error {
        out.warn(format!(
            "the drill's result could not be recorded in the repository: {e}"
        ));
    }
    if !report.ok {
        let n = report.failures.len();
        bail!(
            "restore drill failed: {n} file{} did not restore identically",
            if n == 1 { "" } else { "s" }
        );
    }
    Ok(Status::Ok)
}
