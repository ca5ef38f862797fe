//! A repository in a local directory (SPEC §11).
//!
//! Writes go to a temporary file in the target directory, are fsynced, then
//! hard-linked into place (which fails rather than replaces if the name
//! exists), and the directory is fsynced: a crash leaves either the whole
//! object or a stray temporary file that `list` ignores.
//!
//! Files are created 0600 and directories 0700: objects are encrypted, but
//! their names, sizes and times are still the owner's business (SPEC §17).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;

use super::{Backend, BackendError, ObjectInfo, ObjectKind};

/// Prefix of temporary files; never a valid object name.
const TMP_PREFIX: &str = ".tmp-";

/// Mode of every repository file and directory (before the umask).
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// A repository directory.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    /// Opens the directory of an existing repository (nothing is checked
    /// until [`Repository::open`](crate::Repository::open) reads its config).
    ///
    /// For a *new* repository use [`LocalBackend::create`]: `open` makes no
    /// directories, so initializing a repository at a path that does not
    /// hold the layout fails at its first write.
    pub fn open(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Creates the directory layout for a new repository, to pass to
    /// [`Repository::init`](crate::Repository::init). The directory may
    /// exist if it is empty. All 256 pack directories are made here, so the
    /// names a pack write depends on are made durable once (SPEC §11).
    pub fn create(root: impl Into<PathBuf>) -> Result<Self, BackendError> {
        let root = root.into();
        let err =
            |e| BackendError::io("create", ObjectKind::Config, &root.display().to_string(), e);
        let mut dirs = fs::DirBuilder::new();
        dirs.recursive(true).mode(DIR_MODE);
        dirs.create(&root).map_err(err)?;
        for kind in ObjectKind::ALL {
            if kind != ObjectKind::Config {
                dirs.create(root.join(kind.dir())).map_err(err)?;
            }
        }
        let packs = root.join(ObjectKind::Pack.dir());
        for i in 0..=255u8 {
            dirs.create(packs.join(hex::encode([i]))).map_err(err)?;
        }
        sync_dir(&packs).map_err(err)?;
        sync_dir(&root).map_err(err)?;
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent).map_err(err)?;
        }
        Ok(Self { root })
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, kind: ObjectKind, name: &str) -> PathBuf {
        match kind {
            ObjectKind::Config => self.root.clone(),
            // Packs fan out over 256 directories to keep listings short.
            ObjectKind::Pack => self
                .root
                .join(kind.dir())
                .join(name.get(..2).unwrap_or("00")),
            _ => self.root.join(kind.dir()),
        }
    }

    /// The file of an object; names that could escape the layout are refused.
    fn path(&self, kind: ObjectKind, name: &str) -> Result<PathBuf, BackendError> {
        if !valid_name(name) {
            return Err(BackendError::io(
                "resolve",
                kind,
                name,
                io::Error::new(io::ErrorKind::InvalidInput, "invalid object name"),
            ));
        }
        Ok(self.dir(kind, name).join(name))
    }
}

/// The file system's modification time: the storage's clock, not ours.
fn mtime_ns(md: &fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    md.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.mtime_nsec())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    tests::SYNCED.with(|s| s.borrow_mut().push(dir.to_path_buf()));
    File::open(dir)?.sync_all()
}

/// A name the layout accepts (SPEC §11); every backend checks it.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn read(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>, BackendError> {
        fs::read(self.path(kind, name)?).map_err(|e| BackendError::io("read", kind, name, e))
    }

    fn read_into(
        &self,
        kind: ObjectKind,
        name: &str,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        let err = |e| BackendError::io("read", kind, name, e);
        let mut f = File::open(self.path(kind, name)?).map_err(err)?;
        buf.clear();
        f.read_to_end(buf).map_err(err)?;
        Ok(())
    }

    fn read_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, BackendError> {
        let err = |e| BackendError::io("read", kind, name, e);
        let f = File::open(self.path(kind, name)?).map_err(err)?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, offset).map_err(err)?;
        Ok(buf)
    }

    fn read_range_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        let err = |e| BackendError::io("read", kind, name, e);
        let f = File::open(self.path(kind, name)?).map_err(err)?;
        buf.clear();
        buf.resize(len as usize, 0);
        f.read_exact_at(buf, offset).map_err(err)
    }

    fn stat(&self, kind: ObjectKind, name: &str) -> Result<ObjectInfo, BackendError> {
        let md = fs::metadata(self.path(kind, name)?)
            .map_err(|e| BackendError::io("stat", kind, name, e))?;
        Ok(ObjectInfo {
            name: name.to_string(),
            size: md.len(),
            modified_ns: mtime_ns(&md),
        })
    }

    fn size(&self, kind: ObjectKind, name: &str) -> Result<u64, BackendError> {
        fs::metadata(self.path(kind, name)?)
            .map(|m| m.len())
            .map_err(|e| BackendError::io("stat", kind, name, e))
    }

    fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        let err = |e| BackendError::io("write", kind, name, e);
        if !valid_name(name) {
            return Err(err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "invalid object name",
            )));
        }
        let dir = self.dir(kind, name);
        let target = dir.join(name);
        if target.exists() {
            return Ok(());
        }
        // Repositories made before `create` made every pack directory
        // create them here; the new name must be durable in `data/` before
        // a pack in it counts as written.
        match fs::DirBuilder::new().mode(DIR_MODE).create(&dir) {
            Ok(()) => {
                if let Some(parent) = dir.parent() {
                    sync_dir(parent).map_err(err)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(e)),
        }
        let mut rnd = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut rnd);
        let tmp = dir.join(format!("{TMP_PREFIX}{}", hex::encode(rnd)));
        let result = (|| {
            // Owner only: a key file lets whoever reads it try passwords
            // offline, and the rest reveals sizes and times (SPEC §17).
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            drop(f);
            // link(2) fails instead of replacing an existing name; a file
            // system without hard links is not supported (SPEC §18).
            match fs::hard_link(&tmp, &target) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            let _ = fs::remove_file(&tmp);
            sync_dir(&dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(err)
    }

    /// Temp file, fsync, rename(2) over the name, fsync the directory:
    /// rename is atomic, so a reader or a crash sees one version whole.
    fn replace(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        let err = |e| BackendError::io("replace", kind, name, e);
        let target = self.path(kind, name)?;
        let dir = self.dir(kind, name);
        if let Err(e) = fs::DirBuilder::new().mode(DIR_MODE).create(&dir)
            && e.kind() != io::ErrorKind::AlreadyExists
        {
            return Err(err(e));
        }
        let mut rnd = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut rnd);
        let tmp = dir.join(format!("{TMP_PREFIX}{}", hex::encode(rnd)));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &target)?;
            sync_dir(&dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(err)
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>, BackendError> {
        let err = |e| BackendError::io("list", kind, "", e);
        let mut out = Vec::new();
        let mut scan = |dir: &Path| -> io::Result<()> {
            let rd = match fs::read_dir(dir) {
                Ok(rd) => rd,
                // Also when a path component is a file: `-r` naming a
                // regular file is no repository, not an I/O failure.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) =>
                {
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            for e in rd {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                // Temporary names first: a writer removes its `.tmp-` name
                // right after linking the object.
                if !valid_name(&name) || (kind == ObjectKind::Config && name != "config") {
                    continue;
                }
                let md = match e.metadata() {
                    Ok(md) => md,
                    // Deleted since the directory was read (a prune, a
                    // lock's owner): not listed, as the contract allows.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if md.is_file() {
                    out.push(ObjectInfo {
                        name,
                        size: md.len(),
                        modified_ns: mtime_ns(&md),
                    });
                }
            }
            Ok(())
        };
        match kind {
            ObjectKind::Config => scan(&self.root).map_err(err)?,
            ObjectKind::Pack => {
                let base = self.root.join(kind.dir());
                let subdirs = match fs::read_dir(&base) {
                    Ok(rd) => rd.collect::<io::Result<Vec<_>>>().map_err(err)?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(err(e)),
                };
                for d in subdirs {
                    if d.file_type().map_err(err)?.is_dir() {
                        scan(&d.path()).map_err(err)?;
                    }
                }
            }
            _ => scan(&self.root.join(kind.dir())).map_err(err)?,
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<(), BackendError> {
        let path = self.path(kind, name)?;
        let dir = self.dir(kind, name);
        fs::remove_file(path).map_err(|e| BackendError::io("delete", kind, name, e))?;
        sync_dir(&dir).map_err(|e| BackendError::io("delete", kind, name, e))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use super::super::{Backend, ObjectKind};

    thread_local! {
        /// Directories `sync_dir` was called on, by this thread.
        pub(super) static SYNCED: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
    }

    fn take_synced() -> Vec<PathBuf> {
        SYNCED.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }

    #[test]
    fn conformance() {
        let d = tempfile::tempdir().unwrap();
        let b = super::LocalBackend::create(d.path().join("repo")).unwrap();
        crate::backend::conformance::run(&b);
        // No temporary files are left behind.
        let stray = walkdir::WalkDir::new(d.path())
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(super::TMP_PREFIX)
            })
            .count();
        assert_eq!(stray, 0);
    }

    /// A listing while another process writes and deletes objects of the
    /// kind (a backup's walk beside a prune) omits what vanished between
    /// reading the directory and looking at an entry, instead of failing
    /// (SPEC §11: a listing may omit concurrent objects).
    #[test]
    fn a_listing_survives_objects_vanishing_under_it() {
        let d = tempfile::tempdir().unwrap();
        let b = super::LocalBackend::create(d.path().join("repo")).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let name = format!("{:064x}", i % 50);
                    b.write(ObjectKind::Mark, &name, b"m").unwrap();
                    b.delete(ObjectKind::Mark, &name).unwrap();
                    i += 1;
                }
            });
            for _ in 0..3000 {
                if let Err(e) = b.list(ObjectKind::Mark) {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    panic!("listing failed: {e}");
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }

    #[test]
    fn key_files_are_readable_by_the_owner_only() {
        let d = tempfile::tempdir().unwrap();
        let b = super::LocalBackend::create(d.path().join("repo")).unwrap();
        let name = "cd".repeat(32);
        b.write(ObjectKind::Key, &name, b"key").unwrap();
        let md = std::fs::metadata(d.path().join("repo/keys").join(&name)).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
    }

    /// Every file and directory of a new repository is the owner's alone.
    #[test]
    fn repository_files_are_0600_and_directories_0700() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repo");
        let b = super::LocalBackend::create(&root).unwrap();
        for kind in ObjectKind::ALL {
            b.write(kind, &"ab".repeat(32), b"object").unwrap();
        }
        let mut seen = 0;
        for e in walkdir::WalkDir::new(&root) {
            let e = e.unwrap();
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            let want = if e.file_type().is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode, want, "{}", e.path().display());
            seen += 1;
        }
        assert!(seen > 256 + ObjectKind::ALL.len());
    }

    /// `create` makes and syncs every pack directory; a repository made
    /// without them gets the new directory's name synced in `data/` before
    /// a pack in it counts as written (SPEC §18).
    #[test]
    fn a_new_pack_directory_is_synced_in_its_parent() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repo");
        take_synced();
        let b = super::LocalBackend::create(&root).unwrap();
        let data = root.join("data");
        assert!(data.join("00").is_dir() && data.join("ff").is_dir());
        assert!(take_synced().contains(&data), "data/ not synced at create");

        // An older repository: no fan-out directories yet.
        std::fs::remove_dir(data.join("ab")).unwrap();
        b.write(ObjectKind::Pack, &"ab".repeat(32), b"pack")
            .unwrap();
        let synced = take_synced();
        assert!(synced.contains(&data), "data/ not synced: {synced:?}");
        assert!(synced.contains(&data.join("ab")));
        // Later packs in the same directory sync only that directory.
        b.write(ObjectKind::Pack, &format!("ab{}", "cd".repeat(31)), b"p2")
            .unwrap();
        assert_eq!(take_synced(), vec![data.join("ab")]);
    }
}
