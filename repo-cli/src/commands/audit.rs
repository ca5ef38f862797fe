//! The audit trail from the command line (SPEC §31): the hook that writes
//! one record per audited command, `cairn audit` (list, `verify`,
//! `export-key`), and the redaction of secrets from recorded arguments.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use repo_core::{
    AuditLog, AuditRecord, Backend, ObjectTally, ObservedBackend, Repository, VerifyingKey,
};
use serde::Serialize;

use super::{Status, backend_for, cache_dir, open, repo_location};
use crate::cli::{
    AuditArgs, AuditCommand, Cli, Command, GlobalArgs, KeyCommand, PgCommand, QdrantCommand,
    RedisCommand,
};
use crate::output::{self, Output};

/// The command's name in its record, when it is one the trail records:
/// those that change the repository or read data out of it. The WAL
/// commands PostgreSQL calls once per segment are left out (SPEC §31.1).
pub fn audited(cli: &Cli) -> Option<&'static str> {
    Some(match &cli.command {
        Command::Init(_) => "init",
        Command::Backup(_) => "backup",
        Command::Copy(_) => "copy",
        Command::Forget(_) => "forget",
        Command::Prune(_) => "prune",
        Command::Repair(_) => "repair",
        Command::Restore(_) => "restore",
        Command::Dump(_) => "dump",
        Command::Drill(_) => "drill",
        Command::Check(_) => "check",
        Command::Rekey(_) => "rekey",
        // `run`'s steps are `cairn` child processes, each with its own record.
        Command::Key(k) => match &k.command {
            KeyCommand::Add(_) => "key add",
            KeyCommand::Remove(_) => "key remove",
            KeyCommand::Passwd(_) => "key passwd",
            KeyCommand::Rotate(_) => "key rotate",
            KeyCommand::Retire(_) => "key retire",
            _ => return None,
        },
        Command::Pg(p) => match &p.command {
            PgCommand::Backup(_) => "pg backup",
            PgCommand::Restore(_) => "pg restore",
            PgCommand::Verify(_) => "pg verify",
            PgCommand::Basebackup(_) => "pg basebackup",
            PgCommand::RestoreCluster(_) => "pg restore-cluster",
            PgCommand::PitrVerify(_) => "pg pitr-verify",
            _ => return None,
        },
        Command::Redis(r) => match &r.command {
            RedisCommand::Backup(_) => "redis backup",
            RedisCommand::Restore(_) => "redis restore",
            RedisCommand::Verify(_) => "redis verify",
        },
        Command::Qdrant(q) => match &q.command {
            QdrantCommand::Backup(_) => "qdrant backup",
            QdrantCommand::Restore(_) => "qdrant restore",
            QdrantCommand::Verify(_) => "qdrant verify",
        },
        _ => return None,
    })
}

/// Whether an audited command writes to the repository. Those that only
/// read data out of it still try to leave a record, but only warn when
/// the storage refuses it.
fn changes_repository(command: &str) -> bool {
    !matches!(
        command,
        "restore"
            | "dump"
            | "drill"
            | "check"
            | "pg restore"
            | "pg verify"
            | "pg restore-cluster"
            | "pg pitr-verify"
            | "redis restore"
            | "redis verify"
            | "qdrant restore"
            | "qdrant verify"
    )
}

/// The audited command in progress: what its repository's storage saw,
/// and where its record goes.
struct Session {
    command: &'static str,
    tally: Option<Arc<Mutex<ObjectTally>>>,
    log: Option<AuditLog>,
}

static SESSION: Mutex<Option<Session>> = Mutex::new(None);

fn session() -> std::sync::MutexGuard<'static, Option<Session>> {
    SESSION.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the record of an audited command; others record nothing.
pub fn begin(cli: &Cli) {
    if let Some(command) = audited(cli) {
        *session() = Some(Session {
            command,
            tally: None,
            log: None,
        });
    }
}

/// Wraps the storage of the repository the command works on, so its
/// record can count what it created and deleted. Only the first one is
/// watched: a second repository (`copy --from-repo`) is only read.
pub fn observe(backend: Box<dyn Backend>) -> Box<dyn Backend> {
    let mut s = session();
    match s.as_mut() {
        Some(s) if s.tally.is_none() => {
            let (b, tally) = ObservedBackend::new(backend);
            s.tally = Some(tally);
            Box::new(b)
        }
        _ => backend,
    }
}

/// Called once the repository is open: the trail's heads, found once
/// (one listing) when a snapshot or the record first needs them, are the
/// anchor of every snapshot this command writes and the record's parents.
/// A backup finds them in its walk of the storage (SPEC §15, §31.4).
pub fn opened(g: &GlobalArgs, repo: &Repository) -> Result<()> {
    let mut s = session();
    let Some(s) = s.as_mut().filter(|s| s.log.is_none()) else {
        return Ok(());
    };
    let log = repo.audit_log(dag_cache(g, repo));
    repo.anchor_to(&log);
    s.log = Some(log);
    Ok(())
}

fn dag_cache(g: &GlobalArgs, repo: &Repository) -> Option<PathBuf> {
    cache_dir(g).map(|d| d.join(repo.id().to_hex()).join("audit-dag.json"))
}

/// Writes the command's record, whatever its outcome. A command whose
/// repository never opened (wrong password, no repository) has no key to
/// seal a record with and leaves none. A record that cannot be written
/// fails the command.
pub fn finish(result: Result<Status>) -> Result<Status> {
    let Some(s) = session().take() else {
        return result;
    };
    let Some(log) = s.log else {
        return result;
    };
    let (outcome, exit_code, error) = match &result {
        Ok(Status::Ok) => ("ok", 0, None),
        Ok(Status::Incomplete) => ("incomplete", 3, None),
        Ok(Status::Missing) => ("missing", 1, None),
        Err(e) => (
            "error",
            crate::exit_code(e),
            Some(redact(&crate::message(e))),
        ),
    };
    let tally = s
        .tally
        .map(|t| t.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_default();
    let record = AuditRecord {
        args: redact_args(
            std::env::args_os()
                .skip(1)
                .map(|a| a.to_string_lossy().into_owned()),
        ),
        outcome: outcome.into(),
        error,
        exit_code,
        program_version: concat!("cairn ", env!("CARGO_PKG_VERSION")).into(),
        ..AuditRecord::new(s.command)
    }
    .with_tally(&tally);
    let written = log
        .heads_once()
        .and_then(|heads| log.append(&heads, &record));
    match (result, written) {
        (Ok(status), Ok(_)) => Ok(status),
        // A restore from read-only storage (credentials that may only read,
        // a locked bucket) got the data back: say so, but do not turn it
        // into a failure a script would act on.
        (Ok(status), Err(e)) if !changes_repository(s.command) => {
            eprintln!("warning: the command ran, but its audit record could not be written: {e}");
            Ok(status)
        }
        (Ok(_), Err(e)) => {
            Err(anyhow!(e).context("the command ran, but its audit record could not be written"))
        }
        (Err(e), Ok(_)) => Err(e),
        (Err(e), Err(w)) => {
            Err(e.context(format!("and its audit record could not be written: {w}")))
        }
    }
}

/// Flags whose value is a secret: anything naming a password (but not a
/// password *file*, which is a path), an API key, a token or a secret.
fn secret_flag(flag: &str) -> bool {
    let f = flag.trim_start_matches('-').to_ascii_lowercase();
    let named = [
        "password", "passwd", "api-key", "apikey", "api_key", "token", "secret",
    ]
    .iter()
    .any(|s| f.contains(s));
    named && !f.ends_with("-file") && f != "key-file"
}

/// The arguments as recorded: values of secret flags become `***`, and so
/// do passwords inside URLs (`postgresql://u:SECRET@h`) and `key=value`
/// strings (`password=SECRET`) anywhere, including after `--`.
pub fn redact_args(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut hide_next = false;
    for a in args {
        if hide_next {
            out.push("***".into());
            hide_next = false;
            continue;
        }
        if a.starts_with("--") || (a.starts_with('-') && a.len() > 1) {
            if let Some((flag, _)) = a.split_once('=') {
                if secret_flag(flag) {
                    out.push(format!("{flag}=***"));
                    continue;
                }
            } else if secret_flag(&a) {
                out.push(a);
                hide_next = true;
                continue;
            }
        }
        out.push(redact(&a));
    }
    out
}

/// Hides the password of every `scheme://user:password@host` and the value
/// of every `password=…` (and the other secret words) in `s`.
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    // URLs: the user info between `://` and the first `@` before any `/`.
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail.find(['/', ' ', '?', '#']).unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(amp) => {
                let userinfo = &tail[..amp];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                rest = &tail[amp..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    redact_pairs(&out)
}

/// `password=SECRET` → `password=***`, for libpq connection strings and
/// URL query parameters.
fn redact_pairs(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let hit = [
            "password=",
            "passwd=",
            "api-key=",
            "apikey=",
            "api_key=",
            "token=",
            "secret=",
        ]
        .iter()
        .filter_map(|w| lower[i..].find(w).map(|p| (i + p, w.len())))
        .min();
        let Some((p, len)) = hit else { break };
        out.push_str(&s[i..p + len]);
        out.push_str("***");
        let v = &s[p + len..];
        let end = if let Some(quoted) = v.strip_prefix('\'') {
            quoted.find('\'').map_or(v.len(), |e| e + 2)
        } else {
            v.find([' ', '&', ';', '\'', '"']).unwrap_or(v.len())
        };
        i = p + len + end;
    }
    out.push_str(&s[i.min(s.len())..]);
    out
}

/// `cairn audit`, `audit verify`, `audit export-key`.
pub fn run(g: &GlobalArgs, out: Output, a: &AuditArgs) -> Result<Status> {
    match &a.command {
        None => list(g, out, a.since.as_deref()),
        Some(AuditCommand::Verify { public_key }) => verify(g, out, public_key.as_deref()),
        Some(AuditCommand::ExportKey { output }) => export_key(g, out, output.as_ref()),
    }
}

#[derive(Serialize)]
struct RecordJson<'a> {
    id: &'a str,
    parents: &'a [String],
    time: String,
    host: &'a str,
    user: &'a str,
    command: &'a str,
    args: &'a [String],
    created: &'a std::collections::BTreeMap<String, u64>,
    deleted: &'a std::collections::BTreeMap<String, u64>,
    snapshots_created: &'a [String],
    snapshots_deleted: &'a [String],
    outcome: &'a str,
    exit_code: u8,
    error: Option<&'a str>,
    program_version: &'a str,
}

fn list(g: &GlobalArgs, out: Output, since: Option<&str>) -> Result<Status> {
    let since_ns = since.map(parse_since).transpose()?;
    let repo = open(g, out)?;
    let (entries, bad) = repo.audit_log(dag_cache(g, &repo)).entries()?;
    for b in &bad {
        out.warn(format!(
            "audit record {b} cannot be read (run `cairn audit verify`)"
        ));
    }
    let shown: Vec<_> = entries
        .iter()
        .filter(|e| since_ns.is_none_or(|s| e.record.time_ns >= s))
        .collect();
    if out.json {
        let v: Vec<RecordJson> = shown
            .iter()
            .map(|e| {
                let r = &e.record;
                RecordJson {
                    id: &e.name,
                    parents: &e.parents,
                    time: output::rfc3339(r.time_ns),
                    host: &r.host,
                    user: &r.user,
                    command: &r.command,
                    args: &r.args,
                    created: &r.created,
                    deleted: &r.deleted,
                    snapshots_created: &r.snapshots_created,
                    snapshots_deleted: &r.snapshots_deleted,
                    outcome: &r.outcome,
                    exit_code: r.exit_code,
                    error: r.error.as_deref(),
                    program_version: &r.program_version,
                }
            })
            .collect();
        out.json_value(&v)?;
        return Ok(Status::Ok);
    }
    let counts = |m: &std::collections::BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for e in shown {
        let r = &e.record;
        let mut line = format!(
            "{} {} {}@{} {} [{}]",
            &e.name[..8],
            output::local_time(r.time_ns),
            r.user,
            r.host,
            r.command,
            r.outcome
        );
        if !r.created.is_empty() {
            line.push_str(&format!(" created: {}", counts(&r.created)));
        }
        if !r.deleted.is_empty() {
            line.push_str(&format!(" deleted: {}", counts(&r.deleted)));
        }
        if let Some(err) = &r.error {
            line.push_str(&format!(" error: {err}"));
        }
        out.line(line)?;
        out.verbose(1, format!("    args: {}", r.args.join(" ")));
    }
    Ok(Status::Ok)
}

/// `--since`: an RFC 3339 time, or a duration back from now (`7d`).
fn parse_since(s: &str) -> Result<i64> {
    if let Some(ns) = output::parse_rfc3339(s) {
        return Ok(ns);
    }
    let d = repo_core::parse_duration(s)
        .with_context(|| format!("--since {s:?} is neither an RFC 3339 time nor a duration"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    Ok(now - d.as_nanos() as i64)
}

/// A public key given as its text, or as a file holding it.
pub fn public_key_arg(k: &str) -> Result<VerifyingKey> {
    let text = match std::fs::read_to_string(k) {
        Ok(t) => t,
        Err(_) => k.to_string(),
    };
    Ok(repo_core::parse_public(&text)?)
}

fn verify(g: &GlobalArgs, out: Output, public_key: Option<&str>) -> Result<Status> {
    let v = match public_key {
        Some(k) => {
            let key = public_key_arg(k)?;
            let backend = backend_for(g, &repo_location(g)?)?;
            repo_core::verify_audit_trail(&*backend, &key)?
        }
        None => open(g, out)?.audit_verify()?,
    };
    if out.json {
        out.json_value(&v)?;
    } else {
        for p in &v.problems {
            out.line(p.to_string())?;
        }
        out.line(format!(
            "{} records, {} head(s), {} snapshot anchors checked, bodies {}: {}",
            v.records,
            v.heads.len(),
            v.anchors,
            if v.bodies_checked {
                "checked"
            } else {
                "not opened (public key only)"
            },
            if v.problems.is_empty() {
                "no problems".to_string()
            } else {
                format!("{} problems", v.problems.len())
            }
        ))?;
    }
    if !v.problems.is_empty() {
        bail!("the audit trail has {} problem(s)", v.problems.len());
    }
    Ok(Status::Ok)
}

fn export_key(g: &GlobalArgs, out: Output, output: Option<&PathBuf>) -> Result<Status> {
    let repo = open(g, out)?;
    let key = repo.audit_log(None).public_key()?;
    let text = repo_core::public_text(&key);
    match output {
        Some(f) => {
            std::fs::write(f, format!("{text}\n"))
                .with_context(|| format!("cannot write {}", f.display()))?;
            out.verbose(1, format!("wrote the audit public key to {}", f.display()));
        }
        None if out.json => {
            out.json_value(&serde_json::json!({ "public_key": text }))?;
        }
        None => out.line(&text)?,
    }
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        redact_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            args(&[
                "pg",
                "backup",
                "--dsn",
                "postgresql://bob:hunter2@db:5432/app"
            ]),
            ["pg", "backup", "--dsn", "postgresql://bob:***@db:5432/app"]
        );
        assert_eq!(
            args(&["qdrant", "backup", "--api-key", "k3y", "--api-key=k3y"]),
            ["qdrant", "backup", "--api-key", "***", "--api-key=***"]
        );
        assert_eq!(
            args(&["--password-file", "/p", "--password-command", "echo pw"]),
            ["--password-file", "/p", "--password-command", "***"]
        );
        assert_eq!(
            redact("host=db password=s3cret user=x"),
            "host=db password=*** user=x"
        );
        assert_eq!(
            redact("redis://:pw@h:6379 and https://h/x?token=abc&y=1"),
            "redis://:***@h:6379 and https://h/x?token=***&y=1"
        );
        assert_eq!(redact("s3:https://host/bucket"), "s3:https://host/bucket");
        assert_eq!(redact("user@host:/path"), "user@host:/path");
    }
}
