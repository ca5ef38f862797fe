//! Index files and the merged index used for lookups (SPEC §8).
//!
//! Index files are written per backup run after their packs are durable. The
//! merged view lives in the SQLite [`Cache`]; blobs packed during this run
//! but not yet written to an index file are held in memory, at most
//! [`MAX_INDEX_ENTRIES`] at a time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::backend::{Backend, ObjectKind};
use crate::blob::{self, BlobError};
use crate::cache::Cache;
use crate::encoding;
use crate::error::{Error, Result, Warnings};
use crate::format::{FILE_VERSION, FormatError, INDEX_MAGIC, REFERENCES_VERSION};
use crate::id::{BlobId, IndexId, PackId};
use crate::pack::{BlobLocation, DeltaRefs, PackEntry, PackHeader};

/// Entries per index file; a backup writes a new file when it has this many
/// pending, which bounds the memory a large backup needs (SPEC §8).
pub const MAX_INDEX_ENTRIES: usize = 65_536;

/// Index entries merged into one cache run while syncing: bounds the
/// memory a rebuild of a large repository needs (about 100 bytes each).
const SYNC_BATCH_ENTRIES: usize = 1 << 19;
/// Index files read in parallel while syncing.
const SYNC_PARALLEL_FILES: usize = 4;
/// Passes a sync makes at most (SPEC §12.1).
const SYNC_PASSES: usize = 8;

/// How a pass of [`Index::sync`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Every listed index file is merged.
    Done,
    /// Something changed meanwhile; `complete` if every file still listed
    /// is merged (only vanished files were missed).
    Repeat {
        /// Every listed file that still exists is merged.
        complete: bool,
    },
}

/// One pack in an index file.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode, serde::Serialize)]
pub struct IndexPack {
    /// The pack.
    pub id: PackId,
    /// Its blobs, as in its header.
    pub entries: Vec<PackEntry>,
}

/// The delta blobs of one pack and their references, as its header
/// records them (SPEC §6.6, §8).
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode, serde::Serialize)]
pub struct PackReferences {
    /// The pack.
    pub pack: PackId,
    /// Its delta blobs, ids ascending.
    pub blobs: Vec<DeltaRefs>,
}

/// The delta blobs of each pack that has some (SPEC §6.6).
pub type References = HashMap<PackId, Vec<DeltaRefs>>;

/// Decrypted body of an index file (SPEC §8).
#[derive(
    Debug, Clone, PartialEq, Eq, Default, bincode::Encode, bincode::Decode, serde::Serialize,
)]
pub struct IndexFile {
    /// Packs described.
    pub packs: Vec<IndexPack>,
    /// Index files this one replaces.
    pub supersedes: Vec<IndexId>,
    /// The delta blobs of those packs: a file that records some is of
    /// version [`REFERENCES_VERSION`], else this is empty.
    pub references: Vec<PackReferences>,
}

/// The body of an index file of a version before [`REFERENCES_VERSION`].
#[derive(bincode::Encode)]
struct IndexFileV1Ref<'a> {
    packs: &'a [IndexPack],
    supersedes: &'a [IndexId],
}

#[derive(bincode::Decode)]
struct IndexFileV1 {
    packs: Vec<IndexPack>,
    supersedes: Vec<IndexId>,
}

impl IndexFile {
    /// The file version and plaintext body: version 1 unless references
    /// are recorded (SPEC §8), so files without them stay readable by
    /// every earlier build.
    pub fn encode_versioned(&self) -> (u32, Vec<u8>) {
        if self.references.is_empty() {
            let v1 = IndexFileV1Ref {
                packs: &self.packs,
                supersedes: &self.supersedes,
            };
            (FILE_VERSION, encoding::encode(&v1))
        } else {
            (REFERENCES_VERSION, encoding::encode(self))
        }
    }

    /// The encrypted file.
    pub fn to_file(&self, key: &crate::crypto::DataKeys) -> Vec<u8> {
        let (version, body) = self.encode_versioned();
        blob::seal_file_version(&INDEX_MAGIC, version, key, &body, 3)
    }

    /// Parses an index file.
    pub fn from_file(key: &crate::crypto::DataKeys, bytes: &[u8]) -> Result<Self, BlobError> {
        let plain = blob::open_file(&INDEX_MAGIC, "index", key, bytes)?;
        let (version, _) = crate::format::read_prefix(bytes, &INDEX_MAGIC, "index")?;
        Ok(Self::decode_versioned(version, &plain)?)
    }

    /// Decodes a body of file version `version` and checks its references.
    pub fn decode_versioned(version: u32, plain: &[u8]) -> Result<Self, FormatError> {
        let f = if version < REFERENCES_VERSION {
            let v1: IndexFileV1 = encoding::decode(plain, "index")?;
            Self {
                packs: v1.packs,
                supersedes: v1.supersedes,
                references: Vec::new(),
            }
        } else {
            encoding::decode(plain, "index")?
        };
        f.check_references()?;
        Ok(f)
    }

    /// Every recorded delta blob is a data blob of its pack in this file,
    /// with 1 to `MAX_DELTA_REFS` references, as a pack header's (§7.2).
    fn check_references(&self) -> Result<(), FormatError> {
        if self.references.is_empty() {
            return Ok(());
        }
        let bad = |reason: String| FormatError::Malformed {
            what: "index",
            reason,
        };
        let packs: HashMap<PackId, &IndexPack> = self.packs.iter().map(|p| (p.id, p)).collect();
        for r in &self.references {
            let Some(p) = packs.get(&r.pack) else {
                return Err(bad(format!(
                    "references recorded for pack {}, which the file does not describe",
                    r.pack.short()
                )));
            };
            let data: HashSet<&BlobId> = p
                .entries
                .iter()
                .filter(|e| e.kind == crate::blob::BlobKind::Data)
                .map(|e| &e.id)
                .collect();
            if !r.blobs.windows(2).all(|w| w[0].id < w[1].id) {
                return Err(bad(format!(
                    "delta blobs of pack {} not in ascending order",
                    r.pack.short()
                )));
            }
            for d in &r.blobs {
                if !data.contains(&d.id)
                    || !(1..=crate::compress::MAX_DELTA_REFS).contains(&d.refs.len())
                {
                    return Err(bad(format!(
                        "references of {} in pack {} are not those of one of its data blobs",
                        d.id.short(),
                        r.pack.short()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The recorded delta blobs of each pack.
    pub fn references_by_pack(&self) -> References {
        self.references
            .iter()
            .map(|r| (r.pack, r.blobs.clone()))
            .collect()
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
    warnings: Arc<Warnings>,
    /// Index files the last sync skipped as damaged, with the error.
    damaged: Mutex<BTreeMap<String, String>>,
    /// Packs the index names but the storage did not list at the start
    /// of this session's backup (SPEC §15): their blobs are lost.
    lost: Mutex<HashSet<PackId>>,
    /// `lost` is not empty: the per-blob check is skipped without a lock.
    any_lost: AtomicBool,
    state: Mutex<Pending>,
    syncing: Mutex<()>,
}

#[derive(Debug, Default)]
struct Pending {
    /// Blobs some thread of this session has taken on to store.
    claimed: HashSet<BlobId>,
    /// Durable packs not yet named by an index file.
    packs: Vec<(PackId, Vec<PackEntry>)>,
    /// The delta blobs of those packs (SPEC §6.6).
    references: Vec<PackReferences>,
    /// Their blobs, for lookups.
    located: HashMap<BlobId, BlobLocation>,
}

impl Index {
    /// Wraps a cache; damaged index files are reported to `warnings`.
    pub fn new(cache: Cache, warnings: Arc<Warnings>) -> Self {
        Self {
            cache,
            warnings,
            damaged: Mutex::new(BTreeMap::new()),
            lost: Mutex::new(HashSet::new()),
            any_lost: AtomicBool::new(false),
            state: Mutex::new(Pending::default()),
            syncing: Mutex::new(()),
        }
    }

    /// Index files the last sync skipped because they are damaged (name,
    /// error). Their packs look unindexed until `repair index` (docs/repair.md).
    pub fn damaged(&self) -> BTreeMap<String, String> {
        self.damaged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records packs the index names that the storage does not list: a
    /// blob in one is lost, and [`Index::has`] and [`Index::claim`] then
    /// fail rather than let a backup reference it (SPEC §15).
    pub fn set_lost_packs(&self, lost: HashSet<PackId>) {
        self.any_lost.store(!lost.is_empty(), Relaxed);
        *self.lost.lock().unwrap_or_else(|e| e.into_inner()) = lost;
    }

    /// Fails if the cache locates `id` only in a lost pack.
    fn check_not_lost(&self, id: &BlobId) -> Result<()> {
        if !self.any_lost.load(Relaxed) {
            return Ok(());
        }
        let lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        match self.cache.lookup(id)? {
            Some(loc) if lost.contains(&loc.pack) => Err(Error::LostPack {
                blob: *id,
                pack: loc.pack,
            }),
            _ => Ok(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings the cache up to date with the repository's index files. When
    /// a file the cache merged is gone (replaced by repair or prune), the
    /// cache is rebuilt from scratch. Superseded files are skipped.
    pub fn sync(&self, backend: &dyn Backend, key: &crate::crypto::DataKeys) -> Result<()> {
        self.sync_listed(backend, key, None)
    }

    /// [`Index::sync`] whose first pass takes `listed` as the listing of
    /// the index files (a backup's walk, SPEC §15) instead of listing them;
    /// a repeated pass lists them again.
    pub(crate) fn sync_listed(
        &self,
        backend: &dyn Backend,
        key: &crate::crypto::DataKeys,
        mut listed: Option<Vec<crate::backend::ObjectInfo>>,
    ) -> Result<()> {
        // A pass is repeated when an index file vanished between listing and
        // reading (a prune or repair replaced it; its replacement may have
        // been missed), or when another process sharing the cache cleared it
        // meanwhile. Each retry means progress elsewhere, so a few suffice.
        // One sync at a time in this process: threads that miss a blob at
        // once (a parallel restore) would otherwise all merge the same files.
        let _one = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        let mut superseded = HashSet::new();
        let mut state = Pass::Repeat { complete: false };
        for _ in 0..SYNC_PASSES {
            let mut damaged = BTreeMap::new();
            state = self.sync_once(backend, key, listed.take(), &mut superseded, &mut damaged)?;
            for (name, e) in &damaged {
                self.warnings
                    .warn(crate::warning::Warning::DamagedIndexFile {
                        name: name.clone(),
                        reason: e.to_string(),
                    });
            }
            *self.damaged.lock().unwrap_or_else(|e| e.into_inner()) = damaged;
            if state == Pass::Done {
                return Ok(());
            }
        }
        match state {
            // Only vanished files: what is listed now is merged.
            Pass::Repeat { complete: true } | Pass::Done => Ok(()),
            Pass::Repeat { complete: false } => Err(Error::Cache(crate::cache::CacheError::Io(
                std::io::Error::other(
                    "the index cache kept changing under other processes while it was \
                     brought up to date; try again",
                ),
            ))),
        }
    }

    /// One pass of [`Index::sync`]. It must be repeated if an index file
    /// vanished meanwhile, if one merged in an earlier batch of this pass
    /// turned out to be superseded (`superseded` remembers it), or if the
    /// cache does not hold every listed file at the end (another process
    /// cleared it meanwhile).
    fn sync_once(
        &self,
        backend: &dyn Backend,
        key: &crate::crypto::DataKeys,
        listed: Option<Vec<crate::backend::ObjectInfo>>,
        superseded: &mut HashSet<IndexId>,
        damaged: &mut BTreeMap<String, String>,
    ) -> Result<Pass> {
        self.cache.reload()?;
        let listed = match listed {
            Some(l) => l,
            None => backend.list(ObjectKind::Index)?,
        };
        let listed: Vec<String> = listed.into_iter().map(|o| o.name).collect();
        let present: HashSet<&str> = listed.iter().map(String::as_str).collect();
        let mut known = self.cache.index_files()?;
        if known.iter().any(|k| !present.contains(k.as_str())) {
            self.cache.clear()?;
            known.clear();
        }
        let is_superseded = |name: &str, sup: &HashSet<IndexId>| {
            name.parse::<IndexId>()
                .map(|id| sup.contains(&id))
                .unwrap_or(false)
        };
        let new: Vec<&String> = listed
            .iter()
            .filter(|n| !known.contains(*n) && !is_superseded(n, superseded))
            .collect();
        let mut vanished = false;
        let mut left_out: HashSet<&str> = HashSet::new();
        let mut merged: Vec<String> = Vec::new();
        let mut batch: Vec<(String, IndexFile)> = Vec::new();
        let mut batch_entries = 0;
        let flush = |batch: &mut Vec<(String, IndexFile)>,
                     sup: &HashSet<IndexId>,
                     merged: &mut Vec<String>|
         -> Result<()> {
            if batch.is_empty() {
                return Ok(());
            }
            let (mut names, mut packs) = (Vec::new(), Vec::new());
            for (name, f) in batch.drain(..) {
                if !is_superseded(&name, sup) {
                    packs.extend(f.packs.into_iter().map(|p| (p.id, p.entries)));
                    names.push(name);
                }
            }
            self.cache.add_indexes(&names, &packs)?;
            merged.extend(names);
            Ok(())
        };
        // Files are read a few at a time in parallel (each is a read, a
        // decryption and a decode), and merged in batches of bounded size.
        for group in new.chunks(SYNC_PARALLEL_FILES) {
            let loaded: Vec<(&String, Result<IndexFile>)> = group
                .par_iter()
                .map(|n| (*n, load_index_file(backend, key, n)))
                .collect();
            for (name, r) in loaded {
                match r {
                    Ok(f) => {
                        superseded.extend(f.supersedes.iter().copied());
                        batch_entries += f.entry_count();
                        batch.push((name.clone(), f));
                    }
                    // Skipped, not fatal (SPEC §13): one damaged file must
                    // not stop every command. Not merged, so the next sync
                    // tries it again (and `repair index` replaces it).
                    Err(e @ Error::CorruptObject { .. }) => {
                        damaged.insert(name.clone(), e.to_string());
                        left_out.insert(name);
                    }
                    // Deleted since the listing: a prune or repair replaced it,
                    // and its replacement was written first (SPEC §13, §22).
                    Err(Error::Backend(e)) if e.is_not_found() => {
                        vanished = true;
                        left_out.insert(name);
                    }
                    Err(e) => return Err(e),
                }
            }
            if batch_entries >= SYNC_BATCH_ENTRIES {
                flush(&mut batch, superseded, &mut merged)?;
                batch_entries = 0;
            }
        }
        flush(&mut batch, superseded, &mut merged)?;
        if merged.iter().any(|n| is_superseded(n, superseded)) {
            // Rare: a prune's replacement came in a later batch than the
            // file it replaces. Start again, skipping what is now known.
            self.cache.clear()?;
            return Ok(Pass::Repeat { complete: false });
        }
        self.cache.compact()?;
        // compact() reloaded the runs; the merged names are read after it,
        // so a clear by another process in between shows up here.
        let now = self.cache.index_files()?;
        let complete = listed.iter().all(|n| {
            now.contains(n) || left_out.contains(n.as_str()) || is_superseded(n, superseded)
        });
        Ok(if complete && !vanished {
            Pass::Done
        } else {
            Pass::Repeat { complete }
        })
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
        if st.claimed.contains(id) {
            return Ok(true);
        }
        if !self.cache.contains(id)? {
            return Ok(false);
        }
        drop(st);
        self.check_not_lost(id)?;
        Ok(true)
    }

    /// Returns true exactly once per new blob: the caller must then store it.
    /// Another client may have packed this chunk already; the index decides.
    pub fn claim(&self, id: &BlobId) -> Result<bool> {
        let mut st = self.state();
        if st.claimed.contains(id) {
            return Ok(false);
        }
        if self.cache.contains(id)? {
            drop(st);
            self.check_not_lost(id)?;
            return Ok(false);
        }
        st.claimed.insert(*id);
        Ok(true)
    }

    /// Records a durable pack, given its header; writes an index file when
    /// enough are pending.
    pub fn add_pack(
        &self,
        backend: &dyn Backend,
        key: &crate::crypto::DataKeys,
        pack: PackId,
        header: PackHeader,
    ) -> Result<()> {
        let PackHeader {
            entries,
            references,
        } = header;
        let full = {
            let mut st = self.state();
            for e in &entries {
                st.located.insert(e.id, BlobLocation { pack, entry: *e });
            }
            if !references.is_empty() {
                st.references.push(PackReferences {
                    pack,
                    blobs: references,
                });
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
        key: &crate::crypto::DataKeys,
        pack: PackId,
        header: PackHeader,
    ) -> Result<()> {
        self.state()
            .claimed
            .extend(header.entries.iter().map(|e| e.id));
        self.add_pack(backend, key, pack, header)
    }

    /// Writes pending packs to a new index file and merges it into the cache.
    /// SPEC §13: called only after those packs are durable.
    pub fn flush(
        &self,
        backend: &dyn Backend,
        key: &crate::crypto::DataKeys,
    ) -> Result<Option<IndexId>> {
        let (packs, references) = {
            let mut st = self.state();
            (
                std::mem::take(&mut st.packs),
                std::mem::take(&mut st.references),
            )
        };
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
            references,
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
/// each (a pack is never split), every file naming `supersedes` and the
/// `references` of its packs.
pub fn write_index_files(
    backend: &dyn Backend,
    key: &crate::crypto::DataKeys,
    packs: &[IndexPack],
    references: &References,
    supersedes: &[IndexId],
) -> Result<Vec<IndexId>> {
    let mut written = Vec::new();
    for f in index_files_for(packs, references, supersedes) {
        let bytes = f.to_file(key);
        let id = IndexId::hash_of(&bytes);
        backend.write(ObjectKind::Index, &id.to_hex(), &bytes)?;
        written.push(id);
    }
    Ok(written)
}

/// The bodies [`write_index_files`] writes: `packs` in files of at most
/// [`MAX_INDEX_ENTRIES`] entries (a pack is never split).
pub fn index_files_for(
    packs: &[IndexPack],
    references: &References,
    supersedes: &[IndexId],
) -> Vec<IndexFile> {
    let mut files = Vec::new();
    let mut start = 0;
    while start < packs.len() {
        let (mut end, mut n) = (start, 0);
        while end < packs.len() && (n == 0 || n + packs[end].entries.len() <= MAX_INDEX_ENTRIES) {
            n += packs[end].entries.len();
            end += 1;
        }
        let packs = &packs[start..end];
        files.push(IndexFile {
            packs: packs.to_vec(),
            supersedes: supersedes.to_vec(),
            references: packs
                .iter()
                .filter_map(|p| {
                    references.get(&p.id).map(|blobs| PackReferences {
                        pack: p.id,
                        blobs: blobs.clone(),
                    })
                })
                .collect(),
        });
        start = end;
    }
    files
}

/// Packs for a new index file, with the delta blobs their headers record.
#[derive(Debug, Default)]
pub struct NewPacks {
    /// The packs.
    pub packs: Vec<IndexPack>,
    /// Their delta blobs.
    pub references: References,
}

impl NewPacks {
    /// Records a pack from its header.
    pub fn add(&mut self, id: PackId, header: PackHeader) {
        if !header.references.is_empty() {
            self.references.insert(id, header.references);
        }
        self.packs.push(IndexPack {
            id,
            entries: header.entries,
        });
    }

    /// Finishes `w` (unless it is empty), stores it and records it.
    pub fn store(
        &mut self,
        backend: &dyn Backend,
        key: &crate::crypto::DataKeys,
        w: crate::pack::PackWriter,
    ) -> Result<()> {
        if !w.is_empty() {
            let (id, bytes, header) = w.finish(key);
            backend.write(ObjectKind::Pack, &id.to_hex(), &bytes)?;
            self.add(id, header);
        }
        Ok(())
    }
}

/// For each recorded delta blob, its references: the union over every
/// pack that holds it (a blob stored twice may be a delta in both).
pub fn references_by_blob(references: &References) -> HashMap<BlobId, Vec<BlobId>> {
    let mut out: HashMap<BlobId, Vec<BlobId>> = HashMap::new();
    for d in references.values().flatten() {
        let e = out.entry(d.id).or_default();
        for r in &d.refs {
            if !e.contains(r) {
                e.push(*r);
            }
        }
    }
    out
}

/// Adds to `blobs` the references of every delta blob in it, theirs, and
/// so on (SPEC §6.6): what decoding those blobs needs.
pub fn close_over_references(blobs: &mut HashSet<BlobId>, by_blob: &HashMap<BlobId, Vec<BlobId>>) {
    if by_blob.is_empty() {
        return;
    }
    let mut todo: Vec<BlobId> = blobs
        .iter()
        .filter(|b| by_blob.contains_key(b))
        .copied()
        .collect();
    while let Some(b) = todo.pop() {
        for r in by_blob.get(&b).into_iter().flatten() {
            if blobs.insert(*r) {
                todo.push(*r);
            }
        }
    }
}

/// Reads every index file with its name. A file that vanishes between the
/// listing and its reading was replaced by a concurrent prune or repair,
/// whose replacement was written first but may postdate the listing: the
/// listing is repeated (a few times at most; each repeat means progress
/// elsewhere) rather than failing, or silently missing the replacement.
pub fn load_index_files(
    backend: &dyn Backend,
    key: &crate::crypto::DataKeys,
) -> Result<Vec<(String, IndexFile)>> {
    let mut attempt = 0;
    'list: loop {
        attempt += 1;
        let mut out = Vec::new();
        for o in backend.list(ObjectKind::Index)? {
            match load_index_file(backend, key, &o.name) {
                Ok(f) => out.push((o.name, f)),
                Err(Error::Backend(e)) if e.is_not_found() && attempt < 4 => continue 'list,
                Err(e) => return Err(e),
            }
        }
        return Ok(out);
    }
}

/// Reads and decrypts one index file, naming it on failure.
pub fn load_index_file(
    backend: &dyn Backend,
    key: &crate::crypto::DataKeys,
    name: &str,
) -> Result<IndexFile> {
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
            references: Vec::new(),
        };
        let bytes = f.to_file(&k.data_keys());
        assert_eq!(IndexFile::from_file(&k.data_keys(), &bytes).unwrap(), f);
        assert!(IndexFile::from_file(&k.data_keys(), &bytes[..bytes.len() - 3]).is_err());
    }
}
