//! The run's JSON report (`[report] json`, `--json`) and its human summary.

use anyhow::Result;
use serde::Serialize;

use crate::output::{self, Output};

/// What happened to one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Outcome {
    /// It worked.
    Ok,
    /// A snapshot was saved, but some files could not be read (exit 3).
    Warning,
    /// It failed.
    Failed,
    /// Not run (cadence not due, or nothing to do).
    Skipped,
}

/// One source backed up into one repository, in the report.
#[derive(Debug, Serialize)]
pub(super) struct SourceResult {
    pub(super) source: String,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) repository: String,
    pub(super) status: Outcome,
    pub(super) exit_code: Option<i32>,
    pub(super) duration_s: f64,
    pub(super) bytes_added: u64,
    pub(super) snapshot_ids: Vec<String>,
    pub(super) error: Option<String>,
    /// The end of the child's standard error.
    pub(super) stderr: String,
    /// With `verify = true`: whether every snapshot saved passed its
    /// `verify` (`null` when not asked or the backup failed).
    pub(super) verified: Option<bool>,
    /// How long those verifications took.
    pub(super) verify_duration_s: Option<f64>,
    /// A postgres-pitr source: its archive and the server's archiver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) pitr: Option<crate::exporters::pg_base::PitrFacts>,
}

/// A retention, check or drill step on one repository.
#[derive(Debug, Serialize)]
pub(super) struct Task {
    pub(super) status: Outcome,
    pub(super) duration_s: f64,
    /// What was done, or why it was skipped.
    pub(super) detail: String,
    pub(super) error: Option<String>,
}

/// One copy step (`[[copy]]`), in the report.
#[derive(Debug, Serialize)]
pub(super) struct CopyResult {
    pub(super) from: String,
    pub(super) to: String,
    /// `ok`, `failed`, or `skipped` when this run made nothing to copy.
    pub(super) status: Outcome,
    pub(super) exit_code: Option<i32>,
    pub(super) duration_s: f64,
    /// Snapshots copied by this step.
    pub(super) snapshots_copied: u64,
    /// Snapshots `to` already held (copied before).
    pub(super) snapshots_skipped: u64,
    pub(super) blobs_copied: u64,
    pub(super) bytes_copied: u64,
    /// The snapshots asked for, by their ids in `from`.
    pub(super) source_snapshot_ids: Vec<String>,
    /// Their ids in `to` (copied or already there), in the same order.
    pub(super) snapshot_ids: Vec<String>,
    /// Whether it asked for every snapshot of the plan in `from` (its
    /// previous run failed, or it never succeeded) rather than only those
    /// this run made.
    pub(super) catch_up: bool,
    /// The plan's sources whose snapshots made in this run are now in `to`.
    pub(super) sources: Vec<String>,
    /// Ids in `to` of the snapshots made in this run (what a later step
    /// copying out of `to` copies).
    #[serde(skip)]
    pub(super) fresh_ids: Vec<String>,
    /// What was done, or why it was skipped.
    pub(super) detail: String,
    pub(super) error: Option<String>,
    /// The end of the child's standard error.
    pub(super) stderr: String,
}

impl CopyResult {
    /// A step from `from` to `to` that has not run yet: failed until the
    /// child says otherwise.
    pub(super) fn pending(from: &str, to: &str, catch_up: bool) -> Self {
        Self {
            from: from.to_string(),
            to: to.to_string(),
            status: Outcome::Failed,
            exit_code: None,
            duration_s: 0.0,
            snapshots_copied: 0,
            snapshots_skipped: 0,
            blobs_copied: 0,
            bytes_copied: 0,
            source_snapshot_ids: Vec::new(),
            snapshot_ids: Vec::new(),
            catch_up,
            sources: Vec::new(),
            fresh_ids: Vec::new(),
            detail: String::new(),
            error: None,
            stderr: String::new(),
        }
    }
}

/// A repository's size and freshness after the run (`snapshots` and
/// `stats` children).
#[derive(Debug, Default, Serialize)]
pub(super) struct Inventory {
    /// Bytes of its pack files (what the storage holds of the data).
    pub(super) stored_bytes: Option<u64>,
    /// Snapshots of this plan in it.
    pub(super) snapshots: Option<u64>,
    /// Time of the plan's newest snapshot in it (RFC 3339); `null` when
    /// there is none or it could not be read.
    pub(super) latest_snapshot_time: Option<String>,
    /// The same, Unix seconds, for the metrics.
    #[serde(skip)]
    pub(super) latest_snapshot_unix: Option<f64>,
    /// Why the above could not be read (the run does not fail for it).
    pub(super) error: Option<String>,
}

/// The per-repository steps after the backups and copies.
#[derive(Debug, Serialize)]
pub(super) struct RepositoryResult {
    pub(super) repository: String,
    pub(super) retention: Option<Task>,
    pub(super) check: Option<Task>,
    pub(super) drill: Option<Task>,
    #[serde(flatten)]
    pub(super) inventory: Inventory,
}

/// The JSON report (`[report] json`, `--json`, `CAIRN_PLAN_REPORT`).
#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub(super) version: u32,
    pub(super) plan: String,
    pub(super) plan_file: String,
    pub(super) started: String,
    pub(super) duration_s: f64,
    pub(super) status: &'static str,
    /// Failed sources, then failed copies as `copy:FROM->TO`, then failed
    /// steps as `step:repository`.
    pub(super) failed: Vec<String>,
    pub(super) sources: Vec<SourceResult>,
    pub(super) copies: Vec<CopyResult>,
    pub(super) repositories: Vec<RepositoryResult>,
}

/// The human summary: one row per source and repository, then the steps.
pub(super) fn summary(out: Output, r: &Report) -> Result<()> {
    let w = r
        .sources
        .iter()
        .map(|s| s.source.len())
        .chain([6])
        .max()
        .unwrap_or(6);
    let rw = r
        .sources
        .iter()
        .map(|s| s.repository.len())
        .chain([10])
        .max()
        .unwrap_or(10);
    out.line(format!(
        "{:w$}  {:rw$}  {:8}  {:>10}  {:>7}  SNAPSHOT",
        "SOURCE", "REPOSITORY", "STATUS", "ADDED", "TIME"
    ))?;
    for s in &r.sources {
        let snap = match s.snapshot_ids.as_slice() {
            [] => "-".to_string(),
            [one] => one.chars().take(8).collect(),
            many => format!("{} snapshots", many.len()),
        };
        // A failed backup that saved nothing added nothing: no "0 B".
        let added = if s.status == Outcome::Failed && s.snapshot_ids.is_empty() {
            "-".to_string()
        } else {
            output::bytes(s.bytes_added)
        };
        out.line(format!(
            "{:w$}  {:rw$}  {:8}  {:>10}  {:>7}  {snap}",
            s.source,
            s.repository,
            status_word(s.status),
            added,
            output::duration((s.duration_s * 1e9) as u64),
        ))?;
        if let Some(e) = &s.error {
            out.line(format!("    {e}"))?;
        }
    }
    for c in &r.copies {
        let mut l = format!("copy {}->{}: {}", c.from, c.to, status_word(c.status));
        if !c.detail.is_empty() {
            l.push_str(&format!(" ({})", c.detail));
        }
        if let Some(e) = &c.error {
            l.push_str(&format!(": {e}"));
        }
        out.line(l)?;
    }
    for x in &r.repositories {
        for (step, t) in [
            ("retention", &x.retention),
            ("check", &x.check),
            ("drill", &x.drill),
        ] {
            if let Some(t) = t {
                let mut l = format!("{step} {}: {}", x.repository, status_word(t.status));
                if !t.detail.is_empty() {
                    l.push_str(&format!(" ({})", t.detail));
                }
                if let Some(e) = &t.error {
                    l.push_str(&format!(": {e}"));
                }
                out.line(l)?;
            }
        }
        let inv = &x.inventory;
        if let Some(b) = inv.stored_bytes {
            let newest = inv
                .latest_snapshot_time
                .as_deref()
                .map_or("no snapshot of this plan".into(), |t| {
                    format!("newest snapshot {t}")
                });
            out.line(format!(
                "repository {}: {} stored, {newest}",
                x.repository,
                output::bytes(b)
            ))?;
        }
    }
    out.line(format!(
        "plan {}: {} in {}",
        r.plan,
        r.status,
        output::duration((r.duration_s * 1e9) as u64)
    ))?;
    Ok(())
}

pub(super) fn status_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Warning => "warning",
        Outcome::Failed => "FAILED",
        Outcome::Skipped => "skipped",
    }
}
