//! `cairn drill`: a restore drill on a sample of a snapshot.

use anyhow::{Result, bail};
use repo_core::{DrillOptions, DrillReport};
use serde::Serialize;

use super::{Status, open, select};
use crate::cli::{DrillArgs, GlobalArgs};
use crate::contract::Requests;
use crate::output::{self, Output};
use crate::progress::TermProgress;

#[derive(Serialize)]
struct DrillJson<'a> {
    /// RFC 3339 UTC start time.
    time: String,
    #[serde(flatten)]
    report: &'a DrillReport,
    requests: Requests,
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
    let report = repo.drill(&snap, &opts, &progress)?;
    progress.finish();
    if out.json {
        out.json_value(&DrillJson {
            time: output::rfc3339(report.time_ns),
            report: &report,
            requests: repo.request_stats(),
        })?;
    } else {
        out.line(report.to_string())?;
    }
    if let Some(e) = &report.cleanup_error {
        out.warn(format!(
            "scratch directory {} could not be removed: {e}",
            report.scratch_dir
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
