//! `cairn run PLAN`: execute a plan file (SPEC.md §28).
//!
//! Each backup, forget, check and drill runs as a child `cairn` process
//! (this very executable) with `--json`. That isolates failures (a source
//! that panics, hangs up or exits cannot take the others down), reuses
//! every command unchanged, and gives each step its own exit code and
//! stderr for the report.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Status, describe_status};
use crate::cli::{GlobalArgs, RunArgs};
use crate::contract::{BackupReport, CheckOutput, ErrorReport, ForgetOutput, SourceDetails};
use crate::credentials::redact_url;
use crate::output::{self, Output};
use crate::plan::{self, Loaded, RepositorySpec, Source};

/// Exit code of a child whose snapshot was saved with unreadable files.
const CHILD_INCOMPLETE: i32 = 3;
/// How much of a child's stderr the report keeps (its end).
const STDERR_KEEP: usize = 8 * 1024;
/// The state file's name inside the state directory.
const STATE_FILE: &str = "state.json";

/// The tag every snapshot of plan `name` carries.
pub fn plan_tag(name: &str) -> String {
    format!("plan:{name}")
}

/// The tag every snapshot of source `name` carries.
pub fn source_tag(name: &str) -> String {
    format!("source:{name}")
}

/// What happened to one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Outcome {
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
struct SourceResult {
    source: String,
    #[serde(rename = "type")]
    kind: &'static str,
    repository: String,
    status: Outcome,
    exit_code: Option<i32>,
    duration_s: f64,
    bytes_added: u64,
    snapshot_ids: Vec<String>,
    error: Option<String>,
    /// The end of the child's standard error.
    stderr: String,
    /// With `verify = true`: whether every snapshot saved passed its
    /// `verify` (`null` when not asked or the backup failed).
    verified: Option<bool>,
    /// How long those verifications took.
    verify_duration_s: Option<f64>,
}

/// A retention, check or drill step on one repository.
#[derive(Debug, Serialize)]
struct Task {
    status: Outcome,
    duration_s: f64,
    /// What was done, or why it was skipped.
    detail: String,
    error: Option<String>,
}

/// The per-repository steps after the backups.
#[derive(Debug, Serialize)]
struct RepositoryResult {
    repository: String,
    retention: Option<Task>,
    check: Option<Task>,
    drill: Option<Task>,
}

/// The JSON report (`[report] json`, `--json`, `CAIRN_PLAN_REPORT`).
#[derive(Debug, Serialize)]
struct Report {
    version: u32,
    plan: String,
    plan_file: String,
    started: String,
    duration_s: f64,
    status: &'static str,
    /// Failed sources, then failed steps as `step:repository`.
    failed: Vec<String>,
    sources: Vec<SourceResult>,
    repositories: Vec<RepositoryResult>,
}

/// Cadence bookkeeping, kept between runs in STATE_DIR/state.json. Times
/// are whole Unix seconds (integers survive JSON exactly; floats may not).
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// source → repository → last successful backup.
    #[serde(default)]
    last_success: BTreeMap<String, BTreeMap<String, i64>>,
    /// repository → last successful check.
    #[serde(default)]
    last_check: BTreeMap<String, i64>,
    /// repository → last successful drill.
    #[serde(default)]
    last_drill: BTreeMap<String, i64>,
}

/// A finished child process.
struct Child {
    code: Option<i32>,
    status_text: String,
    stdout: Vec<u8>,
    stderr: String,
    duration: Duration,
}

impl Child {
    /// The child's error object (children run with `--json`), else its
    /// error line(s) (`cairn: error: …`), else the end of its stderr, else
    /// how it exited.
    fn error(&self) -> String {
        if let Some(e) = ErrorReport::find(&self.stderr) {
            return e.error.message;
        }
        let errs: Vec<&str> = self
            .stderr
            .lines()
            .filter_map(|l| l.strip_prefix("cairn: error: "))
            .collect();
        if !errs.is_empty() {
            return errs.join("; ");
        }
        match self.stderr.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(l) => format!("{} ({})", l.trim(), self.status_text),
            None => self.status_text.clone(),
        }
    }
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

    let mut results = Vec::new();
    for src in &sources {
        for repo in &p.repositories {
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
                    let t = drill(g, &loaded, repo, d, &sources, &results, &exe);
                    if t.status == Outcome::Ok {
                        state.last_drill.insert(repo.name.clone(), now);
                    }
                    t
                }
            }
        });
        repos.push(RepositoryResult {
            repository: repo.name.clone(),
            retention,
            check,
            drill,
        });
    }

    let mut failed_sources: Vec<String> = Vec::new();
    for r in &results {
        if r.status == Outcome::Failed && !failed_sources.contains(&r.source) {
            failed_sources.push(r.source.clone());
        }
    }
    let mut failed = failed_sources.clone();
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

/// `cairn -r REPO --json [cache]` with the repository's password in the
/// environment and nothing inherited that could point elsewhere.
fn base_command(g: &GlobalArgs, repo: &RepositorySpec, exe: &Path) -> Command {
    let mut c = Command::new(exe);
    for v in [
        "CAIRN_REPOSITORY",
        "CAIRN_PASSWORD",
        "CAIRN_PASSWORD_FILE",
        "CAIRN_PASSWORD_COMMAND",
        "CAIRN_QDRANT_API_KEY",
        "CAIRN_PG_DSN",
        "CAIRN_REDIS_URL",
    ] {
        c.env_remove(v);
    }
    if let Some(f) = &repo.password_file {
        c.env("CAIRN_PASSWORD_FILE", f);
    }
    if let Some(cmd) = &repo.password_command {
        c.env("CAIRN_PASSWORD_COMMAND", cmd);
    }
    c.arg("-r").arg(&repo.path).arg("--json");
    if let Some(d) = repo.cache_dir.as_ref().or(g.cache_dir.as_ref()) {
        c.arg("--cache-dir").arg(d);
    } else if g.no_cache {
        c.arg("--no-cache");
    }
    c.stdin(Stdio::null());
    c
}

/// The connection string of a database source: its children get it in
/// their environment, as in their arguments a password would show in `ps`.
fn source_env(src: &Source) -> Option<(&'static str, &str)> {
    match src {
        Source::Postgres(p) => Some(("CAIRN_PG_DSN", &p.dsn)),
        Source::Redis(r) => Some(("CAIRN_REDIS_URL", &r.url)),
        Source::Paths(_) | Source::Command(_) | Source::Qdrant(_) => None,
    }
}

/// The subcommand and flags backing up `src` (after the global options).
fn source_args(loaded: &Loaded, src: &Source) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut tags = vec![plan_tag(&loaded.name), source_tag(src.name())];
    tags.extend(src.tags().iter().cloned());
    let tag_args = |a: &mut Vec<OsString>| {
        for t in &tags {
            a.push("--tag".into());
            a.push(t.into());
        }
    };
    let host = loaded.plan.host.clone();
    let host_args = |a: &mut Vec<OsString>| {
        if let Some(h) = &host {
            a.push("--host".into());
            a.push(h.into());
        }
    };
    match src {
        Source::Paths(p) => {
            a.push("backup".into());
            tag_args(&mut a);
            host_args(&mut a);
            for e in &p.exclude {
                a.extend(["--exclude".into(), e.into()]);
            }
            for f in &p.exclude_file {
                a.extend(["--exclude-file".into(), f.into()]);
            }
            if p.exclude_caches {
                a.push("--exclude-caches".into());
            }
            if p.one_file_system {
                a.push("--one-file-system".into());
            }
            // Plan paths are absolute (made so on load), so none can be
            // taken for an option; `--` would mean a command here.
            a.extend(p.paths.iter().map(OsString::from));
        }
        Source::Command(c) => {
            a.push("backup".into());
            tag_args(&mut a);
            host_args(&mut a);
            a.extend([
                "--stdin-from-command".into(),
                "--stdin-filename".into(),
                (&c.stdin_filename).into(),
                "--".into(),
            ]);
            a.extend(c.command.iter().map(OsString::from));
        }
        Source::Postgres(pg) => {
            a.extend(["pg".into(), "backup".into()]);
            if pg.all {
                a.push("--all".into());
            }
            for d in &pg.databases {
                a.extend(["--database".into(), d.into()]);
            }
            tag_args(&mut a);
            host_args(&mut a);
        }
        Source::Redis(_) => {
            a.extend(["redis".into(), "backup".into()]);
            tag_args(&mut a);
            host_args(&mut a);
        }
        Source::Qdrant(q) => {
            a.extend([
                "qdrant".into(),
                "backup".into(),
                "--url".into(),
                (&q.url).into(),
            ]);
            if q.all {
                a.push("--all".into());
            }
            for c in &q.collections {
                a.extend(["--collection".into(), c.into()]);
            }
            tag_args(&mut a);
            host_args(&mut a);
        }
    }
    a
}

/// Runs a prepared child and collects everything it said. After
/// `timeout`, the child's whole process group (it and whatever it started,
/// such as pg_dump) is killed.
fn spawn(mut c: Command, timeout: Option<Duration>) -> Result<Child> {
    let t = Instant::now();
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    if timeout.is_some() {
        // Its own group, to kill what it started too. Only then: a group of
        // its own would also keep Ctrl-C on a terminal from reaching it.
        c.process_group(0);
    }
    let mut child = c.spawn().context("cannot start the cairn child process")?;
    // Both pipes drained at once, so a chatty child never blocks on one.
    let mut so = child.stdout.take().expect("piped");
    let mut se = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let mut timed_out = false;
    let status = match timeout {
        None => child.wait()?,
        Some(limit) => loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if t.elapsed() >= limit {
                timed_out = true;
                let pg = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGKILL);
                break child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(50));
        },
    };
    let stdout = out.join().unwrap_or_default();
    let stderr_bytes = err.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr_bytes);
    let cut = stderr.len().saturating_sub(STDERR_KEEP);
    let cut = (cut..=stderr.len())
        .find(|&i| stderr.is_char_boundary(i))
        .unwrap_or(stderr.len());
    let mut status_text = describe_status(status);
    if timed_out {
        status_text = format!(
            "timed out after {}s and was killed",
            timeout.unwrap_or_default().as_secs()
        );
    }
    Ok(Child {
        code: if timed_out { None } else { status.code() },
        status_text,
        stdout,
        stderr: stderr[cut..].to_string(),
        duration: t.elapsed(),
    })
}

/// Backs `src` up into `repo`.
fn backup(
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
fn qdrant_api_key(src: &Source) -> Result<Option<String>> {
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
fn verify_ids(report: &BackupReport) -> Option<Vec<String>> {
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

/// The `verify` subcommand for snapshot `id` of `src` (after the global
/// options).
fn verify_args(src: &Source, id: &str) -> Vec<OsString> {
    match src {
        Source::Postgres(_) => vec!["pg".into(), "verify".into(), id.into()],
        Source::Redis(_) => vec!["redis".into(), "verify".into(), id.into()],
        Source::Qdrant(q) => vec![
            "qdrant".into(),
            "verify".into(),
            id.into(),
            "--url".into(),
            (&q.url).into(),
        ],
        Source::Paths(_) | Source::Command(_) => Vec::new(),
    }
}

/// Verifies every snapshot the backup reported, one child each (with the
/// source's timeout); returns what failed.
fn verify_saved(
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
        let short: String = id.chars().take(8).collect();
        match spawn(c, src.timeout()) {
            Ok(ch) if ch.code == Some(0) => {}
            Ok(ch) => errors.push(format!("snapshot {short}: {}", ch.error())),
            Err(e) => errors.push(format!("snapshot {short}: {e:#}")),
        }
    }
    errors
}

/// The `cairn forget` arguments for the plan's retention.
fn retention_args(loaded: &Loaded, r: &plan::Retention) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["forget".into()];
    for (flag, v) in [
        ("--keep-last", r.keep_last),
        ("--keep-hourly", r.keep_hourly),
        ("--keep-daily", r.keep_daily),
        ("--keep-weekly", r.keep_weekly),
        ("--keep-monthly", r.keep_monthly),
        ("--keep-yearly", r.keep_yearly),
    ] {
        if let Some(n) = v {
            a.extend([flag.into(), n.to_string().into()]);
        }
    }
    if let Some(w) = &r.keep_within {
        a.extend(["--keep-within".into(), w.into()]);
    }
    for t in &r.keep_tags {
        a.extend(["--keep-tag".into(), t.into()]);
    }
    // Only this plan's snapshots, one group per source (its tag), host and paths.
    a.extend([
        "--tag".into(),
        plan_tag(&loaded.name).into(),
        "--group-by".into(),
        "host,paths,tags".into(),
    ]);
    if r.prune {
        a.push("--prune".into());
        if let Some(gr) = &r.prune_grace {
            a.extend(["--grace".into(), gr.into()]);
        }
    }
    a
}

/// A step's task from its child. `detail` reads what was done from the
/// child's JSON; `None` (no such output, as when it failed early) leaves
/// the detail empty rather than inventing a count.
fn task_from<T: DeserializeOwned>(child: Result<Child>, detail: impl FnOnce(T) -> String) -> Task {
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

fn retention(
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

fn check(g: &GlobalArgs, repo: &RepositorySpec, c: &plan::CheckSpec, exe: &Path) -> Task {
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

/// Drills the latest snapshot of every source backed up into `repo` in
/// this run.
fn drill(
    g: &GlobalArgs,
    loaded: &Loaded,
    repo: &RepositorySpec,
    d: &plan::DrillSpec,
    sources: &[&Source],
    results: &[SourceResult],
    exe: &Path,
) -> Task {
    let t = Instant::now();
    let mut drilled = Vec::new();
    let mut errors = Vec::new();
    for s in sources {
        let saved = results.iter().any(|r| {
            r.source == s.name() && r.repository == repo.name && r.status != Outcome::Failed
        });
        if !saved {
            continue;
        }
        let mut c = base_command(g, repo, exe);
        c.args(["drill", "latest", "--tag"]).arg(format!(
            "{},{}",
            plan_tag(&loaded.name),
            source_tag(s.name())
        ));
        c.args(["--sample", d.sample.as_deref().unwrap_or("all")]);
        if let Some(dir) = &d.scratch {
            c.arg("--scratch").arg(dir);
        }
        match spawn(c, None) {
            Ok(ch) if ch.code == Some(0) => drilled.push(s.name().to_string()),
            Ok(ch) => errors.push(format!("{}: {}", s.name(), ch.error())),
            Err(e) => errors.push(format!("{}: {e:#}", s.name())),
        }
    }
    let (status, detail) = if drilled.is_empty() && errors.is_empty() {
        (Outcome::Skipped, "no source was saved in this run".into())
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

/// `None` when due now; else when it is next due (Unix seconds).
fn due(last: Option<&i64>, every: Duration, now: i64) -> Option<i64> {
    let next = last?.saturating_add(i64::try_from(every.as_secs()).unwrap_or(i64::MAX));
    (next > now).then_some(next)
}

fn skipped(next: i64) -> Task {
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

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Whole Unix seconds, for the state.
fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .try_into()
        .unwrap_or(i64::MAX)
}

fn unix_ns(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .try_into()
        .unwrap_or(i64::MAX)
}

/// Takes `STATE_DIR/lock` (flock, exclusive, not waiting).
fn lock(state_dir: &Path, name: &str) -> Result<Flock<std::fs::File>> {
    let path = state_dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == Errno::EWOULDBLOCK {
            anyhow::Error::from(crate::contract::LockHeld(format!(
                "plan {name} is already running (another process holds {})",
                path.display()
            )))
        } else {
            anyhow::Error::from(e).context(format!("cannot lock {}", path.display()))
        }
    })
}

fn load_state(path: &Path) -> Result<State> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| {
            format!(
                "damaged plan state {} (delete it to start over)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes `path` so a reader (the metrics collector, a hook) sees the old
/// or the new content, never half of it: a temporary file in the same
/// directory, synced, renamed over.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(d) = dir {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::Error::from(e).context(format!("cannot write {}", path.display()))
    })
}

/// A Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The textfile-collector metrics for this run.
fn metrics(loaded: &Loaded, r: &Report, state: &State, started: SystemTime) -> String {
    let plan = label(&loaded.name);
    let mut m = String::new();
    let mut family = |name: &str, help: &str, rows: Vec<(String, f64)>| {
        if rows.is_empty() {
            return;
        }
        m.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (labels, v) in rows {
            m.push_str(&format!("{name}{{{labels}}} {v}\n"));
        }
    };
    let src_labels = |s: &SourceResult| {
        format!(
            "plan=\"{plan}\",source=\"{}\",repository=\"{}\"",
            label(&s.source),
            label(&s.repository)
        )
    };
    let rows = |f: &dyn Fn(&SourceResult) -> Option<f64>| {
        r.sources
            .iter()
            .filter_map(|s| f(s).map(|v| (src_labels(s), v)))
            .collect::<Vec<_>>()
    };
    family(
        "cairn_source_success",
        "1 if the source's last backup into the repository succeeded, else 0.",
        rows(&|s| {
            Some(if s.status == Outcome::Failed {
                0.0
            } else {
                1.0
            })
        }),
    );
    // Every source of the plan in every repository, 0 when never saved: an
    // absent series would never trip `time() - x > 86400`, and a
    // `--source` run must not hide the others' age.
    let mut last = Vec::new();
    for src in &loaded.plan.sources {
        for repo in &loaded.plan.repositories {
            let t = state
                .last_success
                .get(src.name())
                .and_then(|m| m.get(&repo.name))
                .map_or(0.0, |&t| t as f64);
            let labels = format!(
                "plan=\"{plan}\",source=\"{}\",repository=\"{}\"",
                label(src.name()),
                label(&repo.name)
            );
            last.push((labels, t));
        }
    }
    family(
        "cairn_source_last_success_timestamp_seconds",
        "Unix time of the source's last successful backup into the repository (0: never).",
        last,
    );
    family(
        "cairn_source_duration_seconds",
        "Duration of the source's last backup into the repository.",
        rows(&|s| Some(s.duration_s)),
    );
    family(
        "cairn_source_bytes_added",
        "Bytes of new data the source's last backup added to the repository.",
        rows(&|s| Some(s.bytes_added as f64)),
    );
    family(
        "cairn_source_verified",
        "1 if every snapshot of the source's last backup into the repository passed its verify, else 0 (sources with verify = true).",
        rows(&|s| s.verified.map(|ok| if ok { 1.0 } else { 0.0 })),
    );
    let repo_rows = |f: &dyn Fn(&str) -> Option<f64>| {
        r.repositories
            .iter()
            .filter_map(|x| {
                f(&x.repository).map(|v| {
                    (
                        format!("plan=\"{plan}\",repository=\"{}\"", label(&x.repository)),
                        v,
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    // Likewise 0 when never, for the steps the plan asks for.
    let (checks, drills) = (loaded.plan.check.is_some(), loaded.plan.drill.is_some());
    family(
        "cairn_check_last_success_timestamp_seconds",
        "Unix time of the repository's last successful check (0: never).",
        repo_rows(&|n| {
            let t = state.last_check.get(n).map(|&t| t as f64);
            if checks { t.or(Some(0.0)) } else { t }
        }),
    );
    family(
        "cairn_drill_last_success_timestamp_seconds",
        "Unix time of the repository's last successful restore drill (0: never).",
        repo_rows(&|n| {
            let t = state.last_drill.get(n).map(|&t| t as f64);
            if drills { t.or(Some(0.0)) } else { t }
        }),
    );
    let run = |v: f64| vec![(format!("plan=\"{plan}\""), v)];
    family(
        "cairn_run_timestamp_seconds",
        "Unix time the plan's last run started.",
        run(unix(started)),
    );
    family(
        "cairn_run_duration_seconds",
        "Duration of the plan's last run.",
        run(r.duration_s),
    );
    family(
        "cairn_run_success",
        "1 if every step of the plan's last run succeeded, else 0.",
        run(if r.failed.is_empty() { 1.0 } else { 0.0 }),
    );
    m
}

/// Runs a hook with `sh -c`; its output goes to our stderr, so `--json`
/// stdout stays parseable.
fn run_hook(cmd: &str, loaded: &Loaded, ok: bool, report: &Path, failed: &[String]) -> Result<()> {
    let err = std::io::stderr().as_fd().try_clone_to_owned()?;
    let err2 = err.try_clone()?;
    let status = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("CAIRN_PLAN", &loaded.name)
        .env("CAIRN_PLAN_FILE", &loaded.path)
        .env("CAIRN_PLAN_STATUS", if ok { "success" } else { "failure" })
        .env("CAIRN_PLAN_REPORT", report)
        .env("CAIRN_PLAN_FAILED", failed.join(","))
        .stdin(Stdio::null())
        .stdout(Stdio::from(err))
        .stderr(Stdio::from(err2))
        .status()
        .context("cannot run the hook")?;
    if !status.success() {
        bail!("hook {}", describe_status(status));
    }
    Ok(())
}

/// The human summary: one row per source and repository, then the steps.
fn summary(out: Output, r: &Report) -> Result<()> {
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
    }
    out.line(format!(
        "plan {}: {} in {}",
        r.plan,
        r.status,
        output::duration((r.duration_s * 1e9) as u64)
    ))?;
    Ok(())
}

fn status_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Warning => "warning",
        Outcome::Failed => "FAILED",
        Outcome::Skipped => "skipped",
    }
}

/// `--dry-run`: print every command the plan would run, then what would
/// fail (repositories that do not open, missing programs and files);
/// exit 1 if anything would.
fn dry_run(
    g: &GlobalArgs,
    out: Output,
    loaded: &Loaded,
    sources: &[&Source],
    exe: &Path,
) -> Result<Status> {
    let p = &loaded.plan;
    let mut lines = Vec::new();
    for repo in &p.repositories {
        for s in sources {
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
                lines.push(format!("{} (each snapshot saved)", show(&c)));
            }
        }
        if let Some(r) = &p.retention {
            let mut c = base_command(g, repo, exe);
            c.args(retention_args(loaded, r));
            lines.push(show(&c));
        }
    }
    let problems = super::preflight::problems(g, loaded, sources);
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
        "plan {}: {} source(s), {} repositor{}",
        loaded.name,
        sources.len(),
        p.repositories.len(),
        if p.repositories.len() == 1 {
            "y"
        } else {
            "ies"
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

/// A command for display, with credentials in URLs hidden.
fn show(c: &Command) -> String {
    let mut parts: Vec<String> = c
        .get_envs()
        .filter(|(k, _)| *k == "CAIRN_PG_DSN" || *k == "CAIRN_REDIS_URL")
        .filter_map(|(k, v)| {
            Some(format!(
                "{}={}",
                k.to_string_lossy(),
                redact_url(&v?.to_string_lossy())
            ))
        })
        .collect();
    parts.push(c.get_program().to_string_lossy().into_owned());
    parts.extend(c.get_args().map(|a| redact_url(&a.to_string_lossy())));
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every child command line is one our own parser accepts (qdrant's
    /// is another command's; it is built the same way).
    #[test]
    fn child_command_lines_parse() {
        use clap::Parser;
        let text = r#"
version = 1
host = "h1"
[[repository]]
name = "r"
path = "/r"
password_file = "/pw"
[retention]
keep_last = 3
keep_within = "2d"
keep_tags = ["a,b"]
prune = true
prune_grace = "0"
[[source]]
name = "files"
type = "paths"
paths = ["/etc", "rel"]
exclude = ["*.tmp"]
exclude_file = ["ex"]
exclude_caches = true
one_file_system = true
tags = ["t1"]
[[source]]
name = "db"
type = "postgres"
dsn = "postgresql://u:p@h/postgres"
databases = ["a", "b"]
[[source]]
name = "dball"
type = "postgres"
dsn = "host=/run/postgresql"
all = true
[[source]]
name = "cache"
type = "redis"
url = "redis://h:1"
verify = true
[[source]]
name = "vectors"
type = "qdrant"
url = "http://h:6333"
collections = ["docs"]
verify = true
[[source]]
name = "ldap"
type = "command"
command = ["slapcat", "-n", "1"]
stdin_filename = "ldap.ldif"
"#;
        let (plan, name) = crate::plan::parse(text, "x", Path::new("/base")).unwrap();
        let loaded = Loaded {
            plan,
            name,
            path: "/base/x.toml".into(),
        };
        let parse = |rest: Vec<OsString>| {
            let mut argv: Vec<OsString> = vec!["cairn".into(), "-r".into(), "/r".into()];
            argv.extend(rest);
            crate::cli::Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
        };
        for src in &loaded.plan.sources {
            let cli = parse(source_args(&loaded, src));
            match (&cli.command, src) {
                (crate::cli::Command::Backup(b), Source::Paths(_)) => {
                    assert_eq!(b.paths, [Path::new("/etc"), Path::new("/base/rel")]);
                    assert_eq!(b.tags, ["plan:x", "source:files", "t1"]);
                    assert_eq!(b.excludes, ["*.tmp"]);
                    assert_eq!(b.exclude_files, [Path::new("/base/ex")]);
                    assert!(b.exclude_caches && b.one_file_system);
                    assert_eq!(b.host.as_deref(), Some("h1"));
                }
                (crate::cli::Command::Backup(b), Source::Command(_)) => {
                    assert!(b.stdin_from_command && b.paths.is_empty());
                    assert_eq!(b.command, ["slapcat", "-n", "1"]);
                    assert_eq!(b.stdin_filename.as_deref(), Some("ldap.ldif"));
                }
                (crate::cli::Command::Pg(p), Source::Postgres(s)) => {
                    let crate::cli::PgCommand::Backup(b) = &p.command else {
                        panic!("not pg backup")
                    };
                    assert_eq!(b.dsn, None, "the DSN goes in the environment");
                    assert_eq!(source_env(src), Some(("CAIRN_PG_DSN", s.dsn.as_str())));
                    assert_eq!(b.all, s.all);
                    assert_eq!(b.databases, s.databases);
                    assert_eq!(b.tags, ["plan:x", format!("source:{}", s.name).as_str()]);
                    assert_eq!(b.host.as_deref(), Some("h1"));
                }
                (crate::cli::Command::Qdrant(q), Source::Qdrant(_)) => {
                    let crate::cli::QdrantCommand::Backup(b) = &q.command else {
                        panic!("not qdrant backup")
                    };
                    assert_eq!(b.server.url, "http://h:6333");
                    assert_eq!(b.collections, ["docs"]);
                    assert_eq!(b.host.as_deref(), Some("h1"));
                }
                (crate::cli::Command::Redis(r), Source::Redis(_)) => {
                    let crate::cli::RedisCommand::Backup(b) = &r.command else {
                        panic!("not redis backup")
                    };
                    assert_eq!(b.url, None, "the URL goes in the environment");
                    assert_eq!(source_env(src), Some(("CAIRN_REDIS_URL", "redis://h:1")));
                    assert_eq!(b.host.as_deref(), Some("h1"));
                }
                (c, s) => panic!("{} became {c:?}", s.name()),
            }
        }
        // The verify commands, on a snapshot id.
        for src in &loaded.plan.sources {
            let args = verify_args(src, "1a2b3c4d");
            if args.is_empty() {
                continue;
            }
            match (&parse(args).command, src) {
                (crate::cli::Command::Pg(p), Source::Postgres(s)) => {
                    let crate::cli::PgCommand::Verify(v) = &p.command else {
                        panic!("not pg verify")
                    };
                    assert_eq!((v.snapshot.as_str(), v.dsn.as_deref()), ("1a2b3c4d", None));
                    assert_eq!(source_env(src), Some(("CAIRN_PG_DSN", s.dsn.as_str())));
                }
                (crate::cli::Command::Redis(r), Source::Redis(_)) => {
                    let crate::cli::RedisCommand::Verify(v) = &r.command else {
                        panic!("not redis verify")
                    };
                    assert_eq!(v.snapshot, "1a2b3c4d");
                }
                (crate::cli::Command::Qdrant(q), Source::Qdrant(_)) => {
                    let crate::cli::QdrantCommand::Verify(v) = &q.command else {
                        panic!("not qdrant verify")
                    };
                    assert_eq!(v.snapshot, "1a2b3c4d");
                    assert_eq!(v.server.url, "http://h:6333");
                }
                (c, s) => panic!("{} became {c:?}", s.name()),
            }
        }
        let r = loaded.plan.retention.as_ref().unwrap();
        let cli = parse(retention_args(&loaded, r));
        let crate::cli::Command::Forget(f) = &cli.command else {
            panic!("not forget")
        };
        assert_eq!(f.keep_last, Some(3));
        assert!(f.keep_within.is_some());
        assert_eq!(f.keep_tags, ["a,b"]);
        assert_eq!(f.filter.tags, ["plan:x"]);
        assert!(f.prune);
        assert_eq!(f.prune_options.grace, Duration::ZERO);
    }

    #[test]
    fn cadence() {
        let day = Duration::from_secs(86_400);
        assert_eq!(due(None, day, 100), None);
        assert_eq!(due(Some(&100), day, 200), Some(86_500));
        assert_eq!(due(Some(&100), day, 86_500), None);
    }

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
