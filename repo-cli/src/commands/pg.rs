//! `cairn pg`: PostgreSQL backup, restore and verification (the exporter
//! itself is in `crate::exporters::postgres`).

use std::ffi::OsStr;

use anyhow::{Context, Result, bail};
use repo_core::{Repository, SnapshotEntry, SnapshotFilter};
use serde::Serialize;

use super::{Status, find_node, open};
use crate::cli::{GlobalArgs, PgArgs, PgBackupArgs, PgCommand, PgRestoreArgs, PgVerifyArgs};
use crate::contract::{BackupReport, SavedSnapshot, SourceDetails};
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
    let databases = if a.all {
        server.databases()?
    } else {
        a.databases.clone()
    };
    // Check the names first, so a typo fails before anything is written.
    let existing = server.databases()?;
    for d in &databases {
        if !existing.contains(d) {
            bail!("database {d:?} does not exist on the server (or does not accept connections)");
        }
    }
    let repo = open(g, out)?;
    let mut saved = BackupReport::default();
    let globals = pg::backup_globals(&repo, &server, &a.tags, a.host.as_deref())?;
    saved.snapshots.push(SavedSnapshot::new(
        &globals,
        SourceDetails::Postgres {
            database: None,
            database_size: None,
            tables: None,
        },
    ));
    if out.text() {
        out.line(format!(
            "globals: snapshot {} saved",
            globals.snapshot.id.short()
        ))?;
    }
    let globals_id = globals.snapshot.id.to_hex();
    for db in &databases {
        let b = pg::backup_database(
            &repo,
            &server,
            db,
            Some(&globals_id),
            &a.tags,
            a.host.as_deref(),
        )?;
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
    Ok(Status::Ok)
}

/// A database snapshot and its dump node.
fn dump_of(repo: &Repository, spec: &str) -> Result<(SnapshotEntry, repo_core::Node, String)> {
    let filter = SnapshotFilter {
        tags: vec![pg::TAG.into()],
        ..SnapshotFilter::default()
    };
    let snap = repo.find_snapshot(spec, &filter)?;
    let db = pg::meta(&snap, "pg.database")
        .with_context(|| {
            format!(
                "snapshot {} is not a PostgreSQL database backup (no pg.database)",
                snap.id.short()
            )
        })?
        .to_string();
    let node = find_node(repo, &snap, OsStr::new(&pg::dump_path(&db)))?;
    Ok((snap, node, db))
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
    let (snap, node, db) = dump_of(&repo, &a.snapshot)?;
    let globals = if a.globals {
        let id = pg::meta(&snap, "pg.globals_snapshot")
            .context("the snapshot records no globals snapshot (pg.globals_snapshot)")?;
        let gs = repo.find_snapshot(id, &SnapshotFilter::default())?;
        Some(find_node(&repo, &gs, OsStr::new("postgres/globals.sql"))?)
    } else {
        None
    };
    let server = connect(a.dsn.as_deref(), a.dsn_file.as_deref())?;
    let target = pg::restore(
        &repo,
        &server,
        &node,
        &db,
        &RestoreOptions {
            database: a.database.clone(),
            create: a.create,
            clean: a.clean,
            globals,
            no_owner: false,
            jobs: a.jobs,
            temp_dir: a.temp_dir.clone(),
        },
    )?;
    if out.json {
        out.json_value(&RestoreJson {
            snapshot_id: snap.id.to_hex(),
            dumped_database: &db,
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
    let repo = open(g, out)?;
    let (snap, node, db) = dump_of(&repo, &a.snapshot)?;
    let server = connect(a.dsn.as_deref(), a.dsn_file.as_deref())?;
    let (scratch, checked, mismatches) = pg::verify(&repo, &server, &snap, &node)?;
    if out.json {
        out.json_value(&VerifyJson {
            snapshot_id: snap.id.to_hex(),
            database: &db,
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
