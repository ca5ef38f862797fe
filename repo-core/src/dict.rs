//! Per-repository zstd dictionaries for small blobs (SPEC §6.4).
//!
//! Small files compress badly on their own: zstd has no history to match
//! against. A dictionary trained once from a repository's first small blobs
//! gives every later small blob that history. It is stored as an encrypted
//! object `dicts/<DictId>`:
//!
//! `prefix(CAIRNDC\x1a, 2) || seal(data_key, AD = prefix, marker || dictionary)`
//!
//! and a blob compressed with it carries marker 2 and the first 8 bytes of
//! its id. Dictionaries are never rewritten or pruned: a kept blob may need
//! one forever, and one costs about 100 KiB.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::backend::{Backend, ObjectKind};
use crate::blob::{self, BlobError};
use crate::compress::{DictRef, Dictionary, DictionarySource};
use crate::format::{DICT_MAGIC, DICTIONARY_VERSION, FormatError, MAX_DICT_SIZE};
use crate::hash::ContentHasher;
use crate::id::DictId;

/// Data blobs up to this size are compressed with the dictionary. Measured
/// with `zstd -3` and a 112 KiB dictionary trained on the benchmark corpus's
/// small files, on held-out pieces of them (README, Performance): the
/// dictionary saves 28 % at 2 KiB, 18 % at 32 KiB, 9 % at 128 KiB and 4 % at
/// 256 KiB. 128 KiB is also where plain compression switches to a longer
/// minimum match (`compress::LONG_INPUT`); larger blobs are rare outside
/// default-profile chunks (≥ 512 KiB), which have their own history.
pub const SMALL_BLOB_MAX: usize = 128 << 10;
/// Size the trainer aims for. Measured with `zstd -3` on 600 held-out small
/// files of the benchmark corpus: no dictionary 43.2 % of their size, a
/// 64 KiB one 34.7 %, 112 KiB 34.4 %.
pub const TARGET_SIZE: usize = 112 << 10;
/// Bytes of small blobs collected before training. The trainer is single
/// threaded and runs while other workers wait with their small blobs.
/// Measured with the zstd CLI's trainer on the benchmark corpus's small
/// files: 4.5 MB of samples train in 0.55 s of CPU, 15 MB in 2.2 s, and the
/// larger sample compresses held-out files only 0.7 % better.
pub const TRAIN_BYTES: usize = 4 << 20;
/// Fewest small blobs worth training on. A backup with fewer stores them
/// without a dictionary and leaves the training to a later backup.
pub const MIN_SAMPLES: usize = 64;
/// zstd's dictionary magic (RFC 8878 §5), little-endian at offset 0.
const ZSTD_DICT_MAGIC: u32 = 0xEC30_A437;

/// Trains a dictionary on `samples` with zstd's fastCover trainer
/// (`ZDICT_trainFromBuffer`: d = 8, k optimized in 4 steps). `None` when
/// zstd finds nothing worth keeping.
pub fn train(samples: &[&[u8]]) -> Option<Vec<u8>> {
    let total: usize = samples.iter().map(|s| s.len()).sum();
    if samples.len() < MIN_SAMPLES {
        return None;
    }
    // Never more dictionary than a tenth of the samples: past that the
    // trainer only copies samples in.
    let size = TARGET_SIZE.min(total / 10).max(1 << 10);
    let mut flat = Vec::with_capacity(total);
    let sizes: Vec<usize> = samples
        .iter()
        .map(|s| {
            flat.extend_from_slice(s);
            s.len()
        })
        .collect();
    let d = zstd::dict::from_continuous(&flat, &sizes, size).ok()?;
    validate(&d).ok()?;
    Some(d)
}

/// Checks that `bytes` is a zstd dictionary that zstd accepts: the magic,
/// a nonzero dictionary id, and entropy tables it can load.
pub fn validate(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() > MAX_DICT_SIZE {
        return Err(format!(
            "{} bytes, over the limit {MAX_DICT_SIZE}",
            bytes.len()
        ));
    }
    let magic = bytes
        .first_chunk::<4>()
        .map(|m| u32::from_le_bytes(*m))
        .ok_or("shorter than its magic")?;
    if magic != ZSTD_DICT_MAGIC {
        return Err("not a zstd dictionary (bad magic)".into());
    }
    if zstd::zstd_safe::get_dict_id_from_dict(bytes).is_none() {
        return Err("zstd dictionary without an id".into());
    }
    zstd::bulk::Decompressor::with_dictionary(bytes)
        .map(drop)
        .map_err(|e| format!("zstd refuses its tables: {e}"))
}

/// The id zstd's trainer wrote into a dictionary's header (0 if none);
/// informative only: blobs name dictionaries by [`DictRef`].
pub fn zstd_dict_id(bytes: &[u8]) -> u32 {
    zstd::zstd_safe::get_dict_id_from_dict(bytes).map_or(0, |n| n.get())
}

/// The dictionary file for `dict` (SPEC §6.4).
pub fn to_file(key: &crate::crypto::DataKeys, dict: &[u8]) -> Vec<u8> {
    blob::seal_file_version(&DICT_MAGIC, DICTIONARY_VERSION, key, dict, 3)
}

/// Opens dictionary file `bytes` stored under `id`: decrypts, checks that
/// the content hashes to `id`, and validates it.
pub fn from_file(
    key: &crate::crypto::DataKeys,
    hasher: &ContentHasher,
    id: &DictId,
    bytes: &[u8],
) -> Result<Dictionary, BlobError> {
    let plain = blob::open_file(&DICT_MAGIC, "dictionary", key, bytes)?;
    if hasher.dict_id(&plain) != *id {
        return Err(BlobError::HashMismatch);
    }
    validate(&plain).map_err(|reason| FormatError::Malformed {
        what: "dictionary",
        reason,
    })?;
    Ok(Dictionary::new(*id, plain))
}

/// Trains on `samples`, stores the dictionary (durably, before any blob
/// uses it: SPEC §13, §6.4) and returns it; `Ok(None)` if training found
/// nothing.
pub fn train_and_store(
    backend: &dyn Backend,
    key: &crate::crypto::DataKeys,
    hasher: &ContentHasher,
    samples: &[&[u8]],
) -> Result<Option<Arc<Dictionary>>, crate::backend::BackendError> {
    let Some(bytes) = train(samples) else {
        return Ok(None);
    };
    let id = hasher.dict_id(&bytes);
    backend.write(ObjectKind::Dict, &id.to_hex(), &to_file(key, &bytes))?;
    Ok(Some(Arc::new(Dictionary::new(id, bytes))))
}

/// A repository's dictionaries, loaded on first use and kept: the resolver
/// behind every blob read of a version-2 repository.
pub struct Dictionaries {
    backend: Arc<dyn Backend>,
    key: crate::crypto::DataKeys,
    hasher: ContentHasher,
    allowed: bool,
    loaded: RwLock<HashMap<DictRef, Arc<Dictionary>>>,
    /// References that could not be resolved, and why: a damaged
    /// dictionary is read once, not once per blob.
    failed: RwLock<HashMap<DictRef, String>>,
    /// Held while a reference is resolved from the storage: threads that
    /// meet a new dictionary at once (a copy's parallel reads) would each
    /// list and read it.
    resolving: Mutex<()>,
}

impl std::fmt::Debug for Dictionaries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dictionaries")
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl Dictionaries {
    /// The dictionaries of the repository in `backend`; `allowed` is false
    /// for version-1 repositories, whose blobs never name one.
    pub fn new(
        backend: Arc<dyn Backend>,
        key: crate::crypto::DataKeys,
        hasher: ContentHasher,
        allowed: bool,
    ) -> Self {
        Self {
            backend,
            key,
            hasher,
            allowed,
            loaded: RwLock::new(HashMap::new()),
            failed: RwLock::new(HashMap::new()),
            resolving: Mutex::new(()),
        }
    }

    /// Ids of the stored dictionaries, in name order (invalid names are
    /// left out; `check` reports them).
    pub fn list(&self) -> Result<Vec<DictId>, crate::backend::BackendError> {
        let mut ids: Vec<DictId> = self
            .backend
            .list(ObjectKind::Dict)?
            .into_iter()
            .filter_map(|o| o.name.parse().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Reads and verifies dictionary `id` (and keeps it for blob reads).
    pub fn load(&self, id: &DictId) -> Result<Arc<Dictionary>, DictLoadError> {
        let r = DictRef::of(id);
        if let Some(d) = self.cached(r).filter(|d| d.id() == id) {
            return Ok(d);
        }
        let bytes = self.backend.read(ObjectKind::Dict, &id.to_hex())?;
        let d = Arc::new(from_file(&self.key, &self.hasher, id, &bytes)?);
        self.loaded
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(r, Arc::clone(&d));
        Ok(d)
    }

    fn cached(&self, r: DictRef) -> Option<Arc<Dictionary>> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&r)
            .cloned()
    }
}

/// Why a dictionary could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DictLoadError {
    /// The backend failed (or the file is missing).
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    /// The file does not decrypt, hash to its name, or parse.
    #[error(transparent)]
    Damaged(#[from] BlobError),
}

impl DictionarySource for Dictionaries {
    fn dictionary(&self, r: DictRef) -> Result<Arc<Dictionary>, FormatError> {
        if let Some(d) = self.cached(r) {
            return Ok(d);
        }
        let unavailable = |reason: String| FormatError::Dictionary {
            dict: r.to_string(),
            reason,
        };
        if !self.allowed {
            return Err(unavailable(
                "a version-1 repository has no dictionaries".into(),
            ));
        }
        let _one = self.resolving.lock().unwrap_or_else(|e| e.into_inner());
        // Another thread may have resolved it while this one waited.
        if let Some(d) = self.cached(r) {
            return Ok(d);
        }
        if let Some(why) = self
            .failed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&r)
        {
            return Err(unavailable(why.clone()));
        }
        let ids = self.list().map_err(|e| unavailable(e.to_string()))?;
        let mut matching = ids.iter().filter(|id| r.names(id));
        let why = match (matching.next(), matching.next()) {
            (Some(id), None) => match self.load(id) {
                Ok(d) => return Ok(d),
                // Transient backend trouble is not remembered.
                Err(DictLoadError::Backend(e)) if !e.is_not_found() => {
                    return Err(unavailable(e.to_string()));
                }
                Err(e) => e.to_string(),
            },
            (None, _) => "no such dictionary in the repository".into(),
            (Some(_), Some(_)) => "the reference is ambiguous".into(),
        };
        self.failed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(r, why.clone());
        Err(unavailable(why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    fn samples() -> Vec<Vec<u8>> {
        (0..400u32)
            .map(|i| {
                format!(
                    "[server]\nhost = node{i}.example.org\nport = {}\nlog_level = info\n\
                     timeout_ms = {}\n[database]\nuser = app{}\npool = {}\n",
                    8000 + i % 7,
                    i * 13 % 997,
                    i % 11,
                    i % 5
                )
                .repeat(3)
                .into_bytes()
            })
            .collect()
    }

    #[test]
    fn trained_dictionary_round_trips_through_its_file() {
        let s = samples();
        let refs: Vec<&[u8]> = s.iter().map(Vec::as_slice).collect();
        let d = train(&refs).expect("trains");
        validate(&d).unwrap();
        let k = MasterKey::generate();
        let h = ContentHasher::new(&k);
        let id = h.dict_id(&d);
        let f = to_file(&k.data_keys(), &d);
        assert_eq!(f[..8], DICT_MAGIC);
        assert_eq!(f[8..12], DICTIONARY_VERSION.to_le_bytes());
        assert_eq!(from_file(&k.data_keys(), &h, &id, &f).unwrap().bytes(), d);
        // Stored under another name: refused.
        let other = h.dict_id(b"x");
        assert_eq!(
            from_file(&k.data_keys(), &h, &other, &f).unwrap_err(),
            BlobError::HashMismatch
        );
        // Too few samples: no dictionary.
        assert!(train(&refs[..MIN_SAMPLES - 1]).is_none());
        // Garbage is not a dictionary.
        assert!(validate(b"not a dictionary at all").is_err());
    }
}
