//! Read-only views of snapshots: `diff` (what changed between two),
//! `find` (which snapshots hold a path matching a glob) and `stats` (logical
//! size, unique and stored size, dedup and compression ratios). Nothing here
//! writes to the repository. Trees are read as SPEC §9 defines them; blob
//! sizes come from the index (SPEC §8).
//!
//! All three lean on trees being content addressed: equal tree ids mean equal
//! directories, so `diff` skips unchanged subtrees without loading them, and
//! `find` and `stats` load a subtree shared by several snapshots only once.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use serde::Serialize;
use serde::ser::SerializeStruct;

use crate::backend::ObjectKind;
use crate::blob::BlobKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId, TreeId};
use crate::pattern::PathPattern;
use crate::repository::Repository;
use crate::snapshot::SnapshotEntry;
use crate::tree::{Node, NodeKind, Tree, fold_trees};

// ---------------------------------------------------------------- diff

/// How a path differs between the two snapshots of a [`Diff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only in the second snapshot.
    Added,
    /// Only in the first snapshot.
    Removed,
    /// Same kind, different content: file chunks, symlink target or device
    /// number. Metadata may differ too (see [`DiffEntry::fields`]).
    Modified,
    /// Same kind and content; only metadata differs (see [`DiffEntry::fields`]).
    MetadataOnly,
    /// The entry changed kind (e.g. a directory became a file).
    TypeChanged,
}

/// Metadata a [`Change::MetadataOnly`] (or [`Change::Modified`]) entry
/// differs in. ctime, inode, device and link count are not compared: they
/// change whenever a file is copied or restored without anyone changing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataField {
    /// Permission bits.
    Mode,
    /// Owner (uid or user name).
    Owner,
    /// Group (gid or group name).
    Group,
    /// Modification time.
    Mtime,
    /// Extended attributes.
    Xattrs,
}

/// One changed path. Serialized with `path` as (lossy) UTF-8 and, only when
/// the raw name is not UTF-8, `path_hex` holding the raw bytes in hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffEntry {
    /// Full path in the snapshot, raw bytes, components joined by `/`.
    pub path: Vec<u8>,
    /// What changed.
    pub change: Change,
    /// Kind in the first snapshot (`None` when added).
    pub old_kind: Option<NodeKind>,
    /// Kind in the second snapshot (`None` when removed).
    pub new_kind: Option<NodeKind>,
    /// Content size in the first snapshot (`None` when added).
    pub old_size: Option<u64>,
    /// Content size in the second snapshot (`None` when removed).
    pub new_size: Option<u64>,
    /// Metadata that differs, for `Modified` and `MetadataOnly`.
    pub fields: Vec<MetadataField>,
}

impl DiffEntry {
    /// The path for display (lossy for non-UTF-8 names).
    pub fn path_lossy(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

impl Serialize for DiffEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let raw = raw_hex(&self.path);
        let mut st = s.serialize_struct("DiffEntry", 8)?;
        st.serialize_field("path", &self.path_lossy())?;
        if let Some(h) = &raw {
            st.serialize_field("path_hex", h)?;
        } else {
            st.skip_field("path_hex")?;
        }
        st.serialize_field("change", &self.change)?;
        st.serialize_field("old_kind", &self.old_kind)?;
        st.serialize_field("new_kind", &self.new_kind)?;
        st.serialize_field("old_size", &self.old_size)?;
        st.serialize_field("new_size", &self.new_size)?;
        st.serialize_field("fields", &self.fields)?;
        st.end()
    }
}

/// Hex of `path` when it is not valid UTF-8 (so JSON can carry it exactly).
fn raw_hex(path: &[u8]) -> Option<String> {
    std::str::from_utf8(path)
        .is_err()
        .then(|| hex::encode(path))
}

/// Counts over a [`Diff`]. "Files" are all entries that are not directories.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiffTotals {
    /// Non-directory entries added.
    pub files_added: u64,
    /// Non-directory entries removed.
    pub files_removed: u64,
    /// Entries whose content changed.
    pub files_modified: u64,
    /// Entries (directories included) whose metadata alone changed.
    pub metadata_only: u64,
    /// Entries that changed kind.
    pub type_changed: u64,
    /// Directories added.
    pub dirs_added: u64,
    /// Directories removed.
    pub dirs_removed: u64,
    /// Plaintext bytes of the content chunks the changed paths of the second
    /// snapshot reference and the changed paths of the first do not: about
    /// the new data the second snapshot brings (each chunk counted once).
    pub bytes_added: u64,
    /// The same, the other way round: data the second snapshot no longer has
    /// at the changed paths.
    pub bytes_removed: u64,
}

/// The differences between two snapshots, in path order (depth first, names
/// in byte order, a directory before its entries).
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    /// The first ("old") snapshot.
    pub a: SnapshotId,
    /// The second ("new") snapshot.
    pub b: SnapshotId,
    /// Every changed path. Added or removed directories are followed by
    /// everything below them.
    pub changes: Vec<DiffEntry>,
    /// Counts and bytes.
    pub totals: DiffTotals,
}

/// The state of one diff walk.
struct DiffWalk<'a> {
    repo: &'a Repository,
    changes: Vec<DiffEntry>,
    totals: DiffTotals,
    /// Content chunks of changed paths on either side. Only changed paths
    /// contribute, so memory follows the size of the change, not the snapshot.
    chunks_a: HashSet<BlobId>,
    chunks_b: HashSet<BlobId>,
}

/// Metadata fields in which `a` and `b` differ.
fn metadata_fields(a: &Node, b: &Node) -> Vec<MetadataField> {
    let mut f = Vec::new();
    if a.mode != b.mode {
        f.push(MetadataField::Mode);
    }
    if a.uid != b.uid || a.user != b.user {
        f.push(MetadataField::Owner);
    }
    if a.gid != b.gid || a.group != b.group {
        f.push(MetadataField::Group);
    }
    if a.mtime_ns != b.mtime_ns {
        f.push(MetadataField::Mtime);
    }
    if a.xattrs != b.xattrs {
        f.push(MetadataField::Xattrs);
    }
    f
}

/// True when two nodes of the same kind have different content. Directories
/// never do: their entries are compared one by one instead.
fn content_differs(a: &Node, b: &Node) -> bool {
    match a.kind {
        NodeKind::File => a.size != b.size || a.content != b.content,
        NodeKind::Symlink => a.symlink_target != b.symlink_target,
        NodeKind::CharDevice | NodeKind::BlockDevice => a.rdev != b.rdev,
        NodeKind::Dir | NodeKind::Fifo | NodeKind::Socket => false,
    }
}

fn child_path(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(prefix.len() + 1 + name.len());
    p.extend_from_slice(prefix);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

impl DiffWalk<'_> {
    /// Compares two directories. Equal ids (or two absent trees) are equal
    /// directories: nothing below them is loaded.
    fn trees(&mut self, a: Option<TreeId>, b: Option<TreeId>, prefix: &[u8]) -> Result<()> {
        if a == b {
            return Ok(());
        }
        let load = |id: Option<TreeId>| -> Result<Tree> {
            id.map_or_else(|| Ok(Tree::default()), |id| self.repo.load_tree(&id))
        };
        let (ta, tb) = (load(a)?, load(b)?);
        // Both lists are sorted by name (SPEC §9.2): a merge join.
        let (mut ia, mut ib) = (ta.nodes.iter().peekable(), tb.nodes.iter().peekable());
        loop {
            let order = match (ia.peek(), ib.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(na), Some(nb)) => na.name.cmp(&nb.name),
            };
            match (
                order,
                ia.next_if(|_| order.is_le()),
                ib.next_if(|_| order.is_ge()),
            ) {
                (Ordering::Equal, Some(na), Some(nb)) => self.both(na, nb, prefix)?,
                (_, Some(na), None) => self.one_side(na, prefix, Change::Removed)?,
                (_, None, Some(nb)) => self.one_side(nb, prefix, Change::Added)?,
                _ => break, // Unreachable: each arm above consumes one entry at least.
            }
        }
        Ok(())
    }

    /// An entry only in one snapshot, and everything below it.
    fn one_side(&mut self, n: &Node, prefix: &[u8], change: Change) -> Result<()> {
        let path = child_path(prefix, &n.name);
        let added = change == Change::Added;
        let is_dir = n.kind == NodeKind::Dir;
        match (added, is_dir) {
            (true, true) => self.totals.dirs_added += 1,
            (true, false) => self.totals.files_added += 1,
            (false, true) => self.totals.dirs_removed += 1,
            (false, false) => self.totals.files_removed += 1,
        }
        if added {
            self.chunks_b.extend(n.content.iter().copied());
        } else {
            self.chunks_a.extend(n.content.iter().copied());
        }
        self.changes.push(DiffEntry {
            path: path.clone(),
            change,
            old_kind: (!added).then_some(n.kind),
            new_kind: added.then_some(n.kind),
            old_size: (!added).then_some(n.size),
            new_size: added.then_some(n.size),
            fields: Vec::new(),
        });
        if let Some(sub) = n.subtree.filter(|_| is_dir) {
            if added {
                self.trees(None, Some(sub), &path)?;
            } else {
                self.trees(Some(sub), None, &path)?;
            }
        }
        Ok(())
    }

    /// An entry present in both snapshots.
    fn both(&mut self, a: &Node, b: &Node, prefix: &[u8]) -> Result<()> {
        let path = child_path(prefix, &a.name);
        let dir_a = a.subtree.filter(|_| a.kind == NodeKind::Dir);
        let dir_b = b.subtree.filter(|_| b.kind == NodeKind::Dir);
        let (change, fields) = if a.kind != b.kind {
            self.totals.type_changed += 1;
            (Some(Change::TypeChanged), Vec::new())
        } else {
            let fields = metadata_fields(a, b);
            if content_differs(a, b) {
                self.totals.files_modified += 1;
                (Some(Change::Modified), fields)
            } else if !fields.is_empty() {
                self.totals.metadata_only += 1;
                (Some(Change::MetadataOnly), fields)
            } else {
                (None, fields)
            }
        };
        if let Some(change) = change {
            if a.content != b.content {
                self.chunks_a.extend(a.content.iter().copied());
                self.chunks_b.extend(b.content.iter().copied());
            }
            self.changes.push(DiffEntry {
                path: path.clone(),
                change,
                old_kind: Some(a.kind),
                new_kind: Some(b.kind),
                old_size: Some(a.size),
                new_size: Some(b.size),
                fields,
            });
        }
        // A directory that became something else: its entries are removed
        // (and the other way round, added), so totals account for them.
        if dir_a.is_some() || dir_b.is_some() {
            self.trees(dir_a, dir_b, &path)?;
        }
        Ok(())
    }

    /// Plaintext bytes of the chunks in `of` but not in `minus`.
    fn bytes_only_in(&self, of: &HashSet<BlobId>, minus: &HashSet<BlobId>) -> Result<u64> {
        let mut n = 0u64;
        for id in of.difference(minus) {
            let loc = self.repo.locate(id)?;
            n += u64::from(loc.entry.raw_length);
        }
        Ok(n)
    }
}

impl Repository {
    /// What changed from snapshot `a` to snapshot `b`. Both trees are walked
    /// together and subtrees with equal ids are skipped, so the cost follows
    /// the number of changed directories, not the size of the snapshots.
    pub fn diff(&self, a: &SnapshotEntry, b: &SnapshotEntry) -> Result<Diff> {
        let mut w = DiffWalk {
            repo: self,
            changes: Vec::new(),
            totals: DiffTotals::default(),
            chunks_a: HashSet::new(),
            chunks_b: HashSet::new(),
        };
        w.trees(Some(a.snapshot.tree), Some(b.snapshot.tree), b"")?;
        w.totals.bytes_added = w.bytes_only_in(&w.chunks_b, &w.chunks_a)?;
        w.totals.bytes_removed = w.bytes_only_in(&w.chunks_a, &w.chunks_b)?;
        Ok(Diff {
            a: a.id,
            b: b.id,
            changes: w.changes,
            totals: w.totals,
        })
    }
}

// ---------------------------------------------------------------- find

/// One path matching a [`Repository::find`] pattern. Serialized with `path`
/// as (lossy) UTF-8 plus `path_hex` when the raw path is not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindMatch {
    /// The snapshot holding it.
    pub snapshot: SnapshotId,
    /// That snapshot's time, nanoseconds since the Unix epoch.
    pub snapshot_time_ns: i64,
    /// Full path, raw bytes.
    pub path: Vec<u8>,
    /// What it is.
    pub kind: NodeKind,
    /// Content size (files).
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

impl FindMatch {
    /// The path for display (lossy for non-UTF-8 names).
    pub fn path_lossy(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

impl Serialize for FindMatch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let raw = raw_hex(&self.path);
        let mut st = s.serialize_struct("FindMatch", 7)?;
        st.serialize_field("snapshot", &self.snapshot)?;
        st.serialize_field("snapshot_time_ns", &self.snapshot_time_ns)?;
        st.serialize_field("path", &self.path_lossy())?;
        if let Some(h) = &raw {
            st.serialize_field("path_hex", h)?;
        } else {
            st.skip_field("path_hex")?;
        }
        st.serialize_field("kind", &self.kind)?;
        st.serialize_field("size", &self.size)?;
        st.serialize_field("mtime_ns", &self.mtime_ns)?;
        st.end()
    }
}

/// A match without its snapshot or directory, as remembered for a subtree.
#[derive(Debug, Clone)]
struct Hit {
    name: Vec<u8>,
    kind: NodeKind,
    size: u64,
    mtime_ns: i64,
}

/// What a directory contributes, in order: its matching entries and the
/// subdirectories (with their names) to descend into.
#[derive(Debug)]
enum Step {
    Hit(Hit),
    Descend(TreeId, Vec<u8>),
}

/// Where a directory is: a hash chained over the names leading to it, so
/// the key stays 32 bytes however deep the directory (keying by the path
/// itself would make a deep chain of directories cost the square of its
/// depth in memory).
type PlaceKey = [u8; 32];

fn child_place(parent: &PlaceKey, name: &[u8]) -> PlaceKey {
    let mut h = blake3::Hasher::new();
    h.update(parent);
    h.update(&(name.len() as u64).to_le_bytes());
    h.update(name);
    *h.finalize().as_bytes()
}

/// Steps per (tree, place). The place is part of the key because path
/// globs depend on it; the same directory at the same place in several
/// snapshots (the common case) is loaded once. Memory: one entry per
/// distinct directory plus the matches, not one per file.
type FindMemo = HashMap<(TreeId, PlaceKey), Rc<Vec<Step>>>;

impl Repository {
    /// Every entry matching `pattern` (see [`PathPattern`]) in each of
    /// `snapshots`, in snapshot order, then path order. Fails at the first
    /// tree that cannot be read; [`Repository::find_with`] goes on.
    pub fn find(&self, pattern: &str, snapshots: &[SnapshotEntry]) -> Result<Vec<FindMatch>> {
        self.find_with(pattern, snapshots, &mut |_, e| Err(e))
    }

    /// [`Repository::find`], handing the error of a snapshot whose trees
    /// cannot all be read to `on_error`: returning `Ok` leaves that
    /// snapshot's matches out and goes on with the next snapshot.
    pub fn find_with(
        &self,
        pattern: &str,
        snapshots: &[SnapshotEntry],
        on_error: &mut dyn FnMut(&SnapshotEntry, Error) -> Result<()>,
    ) -> Result<Vec<FindMatch>> {
        let pat = PathPattern::new(pattern)?;
        let mut memo = FindMemo::new();
        let mut out = Vec::new();
        for s in snapshots {
            let mut hits = Vec::new();
            if let Err(e) = self.find_below(&s.snapshot.tree, &pat, &mut memo, &mut hits) {
                on_error(s, e)?;
                continue;
            }
            out.extend(hits.into_iter().map(|(path, h)| FindMatch {
                snapshot: s.id,
                snapshot_time_ns: s.snapshot.time_ns,
                path,
                kind: h.kind,
                size: h.size,
                mtime_ns: h.mtime_ns,
            }));
        }
        Ok(out)
    }

    /// The steps of the directory `tree` at `prefix`, from `memo` or by
    /// loading it.
    fn find_steps(
        &self,
        tree: &TreeId,
        prefix: &[u8],
        place: &PlaceKey,
        pat: &PathPattern,
        memo: &mut FindMemo,
    ) -> Result<Rc<Vec<Step>>> {
        let key = (*tree, *place);
        if let Some(s) = memo.get(&key) {
            return Ok(Rc::clone(s));
        }
        let t = self.load_tree(tree)?;
        let mut steps = Vec::new();
        for n in t.nodes {
            // Name patterns need no path: building one per entry would cost
            // the depth of the directory each time.
            let path = if pat.needs_path() {
                child_path(prefix, &n.name)
            } else {
                Vec::new()
            };
            if pat.matches(&path, &n.name) {
                steps.push(Step::Hit(Hit {
                    name: n.name.clone(),
                    kind: n.kind,
                    size: n.size,
                    mtime_ns: n.mtime_ns,
                }));
            }
            if let Some(sub) = n.subtree.filter(|_| n.kind == NodeKind::Dir) {
                steps.push(Step::Descend(sub, n.name));
            }
        }
        let steps = Rc::new(steps);
        memo.insert(key, Rc::clone(&steps));
        Ok(steps)
    }

    /// Depth first with an explicit stack, so a tree nested thousands of
    /// levels deep cannot overflow the thread's stack.
    fn find_below(
        &self,
        root: &TreeId,
        pat: &PathPattern,
        memo: &mut FindMemo,
        out: &mut Vec<(Vec<u8>, Hit)>,
    ) -> Result<()> {
        let root_place = [0u8; 32];
        let steps = self.find_steps(root, b"", &root_place, pat, memo)?;
        // Each frame: a directory's steps, the next one, the length of the
        // directory's path in `prefix`, and its place.
        let mut stack = vec![(steps, 0usize, 0usize, root_place)];
        let mut prefix = Vec::new();
        while let Some((steps, i, len, place)) = stack.last_mut() {
            let Some(step) = steps.get(*i) else {
                stack.pop();
                continue;
            };
            *i += 1;
            prefix.truncate(*len);
            match step {
                Step::Hit(h) => out.push((child_path(&prefix, &h.name), h.clone())),
                Step::Descend(sub, name) => {
                    let (sub, place) = (*sub, child_place(place, name));
                    prefix.push(b'/');
                    prefix.extend_from_slice(name);
                    let next = self.find_steps(&sub, &prefix, &place, pat, memo)?;
                    stack.push((next, 0, prefix.len(), place));
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- stats

/// What [`Repository::stats`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatsMode {
    /// Logical size: what restoring every snapshot would write. Loads each
    /// distinct tree once.
    #[default]
    RestoreSize,
    /// Also the unique blobs the snapshots reference, their plaintext and
    /// stored sizes (one index lookup per blob), and the compression ratio.
    Raw,
    /// Everything `Raw` gives, plus the dedup ratio.
    Dedup,
}

/// Logical totals: every snapshot counted in full, so an unchanged file in
/// two snapshots counts twice (and hard links once per path).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RestoreTotals {
    /// Regular files (and streams).
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks, fifos, devices, sockets.
    pub others: u64,
    /// Sum of file sizes.
    pub bytes: u64,
}

/// Saturating: hostile trees can claim sizes that add up past 2^64 − 1
/// bytes, which then shows as that maximum rather than wrapping around.
impl std::ops::AddAssign for RestoreTotals {
    fn add_assign(&mut self, o: Self) {
        self.files = self.files.saturating_add(o.files);
        self.dirs = self.dirs.saturating_add(o.dirs);
        self.others = self.others.saturating_add(o.others);
        self.bytes = self.bytes.saturating_add(o.bytes);
    }
}

/// Unique blobs of one kind: each counted once however often referenced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BlobTotals {
    /// Number of distinct blobs.
    pub count: u64,
    /// Sum of their plaintext lengths.
    pub raw_bytes: u64,
    /// Sum of their lengths in packs (compressed and sealed).
    pub stored_bytes: u64,
    /// Referenced but not in the index (lost data: run `cairn check`).
    pub missing: u64,
}

/// The packs of the repository, as the backend lists them, and its
/// archived WAL (SPEC §28), outside snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RepositorySize {
    /// Pack files.
    pub packs: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Archived WAL files.
    pub wal_files: u64,
    /// Their stored size in bytes.
    pub wal_bytes: u64,
}

/// Result of [`Repository::stats`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// What was computed.
    pub mode: StatsMode,
    /// Snapshots counted.
    pub snapshots: u64,
    /// Logical totals (every mode).
    pub restore: RestoreTotals,
    /// Unique data blobs (`raw` and `dedup`).
    pub data_blobs: Option<BlobTotals>,
    /// Unique tree blobs (`raw` and `dedup`).
    pub tree_blobs: Option<BlobTotals>,
    /// Unique data plaintext / its stored size (`raw` and `dedup`; `None`
    /// when nothing is stored).
    pub compression_ratio: Option<f64>,
    /// Restore size / unique data plaintext (`dedup`; `None` when there is
    /// no data).
    pub dedup_ratio: Option<f64>,
    /// Every pack in the repository, referenced by these snapshots or not.
    pub repository: RepositorySize,
}

/// The state of one stats walk.
struct StatsWalk<'a> {
    repo: &'a Repository,
    /// Totals per distinct tree: a tree's totals depend only on its id, so
    /// a subtree shared by many snapshots is loaded once. Its keys are also
    /// the set of unique tree blobs.
    trees: HashMap<TreeId, RestoreTotals>,
    /// Unique data blobs, when asked for. Memory: about 50 bytes per distinct
    /// chunk (tens of millions of chunks need gigabytes); an on-disk set
    /// would be needed for repositories that large.
    data: Option<HashSet<BlobId>>,
}

impl StatsWalk<'_> {
    /// Totals of tree `id`, children before parents with an explicit stack
    /// (no recursion: trees may nest deeper than a thread's stack allows).
    fn tree(&mut self, id: &TreeId) -> Result<RestoreTotals> {
        let repo = self.repo;
        let data = &mut self.data;
        fold_trees(
            id,
            &mut self.trees,
            |id| repo.load_tree(id),
            |_, tree, memo| {
                let mut t = RestoreTotals::default();
                for n in &tree.nodes {
                    match n.kind {
                        NodeKind::File => {
                            t.files += 1;
                            t.bytes = t.bytes.saturating_add(n.size);
                            if let Some(d) = data.as_mut() {
                                d.extend(n.content.iter().copied());
                            }
                        }
                        NodeKind::Dir => {
                            t.dirs += 1;
                            if let Some(sub) = n.dir_subtree() {
                                t += memo.get(&sub).copied().unwrap_or_default();
                            }
                        }
                        _ => t.others += 1,
                    }
                }
                Ok(t)
            },
        )
    }
}

fn blob_totals(
    repo: &Repository,
    ids: impl Iterator<Item = BlobId>,
    kind: BlobKind,
) -> Result<BlobTotals> {
    let mut t = BlobTotals::default();
    for id in ids {
        t.count += 1;
        match repo.index().lookup(&id)? {
            Some(loc) if loc.entry.kind == kind => {
                t.raw_bytes = t.raw_bytes.saturating_add(u64::from(loc.entry.raw_length));
                t.stored_bytes = t.stored_bytes.saturating_add(u64::from(loc.entry.length));
            }
            _ => t.missing += 1,
        }
    }
    Ok(t)
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

impl Repository {
    /// Sizes of `snapshots` and of the repository; see [`StatsMode`].
    pub fn stats(&self, snapshots: &[SnapshotEntry], mode: StatsMode) -> Result<Stats> {
        let blobs = mode != StatsMode::RestoreSize;
        let mut w = StatsWalk {
            repo: self,
            trees: HashMap::new(),
            data: blobs.then(HashSet::new),
        };
        let mut restore = RestoreTotals::default();
        for s in snapshots {
            // Per snapshot: an unchanged file counts once in each.
            restore += w.tree(&s.snapshot.tree)?;
        }
        let (data_blobs, tree_blobs) = match &w.data {
            Some(d) => (
                Some(blob_totals(self, d.iter().copied(), BlobKind::Data)?),
                Some(blob_totals(
                    self,
                    w.trees.keys().map(TreeId::as_blob),
                    BlobKind::Tree,
                )?),
            ),
            None => (None, None),
        };
        let compression_ratio = data_blobs.and_then(|d| ratio(d.raw_bytes, d.stored_bytes));
        let dedup_ratio = data_blobs
            .filter(|_| mode == StatsMode::Dedup)
            .and_then(|d| ratio(restore.bytes, d.raw_bytes));
        let mut repository = RepositorySize::default();
        for p in self.backend().list(ObjectKind::Pack)? {
            repository.packs += 1;
            repository.bytes = repository.bytes.saturating_add(p.size);
        }
        for w in self.backend().list(ObjectKind::Wal)? {
            repository.wal_files += 1;
            repository.wal_bytes = repository.wal_bytes.saturating_add(w.size);
        }
        Ok(Stats {
            mode,
            snapshots: snapshots.len() as u64,
            restore,
            data_blobs,
            tree_blobs,
            compression_ratio,
            dedup_ratio,
            repository,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Xattr;

    #[test]
    fn node_comparison() {
        let mut a = Node::new(b"f".to_vec(), NodeKind::File);
        a.content = vec![BlobId::from_bytes([1; 32])];
        a.size = 10;
        let mut b = a.clone();
        assert!(!content_differs(&a, &b));
        assert!(metadata_fields(&a, &b).is_empty());
        b.mode = 0o600;
        b.mtime_ns = 5;
        b.user = "bob".into();
        b.xattrs = vec![Xattr {
            name: b"user.x".to_vec(),
            value: b"1".to_vec(),
        }];
        b.ctime_ns = 9;
        b.inode = 9;
        assert_eq!(
            metadata_fields(&a, &b),
            [
                MetadataField::Mode,
                MetadataField::Owner,
                MetadataField::Mtime,
                MetadataField::Xattrs
            ]
        );
        assert!(!content_differs(&a, &b));
        b.content = vec![BlobId::from_bytes([2; 32])];
        assert!(content_differs(&a, &b));
        let mut l1 = Node::new(b"l".to_vec(), NodeKind::Symlink);
        let mut l2 = l1.clone();
        l1.symlink_target = b"x".to_vec();
        l2.symlink_target = b"y".to_vec();
        assert!(content_differs(&l1, &l2));
    }

    #[test]
    fn entries_serialize_raw_paths_in_hex() {
        let e = DiffEntry {
            path: b"/a/\xff".to_vec(),
            change: Change::MetadataOnly,
            old_kind: Some(NodeKind::File),
            new_kind: Some(NodeKind::File),
            old_size: Some(1),
            new_size: Some(1),
            fields: vec![MetadataField::Mode],
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["path"], "/a/\u{fffd}");
        assert_eq!(v["path_hex"], "2f612fff");
        assert_eq!(v["change"], "metadata_only");
        assert_eq!(v["fields"], serde_json::json!(["mode"]));
        let e = DiffEntry {
            path: b"/a/b".to_vec(),
            ..e
        };
        let v = serde_json::to_value(&e).unwrap();
        assert!(v.get("path_hex").is_none());
    }
}
