//! Engine internals for cairn's own tests, benches, fuzz targets and CLI
//! (feature `unstable`).
//!
//! **No stability promise:** anything here may change or disappear in any
//! release. It exists so the workspace can test the format byte for byte and
//! simulate damage. Library users should use only the items re-exported at
//! the crate root.
#![allow(missing_docs)]

use crate::backend::{MemoryBackend, ObjectKind};
use crate::blob::BlobError;
use crate::chunker::Chunker;
use crate::config::Config;
use crate::crypto::{CryptoError, DataKeys, KdfParams};
use crate::dict::Dictionaries;
use crate::error::Result;
use crate::hash::ContentHasher;
use crate::id::{BlobId, IndexId, PackId};
use crate::index::{Index, IndexFile, IndexPack};
use crate::pack::{BlobLocation, PackEntry, PackHeader};
use crate::prune::{PrunePlan, PruneStep, PruneSummary};
use crate::repository::Repository;
use crate::snapshot::Snapshot;

macro_rules! door {
    ($($m:ident),*) => { $(
        pub mod $m {
            pub use crate::$m::*;
        }
    )* };
}
door!(
    audit, backend, backup, blob, cache, check, chunker, compress, config, crypto, dict, encoding,
    error, forget, format, hash, id, index, inspect, keys, lock, mark, pack, pattern, progress,
    prune, rekey, repair, repository, restore, snapshot, tree, unattended, wal, warning
);

/// The repository's engine handles, for tests that inspect or damage them.
pub trait RepositoryInternals {
    fn config(&self) -> &Config;
    /// The master key (tests keep a copy to show what it no longer opens).
    fn master_key(&self) -> &crate::crypto::MasterKey;
    fn hasher(&self) -> &ContentHasher;
    fn dictionaries(&self) -> &Dictionaries;
    fn refresh_index(&self) -> Result<()>;
    fn index(&self) -> &Index;
    fn chunker(&self, profile: u8) -> Result<Chunker>;
    fn locate(&self, id: &BlobId) -> Result<BlobLocation>;
    fn read_blob_at(&self, loc: &BlobLocation) -> Result<Vec<u8>>;
    fn stored_payload(&self, id: &BlobId) -> Result<Vec<u8>>;
    fn pack_ends(&self, entries: &[PackEntry]) -> (Vec<u8>, Vec<u8>);
    fn read_pack_header(&self, pack: &PackId) -> Result<PackHeader>;
    fn load_index(&self, id: &IndexId) -> Result<IndexFile>;
    fn write_index(&self, packs: &[IndexPack]) -> Result<Vec<IndexId>>;
    fn referenced_blobs(&self) -> Result<std::collections::HashSet<BlobId>>;
    fn prune_until(&self, plan: PrunePlan, stop: Option<PruneStep>) -> Result<PruneSummary>;
}

impl RepositoryInternals for Repository {
    fn config(&self) -> &Config {
        Repository::config(self)
    }
    fn master_key(&self) -> &crate::crypto::MasterKey {
        Repository::master_key(self)
    }
    fn hasher(&self) -> &ContentHasher {
        Repository::hasher(self)
    }
    fn dictionaries(&self) -> &Dictionaries {
        Repository::dictionaries(self)
    }
    fn refresh_index(&self) -> Result<()> {
        Repository::refresh_index(self)
    }
    fn index(&self) -> &Index {
        Repository::index(self)
    }
    fn chunker(&self, profile: u8) -> Result<Chunker> {
        Repository::chunker(self, profile)
    }
    fn locate(&self, id: &BlobId) -> Result<BlobLocation> {
        Repository::locate(self, id)
    }
    fn read_blob_at(&self, loc: &BlobLocation) -> Result<Vec<u8>> {
        Repository::read_blob_at(self, loc)
    }
    fn stored_payload(&self, id: &BlobId) -> Result<Vec<u8>> {
        Repository::stored_payload(self, id)
    }
    fn pack_ends(&self, entries: &[PackEntry]) -> (Vec<u8>, Vec<u8>) {
        Repository::pack_ends(self, entries)
    }
    fn read_pack_header(&self, pack: &PackId) -> Result<PackHeader> {
        Repository::read_pack_header(self, pack)
    }
    fn load_index(&self, id: &IndexId) -> Result<IndexFile> {
        Repository::load_index(self, id)
    }
    fn write_index(&self, packs: &[IndexPack]) -> Result<Vec<IndexId>> {
        Repository::write_index(self, packs)
    }
    fn referenced_blobs(&self) -> Result<std::collections::HashSet<BlobId>> {
        Repository::referenced_blobs(self)
    }
    fn prune_until(&self, plan: PrunePlan, stop: Option<PruneStep>) -> Result<PruneSummary> {
        Repository::prune_until(self, plan, stop)
    }
}

/// Snapshot files with explicit keys, for golden vectors and fuzz targets.
pub trait SnapshotFile: Sized {
    fn to_file(&self, key: &DataKeys) -> Vec<u8>;
    fn from_file(key: &DataKeys, bytes: &[u8]) -> std::result::Result<Self, BlobError>;
}

impl SnapshotFile for Snapshot {
    fn to_file(&self, key: &DataKeys) -> Vec<u8> {
        Snapshot::to_file(self, key)
    }
    fn from_file(key: &DataKeys, bytes: &[u8]) -> std::result::Result<Self, BlobError> {
        Snapshot::from_file(key, bytes)
    }
}

/// The raw key-encryption key, for golden vectors.
pub trait KdfDerive {
    fn derive(
        &self,
        password: &[u8],
        salt: &[u8],
    ) -> std::result::Result<zeroize::Zeroizing<[u8; 32]>, CryptoError>;
}

impl KdfDerive for KdfParams {
    fn derive(
        &self,
        password: &[u8],
        salt: &[u8],
    ) -> std::result::Result<zeroize::Zeroizing<[u8; 32]>, CryptoError> {
        KdfParams::derive(self, password, salt)
    }
}

/// Test-only damage to a [`MemoryBackend`].
pub trait MemoryBackendInternals {
    /// Replaces an object's bytes, to simulate corruption.
    fn corrupt(&self, kind: ObjectKind, name: &str, data: Vec<u8>);
}

impl MemoryBackendInternals for MemoryBackend {
    fn corrupt(&self, kind: ObjectKind, name: &str, data: Vec<u8>) {
        MemoryBackend::corrupt(self, kind, name, data)
    }
}
