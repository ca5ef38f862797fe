//! `cairn run --dry-run`: the commands a plan would run and what would fail.

use std::path::Path;

use anyhow::Result;

use super::args::{
    CopySelection, base_command, copy_args, copy_env, retention_args, source_args, source_env,
    verify_args, verify_env,
};
use super::child::show;
use crate::cli::GlobalArgs;
use crate::commands::Status;
use crate::output::Output;
use crate::plan::{Loaded, Source};

/// `--dry-run`: print every command the plan would run, then what would
/// fail (repositories that do not open, missing programs and files);
/// exit 1 if anything would.
pub(super) fn dry_run(
    g: &GlobalArgs,
    out: Output,
    loaded: &Loaded,
    sources: &[&Source],
    exe: &Path,
) -> Result<Status> {
    let p = &loaded.plan;
    let mut lines = Vec::new();
    for repo in &p.repositories {
        // Sources go to the primaries only; copy destinations get copies.
        let primary = !p.is_copy_destination(&repo.name);
        for s in sources.iter().filter(|_| primary) {
            let c = {
                let mut c = base_command(g, repo, exe);
                c.args(source_args(loaded, s));
                c.envs(source_env(s));
                c
            };
            lines.push(show(&c));
            if s.verify() {
                let mut c = base_command(g, repo, exe);
                c.args(verify_args(s, "SNAPSHOT"));
                c.envs(source_env(s));
                c.envs(verify_env(s));
                lines.push(format!("{} (each snapshot saved)", show(&c)));
            }
        }
    }
    for cp in &p.copies {
        // Both exist: the plan's validation named the step otherwise.
        if let (Some(from), Some(to)) = (p.repository(&cp.from), p.repository(&cp.to)) {
            let mut c = base_command(g, to, exe);
            c.args(copy_args(
                from,
                CopySelection::Ids(&["SNAPSHOT…".to_string()]),
            ));
            c.envs(copy_env(from));
            lines.push(format!(
                "{} (the snapshots this run made in {})",
                show(&c),
                cp.from
            ));
        }
    }
    for repo in &p.repositories {
        if let Some(r) = &p.retention {
            let mut c = base_command(g, repo, exe);
            c.args(retention_args(loaded, r));
            lines.push(show(&c));
        }
    }
    let problems = crate::commands::preflight::problems(g, loaded, sources);
    let fail = || {
        anyhow::anyhow!(
            "plan {} would fail: {} problem(s) found",
            loaded.name,
            problems.len()
        )
    };
    if out.json {
        out.json_value(&serde_json::json!({
            "plan": loaded.name,
            "valid": problems.is_empty(),
            "commands": lines,
            "problems": problems,
        }))?;
        return if problems.is_empty() {
            Ok(Status::Ok)
        } else {
            Err(fail())
        };
    }
    out.line(format!(
        "plan {}: {} source(s), {} repositor{}{}",
        loaded.name,
        sources.len(),
        p.repositories.len(),
        if p.repositories.len() == 1 {
            "y"
        } else {
            "ies"
        },
        match p.copies.len() {
            0 => String::new(),
            n => format!(", {n} copy step(s)"),
        }
    ))?;
    for l in lines {
        out.line(format!("  {l}"))?;
    }
    if let Some(c) = &p.check {
        out.line(format!(
            "  check every {}",
            repo_core::HumanDuration(c.every)
        ))?;
    }
    if let Some(d) = &p.drill {
        out.line(format!(
            "  drill every {}",
            repo_core::HumanDuration(d.every)
        ))?;
    }
    if problems.is_empty() {
        out.line(format!(
            "plan {} is valid: its directories are writable, every repository opens, \
             every source's programs and files are there",
            loaded.name
        ))?;
        return Ok(Status::Ok);
    }
    out.line(format!("plan {} would fail:", loaded.name))?;
    for x in &problems {
        out.line(format!("  {}: {}", x.object, x.problem))?;
    }
    Err(fail())
}
