//! `cairn run PLAN`: execute a plan file (docs/plans.md).
//!
//! Each backup, copy, forget, check and drill runs as a child `cairn` process
//! (this very executable) with `--json`. That isolates failures (a source
//! that panics, hangs up or exits cannot take the others down), reuses
//! every command unchanged, and gives each step its own exit code and
//! stderr for the report.
//!
//! The pieces: `args` (children's command lines), `child` (processes),
//! `steps` (backup, verify, copy, retention, check, drill, inventory),
//! `state` (cadences,
//! lock, atomic writes), `report` (JSON and summary), `metrics`, `hooks`,
//! `dry_run`.

mod args;
mod child;
mod dry_run;
mod hooks;
mod metrics;
mod report;
mod state;
mod steps;

pub use state::write_atomic;

use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, bail};

use self::dry_run::dry_run;
use self::hooks::run_hook;
use self::metrics::metrics;
use self::report::{CopyResult, Outcome, Report, RepositoryResult, SourceResult, summary};
use self::state::{STATE_FILE, due, load_state, lock, unix_ns, unix_secs};
use self::steps::{backup, check, copy, drill, inventory, made_in, retention, skipped};
use crate::cli::{GlobalArgs, RunArgs};
use crate::commands::Status;
use crate::output::{self, Output};
use crate::plan::{self, Source};

/// The tag every snapshot of plan `name` carries.
pub fn plan_tag(name: &str) -> String {
    format!("plan:{name}")
}

/// The tag every snapshot of source `name` carries.
pub fn source_tag(name: &str) -> String {
    format!("source:{name}")
}

/// Runs the copy steps in file order. A step copies what this run made in
/// its `from` (backups, or an earlier step's copies), or, when it failed
/// last time or never succeeded, every snapshot of the plan there; a
/// failed step is reported and the others still run. A successful one
/// records, per source whose fresh snapshots arrived, a success in `to` as
/// a backup would.
fn run_copies(
    g: &GlobalArgs,
    out: Output,
    loaded: &plan::Loaded,
    results: &[SourceResult],
    state: &mut state::State,
    exe: &std::path::Path,
) -> Vec<CopyResult> {
    let mut copies: Vec<CopyResult> = Vec::new();
    for c in &loaded.plan.copies {
        let fresh = made_in(&c.from, results, &copies);
        let catch_up = state.copy_catch_up(&c.from, &c.to);
        out.verbose(
            1,
            format!(
                "copy {}: {}",
                c.label(),
                if catch_up {
                    "every snapshot of the plan (catching up)".to_string()
                } else {
                    format!("{} snapshot(s)", fresh.len())
                }
            ),
        );
        let r = copy(g, loaded, c, fresh, catch_up, exe);
        state.record_copy(&r, unix_secs(SystemTime::now()));
        copies.push(r);
    }
    copies
}

/// Runs the plan.
pub fn run(g: &GlobalArgs, out: Output, a: &RunArgs) -> Result<Status> {
    let loaded = plan::load(&a.plan)?;
    let p = &loaded.plan;
    for s in &a.sources {
        if !p.sources.iter().any(|x| x.name() == s) {
            bail!("the plan has no source named {s:?}");
        }
    }
    let sources: Vec<&Source> = p
        .sources
        .iter()
        .filter(|s| a.sources.is_empty() || a.sources.iter().any(|n| n == s.name()))
        .collect();
    let exe = std::env::current_exe().context("cannot find the cairn executable")?;
    if a.dry_run {
        return dry_run(g, out, &loaded, &sources, &exe);
    }

    let state_dir = loaded.state_dir()?;
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
    // One run of a plan at a time (a timer and a manual run would race on
    // the state and the repositories' retention); held until we return.
    let _lock = lock(&state_dir, &loaded.name)?;
    let mut state = load_state(&state_dir.join(STATE_FILE))?;
    let started = SystemTime::now();
    let t0 = Instant::now();

    // Each source once into each primary repository (every repository in
    // a plan without copy steps); the copy steps fill the others.
    let mut results = Vec::new();
    for src in &sources {
        for repo in p.primaries() {
            out.verbose(1, format!("backing up {} into {}", src.name(), repo.name));
            let r = backup(g, &loaded, repo, src, &exe);
            if matches!(r.status, Outcome::Ok | Outcome::Warning) {
                state
                    .last_success
                    .entry(r.source.clone())
                    .or_default()
                    .insert(r.repository.clone(), unix_secs(SystemTime::now()));
            }
            results.push(r);
        }
    }

    let copies = run_copies(g, out, &loaded, &results, &mut state, &exe);

    let mut repos = Vec::new();
    for repo in &p.repositories {
        let retention = p.retention.as_ref().map(|r| {
            out.verbose(1, format!("applying retention to {}", repo.name));
            retention(g, &loaded, repo, r, &exe)
        });
        let check = p.check.as_ref().map(|c| {
            let now = unix_secs(SystemTime::now());
            match due(state.last_check.get(&repo.name), c.every, now) {
                Some(next) => skipped(next),
                None => {
                    out.verbose(1, format!("checking {}", repo.name));
                    let t = check(g, repo, c, &exe);
                    if t.status == Outcome::Ok {
                        state.last_check.insert(repo.name.clone(), now);
                    }
                    t
                }
            }
        });
        let drill = p.drill.as_ref().map(|d| {
            let now = unix_secs(SystemTime::now());
            match due(state.last_drill.get(&repo.name), d.every, now) {
                Some(next) => skipped(next),
                None => {
                    out.verbose(1, format!("drilling {}", repo.name));
                    let t = drill(g, &loaded, repo, d, &sources, &results, &copies, &exe);
                    if t.status == Outcome::Ok {
                        state.last_drill.insert(repo.name.clone(), now);
                    }
                    t
                }
            }
        });
        out.verbose(1, format!("measuring {}", repo.name));
        let inventory = inventory(g, &loaded, repo, &exe);
        repos.push(RepositoryResult {
            repository: repo.name.clone(),
            retention,
            check,
            drill,
            inventory,
        });
    }

    let mut failed_sources: Vec<String> = Vec::new();
    for r in &results {
        if r.status == Outcome::Failed && !failed_sources.contains(&r.source) {
            failed_sources.push(r.source.clone());
        }
    }
    let mut failed = failed_sources.clone();
    for c in &copies {
        if c.status == Outcome::Failed {
            failed.push(format!("copy:{}->{}", c.from, c.to));
        }
    }
    for r in &repos {
        for (step, t) in [
            ("retention", &r.retention),
            ("check", &r.check),
            ("drill", &r.drill),
        ] {
            if t.as_ref().is_some_and(|t| t.status == Outcome::Failed) {
                failed.push(format!("{step}:{}", r.repository));
            }
        }
    }
    let report = Report {
        version: plan::VERSION,
        plan: loaded.name.clone(),
        plan_file: loaded.path.display().to_string(),
        started: output::rfc3339(unix_ns(started)),
        duration_s: t0.elapsed().as_secs_f64(),
        status: if failed.is_empty() {
            "success"
        } else {
            "failure"
        },
        failed,
        sources: results,
        copies,
        repositories: repos,
    };

    // Bookkeeping first: a broken report path must not lose the cadence.
    write_atomic(
        &state_dir.join(STATE_FILE),
        &serde_json::to_vec_pretty(&state)?,
    )?;
    let report_path = loaded.report_path()?;
    let mut json = serde_json::to_vec_pretty(&report)?;
    json.push(b'\n');
    write_atomic(&report_path, &json)?;
    if let Some(m) = &p.report.metrics {
        write_atomic(m, metrics(&loaded, &report, &state, started).as_bytes())?;
    }

    if out.json {
        out.json_value(&report)?;
    } else {
        summary(out, &report)?;
    }

    let ok = report.failed.is_empty();
    let hook = if ok {
        p.hooks.on_success.as_deref()
    } else {
        p.hooks.on_failure.as_deref()
    };
    let mut hook_error = None;
    if let Some(cmd) = hook
        && let Err(e) = run_hook(cmd, &loaded, ok, &report_path, &failed_sources)
    {
        hook_error = Some(format!("{e:#}"));
    }
    match (ok, hook_error) {
        (true, None) => Ok(Status::Ok),
        (true, Some(e)) => bail!("plan {}: the on_success hook failed: {e}", loaded.name),
        (false, h) => {
            let hook = h
                .map(|e| format!("; the on_failure hook failed too: {e}"))
                .unwrap_or_default();
            bail!(
                "plan {}: failed: {} (report: {}){hook}",
                loaded.name,
                report.failed.join(", "),
                report_path.display()
            )
        }
    }
}
