//! The local SQLite cache of the merged index, and the verification ledger
//! (SPEC §12).
//!
//! The cache is disposable: on a schema mismatch or damage it is dropped and
//! rebuilt from the repository's index files, and `check` never trusts it.
//! It keeps lookups off the heap, so the index never has to fit in RAM.
//!
//! The ledger lives in the same file: which packs `check --read-data`
//! verified and when, and the outcome of recent checks and restore drills.
//! It is history, not structure: losing it only means the next rotating
//! check starts over, and nothing in it is ever used to decide whether data
//! is intact.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::blob::BlobKind;
use crate::id::{BlobId, PackId, SnapshotId};
use crate::pack::{BlobLocation, PackEntry};

/// Bump on any schema change: old caches are dropped and rebuilt.
pub const SCHEMA_VERSION: i64 = 2;

/// A cache failure (SQLite or file system).
#[derive(Debug, thiserror::Error)]
#[error("local cache: {0}")]
pub struct CacheError(#[from] rusqlite::Error);

/// Marker for "this cache file is from another schema or damaged".
const STALE: rusqlite::Error = rusqlite::Error::InvalidQuery;

impl CacheError {
    /// The file is of another schema version, or SQLite finds it damaged or
    /// not a database: safe to delete and rebuild. Busy or permission errors
    /// are not: another process may be using a good cache.
    fn is_stale(&self) -> bool {
        match &self.0 {
            rusqlite::Error::InvalidQuery => true,
            rusqlite::Error::SqliteFailure(e, _) => {
                matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
                )
            }
            _ => false,
        }
    }
}

/// The SQLite index cache of one repository.
#[derive(Debug)]
pub struct Cache {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS packs (
    pack_no INTEGER PRIMARY KEY,
    id BLOB NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS blobs (
    id BLOB PRIMARY KEY,
    kind INTEGER NOT NULL,
    pack_no INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    raw_length INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_files (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS verified_packs (
    id BLOB PRIMARY KEY,
    verified_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS check_runs (
    run_no INTEGER PRIMARY KEY,
    time_ns INTEGER NOT NULL,
    duration_ns INTEGER NOT NULL,
    read_data INTEGER NOT NULL,
    packs INTEGER NOT NULL,
    packs_verified INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    warnings INTEGER NOT NULL,
    report TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS drills (
    drill_no INTEGER PRIMARY KEY,
    snapshot BLOB NOT NULL,
    time_ns INTEGER NOT NULL,
    files INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    duration_ns INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS drills_by_snapshot ON drills (snapshot, time_ns);
";

/// Ledger key: start of the current rotation cycle of partial checks.
const CYCLE_START: &str = "cycle_start_ns";
/// Ledger key: partial checks run in the current rotation cycle.
const CYCLE_RUNS: &str = "cycle_runs";

/// One `check` run as the ledger remembers it (SPEC §12).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckRecord {
    /// When the check started, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// How long it ran.
    pub duration_ns: u64,
    /// True when pack data was read (`--read-data` or a subset).
    pub read_data: bool,
    /// Packs named by the index at the time.
    pub packs: u64,
    /// Packs whose data this run read and verified.
    pub packs_verified: u64,
    /// Errors found.
    pub errors: u64,
    /// Warnings found.
    pub warnings: u64,
    /// The full report, as JSON.
    #[serde(skip)]
    pub report_json: String,
}

/// One restore drill as the ledger remembers it (SPEC §12).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DrillRecord {
    /// The snapshot drilled.
    pub snapshot: SnapshotId,
    /// When the drill started, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// Files restored and compared.
    pub files: u64,
    /// Bytes restored and compared.
    pub bytes: u64,
    /// How long it ran.
    pub duration_ns: u64,
    /// True when every file came back identical.
    pub ok: bool,
    /// The full report, as JSON.
    #[serde(skip)]
    pub report_json: String,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Cache {
    /// Opens (or creates) the cache file at `path`; `None` keeps it in memory.
    /// A cache of another schema version, or one SQLite finds damaged, is
    /// deleted and created anew.
    pub fn open(path: Option<&Path>) -> Result<Self, CacheError> {
        let conn = match path {
            None => Connection::open_in_memory()?,
            Some(p) => match Self::open_file(p) {
                Ok(c) => c,
                Err(e) if e.is_stale() => {
                    for suffix in ["", "-wal", "-shm", "-journal"] {
                        let mut f = p.as_os_str().to_owned();
                        f.push(suffix);
                        let _ = std::fs::remove_file(&f);
                    }
                    Self::open_file(p)?
                }
                Err(e) => return Err(e),
            },
        };
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn open_file(p: &Path) -> Result<Connection, CacheError> {
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(p)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let has_tables: i64 =
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if has_tables > 0 && v != SCHEMA_VERSION {
            return Err(CacheError(STALE));
        }
        // No integrity scan here: it reads the whole file on every command.
        // A damaged file shows up as NotADatabase/DatabaseCorrupt instead,
        // and `check` never trusts the cache anyway.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // 16 MiB of page cache keeps lookups and bulk inserts off the disk
        // without dominating the process's memory.
        conn.pragma_update(None, "cache_size", -16_384)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(conn)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Names of the index files already merged into the cache.
    pub fn index_files(&self) -> Result<HashSet<String>, CacheError> {
        let c = self.conn();
        let mut st = c.prepare("SELECT name FROM index_files")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Merges one index file's packs, in one transaction.
    pub fn add_index(
        &self,
        name: &str,
        packs: &[(PackId, Vec<PackEntry>)],
    ) -> Result<(), CacheError> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        {
            let mut ins_pack = tx.prepare_cached("INSERT OR IGNORE INTO packs (id) VALUES (?1)")?;
            let mut get_pack = tx.prepare_cached("SELECT pack_no FROM packs WHERE id = ?1")?;
            let mut ins_blob = tx.prepare_cached(
                "INSERT OR IGNORE INTO blobs (id, kind, pack_no, offset, length, raw_length) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            // Insert in key order: random-order inserts into the B-tree
            // get several times slower as the table grows.
            let mut rows: Vec<(i64, &PackEntry)> = Vec::new();
            for (pack, entries) in packs {
                ins_pack.execute(params![pack.as_bytes().as_slice()])?;
                let no: i64 =
                    get_pack.query_row(params![pack.as_bytes().as_slice()], |r| r.get(0))?;
                rows.extend(entries.iter().map(|e| (no, e)));
            }
            rows.sort_unstable_by(|a, b| a.1.id.as_bytes().cmp(b.1.id.as_bytes()));
            {
                for (no, e) in rows {
                    ins_blob.execute(params![
                        e.id.as_bytes().as_slice(),
                        e.kind.to_byte(),
                        no,
                        e.offset,
                        e.length,
                        e.raw_length
                    ])?;
                }
            }
            tx.execute(
                "INSERT OR IGNORE INTO index_files (name) VALUES (?1)",
                params![name],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Where blob `id` is stored, if any merged index knows it.
    pub fn lookup(&self, id: &BlobId) -> Result<Option<BlobLocation>, CacheError> {
        let c = self.conn();
        let mut st = c.prepare_cached(
            "SELECT b.kind, p.id, b.offset, b.length, b.raw_length FROM blobs b JOIN packs p ON p.pack_no = b.pack_no WHERE b.id = ?1",
        )?;
        let row = st
            .query_row(params![id.as_bytes().as_slice()], |r| {
                Ok((
                    r.get::<_, u8>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, u32>(3)?,
                    r.get::<_, u32>(4)?,
                ))
            })
            .optional()?;
        Ok(row.and_then(|(kind, pack, offset, length, raw_length)| {
            let pack: [u8; 32] = pack.try_into().ok()?;
            Some(BlobLocation {
                pack: PackId::from_bytes(pack),
                entry: PackEntry {
                    kind: BlobKind::from_byte(kind)?,
                    id: *id,
                    offset,
                    length,
                    raw_length,
                },
            })
        }))
    }

    /// True if blob `id` is in a merged index.
    pub fn contains(&self, id: &BlobId) -> Result<bool, CacheError> {
        let c = self.conn();
        let mut st = c.prepare_cached("SELECT 1 FROM blobs WHERE id = ?1")?;
        Ok(st.exists(params![id.as_bytes().as_slice()])?)
    }

    /// True if a merged index file names pack `id`.
    pub fn has_pack(&self, id: &PackId) -> Result<bool, CacheError> {
        let c = self.conn();
        let mut st = c.prepare_cached("SELECT 1 FROM packs WHERE id = ?1")?;
        Ok(st.exists(params![id.as_bytes().as_slice()])?)
    }

    /// Number of blobs known.
    pub fn blob_count(&self) -> Result<u64, CacheError> {
        Ok(self
            .conn()
            .query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))?)
    }

    /// Forgets the merged index (before a rebuild). The ledger stays: a
    /// verified pack stays verified when the index files around it change.
    pub fn clear(&self) -> Result<(), CacheError> {
        self.conn()
            .execute_batch("DELETE FROM blobs; DELETE FROM packs; DELETE FROM index_files;")?;
        Ok(())
    }

    /// Records that `pack` was read and verified at `time_ns`.
    pub fn record_verified(&self, pack: &PackId, time_ns: i64) -> Result<(), CacheError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO verified_packs (id, verified_ns) VALUES (?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET verified_ns = excluded.verified_ns",
            )?
            .execute(params![pack.as_bytes().as_slice(), time_ns])?;
        Ok(())
    }

    /// When `pack` was last verified, if ever.
    pub fn last_verified(&self, pack: &PackId) -> Result<Option<i64>, CacheError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT verified_ns FROM verified_packs WHERE id = ?1")?
            .query_row(params![pack.as_bytes().as_slice()], |r| r.get(0))
            .optional()?)
    }

    /// Every pack in the ledger with its last verification time.
    pub fn verification_times(&self) -> Result<HashMap<PackId, i64>, CacheError> {
        let c = self.conn();
        let mut st = c.prepare_cached("SELECT id, verified_ns FROM verified_packs")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = HashMap::new();
        for row in rows {
            let (id, t) = row?;
            if let Ok(id) = <[u8; 32]>::try_from(id) {
                out.insert(PackId::from_bytes(id), t);
            }
        }
        Ok(out)
    }

    /// Packs verified at or after `since_ns`.
    pub fn verified_since(&self, since_ns: i64) -> Result<HashSet<PackId>, CacheError> {
        Ok(self
            .verification_times()?
            .into_iter()
            .filter(|&(_, t)| t >= since_ns)
            .map(|(id, _)| id)
            .collect())
    }

    /// Drops ledger entries of packs not in `existing` (deleted by prune),
    /// so the ledger does not grow forever. Returns how many went.
    pub fn retain_verified(&self, existing: &HashSet<PackId>) -> Result<u64, CacheError> {
        let gone: Vec<PackId> = self
            .verification_times()?
            .into_keys()
            .filter(|id| !existing.contains(id))
            .collect();
        let mut c = self.conn();
        let tx = c.transaction()?;
        {
            let mut del = tx.prepare_cached("DELETE FROM verified_packs WHERE id = ?1")?;
            for id in &gone {
                del.execute(params![id.as_bytes().as_slice()])?;
            }
        }
        tx.commit()?;
        Ok(gone.len() as u64)
    }

    /// The current rotation cycle of partial checks: when it began and how
    /// many runs it has had, if one began.
    pub fn rotation_cycle(&self) -> Result<Option<(i64, u64)>, CacheError> {
        let c = self.conn();
        let mut st = c.prepare_cached("SELECT value FROM ledger_meta WHERE key = ?1")?;
        let start: Option<i64> = st
            .query_row(params![CYCLE_START], |r| r.get(0))
            .optional()?;
        let runs: Option<i64> = st.query_row(params![CYCLE_RUNS], |r| r.get(0)).optional()?;
        Ok(start.map(|s| (s, to_u64(runs.unwrap_or(0)))))
    }

    /// Stores the rotation cycle: its start and its number of runs so far.
    pub fn set_rotation_cycle(&self, start_ns: i64, runs: u64) -> Result<(), CacheError> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO ledger_meta (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?;
            st.execute(params![CYCLE_START, start_ns])?;
            st.execute(params![CYCLE_RUNS, to_i64(runs)])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Remembers one check run.
    pub fn record_check(&self, r: &CheckRecord) -> Result<(), CacheError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO check_runs (time_ns, duration_ns, read_data, packs, packs_verified, \
                 errors, warnings, report) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                r.time_ns,
                to_i64(r.duration_ns),
                r.read_data,
                to_i64(r.packs),
                to_i64(r.packs_verified),
                to_i64(r.errors),
                to_i64(r.warnings),
                r.report_json
            ])?;
        Ok(())
    }

    /// The latest check run; with `read_data`, the latest that read data.
    pub fn last_check(&self, read_data: bool) -> Result<Option<CheckRecord>, CacheError> {
        let sql = if read_data {
            "SELECT time_ns, duration_ns, read_data, packs, packs_verified, errors, warnings, report \
             FROM check_runs WHERE read_data ORDER BY time_ns DESC, run_no DESC LIMIT 1"
        } else {
            "SELECT time_ns, duration_ns, read_data, packs, packs_verified, errors, warnings, report \
             FROM check_runs ORDER BY time_ns DESC, run_no DESC LIMIT 1"
        };
        Ok(self
            .conn()
            .prepare_cached(sql)?
            .query_row([], |r| {
                Ok(CheckRecord {
                    time_ns: r.get(0)?,
                    duration_ns: to_u64(r.get(1)?),
                    read_data: r.get(2)?,
                    packs: to_u64(r.get(3)?),
                    packs_verified: to_u64(r.get(4)?),
                    errors: to_u64(r.get(5)?),
                    warnings: to_u64(r.get(6)?),
                    report_json: r.get(7)?,
                })
            })
            .optional()?)
    }

    /// Remembers one restore drill.
    pub fn record_drill(&self, r: &DrillRecord) -> Result<(), CacheError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO drills (snapshot, time_ns, files, bytes, duration_ns, ok, report) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                r.snapshot.as_bytes().as_slice(),
                r.time_ns,
                to_i64(r.files),
                to_i64(r.bytes),
                to_i64(r.duration_ns),
                r.ok,
                r.report_json
            ])?;
        Ok(())
    }

    /// The latest drill of `snapshot`, or of any snapshot with `None`.
    pub fn last_drill(
        &self,
        snapshot: Option<&SnapshotId>,
    ) -> Result<Option<DrillRecord>, CacheError> {
        let c = self.conn();
        let cols = "snapshot, time_ns, files, bytes, duration_ns, ok, report";
        let row = |r: &rusqlite::Row<'_>| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                DrillRecord {
                    snapshot: SnapshotId::from_bytes([0; 32]),
                    time_ns: r.get(1)?,
                    files: to_u64(r.get(2)?),
                    bytes: to_u64(r.get(3)?),
                    duration_ns: to_u64(r.get(4)?),
                    ok: r.get(5)?,
                    report_json: r.get(6)?,
                },
            ))
        };
        let found = match snapshot {
            Some(id) => c
                .prepare_cached(&format!(
                    "SELECT {cols} FROM drills WHERE snapshot = ?1 \
                     ORDER BY time_ns DESC, drill_no DESC LIMIT 1"
                ))?
                .query_row(params![id.as_bytes().as_slice()], row)
                .optional()?,
            None => c
                .prepare_cached(&format!(
                    "SELECT {cols} FROM drills ORDER BY time_ns DESC, drill_no DESC LIMIT 1"
                ))?
                .query_row([], row)
                .optional()?,
        };
        Ok(found.and_then(|(snap, mut rec)| {
            rec.snapshot = SnapshotId::from_bytes(snap.try_into().ok()?);
            Some(rec)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_lookup_and_rebuild_on_schema_mismatch() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.sqlite");
        let c = Cache::open(Some(&p)).unwrap();
        let pack = PackId::from_bytes([1; 32]);
        let e = PackEntry {
            kind: BlobKind::Data,
            id: BlobId::from_bytes([2; 32]),
            offset: 12,
            length: 100,
            raw_length: 80,
        };
        c.add_index("i1", &[(pack, vec![e])]).unwrap();
        assert_eq!(
            c.lookup(&e.id).unwrap(),
            Some(BlobLocation { pack, entry: e })
        );
        assert!(c.contains(&e.id).unwrap());
        assert!(!c.contains(&BlobId::from_bytes([3; 32])).unwrap());
        assert!(c.index_files().unwrap().contains("i1"));
        drop(c);
        // Another schema version: dropped and rebuilt empty.
        let conn = Connection::open(&p).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
        drop(conn);
        let c = Cache::open(Some(&p)).unwrap();
        assert_eq!(c.blob_count().unwrap(), 0);
        // Garbage file: also rebuilt.
        drop(c);
        std::fs::write(&p, b"not a database at all, definitely not").unwrap();
        let c = Cache::open(Some(&p)).unwrap();
        assert_eq!(c.blob_count().unwrap(), 0);
    }

    #[test]
    fn ledger_survives_index_rebuild_and_reopen() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.sqlite");
        let c = Cache::open(Some(&p)).unwrap();
        let (a, b) = (PackId::from_bytes([1; 32]), PackId::from_bytes([2; 32]));
        c.record_verified(&a, 100).unwrap();
        c.record_verified(&b, 200).unwrap();
        c.record_verified(&a, 300).unwrap();
        assert_eq!(c.last_verified(&a).unwrap(), Some(300));
        assert_eq!(c.verified_since(250).unwrap(), HashSet::from([a]));
        c.clear().unwrap();
        assert_eq!(c.verification_times().unwrap().len(), 2);
        assert_eq!(c.retain_verified(&HashSet::from([b])).unwrap(), 1);
        assert_eq!(c.last_verified(&a).unwrap(), None);
        assert_eq!(c.rotation_cycle().unwrap(), None);
        c.set_rotation_cycle(42, 1).unwrap();
        c.set_rotation_cycle(43, 2).unwrap();

        let check = |t, read_data| CheckRecord {
            time_ns: t,
            duration_ns: 5,
            read_data,
            packs: 10,
            packs_verified: 3,
            errors: 0,
            warnings: 1,
            report_json: "{}".into(),
        };
        c.record_check(&check(10, true)).unwrap();
        c.record_check(&check(20, false)).unwrap();
        let snap = SnapshotId::from_bytes([7; 32]);
        let drill = |t, ok| DrillRecord {
            snapshot: snap,
            time_ns: t,
            files: 4,
            bytes: 1000,
            duration_ns: 9,
            ok,
            report_json: "{}".into(),
        };
        c.record_drill(&drill(5, false)).unwrap();
        c.record_drill(&drill(6, true)).unwrap();
        drop(c);

        let c = Cache::open(Some(&p)).unwrap();
        assert_eq!(c.last_verified(&b).unwrap(), Some(200));
        assert_eq!(c.rotation_cycle().unwrap(), Some((43, 2)));
        assert_eq!(c.last_check(false).unwrap(), Some(check(20, false)));
        assert_eq!(c.last_check(true).unwrap(), Some(check(10, true)));
        assert_eq!(c.last_drill(Some(&snap)).unwrap(), Some(drill(6, true)));
        assert_eq!(c.last_drill(None).unwrap(), Some(drill(6, true)));
        assert_eq!(
            c.last_drill(Some(&SnapshotId::from_bytes([8; 32])))
                .unwrap(),
            None
        );
    }
}
