//! Delta-compressed blobs (SPEC §6.6): resolving their references when a
//! blob is opened, and finding every blob a stream needs to be decoded.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::blob::{self, BlobKind};
use crate::compress::{self, DictRef, Dictionary, DictionarySource};
use crate::error::{Error, Result};
use crate::format::FormatError;
use crate::id::BlobId;

use super::Repository;

/// A reader follows at most this many delta references in a row (SPEC
/// §6.6): a longer chain, or a cycle, is malformed.
pub const MAX_DELTA_DEPTH: u32 = 16;

thread_local! {
    // References being resolved on this thread, nested.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// What opening a blob of this repository may need: its dictionaries and
/// the plaintext of the data blobs a delta payload names.
pub(crate) struct BlobSources<'a> {
    pub(super) repo: &'a Repository,
}

impl DictionarySource for BlobSources<'_> {
    fn dictionary(&self, r: DictRef) -> std::result::Result<Arc<Dictionary>, FormatError> {
        self.repo.dicts.dictionary(r)
    }

    fn reference(&self, id: &BlobId) -> std::result::Result<Vec<u8>, FormatError> {
        let depth = DEPTH.get();
        let fail = |reason: String| FormatError::Malformed {
            what: "delta reference",
            reason: format!("{}: {reason}", id.short()),
        };
        if !self.repo.config().dictionaries() {
            return Err(fail(
                "delta blobs do not occur in a version-1 repository".into(),
            ));
        }
        if depth >= MAX_DELTA_DEPTH {
            return Err(fail(format!(
                "more than {MAX_DELTA_DEPTH} references in a row"
            )));
        }
        DEPTH.set(depth + 1);
        let r = self
            .repo
            .locate_data(id)
            .and_then(|loc| self.repo.read_blob_at(&loc));
        DEPTH.set(depth);
        r.map_err(|e| fail(e.to_string()))
    }
}

impl Repository {
    /// The sources every blob of this repository is opened with.
    pub(crate) fn blob_sources(&self) -> BlobSources<'_> {
        BlobSources { repo: self }
    }

    /// The references (SPEC §6.6) of stored data blob `id`, read from its
    /// payload's header without decompressing: empty unless it is a delta.
    fn stored_references(&self, id: &BlobId) -> Result<Vec<BlobId>> {
        let loc = self.locate_data(id)?;
        let e = &loc.entry;
        let sealed = self.backend.read_range(
            crate::backend::ObjectKind::Pack,
            &loc.pack.to_hex(),
            u64::from(e.offset),
            e.length,
        )?;
        let (payload, _) = self
            .data_keys()
            .open(&blob::blob_ad(BlobKind::Data, id), &sealed)
            .map_err(|err| self.blob_error(loc.pack, id, err.into()))?;
        match payload.split_first() {
            Some((&compress::MARKER_ZSTD_DELTA, rest)) => Ok(compress::delta_references(rest)
                .map_err(|err| self.blob_error(loc.pack, id, err.into()))?
                .0),
            _ => Ok(Vec::new()),
        }
    }

    /// The blobs outside `content` that decoding `content` needs, with
    /// their lengths: the references of its delta blobs, theirs, and so on
    /// (SPEC §6.6). `fresh` gives the references of blobs this process has
    /// just stored (not indexed yet); all others are read.
    pub(crate) fn delta_closure(
        &self,
        content: &[BlobId],
        fresh: &HashMap<BlobId, Vec<BlobId>>,
    ) -> Result<Vec<(BlobId, u64)>> {
        let inside: BTreeSet<BlobId> = content.iter().copied().collect();
        let mut seen = inside.clone();
        let mut todo: Vec<BlobId> = inside.iter().copied().collect();
        let mut outside = BTreeSet::new();
        let mut depth = 0;
        while !todo.is_empty() {
            depth += 1;
            if depth > MAX_DELTA_DEPTH + 1 {
                return Err(Error::InvalidArgument(format!(
                    "delta references nest deeper than {MAX_DELTA_DEPTH}"
                )));
            }
            let mut next = Vec::new();
            for id in todo {
                let refs = match fresh.get(&id) {
                    Some(r) => r.clone(),
                    None => self.stored_references(&id)?,
                };
                for r in refs {
                    if seen.insert(r) {
                        outside.insert(r);
                        next.push(r);
                    }
                }
            }
            todo = next;
        }
        outside
            .into_iter()
            .map(|id| Ok((id, u64::from(self.locate_data(&id)?.entry.raw_length))))
            .collect()
    }
}
