//! Walks sources and turns them into trees and chunks (SPEC §15).
//!
//! Directories are walked in parallel (rayon work stealing over entries, so
//! deep and wide trees both use every core); a file's chunks are hashed,
//! compressed and sealed in parallel batches borrowed from the chunker's one
//! buffer. Memory stays bounded: per busy thread one chunker buffer, plus
//! two open packs.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rayon::prelude::*;

use super::source::{self, Names};
use crate::blob::BlobKind;
use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::id::{BlobId, TreeId};
use crate::pattern::PathPatterns;
use crate::progress::Progress;
use crate::repository::{Packer, Repository};
use crate::snapshot::SnapshotSummary;
use crate::tree::{Node, NodeKind, Tree};
use crate::warning::Warning;

/// The content of a `CACHEDIR.TAG` file must start with this.
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// Content already read for a hard-linked inode: chunk ids, size, profile.
type LinkedContent = HashMap<(u64, u64), (Vec<BlobId>, u64, u8)>;

/// Counters shared by the walking threads.
#[derive(Debug, Default)]
struct Stats {
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unmodified: AtomicU64,
    dirs_new: AtomicU64,
    dirs_changed: AtomicU64,
    dirs_unmodified: AtomicU64,
    data_blobs: AtomicU64,
    tree_blobs: AtomicU64,
    bytes_read: AtomicU64,
    bytes_added: AtomicU64,
    bytes_added_packed: AtomicU64,
    total_files: AtomicU64,
    total_bytes: AtomicU64,
    errors: AtomicU64,
}

/// Settings of one archiving run.
pub(crate) struct ArchiverSettings<'a> {
    pub excludes: PathPatterns,
    pub one_file_system: bool,
    pub exclude_caches: bool,
    pub profile: u8,
    pub progress: &'a dyn Progress,
    pub heartbeat: Option<&'a crate::lock::Heartbeat<'a>>,
    /// References for delta compression of a stream (SPEC §6.6).
    pub delta: Option<&'a dyn super::delta::DeltaSource>,
}

/// One backup run's walker and chunk pipeline.
pub(crate) struct Archiver<'a> {
    repo: &'a Repository,
    packer: Packer<'a>,
    chunker: Chunker,
    settings: ArchiverSettings<'a>,
    names: Names,
    stats: Stats,
    warnings: Mutex<Vec<Warning>>,
    hardlinks: Mutex<LinkedContent>,
    /// Blobs stored by this run with [`ArchiverSettings::delta`], and the
    /// references each was offered (SPEC §6.6).
    fresh: Mutex<std::collections::HashMap<BlobId, Vec<BlobId>>>,
}

/// Top-level selection: the absolute paths given, as a tree of components.
#[derive(Debug)]
pub(crate) enum Selection {
    /// Back up this path and everything below it.
    Full(PathBuf),
    /// Only the named children of this directory.
    Partial(PathBuf, BTreeMap<Vec<u8>, Selection>),
}

impl Selection {
    /// Builds the component tree of absolute `paths` below `/`.
    pub(crate) fn from_paths(paths: &[PathBuf]) -> BTreeMap<Vec<u8>, Selection> {
        let mut root: BTreeMap<Vec<u8>, Selection> = BTreeMap::new();
        for p in paths {
            let comps: Vec<&[u8]> = p
                .components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(s) => Some(s.as_bytes()),
                    _ => None,
                })
                .collect();
            let mut map = &mut root;
            let mut cur = PathBuf::from("/");
            for (i, c) in comps.iter().enumerate() {
                cur.push(std::ffi::OsStr::from_bytes(c));
                let last = i + 1 == comps.len();
                let entry = map
                    .entry(c.to_vec())
                    .or_insert_with(|| Selection::Partial(cur.clone(), BTreeMap::new()));
                if last {
                    *entry = Selection::Full(cur.clone());
                    break;
                }
                match entry {
                    Selection::Full(_) => break, // an ancestor is already whole
                    Selection::Partial(_, children) => map = children,
                }
            }
        }
        root
    }
}

fn mtime_ns(md: &fs::Metadata) -> i64 {
    md.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.mtime_nsec())
}

impl<'a> Archiver<'a> {
    pub(crate) fn new(repo: &'a Repository, settings: ArchiverSettings<'a>) -> Result<Self> {
        Ok(Self {
            packer: repo.packer(),
            chunker: repo.chunker(settings.profile)?,
            repo,
            settings,
            names: Names::default(),
            stats: Stats::default(),
            warnings: Mutex::new(Vec::new()),
            hardlinks: Mutex::new(HashMap::new()),
            fresh: Mutex::new(HashMap::new()),
        })
    }

    fn warn(&self, msg: Warning) {
        self.stats.errors.fetch_add(1, Relaxed);
        self.settings.progress.warn(&msg);
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(msg);
    }

    fn parent_tree(&self, parent: Option<&Node>) -> Option<Tree> {
        let id = parent.filter(|p| p.kind == NodeKind::Dir)?.subtree?;
        // A parent tree that cannot be read only costs re-reading files.
        self.repo.load_parent_tree(&id).ok()
    }

    /// Archives the selected paths; returns the root tree.
    pub(crate) fn archive_selection(
        &self,
        sel: &BTreeMap<Vec<u8>, Selection>,
        parent: Option<&Tree>,
    ) -> Result<TreeId> {
        let mut nodes = Vec::new();
        for (name, s) in sel {
            let prev = parent.and_then(|t| t.get(name));
            let path = match s {
                Selection::Full(p) | Selection::Partial(p, _) => p,
            };
            let md = match fs::symlink_metadata(path) {
                Ok(md) => md,
                Err(source) => {
                    return Err(Error::Source {
                        path: path.clone(),
                        source,
                    });
                }
            };
            match s {
                Selection::Full(p) => {
                    let dev = md.dev();
                    if let Some(n) = self.archive_entry(p, name, Some(md), dev, prev)? {
                        nodes.push(n);
                    }
                }
                Selection::Partial(p, children) => {
                    let (mut n, w) =
                        source::node_from(p, name, &md, &self.names, prev).map_err(|source| {
                            Error::Source {
                                path: p.clone(),
                                source,
                            }
                        })?;
                    if let Some(w) = w {
                        self.warn(w);
                    }
                    if n.kind != NodeKind::Dir {
                        return Err(Error::Source {
                            path: p.clone(),
                            source: io::Error::other("not a directory"),
                        });
                    }
                    let sub = self.parent_tree(prev);
                    n.subtree = Some(self.archive_selection(children, sub.as_ref())?);
                    nodes.push(keep_ancestor_times(n, prev));
                }
            }
        }
        self.save_tree(Tree { nodes }, parent.is_some())
    }

    /// Archives one file-system entry; `None` if it was skipped with a warning.
    /// `md` is its `lstat`, if the caller has it already.
    fn archive_entry(
        &self,
        path: &Path,
        name: &[u8],
        md: Option<fs::Metadata>,
        root_dev: u64,
        prev: Option<&Node>,
    ) -> Result<Option<Node>> {
        let md = match md.map_or_else(|| fs::symlink_metadata(path), Ok) {
            Ok(md) => md,
            Err(e) => {
                self.warn(Warning::Unreadable {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
                return Ok(None);
            }
        };
        let (mut node, w) = match source::node_from(path, name, &md, &self.names, prev) {
            Ok(x) => x,
            Err(e) => {
                self.warn(Warning::Unreadable {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
                return Ok(None);
            }
        };
        if let Some(w) = w {
            self.warn(w);
        }
        match node.kind {
            NodeKind::File => {
                let kept = self.archive_file(path, &mut node, prev)?;
                if !kept {
                    return Ok(None);
                }
            }
            NodeKind::Dir => {
                let cross = self.settings.one_file_system && md.dev() != root_dev;
                let parent = self.parent_tree(prev);
                match self.archive_dir(path, root_dev, cross, parent.as_ref()) {
                    Ok(id) => node.subtree = Some(id),
                    Err(Error::Source { path, source }) => {
                        self.warn(Warning::Unreadable {
                            path: path.to_path_buf(),
                            reason: source.to_string(),
                        });
                        return Ok(None);
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => {}
        }
        self.settings.progress.add_file(path);
        Ok(Some(node))
    }

    fn archive_dir(
        &self,
        path: &Path,
        root_dev: u64,
        skip_contents: bool,
        parent: Option<&Tree>,
    ) -> Result<TreeId> {
        // Each entry is stat'ed relative to the open directory (fstatat on
        // its descriptor, as `DirEntry::metadata` does), not by a full path
        // walk: the walk was half of what each stat cost a backup of
        // unchanged files.
        // An entry whose stat fails here is stat'ed again by path, which
        // reports the error.
        let mut names: Vec<(Vec<u8>, Option<fs::Metadata>)> = Vec::new();
        if !skip_contents {
            let rd = fs::read_dir(path).map_err(|source| Error::Source {
                path: path.into(),
                source,
            })?;
            for e in rd {
                match e {
                    Ok(e) => names.push((e.file_name().as_bytes().to_vec(), e.metadata().ok())),
                    Err(err) => self.warn(Warning::Unreadable {
                        path: path.to_path_buf(),
                        reason: err.to_string(),
                    }),
                }
            }
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let cache_tagged = self.settings.exclude_caches && is_cache_dir(path);
        let nodes: Vec<Option<Node>> = names
            .into_par_iter()
            .map(|(name, md)| {
                let child = path.join(std::ffi::OsStr::from_bytes(&name));
                if self.settings.excludes.matches_path(&child)
                    || (cache_tagged && name != b"CACHEDIR.TAG")
                {
                    return Ok(None);
                }
                let prev = parent.and_then(|t| t.get(&name));
                self.archive_entry(&child, &name, md, root_dev, prev)
            })
            .collect::<Result<_>>()?;
        let tree = Tree {
            nodes: nodes.into_iter().flatten().collect(),
        };
        let id = self.save_tree(tree, parent.is_some())?;
        Ok(id)
    }

    /// Saves a tree blob and counts the directory as new/changed/unmodified.
    fn save_tree(&self, mut tree: Tree, had_parent: bool) -> Result<TreeId> {
        if tree.nodes.len() > crate::format::MAX_TREE_ENTRIES {
            return Err(Error::InvalidArgument(format!(
                "a directory has {} entries, over the {} this format version stores in one tree",
                tree.nodes.len(),
                crate::format::MAX_TREE_ENTRIES
            )));
        }
        tree.sort();
        let bytes = tree.encode();
        if bytes.len() > crate::format::MAX_TREE_SIZE {
            return Err(Error::InvalidArgument(format!(
                "a directory's listing encodes to {} bytes, over the {} limit",
                bytes.len(),
                crate::format::MAX_TREE_SIZE
            )));
        }
        let id = self.repo.hasher().tree_id(&bytes);
        let added = self.packer.save(BlobKind::Tree, id.as_blob(), &bytes)?;
        if added > 0 {
            self.stats.tree_blobs.fetch_add(1, Relaxed);
            self.stats
                .bytes_added
                .fetch_add(bytes.len() as u64, Relaxed);
            self.stats.bytes_added_packed.fetch_add(added, Relaxed);
            if had_parent {
                &self.stats.dirs_changed
            } else {
                &self.stats.dirs_new
            }
            .fetch_add(1, Relaxed);
        } else {
            self.stats.dirs_unmodified.fetch_add(1, Relaxed);
        }
        Ok(id)
    }

    /// Fills a file node's content; false if the file was skipped.
    fn archive_file(&self, path: &Path, node: &mut Node, prev: Option<&Node>) -> Result<bool> {
        if let Some(p) = prev.filter(|p| unchanged(p, node)) {
            // Reuse the chunk list only if the index still knows every chunk.
            let mut known = true;
            for id in &p.content {
                if !self.repo.index().has(id)? {
                    known = false;
                    break;
                }
            }
            if known {
                node.content = p.content.clone();
                node.chunker = p.chunker;
                self.stats.files_unmodified.fetch_add(1, Relaxed);
                self.stats.total_files.fetch_add(1, Relaxed);
                self.stats.total_bytes.fetch_add(node.size, Relaxed);
                return Ok(true);
            }
        }
        let hl_key = (node.links > 1).then_some((node.device, node.inode));
        if let Some(k) = hl_key
            && let Some((content, size, profile)) = self
                .hardlinks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&k)
        {
            node.content = content.clone();
            node.size = *size;
            node.chunker = *profile;
            self.stats.total_files.fetch_add(1, Relaxed);
            self.stats.total_bytes.fetch_add(node.size, Relaxed);
            return Ok(true);
        }
        let file = match open_regular(path) {
            Ok(f) => f,
            Err(e) => {
                self.warn(Warning::Unreadable {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
                return Ok(false);
            }
        };
        let before = file.metadata().ok().map(|m| mtime_ns(&m));
        match self.chunk_reader(file, Some(node.size)) {
            Ok((ids, n)) => {
                if n != node.size {
                    self.warn(Warning::SizeChanged {
                        path: path.to_path_buf(),
                        expected: node.size,
                        read: n,
                    });
                    node.size = n;
                } else if fs::symlink_metadata(path).ok().map(|m| mtime_ns(&m)) != before {
                    self.warn(Warning::ModifiedWhileReading {
                        path: path.to_path_buf(),
                    });
                }
                node.content = ids;
                node.chunker = self.settings.profile;
            }
            Err(Error::Source { source, .. }) => {
                self.warn(Warning::Unreadable {
                    path: path.to_path_buf(),
                    reason: source.to_string(),
                });
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
        if let Some(k) = hl_key {
            self.hardlinks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(k, (node.content.clone(), node.size, node.chunker));
        }
        if prev.is_some() {
            &self.stats.files_changed
        } else {
            &self.stats.files_new
        }
        .fetch_add(1, Relaxed);
        self.stats.total_files.fetch_add(1, Relaxed);
        self.stats.total_bytes.fetch_add(node.size, Relaxed);
        Ok(true)
    }

    /// Chunks, hashes and stores everything `reader` yields. I/O errors of
    /// the reader come back as [`Error::Source`] with an empty path.
    pub(crate) fn chunk_reader(
        &self,
        reader: impl Read,
        size_hint: Option<u64>,
    ) -> Result<(Vec<BlobId>, u64)> {
        // Keeps the reader's I/O errors apart from repository errors.
        enum Fail {
            Read(io::Error),
            Repo(Error),
        }
        impl From<io::Error> for Fail {
            fn from(e: io::Error) -> Self {
                Fail::Read(e)
            }
        }
        let mut ids = Vec::new();
        let mut offset = 0u64;
        let r = self
            .chunker
            .stream_batches(reader, size_hint, |batch| -> Result<(), Fail> {
                if let Some(h) = self.settings.heartbeat {
                    h.refresh().map_err(|e| Fail::Repo(e.into()))?;
                }
                let starts: Vec<u64> = batch
                    .iter()
                    .map(|c| {
                        let at = offset;
                        offset += c.len() as u64;
                        at
                    })
                    .collect();
                let saved: Vec<(BlobId, u64)> = batch
                    .par_iter()
                    .zip(starts)
                    .map(|(chunk, at)| {
                        let id = self.repo.hasher().chunk_id(chunk);
                        let Some(delta) = self.settings.delta else {
                            return Ok((id, self.packer.save(BlobKind::Data, id, chunk)?));
                        };
                        if self.repo.index().has(&id)? {
                            return Ok((id, 0));
                        }
                        let refs = delta.references(at, chunk);
                        // Only stored blobs, never itself: else it could not be read.
                        let mut known = Vec::with_capacity(refs.len());
                        for (r, p) in &refs {
                            if *r != id && self.repo.index().has(r)? {
                                known.push((*r, p));
                            }
                        }
                        let refs: Vec<(BlobId, &[u8])> = known
                            .into_iter()
                            .take(crate::compress::MAX_DELTA_REFS)
                            .map(|(r, p)| (r, p.as_slice()))
                            .collect();
                        let (added, delta) = self.packer.save_with_references(id, chunk, &refs)?;
                        if added > 0 {
                            let refs = if delta {
                                refs.iter().map(|(r, _)| *r).collect()
                            } else {
                                Vec::new()
                            };
                            self.fresh
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(id, refs);
                        }
                        Ok((id, added))
                    })
                    .collect::<Result<_>>()
                    .map_err(Fail::Repo)?;
                for ((id, added), chunk) in saved.into_iter().zip(batch) {
                    if added > 0 {
                        self.stats.data_blobs.fetch_add(1, Relaxed);
                        self.stats
                            .bytes_added
                            .fetch_add(chunk.len() as u64, Relaxed);
                        self.stats.bytes_added_packed.fetch_add(added, Relaxed);
                    }
                    self.stats.bytes_read.fetch_add(chunk.len() as u64, Relaxed);
                    self.settings.progress.add_bytes(chunk.len() as u64);
                    ids.push(id);
                }
                Ok(())
            });
        match r {
            Ok(n) => Ok((ids, n)),
            Err(Fail::Read(source)) => Err(Error::Source {
                path: PathBuf::new(),
                source,
            }),
            Err(Fail::Repo(e)) => Err(e),
        }
    }

    /// The blobs outside `content` needed to decode it (SPEC §6.6), with
    /// their lengths: references of the delta blobs among it, transitively.
    pub(crate) fn delta_closure(&self, content: &[BlobId]) -> Result<Vec<(BlobId, u64)>> {
        let fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
        self.repo.delta_closure(content, &fresh)
    }

    /// Counts a stream as a new file in the summary.
    pub(crate) fn count_stream(&self, bytes: u64) {
        self.stats.total_files.fetch_add(1, Relaxed);
        self.stats.files_new.fetch_add(1, Relaxed);
        self.stats.total_bytes.fetch_add(bytes, Relaxed);
    }

    /// Saves a tree built by the caller (stream roots).
    pub(crate) fn save_built_tree(&self, tree: Tree) -> Result<TreeId> {
        self.save_tree(tree, false)
    }

    /// Flushes packs and index; returns counters and warnings.
    pub(crate) fn finish(self) -> Result<(SnapshotSummary, Vec<Warning>)> {
        let adjust = self.packer.finish()?;
        let s = &self.stats;
        let g = |a: &AtomicU64| a.load(Relaxed);
        let summary = SnapshotSummary {
            files_new: g(&s.files_new),
            files_changed: g(&s.files_changed),
            files_unmodified: g(&s.files_unmodified),
            dirs_new: g(&s.dirs_new),
            dirs_changed: g(&s.dirs_changed),
            dirs_unmodified: g(&s.dirs_unmodified),
            data_blobs: g(&s.data_blobs),
            tree_blobs: g(&s.tree_blobs),
            bytes_read: g(&s.bytes_read),
            bytes_added: g(&s.bytes_added),
            bytes_added_packed: g(&s.bytes_added_packed).saturating_add_signed(adjust),
            total_files: g(&s.total_files),
            total_bytes: g(&s.total_bytes),
            errors: g(&s.errors),
            duration_ns: 0,
        };
        Ok((
            summary,
            self.warnings
                .into_inner()
                .unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// A file is unchanged when size, times, inode and device all match.
/// An ancestor of the given paths (a directory that lists only the
/// selected children) keeps the parent snapshot's times and link count when
/// nothing else about it changed, subtree included (SPEC §15): they move
/// with entries that are not backed up (a new file in `/tmp`), and would
/// otherwise cost every unchanged backup a new root tree, a pack and an
/// index file.
fn keep_ancestor_times(mut now: Node, prev: Option<&Node>) -> Node {
    if let Some(p) = prev {
        let (mtime_ns, ctime_ns, links) = (now.mtime_ns, now.ctime_ns, now.links);
        (now.mtime_ns, now.ctime_ns, now.links) = (p.mtime_ns, p.ctime_ns, p.links);
        if now != *p {
            (now.mtime_ns, now.ctime_ns, now.links) = (mtime_ns, ctime_ns, links);
        }
    }
    now
}

fn unchanged(prev: &Node, now: &Node) -> bool {
    prev.kind == NodeKind::File
        && prev.size == now.size
        && prev.mtime_ns == now.mtime_ns
        && prev.ctime_ns == now.ctime_ns
        && prev.inode == now.inode
        && prev.device == now.device
}

/// Opens a regular file without following symlinks or blocking on a FIFO
/// that replaced it since `lstat`.
fn open_regular(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::other("no longer a regular file"));
    }
    Ok(f)
}

fn is_cache_dir(path: &Path) -> bool {
    let mut buf = [0u8; CACHEDIR_SIGNATURE.len()];
    File::open(path.join("CACHEDIR.TAG"))
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok_and(|()| buf == CACHEDIR_SIGNATURE)
}
