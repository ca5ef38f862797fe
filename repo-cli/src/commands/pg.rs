//! `cairn pg`: PostgreSQL backup, restore and verification (the exporter
//! itself is in `crate::exporters::postgres`).

use std::ffi::OsStr;

use anyhow::{Context, Result, bail};
use repo_core::SnapshotFilter;
use serde::Serialize;

use super::pg_select::{self, DatabaseArg};
use super::{Status, find_node, open};
use crate::cli::{GlobalArgs, PgArgs, PgBackupArgs, PgCommand, PgRestoreArgs, PgVerifyArgs};
use crate::contract::{BackupReport, FailedSource, SavedSnapshot, SourceDetails};
use crate::exporters::pg_globals::{self, GlobalsMode};
use crate::exporters::postgres::{self as pg, RestoreOptions, Server};
use crate::output::{self, Output};

/// Runs a `cairn pg` subcommand.
pub fn run(g: &GlobalArgs, out: Output, a: &PgArgs) -> Result<Status> {
    match &a.command {
        PgCommand::Backup(a) => backup(g, out, a),
        PgCommand::Restore(a) => restore(g, out, a),
        PgCommand::Verify(a) => verify(g, out, a),
        PgCommand::Basebackup(a) => super::pitr::basebackup(g, out, a),
        PgCommand::RestoreCluster(a) => super::pitr::restore_cluster(g, out, a),
        PgCommand::PitrVerify(a) => super::pitr::pitr_verify(g, out, a),
        PgCommand::ArchiveWal(a) => super::wal::archive(g, out, a),
        PgCommand::RestoreWal(a) => super::wal::restore(g, out, a),
        PgCommand::WalVerify => super::wal::verify(g, out),
    }
}

/// Connects to the server of `--dsn` / `CAIRN_PG_DSN` / `--dsn-file`.
pub(super) fn connect(dsn: Option<&str>, file: Option<&std::path::Path>) -> Result<Server> {
    let dsn =
        crate::credentials::connection_string(dsn, file, "--dsn", Some("CAIRN_PG_DSN"), |d| {
            pg::split_password(d).1.is_some()
        })?;
    Server::connect(&dsn)
}

fn backup(g: &GlobalArgs, out: Output, a: &PgBackupArgs) -> Result<Status> {
    let server = connect(a.dsn.as_deref(), a.dsn_file.as_deref())?;
    let existing = server.databases()?;
    let databases = if a.all {
        // Databases the role may not even connect to are not its to back
        // up (a managed service's own); named ones are tried and fail.
        let denied = server.databases_denied()?;
        for d in &denied {
            out.warn(format!(
                "database {d:?} skipped: the role has no CONNECT privilege on it"
            ));
        }
        existing
            .into_iter()
            .filter(|d| !denied.contains(d))
            .collect()
    } else {
        // Check the names first, so a typo fails before anything is written.
        for d in &a.databases {
            if !existing.contains(d) {
                bail!(
                    "database {d:?} does not exist on the server (or does not accept connections)"
                );
            }
        }
        a.databases.clone()
    };
    let repo = open(g, out)?;
    let mut saved = BackupReport::default();
    // The globals never cost the databases: a failure is reported with
    // the others, after every database was tried.
    let mut warn = |m: String| out.warn(m);
    let globals = match pg_globals::backup(
        &repo,
        &server,
        a.globals,
        &a.tags,
        a.host.as_deref(),
        &mut warn,
    ) {
        Ok(g) => g,
        Err(e) => {
            saved.failed.push(FailedSource {
                source: "globals".into(),
                error: crate::message(&e),
            });
            None
        }
    };
    if let Some(gl) = &globals {
        saved.snapshots.push(SavedSnapshot::new(
            &gl.outcome,
            SourceDetails::Postgres {
                database: None,
                database_size: None,
                tables: None,
            },
        ));
        if out.text() {
            out.line(format!(
                "globals{}: snapshot {} saved",
                if gl.without_passwords {
                    " (roles without passwords)"
                } else {
                    ""
                },
                gl.outcome.snapshot.id.short()
            ))?;
        }
    }
    let globals_id = globals.as_ref().map(|g| g.outcome.snapshot.id.to_hex());
    for db in &databases {
        let b = match pg::backup_database(
            &repo,
            &server,
            db,
            globals_id.as_deref(),
            &a.tags,
            a.host.as_deref(),
        ) {
            Ok(b) => b,
            Err(e) => {
                saved.failed.push(FailedSource {
                    source: db.clone(),
                    error: crate::message(&e),
                });
                continue;
            }
        };
        let s = &b.outcome.snapshot.snapshot.summary;
        if out.text() {
            out.line(format!(
                "{}: {} tables, dump {}, added {} (stored {}), snapshot {} saved",
                b.database,
                b.rowcounts.len(),
                output::bytes(s.bytes_read),
                output::bytes(s.bytes_added),
                output::bytes(s.bytes_added_packed),
                b.outcome.snapshot.id.short()
            ))?;
        }
        saved.snapshots.push(SavedSnapshot::new(
            &b.outcome,
            SourceDetails::Postgres {
                database: Some(b.database.clone()),
                database_size: Some(b.database_size),
                tables: Some(b.rowcounts.len()),
            },
        ));
    }
    if out.json {
        saved.repository_warnings = crate::contract::warnings_json(&repo.warnings());
        saved.requests = repo.request_stats();
        out.json_value(&saved)?;
    }
    if !saved.failed.is_empty() {
        let msgs: Vec<String> = saved
            .failed
            .iter()
            .map(|f| match f.source.as_str() {
                "globals" => format!("globals: {}", f.error),
                db => format!("database {db:?}: {}", f.error),
            })
            .collect();
        bail!(
            "PostgreSQL backup incomplete, {} of {} part(s) failed and have no snapshot (the \
             others were saved): {}",
            saved.failed.len(),
            databases.len() + usize::from(a.globals != GlobalsMode::Skip),
            msgs.join("; ")
        );
    }
    Ok(Status::Ok)
}

#[derive(Serialize)]
struct RestoreJson<'a> {
    snapshot_id: String,
    dumped_database: &'a str,
    database: &'a str,
    globals: bool,
}

fn restore(g: &GlobalArgs, out: Output, a: &PgRestoreArgs) -> Result<Status> {
    let repo = open(g, out)?;
    let d = pg_select::dump(
        &repo,
        &a.snapshot,
        &a.filter,
        a.database.as_deref(),
        DatabaseArg::Target,
    )?;
    let (snap, node, db) = (&d.snap, &d.node, &d.database);
    let globals = if a.globals {
        let id = pg::meta(snap, "pg.globals_snapshot").with_context(|| {
            format!(
                "snapshot {} records no globals snapshot (pg.globals_snapshot): it was backed up \
                 with --globals skip, or saving the globals failed; restore without --globals",
                snap.id.short()
            )
        })?;
        let gs = repo.find_snapshot(id, &SnapshotFilter::default())?;
        if pg::meta(&gs, "pg.globals") == Some("no-passwords") {
            out.warn(
                "the roles were saved without their passwords (pg.globals = no-passwords): \
                 set them again with ALTER ROLE ... PASSWORD",
            );
        }
        Some(find_node(&repo, &gs, OsStr::new("postgres/globals.sql"))?)
    } else {
        None
    };
    let server = connect(a.dsn.as_deref(), a.dsn_file.as_deref())?;
    let target = pg::restore(
        &repo,
        &server,
        node,
        db,
        &RestoreOptions {
            database: a.database.clone(),
            create: a.create,
            clean: a.clean,
            locale: d.locale(),
            globals,
            no_owner: false,
            jobs: a.jobs,
            temp_dir: a.temp_dir.clone(),
        },
    )?;
    if out.json {
        out.json_value(&RestoreJson {
            snapshot_id: snap.id.to_hex(),
            dumped_database: db,
            database: &target,
            globals: a.globals,
        })?;
    } else {
        out.line(format!(
            "restored database {db:?} from snapshot {} into {target:?}",
            snap.id.short()
        ))?;
    }
    Ok(Status::Ok)
}

#[derive(Serialize)]
struct VerifyJson<'a> {
    snapshot_id: String,
    database: &'a str,
    scratch_database: &'a str,
    tables_checked: usize,
    ok: bool,
    mismatches: &'a [pg::Mismatch],
}

fn verify(g: &GlobalArgs, out: Output, a: &PgVerifyArgs) -> Result<Status> {
    let started = super::verify_record::Started::now();
    let repo = open(g, out)?;
    let d = pg_select::dump(
        &repo,
        &a.snapshot,
        &a.filter,
        a.database.as_deref(),
        DatabaseArg::Picks,
    )?;
    let (snap, db) = (&d.snap, &d.database);
    // A separate server (`--scratch-dsn`) proves the dump restores away
    // from the one it came from; without it, the --dsn server is used.
    let server = match &a.scratch_dsn {
        Some(s) => Server::connect(&crate::credentials::connection_string(
            Some(s),
            None,
            "--scratch-dsn",
            Some("CAIRN_PG_SCRATCH_DSN"),
            |d| pg::split_password(d).1.is_some(),
        )?)?,
        None => connect(a.dsn.as_deref(), a.dsn_file.as_deref())?,
    };
    let (scratch, checked, mismatches) = pg::verify(&repo, &server, snap, &d.node)?;
    started.record(
        &repo,
        out,
        "pg verify",
        snap.id,
        mismatches.is_empty(),
        format!(
            "{db}: {checked} tables checked, {} mismatch(es)",
            mismatches.len()
        ),
    );
    if out.json {
        out.json_value(&VerifyJson {
            snapshot_id: snap.id.to_hex(),
            database: db,
            scratch_database: &scratch,
            tables_checked: checked,
            ok: mismatches.is_empty(),
            mismatches: &mismatches,
        })?;
    } else {
        for m in &mismatches {
            let show = |n: Option<u64>| n.map_or("missing".to_string(), |n| n.to_string());
            out.line(format!(
                "MISMATCH {}: recorded {}, restored {}",
                m.table,
                show(m.recorded),
                show(m.restored)
            ))?;
        }
        out.line(format!(
            "{db}: {checked} tables checked in scratch database {scratch}, {} mismatch(es)",
            mismatches.len()
        ))?;
    }
    if !mismatches.is_empty() {
        bail!(
            "snapshot {}: {} table(s) differ from the recorded row counts",
            snap.id.short(),
            mismatches.len()
        );
    }
    Ok(Status::Ok)
}
