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
use std::time::{Duration, Instant};

use crate::blob::BlobKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId, TreeId};
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
        let all = self.src.snapshots()?;
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
        for d in self.dst.snapshots()? {
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
            blobs: HashMap::new(),
            stats: &mut stats,
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
        stats.bytes_packed = stats.bytes_packed.saturating_add_signed(adjust);
        stats.copied = copied;
        stats.skipped = skipped;
        stats.duration = started.elapsed();
        Ok(stats)
    }
}

/// What one run carries from snapshot to snapshot.
struct State<'r, 's> {
    src: &'r Repository,
    dst: &'r Repository,
    same: bool,
    packer: Packer<'r>,
    /// Source tree → destination tree, for trees already stored.
    trees: HashMap<TreeId, TreeId>,
    /// Source data blob → destination id (unrelated keys only).
    blobs: HashMap<BlobId, BlobId>,
    stats: &'s mut CopyStats,
    progress: &'r dyn Progress,
}

impl State<'_, '_> {
    /// Stores the tree `root` of the source and everything below it that the
    /// destination lacks; returns its id in the destination. Children
    /// first, with an explicit stack ([`tree::fold_trees`]).
    fn copy_tree(&mut self, root: &TreeId) -> Result<TreeId> {
        let mut memo = std::mem::take(&mut self.trees);
        let src = self.src;
        let r = tree::fold_trees(
            root,
            &mut memo,
            |t| src.load_tree(t),
            |id, tree, memo| self.finish_tree(id, tree, memo),
        );
        self.trees = memo;
        r
    }

    /// Stores one source tree whose subtrees are in `memo`.
    fn finish_tree(
        &mut self,
        id: &TreeId,
        tree: &Tree,
        memo: &HashMap<TreeId, TreeId>,
    ) -> Result<TreeId> {
        let mut out = tree.clone();
        for node in &mut out.nodes {
            for blob in &mut node.content {
                *blob = self.copy_data(blob)?;
            }
            self.progress.add_bytes(node.size);
            if let Some(sub) = node.dir_subtree() {
                node.subtree = memo.get(&sub).copied();
            }
        }
        if self.same {
            // Same keys: same id, and the source's bytes are the tree.
            if !self.dst.index().has(&id.as_blob())? {
                let bytes = self.src.read_blob(&id.as_blob())?;
                self.store(BlobKind::Tree, id.as_blob(), &bytes)?;
            }
            return Ok(*id);
        }
        let bytes = out.encode();
        let new = self.dst.hasher().tree_id(&bytes);
        if !self.dst.index().has(&new.as_blob())? {
            self.store(BlobKind::Tree, new.as_blob(), &bytes)?;
        }
        Ok(new)
    }

    /// Makes sure data blob `id` of the source is in the destination;
    /// returns its id there.
    fn copy_data(&mut self, id: &BlobId) -> Result<BlobId> {
        if self.same {
            if !self.dst.index().has(id)? {
                let plain = self.src.read_blob_at(&self.src.locate_data(id)?)?;
                self.store(BlobKind::Data, *id, &plain)?;
            }
            return Ok(*id);
        }
        if let Some(new) = self.blobs.get(id) {
            return Ok(*new);
        }
        // Unrelated keys: the destination's id needs the plaintext, so
        // every blob is read, even one the destination turns out to hold.
        let plain = self.src.read_blob_at(&self.src.locate_data(id)?)?;
        let new = self.dst.hasher().chunk_id(&plain);
        if !self.dst.index().has(&new)? {
            self.store(BlobKind::Data, new, &plain)?;
        }
        self.blobs.insert(*id, new);
        Ok(new)
    }

    fn store(&mut self, kind: BlobKind, id: BlobId, plain: &[u8]) -> Result<()> {
        let packed = self.packer.save(kind, id, plain)?;
        if packed > 0 {
            self.stats.blobs_copied += 1;
            self.stats.bytes_copied += plain.len() as u64;
            self.stats.bytes_packed += packed;
        }
        Ok(())
    }
}
