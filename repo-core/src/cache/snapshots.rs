//! Snapshot files a backup read while looking for its parent, kept in the
//! on-disk cache: they never change (each is named by the hash of its
//! bytes), and reading every one from the storage at every backup costs a
//! round trip per snapshot on a network (SPEC §12). Whoever uses the bytes
//! checks them against the name first; the cache never says whether a
//! snapshot exists (the storage's listing does).

use rusqlite::{OptionalExtension, params};

use super::{Cache, CacheError, RunDir};
use crate::id::SnapshotId;

impl Cache {
    /// The snapshot file `id`, as stored, if cached.
    pub fn snapshot_file(&self, id: &SnapshotId) -> Result<Option<Vec<u8>>, CacheError> {
        if !matches!(self.dir, RunDir::Path(_)) {
            return Ok(None);
        }
        Ok(self
            .conn()
            .query_row(
                "SELECT bytes FROM snapshot_files WHERE id = ?1",
                params![id.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Keeps the snapshot file `id` (first copy wins).
    pub fn put_snapshot_file(&self, id: &SnapshotId, bytes: &[u8]) -> Result<(), CacheError> {
        if !matches!(self.dir, RunDir::Path(_)) {
            return Ok(());
        }
        self.conn().execute(
            "INSERT OR IGNORE INTO snapshot_files (id, bytes) VALUES (?1, ?2)",
            params![id.as_bytes().as_slice(), bytes],
        )?;
        Ok(())
    }
}
