//! Copy: snapshots from one repository into another (SPEC §24).
//!
//! Only blobs the destination lacks are stored, decrypted with the source's
//! keys and sealed under the destination's. When both repositories name
//! content with the same keys (`init --copy-chunker-params`, SPEC §5) ids
//! are the same on both sides and trees are stored as they are; otherwise
//! every data blob is named again with the destination's key and every tree
//! rewritten, children first, with the new ids. Each snapshot is written
//! only after its blobs are durable and indexed (SPEC §13), so a copy that
//! dies leaves no snapshot, and the next run adopts the packs it wrote.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::backend::ObjectKind;
use crate::blob::BlobKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId, TreeId};
use crate::pack::BlobLocation;
use crate::progress::{NoProgress, Progress};
use crate::repository::{Packer, Repository, SnapshotFilter};
use crate::snapshot::{Snapshot, SnapshotEntry};
use crate::tree::{self, Tree};

/// One selected snapshot and where it is in the destination.
#[derive(Debug, Clone)]
pub struct CopiedSnapshot {
    /// Its id in the source repository.
    pub source: SnapshotId,
    /// The destination's snapshot holding it (written by this copy, or
    /// found there already).
    pub snapshot: SnapshotEntry,
}

/// What a [`Copy`](struct@Copy) did.
#[derive(Debug, Clone, Default)]
pub struct CopyStats {
    /// Snapshots this run wrote into the destination, oldest first.
    pub copied: Vec<CopiedSnapshot>,
    /// Selected snapshots the destination already held.
    pub skipped: Vec<CopiedSnapshot>,
    /// Blobs (data and tree) stored in the destination.
    pub blobs_copied: u64,
    /// Plaintext bytes of those blobs.
    pub bytes_copied: u64,
    /// Bytes they take in the destination's packs (compressed, sealed).
    pub bytes_packed: u64,
    /// Whether the two repositories name content alike (SPEC §5): then ids
    /// and trees carry over unchanged.
    pub same_content_keys: bool,
    /// Packs of an interrupted earlier run (or backup) adopted, not sent again.
    pub packs_resumed: usize,
    /// Wall time.
    pub duration: Duration,
}

/// Builder for copying snapshots from `src` into `dst`
/// ([`Repository::copy_from`]).
pub struct Copy<'a> {
    src: &'a Repository,
    dst: &'a Repository,
    ids: Vec<SnapshotId>,
    filter: SnapshotFilter,
    progress: &'a dyn Progress,
}

impl Repository {
    /// Starts a copy of snapshots of `src` into this repository.
    pub fn copy_from<'a>(&'a self, src: &'a Repository) -> Copy<'a> {
        Copy::new(src, self)
    }
}

impl<'a> Copy<'a> {
    /// A copy of every snapshot of `src` into `dst`, narrowed by
    /// [`Copy::snapshots`] and [`Copy::filter`].
    pub fn new(src: &'a Repository, dst: &'a Repository) -> Self {
        Self {
            src,
            dst,
            ids: Vec::new(),
            filter: SnapshotFilter::default(),
            progress: &NoProgress,
        }
    }
    /// Copies only these snapshots of the source (all when none are given).
    pub fn snapshots(mut self, ids: impl IntoIterator<Item = SnapshotId>) -> Self {
        self.ids.extend(ids);
        self
    }
    /// Copies only snapshots passing `f`.
    pub fn filter(mut self, f: SnapshotFilter) -> Self {
        self.filter = f;
        self
    }
    /// Reports progress to `p`: bytes of file content, of the snapshots to copy.
    pub fn progress(mut self, p: &'a dyn Progress) -> Self {
        self.progress = p;
        self
    }

    /// Runs the copy. Fails with [`Error::CopyIntoItself`] when both are
    /// the same repository, and [`Error::NothingSelected`] when no snapshot
    /// of the source passes the selection. The destination announces itself
    /// as a backup does (SPEC §22); the source is only read.
    pub fn run(self) -> Result<CopyStats> {
        if self.src.id() == self.dst.id() {
            return Err(Error::CopyIntoItself(self.dst.id()));
        }
        let heartbeat = crate::lock::Heartbeat::start(self.dst.backend())?;
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            s.spawn(|| heartbeat.keep_alive(rx));
            let r = self.run_with();
            drop(tx);
            r
        })
    }

    fn run_with(&self) -> Result<CopyStats> {
        let started = Instant::now();
        // Snapshot files are named by their hash: the local cache (SPEC
        // §12) answers for those read or written on this machine before.
        let all = self.src.snapshots_cached()?;
        let selected: Vec<&SnapshotEntry> = all
            .iter()
            .filter(|s| self.ids.is_empty() || self.ids.contains(&s.id))
            .filter(|s| self.filter.matches(&s.snapshot))
            .collect();
        if let Some(missing) = self.ids.iter().find(|id| !all.iter().any(|s| s.id == **id)) {
            return Err(Error::SnapshotNotFound(missing.to_hex()));
        }
        if selected.is_empty() {
            return Err(Error::NothingSelected(self.src.backend().location()));
        }
        // A snapshot is known by its original: the first repository's id.
        let origin = |s: &SnapshotEntry| s.snapshot.original.unwrap_or(s.id);
        let src_origin: HashMap<SnapshotId, SnapshotId> =
            all.iter().map(|s| (s.id, origin(s))).collect();

        self.dst.refresh_index()?;
        let packs_resumed = crate::backup::adopt_unindexed_packs(self.dst)?;
        // Destination snapshots by the original they hold: a copy by its
        // original, any snapshot by its own id (a copy coming home).
        let mut held: HashMap<SnapshotId, SnapshotEntry> = HashMap::new();
        for d in self.dst.snapshots_cached()? {
            held.insert(d.id, d.clone());
            held.insert(origin(&d), d);
        }
        let same = self.src.content_keys() == self.dst.content_keys();
        let mut stats = CopyStats {
            same_content_keys: same,
            packs_resumed,
            ..CopyStats::default()
        };
        let todo: Vec<&SnapshotEntry> = selected
            .iter()
            .copied()
            .filter(|s| !held.contains_key(&origin(s)))
            .collect();
        self.progress
            .set_total(todo.iter().map(|s| s.snapshot.summary.total_bytes).sum());

        let mut state = State {
            src: self.src,
            dst: self.dst,
            same,
            packer: self.dst.packer(),
            trees: HashMap::new(),
            blobs: Mutex::new(HashMap::new()),
            counts: Default::default(),
            progress: self.progress,
        };
        let mut copied = Vec::new();
        let mut skipped = Vec::new();
        for s in selected {
            if let Some(d) = held.get(&origin(s)) {
                skipped.push(CopiedSnapshot {
                    source: s.id,
                    snapshot: d.clone(),
                });
                continue;
            }
            let root = state.copy_tree(&s.snapshot.tree)?;
            // SPEC §13: the snapshot only after its packs and index.
            state.packer.flush_all()?;
            let parent = s
                .snapshot
                .parent
                .and_then(|p| src_origin.get(&p))
                .and_then(|o| held.get(o))
                .map(|d| d.id);
            let snapshot = Snapshot {
                tree: root,
                parent,
                original: Some(origin(s)),
                ..s.snapshot.clone()
            };
            let id = self.dst.save_snapshot(&snapshot)?;
            let entry = SnapshotEntry { id, snapshot };
            held.insert(origin(s), entry.clone());
            copied.push(CopiedSnapshot {
                source: s.id,
                snapshot: entry,
            });
        }
        let adjust = state.packer.finish()?;
        let [blobs, bytes, packed] = state.counts.map(AtomicU64::into_inner);
        stats.blobs_copied = blobs;
        stats.bytes_copied = bytes;
        stats.bytes_packed = packed.saturating_add_signed(adjust);
        stats.copied = copied;
        stats.skipped = skipped;
        stats.duration = started.elapsed();
        Ok(stats)
    }
}

/// Largest range of a pack read with one request, and the most unneeded
/// bytes read through to join two ranges: on object storage a request costs
/// a round trip, so blobs are fetched by pack, not one by one.
const MAX_RANGE: u64 = 24 << 20;
const MAX_GAP: u64 = 1 << 20;

/// What one run carries from snapshot to snapshot.
struct State<'r> {
    src: &'r Repository,
    dst: &'r Repository,
    same: bool,
    packer: Packer<'r>,
    /// Source tree → destination tree, for trees already stored.
    trees: HashMap<TreeId, TreeId>,
    /// Source data blob → destination id (unrelated keys only).
    blobs: Mutex<HashMap<BlobId, BlobId>>,
    /// Blobs stored, their plaintext bytes, their packed bytes.
    counts: [AtomicU64; 3],
    progress: &'r dyn Progress,
}

/// A source tree: decoded, and its plaintext (stored as is under the same keys).
type Loaded = HashMap<TreeId, (Tree, Vec<u8>)>;

impl State<'_> {
    /// Stores the tree `root` of the source and everything below it that the
    /// destination lacks; returns its id in the destination. Trees are read
    /// level by level and data by pack, then stored children first
    /// ([`tree::fold_trees`], an explicit stack).
    fn copy_tree(&mut self, root: &TreeId) -> Result<TreeId> {
        let loaded = self.load_trees(root)?;
        self.copy_data(&loaded)?;
        let mut memo = std::mem::take(&mut self.trees);
        let r = tree::fold_trees(
            root,
            &mut memo,
            |t| {
                loaded
                    .get(t)
                    .map(|(tree, _)| tree.clone())
                    .ok_or(Error::BlobNotFound(t.as_blob()))
            },
            |id, tree, memo| self.finish_tree(id, tree, &loaded, memo),
        );
        self.trees = memo;
        r
    }

    /// Every tree below `root` that this run has not stored yet. A tree in
    /// the source's local cache (a backup on this machine put it there,
    /// SPEC §12) is opened and verified from there; the others are read a
    /// level at a time, the level's spans in parallel.
    fn load_trees(&self, root: &TreeId) -> Result<Loaded> {
        let mut loaded = Loaded::new();
        let mut level = vec![*root];
        level.retain(|t| !self.trees.contains_key(t));
        while !level.is_empty() {
            let mut found = Vec::new();
            let mut ids: Vec<BlobId> = Vec::new();
            for t in &level {
                match cached_tree(self.src, t) {
                    Some((tree, plain)) => found.push((*t, tree, plain)),
                    None => ids.push(t.as_blob()),
                }
            }
            let found = Mutex::new(found);
            fetch(self.src, &ids, true, |loc, plain| {
                let tree = Tree::decode(plain).map_err(|e| Error::CorruptPack {
                    pack: loc.pack,
                    reason: format!("tree {}: {e}", loc.entry.id.short()),
                })?;
                let id = TreeId::from_bytes(*loc.entry.id.as_bytes());
                found
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((id, tree, plain.to_vec()));
                Ok(())
            })?;
            let mut next = Vec::new();
            for (id, tree, plain) in found.into_inner().unwrap_or_else(|e| e.into_inner()) {
                next.extend(tree.nodes.iter().filter_map(|n| n.dir_subtree()));
                loaded.insert(id, (tree, plain));
            }
            next.sort();
            next.dedup();
            next.retain(|t| !self.trees.contains_key(t) && !loaded.contains_key(t));
            level = next;
        }
        Ok(loaded)
    }

    /// Stores the data blobs `loaded` names that the destination lacks
    /// (same keys), or that this run has not named yet (unrelated keys:
    /// the destination's id needs the plaintext, so each is read once even
    /// if the destination turns out to hold it).
    fn copy_data(&mut self, loaded: &Loaded) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        let mut need = Vec::new();
        let known = self.blobs.get_mut().unwrap_or_else(|e| e.into_inner());
        for (tree, _) in loaded.values() {
            for id in tree.nodes.iter().flat_map(|n| &n.content) {
                if !seen.insert(*id) {
                    continue;
                }
                let wanted = if self.same {
                    !self.dst.index().has(id)?
                } else {
                    !known.contains_key(id)
                };
                if wanted {
                    need.push(*id);
                }
            }
        }
        // Progress: bytes read, then the rest of the files' sizes at once.
        let sizes: u64 = loaded
            .values()
            .flat_map(|(t, _)| &t.nodes)
            .map(|n| n.size)
            .sum();
        let read = AtomicU64::new(0);
        let this = &*self;
        fetch(this.src, &need, false, |loc, plain| {
            read.fetch_add(plain.len() as u64, Relaxed);
            this.progress.add_bytes(plain.len() as u64);
            let id = loc.entry.id;
            if loc.entry.kind != BlobKind::Data {
                return Err(Error::TreeAsContent(id));
            }
            if this.same {
                return this.store(BlobKind::Data, id, plain);
            }
            let new = this.dst.hasher().chunk_id(plain);
            if !this.dst.index().has(&new)? {
                this.store(BlobKind::Data, new, plain)?;
            }
            this.blobs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, new);
            Ok(())
        })?;
        self.progress
            .add_bytes(sizes.saturating_sub(read.into_inner()));
        Ok(())
    }

    /// Stores one source tree whose data is stored and subtrees are in `memo`.
    fn finish_tree(
        &mut self,
        id: &TreeId,
        tree: &Tree,
        loaded: &Loaded,
        memo: &HashMap<TreeId, TreeId>,
    ) -> Result<TreeId> {
        if self.same {
            // Same keys: same ids, and the source's bytes are the tree.
            if !self.dst.index().has(&id.as_blob())? {
                let bytes = loaded
                    .get(id)
                    .map(|(_, b)| b.as_slice())
                    .unwrap_or_default();
                self.store(BlobKind::Tree, id.as_blob(), bytes)?;
            }
            return Ok(*id);
        }
        let mut out = tree.clone();
        let known = self.blobs.get_mut().unwrap_or_else(|e| e.into_inner());
        for node in &mut out.nodes {
            for blob in &mut node.content {
                *blob = *known.get(blob).ok_or(Error::BlobNotFound(*blob))?;
            }
            if let Some(sub) = node.dir_subtree() {
                node.subtree = memo.get(&sub).copied();
            }
        }
        let bytes = out.encode();
        let new = self.dst.hasher().tree_id(&bytes);
        if !self.dst.index().has(&new.as_blob())? {
            self.store(BlobKind::Tree, new.as_blob(), &bytes)?;
        }
        Ok(new)
    }

    /// Seals one blob into the destination's packs (from any thread).
    fn store(&self, kind: BlobKind, id: BlobId, plain: &[u8]) -> Result<()> {
        let packed = self.packer.save(kind, id, plain)?;
        if packed > 0 {
            let [blobs, bytes, sealed] = &self.counts;
            blobs.fetch_add(1, Relaxed);
            bytes.fetch_add(plain.len() as u64, Relaxed);
            sealed.fetch_add(packed, Relaxed);
        }
        Ok(())
    }
}

/// Tree `id` of `src` from its local cache, opened and verified as if read
/// from its pack; `None` when it is not cached, or the cached copy does not
/// open (then the pack decides).
fn cached_tree(src: &Repository, id: &TreeId) -> Option<(Tree, Vec<u8>)> {
    let loc = src.locate(&id.as_blob()).ok()?;
    let mut sealed = src.index().cache().tree(&loc.entry.id).ok().flatten()?;
    let mut plain = Vec::new();
    src.open_sealed(loc.pack, &loc.entry, &mut sealed, &mut plain)
        .ok()?;
    let tree = Tree::decode(&plain).ok()?;
    Some((tree, plain))
}

/// Reads blobs `ids` of `src`, verified, and hands each to `f` with its
/// location: sorted by pack and offset, neighbours read with one request
/// (up to [`MAX_RANGE`], across gaps up to [`MAX_GAP`]). With `parallel`
/// the requests run up to the source's connections at once (for trees:
/// small spans); else one at a time, the next downloaded while one is
/// opened, so memory holds two spans. Trees read
/// go into the source's local cache, for the next copy.
fn fetch(
    src: &Repository,
    ids: &[BlobId],
    parallel: bool,
    f: impl Fn(&BlobLocation, &[u8]) -> Result<()> + Sync,
) -> Result<()> {
    let mut locs = Vec::with_capacity(ids.len());
    for id in ids {
        locs.push(src.locate(id)?);
    }
    locs.sort_by_key(|l| (l.pack, l.entry.offset));
    let mut spans = Vec::new();
    let mut i = 0;
    while let Some(first) = locs.get(i) {
        let start = u64::from(first.entry.offset);
        let mut end = start + u64::from(first.entry.length);
        let mut j = i + 1;
        while let Some(l) = locs.get(j).filter(|l| l.pack == first.pack) {
            let (o, e) = (
                u64::from(l.entry.offset),
                u64::from(l.entry.offset) + u64::from(l.entry.length),
            );
            if o > end + MAX_GAP || e - start > MAX_RANGE {
                break;
            }
            end = end.max(e);
            j += 1;
        }
        spans.push((i..j, start, end));
        i = j;
    }
    type Span = (std::ops::Range<usize>, u64, u64);
    let download = |(range, start, end): &Span, buf: &mut Vec<u8>| -> Result<()> {
        let first = &locs[range.start];
        src.backend()
            .read_span_into(
                ObjectKind::Pack,
                &first.pack.to_hex(),
                *start,
                (end - start) as u32,
                buf,
            )
            .map_err(|err| match err.error_kind {
                crate::backend::BackendErrorKind::NotFound => Error::Backend(err),
                _ => Error::CorruptPack {
                    pack: first.pack,
                    reason: err.to_string(),
                },
            })
    };
    let open = |(range, start, _): &Span, buf: &mut Vec<u8>| -> Result<()> {
        let locs = &locs[range.clone()];
        // Each blob's sealed bytes, split off the range in place (no copy;
        // a blob listed twice is opened once).
        let mut blobs: Vec<(&BlobLocation, &mut [u8])> = Vec::with_capacity(locs.len());
        let mut rest: &mut [u8] = buf.as_mut_slice();
        let mut at = *start;
        for l in locs {
            let off = u64::from(l.entry.offset);
            if off < at {
                continue;
            }
            let (_, tail) = std::mem::take(&mut rest).split_at_mut((off - at) as usize);
            let (sealed, tail) = tail.split_at_mut(l.entry.length as usize);
            rest = tail;
            at = off + u64::from(l.entry.length);
            blobs.push((l, sealed));
        }
        // Opening (decrypt, decompress, verify) and storing run on all cores.
        blobs
            .into_par_iter()
            .try_for_each(|(l, sealed)| -> Result<()> {
                let copy = (l.entry.kind == BlobKind::Tree).then(|| sealed.to_vec());
                let mut plain = Vec::new();
                src.open_sealed(l.pack, &l.entry, sealed, &mut plain)?;
                if let Some(copy) = copy {
                    // The cache is disposable: failing to fill it costs a read.
                    let _ = src.index().cache().put_tree(&l.entry.id, &copy);
                }
                f(l, &plain)
            })
    };
    if parallel {
        return src.with_read_pool(|| {
            spans.par_iter().try_for_each_init(Vec::new, |buf, s| {
                download(s, buf)?;
                open(s, buf)
            })
        });
    }
    // The next span is downloaded while this one is opened and stored, so
    // the network and the cores work at once; memory holds two spans.
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<u8>>>(0);
        let spans = &spans;
        scope.spawn(move || {
            for s in spans {
                let mut buf = Vec::new();
                let got = download(s, &mut buf).map(|()| buf);
                let failed = got.is_err();
                // A closed channel: the consumer failed and stopped.
                if tx.send(got).is_err() || failed {
                    return;
                }
            }
        });
        for s in spans {
            // The reader sends every span, or stops after sending an
            // error; a closed channel here means it died (its panic is
            // resumed when the scope ends).
            let Ok(got) = rx.recv() else {
                return Err(Error::InvalidArgument(
                    "the pack reader of the copy stopped".into(),
                ));
            };
            open(s, &mut got?)?;
        }
        Ok(())
    })
}
