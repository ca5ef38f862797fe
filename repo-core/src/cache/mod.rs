//! The local SQLite cache of the merged index, and the verification ledger
//! (SPEC §12).
//!
//! The cache is disposable: on a schema mismatch or damage it is dropped and
//! rebuilt from the repository's index files, and `check` never trusts it.
//! The merged index lives in sorted run files next to the database
//! (`runs`); SQLite holds the list of runs and of merged index files, so
//! processes sharing a cache agree on it through SQLite's transactions.
//! Lookups stay off the heap, so the index never has to fit in RAM.
//!
//! The ledger lives in the same file: which packs `check --read-data`
//! verified and when, and the outcome of recent checks and restore drills.
//! It is history, not structure: losing it only means the next rotating
//! check starts over, and nothing in it is ever used to decide whether data
//! is intact.

/// The run files' on-disk format (SPEC §12.1); public for the fuzz targets.
pub mod runs;
mod snapshots;
mod trees;

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::id::{BlobId, PackId, SnapshotId};
use crate::pack::{BlobLocation, PackEntry};

pub use runs::{BLOCK_RECORDS, RECORD_LEN, RUN_MAGIC, RUN_VERSION};

/// Bump on any schema change: old caches are dropped and rebuilt.
pub const SCHEMA_VERSION: i64 = 3;

/// A cache failure (SQLite or file system).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// SQLite failed.
    #[error("local cache: {0}")]
    Sqlite(#[source] SqliteError),
    /// A run file could not be written or read.
    #[error("local cache: {0}")]
    Io(#[from] std::io::Error),
}

/// An error of the SQLite library behind the cache. Opaque, so that the
/// choice of SQLite binding is not part of the public API; its message and
/// `source()` chain are the binding's.
#[derive(Debug)]
pub struct SqliteError(pub(crate) rusqlite::Error);

impl std::fmt::Display for SqliteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SqliteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<rusqlite::Error> for CacheError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(SqliteError(e))
    }
}

/// Marker for "this cache file is from another schema or damaged".
const STALE: rusqlite::Error = rusqlite::Error::InvalidQuery;

impl CacheError {
    /// The file is of another schema version, or SQLite finds it damaged or
    /// not a database: safe to delete and rebuild. Busy or permission errors
    /// are not: another process may be using a good cache.
    fn is_stale(&self) -> bool {
        match self {
            Self::Io(_) => false,
            Self::Sqlite(SqliteError(rusqlite::Error::InvalidQuery)) => true,
            Self::Sqlite(SqliteError(rusqlite::Error::SqliteFailure(e, _))) => {
                matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
                )
            }
            _ => false,
        }
    }
}

/// The index cache of one repository: SQLite for the bookkeeping and the
/// ledger, sorted run files for the blob index.
#[derive(Debug)]
pub struct Cache {
    conn: Mutex<Connection>,
    dir: RunDir,
    /// The open runs, oldest first, as of the last reload.
    live: RwLock<Vec<Arc<runs::Run>>>,
    /// Runs this process had open that another process merged away or
    /// cleared since. They stay searchable (after `live`) for the rest of
    /// the session: what the session once knew must not vanish under it
    /// (SPEC §12.1).
    stale: RwLock<Vec<Arc<runs::Run>>>,
}

/// Creates `dir` and missing parents as 0700, and makes `dir` itself 0700
/// if it exists: the cache holds file paths in plain text (the ledger's
/// check records) and the index of every chunk (SPEC §12).
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// A fresh 0700 directory in `base` (the system's temporary directory if
/// `None`), removed when dropped.
fn private_tempdir(base: Option<&Path>, prefix: &str) -> std::io::Result<tempfile::TempDir> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o700));
    match base {
        Some(base) => b.tempdir_in(base),
        None => b.tempdir(),
    }
}

/// Where run files live: beside the database, or in a private temporary
/// directory for an in-memory cache.
#[derive(Debug)]
enum RunDir {
    Path(PathBuf),
    Temp(tempfile::TempDir),
}

impl RunDir {
    fn path(&self) -> &Path {
        match self {
            Self::Path(p) => p,
            Self::Temp(t) => t.path(),
        }
    }
}

/// A run may be merged into the runs after it while it holds at most this
/// many times their records: run sizes then grow geometrically, so a
/// lookup reads O(log n) runs and a blob is rewritten O(log n) times.
const MERGE_RATIO: u64 = 4;
/// More runs than this are merged whatever their sizes.
const MAX_RUNS: usize = 6;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    records INTEGER NOT NULL
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
CREATE TABLE IF NOT EXISTS trees (
    id BLOB PRIMARY KEY,
    sealed BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot_files (
    id BLOB PRIMARY KEY,
    bytes BLOB NOT NULL
);
";

/// `ledger_meta` key of the location tag the ledger belongs to (SPEC §32).
const LEDGER_LOCATION: &str = "location";
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
    /// Opens (or creates) the cache file at `path`, with its run files in
    /// the directory beside it (`index.sqlite` → `index.runs/`); `None`
    /// keeps the database in memory and the runs in a temporary directory.
    /// A cache of another schema version, or one SQLite finds damaged, is
    /// deleted and created anew.
    pub fn open(path: Option<&Path>) -> Result<Self, CacheError> {
        let (conn, dir) = match path {
            None => (
                Connection::open_in_memory()?,
                RunDir::Temp(private_tempdir(None, "cairn-cache-")?),
            ),
            Some(p) => {
                let dir = p.with_extension("runs");
                let conn = match Self::open_file(p) {
                    Ok(c) => c,
                    Err(e) if e.is_stale() => {
                        for suffix in ["", "-wal", "-shm", "-journal"] {
                            let mut f = p.as_os_str().to_owned();
                            f.push(suffix);
                            let _ = std::fs::remove_file(&f);
                        }
                        let _ = std::fs::remove_dir_all(&dir);
                        Self::open_file(p)?
                    }
                    Err(e) => return Err(e),
                };
                private_dir(&dir)?;
                (conn, RunDir::Path(dir))
            }
        };
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        let cache = Self {
            conn: Mutex::new(conn),
            dir,
            live: RwLock::new(Vec::new()),
            stale: RwLock::new(Vec::new()),
        };
        cache.reload()?;
        Ok(cache)
    }

    /// A fresh private directory for one command's scratch files (the
    /// sort runs of `check`, SPEC §12), beside the run directory
    /// (`index.scratch/check-XXXXXX/`), removed when the handle drops. The
    /// data set is as large as the index, so it goes on the cache's disk,
    /// not into a RAM-backed temp dir.
    pub(crate) fn scratch_dir(&self) -> Result<tempfile::TempDir, CacheError> {
        let base = match &self.dir {
            RunDir::Path(p) => p.with_extension("scratch"),
            RunDir::Temp(t) => t.path().join("scratch"),
        };
        private_dir(&base)?;
        Ok(private_tempdir(Some(&base), "check-")?)
    }

    fn open_file(p: &Path) -> Result<Connection, CacheError> {
        if let Some(dir) = p.parent() {
            let _ = private_dir(dir);
        }
        // SQLite creates files 0644 and gives its -wal and -shm files the
        // database's mode: make the database the owner's before it does.
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(p)
            .and_then(|f| f.set_permissions(std::fs::Permissions::from_mode(0o600)));
        for suffix in ["-wal", "-shm"] {
            let mut f = p.as_os_str().to_owned();
            f.push(suffix);
            let _ = std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600));
        }
        let conn = Connection::open(p)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let has_tables: i64 =
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if has_tables > 0 && v != SCHEMA_VERSION {
            return Err(CacheError::from(STALE));
        }
        // No integrity scan here: it reads the whole file on every command.
        // A damaged file shows up as NotADatabase/DatabaseCorrupt instead,
        // and `check` never trusts the cache anyway.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "cache_size", -4096)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(conn)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<runs::Run>>> {
        self.live.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the runs the database lists, keeping those already open. A run
    /// that cannot be opened may have just been merged away by another
    /// process: the list is read again, up to three times, and then the
    /// merged index is cleared, to be rebuilt from the repository.
    pub fn reload(&self) -> Result<(), CacheError> {
        for _ in 0..3 {
            if self.try_reload()? {
                return Ok(());
            }
        }
        if !self.try_reload()? {
            self.clear()?;
        }
        Ok(())
    }

    fn try_reload(&self) -> Result<bool, CacheError> {
        let names: Vec<String> = {
            let c = self.conn();
            let mut st = c.prepare_cached("SELECT name FROM runs ORDER BY seq, name")?;
            st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        let mut open = Vec::with_capacity(names.len());
        {
            let live = self.live();
            for n in &names {
                match live.iter().find(|r| r.name() == n) {
                    Some(r) => open.push(Arc::clone(r)),
                    None => match runs::Run::open(self.dir.path(), n) {
                        Ok(r) => open.push(Arc::new(r)),
                        Err(_) => return Ok(false),
                    },
                }
            }
        }
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        let gone = live.iter().filter(|r| !names.iter().any(|n| n == r.name()));
        let gone: Vec<_> = gone.cloned().collect();
        self.stale
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .extend(gone);
        *live = open;
        Ok(true)
    }

    /// Names of the index files already merged into the cache.
    pub fn index_files(&self) -> Result<HashSet<String>, CacheError> {
        let c = self.conn();
        let mut st = c.prepare("SELECT name FROM index_files")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Merges one index file's packs.
    pub fn add_index(
        &self,
        name: &str,
        packs: &[(PackId, Vec<PackEntry>)],
    ) -> Result<(), CacheError> {
        self.add_indexes(&[name.to_string()], packs)
    }

    /// Merges the packs of the index files `names` as one new run, and
    /// records the names, in one transaction. Runs are not merged with
    /// each other here: call [`Cache::compact`] after a batch of these.
    pub fn add_indexes(
        &self,
        names: &[String],
        packs: &[(PackId, Vec<PackEntry>)],
    ) -> Result<(), CacheError> {
        let run = if packs.iter().any(|p| !p.1.is_empty()) {
            Some(runs::build(self.dir.path(), packs)?)
        } else {
            None
        };
        {
            let mut c = self.conn();
            let tx = write_tx(&mut c)?;
            if let Some((run, records)) = &run {
                tx.execute(
                    "INSERT INTO runs (name, seq, records) \
                     VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM runs), ?2)",
                    params![run, to_i64(*records)],
                )?;
            }
            for n in names {
                tx.execute(
                    "INSERT OR IGNORE INTO index_files (name) VALUES (?1)",
                    params![n],
                )?;
            }
            tx.commit()?;
        }
        self.reload()
    }

    /// Merges runs until their sizes grow geometrically (each run holds
    /// more than `MERGE_RATIO` times the records of all newer ones) and
    /// there are at most `MAX_RUNS`. The newest runs that break the rule
    /// are merged in one streaming pass.
    pub fn compact(&self) -> Result<(), CacheError> {
        loop {
            let live: Vec<Arc<runs::Run>> = self.live().clone();
            let n = live.len();
            if n < 2 {
                return Ok(());
            }
            let mut from = n - 1;
            let mut newer = live[n - 1].records();
            while from > 0
                && (live[from - 1].records() <= MERGE_RATIO * newer || from + 1 > MAX_RUNS)
            {
                from -= 1;
                newer += live[from].records();
            }
            if from == n - 1 {
                return Ok(());
            }
            let parts: Vec<&runs::Run> = live[from..].iter().map(|r| &**r).collect();
            let (merged, records) = runs::merge(self.dir.path(), &parts)?;
            let replaced = {
                let mut c = self.conn();
                let tx = write_tx(&mut c)?;
                let mut present = 0;
                for r in &parts {
                    present += tx.execute("DELETE FROM runs WHERE name = ?1", params![r.name()])?;
                }
                if present == parts.len() {
                    // The parts were the newest runs, so the merged run is too.
                    tx.execute(
                        "INSERT INTO runs (name, seq, records) \
                         VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM runs), ?2)",
                        params![merged, to_i64(records)],
                    )?;
                    tx.commit()?;
                    true
                } else {
                    // Another process merged or cleared these runs first.
                    false
                }
            };
            if replaced {
                // Merged away by this process: not stale, just gone.
                self.live
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|r| parts.iter().all(|p| p.name() != r.name()));
                for r in &parts {
                    let _ = std::fs::remove_file(self.dir.path().join(r.name()));
                }
            } else {
                let _ = std::fs::remove_file(self.dir.path().join(&merged));
            }
            self.reload()?;
            if !replaced {
                return Ok(());
            }
        }
    }

    fn find(&self, id: &BlobId) -> Result<Option<(Arc<runs::Run>, runs::Record)>, CacheError> {
        for run in self.live().iter().rev() {
            if let Some(r) = run.find(id.as_bytes())? {
                return Ok(Some((Arc::clone(run), r)));
            }
        }
        for run in self
            .stale
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .rev()
        {
            if let Some(r) = run.find(id.as_bytes())? {
                return Ok(Some((Arc::clone(run), r)));
            }
        }
        Ok(None)
    }

    /// Where blob `id` is stored, if any merged index knows it.
    pub fn lookup(&self, id: &BlobId) -> Result<Option<BlobLocation>, CacheError> {
        let Some((run, rec)) = self.find(id)? else {
            return Ok(None);
        };
        let Some(entry) = rec.entry() else {
            return Ok(None);
        };
        Ok(Some(BlobLocation {
            pack: run.pack(rec.pack_no)?,
            entry,
        }))
    }

    /// True if blob `id` is in a merged index.
    pub fn contains(&self, id: &BlobId) -> Result<bool, CacheError> {
        Ok(self.find(id)?.is_some())
    }

    /// Number of blob records in the runs (a blob merged from two index
    /// files may count twice until its runs are merged).
    pub fn blob_count(&self) -> Result<u64, CacheError> {
        Ok(self.live().iter().map(|r| r.records()).sum())
    }

    /// Every pack a merged index file names (read from the runs' pack
    /// tables: about 50 bytes of memory per pack while the set lives).
    pub fn pack_ids(&self) -> Result<HashSet<PackId>, CacheError> {
        let mut out = HashSet::new();
        let live = self.live();
        let stale = self.stale.read().unwrap_or_else(|e| e.into_inner());
        for run in live.iter().chain(stale.iter()) {
            run.for_each_pack(|p| {
                out.insert(p);
            })?;
        }
        Ok(out)
    }

    /// Number of runs, and bytes of memory their fences hold.
    pub fn run_stats(&self) -> (usize, usize) {
        let live = self.live();
        (live.len(), live.iter().map(|r| r.memory()).sum())
    }

    /// Forgets the merged index (before a rebuild). The ledger stays: a
    /// verified pack stays verified when the index files around it change.
    pub fn clear(&self) -> Result<(), CacheError> {
        let names: Vec<String> = {
            let mut c = self.conn();
            let tx = write_tx(&mut c)?;
            let names = {
                let mut st = tx.prepare("SELECT name FROM runs")?;
                st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
            };
            tx.execute_batch("DELETE FROM runs; DELETE FROM index_files;")?;
            tx.commit()?;
            names
        };
        // Processes that have these runs open keep reading them until they
        // reload; the names are gone from the list, so nobody opens them anew.
        for n in names {
            let _ = std::fs::remove_file(self.dir.path().join(n));
        }
        self.live.write().unwrap_or_else(|e| e.into_inner()).clear();
        self.stale
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
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
        let tx = write_tx(&mut c)?;
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

    /// Makes the ledger belong to the storage location tagged `tag` (SPEC
    /// §32): a ledger filled at another location (a byte copy of the
    /// repository elsewhere) or by a version that did not tag it is
    /// emptied first, so no check skips a pack on the strength of a read
    /// made somewhere else. Returns whether the ledger was kept.
    pub fn claim_ledger(&self, tag: i64) -> Result<bool, CacheError> {
        let mut c = self.conn();
        let tx = write_tx(&mut c)?;
        let held: Option<i64> = tx
            .query_row(
                "SELECT value FROM ledger_meta WHERE key = ?1",
                params![LEDGER_LOCATION],
                |r| r.get(0),
            )
            .optional()?;
        if held == Some(tag) {
            return Ok(true);
        }
        tx.execute_batch(
            "DELETE FROM verified_packs; DELETE FROM ledger_meta; \
             DELETE FROM check_runs; DELETE FROM drills;",
        )?;
        tx.execute(
            "INSERT INTO ledger_meta (key, value) VALUES (?1, ?2)",
            params![LEDGER_LOCATION, tag],
        )?;
        tx.commit()?;
        Ok(false)
    }

    /// Stores the rotation cycle: its start and its number of runs so far.
    pub fn set_rotation_cycle(&self, start_ns: i64, runs: u64) -> Result<(), CacheError> {
        let mut c = self.conn();
        let tx = write_tx(&mut c)?;
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

/// A transaction that takes the write lock at its start, waiting for it
/// (the busy timeout): a deferred one that reads first fails at once with
/// "database is locked" when another process committed meanwhile (WAL
/// mode cannot upgrade a stale read snapshot), which processes sharing a
/// cache (a prune beside backups) meet.
fn write_tx(c: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    c.transaction_with_behavior(TransactionBehavior::Immediate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobKind;

    fn entries(seed: u8, n: u32) -> Vec<PackEntry> {
        (0..n)
            .map(|i| {
                let mut id = *blake3::hash(&[seed, (i >> 8) as u8, i as u8]).as_bytes();
                id[31] = seed;
                PackEntry {
                    kind: BlobKind::Data,
                    id: BlobId::from_bytes(id),
                    offset: i,
                    length: 10,
                    raw_length: 9,
                }
            })
            .collect()
    }

    /// Two handles on one cache (two processes: a prune beside a backup)
    /// clearing and merging at once never fail with "database is locked":
    /// a transaction that reads before it writes takes the write lock first.
    #[test]
    fn handles_sharing_a_cache_clear_and_merge_at_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("index.sqlite");
        drop(Cache::open(Some(&p)).unwrap());
        std::thread::scope(|s| {
            for t in 0..2u8 {
                let p = &p;
                s.spawn(move || {
                    let c = Cache::open(Some(p)).unwrap();
                    for i in 0..150u8 {
                        let pack = PackId::from_bytes([t * 100 + i % 100; 32]);
                        c.add_index(&format!("i{t}-{i}"), &[(pack, entries(t, 3))])
                            .unwrap_or_else(|e| panic!("add {t}/{i}: {e}"));
                        if i % 3 == 0 {
                            c.clear().unwrap_or_else(|e| panic!("clear {t}/{i}: {e}"));
                        }
                        c.claim_ledger(i64::from(i % 2))
                            .unwrap_or_else(|e| panic!("claim {t}/{i}: {e}"));
                    }
                });
            }
        });
    }

    /// The cache is the owner's alone: its database (plain-text paths in
    /// the ledger), run files and scratch directories, on disk or temporary.
    #[test]
    fn cache_files_are_0600_and_directories_0700() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cairn/repo-id/index.sqlite");
        let c = Cache::open(Some(&p)).unwrap();
        c.add_index("i1", &[(PackId::from_bytes([1; 32]), entries(1, 10))])
            .unwrap();
        assert_eq!(mode(&d.path().join("cairn")), 0o700);
        assert_eq!(mode(&d.path().join("cairn/repo-id")), 0o700);
        assert_eq!(mode(&d.path().join("cairn/repo-id/index.runs")), 0o700);
        for f in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
            assert_eq!(mode(&d.path().join("cairn/repo-id").join(f)), 0o600, "{f}");
        }
        let s = c.scratch_dir().unwrap();
        assert_eq!(mode(s.path()), 0o700);
        assert_eq!(mode(s.path().parent().unwrap()), 0o700);

        // A cache made by an older version with the umask's modes is
        // narrowed when opened.
        drop((c, s));
        let db = d.path().join("cairn/repo-id/index.sqlite");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let runs = d.path().join("cairn/repo-id/index.runs");
        std::fs::set_permissions(&runs, std::fs::Permissions::from_mode(0o755)).unwrap();
        let _c = Cache::open(Some(&p)).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&runs), 0o700);

        // --no-cache: a private temporary directory.
        let mem = Cache::open(None).unwrap();
        assert_eq!(mode(mem.dir.path()), 0o700);
    }

    #[test]
    fn runs_stay_few_and_every_blob_stays_findable_as_indexes_arrive() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.sqlite");
        let c = Cache::open(Some(&p)).unwrap();
        let mut all = Vec::new();
        for i in 0..40u8 {
            let pack = PackId::from_bytes([i; 32]);
            let e = entries(i, 50 + u32::from(i) * 7);
            c.add_index(&format!("i{i}"), &[(pack, e.clone())]).unwrap();
            c.compact().unwrap();
            all.extend(e.into_iter().map(|e| (pack, e)));
            let (runs, _) = c.run_stats();
            assert!(runs <= MAX_RUNS, "{runs} runs after {i} merges");
        }
        assert_eq!(c.blob_count().unwrap(), all.len() as u64);
        // A second handle on the same files (another process) sees it all,
        // and keeps working after the first merges runs away under it.
        let other = Cache::open(Some(&p)).unwrap();
        c.add_index("big", &[(PackId::from_bytes([99; 32]), entries(99, 5000))])
            .unwrap();
        c.compact().unwrap();
        assert_eq!(c.run_stats().0, 1, "a big new run absorbs the small ones");
        for (pack, e) in &all {
            let want = Some(BlobLocation {
                pack: *pack,
                entry: *e,
            });
            assert_eq!(c.lookup(&e.id).unwrap(), want);
            // The other handle still reads its open (now unlinked) runs...
            assert_eq!(other.lookup(&e.id).unwrap(), want);
        }
        // ...and after a reload, the merged one.
        other.reload().unwrap();
        assert_eq!(other.run_stats().0, 1);
        assert!(other.contains(&entries(99, 5000)[4999].id).unwrap());
        assert!(!other.contains(&BlobId::from_bytes([0xee; 32])).unwrap());
    }

    #[test]
    fn a_lost_run_file_clears_the_merged_index_for_a_rebuild() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.sqlite");
        let c = Cache::open(Some(&p)).unwrap();
        c.add_index("i1", &[(PackId::from_bytes([1; 32]), entries(1, 10))])
            .unwrap();
        drop(c);
        for f in std::fs::read_dir(d.path().join("c.runs")).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        let c = Cache::open(Some(&p)).unwrap();
        assert_eq!(c.blob_count().unwrap(), 0);
        assert!(
            c.index_files().unwrap().is_empty(),
            "so sync merges i1 again"
        );
    }

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

    /// A ledger filled at one location is emptied when another claims it
    /// (SPEC §32.3), and kept when the same one does.
    #[test]
    fn ledger_belongs_to_one_location() {
        let c = Cache::open(None).unwrap();
        let p = PackId::from_bytes([7; 32]);
        assert!(!c.claim_ledger(1).unwrap(), "an untagged ledger is emptied");
        c.record_verified(&p, 100).unwrap();
        c.set_rotation_cycle(5, 2).unwrap();
        assert!(c.claim_ledger(1).unwrap());
        assert_eq!(c.last_verified(&p).unwrap(), Some(100));
        assert!(!c.claim_ledger(2).unwrap());
        assert_eq!(c.last_verified(&p).unwrap(), None);
        assert_eq!(c.rotation_cycle().unwrap(), None);
        assert!(c.claim_ledger(2).unwrap());
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
