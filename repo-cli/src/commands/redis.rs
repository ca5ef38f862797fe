//! `cairn redis`: back up a Redis server's RDB over the replication
//! protocol, restore it to a file or into a running server, verify it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use repo_core::{NodeKind, Repository, SnapshotEntry};
use serde::Serialize;

use super::{Status, find_node, open, select};
use crate::cli::{
    GlobalArgs, RedisArgs, RedisBackupArgs, RedisCommand, RedisRestoreArgs, RedisVerifyArgs,
};
use crate::contract::{BackupReport, SavedSnapshot, SourceDetails};
use crate::credentials::connection_string;
use crate::exporters::rdb_keys::{self, DbKeys};
use crate::exporters::redis::{Conn, RedisUrl, ScratchServer, copy_keys, create_private};
use crate::output::{self, Output};
use crate::progress::TermProgress;

/// The stream name the RDB is stored under.
const RDB_PATH: &str = "redis/dump.rdb";
/// The tag every Redis snapshot carries.
const TAG: &str = "redis";

/// Metadata keys (SPEC.md §25).
const META_SERVER: &str = "redis.server";
const META_VERSION: &str = "redis.version";
const META_RDB_VERSION: &str = "redis.rdb_version";
const META_KEYS_TOTAL: &str = "redis.keys_total";
const META_KEYS_PREFIX: &str = "redis.keys.db";

/// Runs a `cairn redis` subcommand.
pub fn run(g: &GlobalArgs, out: Output, a: &RedisArgs) -> Result<Status> {
    match &a.command {
        RedisCommand::Backup(b) => backup(g, out, b),
        RedisCommand::Restore(r) => restore(g, out, r),
        RedisCommand::Verify(v) => verify(g, out, v),
    }
}

/// The server URL from `--url` (or `env`, which clap reads) or `--url-file`.
fn server_url(url: Option<&str>, file: Option<&Path>, env: Option<&str>) -> Result<RedisUrl> {
    let s = connection_string(url, file, "--url", env, |u| {
        RedisUrl::parse(u).is_ok_and(|u| u.password.is_some())
    })?;
    RedisUrl::parse(&s)
}

fn backup(g: &GlobalArgs, out: Output, a: &RedisBackupArgs) -> Result<Status> {
    let url = server_url(
        a.url.as_deref(),
        a.url_file.as_deref(),
        Some("CAIRN_REDIS_URL"),
    )?;
    let repo = open(g, out)?;
    let start = Instant::now();
    // INFO over a normal connection first: the replication connection
    // speaks nothing but the sync once SYNC is sent.
    let mut conn = Conn::connect(&url)?;
    let version = conn
        .info("server")?
        .get("redis_version")
        .cloned()
        .unwrap_or_default();
    let keyspace = conn.keyspace()?;
    drop(conn);
    let rdb = Conn::connect(&url)?.sync_rdb()?;
    let rdb_version = rdb.version();

    let keys: BTreeMap<String, u64> = keyspace
        .iter()
        .map(|(db, n)| (format!("db{db}"), *n))
        .collect();
    let progress = TermProgress::new(out);
    let mut b = repo
        .backup()
        .progress(&progress)
        // An RDB is written in hash-table order, so a day's changes are
        // scattered through it: measured on a 20 MB RDB with 0.12 % of keys
        // changed, the tiny profile (16 KiB chunks) stored 24 % of it again,
        // small 61 %, default 100 % (README, Redis).
        .profile("tiny")
        .tag(TAG)
        .metadata(META_SERVER, url.address())
        .metadata(META_VERSION, &version)
        .metadata(META_RDB_VERSION, rdb_version.to_string())
        .metadata(META_KEYS_TOTAL, keyspace.values().sum::<u64>().to_string());
    for (db, n) in &keyspace {
        b = b.metadata(format!("{META_KEYS_PREFIX}{db}"), n.to_string());
    }
    for t in &a.tags {
        b = b.tag(t);
    }
    if let Some(h) = &a.host {
        b = b.host(h);
    }
    let outcome = b.stream(RDB_PATH, rdb).run().with_context(|| {
        format!(
            "Redis backup of {} failed; no snapshot written",
            url.address()
        )
    })?;
    progress.finish();
    let s = &outcome.snapshot.snapshot.summary;
    if out.json {
        let mut saved = SavedSnapshot::new(
            &outcome,
            SourceDetails::Redis {
                server: url.address(),
                redis_version: version,
                rdb_version,
                keys,
            },
        );
        saved.duration_s = start.elapsed().as_secs_f64();
        out.json_value(&BackupReport {
            snapshots: vec![saved],
            failed: Vec::new(),
            repository_warnings: crate::contract::warnings_json(&repo.warnings()),
            requests: repo.request_stats(),
        })?;
    } else {
        out.line(format!(
            "Redis {version} at {}: RDB version {rdb_version}, {} keys in {} databases",
            url.address(),
            keyspace.values().sum::<u64>(),
            keyspace.len()
        ))?;
        out.line(format!(
            "RDB {}, {} added",
            output::bytes(s.total_bytes),
            output::bytes(s.bytes_added)
        ))?;
        out.line(format!("snapshot {} saved", outcome.snapshot.id.short()))?;
    }
    Ok(Status::Ok)
}

/// The recorded key counts per database.
fn recorded_keys(snap: &SnapshotEntry) -> Result<BTreeMap<u32, u64>> {
    let meta = &snap.snapshot.metadata;
    if !meta.iter().any(|(k, _)| k == META_RDB_VERSION) {
        bail!(
            "snapshot {} is not a Redis backup (no {META_RDB_VERSION} metadata)",
            snap.id.short()
        );
    }
    meta.iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(META_KEYS_PREFIX)?, v)))
        .map(|(db, v)| Ok((db.parse()?, v.parse()?)))
        .collect()
}

/// Writes the snapshot's RDB to the new file `f`.
fn write_rdb(repo: &Repository, snap: &SnapshotEntry, f: File, path: &Path) -> Result<u64> {
    let node = find_node(repo, snap, std::ffi::OsStr::new(RDB_PATH))
        .with_context(|| format!("snapshot {} holds no {RDB_PATH}", snap.id.short()))?;
    if node.kind != NodeKind::File {
        bail!("{RDB_PATH} in snapshot {} is not a file", snap.id.short());
    }
    let mut w = BufWriter::new(f);
    repo.dump_node(&node, &mut w)
        .with_context(|| format!("cannot write {}", path.display()))?;
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    w.get_ref().sync_all()?;
    Ok(node.size)
}

/// A throw-away server on the snapshot's RDB, in a new 0700 directory
/// (removed on drop) holding the RDB (0600), and the keys in that RDB (or
/// why they could not be counted: a value type the walk does not know).
struct Scratch {
    server: ScratchServer,
    rdb: Result<BTreeMap<u32, DbKeys>>,
    _dir: tempfile::TempDir,
}

fn scratch_server(repo: &Repository, snap: &SnapshotEntry, binary: &Path) -> Result<Scratch> {
    let dir = tempfile::Builder::new()
        .prefix("cairn-redis-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
    }
    let path = dir.path().join("dump.rdb");
    write_rdb(repo, snap, create_private(&path)?, &path)?;
    let rdb = rdb_keys::count_file(&path).with_context(|| {
        format!(
            "cannot count the keys in the RDB of snapshot {}",
            snap.id.short()
        )
    });
    let server = ScratchServer::start(binary, dir.path())?;
    Ok(Scratch {
        server,
        rdb,
        _dir: dir,
    })
}

/// Databases where `found` holds more keys than the RDB: keys that did not
/// come from the snapshot.
fn extra_keys(rdb: &BTreeMap<u32, DbKeys>, found: &BTreeMap<u32, u64>) -> Vec<String> {
    found
        .iter()
        .filter_map(|(db, &n)| {
            let want = rdb.get(db).map_or(0, |d| d.keys);
            (n > want).then(|| format!("db{db}: {n} keys, the RDB holds {want}"))
        })
        .collect()
}

#[derive(Serialize)]
struct RestoreJson {
    snapshot_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<BTreeMap<String, u64>>,
}

fn restore(g: &GlobalArgs, out: Output, a: &RedisRestoreArgs) -> Result<Status> {
    let repo = open(g, out)?;
    let snap = select(&repo, &a.snapshot, &a.filter)?;
    recorded_keys(&snap)?;
    let mut report = RestoreJson {
        snapshot_id: snap.id.to_hex(),
        file: None,
        bytes: None,
        target: None,
        keys: None,
    };
    if let Some(path) = &a.to_file {
        let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let n = write_rdb(&repo, &snap, f, path)?;
        report.file = Some(path.display().to_string());
        report.bytes = Some(n);
    } else {
        let target = server_url(a.url.as_deref(), a.url_file.as_deref(), None)?;
        let scratch = scratch_server(&repo, &snap, &a.redis_server)?;
        // Restoring matters more than this check, which the private
        // scratch server makes a second line of defence.
        let rdb = match &scratch.rdb {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("cairn: warning: {e:#}; the copy is not checked against the RDB");
                None
            }
        };
        // Keys the RDB does not hold were added to the scratch server by
        // someone else: refuse before copying them, and check the copy
        // again, so nothing foreign reaches the target unreported.
        let loaded = Conn::connect(&scratch.server.url)?.keyspace()?;
        let extra = rdb.map_or(Vec::new(), |r| extra_keys(r, &loaded));
        if !extra.is_empty() {
            bail!(
                "the scratch server holds keys that are not in snapshot {} ({}); nothing was copied",
                snap.id.short(),
                extra.join("; ")
            );
        }
        let copied = copy_keys(&scratch.server.url, &target)?;
        let extra = rdb.map_or(Vec::new(), |r| extra_keys(r, &copied));
        if !extra.is_empty() {
            bail!(
                "more keys were copied into {} than snapshot {} holds ({}): the scratch server \
                 was written to during the restore; check the target",
                target.address(),
                snap.id.short(),
                extra.join("; ")
            );
        }
        report.target = Some(target.address());
        report.keys = Some(
            copied
                .into_iter()
                .map(|(db, n)| (format!("db{db}"), n))
                .collect(),
        );
    }
    if out.json {
        out.json_value(&report)?;
    } else if let (Some(f), Some(b)) = (&report.file, report.bytes) {
        out.line(format!(
            "wrote RDB of snapshot {} to {f} ({})",
            snap.id.short(),
            output::bytes(b)
        ))?;
    } else if let (Some(t), Some(k)) = (&report.target, &report.keys) {
        for (db, n) in k {
            out.line(format!("{db}: {n} keys restored"))?;
        }
        out.line(format!("restored snapshot {} into {t}", snap.id.short()))?;
    }
    Ok(Status::Ok)
}

#[derive(Serialize)]
struct DbCheck {
    db: u32,
    /// From `INFO keyspace` before SYNC (metadata): informational, since
    /// writes between it and the RDB's fork change it.
    recorded: u64,
    /// Keys in the RDB, and those of them with an expiry time.
    rdb_keys: u64,
    rdb_expiring: u64,
    /// Keys of the RDB whose expiry time had passed when the server was
    /// read: these may be missing.
    expired: u64,
    /// Keys the scratch server loaded, and those with an expiry time.
    loaded: u64,
    loaded_expiring: u64,
    ok: bool,
}

/// Keys without expiry must all load; keys with expiry may be fewer, but
/// only by those whose time has passed (Redis drops them when loading).
fn check_db(db: u32, recorded: u64, rdb: &DbKeys, loaded: (u64, u64), now_ms: i64) -> DbCheck {
    let (keys, expiring) = loaded;
    let expired = rdb.expired_by(now_ms);
    let ok = expiring <= keys
        && keys - expiring == rdb.persistent()
        && expiring <= rdb.volatile()
        && expiring + expired >= rdb.volatile();
    DbCheck {
        db,
        recorded,
        rdb_keys: rdb.keys,
        rdb_expiring: rdb.volatile(),
        expired,
        loaded: keys,
        loaded_expiring: expiring,
        ok,
    }
}

#[derive(Serialize)]
struct VerifyJson<'a> {
    snapshot_id: String,
    redis_version: Option<&'a str>,
    rdb_version: Option<&'a str>,
    ok: bool,
    databases: Vec<DbCheck>,
}

fn verify(g: &GlobalArgs, out: Output, a: &RedisVerifyArgs) -> Result<Status> {
    let started = super::verify_record::Started::now();
    let repo = open(g, out)?;
    let snap = select(&repo, &a.snapshot, &a.filter)?;
    let recorded = recorded_keys(&snap)?;
    let scratch = scratch_server(&repo, &snap, &a.redis_server)?;
    let loaded = Conn::connect(&scratch.server.url)?.keyspace_expires()?;
    // Read after INFO: every key that can have expired before it is counted.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let rdb = scratch.rdb.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let mut dbs: Vec<u32> = rdb.keys().chain(loaded.keys()).copied().collect();
    dbs.sort_unstable();
    dbs.dedup();
    let empty = DbKeys::default();
    let checks: Vec<DbCheck> = dbs
        .into_iter()
        .map(|db| {
            check_db(
                db,
                recorded.get(&db).copied().unwrap_or(0),
                rdb.get(&db).unwrap_or(&empty),
                loaded.get(&db).copied().unwrap_or((0, 0)),
                now_ms,
            )
        })
        .collect();
    drop(scratch);
    let ok = checks.iter().all(|c| c.ok);
    let bad: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("db{}", c.db))
        .collect();
    let summary = match bad.is_empty() {
        true => format!("{} database(s), key counts match", checks.len()),
        false => format!("key counts differ in {}", bad.join(", ")),
    };
    started.record(&repo, out, "redis verify", snap.id, ok, summary);
    let meta = |k: &str| {
        snap.snapshot
            .metadata
            .iter()
            .find(|(mk, _)| mk == k)
            .map(|(_, v)| v.as_str())
    };
    if out.json {
        out.json_value(&VerifyJson {
            snapshot_id: snap.id.to_hex(),
            redis_version: meta(META_VERSION),
            rdb_version: meta(META_RDB_VERSION),
            ok,
            databases: checks,
        })?;
    } else {
        for c in &checks {
            out.line(format!(
                "db{}: {} keys in the RDB ({} with expiry, {} of them expired), {} loaded ({} with expiry){}",
                c.db,
                c.rdb_keys,
                c.rdb_expiring,
                c.expired,
                c.loaded,
                c.loaded_expiring,
                if c.ok { "" } else { "  MISMATCH" }
            ))?;
        }
        out.line(format!(
            "snapshot {}: {}",
            snap.id.short(),
            if ok { "verified" } else { "key counts differ" }
        ))?;
    }
    if !ok {
        bail!(
            "Redis snapshot {} does not load with the keys its RDB holds",
            snap.id.short()
        );
    }
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_expired_keys_may_be_missing() {
        // 3 keys: one without expiry, one expiring at 100, one at 10_000.
        let rdb = DbKeys {
            keys: 3,
            expires_at: vec![100, 10_000],
        };
        let ok = |loaded, now| check_db(0, 3, &rdb, loaded, now).ok;
        assert!(ok((3, 2), 50), "all loaded");
        assert!(ok((2, 1), 200), "the expired one is gone");
        assert!(!ok((2, 1), 50), "gone before its time");
        assert!(!ok((1, 0), 200), "the unexpired one is gone too");
        assert!(!ok((2, 2), 200), "a key without expiry is gone");
        assert!(!ok((4, 2), 50), "a key too many");
        assert!(!ok((3, 3), 50), "a key too many, with expiry");
        assert!(ok((1, 0), 20_000), "both expired");
    }
}
