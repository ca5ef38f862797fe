//! Acceptance: a tree with every kind of entry restores identical in content
//! and every recorded property (issue 2).

use repo_core::unstable::RepositoryInternals as _;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

use repo_core::SnapshotFilter;

use cairn_testkit::tree::{assert_identical, build_every_kind, set_mtime};

use super::{init_repo, open_repo, text_lines};

#[test]
fn every_kind_of_entry_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir(&src).unwrap();
    let xattrs = build_every_kind(&src);
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

    assert_identical(&src, &restored_root, xattrs);
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

/// `metadata_after` runs once the stream has been read (it sees every
/// byte), its pairs land in the snapshot, and its error writes no
/// snapshot (pg basebackup's stop position is known only at the end).
#[test]
fn late_metadata_is_computed_after_the_stream_and_can_refuse_it() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    struct Counting<'a>(&'a [u8], Arc<AtomicUsize>);
    impl std::io::Read for Counting<'_> {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(b)?;
            self.1.fetch_add(n, Ordering::SeqCst);
            Ok(n)
        }
    }
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let data = text_lines(20_000);
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    let s = repo
        .backup()
        .stream("base.tar", Counting(&data[..], seen.clone()))
        .metadata("early", "1")
        .metadata_after(move || {
            Ok(vec![(
                "bytes".to_string(),
                counted.load(Ordering::SeqCst).to_string(),
            )])
        })
        .run()
        .unwrap()
        .snapshot;
    let meta = &s.snapshot.metadata;
    assert!(meta.contains(&("early".into(), "1".into())), "{meta:?}");
    assert!(
        meta.contains(&("bytes".into(), data.len().to_string())),
        "the closure ran before the stream ended: {meta:?}"
    );

    let before = repo.snapshots().unwrap().len();
    let called = Arc::new(Mutex::new(false));
    let flag = called.clone();
    let err = repo
        .backup()
        .stream("base.tar", &data[..])
        .metadata_after(move || {
            *flag.lock().unwrap() = true;
            Err(std::io::Error::other("no backup_manifest in the stream"))
        })
        .run()
        .unwrap_err();
    assert!(*called.lock().unwrap());
    assert!(
        matches!(&err, repo_core::Error::Stream { name, .. } if name == "base.tar"),
        "{err}"
    );
    assert!(err.to_string().contains("base.tar"), "{err}");
    assert_eq!(
        repo.snapshots().unwrap().len(),
        before,
        "no snapshot written"
    );
}
