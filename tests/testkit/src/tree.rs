//! Source trees as maps from relative path to contents: written before a
//! backup, read back after a restore, compared as values.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use repo_core::{Repository, SnapshotId};

use crate::rng::{random_bytes, text_lines};

/// Relative path → contents: a source tree, or what a snapshot restores.
pub type Files = BTreeMap<String, Vec<u8>>;

/// Replaces `dir` with exactly `files` (parents created as needed).
pub fn write_tree(dir: &Path, files: &Files) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    for (rel, data) in files {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
}

/// Every regular file below `dir`, by relative path (empty if `dir` is
/// missing, as after a restore that failed before creating it).
pub fn read_tree(dir: &Path) -> Files {
    if !dir.exists() {
        return Files::new();
    }
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap();
            (
                rel.to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Restores snapshot `id` (backed up from the absolute path `src`) into
/// `scratch/restore` and returns the files found below `src`'s place there.
pub fn restored(repo: &Repository, id: &SnapshotId, src: &Path, scratch: &Path) -> Files {
    let out = scratch.join("restore");
    let _ = fs::remove_dir_all(&out);
    let snap = repo.snapshot(id).unwrap();
    repo.restore(&snap).to(&out).run().unwrap();
    read_tree(&out.join(src.strip_prefix("/").unwrap()))
}

/// Sets both times of `p` (a symlink itself, not its target).
pub fn set_mtime(p: &Path, secs: i64, nanos: u32) {
    filetime::set_symlink_file_times(
        p,
        FileTime::from_unix_time(secs, nanos),
        FileTime::from_unix_time(secs, nanos),
    )
    .unwrap();
}

/// Whether `user.*` xattrs work on this file system (tmpfs without user
/// xattrs, some overlay setups, refuse them).
fn xattrs_supported(dir: &Path) -> bool {
    let p = dir.join(".xattr-probe");
    fs::write(&p, b"").unwrap();
    let ok = xattr::set(&p, "user.probe", b"1").is_ok();
    fs::remove_file(&p).unwrap();
    ok
}

/// Builds the acceptance tree of issue 2 in the existing directory `src`:
/// every kind of entry (empty and large files, compressible text, empty and
/// 0700 directories, modes, unicode, non-UTF-8 and newline names, relative
/// and dangling symlinks, a hard link pair, a sparse file, a fifo, xattrs
/// where the file system allows them), nanosecond mtimes everywhere.
/// Returns whether xattrs were set.
pub fn build_every_kind(src: &Path) -> bool {
    fs::create_dir_all(src.join("nested/deeper/deepest")).unwrap();
    fs::create_dir_all(src.join("empty_dir")).unwrap();
    fs::write(src.join("empty_file"), b"").unwrap();
    fs::write(src.join("large_random.bin"), random_bytes(5 << 20, 1)).unwrap();
    fs::write(src.join("nested/compressible.sql"), text_lines(60_000)).unwrap();
    fs::write(src.join("nested/deeper/deepest/leaf.txt"), b"leaf\n").unwrap();
    fs::write(src.join("mode600"), b"secret\n").unwrap();
    fs::set_permissions(src.join("mode600"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(src.join("mode755"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(src.join("mode755"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(src.join("dir700")).unwrap();
    fs::write(src.join("dir700/inside"), b"x").unwrap();
    fs::set_permissions(src.join("dir700"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(src.join("ünïcødé-名前.txt"), "unicode ✓\n").unwrap();
    fs::write(
        src.join(OsStr::from_bytes(b"non-utf8-\xff\xfe.bin")),
        b"raw name",
    )
    .unwrap();
    fs::write(src.join("line\nbreak"), b"newline in name").unwrap();
    symlink("nested/deeper/deepest/leaf.txt", src.join("relative_link")).unwrap();
    symlink("/nonexistent/target/of/dangling", src.join("dangling_link")).unwrap();
    fs::write(src.join("hard_a"), b"shared by two names\n").unwrap();
    fs::hard_link(src.join("hard_a"), src.join("nested/hard_b")).unwrap();
    // Sparse: 1 MiB of data, a 64 MiB hole, 1 MiB of data, then a trailing hole.
    let sparse = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(src.join("sparse.img"))
        .unwrap();
    use std::io::{Seek, SeekFrom, Write};
    let mut f = sparse;
    f.write_all(&random_bytes(1 << 20, 2)).unwrap();
    f.seek(SeekFrom::Start(65 << 20)).unwrap();
    f.write_all(&random_bytes(1 << 20, 3)).unwrap();
    f.set_len(80 << 20).unwrap();
    drop(f);
    nix::unistd::mkfifo(
        &src.join("a_fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    let xattrs = xattrs_supported(src);
    if xattrs {
        xattr::set(src.join("mode600"), "user.comment", b"kept with the file").unwrap();
        xattr::set(src.join("nested"), "user.dir-attr", b"\x00\x01binary").unwrap();
    }
    // Nanosecond mtimes on everything, directories last.
    let mut all: Vec<PathBuf> = walkdir::WalkDir::new(src)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .collect();
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, 1_600_000_000 + i as i64 * 1000, 123_456_789 + i as u32);
    }
    xattrs
}

/// Every property the format records, for one path, keyed by relative path.
/// Every property the format records, for one path.
#[derive(Debug, PartialEq)]
pub struct Props {
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: &'static str,
    /// Permission bits.
    pub mode: u32,
    /// Size of a regular file, else 0.
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Contents of a regular file.
    pub content: Option<Vec<u8>>,
    /// Target of a symlink.
    pub link: Option<Vec<u8>>,
    /// `user.*` extended attributes, sorted.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Every entry below `root` by relative path with its [`Props`], and the
/// inode of every regular file (to compare hard links).
pub fn entries(root: &Path) -> (HashMap<Vec<u8>, Props>, HashMap<Vec<u8>, u64>) {
    let mut out = HashMap::new();
    let mut inodes = HashMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let md = fs::symlink_metadata(e.path()).unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let ft = md.file_type();
        let kind = if ft.is_file() {
            "file"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else {
            "other"
        };
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = if ft.is_symlink() {
            Vec::new()
        } else {
            xattr::list(e.path())
                .map(|l| {
                    l.filter(|n| n.as_bytes().starts_with(b"user."))
                        .map(|n| {
                            (
                                n.as_bytes().to_vec(),
                                xattr::get(e.path(), &n).unwrap().unwrap(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        xattrs.sort();
        if ft.is_file() {
            inodes.insert(rel.clone(), md.ino());
        }
        out.insert(
            rel,
            Props {
                kind,
                mode: md.mode() & 0o7777,
                size: if ft.is_file() { md.size() } else { 0 },
                mtime: (md.mtime(), md.mtime_nsec()),
                content: ft.is_file().then(|| fs::read(e.path()).unwrap()),
                link: ft.is_symlink().then(|| {
                    fs::read_link(e.path())
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                }),
                xattrs,
                uid: md.uid(),
                gid: md.gid(),
            },
        );
    }
    (out, inodes)
}

/// Asserts that `restored_root` holds the tree [`build_every_kind`] made in
/// `src` with every recorded property: contents, kinds, modes, times, link
/// targets, owners, xattrs (`xattrs`: they were set), hard links still
/// linked, holes still holes, the fifo a fifo.
pub fn assert_identical(src: &Path, restored_root: &Path, xattrs: bool) {
    use std::os::unix::fs::FileTypeExt;
    let (want, want_ino) = entries(src);
    let (got, got_ino) = entries(restored_root);
    let mut keys: Vec<_> = want.keys().collect();
    keys.sort();
    for k in &keys {
        let g = got
            .get(*k)
            .unwrap_or_else(|| panic!("{:?} missing after restore", String::from_utf8_lossy(k)));
        assert_eq!(g, &want[*k], "{:?} differs", String::from_utf8_lossy(k));
    }
    assert_eq!(got.len(), want.len(), "extra entries restored");
    if xattrs {
        assert!(!want[&b"mode600"[..]].xattrs.is_empty());
    }
    // Hard links stay linked; other files do not share inodes.
    assert_eq!(got_ino[&b"hard_a"[..]], got_ino[&b"nested/hard_b"[..]]);
    assert_eq!(want_ino[&b"hard_a"[..]], want_ino[&b"nested/hard_b"[..]]);
    assert_ne!(got_ino[&b"hard_a"[..]], got_ino[&b"mode600"[..]]);
    // The sparse file's holes stay holes.
    let sparse = fs::metadata(restored_root.join("sparse.img")).unwrap();
    assert_eq!(sparse.size(), 80 << 20);
    assert!(
        sparse.blocks() * 512 < 8 << 20,
        "sparse file fully allocated: {} blocks",
        sparse.blocks()
    );
    // The fifo is a fifo.
    assert!(
        fs::symlink_metadata(restored_root.join("a_fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}
