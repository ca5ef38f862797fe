//! The restore target, reached only through directory descriptors: no
//! symlink below the target directory is ever followed (SPEC §16).
//!
//! Every path a restore touches is resolved from the target's descriptor
//! with `openat2(RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH)`, or one
//! `openat(O_NOFOLLOW)` per component where the kernel lacks it; the entry
//! itself is then created, replaced or changed relative to its parent's
//! descriptor. A symlink left in the target by an earlier restore (or
//! anyone else) therefore cannot send a write, chmod or chown elsewhere.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{Mode, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// How directories are opened: never through a symlink.
const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Set once `openat2` turned out to be missing (kernel before 5.6, or a
/// seccomp filter that refuses it).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// What stands where a directory must be, and was not replaced.
#[derive(Debug)]
pub(super) enum DirError {
    /// A symlink or another non-directory, kept because overwriting is off.
    NotADirectory,
    /// Any other failure.
    Io(io::Error),
}

impl From<Errno> for DirError {
    fn from(e: Errno) -> Self {
        DirError::Io(e.into())
    }
}

/// The open target directory.
pub(super) struct TargetDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl TargetDir {
    /// Opens `path`, creating it and its missing parents 0700 (the target is
    /// not part of the snapshot, so nothing widens it later).
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)?;
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// The target's path, for messages.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the directory `rel` below the target (empty: the target
    /// itself), failing rather than following a symlink anywhere on the way.
    pub(super) fn open_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        if rel.as_os_str().is_empty() {
            return self.fd.try_clone();
        }
        if !NO_OPENAT2.load(Relaxed) {
            let how = OpenHow::new()
                .flags(DIR_FLAGS)
                .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_BENEATH);
            match openat2(&self.fd, rel, how) {
                Err(Errno::ENOSYS | Errno::EPERM) => NO_OPENAT2.store(true, Relaxed),
                r => return r.map_err(io::Error::from),
            }
        }
        let mut dir = self.fd.try_clone()?;
        for c in rel.components() {
            let Component::Normal(name) = c else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a plain relative path",
                ));
            };
            dir = openat(&dir, name, DIR_FLAGS, Mode::empty())?;
        }
        Ok(dir)
    }

    /// Opens `rel`'s parent directory; returns it with `rel`'s last name.
    pub(super) fn open_parent<'p>(&self, rel: &'p Path) -> io::Result<(OwnedFd, &'p OsStr)> {
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let parent = self.open_dir(rel.parent().unwrap_or(Path::new("")))?;
        Ok((parent, name))
    }
}

/// Opens directory `name` in `parent`, creating it 0700 if missing (its
/// recorded mode is set when the restore ends). A symlink or file in its
/// place is replaced if `replace`, and otherwise an error; it is never
/// followed. Returns the directory and whether it existed before.
pub(super) fn ensure_dir(
    parent: impl AsFd,
    name: &OsStr,
    replace: bool,
) -> Result<(OwnedFd, bool), DirError> {
    let parent = parent.as_fd();
    let created = match mkdirat(parent, name, Mode::from_bits_truncate(0o700)) {
        Ok(()) => true,
        Err(Errno::EEXIST) => false,
        Err(e) => return Err(e.into()),
    };
    match openat(parent, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => Ok((fd, !created)),
        Err(Errno::ELOOP | Errno::ENOTDIR) if !replace => Err(DirError::NotADirectory),
        Err(Errno::ELOOP | Errno::ENOTDIR) => {
            unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)?;
            mkdirat(parent, name, Mode::from_bits_truncate(0o700))?;
            Ok((openat(parent, name, DIR_FLAGS, Mode::empty())?, false))
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates the file `name` in `parent`, owner-only, failing if anything
/// (even a dangling symlink) has that name.
pub(super) fn create_file(parent: impl AsFd, name: &OsStr) -> io::Result<File> {
    let fd = openat(
        parent,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    Ok(File::from(fd))
}

/// Removes the non-directory `name` in `parent`, if there is one.
pub(super) fn remove_entry(parent: impl AsFd, name: &OsStr) {
    let _ = unlinkat(parent, name, UnlinkatFlags::NoRemoveDir);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ways of resolving a path refuse a symlink anywhere in it; the
    /// per-component walk is what kernels without `openat2` get.
    #[test]
    fn open_dir_refuses_symlinks_with_and_without_openat2() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir_all(outside.join("x")).unwrap();
        let t = TargetDir::open(&d.path().join("t")).unwrap();
        std::fs::create_dir_all(d.path().join("t/a/b")).unwrap();
        std::os::unix::fs::symlink(&outside, d.path().join("t/a/link")).unwrap();
        for fallback in [false, true] {
            if fallback {
                // Harmless to other tests: the fallback is just as strict.
                NO_OPENAT2.store(true, Relaxed);
            }
            assert!(t.open_dir(Path::new("a/b")).is_ok());
            assert!(t.open_dir(Path::new("a/link")).is_err(), "{fallback}");
            assert!(t.open_dir(Path::new("a/link/x")).is_err(), "{fallback}");
        }
        // ensure_dir replaces the symlink when allowed, and only then.
        let a = t.open_dir(Path::new("a")).unwrap();
        let name = OsStr::new("link");
        assert!(matches!(
            ensure_dir(&a, name, false),
            Err(DirError::NotADirectory)
        ));
        let (_, existed) = ensure_dir(&a, name, true).unwrap();
        assert!(!existed);
        assert!(
            std::fs::symlink_metadata(d.path().join("t/a/link"))
                .unwrap()
                .is_dir()
        );
        assert!(outside.join("x").is_dir());
    }
}
