//! Copying snapshots between repositories (SPEC §24): only missing blobs
//! are sent, metadata and the original's id are kept, copying again copies
//! nothing, unrelated repositories restore identical, a failed copy leaves
//! no snapshot and the rerun completes.

use std::fs;
use std::path::Path;

use repo_core::unstable::RepositoryInternals;
use repo_core::unstable::backend::{Fault, FaultPlan, FaultyBackend, OpKind};
use repo_core::{
    Backend, CopyStats, Error, InitOptions, MemoryBackend, ObjectKind, OpenOptions, Repository,
    SnapshotEntry, SnapshotFilter,
};

use super::{Files, check_clean, init_memory, random_bytes, read_tree, restored, write_tree};

/// A repository in memory cutting and naming content like `src`.
fn init_related(src: &Repository) -> (MemoryBackend, Repository) {
    let b = MemoryBackend::new();
    let opts = InitOptions {
        content: Some(src.content_params()),
        ..cairn_testkit::repo::init_options()
    };
    let repo = Repository::init(b.clone(), cairn_testkit::PASSWORD, opts).unwrap();
    (b, repo)
}

fn files(seed: u64) -> Files {
    let mut f = Files::new();
    f.insert("big.bin".into(), random_bytes(3 << 20, seed));
    f.insert(
        "sub/small.txt".into(),
        format!("small {seed}\n").into_bytes(),
    );
    f.insert("sub/deeper/mid.bin".into(), random_bytes(700_000, seed + 1));
    f.insert("empty".into(), Vec::new());
    f
}

/// Backs up `files` written at `dir/src` into `repo`, with metadata to keep.
fn backup(repo: &Repository, dir: &Path, files: &Files, tag: &str) -> SnapshotEntry {
    write_tree(&dir.join("src"), files);
    backup_again(repo, dir, tag)
}

/// Backs up `dir/src` as it is.
fn backup_again(repo: &Repository, dir: &Path, tag: &str) -> SnapshotEntry {
    let src = dir.join("src");
    repo.backup()
        .path(&src)
        .host("db1")
        .tag(tag)
        .tag("nightly")
        .metadata("postgres.server_version", "16.2")
        .time_ns(1_700_000_000_000_000_000 + tag.len() as i64)
        .run()
        .unwrap()
        .snapshot
}

/// The destination's snapshot copied from `source`.
fn copy_of(dst: &Repository, source: &SnapshotEntry) -> SnapshotEntry {
    let all = dst.snapshots().unwrap();
    let mut it = all
        .iter()
        .filter(|s| s.snapshot.original == Some(source.id));
    let one = it.next().expect("no copy of the snapshot").clone();
    assert!(it.next().is_none(), "two copies of one snapshot");
    one
}

fn assert_kept(copy: &SnapshotEntry, source: &SnapshotEntry) {
    let (c, s) = (&copy.snapshot, &source.snapshot);
    assert_eq!(c.original, Some(source.id));
    assert_eq!(
        (
            c.time_ns,
            &c.host,
            &c.username,
            &c.paths,
            &c.tags,
            &c.metadata
        ),
        (
            s.time_ns,
            &s.host,
            &s.username,
            &s.paths,
            &s.tags,
            &s.metadata
        )
    );
    assert_eq!(c.summary, s.summary);
    assert_ne!(copy.id, source.id, "a copy is a new snapshot file");
}

fn copy_all(src: &Repository, dst: &Repository) -> CopyStats {
    dst.copy_from(src).run().unwrap()
}

#[test]
fn related_repositories_send_only_missing_blobs_and_copying_again_sends_nothing() {
    let d = tempfile::tempdir().unwrap();
    let (_, src) = init_memory();
    let (db, dst) = init_related(&src);
    assert_eq!(RepositoryInternals::config(&dst).version, 3);
    assert_eq!(
        src.content_params().fingerprint(),
        dst.content_params().fingerprint()
    );

    // The same data backed up directly into both: the same chunk and tree
    // ids, so the copy sends no data. (The trees of `src`'s ancestors may
    // differ: /tmp changes whenever a parallel test makes a directory.)
    let f1 = files(1);
    let s1 = backup(&src, d.path(), &f1, "one");
    let direct = backup_again(&dst, d.path(), "one");
    let src_dir = d.path().join("src");
    let subtree = |r: &Repository, e: &SnapshotEntry| {
        let rel = src_dir
            .strip_prefix("/")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        r.find_node(&e.snapshot.tree, rel).unwrap().subtree
    };
    assert_eq!(
        subtree(&dst, &direct),
        subtree(&src, &s1),
        "content named alike"
    );
    let st = copy_all(&src, &dst);
    assert!(st.same_content_keys);
    assert_eq!((st.copied.len(), st.skipped.len()), (1, 0));
    assert!(st.bytes_copied < 16 << 10, "data sent again: {st:?}");
    assert_eq!(copy_of(&dst, &s1).snapshot.tree, s1.snapshot.tree);

    // A new snapshot: only its new chunk (and changed trees) is sent.
    let mut f2 = f1.clone();
    f2.insert("new.bin".into(), random_bytes(1 << 20, 7));
    let s2 = backup(&src, d.path(), &f2, "two");
    let st = copy_all(&src, &dst);
    assert_eq!(st.copied.len(), 1);
    assert_eq!(st.copied[0].source, s2.id);
    assert_eq!(st.skipped.len(), 1);
    assert_eq!(st.skipped[0].source, s1.id);
    assert!(
        st.bytes_copied >= 1 << 20 && st.bytes_copied < (1 << 20) + (64 << 10),
        "sent {} bytes for a 1 MiB change",
        st.bytes_copied
    );
    let c2 = copy_of(&dst, &s2);
    assert_kept(&c2, &s2);
    // The copy's parent is the copy of the source's parent.
    assert_eq!(c2.snapshot.parent, Some(copy_of(&dst, &s1).id));

    // Idempotent: nothing more, in this session or a new one.
    let st = copy_all(&src, &dst);
    assert!(st.copied.is_empty() && st.skipped.len() == 2 && st.blobs_copied == 0);
    drop(dst);
    let dst = Repository::open(db, cairn_testkit::PASSWORD, OpenOptions::default()).unwrap();
    let st = copy_all(&src, &dst);
    assert!(st.copied.is_empty() && st.blobs_copied == 0, "{st:?}");
    assert_eq!(dst.snapshots().unwrap().len(), 3);

    check_clean(&dst).unwrap();
    assert_eq!(restored(&dst, &c2.id, &d.path().join("src"), d.path()), f2);
}

#[test]
fn unrelated_repositories_restore_identical_and_copies_do_not_come_back() {
    let d = tempfile::tempdir().unwrap();
    let (_, src) = init_memory();
    let (_, dst) = init_memory();
    let f = files(3);
    let s1 = backup(&src, d.path(), &f, "one");
    let st = copy_all(&src, &dst);
    assert!(!st.same_content_keys);
    assert_eq!(st.copied.len(), 1);
    assert!(st.bytes_copied >= 3 << 20);
    let c1 = copy_of(&dst, &s1);
    assert_kept(&c1, &s1);
    assert_ne!(c1.snapshot.tree, s1.snapshot.tree, "trees named again");
    check_clean(&dst).unwrap();
    let src_path = d.path().join("src");
    assert_eq!(restored(&dst, &c1.id, &src_path, d.path()), f);
    assert_eq!(read_tree(&src_path), f);

    // Again: nothing. Back into the source: it is the source's own.
    let st = copy_all(&src, &dst);
    assert!(st.copied.is_empty() && st.blobs_copied == 0);
    let back = copy_all(&dst, &src);
    assert!(back.copied.is_empty(), "{back:?}");
    assert_eq!(back.skipped[0].snapshot.id, s1.id);

    // A copy of a copy names the first original.
    let (_, third) = init_memory();
    copy_all(&dst, &third);
    assert_eq!(copy_of(&third, &s1).snapshot.original, Some(s1.id));
    // And then the middle one's snapshot is already there too.
    assert!(copy_all(&src, &third).copied.is_empty());
}

#[test]
fn selection_same_repository_and_nothing_matching_are_errors() {
    let d = tempfile::tempdir().unwrap();
    let (sb, src) = init_memory();
    let (_, dst) = init_memory();
    let s1 = backup(&src, d.path(), &files(4), "one");
    let s2 = backup(&src, d.path(), &files(5), "two");

    let again = Repository::open(sb, cairn_testkit::PASSWORD, OpenOptions::default()).unwrap();
    let err = src.copy_from(&again).run().unwrap_err();
    assert!(
        matches!(err, Error::CopyIntoItself(id) if id == src.id()),
        "{err}"
    );

    let none = SnapshotFilter {
        host: Some("elsewhere".into()),
        ..Default::default()
    };
    let err = dst.copy_from(&src).filter(none).run().unwrap_err();
    assert!(matches!(err, Error::NothingSelected(_)), "{err}");
    assert!(dst.snapshots().unwrap().is_empty());

    // By id, and by tag: only what is selected.
    let st = dst.copy_from(&src).snapshots([s2.id]).run().unwrap();
    assert_eq!(st.copied.len(), 1);
    assert_eq!(st.copied[0].source, s2.id);
    let tagged = SnapshotFilter {
        tags: vec!["one".into()],
        ..Default::default()
    };
    let st = dst.copy_from(&src).filter(tagged).run().unwrap();
    assert_eq!(st.copied[0].source, s1.id);
    assert!(st.skipped.is_empty());
    assert_eq!(dst.snapshots().unwrap().len(), 2);
}

#[test]
fn a_copy_that_dies_leaves_no_snapshot_and_the_rerun_resumes() {
    let d = tempfile::tempdir().unwrap();
    let (_, src) = init_memory();
    let mut f = files(6);
    f.insert("more.bin".into(), random_bytes(3 << 20, 8));
    let s1 = backup(&src, d.path(), &f, "one");
    for related in [false, true] {
        let (mem, dst0) = if related {
            init_related(&src)
        } else {
            init_memory()
        };
        drop(dst0);
        let fb = FaultyBackend::new(mem.clone());
        let dst =
            Repository::open(fb.clone(), cairn_testkit::PASSWORD, OpenOptions::default()).unwrap();
        // The process dies writing its third pack: two are durable.
        fb.set_plan(FaultPlan::none().and_nth(
            Some(OpKind::Write),
            Some(ObjectKind::Pack),
            2,
            Fault::Crash,
        ));
        assert!(dst.copy_from(&src).run().is_err());
        assert!(fb.crashed());
        drop(dst);

        let dst =
            Repository::open(mem.clone(), cairn_testkit::PASSWORD, OpenOptions::default()).unwrap();
        assert!(dst.snapshots().unwrap().is_empty(), "a snapshot survived");
        check_clean(&dst).unwrap();
        assert_eq!(mem.list(ObjectKind::Pack).unwrap().len(), 2);

        let st = copy_all(&src, &dst);
        assert_eq!(st.packs_resumed, 2, "related: {related}");
        assert_eq!(st.copied.len(), 1);
        assert!(
            st.bytes_copied < 6 << 20,
            "related: {related}: sent {} again",
            st.bytes_copied
        );
        check_clean(&dst).unwrap();
        let c1 = copy_of(&dst, &s1);
        assert_eq!(restored(&dst, &c1.id, &d.path().join("src"), d.path()), f);
        let _ = fs::remove_dir_all(d.path().join("restore"));
    }
}

#[test]
fn a_copy_reads_the_source_by_pack_not_blob_by_blob() {
    let d = tempfile::tempdir().unwrap();
    let (mem, src) = init_memory();
    // 400 small files in 20 directories: 400 data blobs, 21+ trees.
    let mut f = Files::new();
    for i in 0..400 {
        f.insert(
            format!("d{:02}/f{i:03}", i % 20),
            random_bytes(2000 + i, i as u64),
        );
    }
    let s1 = backup(&src, d.path(), &f, "one");
    drop(src);
    let fb = FaultyBackend::new(mem);
    let src =
        Repository::open(fb.clone(), cairn_testkit::PASSWORD, OpenOptions::default()).unwrap();
    let packs = fb.inner().list(ObjectKind::Pack).unwrap().len() as u64;
    for related in [true, false] {
        let (_, dst) = if related {
            init_related(&src)
        } else {
            init_memory()
        };
        let before = fb.ops_on(OpKind::Read, ObjectKind::Pack);
        let st = copy_all(&src, &dst);
        let reads = fb.ops_on(OpKind::Read, ObjectKind::Pack) - before;
        assert!(st.blobs_copied > 400, "{st:?}");
        // One read per pack for the data, and per tree level and pack.
        assert!(
            reads <= packs * 8,
            "related: {related}: {reads} pack reads for {} blobs in {packs} packs",
            st.blobs_copied
        );
        let c1 = copy_of(&dst, &s1);
        assert_eq!(restored(&dst, &c1.id, &d.path().join("src"), d.path()), f);
    }
}

/// Issue 14, copying a day: the new snapshot's trees come from the source's
/// local cache (its backup on this machine put them there), so a copy into
/// a repository holding the parent reads only the packs of the new data,
/// each once, not the trees level by level.
#[test]
fn copying_a_day_reads_only_the_new_data_packs() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let mem = MemoryBackend::new();
    let opts = InitOptions {
        cache_dir: Some(cache.clone()),
        ..cairn_testkit::repo::init_options()
    };
    let src = Repository::init(mem.clone(), cairn_testkit::PASSWORD, opts).unwrap();
    // Four levels of directories, 200 small files and one larger one.
    let mut f = Files::new();
    for i in 0..200u64 {
        let dir = format!("a{}/b{}/c{}", i % 3, i % 5, i % 7);
        f.insert(format!("{dir}/f{i:03}"), random_bytes(3000 + i as usize, i));
    }
    f.insert("a0/big.bin".into(), random_bytes(2 << 20, 999));
    let s1 = backup(&src, d.path(), &f, "one");
    let (_, dst) = init_related(&src);
    copy_all(&src, &dst);

    // A day: files changed at the deepest level in several directories.
    for i in [3u64, 50, 101, 160] {
        let dir = format!("a{}/b{}/c{}", i % 3, i % 5, i % 7);
        f.insert(format!("{dir}/f{i:03}"), random_bytes(5000, 1000 + i));
    }
    let before: std::collections::HashSet<String> = mem
        .list(ObjectKind::Pack)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    let s2 = backup(&src, d.path(), &f, "two");
    assert_eq!(s2.snapshot.parent, Some(s1.id));
    let new_packs = mem
        .list(ObjectKind::Pack)
        .unwrap()
        .into_iter()
        .filter(|o| !before.contains(&o.name))
        .count() as u64;
    drop(src);

    let fb = FaultyBackend::new(mem);
    let src = Repository::open(
        fb.clone(),
        cairn_testkit::PASSWORD,
        OpenOptions {
            cache_dir: Some(cache),
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let (packs0, reads0) = (
        fb.ops_on(OpKind::Read, ObjectKind::Pack),
        fb.ops_of(OpKind::Read),
    );
    let st = copy_all(&src, &dst);
    let pack_reads = fb.ops_on(OpKind::Read, ObjectKind::Pack) - packs0;
    let reads = fb.ops_of(OpKind::Read) - reads0;
    assert_eq!((st.copied.len(), st.skipped.len()), (1, 1), "{st:?}");
    // The day's data is in one pack, its trees in another: at most one
    // read each, and none for the 4 levels of trees.
    assert!(
        (1..new_packs).contains(&pack_reads),
        "{pack_reads} pack reads for a day written in {new_packs} packs"
    );
    // Besides: the source's snapshots (the new one) and its dictionary.
    assert!(reads <= pack_reads + 4, "{reads} reads of the source");
    let c2 = copy_of(&dst, &s2);
    assert_eq!(restored(&dst, &c2.id, &d.path().join("src"), d.path()), f);
    check_clean(&dst).unwrap();
}
