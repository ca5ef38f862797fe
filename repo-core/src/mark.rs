//! Prune marks: the packs a prune condemned and has not yet deleted
//! (SPEC §22). Read by prune, repair and backup (which must not adopt a
//! condemned pack), so they live below all three.

use crate::backend::{Backend, ObjectKind};
use crate::blob::{self, BlobError};
use crate::encoding;
use crate::error::{Error, Result};
use crate::format::MARK_MAGIC;
use crate::index::IndexPack;

/// Decrypted body of a mark file (SPEC §22).
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct MarkFile {
    /// Client time of writing (informational; grace uses the storage clock).
    pub created_ns: i64,
    /// Condemned packs with their blobs (for resurrection).
    pub packs: Vec<IndexPack>,
}

impl MarkFile {
    /// The encrypted file.
    pub fn to_file(&self, key: &[u8; 32]) -> Vec<u8> {
        blob::seal_file(&MARK_MAGIC, key, &encoding::encode(self), 3)
    }

    /// Parses a mark file.
    pub fn from_file(key: &[u8; 32], bytes: &[u8]) -> Result<Self, BlobError> {
        let plain = blob::open_file(&MARK_MAGIC, "mark", key, bytes)?;
        Ok(encoding::decode(&plain, "mark")?)
    }
}

/// Every pending mark: name, modification time (storage clock), body.
/// A mark deleted between the listing and its read was swept by a
/// concurrent prune (its packs deleted or indexed first): it is skipped.
pub(crate) fn load_marks(
    backend: &dyn Backend,
    key: &[u8; 32],
) -> Result<Vec<(String, i64, MarkFile)>> {
    let mut out = Vec::new();
    for o in backend.list(ObjectKind::Mark)? {
        let bytes = match backend.read(ObjectKind::Mark, &o.name) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let corrupt = |source| Error::CorruptObject {
            kind: ObjectKind::Mark,
            name: o.name.clone(),
            source,
        };
        let m = MarkFile::from_file(key, &bytes).map_err(corrupt)?;
        out.push((o.name, o.modified_ns, m));
    }
    Ok(out)
}
