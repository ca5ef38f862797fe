//! The plan's steps, each run as children: backup (and verify), copy,
//! retention, check, drill, and the repository's inventory.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

use super::args::{
    CopySelection, base_command, copy_args, copy_env, retention_args, source_args, source_env,
    verify_args, verify_env,
};
use super::child::{CHILD_INCOMPLETE, Child, spawn};
use super::report::{CopyResult, Inventory, Outcome, SourceResult, Task};
use super::{plan_tag, source_tag};
use crate::cli::GlobalArgs;
use crate::contract::{
    BackupReport, CheckOutput, CopyReport, ForgetOutput, ListedSnapshot, SourceDetails, StatsOutput,
};
use crate::output;
use crate::plan::{self, CopySpec, Loaded, RepositorySpec, Source};

/// Backs `src` up into `repo`.
pub(super) fn backup(
    g: &GlobalArgs,
    loaded: &Loaded,
    repo: &RepositorySpec,
    src: &Source,
    exe: &Path,
) -> SourceResult {
    let mut r = SourceResult {
        source: src.name().into(),
        kind: src.kind(),
        repository: repo.name.clone(),
        status: Outcome::Failed,
        exit_code: None,
        duration_s: 0.0,
        bytes_added: 0,
        snapshot_ids: Vec::new(),
        error: None,
        stderr: String::new(),
        verified: None,
        verify_duration_s: None,
    };
    let mut c = base_command(g, repo, exe);
    let api_key = match qdrant_api_key(src) {
        Ok(k) => k,
        Err(e) => {
            r.error = Some(format!("{e:#}"));
            return r;
        }
    };
    if let Some(k) = &api_key {
        c.env("CAIRN_QDRANT_API_KEY", k);
    }
    c.args(source_args(loaded, src));
    c.envs(source_env(src));
    let child = match spawn(c, src.timeout()) {
        Ok(ch) => ch,
        Err(e) => {
            r.error = Some(format!("{e:#}"));
            return r;
        }
    };
    r.exit_code = child.code;
    r.duration_s = child.duration.as_secs_f64();
    r.stderr = child.stderr.clone();
    let json = serde_json::from_slice::<BackupReport>(&child.stdout).ok();
    for s in json.iter().flat_map(|j| &j.snapshots) {
        r.snapshot_ids.push(s.snapshot_id.clone());
        r.bytes_added += s.bytes_added;
    }
    match child.code {
        Some(0) => r.status = Outcome::Ok,
        Some(CHILD_INCOMPLETE) => {
            r.status = Outcome::Warning;
            r.error = Some(child.error());
        }
        _ => r.error = Some(child.error()),
    }
    if src.verify() && r.status != Outcome::Failed {
        let t = Instant::now();
        let errors = verify_saved(g, repo, src, json.as_ref(), api_key.as_deref(), exe);
        r.verify_duration_s = Some(t.elapsed().as_secs_f64());
        r.verified = Some(errors.is_empty());
        if !errors.is_empty() {
            r.status = Outcome::Failed;
            r.error = Some(format!("verify failed: {}", errors.join("; ")));
        }
    }
    r
}

/// A qdrant source's API key (the first line of `api_key_file`).
pub(super) fn qdrant_api_key(src: &Source) -> Result<Option<String>> {
    let Source::Qdrant(q) = src else {
        return Ok(None);
    };
    let Some(f) = &q.api_key_file else {
        return Ok(None);
    };
    let k = std::fs::read_to_string(f)
        .with_context(|| format!("cannot read api_key_file {}", f.display()))?;
    Ok(Some(k.lines().next().unwrap_or("").trim().to_string()))
}

/// The snapshots a successful backup reported that `verify` applies to:
/// pg's database snapshots (not the globals), redis's one, qdrant's one per
/// collection. `None` when there is none.
pub(super) fn verify_ids(report: &BackupReport) -> Option<Vec<String>> {
    let ids: Vec<String> = report
        .snapshots
        .iter()
        .filter(|s| match &s.source {
            SourceDetails::Postgres { database, .. } => database.is_some(),
            SourceDetails::Redis { .. } | SourceDetails::Qdrant { .. } => true,
            SourceDetails::Files | SourceDetails::Stream => false,
        })
        .map(|s| s.snapshot_id.clone())
        .collect();
    (!ids.is_empty()).then_some(ids)
}

/// Verifies every snapshot the backup reported, one child each (with the
/// source's timeout); returns what failed.
pub(super) fn verify_saved(
    g: &GlobalArgs,
    repo: &RepositorySpec,
    src: &Source,
    json: Option<&BackupReport>,
    api_key: Option<&str>,
    exe: &Path,
) -> Vec<String> {
    let Some(ids) = json.and_then(verify_ids) else {
        return vec!["the backup reported no snapshot to verify".into()];
    };
    let mut errors = Vec::new();
    for id in ids {
        let mut c = base_command(g, repo, exe);
        if let Some(k) = api_key {
            c.env("CAIRN_QDRANT_API_KEY", k);
        }
        c.args(verify_args(src, &id));
        c.envs(source_env(src));
        c.envs(verify_env(src));
        let short: String = id.chars().take(8).collect();
        match spawn(c, src.timeout()) {
            Ok(ch) if ch.code == Some(0) => {}
            Ok(ch) => errors.push(format!("snapshot {short}: {}", ch.error())),
            Err(e) => errors.push(format!("snapshot {short}: {e:#}")),
        }
    }
    errors
}

/// A step's task from its child. `detail` reads what was done from the
/// child's JSON; `None` (no such output, as when it failed early) leaves
/// the detail empty rather than inventing a count.
pub(super) fn task_from<T: DeserializeOwned>(
    child: Result<Child>,
    detail: impl FnOnce(T) -> String,
) -> Task {
    match child {
        Err(e) => Task {
            status: Outcome::Failed,
            duration_s: 0.0,
            detail: String::new(),
            error: Some(format!("{e:#}")),
        },
        Ok(ch) => {
            let v = serde_json::from_slice(&ch.stdout).ok();
            let ok = ch.code == Some(0);
            Task {
                status: if ok { Outcome::Ok } else { Outcome::Failed },
                duration_s: ch.duration.as_secs_f64(),
                detail: v.map(detail).unwrap_or_default(),
                error: (!ok).then(|| ch.error()),
            }
        }
    }
}

/// The snapshots this run put into repository `name`, by their ids there:
/// those of the backups that succeeded (exit 0 or 3) and, for a copy
/// destination, those made in this run that the earlier step into it
/// copied.
pub(super) fn made_in(name: &str, backups: &[SourceResult], copies: &[CopyResult]) -> Vec<String> {
    let mut ids: Vec<String> = backups
        .iter()
        .filter(|r| r.repository == name && matches!(r.status, Outcome::Ok | Outcome::Warning))
        .flat_map(|r| r.snapshot_ids.iter().cloned())
        .collect();
    for c in copies
        .iter()
        .filter(|c| c.to == name && c.status == Outcome::Ok)
    {
        ids.extend(c.fresh_ids.iter().cloned());
    }
    ids
}

/// Copies snapshots from `c.from` into `c.to`: those this run made there
/// (`fresh`, by id), or with `catch_up` every snapshot of the plan there
/// (`--tag plan:NAME`, listed first to know what must arrive), so what a
/// failed run left behind arrives now; the destination skips what it
/// already holds. One `cairn -r TO copy --from-repo FROM …` child, its
/// `--json` report read through the contract's type. Every snapshot
/// asked for must come back, copied or found already there.
pub(super) fn copy(
    g: &GlobalArgs,
    loaded: &Loaded,
    c: &CopySpec,
    fresh: Vec<String>,
    catch_up: bool,
    exe: &Path,
) -> CopyResult {
    let mut r = CopyResult::pending(&c.from, &c.to, catch_up);
    let (Some(from), Some(to)) = (
        loaded.plan.repository(&c.from),
        loaded.plan.repository(&c.to),
    ) else {
        // The plan's validation names both; kept as an error, not a panic.
        r.error = Some("the copy step names an unknown repository".into());
        return r;
    };
    r.source_snapshot_ids = if catch_up {
        match plan_snapshots(g, loaded, from, exe) {
            Ok(l) => l.into_iter().map(|s| s.id).collect(),
            Err(e) => {
                r.error = Some(format!("cannot list the snapshots of {}: {e}", c.from));
                return r;
            }
        }
    } else {
        fresh.clone()
    };
    if r.source_snapshot_ids.is_empty() {
        r.status = Outcome::Skipped;
        r.detail = format!("no snapshot in {} to copy", c.from);
        return r;
    }
    let tag = plan_tag(&loaded.name);
    let what = if catch_up {
        CopySelection::Tag(&tag)
    } else {
        CopySelection::Ids(&r.source_snapshot_ids)
    };
    let mut cmd = base_command(g, to, exe);
    cmd.args(copy_args(from, what));
    cmd.envs(copy_env(from));
    let child = match spawn(cmd, c.timeout) {
        Ok(ch) => ch,
        Err(e) => {
            r.error = Some(format!("{e:#}"));
            return r;
        }
    };
    r.exit_code = child.code;
    r.duration_s = child.duration.as_secs_f64();
    r.stderr = child.stderr.clone();
    if child.code != Some(0) {
        r.error = Some(child.error());
        return r;
    }
    let report: CopyReport = match serde_json::from_slice(&child.stdout) {
        Ok(v) => v,
        Err(e) => {
            r.error = Some(format!("copy printed no report cairn run understands: {e}"));
            return r;
        }
    };
    r.snapshots_copied = report.copied.len() as u64;
    r.snapshots_skipped = report.skipped.len() as u64;
    r.blobs_copied = report.blobs_copied;
    r.bytes_copied = report.bytes_copied;
    let mut missing = Vec::new();
    for id in &r.source_snapshot_ids {
        let found = report
            .copied
            .iter()
            .chain(&report.skipped)
            .find(|s| &s.source == id);
        match found {
            Some(s) => {
                r.snapshot_ids.push(s.snapshot.clone());
                if !fresh.contains(id) {
                    continue;
                }
                r.fresh_ids.push(s.snapshot.clone());
                for t in &s.tags {
                    if let Some(name) = t.strip_prefix("source:")
                        && !r.sources.iter().any(|x| x == name)
                    {
                        r.sources.push(name.to_string());
                    }
                }
            }
            None => missing.push(id.chars().take(8).collect::<String>()),
        }
    }
    if !missing.is_empty() {
        r.error = Some(format!(
            "copy did not report snapshot(s) {} as copied",
            missing.join(", ")
        ));
        return r;
    }
    r.status = Outcome::Ok;
    r.detail = format!(
        "copied {} snapshot(s), {} already there, {}{}",
        r.snapshots_copied,
        r.snapshots_skipped,
        output::bytes(r.bytes_copied),
        if catch_up {
            ", catching up on every snapshot of the plan"
        } else {
            ""
        }
    );
    r
}

/// A child's standard output, or its error.
fn output_of(
    g: &GlobalArgs,
    repo: &RepositorySpec,
    args: &[&str],
    exe: &Path,
) -> Result<Vec<u8>, String> {
    let mut c = base_command(g, repo, exe);
    c.args(args);
    match spawn(c, None) {
        Ok(ch) if ch.code == Some(0) => Ok(ch.stdout),
        Ok(ch) => Err(ch.error()),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// The plan's snapshots in `repo`, oldest first (`snapshots --tag plan:NAME`).
fn plan_snapshots(
    g: &GlobalArgs,
    loaded: &Loaded,
    repo: &RepositorySpec,
    exe: &Path,
) -> Result<Vec<ListedSnapshot>, String> {
    let tag = plan_tag(&loaded.name);
    let out = output_of(g, repo, &["snapshots", "--tag", &tag], exe)?;
    serde_json::from_slice(&out).map_err(|e| format!("snapshots: {e}"))
}

/// The repository's stored bytes (`stats`) and the plan's newest
/// snapshot in it (`snapshots --tag plan:NAME`), after every other step.
pub(super) fn inventory(
    g: &GlobalArgs,
    loaded: &Loaded,
    repo: &RepositorySpec,
    exe: &Path,
) -> Inventory {
    let mut inv = Inventory::default();
    let tag = plan_tag(&loaded.name);
    let listed = match plan_snapshots(g, loaded, repo, exe) {
        Ok(l) => l,
        Err(e) => {
            inv.error = Some(e);
            return inv;
        }
    };
    inv.snapshots = Some(listed.len() as u64);
    let newest = listed
        .iter()
        .filter_map(|s| output::parse_rfc3339(&s.time).map(|ns| (ns, s)))
        .max_by_key(|(ns, _)| *ns);
    if let Some((ns, s)) = newest {
        inv.latest_snapshot_time = Some(s.time.clone());
        inv.latest_snapshot_unix = Some(ns as f64 / 1e9);
    }
    // Sizes of one snapshot at most (the newest, or none): what is wanted
    // is the repository's pack total, which `stats` always adds.
    let mut args = vec!["stats", "--mode", "restore-size"];
    match newest {
        Some((_, s)) => args.push(&s.id),
        None => args.extend(["--tag", &tag]),
    }
    match output_of(g, repo, &args, exe)
        .and_then(|b| serde_json::from_slice::<StatsOutput>(&b).map_err(|e| format!("stats: {e}")))
    {
        Ok(st) => inv.stored_bytes = Some(st.repository.bytes),
        Err(e) => inv.error = Some(e),
    }
    inv
}

pub(super) fn retention(
    g: &GlobalArgs,
    loaded: &Loaded,
    repo: &RepositorySpec,
    r: &plan::Retention,
    exe: &Path,
) -> Task {
    let mut c = base_command(g, repo, exe);
    c.args(retention_args(loaded, r));
    task_from(spawn(c, None), |v: ForgetOutput| {
        let pruned = if v.prune.is_some() { ", pruned" } else { "" };
        format!("removed {} snapshot(s){pruned}", v.removed.len())
    })
}

pub(super) fn check(
    g: &GlobalArgs,
    repo: &RepositorySpec,
    c: &plan::CheckSpec,
    exe: &Path,
) -> Task {
    let mut cmd = base_command(g, repo, exe);
    cmd.arg("check");
    if c.read_data {
        cmd.arg("--read-data");
    }
    if let Some(s) = &c.read_data_subset {
        cmd.args(["--read-data-subset", s]);
    }
    task_from(spawn(cmd, None), |v: CheckOutput| {
        format!("read data: {}", v.read_data)
    })
}

/// Drills the latest snapshot of every source backed up or copied into
/// `repo` in this run.
#[allow(clippy::too_many_arguments)]
pub(super) fn drill(
    g: &GlobalArgs,
    loaded: &Loaded,
    repo: &RepositorySpec,
    d: &plan::DrillSpec,
    sources: &[&Source],
    results: &[SourceResult],
    copies: &[CopyResult],
    exe: &Path,
) -> Task {
    let t = Instant::now();
    let mut drilled = Vec::new();
    let mut errors = Vec::new();
    for s in sources {
        let saved = results.iter().any(|r| {
            r.source == s.name() && r.repository == repo.name && r.status != Outcome::Failed
        }) || copies.iter().any(|c| {
            c.to == repo.name && c.status == Outcome::Ok && c.sources.iter().any(|n| n == s.name())
        });
        if !saved {
            continue;
        }
        // A source that saved several snapshots in this run (`pg backup
        // --all`: one per database) has each drilled; `latest` would be
        // only the last one.
        let ids = match run_ids(&repo.name, s.name(), results, copies, 0) {
            Some(ids) if ids.len() > 1 => ids,
            _ => vec!["latest".to_string()],
        };
        let mut ok = true;
        for id in &ids {
            let mut c = base_command(g, repo, exe);
            c.args(["drill", id, "--tag"]).arg(format!(
                "{},{}",
                plan_tag(&loaded.name),
                source_tag(s.name())
            ));
            c.args(["--sample", d.sample.as_deref().unwrap_or("all")]);
            if let Some(dir) = &d.scratch {
                c.arg("--scratch").arg(dir);
            }
            let what = if ids.len() > 1 {
                format!("{} snapshot {}", s.name(), &id[..id.len().min(8)])
            } else {
                s.name().to_string()
            };
            let failed = match spawn(c, None) {
                Ok(ch) if ch.code == Some(0) => None,
                Ok(ch) => Some(ch.error()),
                Err(e) => Some(format!("{e:#}")),
            };
            if let Some(e) = failed {
                ok = false;
                errors.push(format!("{what}: {e}"));
            }
        }
        if ok {
            drilled.push(s.name().to_string());
        }
    }
    let (status, detail) = if drilled.is_empty() && errors.is_empty() {
        (
            Outcome::Skipped,
            "no source was saved or copied in this run".into(),
        )
    } else if errors.is_empty() {
        (Outcome::Ok, format!("drilled {}", drilled.join(", ")))
    } else if drilled.is_empty() {
        (Outcome::Failed, String::new())
    } else {
        (Outcome::Failed, format!("drilled {}", drilled.join(", ")))
    };
    Task {
        status,
        duration_s: t.elapsed().as_secs_f64(),
        detail,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    }
}

/// The ids in repository `repo` of the snapshots `source` made in this
/// run: those its backup into `repo` reported, or those of a copy into
/// `repo` of the ones it made in the copy's origin. `None` when unknown.
fn run_ids(
    repo: &str,
    source: &str,
    results: &[SourceResult],
    copies: &[CopyResult],
    depth: usize,
) -> Option<Vec<String>> {
    if let Some(r) = results
        .iter()
        .find(|r| r.source == source && r.repository == repo && r.status != Outcome::Failed)
    {
        return Some(r.snapshot_ids.clone());
    }
    // Copies chain at most once per repository.
    if depth > copies.len() {
        return None;
    }
    copies
        .iter()
        .filter(|c| c.to == repo && c.status == Outcome::Ok)
        .filter(|c| c.sources.iter().any(|n| n == source))
        .find_map(|c| {
            let from = run_ids(&c.from, source, results, copies, depth + 1)?;
            from.iter()
                .map(|id| {
                    let i = c.source_snapshot_ids.iter().position(|s| s == id)?;
                    c.snapshot_ids.get(i).cloned()
                })
                .collect()
        })
}

pub(super) fn skipped(next: i64) -> Task {
    Task {
        status: Outcome::Skipped,
        duration_s: 0.0,
        detail: format!(
            "not due until {}",
            output::rfc3339(next.saturating_mul(1_000_000_000))
        ),
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which snapshots `verify = true` verifies, from each backup's JSON:
    /// pg's databases but not its globals, redis's one, qdrant's each.
    #[test]
    fn verify_ids_follow_each_commands_json() {
        let report = |details: &[(&str, serde_json::Value)]| {
            let snapshots: Vec<serde_json::Value> = details
                .iter()
                .map(|(id, d)| {
                    let mut v = serde_json::json!({
                        "snapshot_id": id, "parent": null, "paths": [],
                        "files_new": 1, "files_changed": 0, "files_unmodified": 0,
                        "dirs_new": 0, "dirs_changed": 0, "dirs_unmodified": 0,
                        "bytes_read": 1, "bytes_added": 1, "bytes_added_packed": 1,
                        "total_files": 1, "total_bytes": 1, "duration_s": 0.1
                    });
                    v.as_object_mut()
                        .unwrap()
                        .extend(d.as_object().unwrap().clone());
                    v
                })
                .collect();
            serde_json::from_value::<BackupReport>(
                serde_json::json!({"snapshots": snapshots, "failed": []}),
            )
            .unwrap()
        };
        let pg = |db: Option<&str>| serde_json::json!({"type": "postgres", "database": db, "database_size": null, "tables": null});
        let r = report(&[
            ("g", pg(None)),
            ("da", pg(Some("a"))),
            ("db", pg(Some("b"))),
        ]);
        assert_eq!(verify_ids(&r).unwrap(), ["da", "db"]);
        assert_eq!(verify_ids(&report(&[("g", pg(None))])), None);
        let r = report(&[(
            "r1",
            serde_json::json!({"type": "redis", "server": "h:1", "redis_version": "7",
                               "rdb_version": 11, "keys": {"db0": 3}}),
        )]);
        assert_eq!(verify_ids(&r).unwrap(), ["r1"]);
        let q = |c: &str| {
            serde_json::json!({"type": "qdrant", "server": "http://h", "qdrant_version": "1",
                               "collection": c, "qdrant_snapshot": "x", "checksum": null,
                               "points_count": 2})
        };
        let r = report(&[("q1", q("c1")), ("q2", q("c2"))]);
        assert_eq!(verify_ids(&r).unwrap(), ["q1", "q2"]);
        let r = report(&[("f", serde_json::json!({"type": "files"}))]);
        assert_eq!(verify_ids(&r), None);
    }
}
