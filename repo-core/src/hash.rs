//! Keyed BLAKE3 naming of blobs (SPEC §3.1, §6).

use crate::crypto::MasterKey;
use crate::id::{BlobId, DictId, TreeId};

/// Names blobs with keyed BLAKE3, so ids reveal nothing about plaintext to
/// anyone without the key.
#[derive(Clone)]
pub struct ContentHasher {
    chunk_key: [u8; 32],
    tree_key: [u8; 32],
    dict_key: [u8; 32],
}

impl std::fmt::Debug for ContentHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentHasher(..)")
    }
}

impl ContentHasher {
    /// The hasher of a repository's master key.
    pub fn new(key: &MasterKey) -> Self {
        Self {
            chunk_key: *key.id_key(),
            tree_key: *key.tree_key(),
            dict_key: *key.dict_key(),
        }
    }

    /// A hasher of explicit keys: a repository whose content keys are
    /// another's (SPEC §5) keeps its own dictionary key.
    pub fn with_keys(chunk_key: [u8; 32], tree_key: [u8; 32], dict_key: [u8; 32]) -> Self {
        Self {
            chunk_key,
            tree_key,
            dict_key,
        }
    }

    /// Id of a data chunk.
    pub fn chunk_id(&self, data: &[u8]) -> BlobId {
        BlobId::from_bytes(*blake3::keyed_hash(&self.chunk_key, data).as_bytes())
    }

    /// Id of an encoded tree.
    pub fn tree_id(&self, encoded: &[u8]) -> TreeId {
        TreeId::from_bytes(*blake3::keyed_hash(&self.tree_key, encoded).as_bytes())
    }

    /// Id of a compression dictionary (SPEC §6.4).
    pub fn dict_id(&self, dictionary: &[u8]) -> DictId {
        DictId::from_bytes(*blake3::keyed_hash(&self.dict_key, dictionary).as_bytes())
    }
}
