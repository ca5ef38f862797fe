//! Acceptance: a tree with every kind of entry restores identical in content
//! and every recorded property (issue 2).

use repo_core::unstable::RepositoryInternals as _;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use repo_core::SnapshotFilter;

use super::{init_repo, open_repo, random_bytes, text_lines};

fn set_mtime(p: &Path, secs: i64, nanos: u32) {
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

/// Builds the acceptance tree; returns whether xattrs were set.
pub fn build_tree(src: &Path) -> bool {
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
#[derive(Debug, PartialEq)]
struct Props {
    kind: &'static str,
    mode: u32,
    size: u64,
    mtime: (i64, i64),
    content: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    uid: u32,
    gid: u32,
}

fn collect(root: &Path) -> (HashMap<Vec<u8>, Props>, HashMap<Vec<u8>, u64>) {
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

#[test]
fn every_kind_of_entry_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir(&src).unwrap();
    let xattrs = build_tree(&src);
    let repo = init_repo(d.path());
    let out = repo.backup().path(&src).run().unwrap();
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    drop(repo);

    // A new session restores it.
    let repo = open_repo(d.path(), b"pw").unwrap();
    let snap = repo
        .find_snapshot("latest", &SnapshotFilter::default())
        .unwrap();
    let target = d.path().join("restore");
    let sum = repo.restore(&snap).to(&target).run().unwrap();
    assert!(sum.warnings.is_empty(), "{:?}", sum.warnings);
    let restored_root = target.join(src.strip_prefix("/").unwrap());

    let (want, want_ino) = collect(&src);
    let (got, got_ino) = collect(&restored_root);
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
    use std::os::unix::fs::FileTypeExt;
    assert!(
        fs::symlink_metadata(restored_root.join("a_fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

/// A restore into a target that already holds the files replaces them, and
/// a symlink in a file's place is replaced, never followed.
#[test]
fn restore_replaces_files_and_links_in_the_way() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("plain"), b"from the snapshot\n").unwrap();
    fs::write(src.join("linked"), b"also from the snapshot\n").unwrap();
    fs::set_permissions(src.join("linked"), fs::Permissions::from_mode(0o640)).unwrap();
    set_mtime(&src.join("linked"), 1_600_000_000, 123_456_789);
    let repo = init_repo(d.path());
    let snap = repo.backup().path(&src).run().unwrap().snapshot;

    let t = d.path().join("r");
    let base = t.join(src.strip_prefix("/").unwrap());
    fs::create_dir_all(&base).unwrap();
    fs::write(
        base.join("plain"),
        b"stale and much longer than the real content\n",
    )
    .unwrap();
    let outside = d.path().join("outside");
    fs::write(&outside, b"must not change").unwrap();
    symlink(&outside, base.join("linked")).unwrap();

    repo.restore(&snap).to(&t).run().unwrap();
    assert_eq!(
        fs::read(base.join("plain")).unwrap(),
        b"from the snapshot\n"
    );
    assert_eq!(fs::read(&outside).unwrap(), b"must not change");
    let m = fs::symlink_metadata(base.join("linked")).unwrap();
    assert!(m.file_type().is_file(), "the symlink was not replaced");
    assert_eq!(
        fs::read(base.join("linked")).unwrap(),
        b"also from the snapshot\n"
    );
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 123_456_789));
}

#[test]
fn restore_selected_paths_and_dump() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(src.join("keep/sub")).unwrap();
    fs::create_dir_all(src.join("skip")).unwrap();
    fs::write(src.join("keep/sub/a.txt"), b"a").unwrap();
    fs::write(src.join("keep/b.log"), b"b").unwrap();
    fs::write(src.join("skip/c.txt"), b"c").unwrap();
    let repo = init_repo(d.path());
    let snap = repo.backup().path(&src).run().unwrap().snapshot;
    let t = d.path().join("r");
    repo.restore(&snap)
        .to(&t)
        .include("keep")
        .exclude("*.log")
        .run()
        .unwrap();
    let base = t.join(src.strip_prefix("/").unwrap());
    assert_eq!(fs::read(base.join("keep/sub/a.txt")).unwrap(), b"a");
    assert!(!base.join("keep/b.log").exists());
    assert!(!base.join("skip").exists());
    let node = repo
        .find_node(
            &snap.snapshot.tree,
            format!("{}/keep/sub/a.txt", src.display()),
        )
        .unwrap();
    let mut out = Vec::new();
    repo.dump_node(&node, &mut out).unwrap();
    assert_eq!(out, b"a");
}

#[test]
fn stream_backup_round_trips_and_failed_stream_writes_no_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let data = text_lines(50_000);
    let s = repo
        .backup()
        .stream("pg/main.sql", &data[..])
        .tag("pg")
        .run()
        .unwrap()
        .snapshot;
    assert_eq!(s.snapshot.paths, vec![b"pg/main.sql".to_vec()]);
    let node = repo.find_node(&s.snapshot.tree, "pg/main.sql").unwrap();
    assert_eq!(node.chunker, repo.config().profile("small").unwrap());
    let mut out = Vec::new();
    repo.dump_node(&node, &mut out).unwrap();
    assert_eq!(out, data);

    struct Failing(usize);
    impl std::io::Read for Failing {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("command exited with status 3"));
            }
            let n = b.len().min(self.0).min(1000);
            b[..n].fill(b'x');
            self.0 -= n;
            Ok(n)
        }
    }
    let before = repo.snapshots().unwrap().len();
    let err = repo
        .backup()
        .stream("x", Failing(100_000))
        .run()
        .unwrap_err();
    assert!(matches!(err, repo_core::Error::Stream { .. }), "{err}");
    assert_eq!(repo.snapshots().unwrap().len(), before);
}
