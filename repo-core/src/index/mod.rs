//! Index files and the merged index used for lookups (SPEC §8).
//!
//! Index files are written per backup run after their packs are durable. The
//! merged view lives in the SQLite [`Cache`]; blobs packed during this run
//! but not yet written to an index file are held in memory, at most
//! [`MAX_INDEX_ENTRIES`] at a time.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use crate::backend::{Backend, ObjectKind};
use crate::blob::{self, BlobError};
use crate::cache::Cache;
use crate::encoding;
use crate::error::{Error, Result};
use crate::format::INDEX_MAGIC;
use crate::id::{BlobId, IndexId, PackId};
use crate::pack::{BlobLocation, PackEntry};

/// Entries per index file; a backup writes a new file when it has this many
/// pending, which bounds the memory a large backup needs (SPEC §8).
pub const MAX_INDEX_ENTRIES: usize = 65_536;

/// One pack in an index file.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode, serde::Serialize)]
pub struct IndexPack {
    /// The pack.
    pub id: PackId,
    /// Its blobs, as in its header.
    pub entries: Vec<PackEntry>,
}

/// Decrypted body of an index file (SPEC §8).
#[derive(
    Debug, Clone, PartialEq, Eq, Default, bincode::Encode, bincode::Decode, serde::Serialize,
)]
pub struct IndexFile {
    /// Packs described.
    pub packs: Vec<IndexPack>,
    /// Index files this one replaces.
    pub supersedes: Vec<IndexId>,
}

impl IndexFile {
    /// The encrypted file.
    pub fn to_file(&self, key: &[u8; 32]) -> Vec<u8> {
        blob::seal_file(&INDEX_MAGIC, key, &encoding::encode(self), 3)
    }

    /// Parses an index file.
    pub fn from_file(key: &[u8; 32], bytes: &[u8]) -> Result<Self, BlobError> {
        let plain = blob::open_file(&INDEX_MAGIC, "index", key, bytes)?;
        Ok(encoding::decode(&plain, "index")?)
    }

    /// Number of blob entries.
    pub fn entry_count(&self) -> usize {
        self.packs.iter().map(|p| p.entries.len()).sum()
    }
}

/// The merged index: cache plus this session's pending packs.
#[derive(Debug)]
pub struct Index {
    cache: Cache,
    skip_damaged: AtomicBool,
    state: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    /// Blobs some thread of this session has taken on to store.
    claimed: HashSet<BlobId>,
    /// Durable packs not yet named by an index file.
    packs: Vec<(PackId, Vec<PackEntry>)>,
    /// Their blobs, for lookups.
    located: HashMap<BlobId, BlobLocation>,
}

impl Index {
    /// Wraps a cache.
    pub fn new(cache: Cache) -> Self {
        Self {
            cache,
            skip_damaged: AtomicBool::new(false),
            state: Mutex::new(Pending::default()),
        }
    }

    /// Whether `sync` skips damaged index files instead of failing.
    pub fn set_skip_damaged(&self, yes: bool) {
        self.skip_damaged.store(yes, Relaxed);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings the cache up to date with the repository's index files. When
    /// a file the cache merged is gone (replaced by repair or prune), the
    /// cache is rebuilt from scratch. Superseded files are skipped.
    pub fn sync(&self, backend: &dyn Backend, key: &[u8; 32]) -> Result<()> {
        // A file that vanishes between listing and reading was replaced by a
        // prune or repair whose replacement this listing may have missed:
        // list again (a few times at most; each retry means progress elsewhere).
        for _ in 0..3 {
            if !self.sync_once(backend, key)? {
                return Ok(());
            }
        }
        self.sync_once(backend, key).map(|_| ())
    }

    /// One pass of [`Index::sync`]; true if an index file vanished meanwhile.
    fn sync_once(&self, backend: &dyn Backend, key: &[u8; 32]) -> Result<bool> {
        let listed: Vec<String> = backend
            .list(ObjectKind::Index)?
            .into_iter()
            .map(|o| o.name)
            .collect();
        let present: HashSet<&str> = listed.iter().map(String::as_str).collect();
        let mut known = self.cache.index_files()?;
        if known.iter().any(|k| !present.contains(k.as_str())) {
            self.cache.clear()?;
            known.clear();
        }
        let mut files = Vec::new();
        let mut vanished = false;
        for name in listed.iter().filter(|n| !known.contains(*n)) {
            match load_index_file(backend, key, name) {
                Ok(f) => files.push((name.clone(), f)),
                // Not merged, so the next sync tries it again.
                Err(Error::CorruptObject { .. }) if self.skip_damaged.load(Relaxed) => {}
                // Deleted since the listing: a prune or repair replaced it,
                // and its replacement was written first (SPEC §13, §22).
                Err(Error::Backend(e)) if e.is_not_found() => vanished = true,
                Err(e) => return Err(e),
            }
        }
        let superseded: HashSet<IndexId> = files
            .iter()
            .flat_map(|(_, f)| f.supersedes.iter().copied())
            .collect();
        for (name, f) in files {
            let skip = name
                .parse::<IndexId>()
                .map(|id| superseded.contains(&id))
                .unwrap_or(false);
            if !skip {
                let packs: Vec<_> = f.packs.into_iter().map(|p| (p.id, p.entries)).collect();
                self.cache.add_index(&name, &packs)?;
            }
        }
        Ok(vanished)
    }

    /// Where blob `id` is, if known.
    pub fn lookup(&self, id: &BlobId) -> Result<Option<BlobLocation>> {
        if let Some(l) = self.state().located.get(id) {
            return Ok(Some(*l));
        }
        Ok(self.cache.lookup(id)?)
    }

    /// True if the blob is stored or being stored by this session.
    pub fn has(&self, id: &BlobId) -> Result<bool> {
        let st = self.state();
        Ok(st.claimed.contains(id) || self.cache.contains(id)?)
    }

    /// Returns true exactly once per new blob: the caller must then store it.
    /// Another client may have packed this chunk already; the index decides.
    pub fn claim(&self, id: &BlobId) -> Result<bool> {
        let mut st = self.state();
        if st.claimed.contains(id) || self.cache.contains(id)? {
            return Ok(false);
        }
        st.claimed.insert(*id);
        Ok(true)
    }

    /// Records a durable pack; writes an index file when enough are pending.
    pub fn add_pack(
        &self,
        backend: &dyn Backend,
        key: &[u8; 32],
        pack: PackId,
        entries: Vec<PackEntry>,
    ) -> Result<()> {
        let full = {
            let mut st = self.state();
            for e in &entries {
                st.located.insert(e.id, BlobLocation { pack, entry: *e });
            }
            st.packs.push((pack, entries));
            st.located.len() >= MAX_INDEX_ENTRIES
        };
        if full {
            self.flush(backend, key)?;
        }
        Ok(())
    }

    /// Takes on a durable pack that no index file names (left by an
    /// interrupted backup): its blobs count as stored by this session, and
    /// the session's next index file names it (SPEC §15).
    pub fn adopt_pack(
        &self,
        backend: &dyn Backend,
        key: &[u8; 32],
        pack: PackId,
        entries: Vec<PackEntry>,
    ) -> Result<()> {
        self.state().claimed.extend(entries.iter().map(|e| e.id));
        self.add_pack(backend, key, pack, entries)
    }

    /// Writes pending packs to a new index file and merges it into the cache.
    /// SPEC §13: called only after those packs are durable.
    pub fn flush(&self, backend: &dyn Backend, key: &[u8; 32]) -> Result<Option<IndexId>> {
        let packs = std::mem::take(&mut self.state().packs);
        if packs.is_empty() {
            return Ok(None);
        }
        let file = IndexFile {
            packs: packs
                .iter()
                .map(|(id, e)| IndexPack {
                    id: *id,
                    entries: e.clone(),
                })
                .collect(),
            supersedes: Vec::new(),
        };
        let bytes = file.to_file(key);
        let id = IndexId::hash_of(&bytes);
        backend.write(ObjectKind::Index, &id.to_hex(), &bytes)?;
        self.cache.add_index(&id.to_hex(), &packs)?;
        let mut st = self.state();
        for (_, entries) in &packs {
            for e in entries {
                st.located.remove(&e.id);
            }
        }
        Ok(Some(id))
    }

    /// Forgets claims of this session (after a failed run).
    pub fn reset_session(&self) {
        let mut st = self.state();
        st.claimed.clear();
    }

    /// The underlying cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }
}

/// Writes `packs` as index files of at most [`MAX_INDEX_ENTRIES`] entries
/// each (a pack is never split), every file naming `supersedes`.
pub fn write_index_files(
    backend: &dyn Backend,
    key: &[u8; 32],
    packs: &[IndexPack],
    supersedes: &[IndexId],
) -> Result<Vec<IndexId>> {
    let mut written = Vec::new();
    let mut start = 0;
    while start < packs.len() {
        let (mut end, mut n) = (start, 0);
        while end < packs.len() && (n == 0 || n + packs[end].entries.len() <= MAX_INDEX_ENTRIES) {
            n += packs[end].entries.len();
            end += 1;
        }
        let f = IndexFile {
            packs: packs[start..end].to_vec(),
            supersedes: supersedes.to_vec(),
        };
        let bytes = f.to_file(key);
        let id = IndexId::hash_of(&bytes);
        backend.write(ObjectKind::Index, &id.to_hex(), &bytes)?;
        written.push(id);
        start = end;
    }
    Ok(written)
}

/// Reads and decrypts one index file, naming it on failure.
pub fn load_index_file(backend: &dyn Backend, key: &[u8; 32], name: &str) -> Result<IndexFile> {
    let bytes = backend.read(ObjectKind::Index, name)?;
    let corrupt = |source| Error::CorruptObject {
        kind: ObjectKind::Index,
        name: name.to_string(),
        source,
    };
    if IndexId::hash_of(&bytes).to_hex() != name {
        return Err(corrupt(BlobError::HashMismatch));
    }
    IndexFile::from_file(key, &bytes).map_err(corrupt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobKind;
    use crate::crypto::MasterKey;

    #[test]
    fn index_file_round_trip() {
        let k = MasterKey::generate();
        let f = IndexFile {
            packs: vec![IndexPack {
                id: PackId::from_bytes([1; 32]),
                entries: vec![PackEntry {
                    kind: BlobKind::Tree,
                    id: BlobId::from_bytes([2; 32]),
                    offset: 12,
                    length: 50,
                    raw_length: 40,
                }],
            }],
            supersedes: vec![IndexId::from_bytes([3; 32])],
        };
        let bytes = f.to_file(k.data_key());
        assert_eq!(IndexFile::from_file(k.data_key(), &bytes).unwrap(), f);
        assert!(IndexFile::from_file(k.data_key(), &bytes[..bytes.len() - 3]).is_err());
    }
}
