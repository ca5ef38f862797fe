//! The globals (roles, tablespaces) of a PostgreSQL backup, and what to do
//! when the role cannot read them all: managed services (RDS, Neon, Cloud
//! SQL) give no superuser, and `pg_dumpall --globals-only` then fails on
//! `pg_authid` (the password hashes). `--no-role-passwords` reads
//! `pg_roles` instead, which every role may read.

use std::io::Cursor;

use anyhow::{Context, Result, bail};
use repo_core::{BackupOutcome, Repository};

use super::postgres::{GLOBALS_TAG, Server};
use crate::commands::describe_status;

/// Which globals `pg backup` saves (`--globals`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GlobalsMode {
    /// `full`, falling back to `no-passwords` with a warning when the role
    /// cannot read the password hashes (not a superuser).
    Auto,
    /// `pg_dumpall --globals-only`: roles with their password hashes.
    Full,
    /// `pg_dumpall --globals-only --no-role-passwords`: roles without
    /// passwords (set them again after a restore).
    NoPasswords,
    /// No globals snapshot.
    Skip,
}

/// What [`backup`] saved.
pub struct SavedGlobals {
    /// The snapshot.
    pub outcome: BackupOutcome,
    /// True when the roles were saved without their passwords.
    pub without_passwords: bool,
}

/// Saves the globals as `mode` asks, as one snapshot tagged
/// [`GLOBALS_TAG`] (metadata `pg.globals`: `full` or `no-passwords`).
/// `warn` receives the reason of a fallback. `Ok(None)` for
/// [`GlobalsMode::Skip`]. The dump is read whole before anything is
/// written (globals are small), so a failed attempt leaves nothing behind.
pub fn backup(
    repo: &Repository,
    server: &Server,
    mode: GlobalsMode,
    tags: &[String],
    host: Option<&str>,
    warn: &mut dyn FnMut(String),
) -> Result<Option<SavedGlobals>> {
    let (sql, without_passwords) = match mode {
        GlobalsMode::Skip => return Ok(None),
        GlobalsMode::Full => (dumpall(server, false)?, false),
        GlobalsMode::NoPasswords => (dumpall(server, true)?, true),
        GlobalsMode::Auto => match dumpall(server, false) {
            Ok(sql) => (sql, false),
            Err(e) => {
                let sql = dumpall(server, true)
                    .with_context(|| format!("{e:#}; and without role passwords it failed too"))?;
                warn(format!(
                    "{e:#}; saved the roles without their passwords instead \
                     (--globals no-passwords; the role is not a superuser)"
                ));
                (sql, true)
            }
        },
    };
    let mut b = repo
        .backup()
        .stream("postgres/globals.sql", Cursor::new(sql))
        .tag(GLOBALS_TAG)
        .metadata("pg.server_version_num", server.version_num.to_string())
        .metadata("pg.pg_dump_version", server.clients.pg_dump_version()?)
        .metadata(
            "pg.globals",
            if without_passwords {
                "no-passwords"
            } else {
                "full"
            },
        );
    for t in tags {
        b = b.tag(t);
    }
    if let Some(h) = host {
        b = b.host(h);
    }
    let outcome = b
        .run()
        .context("cannot save the globals; no snapshot was written")?;
    Ok(Some(SavedGlobals {
        outcome,
        without_passwords,
    }))
}

/// `pg_dumpall --globals-only [--no-role-passwords]`, its output in
/// memory, its error message captured for ours.
fn dumpall(server: &Server, no_passwords: bool) -> Result<Vec<u8>> {
    let mut cmd = server.clients.cmd("pg_dumpall");
    cmd.arg("--globals-only");
    if no_passwords {
        cmd.arg("--no-role-passwords");
    }
    cmd.arg("-d").arg(&server.dsn);
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot run pg_dumpall")?;
    if !out.status.success() {
        // The first line says why; the next ones repeat the query.
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.lines().next().unwrap_or("").trim();
        bail!(
            "pg_dumpall --globals-only{} {}{}{err}",
            if no_passwords {
                " --no-role-passwords"
            } else {
                ""
            },
            describe_status(out.status),
            if err.is_empty() { "" } else { ": " }
        );
    }
    Ok(out.stdout)
}
