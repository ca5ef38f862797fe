//! The local SQLite cache of the merged index (SPEC §12).
//!
//! The cache is disposable: on a schema mismatch or damage it is dropped and
//! rebuilt from the repository's index files, and `check` never trusts it.
//! It keeps lookups off the heap, so the index never has to fit in RAM.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::blob::BlobKind;
use crate::id::{BlobId, PackId};
use crate::pack::{BlobLocation, PackEntry};

/// Bump on any schema change: old caches are dropped and rebuilt.
pub const SCHEMA_VERSION: i64 = 1;

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
";

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

    /// Number of blobs known.
    pub fn blob_count(&self) -> Result<u64, CacheError> {
        Ok(self
            .conn()
            .query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))?)
    }

    /// Forgets everything (before a rebuild).
    pub fn clear(&self) -> Result<(), CacheError> {
        self.conn()
            .execute_batch("DELETE FROM blobs; DELETE FROM packs; DELETE FROM index_files;")?;
        Ok(())
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
}
