//! Inspecting snapshots: diff, find and stats (issue 3, "Inspect and repair").

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn_testkit::backend::{Call, Hooked};
use repo_core::inspect::{Change, MetadataField, StatsMode};
use repo_core::{InitOptions, LocalBackend, NodeKind, ObjectKind, Repository, SnapshotEntry};

use super::{WEAK_KDF, init_repo, random_bytes, text_lines};

fn write(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

fn set_mtime(path: &Path, secs: i64) {
    filetime::set_file_mtime(path, filetime::FileTime::from_unix_time(secs, 0)).unwrap();
}

/// `path` relative to `src`, e.g. `/a/b`; `None` for paths not below it.
fn below<'a>(src: &Path, path: &'a [u8]) -> Option<&'a str> {
    let p = path.strip_prefix(src.as_os_str().as_bytes())?;
    p.starts_with(b"/").then(|| std::str::from_utf8(p).unwrap())
}

#[test]
fn diff_marks_each_change_and_loads_only_changed_directories() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    write(&src.join("content.txt"), b"one\n");
    write(&src.join("perm.txt"), b"permissions change");
    fs::set_permissions(src.join("perm.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    write(&src.join("removed.txt"), b"removed file");
    write(&src.join("thing/a"), b"thing a");
    write(&src.join("thing/b"), b"thing b, longer");
    // A large unchanged subtree: 40 directories the diff must not load.
    for i in 0..40 {
        for j in 0..3 {
            write(
                &src.join(format!("big/d{i:02}/f{j}")),
                format!("{i} {j}").as_bytes(),
            );
        }
    }
    set_mtime(&src.join("content.txt"), 1_600_000_000);

    let pack_reads = Arc::new(AtomicUsize::new(0));
    // One range read of a pack per blob read: during a diff, one per tree
    // loaded.
    let counter = Arc::clone(&pack_reads);
    let backend =
        Hooked::new(LocalBackend::create(d.path().join("repo")).unwrap()).before(move |call| {
            if let Call::ReadRange(ObjectKind::Pack, ..) = call {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        });
    let opts = InitOptions {
        kdf: WEAK_KDF,
        ..Default::default()
    };
    let repo = Repository::init(backend, b"pw", opts).unwrap();
    let first = repo.backup().path(&src).run().unwrap().snapshot;

    write(&src.join("content.txt"), b"two\n");
    set_mtime(&src.join("content.txt"), 1_600_000_100);
    fs::set_permissions(src.join("perm.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(src.join("removed.txt")).unwrap();
    write(&src.join("added.txt"), b"new file");
    fs::remove_dir_all(src.join("thing")).unwrap();
    write(&src.join("thing"), b"now a file");
    let second = repo.backup().path(&src).run().unwrap().snapshot;

    let before = pack_reads.load(Ordering::SeqCst);
    let diff = repo.diff(&first, &second).unwrap();
    let loads = pack_reads.load(Ordering::SeqCst) - before;
    // Each side loads the trees from the root down to `src` (all changed, as
    // `src` changed), plus the old `thing` directory; `big` is skipped.
    let depth = src.components().count();
    assert_eq!(loads, 2 * depth + 1, "trees loaded by the diff");

    let got: Vec<_> = diff
        .changes
        .iter()
        .filter_map(|e| below(&src, &e.path).map(|p| (p, e.change)))
        .collect();
    assert_eq!(
        got,
        [
            ("/added.txt", Change::Added),
            ("/content.txt", Change::Modified),
            ("/perm.txt", Change::MetadataOnly),
            ("/removed.txt", Change::Removed),
            ("/thing", Change::TypeChanged),
            ("/thing/a", Change::Removed),
            ("/thing/b", Change::Removed),
        ]
    );
    let entry = |p: &str| {
        diff.changes
            .iter()
            .find(|e| below(&src, &e.path) == Some(p))
            .unwrap()
    };
    assert_eq!(entry("/perm.txt").fields, [MetadataField::Mode]);
    assert!(entry("/content.txt").fields.contains(&MetadataField::Mtime));
    let t = entry("/thing");
    assert_eq!(
        (t.old_kind, t.new_kind),
        (Some(NodeKind::Dir), Some(NodeKind::File))
    );
    assert_eq!((t.old_size, t.new_size), (Some(0), Some(10)));
    assert_eq!(entry("/added.txt").old_kind, None);

    let tot = &diff.totals;
    assert_eq!(tot.files_added, 1);
    assert_eq!(tot.files_removed, 3);
    assert_eq!(tot.files_modified, 1);
    assert_eq!(tot.type_changed, 1);
    assert_eq!((tot.dirs_added, tot.dirs_removed), (0, 0));
    // perm.txt, plus `src` and possibly its ancestors (their mtimes moved).
    assert!(tot.metadata_only >= 1);
    assert_eq!(
        tot.bytes_added,
        ("new file".len() + 4 + "now a file".len()) as u64
    );
    assert_eq!(
        tot.bytes_removed,
        (4 + "removed file".len() + "thing a".len() + "thing b, longer".len()) as u64
    );

    // Nothing differs from a snapshot to itself, and nothing is loaded.
    let before = pack_reads.load(Ordering::SeqCst);
    let same = repo.diff(&second, &second).unwrap();
    assert!(same.changes.is_empty());
    assert_eq!(pack_reads.load(Ordering::SeqCst), before);
    // The other way round, additions become removals.
    let back = repo.diff(&second, &first).unwrap();
    assert_eq!(back.totals.files_added, 3);
    assert_eq!(back.totals.files_removed, 1);
    assert_eq!(back.totals.bytes_added, tot.bytes_removed);
}

#[test]
fn find_with_name_and_path_globs_across_snapshots() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    write(&src.join("a.log"), b"aaaa");
    write(&src.join("sub/b.log"), b"bb");
    write(&src.join("sub/c.txt"), b"c");
    let repo = init_repo(d.path());
    let s1 = repo
        .backup()
        .path(&src)
        .time_ns(1_000)
        .run()
        .unwrap()
        .snapshot;
    write(&src.join("sub/d.txt"), b"d");
    let s2 = repo
        .backup()
        .path(&src)
        .time_ns(2_000)
        .run()
        .unwrap()
        .snapshot;
    fs::remove_file(src.join("a.log")).unwrap();
    write(&src.join("sub/deep/e.log"), b"eeeee");
    let s3 = repo
        .backup()
        .path(&src)
        .time_ns(3_000)
        .run()
        .unwrap()
        .snapshot;
    let all = [s1.clone(), s2.clone(), s3.clone()];

    let found = |pattern: &str, snaps: &[SnapshotEntry]| -> Vec<(u8, String)> {
        repo.find(pattern, snaps)
            .unwrap()
            .iter()
            .map(|m| {
                let n = [&s1, &s2, &s3]
                    .iter()
                    .position(|s| s.id == m.snapshot)
                    .unwrap() as u8
                    + 1;
                (n, below(&src, &m.path).unwrap().to_string())
            })
            .collect()
    };
    let pairs = |v: &[(u8, &str)]| -> Vec<(u8, String)> {
        v.iter().map(|(n, p)| (*n, p.to_string())).collect()
    };

    assert_eq!(
        found("*.log", &all),
        pairs(&[
            (1, "/a.log"),
            (1, "/sub/b.log"),
            (2, "/a.log"),
            (2, "/sub/b.log"),
            (3, "/sub/b.log"),
            (3, "/sub/deep/e.log"),
        ])
    );
    let abs = format!("{}/sub/*.txt", src.display());
    assert_eq!(
        found(&abs, &all),
        pairs(&[
            (1, "/sub/c.txt"),
            (2, "/sub/c.txt"),
            (2, "/sub/d.txt"),
            (3, "/sub/c.txt"),
            (3, "/sub/d.txt"),
        ])
    );
    // A relative path glob matches at any depth; `*` never crosses a `/`.
    assert_eq!(
        found("sub/*.log", &all),
        pairs(&[(1, "/sub/b.log"), (2, "/sub/b.log"), (3, "/sub/b.log")])
    );
    assert_eq!(
        found("sub/**/*.log", &all[2..]),
        pairs(&[(3, "/sub/b.log"), (3, "/sub/deep/e.log")])
    );

    let m = repo.find("e.log", &all).unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!((m[0].kind, m[0].size), (NodeKind::File, 5));
    assert_eq!(m[0].snapshot_time_ns, 3_000);
    let m = repo.find("sub", &all[..1]).unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].kind, NodeKind::Dir);
    assert!(repo.find("nothing*", &all).unwrap().is_empty());
    assert!(matches!(
        repo.find("[", &all),
        Err(repo_core::Error::InvalidArgument(_))
    ));
}

#[test]
fn stats_count_logical_and_unique_sizes_exactly() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let a = random_bytes(1000, 1);
    let c = text_lines(10);
    write(&src.join("a"), &a);
    write(&src.join("b"), &a); // same content as `a`: one chunk for both
    write(&src.join("c"), &c);
    let repo = init_repo(d.path());
    let s1 = repo.backup().path(&src).run().unwrap().snapshot;
    let s2 = repo.backup().path(&src).run().unwrap().snapshot;
    let both = [s1.clone(), s2.clone()];
    let logical = (a.len() * 2 + c.len()) as u64;
    // Nodes are the ancestors of `src` (the root is not a node) and `src`.
    let dirs = (src.components().count() - 1) as u64;

    let one = repo
        .stats(std::slice::from_ref(&s1), StatsMode::RestoreSize)
        .unwrap();
    assert_eq!(one.snapshots, 1);
    assert_eq!(
        (
            one.restore.files,
            one.restore.dirs,
            one.restore.others,
            one.restore.bytes
        ),
        (3, dirs, 0, logical)
    );
    assert_eq!((one.data_blobs, one.dedup_ratio), (None, None));
    let two = repo.stats(&both, StatsMode::RestoreSize).unwrap();
    assert_eq!(
        (two.restore.files, two.restore.dirs, two.restore.bytes),
        (6, 2 * dirs, 2 * logical),
        "restore size counts every snapshot"
    );

    // The two distinct chunks, as the index stores them.
    let stored: u64 = [b"a", b"c"]
        .iter()
        .map(|name| {
            let node = repo
                .find_node(
                    &s1.snapshot.tree,
                    src.join(std::str::from_utf8(*name).unwrap())
                        .as_os_str()
                        .as_bytes(),
                )
                .unwrap();
            assert_eq!(node.content.len(), 1);
            let loc = repo.index().lookup(&node.content[0]).unwrap().unwrap();
            u64::from(loc.entry.length)
        })
        .sum();
    let raw1 = repo
        .stats(std::slice::from_ref(&s1), StatsMode::Raw)
        .unwrap();
    let data = raw1.data_blobs.unwrap();
    assert_eq!(data.count, 2);
    assert_eq!(data.raw_bytes, (a.len() + c.len()) as u64);
    assert_eq!(data.stored_bytes, stored);
    assert_eq!(data.missing, 0);
    assert_eq!(raw1.tree_blobs.unwrap().count, dirs + 1);
    assert_eq!(
        raw1.compression_ratio,
        Some(data.raw_bytes as f64 / stored as f64)
    );
    assert_eq!(raw1.dedup_ratio, None);
    let raw2 = repo.stats(&both, StatsMode::Raw).unwrap();
    assert_eq!(raw2.data_blobs, raw1.data_blobs, "unique data is unchanged");
    assert_eq!(raw2.restore.bytes, 2 * logical);

    let dedup = repo.stats(&both, StatsMode::Dedup).unwrap();
    assert_eq!(
        dedup.dedup_ratio,
        Some((2 * logical) as f64 / data.raw_bytes as f64)
    );

    // The repository's size is that of every pack file on disk.
    let (mut packs, mut bytes) = (0u64, 0u64);
    for e in walkdir::WalkDir::new(d.path().join("repo/data")) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            packs += 1;
            bytes += e.metadata().unwrap().len();
        }
    }
    assert!(packs >= 2);
    assert_eq!(
        (dedup.repository.packs, dedup.repository.bytes),
        (packs, bytes)
    );
    assert_eq!(repo.stats(&[], StatsMode::Dedup).unwrap().restore.files, 0);
}
