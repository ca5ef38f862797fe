//! Restore: a snapshot, or selected paths of it, into a directory (SPEC §16).
//!
//! Directories are created first, then files are written in parallel with
//! every chunk verified against its id; hard links are made after their
//! first member exists; metadata (ownership, mode, xattrs, times) goes last,
//! directories after their children so their mtimes stick.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::id::{BlobId, TreeId};
use crate::pack::BlobLocation;
use crate::pattern::PathPatterns;
use crate::progress::{NoProgress, Progress};
use crate::repository::Repository;
use crate::snapshot::SnapshotEntry;
use crate::tree::{Node, NodeKind};

/// What a restore did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreSummary {
    /// Files written (including hard links).
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Other entries (symlinks, fifos, devices).
    pub others: u64,
    /// Content bytes written (holes not counted).
    pub bytes: u64,
    /// Problems that did not stop the restore (e.g. ownership as non-root).
    pub warnings: Vec<String>,
}

/// Builder for one restore.
pub struct Restore<'a> {
    repo: &'a Repository,
    snapshot: &'a SnapshotEntry,
    target: PathBuf,
    includes: Vec<String>,
    excludes: Vec<String>,
    numeric_ids: bool,
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
    pub fn restore<'a>(&'a self, snapshot: &'a SnapshotEntry) -> Restore<'a> {
        Restore {
            repo: self,
            snapshot,
            target: PathBuf::from("."),
            includes: Vec::new(),
            excludes: Vec::new(),
            numeric_ids: false,
            progress: &NoProgress,
            names: Default::default(),
        }
    }
}

/// Where metadata is set: through a path (directories, links, special
/// files) or on the file just written, which spares a path walk per call.
#[derive(Clone, Copy)]
enum At<'f> {
    Path,
    Open(&'f File),
}

/// A file to write, or a hard link to make.
struct FileJob {
    path: PathBuf,
    node: Node,
    link_to: Option<PathBuf>,
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
    /// Reports progress to `p`.
    pub fn progress(mut self, p: &'a dyn Progress) -> Self {
        self.progress = p;
        self
    }

    /// Runs the restore.
    pub fn run(self) -> Result<RestoreSummary> {
        let inc = PathPatterns::new(&self.includes)?;
        let exc = PathPatterns::new(&self.excludes)?;
        fs::create_dir_all(&self.target).map_err(|source| Error::Target {
            path: self.target.clone(),
            source,
        })?;
        let mut plan = Plan::default();
        self.plan_tree(
            &self.snapshot.snapshot.tree,
            Path::new("/"),
            &self.target,
            inc.is_empty(),
            &inc,
            &exc,
            &mut plan,
        )?;
        let total: u64 = plan
            .files
            .iter()
            .filter(|j| j.link_to.is_none())
            .map(|j| j.node.size)
            .sum();
        self.progress.set_total(total);

        let root = nix::unistd::geteuid().is_root();
        let written = AtomicU64::new(0);
        let warnings = std::sync::Mutex::new(Vec::new());
        let warn = |m: String| {
            self.progress.warn(&m);
            warnings.lock().unwrap_or_else(|e| e.into_inner()).push(m);
        };
        // Content first (parallel), then hard links to it.
        plan.files
            .par_iter()
            .filter(|j| j.link_to.is_none())
            .try_for_each(|j| -> Result<()> {
                let (f, n) = self.write_file(&j.path, &j.node)?;
                written.fetch_add(n, Relaxed);
                self.set_meta(&j.path, At::Open(&f), &j.node, root, &warn)?;
                self.progress.add_file(&j.path);
                Ok(())
            })?;
        for j in plan.files.iter() {
            if let Some(first) = &j.link_to {
                let _ = fs::remove_file(&j.path);
                fs::hard_link(first, &j.path).map_err(|source| Error::Target {
                    path: j.path.clone(),
                    source,
                })?;
            }
        }
        for (path, node) in &plan.others {
            self.make_special(path, node, root, &warn)?;
        }
        // Deepest directories first, so a parent's mtime is set after its children change it.
        for (path, node) in plan.dirs.iter().rev() {
            self.set_meta(path, At::Path, node, root, &warn)?;
        }
        Ok(RestoreSummary {
            files: plan.files.len() as u64,
            dirs: plan.dirs.len() as u64,
            others: plan.others.len() as u64,
            bytes: written.into_inner(),
            warnings: warnings.into_inner().unwrap_or_else(|e| e.into_inner()),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn plan_tree(
        &self,
        tree: &TreeId,
        snap_path: &Path,
        out: &Path,
        selected: bool,
        inc: &PathPatterns,
        exc: &PathPatterns,
        plan: &mut Plan,
    ) -> Result<bool> {
        let t = self.repo.load_tree(tree)?;
        let mut any = false;
        for n in &t.nodes {
            let name = OsStr::from_bytes(&n.name);
            let sp = snap_path.join(name);
            if exc.matches(sp.as_os_str().as_bytes(), &n.name) {
                continue;
            }
            let sel = selected || inc.matches(sp.as_os_str().as_bytes(), &n.name);
            let op = out.join(name);
            match n.kind {
                NodeKind::Dir => {
                    // Create before descending; remove later if nothing inside was selected.
                    let existed = op.exists();
                    fs::create_dir_all(&op).map_err(|source| Error::Target {
                        path: op.clone(),
                        source,
                    })?;
                    let idx = plan.dirs.len();
                    plan.dirs.push((op.clone(), n.clone()));
                    let sub = n
                        .subtree
                        .ok_or_else(|| Error::PathNotFound(sp.display().to_string()))?;
                    let inner = self.plan_tree(&sub, &sp, &op, sel, inc, exc, plan)?;
                    if sel || inner {
                        any = true;
                    } else {
                        plan.dirs.remove(idx);
                        if !existed {
                            let _ = fs::remove_dir(&op);
                        }
                    }
                }
                _ if !sel => {}
                NodeKind::File => {
                    any = true;
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
                        path: op,
                        node: n.clone(),
                        link_to,
                    });
                }
                _ => {
                    any = true;
                    plan.others.push((op, n.clone()));
                }
            }
        }
        Ok(any)
    }

    /// Writes a file's content, verifying every chunk; all-zero chunks
    /// become holes. Returns the bytes written.
    ///
    /// Chunks are located first so each one's offset is known; they are
    /// then read, verified and written with `pwrite` in parallel and out of
    /// order, so one large file (a database dump) uses every core instead
    /// of one. Blocks never written (zeros) stay holes.
    fn write_file(&self, path: &Path, node: &Node) -> Result<(File, u64)> {
        let err = |source| Error::Target {
            path: path.to_path_buf(),
            source,
        };
        let create = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
        };
        // Whatever is in the way (a file, a link) is replaced; an empty
        // target, the common case, costs no unlink.
        let f = match create() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_file(path);
                create()
            }
            r => r,
        }
        .map_err(err)?;
        let written = AtomicU64::new(0);
        // All-zero chunks once verified: a sparse file repeats one such
        // chunk thousands of times, and each repeat is just a hole.
        let zero_chunks = std::sync::Mutex::new(HashSet::<BlobId>::new());
        let mut pos = 0u64;
        for window in node.content.chunks(RESTORE_WINDOW) {
            let mut jobs = Vec::with_capacity(window.len());
            for id in window {
                let loc = self.repo.locate(id)?;
                let len = u64::from(loc.entry.raw_length);
                jobs.push((loc, pos));
                pos += len;
            }
            let one = |(loc, at): &(BlobLocation, u64)| -> Result<()> {
                let len = u64::from(loc.entry.raw_length);
                let known_zero = zero_chunks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&loc.entry.id);
                if !known_zero {
                    let zero = self
                        .repo
                        .with_blob_at(loc, |data| -> io::Result<bool> {
                            let runs = nonzero_runs(data, *at);
                            for (off, run) in &runs {
                                f.write_all_at(run, at + *off as u64)?;
                                written.fetch_add(run.len() as u64, Relaxed);
                            }
                            Ok(runs.is_empty())
                        })?
                        .map_err(err)?;
                    if zero {
                        zero_chunks
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(loc.entry.id);
                    }
                }
                self.progress.add_bytes(len);
                Ok(())
            };
            // A chunk that fails must not leave a file of full length with a
            // hole where the damage was: cut the file where the chunks that
            // were written and verified stop (as a sequential restore would).
            let done: Vec<AtomicBool> = jobs.iter().map(|_| AtomicBool::new(false)).collect();
            let one = |(i, job): (usize, &(BlobLocation, u64))| {
                one(job).map(|()| done[i].store(true, Relaxed))
            };
            let r = if jobs.len() > 1 {
                jobs.par_iter().enumerate().try_for_each(one)
            } else {
                jobs.iter().enumerate().try_for_each(one)
            };
            if let Err(e) = r {
                let cut = done
                    .iter()
                    .position(|d| !d.load(Relaxed))
                    .map_or(pos, |i| jobs[i].1);
                let _ = f.set_len(cut);
                return Err(e);
            }
        }
        f.set_len(pos).map_err(err)?;
        Ok((f, written.into_inner()))
    }

    fn make_special(
        &self,
        path: &Path,
        node: &Node,
        root: bool,
        warn: &(dyn Fn(String) + Sync),
    ) -> Result<()> {
        let err = |source| Error::Target {
            path: path.to_path_buf(),
            source,
        };
        let _ = fs::remove_file(path);
        match node.kind {
            NodeKind::Symlink => {
                std::os::unix::fs::symlink(OsStr::from_bytes(&node.symlink_target), path)
                    .map_err(err)?;
            }
            NodeKind::Fifo => {
                nix::unistd::mkfifo(
                    path,
                    nix::sys::stat::Mode::from_bits_truncate(node.mode as _),
                )
                .map_err(|e| err(io::Error::from(e)))?;
            }
            NodeKind::CharDevice | NodeKind::BlockDevice => {
                let kind = if node.kind == NodeKind::CharDevice {
                    nix::sys::stat::SFlag::S_IFCHR
                } else {
                    nix::sys::stat::SFlag::S_IFBLK
                };
                if let Err(e) = nix::sys::stat::mknod(
                    path,
                    kind,
                    nix::sys::stat::Mode::from_bits_truncate(node.mode as _),
                    node.rdev as _,
                ) {
                    warn(format!("{}: cannot create device: {e}", path.display()));
                    return Ok(());
                }
            }
            NodeKind::Socket => {
                warn(format!(
                    "{}: sockets are recorded but not restored",
                    path.display()
                ));
                return Ok(());
            }
            NodeKind::File | NodeKind::Dir => {}
        }
        self.set_meta(path, At::Path, node, root, warn)
    }

    /// Ownership (as root), mode, xattrs, then times — in that order, since
    /// chown clears setuid bits and every change touches ctime/mtime.
    fn set_meta(
        &self,
        path: &Path,
        at: At<'_>,
        node: &Node,
        root: bool,
        warn: &(dyn Fn(String) + Sync),
    ) -> Result<()> {
        let err = |source| Error::Target {
            path: path.to_path_buf(),
            source,
        };
        if root {
            let (uid, gid) = self.ids(node);
            let r = match at {
                At::Open(f) => std::os::unix::fs::fchown(f, Some(uid), Some(gid)),
                At::Path => std::os::unix::fs::lchown(path, Some(uid), Some(gid)),
            };
            if let Err(e) = r {
                warn(format!("{}: cannot set owner: {e}", path.display()));
            }
        }
        if node.kind != NodeKind::Symlink {
            let mode = fs::Permissions::from_mode(node.mode);
            match at {
                At::Open(f) => f.set_permissions(mode),
                At::Path => fs::set_permissions(path, mode),
            }
            .map_err(err)?;
        }
        for x in &node.xattrs {
            let name = OsStr::from_bytes(&x.name);
            let r = match at {
                At::Open(f) => xattr::FileExt::set_xattr(f, name, &x.value),
                At::Path => xattr::set(path, name, &x.value),
            };
            if let Err(e) = r {
                warn(format!(
                    "{}: cannot set xattr {}: {e}",
                    path.display(),
                    String::from_utf8_lossy(&x.name)
                ));
            }
        }
        let t = filetime::FileTime::from_unix_time(
            node.mtime_ns.div_euclid(1_000_000_000),
            node.mtime_ns.rem_euclid(1_000_000_000) as u32,
        );
        match at {
            At::Open(f) => filetime::set_file_handle_times(f, Some(t), Some(t)),
            At::Path => filetime::set_symlink_file_times(path, t, t),
        }
        .map_err(err)?;
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

/// Chunks of one file located (and held) at a time: bounds a restore's
/// memory on a file of millions of chunks while leaving work for every core.
const RESTORE_WINDOW: usize = 1024;

/// Hole granularity: file systems allocate in blocks of at least 4 KiB.
const HOLE_BLOCK: usize = 4096;

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
        let zero = data[start..end].iter().all(|&b| b == 0);
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
    dirs: Vec<(PathBuf, Node)>,
    files: Vec<FileJob>,
    others: Vec<(PathBuf, Node)>,
    links: HashMap<(u64, u64), PathBuf>,
}
