//! Sealed tree blobs a backup wrote or read, kept in the on-disk cache so
//! that the next backup compares with its parent snapshot without reading
//! the parent's trees from the storage again: one round trip per
//! directory on a network (SPEC §12). The bytes are sealed as in a pack, and
//! whoever uses them opens and verifies them as if read from the pack; the
//! cache never says whether a tree exists (the index does).

use rusqlite::{OptionalExtension, params};

use super::{Cache, CacheError, RunDir};
use crate::id::BlobId;

impl Cache {
    /// True when the cache is on disk: an in-memory cache keeps no trees,
    /// so that a `--no-cache` command's memory does not grow with them.
    fn keeps_trees(&self) -> bool {
        matches!(self.dir, RunDir::Path(_))
    }

    /// The sealed tree blob `id`, if cached.
    pub fn tree(&self, id: &BlobId) -> Result<Option<Vec<u8>>, CacheError> {
        if !self.keeps_trees() {
            return Ok(None);
        }
        Ok(self
            .conn()
            .query_row(
                "SELECT sealed FROM trees WHERE id = ?1",
                params![id.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Keeps the sealed tree blob `id` (first copy wins).
    pub fn put_tree(&self, id: &BlobId, sealed: &[u8]) -> Result<(), CacheError> {
        if !self.keeps_trees() {
            return Ok(());
        }
        self.conn().execute(
            "INSERT OR IGNORE INTO trees (id, sealed) VALUES (?1, ?2)",
            params![id.as_bytes().as_slice(), sealed],
        )?;
        Ok(())
    }
}
