//! Acceptance: wrong password, truncated or flipped packs give clear errors
//! naming the object, never a panic or wrong bytes (issue 2).

use std::fs;
use std::path::{Path, PathBuf};

use repo_core::{Error, SnapshotFilter};

use super::{init_repo, open_repo, random_bytes};

fn packs(repo_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(repo_dir.join("data"))
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    v.sort();
    v
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("data.bin"), random_bytes(3 << 20, 7)).unwrap();
    let repo = init_repo(d.path());
    repo.backup().path(&src).run().unwrap();
    (d, src)
}

#[test]
fn wrong_password_is_a_clear_error() {
    let (d, _) = setup();
    let err = open_repo(d.path(), b"not the password").unwrap_err();
    assert!(matches!(err, Error::WrongPassword), "{err:?}");
    assert_eq!(err.to_string(), "wrong password or no matching key");
}

#[test]
fn not_a_repository_and_already_a_repository() {
    let d = tempfile::tempdir().unwrap();
    let err = open_repo(d.path(), b"pw").unwrap_err();
    assert!(matches!(err, Error::NotARepository(_)), "{err:?}");
    let _repo = init_repo(d.path());
    let again = repo_core::Repository::init(
        repo_core::LocalBackend::create(d.path().join("repo")).unwrap(),
        b"pw",
        repo_core::InitOptions {
            kdf: super::WEAK_KDF,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(again, Error::AlreadyExists(_)), "{again:?}");
}

fn restore_err(d: &Path) -> Error {
    let repo = open_repo(d, b"pw").unwrap();
    let snap = repo
        .find_snapshot("latest", &SnapshotFilter::default())
        .unwrap();
    repo.restore(&snap).to(d.join("out")).run().unwrap_err()
}

#[test]
fn truncated_pack_names_the_pack() {
    let (d, _) = setup();
    let data_packs: Vec<PathBuf> = packs(&d.path().join("repo"));
    // The largest pack holds file data; truncate it to half.
    let victim = data_packs
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let bytes = fs::read(victim).unwrap();
    fs::write(victim, &bytes[..bytes.len() / 2]).unwrap();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    let err = restore_err(d.path());
    assert!(matches!(err, Error::CorruptPack { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&name),
        "error does not name the pack: {err}"
    );
}

#[test]
fn flipped_byte_in_pack_is_detected_not_restored() {
    let (d, src) = setup();
    let data_packs = packs(&d.path().join("repo"));
    let victim = data_packs
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(victim).unwrap();
    bytes[100] ^= 0x40;
    fs::write(victim, &bytes).unwrap();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    let err = restore_err(d.path());
    assert!(
        err.to_string().contains(&name),
        "error does not name the pack: {err}"
    );
    // Whatever was written before the error is not silently the wrong data:
    // the damaged file is not complete and equal to a wrong content.
    let out = d
        .path()
        .join("out")
        .join(src.strip_prefix("/").unwrap())
        .join("data.bin");
    if let Ok(got) = fs::read(&out) {
        assert_ne!(
            got.len(),
            3 << 20,
            "a damaged file was restored at full length"
        );
    }
}

#[test]
fn corrupt_snapshot_and_index_files_are_named() {
    // Issue 12: a damaged file is skipped with a warning naming it, so the
    // rest of the repository stays usable.
    let (d, _) = setup();
    let repo_dir = d.path().join("repo");
    let snap = fs::read_dir(repo_dir.join("snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let snap_name = snap.file_name().unwrap().to_string_lossy().into_owned();
    let mut b = fs::read(&snap).unwrap();
    let n = b.len();
    b[n - 1] ^= 1;
    fs::write(&snap, &b).unwrap();
    let repo = open_repo(d.path(), b"pw").unwrap();
    let listed = repo.snapshots().unwrap();
    assert!(listed.iter().all(|s| s.id.to_hex() != snap_name));
    assert!(
        repo.warnings().iter().any(|w| w.contains(&snap_name)),
        "{:?}",
        repo.warnings()
    );
    let err = repo.snapshot(&snap_name.parse().unwrap()).unwrap_err();
    assert!(err.to_string().contains(&snap_name), "{err}");

    let idx = fs::read_dir(repo_dir.join("index"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let idx_name = idx.file_name().unwrap().to_string_lossy().into_owned();
    let b = fs::read(&idx).unwrap();
    fs::write(&idx, &b[..b.len() - 5]).unwrap();
    let repo = open_repo(d.path(), b"pw").unwrap();
    assert!(
        repo.warnings().iter().any(|w| w.contains(&idx_name)),
        "{:?}",
        repo.warnings()
    );
    assert!(repo.index().damaged().contains_key(&idx_name));
}
