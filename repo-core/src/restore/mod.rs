//! Restore: a snapshot, or selected paths of it, into a directory (SPEC §16).
//!
//! Directories are created first (0700), then files are written (0600) in
//! parallel with every chunk verified against its id; hard links are made
//! after their first member exists; each file gets its metadata (ownership,
//! mode, xattrs, times) once written, and directories get theirs last,
//! deepest first, so nothing below a directory is open to others before
//! the restore is done and the directories' mtimes stick. Nothing is ever
//! reached through a symlink below the target (module `target`).

mod packed;
mod target;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use nix::fcntl::AtFlags;
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::id::{BlobId, TreeId};
use crate::pattern::PathPatterns;
use crate::progress::{NoProgress, Progress};
use crate::repository::Repository;
use crate::snapshot::SnapshotEntry;
use crate::tree::{Node, NodeKind};
use crate::warning::Warning;

use target::{DirError, TargetDir};

/// What a restore does with an entry that already exists where it restores
/// one (SPEC §16). Directories are always merged into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overwrite {
    /// Replace it (as restic does by default).
    #[default]
    Always,
    /// Keep a regular file whose size and modification time equal the
    /// recorded ones, content and metadata untouched; replace anything else.
    IfChanged,
    /// Keep whatever exists, untouched; a non-directory where the snapshot
    /// has a directory keeps that directory's contents from being restored.
    Never,
}

/// What a restore did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreSummary {
    /// Files written, including hard links (not those skipped).
    pub files: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Other entries (symlinks, fifos, devices) created.
    pub others: u64,
    /// Entries left as they were in the target (see [`Overwrite`]).
    pub skipped: u64,
    /// Apparent size of the files written: their recorded sizes, holes
    /// included, as a backup's `bytes_read` counts them; each hard-linked
    /// file once.
    pub bytes_restored: u64,
    /// Problems that did not stop the restore (e.g. ownership as non-root).
    pub warnings: Vec<Warning>,
}

/// Builder for one restore.
pub struct Restore<'a> {
    repo: &'a Repository,
    snapshot: &'a SnapshotEntry,
    target: PathBuf,
    includes: Vec<String>,
    excludes: Vec<String>,
    numeric_ids: bool,
    overwrite: Overwrite,
    all_xattrs: bool,
    progress: &'a dyn Progress,
    names: std::sync::Mutex<NameCache>,
}

/// Owner names already looked up: the local id, or `None` where this
/// system does not know the name (the recorded id is used then).
#[derive(Default)]
struct NameCache {
    users: HashMap<String, Option<u32>>,
    groups: HashMap<String, Option<u32>>,
}

/// The local id for owner `name` (recorded as `recorded`), resolving each
/// name once; an empty or unknown name keeps the recorded id.
fn cached_id(
    cache: &mut HashMap<String, Option<u32>>,
    name: &str,
    recorded: u32,
    resolve: impl FnOnce(&str) -> Option<u32>,
) -> u32 {
    if name.is_empty() {
        return recorded;
    }
    let local = match cache.get(name) {
        Some(local) => *local,
        None => *cache.entry(name.to_string()).or_insert(resolve(name)),
    };
    local.unwrap_or(recorded)
}

impl Repository {
    /// Starts a restore of `snapshot`.
    ///
    /// **Layout:** every path is recreated below the target directory
    /// ([`Restore::to`], default `.`): a file backed up as
    /// `/home/me/notes.txt` is restored to `<target>/home/me/notes.txt`, and
    /// a stream stored as `db/dump.sql` to `<target>/db/dump.sql`. To read
    /// one file without writing it anywhere, use
    /// [`Repository::open_file`]. Include and exclude patterns follow
    /// [`PathPattern`](crate::PathPattern).
    pub fn restore<'a>(&'a self, snapshot: &'a SnapshotEntry) -> Restore<'a> {
        Restore {
            repo: self,
            snapshot,
            target: PathBuf::from("."),
            includes: Vec::new(),
            excludes: Vec::new(),
            numeric_ids: false,
            overwrite: Overwrite::Always,
            all_xattrs: false,
            progress: &NoProgress,
            names: Default::default(),
        }
    }
}

/// Where metadata is set: on an open file or directory, or on the entry
/// `name` in the directory `dir` (links and special files), never through
/// a symlink.
#[derive(Clone, Copy)]
enum At<'f> {
    Open(&'f File),
    Entry { dir: &'f OwnedFd, name: &'f OsStr },
}

/// A file to write, or a hard link to make; paths relative to the target.
struct FileJob {
    rel: PathBuf,
    node: Node,
    link_to: Option<PathBuf>,
}

/// Counters shared by the parallel part of a restore.
#[derive(Default)]
struct Counts {
    files: AtomicU64,
    others: AtomicU64,
    skipped: AtomicU64,
    bytes: AtomicU64,
}

impl<'a> Restore<'a> {
    /// Restores into `dir` (created if missing).
    pub fn to(mut self, dir: impl Into<PathBuf>) -> Self {
        self.target = dir.into();
        self
    }
    /// Restores only paths matching a pattern (and everything below a
    /// match): see [`PathPattern`](crate::PathPattern) for the rules, the
    /// same as backup excludes and find.
    pub fn include(mut self, pattern: impl Into<String>) -> Self {
        self.includes.push(pattern.into());
        self
    }
    /// Skips paths matching a glob (and everything below).
    pub fn exclude(mut self, pattern: impl Into<String>) -> Self {
        self.excludes.push(pattern.into());
        self
    }
    /// Uses the recorded uid/gid even if the names exist locally.
    pub fn numeric_ids(mut self, yes: bool) -> Self {
        self.numeric_ids = yes;
        self
    }
    /// What to do with entries that already exist in the target
    /// (default: [`Overwrite::Always`]).
    pub fn overwrite(mut self, mode: Overwrite) -> Self {
        self.overwrite = mode;
        self
    }
    /// Applies extended attributes of every namespace the snapshot records
    /// (`security.*`, `trusted.*`, ...), not only `user.*`. Backup records
    /// only `user.*`, so others come from a snapshot made elsewhere.
    pub fn all_xattrs(mut self, yes: bool) -> Self {
        self.all_xattrs = yes;
        self
    }
    /// Reports progress to `p`.
    pub fn progress(mut self, p: &'a dyn Progress) -> Self {
        self.progress = p;
        self
    }

    /// Runs the restore, reading chunks with up to
    /// [`Repository::connections`] requests in flight.
    pub fn run(self) -> Result<RestoreSummary> {
        self.repo.with_read_pool(move || self.run_in_pool())
    }

    fn run_in_pool(self) -> Result<RestoreSummary> {
        let inc = PathPatterns::new(&self.includes)?;
        let exc = PathPatterns::new(&self.excludes)?;
        let target = TargetDir::open(&self.target).map_err(|source| Error::Target {
            path: self.target.clone(),
            source,
        })?;
        let warnings = std::sync::Mutex::new(Vec::new());
        let warn = |m: Warning| {
            self.progress.warn(&m);
            warnings.lock().unwrap_or_else(|e| e.into_inner()).push(m);
        };
        let counts = Counts::default();
        let mut plan = Plan::default();
        let root_fd = target
            .open_dir(Path::new(""))
            .map_err(|source| Error::Target {
                path: self.target.clone(),
                source,
            })?;
        self.plan_tree(
            &self.snapshot.snapshot.tree,
            Path::new("/"),
            Path::new(""),
            &root_fd,
            inc.is_empty(),
            &Selection {
                inc: &inc,
                exc: &exc,
            },
            &mut plan,
            &counts,
            &warn,
        )?;
        drop(root_fd);
        let total: u64 = plan
            .files
            .iter()
            .filter(|j| j.link_to.is_none())
            .map(|j| j.node.size)
            .sum();
        self.progress.set_total(total);

        let root = nix::unistd::geteuid().is_root();
        // Content first (pack-ordered, in batches), then hard links to it.
        let content: Vec<&FileJob> = plan.files.iter().filter(|j| j.link_to.is_none()).collect();
        let mut rest = &content[..];
        let batch_files = packed::batch_files();
        while !rest.is_empty() {
            let mut n = 0;
            let mut chunks = 0;
            while n < rest.len()
                && n < batch_files
                && (n == 0 || chunks + rest[n].node.content.len() <= packed::BATCH_CHUNKS)
            {
                chunks += rest[n].node.content.len();
                n += 1;
            }
            let (batch, later) = rest.split_at(n);
            rest = later;
            self.restore_batch(&target, batch, root, &counts, &warn)?;
        }
        for j in plan.files.iter() {
            if let Some(first) = &j.link_to {
                self.make_link(&target, first, &j.rel, &counts)?;
            }
        }
        for (rel, node) in &plan.others {
            self.make_special(&target, rel, node, root, &counts, &warn)?;
        }
        // Deepest directories first, so a parent's mtime is set after its
        // children change it, and each is widened to its recorded mode only
        // when everything below it is complete.
        for (rel, node) in plan.dirs.iter().rev() {
            let path = self.target.join(rel);
            let dir = target.open_dir(rel).map_err(|source| Error::Target {
                path: path.clone(),
                source,
            })?;
            self.set_meta(&path, At::Open(&File::from(dir)), node, root, &warn)?;
        }
        Ok(RestoreSummary {
            files: counts.files.into_inner(),
            dirs: plan.dirs.len() as u64,
            others: counts.others.into_inner(),
            skipped: counts.skipped.into_inner(),
            bytes_restored: counts.bytes.into_inner(),
            warnings: warnings.into_inner().unwrap_or_else(|e| e.into_inner()),
        })
    }

    /// Walks `tree`, creating its directories below `dir` (the target's
    /// `rel`) and listing what to write; returns whether anything in it was
    /// selected. Depth first with an explicit stack of open directories,
    /// not recursion, so no nesting depth can overflow the thread's stack.
    #[allow(clippy::too_many_arguments)]
    fn plan_tree(
        &self,
        tree: &TreeId,
        snap_path: &Path,
        rel: &Path,
        dir: &OwnedFd,
        selected: bool,
        sel: &Selection<'_>,
        plan: &mut Plan,
        counts: &Counts,
        warn: &(dyn Fn(Warning) + Sync),
    ) -> Result<bool> {
        /// A directory being planned: its entries left, where it is, its
        /// descriptor (`None`: the root, `dir`) and, but for the root, its
        /// place in `plan.dirs` and whether it existed before.
        struct Frame {
            nodes: std::vec::IntoIter<Node>,
            snap_path: PathBuf,
            rel: PathBuf,
            fd: Option<OwnedFd>,
            chosen: bool,
            any: bool,
            entry: Option<(usize, bool)>,
        }
        let mut stack = vec![Frame {
            nodes: self.repo.load_tree(tree)?.nodes.into_iter(),
            snap_path: snap_path.to_path_buf(),
            rel: rel.to_path_buf(),
            fd: None,
            chosen: selected,
            any: false,
            entry: None,
        }];
        while let Some(top) = stack.last_mut() {
            let Some(n) = top.nodes.next() else {
                let Some(done) = stack.pop() else { break };
                // Only the root has no parent (and no entry in `plan.dirs`).
                let (Some(parent), Some((idx, existed))) = (stack.last_mut(), done.entry) else {
                    return Ok(done.any);
                };
                if done.chosen || done.any {
                    parent.any = true;
                } else {
                    plan.dirs.remove(idx);
                    if !existed && let Some(name) = done.rel.file_name() {
                        let _ = nix::unistd::unlinkat(
                            parent.fd.as_ref().unwrap_or(dir),
                            name,
                            nix::unistd::UnlinkatFlags::RemoveDir,
                        );
                    }
                }
                continue;
            };
            let name = OsStr::from_bytes(&n.name);
            let sp = top.snap_path.join(name);
            if sel.exc.matches(sp.as_os_str().as_bytes(), &n.name) {
                continue;
            }
            let chosen = top.chosen || sel.inc.matches(sp.as_os_str().as_bytes(), &n.name);
            let op = top.rel.join(name);
            match n.kind {
                NodeKind::Dir => {
                    // Create before descending; remove later if nothing inside was selected.
                    let replace = self.overwrite != Overwrite::Never;
                    let parent = top.fd.as_ref().unwrap_or(dir);
                    let (sub_dir, existed) = match target::ensure_dir(parent, name, replace) {
                        Ok(d) => d,
                        Err(DirError::NotADirectory) => {
                            warn(Warning::NotRestored {
                                path: self.target.join(&op),
                                reason: "not a directory, kept (--overwrite never); \
                                         its contents are not restored"
                                    .into(),
                            });
                            counts.skipped.fetch_add(1, Relaxed);
                            continue;
                        }
                        Err(DirError::Io(source)) => {
                            return Err(Error::Target {
                                path: self.target.join(&op),
                                source,
                            });
                        }
                    };
                    let idx = plan.dirs.len();
                    let sub = n
                        .subtree
                        .ok_or_else(|| Error::PathNotFound(sp.display().to_string()))?;
                    plan.dirs.push((op.clone(), n));
                    stack.push(Frame {
                        nodes: self.repo.load_tree(&sub)?.nodes.into_iter(),
                        snap_path: sp,
                        rel: op,
                        fd: Some(sub_dir),
                        chosen,
                        any: false,
                        entry: Some((idx, existed)),
                    });
                }
                _ if !chosen => {}
                NodeKind::File => {
                    top.any = true;
                    let link_to = if n.links > 1 {
                        let key = (n.device, n.inode);
                        match plan.links.get(&key) {
                            Some(first) => Some(first.clone()),
                            None => {
                                plan.links.insert(key, op.clone());
                                None
                            }
                        }
                    } else {
                        None
                    };
                    plan.files.push(FileJob {
                        rel: op,
                        node: n,
                        link_to,
                    });
                }
                _ => {
                    top.any = true;
                    plan.others.push((op, n));
                }
            }
        }
        Ok(false)
    }

    /// Whether whatever is at `name` in `dir` stays (per [`Overwrite`]);
    /// `None` if nothing is there.
    fn keeps_existing(&self, dir: &OwnedFd, name: &OsStr, node: &Node) -> Option<bool> {
        let st = nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
        Some(match self.overwrite {
            Overwrite::Always => false,
            Overwrite::Never => true,
            Overwrite::IfChanged => {
                let mtime_ns =
                    i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec);
                node.kind == NodeKind::File
                    && SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
                        == SFlag::S_IFREG
                    && st.st_size as u64 == node.size
                    && mtime_ns == i128::from(node.mtime_ns)
            }
        })
    }

    /// Writes the content of `batch` (files, no hard links), reading each
    /// pack's needed bytes once (module `packed`), then gives each file
    /// its length, so trailing zeros become a hole, and its metadata.
    fn restore_batch(
        &self,
        target: &TargetDir,
        batch: &[&FileJob],
        root: bool,
        counts: &Counts,
        warn: &(dyn Fn(Warning) + Sync),
    ) -> Result<()> {
        let opened = batch
            .par_iter()
            .map(|j| self.create(target, &j.rel, &j.node))
            .collect::<Result<Vec<_>>>()?;
        let mut jobs = Vec::with_capacity(batch.len());
        let mut files = Vec::with_capacity(batch.len());
        for (j, f) in batch.iter().zip(opened) {
            match f {
                Some(f) => {
                    jobs.push(*j);
                    files.push(f);
                }
                None => {
                    counts.skipped.fetch_add(1, Relaxed);
                    self.progress.add_bytes(j.node.size);
                }
            }
        }
        let paths: Vec<PathBuf> = jobs.iter().map(|j| self.target.join(&j.rel)).collect();
        let contents: Vec<&[BlobId]> = jobs.iter().map(|j| j.node.content.as_slice()).collect();
        packed::Batch::plan(self.repo, &files, &paths, &contents)
            .write(self.repo, self.progress)?;
        jobs.par_iter()
            .zip(files.par_iter())
            .zip(paths.par_iter())
            .try_for_each(|((j, f), path)| -> Result<()> {
                f.set_len(j.node.size).map_err(|source| Error::Target {
                    path: path.clone(),
                    source,
                })?;
                counts.files.fetch_add(1, Relaxed);
                counts.bytes.fetch_add(j.node.size, Relaxed);
                self.set_meta(path, At::Open(f), &j.node, root, warn)?;
                self.progress.add_file(path);
                Ok(())
            })
    }

    /// Creates the file `rel` to restore `node` into, or returns `None` if
    /// an existing file is kept (see [`Overwrite`]).
    fn create(&self, target: &TargetDir, rel: &Path, node: &Node) -> Result<Option<File>> {
        let path = target.path().join(rel);
        let err = |source| Error::Target {
            path: path.clone(),
            source,
        };
        let (dir, name) = target.open_parent(rel).map_err(err)?;
        // Whatever is in the way (a file, a link) is replaced unless kept;
        // an empty target, the common case, costs no stat and no unlink.
        let f = match target::create_file(&dir, name) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if self.keeps_existing(&dir, name, node) == Some(true) {
                    return Ok(None);
                }
                target::remove_entry(&dir, name);
                target::create_file(&dir, name)
            }
            r => r,
        }
        .map_err(err)?;
        Ok(Some(f))
    }

    /// Links `rel` to the already restored `first`.
    fn make_link(
        &self,
        target: &TargetDir,
        first: &Path,
        rel: &Path,
        counts: &Counts,
    ) -> Result<()> {
        let path = target.path().join(rel);
        let err = |source| Error::Target {
            path: path.clone(),
            source,
        };
        let (from_dir, from_name) = target.open_parent(first).map_err(err)?;
        let (dir, name) = target.open_parent(rel).map_err(err)?;
        if nix::sys::stat::fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok() {
            if self.overwrite == Overwrite::Never {
                counts.skipped.fetch_add(1, Relaxed);
                return Ok(());
            }
            target::remove_entry(&dir, name);
        }
        // No AT_SYMLINK_FOLLOW: a symlink at `first` is linked, not followed.
        nix::unistd::linkat(&from_dir, from_name, &dir, name, AtFlags::empty())
            .map_err(|e| err(e.into()))?;
        counts.files.fetch_add(1, Relaxed);
        Ok(())
    }

    fn make_special(
        &self,
        target: &TargetDir,
        rel: &Path,
        node: &Node,
        root: bool,
        counts: &Counts,
        warn: &(dyn Fn(Warning) + Sync),
    ) -> Result<()> {
        let path = target.path().join(rel);
        let err = |source| Error::Target {
            path: path.clone(),
            source,
        };
        let (dir, name) = target.open_parent(rel).map_err(err)?;
        if node.kind == NodeKind::Socket {
            warn(Warning::NotRestored {
                path: path.clone(),
                reason: "sockets are recorded but not restored".into(),
            });
            return Ok(());
        }
        if let Some(keep) = self.keeps_existing(&dir, name, node) {
            if keep {
                counts.skipped.fetch_add(1, Relaxed);
                return Ok(());
            }
            target::remove_entry(&dir, name);
        }
        let mode = Mode::from_bits_truncate(node.mode as _);
        match node.kind {
            NodeKind::Symlink => {
                nix::unistd::symlinkat(OsStr::from_bytes(&node.symlink_target), &dir, name)
                    .map_err(|e| err(e.into()))?;
            }
            NodeKind::Fifo => {
                nix::unistd::mkfifoat(&dir, name, mode).map_err(|e| err(e.into()))?;
            }
            NodeKind::CharDevice | NodeKind::BlockDevice => {
                let kind = if node.kind == NodeKind::CharDevice {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                if let Err(e) = nix::sys::stat::mknodat(&dir, name, kind, mode, node.rdev as _) {
                    warn(Warning::NotRestored {
                        path: path.clone(),
                        reason: format!("cannot create device: {e}"),
                    });
                    return Ok(());
                }
            }
            NodeKind::Socket | NodeKind::File | NodeKind::Dir => {}
        }
        counts.others.fetch_add(1, Relaxed);
        self.set_meta(&path, At::Entry { dir: &dir, name }, node, root, warn)
    }

    /// Ownership (as root), mode, xattrs, then times — in that order, since
    /// chown clears setuid bits and every change touches ctime/mtime.
    fn set_meta(
        &self,
        path: &Path,
        at: At<'_>,
        node: &Node,
        root: bool,
        warn: &(dyn Fn(Warning) + Sync),
    ) -> Result<()> {
        let err = |source| Error::Target {
            path: path.to_path_buf(),
            source,
        };
        if root {
            let (uid, gid) = self.ids(node);
            let r = match at {
                At::Open(f) => std::os::unix::fs::fchown(f, Some(uid), Some(gid)),
                At::Entry { dir, name } => nix::unistd::fchownat(
                    dir,
                    name,
                    Some(uid.into()),
                    Some(gid.into()),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(io::Error::from),
            };
            if let Err(e) = r {
                warn(Warning::NotRestored {
                    path: path.to_path_buf(),
                    reason: format!("cannot set owner: {e}"),
                });
            }
        }
        if node.kind != NodeKind::Symlink {
            match at {
                At::Open(f) => f.set_permissions(fs::Permissions::from_mode(node.mode)),
                At::Entry { dir, name } => {
                    let mode = Mode::from_bits_truncate(node.mode as _);
                    match nix::sys::stat::fchmodat(dir, name, mode, FchmodatFlags::NoFollowSymlink)
                    {
                        // Without fchmodat2 (Linux < 6.6) the C library
                        // needs /proc for this; the entry is a fifo or
                        // device this restore just made, not a symlink.
                        Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::ENOSYS) => {
                            nix::sys::stat::fchmodat(dir, name, mode, FchmodatFlags::FollowSymlink)
                        }
                        r => r,
                    }
                    .map_err(io::Error::from)
                }
            }
            .map_err(err)?;
        }
        for x in &node.xattrs {
            if !self.all_xattrs && !x.name.starts_with(b"user.") {
                continue;
            }
            let name = OsStr::from_bytes(&x.name);
            let r = match at {
                At::Open(f) => xattr::FileExt::set_xattr(f, name, &x.value),
                // No fsetxattrat: the entry through its directory's
                // descriptor, not following the entry itself.
                At::Entry { dir, name: entry } => {
                    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
                    p.push(entry);
                    xattr::set(p, name, &x.value)
                }
            };
            if let Err(e) = r {
                warn(Warning::NotRestored {
                    path: path.to_path_buf(),
                    reason: format!("cannot set xattr {}: {e}", String::from_utf8_lossy(&x.name)),
                });
            }
        }
        let t = TimeSpec::new(
            node.mtime_ns.div_euclid(1_000_000_000) as _,
            node.mtime_ns.rem_euclid(1_000_000_000) as _,
        );
        match at {
            At::Open(f) => nix::sys::stat::futimens(f, &t, &t),
            At::Entry { dir, name } => {
                nix::sys::stat::utimensat(dir, name, &t, &t, UtimensatFlags::NoFollowSymlink)
            }
        }
        .map_err(|e| err(e.into()))?;
        Ok(())
    }

    fn ids(&self, node: &Node) -> (u32, u32) {
        if self.numeric_ids {
            return (node.uid, node.gid);
        }
        // One NSS lookup per name, not per file: each reads /etc/passwd
        // (or asks a directory service).
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let uid = cached_id(&mut names.users, &node.user, node.uid, |n| {
            nix::unistd::User::from_name(n)
                .ok()
                .flatten()
                .map(|u| u.uid.as_raw())
        });
        let gid = cached_id(&mut names.groups, &node.group, node.gid, |n| {
            nix::unistd::Group::from_name(n)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
        });
        (uid, gid)
    }
}

/// The include and exclude globs of one restore.
struct Selection<'g> {
    inc: &'g PathPatterns,
    exc: &'g PathPatterns,
}

/// Hole granularity: file systems allocate in blocks of at least 4 KiB.
const HOLE_BLOCK: usize = 4096;
/// One block of zeros, to compare blocks with.
static ZEROS: [u8; HOLE_BLOCK] = [0; HOLE_BLOCK];

/// Splits `data`, which starts at file offset `file_pos`, into runs that
/// contain non-zero bytes, at block boundaries of the file; all-zero blocks
/// are left out.
fn nonzero_runs(data: &[u8], file_pos: u64) -> Vec<(usize, &[u8])> {
    let mut runs: Vec<(usize, &[u8])> = Vec::new();
    let mut start = 0usize;
    let mut run_start: Option<usize> = None;
    while start < data.len() {
        // Align block ends to the file, not to the chunk.
        let to_boundary = HOLE_BLOCK - ((file_pos as usize + start) % HOLE_BLOCK);
        let end = (start + to_boundary).min(data.len());
        // A comparison with zeros is a vectorised memcmp; `iter().all`
        // tests byte by byte.
        let zero = data[start..end] == ZEROS[..end - start];
        match (zero, run_start) {
            (false, None) => run_start = Some(start),
            (true, Some(s)) => {
                runs.push((s, &data[s..start]));
                run_start = None;
            }
            _ => {}
        }
        start = end;
    }
    if let Some(s) = run_start {
        runs.push((s, &data[s..]));
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::blob::BlobKind;
    use crate::crypto::KdfParams;
    use crate::repository::InitOptions;
    use crate::tree::{Tree, Xattr};

    /// Backup records only `user.*`; a snapshot made elsewhere may carry
    /// `trusted.*` or `security.*`, which restore applies only when asked.
    #[test]
    fn only_user_xattrs_are_restored_unless_all_are_asked_for() {
        let d = tempfile::tempdir().unwrap();
        let probe = d.path().join("probe");
        fs::write(&probe, b"").unwrap();
        if xattr::set(&probe, "trusted.cairn-probe", b"1").is_err()
            || xattr::set(&probe, "user.cairn-probe", b"1").is_err()
        {
            eprintln!("skipped: this process cannot set trusted.* and user.* xattrs here");
            return;
        }
        let src = d.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("f"), b"content").unwrap();
        let opts = InitOptions {
            kdf: KdfParams::INSECURE_TEST,
            ..Default::default()
        };
        let repo = Repository::init(MemoryBackend::new(), b"pw", opts).unwrap();
        let snap = repo.backup().path(&src).run().unwrap().snapshot;

        // A crafted snapshot: the file, with three namespaces, at the root.
        let mut node = repo
            .find_node(&snap.snapshot.tree, format!("{}/f", src.display()))
            .unwrap();
        node.xattrs = [
            ("security.cairn", "s"),
            ("trusted.x", "t"),
            ("user.kept", "u"),
        ]
        .map(|(n, v)| Xattr {
            name: n.into(),
            value: v.into(),
        })
        .to_vec();
        let bytes = Tree { nodes: vec![node] }.encode();
        let root = repo.hasher().tree_id(&bytes);
        let packer = repo.packer();
        packer.save(BlobKind::Tree, root.as_blob(), &bytes).unwrap();
        packer.flush_all().unwrap();
        let mut crafted = snap.snapshot.clone();
        crafted.tree = root;
        let id = repo.save_snapshot(&crafted).unwrap();
        packer.finish().unwrap();
        let crafted = repo.snapshot(&id).unwrap();

        let names = |p: &Path| {
            let mut v: Vec<String> = xattr::list(p)
                .unwrap()
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let t = d.path().join("default");
        let sum = repo.restore(&crafted).to(&t).run().unwrap();
        assert!(sum.warnings.is_empty(), "{:?}", sum.warnings);
        assert_eq!(names(&t.join("f")), ["user.kept"]);

        let t = d.path().join("all");
        repo.restore(&crafted)
            .to(&t)
            .all_xattrs(true)
            .run()
            .unwrap();
        let got = names(&t.join("f"));
        assert!(got.contains(&"trusted.x".to_string()), "{got:?}");
        assert!(got.contains(&"user.kept".to_string()), "{got:?}");
        assert_eq!(xattr::get(t.join("f"), "trusted.x").unwrap().unwrap(), b"t");
    }

    #[test]
    fn nonzero_runs_skip_zero_blocks() {
        let mut d = vec![0u8; 3 * HOLE_BLOCK];
        d[10] = 1;
        d[2 * HOLE_BLOCK + 5] = 2;
        let r = nonzero_runs(&d, 0);
        assert_eq!(
            r.iter().map(|(o, s)| (*o, s.len())).collect::<Vec<_>>(),
            vec![(0, HOLE_BLOCK), (2 * HOLE_BLOCK, HOLE_BLOCK)]
        );
        // Unaligned start: blocks follow the file's offsets.
        let r = nonzero_runs(&d, 100);
        assert_eq!(r[0], (0, &d[..HOLE_BLOCK - 100]));
        assert!(nonzero_runs(&vec![0u8; 10_000], 7).is_empty());
        let all: Vec<u8> = vec![1; 9000];
        assert_eq!(nonzero_runs(&all, 0), vec![(0, &all[..])]);
    }
}

#[derive(Default)]
struct Plan {
    /// Paths relative to the target.
    dirs: Vec<(PathBuf, Node)>,
    files: Vec<FileJob>,
    others: Vec<(PathBuf, Node)>,
    links: HashMap<(u64, u64), PathBuf>,
}
