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
    pub fn to_file(&self, key: &crate::crypto::DataKeys) -> Vec<u8> {
        blob::seal_file(&MARK_MAGIC, key, &encoding::encode(self), 3)
    }

    /// Parses a mark file.
    pub fn from_file(key: &crate::crypto::DataKeys, bytes: &[u8]) -> Result<Self, BlobError> {
        let plain = blob::open_file(&MARK_MAGIC, "mark", key, bytes)?;
        Ok(encoding::decode(&plain, "mark")?)
    }
}

/// The pending marks: readable ones (name, modification time by the
/// storage clock, body) and damaged ones (name, modification time, error).
#[derive(Debug, Default)]
pub(crate) struct Marks {
    pub good: Vec<(String, i64, MarkFile)>,
    pub damaged: Vec<(String, i64, Error)>,
}

/// Every pending mark. A mark deleted between the listing and its read was
/// swept by a concurrent prune (its packs deleted or indexed first): it is
/// skipped. A damaged mark is returned apart: readers skip it, which only
/// keeps data (its packs are unindexed, so a later prune condemns them
/// again), and prune deletes it (SPEC §22).
pub(crate) fn load_marks(backend: &dyn Backend, key: &crate::crypto::DataKeys) -> Result<Marks> {
    load_listed_marks(backend, key, backend.list(ObjectKind::Mark)?)
}

/// [`load_marks`] of the marks in `listed` (a backup's walk, SPEC §15).
pub(crate) fn load_listed_marks(
    backend: &dyn Backend,
    key: &crate::crypto::DataKeys,
    listed: Vec<crate::backend::ObjectInfo>,
) -> Result<Marks> {
    let mut out = Marks::default();
    for o in listed {
        let bytes = match backend.read(ObjectKind::Mark, &o.name) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        match MarkFile::from_file(key, &bytes) {
            Ok(m) => out.good.push((o.name, o.modified_ns, m)),
            Err(source) => {
                let e = Error::CorruptObject {
                    kind: ObjectKind::Mark,
                    name: o.name.clone(),
                    source,
                };
                out.damaged.push((o.name, o.modified_ns, e));
            }
        }
    }
    Ok(out)
}
