//! Pack files: many sealed blobs, then an encrypted header, then its length
//! (SPEC §7).
//!
//! ```text
//! magic (8) || version u32 || blob_1 || … || blob_n || sealed header || header_len u32
//! ```
//! A pack is readable without the index, so the index can always be rebuilt.

mod header;
mod writer;

pub use header::{DeltaRefs, PACK_HEADER_AD, PackEntry, PackHeader};
pub(crate) use header::{PACK_ENTRY_LEN, encoded_len as header_len};
pub use writer::{PackWriter, seal_header};

use crate::id::PackId;

/// Where a blob is stored: its pack and its entry there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack holding the blob.
    pub pack: PackId,
    /// The blob's entry in that pack's header.
    pub entry: PackEntry,
}
