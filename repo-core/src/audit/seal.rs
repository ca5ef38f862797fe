//! Every place the audit trail seals or opens something with the
//! repository's data keys, in one file: bodies and the signing key are
//! sealed under the newest epoch, and a rekey re-seals them in place.

use crate::blob::{self, BlobError};
use crate::crypto::DataKeys;

use super::signer::SIGNER_MAGIC;

/// Largest body a record may have after decompression.
const MAX_BODY: usize = 1 << 20;

/// Seals a record body; `name` (the record's name) is the associated data,
/// so a body cannot be moved to another record.
pub fn seal_body(key: &DataKeys, name: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    blob::seal_object(key, &body_ad(name), plaintext, 3)
}

/// Opens a body sealed by [`seal_body`].
pub fn open_body(key: &DataKeys, name: &[u8; 32], sealed: &[u8]) -> Result<Vec<u8>, BlobError> {
    blob::open_object(key, &body_ad(name), sealed, MAX_BODY)
}

pub(super) fn body_ad(name: &[u8; 32]) -> Vec<u8> {
    [&super::file::RECORD_MAGIC[..], &name[..]].concat()
}

/// Seals the signing key's seed.
pub fn seal_signer(key: &DataKeys, seed: &[u8]) -> Vec<u8> {
    blob::seal_file(&SIGNER_MAGIC, key, seed, 0)
}

/// Opens the signing key's seed.
pub fn open_signer(key: &DataKeys, bytes: &[u8]) -> Result<Vec<u8>, BlobError> {
    blob::open_file(&SIGNER_MAGIC, "audit signing key", key, bytes)
}
