//! `cairn prune`: plan, print, then free space (SPEC §22).

use anyhow::Result;
use repo_core::{PrunePlan, PruneSummary};
use serde::Serialize;

use super::{Status, open};
use crate::cli::{GlobalArgs, PruneArgs};
use crate::output::{self, Output};

/// `--json` output.
#[derive(Serialize)]
struct PruneJson<'a> {
    /// Nothing was changed on purpose.
    dry_run: bool,
    /// What the prune planned.
    plan: &'a PrunePlan,
    /// What it did (absent for a dry run).
    summary: Option<&'a PruneSummary>,
}

/// Plans the prune, prints the plan, and unless `--dry-run` executes it.
pub fn run(g: &GlobalArgs, out: Output, a: &PruneArgs) -> Result<Status> {
    let repo = open(g, out)?;
    let plan = repo.prune_plan(&a.options.options())?;
    if out.text() {
        out.line(plan.to_string())?;
    }
    if a.dry_run {
        if out.json {
            out.json_value(&PruneJson {
                dry_run: true,
                plan: &plan,
                summary: None,
            })?;
        } else {
            out.line("dry run: nothing changed")?;
        }
        return Ok(Status::Ok);
    }
    let summary = repo.prune(plan.clone())?;
    if out.json {
        out.json_value(&PruneJson {
            dry_run: false,
            plan: &plan,
            summary: Some(&summary),
        })?;
    } else {
        out.line(render(&summary))?;
    }
    Ok(Status::Ok)
}

/// One human line for a prune's result.
pub fn render(s: &PruneSummary) -> String {
    let mut line = format!(
        "condemned {} packs, wrote {} repacked packs, deleted {} packs ({})",
        s.packs_condemned,
        s.packs_written,
        s.packs_deleted,
        output::bytes(s.bytes_deleted)
    );
    if s.packs_resurrected > 0 {
        line.push_str(&format!(
            ", put back {} packs a new snapshot needs",
            s.packs_resurrected
        ));
    }
    if s.marks_postponed > 0 {
        line.push_str(&format!(
            "; {} condemned set(s) wait for their grace period or a running backup",
            s.marks_postponed
        ));
    }
    if !s.waiting_for.is_empty() {
        line.push_str(&format!(
            "; waiting for running backup heartbeat(s) locks/{}",
            s.waiting_for.join(", locks/")
        ));
    }
    if !s.marks_damaged_deleted.is_empty() {
        line.push_str(&format!(
            "; deleted damaged mark(s) {}",
            s.marks_damaged_deleted.join(", ")
        ));
    }
    if s.wal_deleted > 0 || s.wal_postponed > 0 {
        line.push_str(&format!(
            "; deleted {} archived WAL files ({}) no base backup needs",
            s.wal_deleted,
            output::bytes(s.wal_bytes_deleted)
        ));
        if s.wal_postponed > 0 {
            line.push_str(&format!(
                ", {} more after the grace period",
                s.wal_postponed
            ));
        }
    }
    line
}
