//! Delta compression of a stream against an earlier one (SPEC §6.6): the
//! caller names, per chunk, the earlier chunks that most resemble it.

use std::sync::Arc;

use crate::id::BlobId;

/// Names reference blobs for the chunks of a stream being backed up
/// ([`crate::Backup::delta_source`]). A chunk that is new to the repository
/// is stored as a delta against its references when that is shorter than
/// compressing it alone; the snapshot then also holds the references
/// (`<stream>.references`, SPEC §6.6), so they live as long as it does.
pub trait DeltaSource: Sync {
    /// Up to [`crate::MAX_DELTA_REFS`] data blobs of this repository (id
    /// and plaintext) resembling `chunk`, which starts at byte `offset` of
    /// the stream; empty for none. Called from several threads, in no
    /// particular order.
    fn references(&self, offset: u64, chunk: &[u8]) -> Vec<(BlobId, Arc<Vec<u8>>)>;
}
