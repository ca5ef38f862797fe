//! Several passwords per repository: add, remove, passwd (issue 3).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use repo_core::{Backend, Error, ObjectKind, SnapshotFilter};

use super::{WEAK_KDF, init_repo, open_repo, random_bytes, text_lines};

/// Every data, index and snapshot file with its bytes' hash.
fn stored_files(dir: &Path) -> BTreeMap<(ObjectKind, String), blake3::Hash> {
    let repo = dir.join("repo");
    let backend = repo_core::LocalBackend::open(&repo);
    let mut out = BTreeMap::new();
    for kind in [ObjectKind::Pack, ObjectKind::Index, ObjectKind::Snapshot] {
        for o in backend.list(kind).unwrap() {
            let bytes = backend.read(kind, &o.name).unwrap();
            out.insert((kind, o.name), blake3::hash(&bytes));
        }
    }
    out
}

#[test]
fn added_key_opens_until_removed_and_last_key_stays() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let first = repo.key_id();
    let second = repo.add_key(b"second pw", WEAK_KDF).unwrap();
    drop(repo);

    // Both passwords open the repository, each through its own key file.
    assert_eq!(open_repo(d.path(), b"pw").unwrap().key_id(), first);
    let via_second = open_repo(d.path(), b"second pw").unwrap();
    assert_eq!(via_second.key_id(), second);
    let listed: Vec<_> = via_second
        .keys()
        .unwrap()
        .into_iter()
        .map(|k| (k.id, k.current))
        .collect();
    assert_eq!(listed, vec![(first, false), (second, true)]);

    // Remove the second key (from a session of the first): only the first works.
    let repo = open_repo(d.path(), b"pw").unwrap();
    repo.remove_key(&second).unwrap();
    assert!(matches!(
        open_repo(d.path(), b"second pw"),
        Err(Error::WrongPassword)
    ));
    assert_eq!(open_repo(d.path(), b"pw").unwrap().key_id(), first);

    // The last key cannot go, and the message says why.
    let err = repo.remove_key(&first).unwrap_err();
    assert!(matches!(err, Error::LastKey(id) if id == first), "{err}");
    assert!(err.to_string().contains("last key"), "{err}");
    assert_eq!(open_repo(d.path(), b"pw").unwrap().key_id(), first);
}

#[test]
fn passwd_rewraps_without_touching_data() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("random.bin"), random_bytes(300_000, 7)).unwrap();
    fs::write(src.join("sub/text.sql"), text_lines(5_000)).unwrap();
    let repo = init_repo(d.path());
    repo.backup().path(&src).time_ns(1_000).run().unwrap();
    fs::write(src.join("sub/new.txt"), b"second snapshot only\n").unwrap();
    repo.backup().path(&src).time_ns(2_000).run().unwrap();
    let old_key = repo.key_id();
    drop(repo);
    let before = stored_files(d.path());
    assert!(before.keys().any(|(k, _)| *k == ObjectKind::Pack));
    assert_eq!(
        before
            .keys()
            .filter(|(k, _)| *k == ObjectKind::Snapshot)
            .count(),
        2
    );

    let repo = open_repo(d.path(), b"pw").unwrap();
    let change = repo.change_password(b"new pw", WEAK_KDF).unwrap();
    assert_eq!(change.old_key, old_key);
    drop(repo);

    assert!(matches!(
        open_repo(d.path(), b"pw"),
        Err(Error::WrongPassword)
    ));
    let repo = open_repo(d.path(), b"new pw").unwrap();
    assert_eq!(repo.key_id(), change.new_key);
    let keys = repo.keys().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].current && keys[0].id == change.new_key);

    // Not one pack, index or snapshot file was added, removed or changed.
    assert_eq!(stored_files(d.path()), before);

    // Every snapshot still restores, byte for byte.
    for (i, snap) in repo.snapshots().unwrap().iter().enumerate() {
        let target = d.path().join(format!("restore{i}"));
        repo.restore(snap).to(&target).run().unwrap();
        let root = target.join(src.strip_prefix("/").unwrap());
        assert_eq!(
            fs::read(root.join("random.bin")).unwrap(),
            random_bytes(300_000, 7)
        );
        assert_eq!(
            fs::read(root.join("sub/text.sql")).unwrap(),
            text_lines(5_000)
        );
        assert_eq!(root.join("sub/new.txt").exists(), i == 1);
    }
    let latest = repo
        .find_snapshot("latest", &SnapshotFilter::default())
        .unwrap();
    assert_eq!(latest.snapshot.time_ns, 2_000);
}

#[test]
fn passwd_crash_between_write_and_delete_leaves_two_working_keys() {
    // The state a crash after the new key's write and before the old key's
    // delete leaves: add_key is exactly that first step.
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let new = repo.add_key(b"new pw", WEAK_KDF).unwrap();
    drop(repo);
    assert!(open_repo(d.path(), b"pw").is_ok());
    assert_eq!(open_repo(d.path(), b"new pw").unwrap().key_id(), new);
}
