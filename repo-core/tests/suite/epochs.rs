//! Data-key epochs: rotate, grants, retire (issue 16, SPEC §29).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use repo_core::unstable::RepositoryInternals as _;
use repo_core::unstable::SnapshotFile as _;
use repo_core::unstable::crypto::{DataKeys, MasterKey};
use repo_core::unstable::snapshot::Snapshot;
use repo_core::{
    Backend, BackendError, Error, LocalBackend, ObjectKind, OpenOptions, PruneOptions, Repository,
};

use cairn_testkit::backend::{Call, Hooked};

use super::Files;
use super::{WEAK_KDF, check_clean, init_repo, open_repo, random_bytes, restored, write_tree};

fn files(seed: u64) -> Files {
    [
        ("a.txt".to_string(), random_bytes(40_000, seed)),
        ("dir/b.bin".to_string(), random_bytes(300_000, seed + 1)),
    ]
    .into_iter()
    .collect()
}

fn backend(d: &Path) -> LocalBackend {
    LocalBackend::open(d.join("repo"))
}

/// Every object of the sealed kinds, with its bytes.
fn sealed_objects(b: &dyn Backend) -> Vec<(ObjectKind, String, Vec<u8>)> {
    let mut out = Vec::new();
    for kind in [
        ObjectKind::Config,
        ObjectKind::Snapshot,
        ObjectKind::Index,
        ObjectKind::Pack,
        ObjectKind::Mark,
        ObjectKind::Dict,
    ] {
        for o in b.list(kind).unwrap() {
            out.push((kind, o.name.clone(), b.read(kind, &o.name).unwrap()));
        }
    }
    out
}

/// True when `keys` opens any sealed part of `bytes`: every object is
/// `clear prefix || nonce || ciphertext || tag` at some offset, so try
/// every offset a prefix can end at (config 44 or 45, files 12, pack
/// header at its tail).
fn opens_anything(keys: &DataKeys, kind: ObjectKind, bytes: &[u8]) -> bool {
    let ends: Vec<usize> = match kind {
        ObjectKind::Config => vec![44, 45],
        ObjectKind::Pack => {
            let n = bytes.len();
            let hlen = u32::from_le_bytes(bytes[n - 4..].try_into().unwrap()) as usize;
            return keys
                .open(b"cairn pack header v1", &bytes[n - 4 - hlen..n - 4])
                .is_ok();
        }
        _ => vec![12],
    };
    ends.into_iter()
        .any(|at| keys.open(&bytes[..at], &bytes[at..]).is_ok())
}

#[test]
fn rotate_back_up_restore_and_the_old_key_opens_nothing_new() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let mut repo = init_repo(d.path());
    write_tree(&src, &files(1));
    let before = repo.backup().path(&src).run().unwrap().snapshot.id;
    let old: MasterKey = repo.master_key().clone();
    assert_eq!(repo.format_version(), 2);
    let old_key_file = repo
        .backend()
        .read(ObjectKind::Key, &repo.key_id().to_hex())
        .unwrap();

    // The first rotation re-wraps this session's key (no public key yet).
    let r = repo.rotate_key(b"pw").unwrap();
    assert_eq!((r.epoch, r.live.clone()), (1, vec![0, 1]));
    let rewrap = r.rewrapped.expect("the version-2 key file was re-wrapped");
    assert_eq!(repo.key_id(), rewrap.new_key);
    assert_eq!(repo.format_version(), 4);
    assert_eq!(repo.data_keys().newest_epoch(), 1);
    // The re-wrapped key file's predecessor, left behind (as by a crash
    // before its deletion) under a name that sorts first: it has the same
    // password but no grant, and must not shadow its successor.
    let shadow = "0".repeat(64);
    repo.backend()
        .write(ObjectKind::Key, &shadow, &old_key_file)
        .unwrap();
    assert_eq!(open_repo(d.path(), b"pw").unwrap().key_id(), rewrap.new_key);
    repo.backend().delete(ObjectKind::Key, &shadow).unwrap();

    // A key added now (version 4) gets every live epoch.
    let second = repo.add_key(b"pw2", WEAK_KDF).unwrap();
    // A second rotation: the second key is never unlocked, yet holds it.
    let r2 = repo.rotate_key(b"pw").unwrap();
    assert_eq!(r2.epoch, 2);
    assert!(r2.rewrapped.is_none());
    assert!(r2.granted.contains(&second));
    write_tree(&src, &files(10));
    let after = repo.backup().path(&src).run().unwrap().snapshot.id;
    drop(repo);

    // Written after rotation: the old master key opens none of it.
    let b = backend(d.path());
    let snap_file = b.read(ObjectKind::Snapshot, &after.to_hex()).unwrap();
    assert!(Snapshot::from_file(&old.data_keys(), &snap_file).is_err());
    let cfg = b.read(ObjectKind::Config, "config").unwrap();
    assert!(!opens_anything(&old.data_keys(), ObjectKind::Config, &cfg));
    // The epoch tag is authenticated: changing it makes the file unreadable.
    let mut tampered = snap_file.clone();
    tampered[12] ^= 3;
    let now = open_repo(d.path(), b"pw").unwrap();
    assert!(Snapshot::from_file(now.data_keys(), &snap_file).is_ok());
    assert!(Snapshot::from_file(now.data_keys(), &tampered).is_err());

    // Every key opens everything: the session's, the second (added
    // before the last rotation), and one added after it.
    let third = now.add_key(b"pw3", WEAK_KDF).unwrap();
    drop(now);
    for pw in [&b"pw"[..], b"pw2", b"pw3"] {
        let repo = open_repo(d.path(), pw).unwrap();
        assert_eq!(repo.data_keys().live_epochs(), vec![0, 1, 2]);
        assert_eq!(restored(&repo, &before, &src, d.path()), files(1));
        assert_eq!(restored(&repo, &after, &src, d.path()), files(10));
        check_clean(&repo).unwrap();
    }
    // key list: which epochs each key file holds.
    let repo = open_repo(d.path(), b"pw3").unwrap();
    let held = repo.granted_epochs().unwrap();
    assert_eq!(held[&third], vec![1, 2]);
    assert_eq!(held[&second], vec![1, 2]);
    // Removing a key removes its grants.
    repo.remove_key(&second).unwrap();
    assert!(!repo.granted_epochs().unwrap().contains_key(&second));
}

#[test]
fn rotate_refuses_while_an_old_key_file_without_public_key_exists() {
    let d = tempfile::tempdir().unwrap();
    let mut repo = init_repo(d.path());
    let other = repo.add_key(b"other", WEAK_KDF).unwrap();
    let err = repo.rotate_key(b"pw").unwrap_err();
    assert!(
        matches!(&err, Error::KeysWithoutPublicKey(ids) if ids == &vec![other]),
        "{err}"
    );
    assert!(err.to_string().contains(&other.short()), "{err}");
    // Nothing changed: still version 2, both keys open it.
    assert_eq!(open_repo(d.path(), b"other").unwrap().format_version(), 2);
    // A wrong password for the session's own re-wrap is refused too.
    repo.remove_key(&other).unwrap();
    assert!(matches!(
        repo.rotate_key(b"not the password"),
        Err(Error::WrongPassword)
    ));
    assert_eq!(open_repo(d.path(), b"pw").unwrap().format_version(), 2);
}

#[test]
fn a_crash_between_grants_and_config_leaves_every_key_working() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let mut repo = init_repo(d.path());
    write_tree(&src, &files(3));
    let first = repo.backup().path(&src).run().unwrap().snapshot.id;
    repo.rotate_key(b"pw").unwrap();
    repo.add_key(b"pw2", WEAK_KDF).unwrap();
    drop(repo);

    // The config's replacement fails, as if the process died there: the
    // new epoch's grants are written, the config still lists 0 and 1.
    let crash = Arc::new(AtomicBool::new(true));
    let c = Arc::clone(&crash);
    let hooked = Hooked::new(backend(d.path())).before(move |call| match call {
        Call::Replace(ObjectKind::Config, ..) if c.load(Ordering::SeqCst) => Err(BackendError::io(
            "replace",
            ObjectKind::Config,
            "config",
            std::io::Error::other("crash"),
        )),
        _ => Ok(()),
    });
    let mut repo = Repository::open(hooked.clone(), b"pw", OpenOptions::default()).unwrap();
    assert!(repo.rotate_key(b"pw").is_err());
    drop(repo);
    assert_eq!(
        backend(d.path()).list(ObjectKind::Keyring).unwrap().len(),
        4,
        "two keys, each with grants of epochs 1 and 2"
    );
    for pw in [&b"pw"[..], b"pw2"] {
        let repo = open_repo(d.path(), pw).unwrap();
        assert_eq!(repo.data_keys().live_epochs(), vec![0, 1]);
        assert_eq!(restored(&repo, &first, &src, d.path()), files(3));
        check_clean(&repo).unwrap();
    }
    // The next rotation numbers past the orphaned grants.
    crash.store(false, Ordering::SeqCst);
    let mut repo = Repository::open(hooked, b"pw", OpenOptions::default()).unwrap();
    assert_eq!(repo.rotate_key(b"pw").unwrap().epoch, 3);
    drop(repo);
    for pw in [&b"pw"[..], b"pw2"] {
        let repo = open_repo(d.path(), pw).unwrap();
        assert_eq!(repo.data_keys().live_epochs(), vec![0, 1, 3]);
        assert_eq!(restored(&repo, &first, &src, d.path()), files(3));
    }
}

#[test]
fn retire_refuses_while_objects_use_the_epoch_then_shuts_the_old_key_out() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let mut repo = init_repo(d.path());
    write_tree(&src, &files(5));
    let old_snap = repo.backup().path(&src).run().unwrap().snapshot.id;
    let old: MasterKey = repo.master_key().clone();
    repo.rotate_key(b"pw").unwrap();
    write_tree(&src, &files(50));
    let new_snap = repo.backup().path(&src).run().unwrap().snapshot.id;

    // The newest epoch and unknown ones cannot go.
    assert!(matches!(
        repo.retire_epoch(1),
        Err(Error::CannotRetire { epoch: 1, .. })
    ));
    assert!(matches!(
        repo.retire_epoch(7),
        Err(Error::CannotRetire { epoch: 7, .. })
    ));
    // Epoch 0 still seals the first snapshot, its packs and index.
    let census = repo.epoch_census().unwrap();
    let in_zero = census.per_epoch[&0];
    assert!(in_zero >= 3, "{census:?}");
    let listed = census.objects.iter().filter(|(_, _, e)| *e == 0).count() as u64;
    assert_eq!(listed, in_zero);
    assert!(
        census
            .objects
            .iter()
            .any(|(k, n, e)| { *k == ObjectKind::Snapshot && *n == old_snap.to_hex() && *e == 0 })
    );
    let err = repo.retire_epoch(0).unwrap_err();
    match &err {
        Error::EpochInUse {
            epoch: 0, count, ..
        } => assert_eq!(*count, in_zero),
        e => panic!("{e}"),
    }
    assert!(err.to_string().contains(&old_snap.to_hex()), "{err}");

    // Forget the old snapshot and prune: nothing is sealed under 0 any more.
    repo.backend()
        .delete(ObjectKind::Snapshot, &old_snap.to_hex())
        .unwrap();
    let plan = repo
        .prune_plan(&PruneOptions {
            grace: std::time::Duration::ZERO,
            ..Default::default()
        })
        .unwrap();
    repo.prune(plan).unwrap();
    assert_eq!(repo.epoch_census().unwrap().per_epoch.get(&0), None);
    repo.retire_epoch(0).unwrap();
    assert_eq!(repo.data_keys().live_epochs(), vec![1]);
    drop(repo);

    // The saved old master key opens no object at all.
    let b = backend(d.path());
    let objects = sealed_objects(&b);
    assert!(objects.len() >= 4);
    for (kind, name, bytes) in &objects {
        assert!(
            !opens_anything(&old.data_keys(), *kind, bytes),
            "{kind} {name} opens with the retired key"
        );
    }
    let repo = open_repo(d.path(), b"pw").unwrap();
    assert_eq!(restored(&repo, &new_snap, &src, d.path()), files(50));
    check_clean(&repo).unwrap();
    assert!(b.list(ObjectKind::Keyring).unwrap().len() == 1);

    // An object sealed under the retired epoch (a session opened before
    // the retirement wrote it): check names it.
    let mut stale = repo.snapshot(&new_snap).unwrap().snapshot;
    stale.time_ns += 1;
    let bytes = stale.to_file(&old.data_keys());
    let name = blake3::hash(&bytes).to_hex().to_string();
    b.write(ObjectKind::Snapshot, &name, &bytes).unwrap();
    let report = check_clean(&open_repo(d.path(), b"pw").unwrap()).unwrap_err();
    assert!(report.contains(&name[..8]), "{report}");
}

#[test]
fn a_version_2_repository_opens_without_reading_the_keyring() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let repo = init_repo(d.path());
    write_tree(&src, &files(7));
    let id = repo.backup().path(&src).run().unwrap().snapshot.id;
    drop(repo);
    let cfg = backend(d.path())
        .read(ObjectKind::Config, "config")
        .unwrap();
    assert_eq!(cfg[8..12], 2u32.to_le_bytes());
    let keyring_lists = Arc::new(AtomicUsize::new(0));
    let n = Arc::clone(&keyring_lists);
    let hooked = Hooked::new(backend(d.path())).before(move |call| {
        if matches!(call, Call::List(ObjectKind::Keyring)) {
            n.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    });
    let mut repo = Repository::open(hooked, b"pw", OpenOptions::default()).unwrap();
    assert_eq!(keyring_lists.load(Ordering::SeqCst), 0);
    assert_eq!(repo.format_version(), 2);
    assert_eq!(restored(&repo, &id, &src, d.path()), files(7));
    // Key files added stay readable by earlier builds: no public key.
    repo.add_key(b"pw2", WEAK_KDF).unwrap();
    assert!(repo.keys().unwrap().iter().all(|k| k.is_usable()));
    assert!(matches!(
        repo.rotate_key(b"pw"),
        Err(Error::KeysWithoutPublicKey(_))
    ));
}

#[test]
fn an_xaes_repository_backs_up_restores_rotates_and_is_not_xchacha() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let opts = repo_core::InitOptions {
        kdf: WEAK_KDF,
        cipher: repo_core::Cipher::Xaes256Gcm,
        ..Default::default()
    };
    let mut repo = Repository::init(
        LocalBackend::create(d.path().join("repo")).unwrap(),
        b"pw",
        opts,
    )
    .unwrap();
    assert_eq!(repo.format_version(), 4);
    write_tree(&src, &files(20));
    let first = repo.backup().path(&src).run().unwrap().snapshot.id;
    assert_eq!(repo.rotate_key(b"pw").unwrap().epoch, 1);
    write_tree(&src, &files(21));
    let second = repo.backup().path(&src).run().unwrap().snapshot.id;
    let old = repo.master_key().clone();
    drop(repo);

    let b = backend(d.path());
    let cfg = b.read(ObjectKind::Config, "config").unwrap();
    assert_eq!((cfg[8], cfg[44]), (4, 1), "version 4, cipher byte 1");
    // The same key under XChaCha20-Poly1305 opens nothing: the cipher is real.
    let snap = b.read(ObjectKind::Snapshot, &first.to_hex()).unwrap();
    assert!(Snapshot::from_file(&old.data_keys(), &snap).is_err());
    let xaes = DataKeys::epoch_zero_with(repo_core::Cipher::Xaes256Gcm, old.data_key());
    assert!(Snapshot::from_file(&xaes, &snap).is_ok());

    let repo = open_repo(d.path(), b"pw").unwrap();
    assert_eq!(repo.data_keys().cipher(), repo_core::Cipher::Xaes256Gcm);
    assert_eq!(restored(&repo, &first, &src, d.path()), files(20));
    assert_eq!(restored(&repo, &second, &src, d.path()), files(21));
    check_clean(&repo).unwrap();
    // Without dictionaries (version 1) there is no cipher byte: refused.
    let err = Repository::init(
        repo_core::MemoryBackend::new(),
        b"pw",
        repo_core::InitOptions {
            kdf: WEAK_KDF,
            cipher: repo_core::Cipher::Xaes256Gcm,
            dictionary: false,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("xaes-256-gcm"), "{err}");
}

/// Rotation interrupted at every write, replace or delete it makes (the
/// first rotation, which re-wraps the session's key, then a second one
/// with two keys): every key still opens the repository and restores.
#[test]
fn a_rotation_failing_at_any_step_leaves_every_key_working() {
    for second in [false, true] {
        let mut n = 0;
        loop {
            let d = tempfile::tempdir().unwrap();
            let src = d.path().join("src");
            let mut repo = init_repo(d.path());
            write_tree(&src, &files(30));
            let id = repo.backup().path(&src).run().unwrap().snapshot.id;
            let mut passwords: Vec<&[u8]> = vec![b"pw"];
            if second {
                repo.rotate_key(b"pw").unwrap();
                repo.add_key(b"pw2", WEAK_KDF).unwrap();
                passwords.push(b"pw2");
            }
            drop(repo);
            let seen = Arc::new(AtomicUsize::new(0));
            let s = Arc::clone(&seen);
            let hooked = Hooked::new(backend(d.path())).before(move |call| {
                let mutated = match *call {
                    Call::Write(k, ..) | Call::Replace(k, ..) | Call::Delete(k, _) => Some(k),
                    _ => None,
                };
                if let Some(kind) = mutated
                    && s.fetch_add(1, Ordering::SeqCst) == n
                {
                    return Err(BackendError::io(
                        "write",
                        kind,
                        "",
                        std::io::Error::other("killed"),
                    ));
                }
                Ok(())
            });
            let mut repo = Repository::open(hooked, b"pw", OpenOptions::default()).unwrap();
            let done = repo.rotate_key(b"pw").is_ok();
            drop(repo);
            for pw in &passwords {
                let repo = open_repo(d.path(), pw)
                    .unwrap_or_else(|e| panic!("second={second} n={n}: {e}"));
                assert_eq!(restored(&repo, &id, &src, d.path()), files(30));
                check_clean(&repo).unwrap_or_else(|e| panic!("second={second} n={n}: {e}"));
            }
            if done {
                assert!(n >= 3, "the rotation made only {n} changes");
                break;
            }
            n += 1;
        }
    }
}

/// A backup that opened the repository before a rotation still seals under
/// the old epoch: while its heartbeat is alive, retire refuses.
#[test]
fn retire_waits_for_a_running_backup() {
    let d = tempfile::tempdir().unwrap();
    let mut repo = init_repo(d.path());
    repo.rotate_key(b"pw").unwrap();
    let b = backend(d.path());
    let beat = repo_core::unstable::lock::Heartbeat::start(&b).unwrap();
    match repo.retire_epoch(0) {
        Err(Error::CannotRetire { epoch: 0, reason }) => {
            assert!(reason.contains("backup is running"), "{reason}")
        }
        other => panic!("retire with a live heartbeat: {other:?}"),
    }
    assert_eq!(repo.data_keys().live_epochs(), vec![0, 1]);
    drop(beat);
    repo.retire_epoch(0).unwrap();
    assert_eq!(repo.data_keys().live_epochs(), vec![1]);
}
