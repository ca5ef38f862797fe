//! Issue 14, "a nothing-changed backup makes a handful of requests": the
//! snapshot files a backup reads to find its parent are kept in the local
//! cache (SPEC §12), so the next backup reads none of them again; a damaged
//! cached file is not trusted (it is checked against its name).

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use cairn_testkit::PASSWORD;
use cairn_testkit::backend::{Call, Hooked};
use cairn_testkit::repo::init_options;
use repo_core::{InitOptions, LocalBackend, ObjectKind, OpenOptions, Repository};

use super::random_bytes;

#[test]
fn backups_read_no_snapshot_file_twice_and_check_cached_ones() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), random_bytes(10_000, 1)).unwrap();
    let cache = d.path().join("cache");
    let reads = Arc::new(AtomicUsize::new(0));
    let open = || {
        let r = Arc::clone(&reads);
        Repository::open(
            Hooked::new(LocalBackend::open(d.path().join("repo"))).after(move |c| {
                if let Call::Read(ObjectKind::Snapshot, _) = c {
                    r.fetch_add(1, SeqCst);
                }
            }),
            PASSWORD,
            OpenOptions {
                cache_dir: Some(cache.clone()),
                ..Default::default()
            },
        )
        .unwrap()
    };
    let repo = Repository::init(
        LocalBackend::create(d.path().join("repo")).unwrap(),
        PASSWORD,
        InitOptions {
            cache_dir: Some(cache.clone()),
            ..init_options()
        },
    )
    .unwrap();
    let id = repo.id();
    repo.backup().path(&src).run().unwrap();
    drop(repo);
    // The snapshots are in the cache since they were written: a backup
    // with nothing changed reads none of them (without the cache, one per
    // snapshot: 1, 2, 3, 4).
    for round in 0..4 {
        reads.store(0, SeqCst);
        let out = open().backup().path(&src).run().unwrap();
        assert_eq!(out.snapshot.snapshot.summary.files_unmodified, 1);
        assert!(out.snapshot.snapshot.parent.is_some());
        assert_eq!(reads.load(SeqCst), 0, "round {round}: snapshot files read");
    }

    // Damage every cached file: the backup reads them from the storage
    // instead, and still finds its parent.
    let db = cache.join(id.to_hex()).join("index.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let damaged = conn
        .execute(
            "UPDATE snapshot_files SET bytes = zeroblob(length(bytes))",
            [],
        )
        .unwrap();
    assert!(damaged >= 4, "the backups cached their parents' files");
    drop(conn);
    reads.store(0, SeqCst);
    let repo = open();
    let out = repo.backup().path(&src).run().unwrap();
    assert_eq!(out.snapshot.snapshot.summary.files_unmodified, 1);
    assert!(out.snapshot.snapshot.parent.is_some());
    assert!(
        reads.load(SeqCst) >= damaged,
        "read from the storage instead"
    );
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}
