//! `cairn forget`: apply a retention policy, printing which snapshots are
//! kept and why, then delete the others' snapshot files (docs/retention.md), and
//! with `--prune` run a prune (SPEC §22) afterwards.

use anyhow::Result;
use repo_core::forget::{ForgetPlan, ForgetSummary, RetentionPolicy};
use repo_core::prune::{PrunePlan, PruneSummary};
use serde::Serialize;
use time::UtcOffset;

use super::{Status, filter, open};
use crate::cli::{ForgetArgs, GlobalArgs};
use crate::output::{self, Output};

/// `--json` output: the plan, and what was done with it.
#[derive(Debug, Serialize)]
struct ForgetJson<'a> {
    /// True when nothing was deleted on purpose.
    dry_run: bool,
    /// The policy as text.
    policy: String,
    /// Per group: kept snapshots with reasons, removed snapshots.
    plan: &'a ForgetPlan,
    /// Snapshot ids deleted (empty for a dry run).
    removed: Vec<String>,
    /// Snapshot ids of the plan already deleted by someone else.
    already_gone: Vec<String>,
    /// With `--prune` (and not a dry run): the prune's plan and result.
    prune: Option<PruneJson<'a>>,
}

/// The prune run by `--prune`.
#[derive(Debug, Serialize)]
struct PruneJson<'a> {
    /// What it planned.
    plan: &'a PrunePlan,
    /// What it did.
    summary: &'a PruneSummary,
}

/// Plans, prints, and unless `--dry-run` executes the forget.
pub fn run(g: &GlobalArgs, out: Output, a: &ForgetArgs) -> Result<Status> {
    // Read while the process has one thread (before the repository opens
    // its pools): the only time `time` can read the local offset soundly.
    let offset = UtcOffset::current_local_offset().unwrap_or(UtcOffset::UTC);
    let policy = RetentionPolicy {
        keep_last: a.keep_last,
        keep_hourly: a.keep_hourly,
        keep_daily: a.keep_daily,
        keep_weekly: a.keep_weekly,
        keep_monthly: a.keep_monthly,
        keep_yearly: a.keep_yearly,
        keep_within: a.keep_within,
        keep_tags: a.keep_tags.clone(),
    };
    // Refuse before asking for a password, and before deleting anything.
    policy.validate()?;
    let repo = open(g, out)?;
    let plan = repo.forget_plan(&policy, a.group_by, offset, &filter(&a.filter)?)?;
    let summary = if a.dry_run {
        ForgetSummary::default()
    } else {
        repo.forget(&plan)?
    };
    // A prune plan computed before the snapshots are gone would still count
    // their data as used, so a dry run does not show one.
    let pruned = if a.prune && !a.dry_run {
        let pplan = repo.prune_plan(&a.prune_options.options())?;
        let psum = repo.prune(pplan.clone())?;
        Some((pplan, psum))
    } else {
        None
    };
    if out.json {
        let hex = |v: &[repo_core::SnapshotId]| v.iter().map(|i| i.to_hex()).collect();
        out.json_value(&ForgetJson {
            dry_run: a.dry_run,
            policy: policy.to_string(),
            plan: &plan,
            removed: hex(&summary.removed),
            already_gone: hex(&summary.already_gone),
            prune: pruned
                .as_ref()
                .map(|(plan, summary)| PruneJson { plan, summary }),
        })?;
        return Ok(Status::Ok);
    }
    out.line(format!("applying policy: {policy}"))?;
    out.line("")?;
    for l in plan.to_string().lines() {
        out.line(l)?;
    }
    out.line("")?;
    let planned = plan.removed().count();
    if a.dry_run {
        out.line(format!(
            "dry run: would remove {planned} snapshot{}",
            plural(planned)
        ))?;
    } else {
        let n = summary.removed.len();
        out.line(format!("removed {n} snapshot{}", plural(n)))?;
        if !summary.already_gone.is_empty() {
            out.warn(format!(
                "{} snapshot(s) of the plan were already gone",
                summary.already_gone.len()
            ));
        }
        match &pruned {
            Some((pplan, psum)) => {
                out.line("")?;
                for l in pplan.to_string().lines() {
                    out.line(l)?;
                }
                out.line(format!(
                    "prune: {} pack(s) condemned, {} written, {} deleted ({} freed), \
                     {} resurrected, {} mark(s) left for a later run",
                    psum.packs_condemned,
                    psum.packs_written,
                    psum.packs_deleted,
                    output::bytes(psum.bytes_deleted),
                    psum.packs_resurrected,
                    psum.marks_postponed
                ))?;
            }
            None if n > 0 => {
                out.line("their data stays in the repository until `cairn prune`")?;
            }
            None => {}
        }
    }
    if a.prune && a.dry_run {
        out.line("--prune is skipped in a dry run")?;
    }
    Ok(Status::Ok)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
