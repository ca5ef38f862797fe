//! `cairn pg basebackup`, `pg restore-cluster` and `pg pitr-verify`:
//! point-in-time recovery from physical base backups and archived WAL (the
//! exporter is in `crate::exporters::pg_base`).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use repo_core::{Repository, SnapshotEntry, SnapshotFilter};
use serde::Serialize;

use super::pg::connect;
use super::{Status, find_node, open};
use crate::cli::{
    GlobalArgs, PgBasebackupArgs, PgPitrVerifyArgs, PgRestoreClusterArgs, PgTargetAction,
    PgTargetArgs,
};
use crate::contract::{BackupReport, SavedSnapshot, SourceDetails};
use crate::exporters::pg_base::{self as base, BaseInfo, Recovery, Target};
use crate::exporters::postgres::{Clients, Server};
use crate::output::{self, Output};

/// `pg basebackup --json`: the backup-like object, plus the archive and
/// archiver facts for monitoring.
#[derive(Serialize)]
struct BasebackupJson<'a> {
    #[serde(flatten)]
    report: &'a BackupReport,
    #[serde(flatten)]
    facts: &'a base::PitrFacts,
}

/// `cairn pg basebackup`.
pub fn basebackup(g: &GlobalArgs, out: Output, a: &PgBasebackupArgs) -> Result<Status> {
    let server = connect(a.dsn.as_deref(), a.dsn_file.as_deref())?;
    let repo = open(g, out)?;
    let (outcome, info) = base::base_backup(
        &repo,
        &server,
        &base::BaseBackupOptions {
            fast_checkpoint: a.fast,
            max_rate: a.max_rate.clone(),
            tags: a.tags.clone(),
            host: a.host.clone(),
        },
    )?;
    let s = &outcome.snapshot.snapshot.summary;
    // The snapshot is saved: a failure here costs space, not the backup.
    let recompressed =
        crate::exporters::pg_recompress::since_previous(&repo, &info, &outcome.snapshot.id)
            .inspect_err(|e| out.warn(format!("cannot recompress archived WAL: {e:#}")))
            .ok();
    // For monitoring: what the archive holds and what the server says of
    // its archiving. Neither is needed for the backup itself.
    let facts = base::PitrFacts {
        wal: base::wal_summary(&repo, info.system_identifier)
            .inspect_err(|e| out.warn(format!("{e:#}")))
            .ok(),
        archiver: base::archiver_stats(&server)
            .inspect_err(|e| out.warn(format!("cannot read pg_stat_archiver: {e:#}")))
            .ok(),
        wal_recompressed: recompressed.clone(),
    };
    if let Some(a) = &facts.archiver
        && a.failed_count > 0
    {
        out.warn(format!(
            "the server reports {} failed archive_command run(s), the last for {} ",
            a.failed_count,
            a.last_failed_wal.as_deref().unwrap_or("?")
        ));
    }
    if out.json {
        let mut report = BackupReport::default();
        report.snapshots.push(SavedSnapshot::new(
            &outcome,
            SourceDetails::PostgresBase {
                system_identifier: info.system_identifier.to_string(),
                timeline: info.timeline,
                start_lsn: info.start_lsn.to_string(),
                stop_lsn: info.stop_lsn.to_string(),
                start_wal: info.start_wal.clone(),
                stop_wal: info.stop_wal.clone(),
                stop_time: info.stop_time.clone(),
            },
        ));
        report.repository_warnings = crate::contract::warnings_json(&repo.warnings());
        report.requests = repo.request_stats();
        out.json_value(&BasebackupJson {
            report: &report,
            facts: &facts,
        })?;
    } else {
        out.line(format!(
            "base backup {}..{} (WAL {}..{}), {} read, added {} (stored {}), snapshot {} saved",
            info.start_lsn,
            info.stop_lsn,
            info.start_wal,
            info.stop_wal,
            output::bytes(s.bytes_read),
            output::bytes(s.bytes_added),
            output::bytes(s.bytes_added_packed),
            outcome.snapshot.id.short()
        ))?;
        if let Some(r) = recompressed.filter(|r| r.files > 0) {
            out.line(format!(
                "archived WAL compressed again: {} segment(s), {} → {}",
                r.files,
                output::bytes(r.bytes_before),
                output::bytes(r.bytes_after)
            ))?;
        }
    }
    Ok(Status::Ok)
}

/// The target the arguments name.
fn target_of(t: &PgTargetArgs) -> Result<Target> {
    Ok(if let Some(s) = &t.target_time {
        Target::Time(base::parse_time(s)?)
    } else if let Some(l) = &t.target_lsn {
        Target::Lsn(l.parse()?)
    } else if let Some(x) = &t.target_xid {
        if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
            bail!("--target-xid {x:?} is not a transaction id (digits)");
        }
        Target::Xid(x.clone())
    } else if let Some(n) = &t.target_name {
        Target::Name(n.clone())
    } else {
        Target::End
    })
}

/// Whether a base backup ends before the target (so recovery can reach
/// it); `None` when that cannot be known before replay (xid, name).
fn ends_before(info: &BaseInfo, target: &Target) -> Result<Option<bool>> {
    Ok(match target {
        Target::End | Target::Xid(_) | Target::Name(_) => None,
        Target::Time(t) => {
            let stop = output::parse_rfc3339(&info.stop_time)
                .with_context(|| format!("bad pg.stop_time {:?}", info.stop_time))?;
            Some(stop <= *t)
        }
        Target::Lsn(l) => Some(info.stop_lsn <= *l),
    })
}

/// Picks the base backup: `latest` is the newest one that ends before
/// the target; anything else must end before it. A target the backup
/// cannot reach is an error here, before anything is written.
fn pick_base(repo: &Repository, spec: &str, target: &Target) -> Result<(SnapshotEntry, BaseInfo)> {
    let filter = SnapshotFilter {
        tags: vec![base::TAG.into()],
        ..SnapshotFilter::default()
    };
    let describe = |t: &Target| match t {
        Target::Time(ns) => format!("target time {}", output::rfc3339(*ns)),
        Target::Lsn(l) => format!("target LSN {l}"),
        _ => "target".into(),
    };
    if spec == "latest" {
        let mut all: Vec<SnapshotEntry> = repo
            .snapshots()?
            .into_iter()
            .filter(|s| filter.matches(&s.snapshot))
            .collect();
        if all.is_empty() {
            bail!("no base backup (tag {}) in the repository", base::TAG);
        }
        all.sort_by_key(|s| s.snapshot.time_ns);
        let mut oldest_end = None;
        for s in all.iter().rev() {
            let info = BaseInfo::from_snapshot(s)?;
            match ends_before(&info, target)? {
                None | Some(true) => return Ok((s.clone(), info)),
                Some(false) => oldest_end = Some(info),
            }
        }
        let info = oldest_end.expect("at least one base backup");
        bail!(
            "the {} is before the end of every base backup: the oldest ends at {} (WAL position {}); \
             nothing was written",
            describe(target),
            info.stop_time,
            info.stop_lsn
        );
    }
    let snap = repo.find_snapshot(spec, &filter)?;
    let info = BaseInfo::from_snapshot(&snap)?;
    if ends_before(&info, target)? == Some(false) {
        bail!(
            "the {} is before the end of base backup {} ({}, WAL position {}): recovery cannot stop \
             there; use an older base backup; nothing was written",
            describe(target),
            snap.id.short(),
            info.stop_time,
            info.stop_lsn
        );
    }
    Ok((snap, info))
}

/// Segments the restore_command reads ahead unless told: 8 from S3, where
/// a segment's read costs more than its replay; none from a local
/// repository, where it costs less (a 16 MiB segment in 20-30 ms against
/// about 60 ms of replay) and the worker would only compete with the
/// server for CPU (measured on the PITR benchmark: no gain).
fn default_prefetch(g: &GlobalArgs) -> u32 {
    match super::repo_location(g) {
        Ok(repo_core::Location::S3(_)) => 8,
        _ => 0,
    }
}

/// Quotes one word for `sh` (PostgreSQL runs restore_command with it).
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `cairn -r REPO [--key-file F | --password-file F | --password-command C] pg restore-wal
/// [--prefetch N] %f %p` with this very executable and this command's repository options.
fn restore_command(g: &GlobalArgs, prefetch: u32) -> Result<String> {
    let exe = std::env::current_exe().context("cannot find the cairn executable")?;
    let repo = super::repo_path(g)?;
    let is_s3 = repo.to_string_lossy().starts_with("s3:");
    let repo = if repo.to_string_lossy().contains("://") || is_s3 {
        repo.to_path_buf()
    } else {
        std::path::absolute(repo)?
    };
    let mut words: Vec<String> = vec![
        exe.to_string_lossy().into_owned(),
        "-r".into(),
        repo.to_string_lossy().into_owned(),
    ];
    if let Some(f) = &g.key_file {
        words.push("--key-file".into());
        words.push(std::path::absolute(f)?.to_string_lossy().into_owned());
    } else if let Some(f) = &g.password_file {
        words.push("--password-file".into());
        words.push(std::path::absolute(f)?.to_string_lossy().into_owned());
    } else if let Some(c) = &g.password_command {
        words.push("--password-command".into());
        words.push(c.clone());
    } else {
        bail!(
            "the restore_command needs a credential the server can use: give --key-file or \
             --password-file \
             (a file the server's user can read) or --password-command, or write your own with \
             --restore-command"
        );
    }
    if let Some(k) = &g.key {
        words.push("--key".into());
        words.push(k.clone());
    }
    if let Some(e) = &g.s3_endpoint {
        words.push("--s3-endpoint".into());
        words.push(e.clone());
    }
    if g.s3_path_style {
        words.push("--s3-path-style".into());
    }
    // Only an S3 repository has a certificate to trust; one named by
    // AWS_CA_BUNDLE is named on the line, as the server's environment
    // lacks it (SPEC §11.1).
    let ca = g.s3_ca_cert.clone().or_else(|| {
        std::env::var_os("AWS_CA_BUNDLE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(c) = ca.as_ref().filter(|_| is_s3) {
        words.push("--s3-ca-cert".into());
        words.push(std::path::absolute(c)?.to_string_lossy().into_owned());
    }
    let mut cmd: Vec<String> = words.iter().map(|w| sh_quote(w)).collect();
    cmd.extend(["pg", "restore-wal"].map(String::from));
    if prefetch > 0 {
        cmd.push(format!("--prefetch {prefetch}"));
    }
    cmd.extend(["%f", "%p"].map(String::from));
    Ok(cmd.join(" "))
}

/// The recovery_end_command that goes with a prefetching restore_command:
/// stops its worker and removes its spool (SPEC §28.4.1).
fn clean_spool_command() -> Result<String> {
    let exe = std::env::current_exe().context("cannot find the cairn executable")?;
    Ok(format!(
        "{} pg restore-wal --clean-spool",
        sh_quote(&exe.to_string_lossy())
    ))
}

/// cairn's own restore_command (and recovery_end_command), or the user's.
fn recovery_commands(
    g: &GlobalArgs,
    own: Option<&String>,
    prefetch: u32,
) -> Result<(String, Option<String>)> {
    Ok(match own {
        Some(c) => (c.clone(), None),
        None => (
            restore_command(g, prefetch)?,
            (prefetch > 0).then(clean_spool_command).transpose()?,
        ),
    })
}

/// The user to run the server as (root only): `--owner`, else the data
/// directory's (or its parent's) owner unless that is root, else `postgres`.
fn owner_for(owner: Option<&str>, pgdata: &Path) -> Result<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return Ok((
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        ));
    }
    if owner.is_some() {
        return base::resolve_owner(owner, pgdata);
    }
    let (u, g) = base::resolve_owner(None, pgdata)?;
    if u != 0 {
        return Ok((u, g));
    }
    base::resolve_owner(Some("postgres"), pgdata)
        .context("PostgreSQL does not run as root: give --owner USER for the restored files")
}

/// The server programs for a base backup's major version: those of
/// `CAIRN_PG_BINDIR`, else `/usr/lib/postgresql/MAJOR/bin`, else the newest.
fn server_bindir(version_num: u32) -> Result<PathBuf> {
    if std::env::var_os("CAIRN_PG_BINDIR").is_some_and(|d| !d.is_empty()) {
        return Ok(Clients::newest()?.bindir);
    }
    let exact = PathBuf::from(format!("/usr/lib/postgresql/{}/bin", version_num / 10000));
    if exact.join("postgres").exists() {
        return Ok(exact);
    }
    Ok(Clients::newest()?.bindir)
}

#[derive(Serialize)]
struct RestoreClusterJson<'a> {
    snapshot_id: String,
    pgdata: String,
    start_lsn: String,
    stop_lsn: String,
    stop_time: &'a str,
    timeline: u32,
    verified: bool,
    restore_command: &'a str,
    recovery_target: Option<String>,
    recovery_target_action: &'static str,
}

fn action_name(a: PgTargetAction) -> &'static str {
    match a {
        PgTargetAction::Promote => "promote",
        PgTargetAction::Pause => "pause",
        PgTargetAction::Shutdown => "shutdown",
    }
}

fn target_setting(t: &Target) -> Option<String> {
    match t {
        Target::End => None,
        Target::Time(ns) => Some(format!("recovery_target_time = {}", base::pg_time(*ns))),
        Target::Lsn(l) => Some(format!("recovery_target_lsn = {l}")),
        Target::Xid(x) => Some(format!("recovery_target_xid = {x}")),
        Target::Name(n) => Some(format!("recovery_target_name = {n}")),
    }
}

/// Everything restore-cluster and pitr-verify share: checks, extraction,
/// pg_verifybackup, recovery settings.
struct Restored {
    snap: SnapshotEntry,
    info: BaseInfo,
    verified: bool,
}

#[allow(clippy::too_many_arguments)]
fn restore_into(
    out: Output,
    repo: &Repository,
    spec: &str,
    target: &Target,
    pgdata: &Path,
    owner: (u32, u32),
    (restore_command, end_command): (&str, Option<&str>),
    action: PgTargetAction,
    no_archive: bool,
    verify: bool,
) -> Result<Restored> {
    base::check_empty(pgdata)?;
    let (snap, info) = pick_base(repo, spec, target)?;
    base::check_archive_reaches(repo, &info, target)?;
    let node = find_node(repo, &snap, OsStr::new(base::PATH))?;
    base::extract(repo, &node, pgdata, owner)?;
    let bindir = server_bindir(info.server_version_num)?;
    let verified = if verify && !bindir.join("pg_verifybackup").exists() {
        out.warn(format!(
            "{} is missing: the extracted base backup was not checked",
            bindir.join("pg_verifybackup").display()
        ));
        false
    } else if verify {
        base::verify_backup(&bindir, pgdata, owner).with_context(|| {
            format!(
                "the base backup extracted into {} does not verify",
                pgdata.display()
            )
        })?;
        true
    } else {
        false
    };
    Recovery {
        restore_command: restore_command.to_string(),
        end_command: end_command.map(String::from),
        target: target.clone(),
        action: action_name(action).into(),
        exclusive: false,
        no_archive,
        origin: format!("snapshot {}", snap.id.to_hex()),
    }
    .write(pgdata, owner)?;
    Ok(Restored {
        snap,
        info,
        verified,
    })
}

/// `cairn pg restore-cluster`.
pub fn restore_cluster(g: &GlobalArgs, out: Output, a: &PgRestoreClusterArgs) -> Result<Status> {
    let target = target_of(&a.target)?;
    base::check_empty(&a.pgdata)?;
    let (restore_command, end_command) = recovery_commands(
        g,
        a.restore_command.as_ref(),
        a.prefetch.unwrap_or_else(|| default_prefetch(g)),
    )?;
    let owner = owner_for(a.owner.as_deref(), &a.pgdata)?;
    let repo = open(g, out)?;
    let r = restore_into(
        out,
        &repo,
        &a.snapshot,
        &target,
        &a.pgdata,
        owner,
        (&restore_command, end_command.as_deref()),
        a.target_action,
        a.no_archive,
        !a.no_verify,
    )?;
    if !a.pgdata.join("postgresql.conf").exists() {
        out.warn(format!(
            "the base backup holds no postgresql.conf (kept outside the data directory, as on \
             Debian): give the server one before starting it on {}",
            a.pgdata.display()
        ));
    }
    let setting = target_setting(&target);
    if out.json {
        out.json_value(&RestoreClusterJson {
            snapshot_id: r.snap.id.to_hex(),
            pgdata: a.pgdata.display().to_string(),
            start_lsn: r.info.start_lsn.to_string(),
            stop_lsn: r.info.stop_lsn.to_string(),
            stop_time: &r.info.stop_time,
            timeline: r.info.timeline,
            verified: r.verified,
            restore_command: &restore_command,
            recovery_target: setting,
            recovery_target_action: action_name(a.target_action),
        })?;
    } else {
        out.line(format!(
            "restored base backup {} (ends at {}, {}) into {}{}; recovery: {}; start the server to replay WAL",
            r.snap.id.short(),
            r.info.stop_lsn,
            r.info.stop_time,
            a.pgdata.display(),
            if r.verified { ", pg_verifybackup ok" } else { "" },
            setting.unwrap_or_else(|| "to the end of the archived WAL".into()),
        ))?;
    }
    Ok(Status::Ok)
}

/// A scratch server: its directory (removed on drop) and its postmaster
/// (stopped on drop).
struct Scratch {
    dir: Option<tempfile::TempDir>,
    child: Option<Child>,
}

impl Scratch {
    /// Stops the postmaster: a fast shutdown, then SIGKILL after a minute.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.stop();
        if let Some(d) = self.dir.take() {
            let path = d.path().display().to_string();
            if let Err(e) = d.close() {
                eprintln!("cairn: warning: cannot remove scratch directory {path}: {e}");
            }
        }
    }
}

/// The last lines of the scratch server's log, for errors.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    // Our own connection attempts while it starts say nothing.
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            !l.contains("the database system is starting up")
                && !l.contains("the database system is not yet accepting connections")
                && !l.contains("the database system is in recovery mode")
        })
        .collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[derive(Serialize)]
struct PitrVerifyJson {
    snapshot_id: String,
    base_stop_lsn: String,
    base_stop_time: String,
    recovery_target: Option<String>,
    ok: bool,
    /// Extraction and pg_verifybackup.
    restore_duration_s: f64,
    /// Server start to the end of recovery.
    replay_duration_s: f64,
    /// Both: the measured recovery time.
    rto_s: f64,
    /// The last replayed transaction's commit time (null: none replayed).
    newest_recoverable_time: Option<String>,
    /// Where replay ended.
    newest_recoverable_lsn: String,
    /// Now minus `newest_recoverable_time`: what losing the server now would cost at most.
    rpo_s: Option<f64>,
    databases: BTreeMap<String, BTreeMap<String, u64>>,
    tables_checked: usize,
    scratch_dir: String,
}

/// `cairn pg pitr-verify`.
pub fn pitr_verify(g: &GlobalArgs, out: Output, a: &PgPitrVerifyArgs) -> Result<Status> {
    let target = target_of(&a.target)?;
    let timeout = repo_core::parse_run_time(&a.timeout)
        .with_context(|| format!("bad --timeout {:?}", a.timeout))?;
    let (restore_command, end_command) =
        recovery_commands(g, a.restore_command.as_ref(), default_prefetch(g))?;
    let started = super::verify_record::Started::now();
    let repo = open(g, out)?;
    let t0 = Instant::now();
    let parent = a.scratch.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("cairn-pitr-verify-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a scratch directory in {}", parent.display()))?;
    let scratch_dir = dir.path().to_path_buf();
    let pgdata = scratch_dir.join("data");
    let owner = if nix::unistd::geteuid().is_root() {
        let o = base::resolve_owner(Some(a.owner.as_deref().unwrap_or("postgres")), &pgdata)?;
        std::os::unix::fs::chown(&scratch_dir, Some(o.0), Some(o.1))
            .with_context(|| format!("cannot chown {}", scratch_dir.display()))?;
        o
    } else {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    };
    let mut scratch = Scratch {
        dir: Some(dir),
        child: None,
    };
    let r = restore_into(
        out,
        &repo,
        &a.snapshot,
        &target,
        &pgdata,
        owner,
        (&restore_command, end_command.as_deref()),
        PgTargetAction::Promote,
        true,
        true,
    )?;
    let restore_duration = t0.elapsed();
    // Configuration the server reads from the data directory, replaced
    // where it would reach outside the scratch directory.
    let hba = scratch_dir.join("pg_hba.conf");
    std::fs::write(&hba, "local all all trust\n")?;
    let conf = pgdata.join("postgresql.conf");
    if !conf.exists() {
        std::fs::write(&conf, "")?;
    }
    let ident = scratch_dir.join("pg_ident.conf");
    std::fs::write(&ident, "")?;
    for p in [&hba, &conf, &ident] {
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(p, Some(owner.0), Some(owner.1))?;
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("no free loopback port")?
        .port();
    let bindir = server_bindir(r.info.server_version_num)?;
    let log = scratch_dir.join("log");
    let logf = std::fs::File::create(&log)?;
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&log, Some(owner.0), Some(owner.1))?;
    }
    let settings = [
        format!("data_directory={}", pgdata.display()),
        format!("hba_file={}", hba.display()),
        format!("ident_file={}", ident.display()),
        format!("port={port}"),
        "listen_addresses=127.0.0.1".into(),
        format!("unix_socket_directories={}", scratch_dir.display()),
        "archive_mode=off".into(),
        "logging_collector=off".into(),
        "external_pid_file=".into(),
        "hot_standby=on".into(),
    ];
    let mut cmd = Command::new(bindir.join("postgres"));
    cmd.arg("-D").arg(&pgdata);
    for s in &settings {
        cmd.arg("-c").arg(s);
    }
    cmd.stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf);
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::process::CommandExt;
        cmd.uid(owner.0).gid(owner.1);
    }
    let t1 = Instant::now();
    scratch.child = Some(
        cmd.spawn()
            .with_context(|| format!("cannot run {}", bindir.join("postgres").display()))?,
    );
    let user = match &a.user {
        Some(u) => u.clone(),
        None => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(owner.0))
            .ok()
            .flatten()
            .map_or_else(|| "postgres".into(), |u| u.name),
    };
    let dsn = format!(
        "host='{}' port={port} user='{}' dbname=postgres",
        scratch_dir.display(),
        user.replace('\'', "\\'")
    );
    let clients = Clients::newest()?;
    // Wait for the end of recovery (the promotion), or the server's exit.
    loop {
        if let Some(st) = scratch
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            scratch.child = None;
            bail!(
                "the scratch server {} during recovery:\n{}",
                super::describe_status(st),
                log_tail(&log)
            );
        }
        if let Ok(v) = clients.query(&dsn, "SELECT pg_is_in_recovery()")
            && v.trim() == "f"
        {
            break;
        }
        if t1.elapsed() > timeout {
            bail!(
                "recovery did not finish within {}:\n{}",
                a.timeout,
                log_tail(&log)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let replay_duration = t1.elapsed();
    let rto = t0.elapsed();
    let rpo_line = clients.query(
        &dsn,
        "SELECT coalesce(extract(epoch FROM pg_last_xact_replay_timestamp())::text, ''), pg_last_wal_replay_lsn()",
    )?;
    let (ts, lsn) = rpo_line.split_once('|').unwrap_or((&rpo_line, ""));
    let newest_ns = ts.trim().parse::<f64>().ok().map(|s| (s * 1e9) as i64);
    let server = Server::connect(&dsn)?;
    let mut databases = BTreeMap::new();
    let mut tables = 0;
    for db in server.databases()? {
        let counts = server.rowcounts(&db)?;
        tables += counts.len();
        databases.insert(db, counts);
    }
    scratch.stop();
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let report = PitrVerifyJson {
        snapshot_id: r.snap.id.to_hex(),
        base_stop_lsn: r.info.stop_lsn.to_string(),
        base_stop_time: r.info.stop_time.clone(),
        recovery_target: target_setting(&target),
        ok: true,
        restore_duration_s: restore_duration.as_secs_f64(),
        replay_duration_s: replay_duration.as_secs_f64(),
        rto_s: rto.as_secs_f64(),
        newest_recoverable_time: newest_ns.map(output::rfc3339),
        newest_recoverable_lsn: lsn.trim().to_string(),
        rpo_s: newest_ns.map(|n| (now_ns - n) as f64 / 1e9),
        databases,
        tables_checked: tables,
        scratch_dir: scratch_dir.display().to_string(),
    };
    drop(scratch);
    started.record(
        &repo,
        out,
        "pg pitr-verify",
        r.snap.id,
        true,
        format!(
            "recovered to {} (WAL {}) in {:.1}s, {} tables counted",
            report
                .newest_recoverable_time
                .as_deref()
                .unwrap_or("no transaction"),
            report.newest_recoverable_lsn,
            report.rto_s,
            report.tables_checked
        ),
    );
    if out.json {
        out.json_value(&report)?;
    } else {
        out.line(format!(
            "base backup {} restored in {:.1}s, replayed in {:.1}s: recovery time {:.1}s; \
             recovered up to {} (WAL {}); {} tables in {} databases counted",
            r.snap.id.short(),
            report.restore_duration_s,
            report.replay_duration_s,
            report.rto_s,
            report
                .newest_recoverable_time
                .as_deref()
                .unwrap_or("no transaction"),
            report.newest_recoverable_lsn,
            report.tables_checked,
            report.databases.len(),
        ))?;
    }
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    /// A restore opened with an unattended key writes a restore_command
    /// that uses it (absolute, so the server finds it from its directory).
    #[test]
    fn restore_command_carries_the_key_file() {
        let cli = crate::cli::Cli::try_parse_from([
            "cairn",
            "-r",
            "/backup/repo",
            "--key-file",
            "/etc/cairn/pg.key",
            "--password-file",
            "/etc/cairn/pw",
            "snapshots",
        ])
        .unwrap();
        let cmd = super::restore_command(&cli.global, 0).unwrap();
        assert!(
            cmd.contains(" -r /backup/repo --key-file /etc/cairn/pg.key pg restore-wal %f %p"),
            "{cmd}"
        );
        assert!(!cmd.contains("--password-file"), "{cmd}");
    }

    /// `cairn -r REPO --key-file /etc/cairn/pg.key EXTRA… snapshots`.
    fn with_key_file(repo: &str, extra: &[&str]) -> crate::cli::Cli {
        let mut args = vec!["cairn", "-r", repo, "--key-file", "/etc/cairn/pg.key"];
        args.extend_from_slice(extra);
        args.push("snapshots");
        crate::cli::Cli::try_parse_from(args).unwrap()
    }

    /// The certificate authority goes to the server's restore-wal for an
    /// S3 repository only (it may come from AWS_CA_BUNDLE, SPEC §11.1).
    #[test]
    fn restore_command_carries_the_ca_for_s3_only() {
        for (repo, carried) in [("s3://bucket/pg", true), ("/backup/repo", false)] {
            let cli = with_key_file(repo, &["--s3-ca-cert", "/etc/cairn/ca.pem"]);
            let cmd = super::restore_command(&cli.global, 0).unwrap();
            assert_eq!(
                cmd.contains(" --s3-ca-cert /etc/cairn/ca.pem pg restore-wal"),
                carried,
                "{cmd}"
            );
        }
    }

    /// Read-ahead by default from S3 only, with the recovery_end_command
    /// that removes its spool; none from a local repository.
    #[test]
    fn default_read_ahead_is_for_s3_repositories() {
        for (repo, ahead) in [("s3://bucket/pg", true), ("/backup/repo", false)] {
            let cli = with_key_file(repo, &[]);
            let g = &cli.global;
            let (rc, end) = super::recovery_commands(g, None, super::default_prefetch(g)).unwrap();
            assert_eq!(
                rc.contains(" pg restore-wal --prefetch 8 %f %p"),
                ahead,
                "{rc}"
            );
            assert_eq!(
                end.is_some_and(|e| e.ends_with(" pg restore-wal --clean-spool")),
                ahead
            );
        }
    }
}
