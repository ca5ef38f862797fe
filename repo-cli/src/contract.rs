//! The scripting contract (`docs/scripting.md`): the JSON that backup-like
//! commands print under `--json`, the error object on stderr, and the exit
//! codes. The same types serialize the output and deserialize it again in
//! `cairn run`, which reads its children's output, so the two cannot drift.

use std::collections::BTreeMap;

use repo_core::BackupOutcome;
use serde::{Deserialize, Serialize};

use crate::output;

/// What `backup`, `pg backup`, `redis backup` and `qdrant backup` print on
/// stdout under `--json`: always this one object.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BackupReport {
    /// Every snapshot written, in the order written.
    pub snapshots: Vec<SavedSnapshot>,
    /// What could not be backed up (no snapshot was written for it).
    #[serde(default)]
    pub failed: Vec<FailedSource>,
    /// Damaged repository files skipped during the command (also on
    /// stderr); the snapshots are complete, so they do not change the exit
    /// code (SPEC §13).
    #[serde(default)]
    pub repository_warnings: Vec<WarningJson>,
    /// Requests the command made to the storage.
    #[serde(default)]
    pub requests: Requests,
}

/// Requests a command made to the storage, by kind, and the bytes sent and
/// received: the `requests` field of every report that has one
/// (docs/scripting.md), from [`repo_core::Repository::request_stats`].
pub type Requests = repo_core::RequestStats;

/// A warning as scripts see it: the library's [`repo_core::Warning`] by
/// kind, path (when it names one) and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarningJson {
    /// Stable kind, e.g. `size_changed`, `damaged_snapshot`.
    pub kind: String,
    /// The file or object it is about, if any.
    pub path: Option<String>,
    /// One line for people.
    pub message: String,
}

impl From<&repo_core::Warning> for WarningJson {
    fn from(w: &repo_core::Warning) -> Self {
        Self {
            kind: w.kind().to_string(),
            path: w.path().map(|p| p.to_string_lossy().into_owned()),
            message: w.to_string(),
        }
    }
}

/// Every warning of a list, for the JSON output.
pub fn warnings_json(ws: &[repo_core::Warning]) -> Vec<WarningJson> {
    ws.iter().map(WarningJson::from).collect()
}

/// One snapshot a backup-like command wrote. Sizes are bytes (integers),
/// durations seconds (floats).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedSnapshot {
    /// Full snapshot id (64 hex digits).
    pub snapshot_id: String,
    /// The snapshot it was compared with, if any.
    pub parent: Option<String>,
    /// Paths or stream names recorded in the snapshot.
    pub paths: Vec<String>,
    /// Files not in the parent.
    pub files_new: u64,
    /// Files whose content or metadata changed.
    pub files_changed: u64,
    /// Files taken over from the parent.
    pub files_unmodified: u64,
    /// Directories not in the parent.
    pub dirs_new: u64,
    /// Directories that changed.
    pub dirs_changed: u64,
    /// Directories taken over from the parent.
    pub dirs_unmodified: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes of new chunks (before compression).
    pub bytes_added: u64,
    /// Bytes the new chunks take in the repository.
    pub bytes_added_packed: u64,
    /// Files in the snapshot.
    pub total_files: u64,
    /// Bytes in the snapshot.
    pub total_bytes: u64,
    /// Wall time of this snapshot, including the export for exporters.
    pub duration_s: f64,
    /// Entries that could not be read (the snapshot lacks them; exit 3).
    #[serde(default)]
    pub warnings: Vec<WarningJson>,
    /// Packs of interrupted backups taken over instead of uploaded again.
    #[serde(default)]
    pub packs_resumed: usize,
    /// What was backed up, with the exporter's own fields.
    #[serde(flatten)]
    pub source: SourceDetails,
}

impl SavedSnapshot {
    /// The common fields from the library's outcome; `duration_s` is the
    /// backup's own time (exporters replace it with their whole run).
    pub fn new(o: &BackupOutcome, source: SourceDetails) -> Self {
        let snap = &o.snapshot.snapshot;
        let s = &snap.summary;
        Self {
            snapshot_id: o.snapshot.id.to_hex(),
            parent: snap.parent.map(|p| p.to_hex()),
            paths: snap.paths_lossy(),
            files_new: s.files_new,
            files_changed: s.files_changed,
            files_unmodified: s.files_unmodified,
            dirs_new: s.dirs_new,
            dirs_changed: s.dirs_changed,
            dirs_unmodified: s.dirs_unmodified,
            bytes_read: s.bytes_read,
            bytes_added: s.bytes_added,
            bytes_added_packed: s.bytes_added_packed,
            total_files: s.total_files,
            total_bytes: s.total_bytes,
            duration_s: output::seconds(s.duration_ns),
            warnings: warnings_json(&o.warnings),
            packs_resumed: o.packs_resumed,
            source,
        }
    }
}

/// The `type` of a saved snapshot and the fields only that type has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceDetails {
    /// `cairn backup PATH…`.
    Files,
    /// `cairn backup --stdin` or `--stdin-from-command`.
    Stream,
    /// One snapshot of `cairn pg backup`.
    Postgres {
        /// The database, or `null` for the globals (roles, tablespaces).
        database: Option<String>,
        /// `pg_database_size` before the dump (`null` for the globals).
        database_size: Option<u64>,
        /// Tables whose row counts were recorded (`null` for the globals).
        tables: Option<usize>,
    },
    /// `cairn pg basebackup`: a physical base backup (SPEC §26.1).
    #[serde(rename = "postgres-base")]
    PostgresBase {
        /// `pg.system_identifier`, decimal (JSON numbers lose its digits).
        system_identifier: String,
        /// `pg.timeline`.
        timeline: u32,
        /// `pg.start_lsn`.
        start_lsn: String,
        /// `pg.stop_lsn`: recovery is consistent from here.
        stop_lsn: String,
        /// `pg.start_wal`.
        start_wal: String,
        /// `pg.stop_wal`.
        stop_wal: String,
        /// `pg.stop_time`.
        stop_time: String,
    },
    /// `cairn redis backup`.
    Redis {
        /// `host:port` or socket path.
        server: String,
        /// The server's `redis_version`.
        redis_version: String,
        /// The RDB format version.
        rdb_version: u32,
        /// Keys per database (`db0`, …) when the dump began.
        keys: BTreeMap<String, u64>,
    },
    /// One collection of `cairn qdrant backup`.
    Qdrant {
        /// The server URL.
        server: String,
        /// The server's version.
        qdrant_version: String,
        /// The collection.
        collection: String,
        /// The server-side snapshot's name.
        qdrant_snapshot: String,
        /// Its SHA-256, when the server reported one.
        checksum: Option<String>,
        /// Points counted before the snapshot.
        points_count: u64,
    },
}

/// Something a backup-like command could not back up.
/// What `copy --json` prints on stdout: always this one object.
#[derive(Debug, Serialize, Deserialize)]
pub struct CopyReport {
    /// Snapshots written into the destination by this run.
    pub copied: Vec<CopiedSnapshot>,
    /// Selected snapshots the destination already held.
    pub skipped: Vec<CopiedSnapshot>,
    /// Blobs (data and tree) stored in the destination.
    pub blobs_copied: u64,
    /// Plaintext bytes of the blobs copied.
    pub bytes_copied: u64,
    /// Wall time, seconds.
    pub duration_s: f64,
    /// Requests made to the destination.
    #[serde(default)]
    pub requests: Requests,
    /// Requests made to the source (reads only).
    #[serde(default)]
    pub source_requests: Requests,
}

/// One snapshot of a [`CopyReport`].
#[derive(Debug, Serialize, Deserialize)]
pub struct CopiedSnapshot {
    /// Full hex id in the source repository.
    pub source: String,
    /// Full hex id in the destination.
    pub snapshot: String,
    /// RFC 3339, as `snapshots --json`.
    pub time: String,
    /// Host name.
    pub host: String,
    /// Paths or stream names (lossy UTF-8).
    pub paths: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
}

impl CopiedSnapshot {
    /// The contract's view of one snapshot the library copied or skipped.
    pub fn new(c: &repo_core::CopiedSnapshot) -> Self {
        let s = &c.snapshot.snapshot;
        Self {
            source: c.source.to_hex(),
            snapshot: c.snapshot.id.to_hex(),
            time: output::rfc3339(s.time_ns),
            host: s.host.clone(),
            paths: s.paths_lossy(),
            tags: s.tags.clone(),
        }
    }
}

impl CopyReport {
    /// The report of a finished copy, with the requests each repository
    /// served.
    pub fn new(
        stats: &repo_core::CopyStats,
        requests: Requests,
        source_requests: Requests,
    ) -> Self {
        Self {
            copied: stats.copied.iter().map(CopiedSnapshot::new).collect(),
            skipped: stats.skipped.iter().map(CopiedSnapshot::new).collect(),
            blobs_copied: stats.blobs_copied,
            bytes_copied: stats.bytes_copied,
            duration_s: stats.duration.as_secs_f64(),
            requests,
            source_requests,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailedSource {
    /// What it is: a collection, a database.
    pub source: String,
    /// Why, as the error line would say it.
    pub error: String,
}

/// What every command prints on stderr under `--json` when it fails.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorReport {
    /// The error.
    pub error: ErrorBody,
}

/// The body of [`ErrorReport`].
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error and its causes, as the text line shows them.
    pub message: String,
    /// The process's exit code.
    pub exit_code: u8,
    /// A stable name for the exit code: `error`, `incomplete`,
    /// `no_repository`, `locked`, `wrong_password`.
    pub kind: String,
}

/// What `cairn run` reads of `forget --json` (the whole object is
/// described in the README).
#[derive(Debug, Deserialize)]
pub struct ForgetOutput {
    /// Ids of the snapshots removed.
    pub removed: Vec<String>,
    /// Present when a prune ran after the forget.
    #[serde(default)]
    pub prune: Option<serde::de::IgnoredAny>,
}

/// What `cairn run` reads of `check --json`.
#[derive(Debug, Deserialize)]
pub struct CheckOutput {
    /// Which data was read: `none`, `all`, `n/m`, `x%` or a size.
    pub read_data: String,
}

/// What `cairn run` reads of each entry of `snapshots --json`.
#[derive(Debug, Deserialize)]
pub struct ListedSnapshot {
    /// Full id.
    pub id: String,
    /// RFC 3339 UTC.
    pub time: String,
}

/// What `cairn run` reads of `stats --json`: the repository's packs.
#[derive(Debug, Deserialize)]
pub struct StatsOutput {
    /// Every pack in the repository.
    pub repository: StatsRepository,
}

/// The `repository` object of `stats --json`.
#[derive(Debug, Deserialize)]
pub struct StatsRepository {
    /// The pack files' total size in bytes.
    pub bytes: u64,
}

/// A lock held by another process (exit code 11): another `cairn run` of
/// the same plan.
#[derive(Debug)]
pub struct LockHeld(pub String);

impl std::fmt::Display for LockHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LockHeld {}

impl ErrorReport {
    /// Finds the error object in a child's stderr (its last line that is one).
    pub fn find(stderr: &str) -> Option<ErrorReport> {
        stderr
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l.trim()).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_report_is_found_in_stderr() {
        let e = ErrorReport {
            error: ErrorBody {
                message: "wrong password or no matching key".into(),
                exit_code: 12,
                kind: "wrong_password".into(),
            },
        };
        let stderr = format!(
            "cairn: warning: something\n{}\n",
            serde_json::to_string(&e).unwrap()
        );
        let found = ErrorReport::find(&stderr).unwrap();
        assert_eq!(found.error.exit_code, 12);
        assert_eq!(found.error.message, e.error.message);
        assert!(ErrorReport::find("cairn: error: plain\n").is_none());
    }

    #[test]
    fn details_round_trip_flattened() {
        let v = serde_json::json!({
            "snapshot_id": "ab", "parent": null, "paths": ["postgres/shop.dump"],
            "files_new": 1, "files_changed": 0, "files_unmodified": 0,
            "dirs_new": 0, "dirs_changed": 0, "dirs_unmodified": 0,
            "bytes_read": 10, "bytes_added": 5, "bytes_added_packed": 4,
            "total_files": 1, "total_bytes": 10, "duration_s": 0.5,
            "warnings": [], "packs_resumed": 0,
            "type": "postgres", "database": "shop", "database_size": 99, "tables": 3
        });
        let s: SavedSnapshot = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(
            s.source,
            SourceDetails::Postgres {
                database: Some("shop".into()),
                database_size: Some(99),
                tables: Some(3)
            }
        );
        assert_eq!(serde_json::to_value(&s).unwrap(), v);
    }
}
