//! `cairn check`: verify the repository's structure and, optionally, data.

use anyhow::{Result, bail};
use repo_core::{CheckOptions, CheckReport, ReadData};
use serde::Serialize;

use super::{Status, open};
use crate::cli::{CheckArgs, GlobalArgs};
use crate::contract::Requests;
use crate::output::Output;
use crate::progress::TermProgress;

#[derive(Serialize)]
struct CheckJson<'a> {
    /// What data was selected: `none`, `all`, `n/m`, `x%` or a size.
    read_data: String,
    /// Data was asked for, but every pack was verified at this location
    /// within `--max-age`: nothing was read.
    nothing_due: bool,
    #[serde(flatten)]
    report: &'a CheckReport,
    requests: Requests,
}

/// Runs the check, prints the report, and fails (exit 1) on any error.
pub fn run(g: &GlobalArgs, out: Output, a: &CheckArgs) -> Result<Status> {
    let repo = open(g, out)?;
    let read_data = match (a.read_data, a.read_data_subset) {
        (_, Some(subset)) => subset,
        (true, None) => ReadData::All,
        (false, None) => ReadData::None,
    };
    let opts = CheckOptions {
        read_data,
        max_age: a.max_age,
        max_duration: a.max_duration,
        ..Default::default()
    };
    out.verbose(1, format!("checking (read data: {read_data})"));
    let progress = TermProgress::new(out);
    let report = repo.check(&opts).progress(&progress).run()?;
    progress.finish();
    if out.json {
        out.json_value(&CheckJson {
            read_data: read_data.to_string(),
            nothing_due: read_data.reads() && report.packs_selected == 0 && report.packs_recent > 0,
            report: &report,
            requests: repo.request_stats(),
        })?;
    } else if out.quiet {
        // Errors still reach stderr through the failure below.
        for p in &report.errors {
            eprintln!("cairn: check: {p}");
        }
    } else {
        out.line(report.to_string())?;
    }
    if !report.is_ok() {
        let n = report.errors.len();
        bail!(
            "check found {n} error{} (see the report above)",
            if n == 1 { "" } else { "s" }
        );
    }
    Ok(Status::Ok)
}
