//! Per-repository zstd dictionaries for small blobs (SPEC §6.4): trained from
//! the first backup with enough small files, used by every later small blob,
//! verified by `check`, never in a version-1 repository.

use repo_core::unstable::RepositoryInternals as _;
use std::fs;
use std::path::{Path, PathBuf};

use repo_core::unstable::check::ProblemKind;
use repo_core::unstable::compress::{DICT_REF_LEN, MARKER_ZSTD_DICT};
use repo_core::unstable::dict::MIN_SAMPLES;
use repo_core::{BlobId, Error, InitOptions, LocalBackend, ObjectKind, Repository, SnapshotFilter};

use super::{WEAK_KDF, check_all, open_repo};

/// `n` small configuration-like files of 0.5–2 KB, similar to each other as
/// the files of one machine are: the same keys, different values.
fn small_files(dir: &Path, n: usize, seed: usize) -> PathBuf {
    let src = dir.join(format!("src{seed}"));
    fs::create_dir_all(&src).unwrap();
    for i in seed..seed + n {
        let mut s = String::new();
        for j in 0..(2 + i % 7) {
            s.push_str(&format!(
                "[section_{j}]\nlisten_address = 10.{}.{}.{}\nmax_connections = {}\n\
                 log_file = /var/log/service-{}/output-{j}.log\nretry_policy = exponential\n\
                 enable_metrics = {}\n# tuned on host-{:04}\n",
                i % 256,
                (i * 7 + j) % 256,
                j % 256,
                100 + (i * j) % 900,
                i % 13,
                (i + j) % 2 == 0,
                (i * 31 + j) % 10_000
            ));
        }
        fs::write(src.join(format!("service-{i:05}.conf")), s).unwrap();
    }
    src
}

fn init(dir: &Path, name: &str, dictionary: bool) -> Repository {
    let opts = InitOptions {
        kdf: WEAK_KDF,
        pack_size: 1 << 20,
        dictionary,
        ..Default::default()
    };
    Repository::init(LocalBackend::create(dir.join(name)).unwrap(), b"pw", opts).unwrap()
}

/// Every data chunk of the latest snapshot.
fn data_blobs(repo: &Repository) -> Vec<BlobId> {
    let snap = repo
        .find_snapshot("latest", &SnapshotFilter::default())
        .unwrap();
    let mut out = Vec::new();
    repo.walk(&snap.snapshot.tree, &mut |_, node| {
        out.extend(node.content.iter().copied());
        Ok(true)
    })
    .unwrap();
    out
}

fn bytes_of(repo: &Repository, kind: ObjectKind) -> u64 {
    repo.backend()
        .list(kind)
        .unwrap()
        .iter()
        .map(|o| o.size)
        .sum()
}

fn assert_same_tree(a: &Path, b: &Path) {
    let mut n = 0;
    for e in fs::read_dir(a).unwrap() {
        let e = e.unwrap();
        let other = b.join(e.file_name());
        assert_eq!(fs::read(e.path()).unwrap(), fs::read(&other).unwrap());
        n += 1;
    }
    assert_eq!(n, fs::read_dir(b).unwrap().count());
}

#[test]
fn small_similar_files_train_and_use_a_dictionary() {
    let d = tempfile::tempdir().unwrap();
    let src = small_files(d.path(), 400, 0);
    let with = init(d.path(), "with", true);
    let without = init(d.path(), "without", false);
    with.backup().path(&src).run().unwrap();
    without.backup().path(&src).run().unwrap();

    // One dictionary, named by every small blob.
    let dicts = with.dictionaries().list().unwrap();
    assert_eq!(dicts.len(), 1);
    let dict_ref = &dicts[0].as_bytes()[..DICT_REF_LEN];
    let blobs = data_blobs(&with);
    assert_eq!(blobs.len(), 400);
    for id in &blobs {
        let p = with.stored_payload(id).unwrap();
        assert_eq!(
            p[0], MARKER_ZSTD_DICT,
            "blob {id} is not dictionary-compressed"
        );
        assert_eq!(&p[1..1 + DICT_REF_LEN], dict_ref);
    }
    for id in data_blobs(&without) {
        assert_ne!(without.stored_payload(&id).unwrap()[0], MARKER_ZSTD_DICT);
    }

    // Smaller even counting the dictionary itself.
    let packed_with = bytes_of(&with, ObjectKind::Pack) + bytes_of(&with, ObjectKind::Dict);
    let packed_without = bytes_of(&without, ObjectKind::Pack);
    assert!(
        packed_with * 10 < packed_without * 8,
        "with dictionary {packed_with} B (dictionary {} B), without {packed_without} B",
        bytes_of(&with, ObjectKind::Dict)
    );

    // A new session restores byte for byte, and check reads everything.
    drop(with);
    let with = Repository::open(
        LocalBackend::open(d.path().join("with")),
        b"pw",
        Default::default(),
    )
    .unwrap();
    let snap = with
        .find_snapshot("latest", &SnapshotFilter::default())
        .unwrap();
    let out = d.path().join("out");
    with.restore(&snap).to(&out).run().unwrap();
    assert_same_tree(&src, &out.join(src.strip_prefix("/").unwrap()));
    let r = check_all(&with);
    assert!(r.ok, "{r}");
    assert_eq!(r.dictionaries, 1);
    assert_eq!(r.blobs_checked as usize, 400 + r.trees as usize);
}

#[test]
fn later_backups_reuse_the_dictionary() {
    let d = tempfile::tempdir().unwrap();
    let repo = init(d.path(), "repo", true);
    repo.backup()
        .path(small_files(d.path(), 200, 0))
        .run()
        .unwrap();
    let first = repo.dictionaries().list().unwrap();
    assert_eq!(first.len(), 1);
    drop(repo);
    let repo = open_repo(d.path(), b"pw").unwrap();
    let src2 = small_files(d.path(), 100, 5000);
    repo.backup().path(&src2).run().unwrap();
    assert_eq!(repo.dictionaries().list().unwrap(), first);
    for id in data_blobs(&repo) {
        let p = repo.stored_payload(&id).unwrap();
        assert_eq!(p[0], MARKER_ZSTD_DICT);
        assert_eq!(p[1..1 + DICT_REF_LEN], first[0].as_bytes()[..DICT_REF_LEN]);
    }
}

#[test]
fn too_few_small_files_wait_for_a_later_backup() {
    let d = tempfile::tempdir().unwrap();
    let repo = init(d.path(), "repo", true);
    repo.backup()
        .path(small_files(d.path(), MIN_SAMPLES - 1, 0))
        .run()
        .unwrap();
    assert!(repo.dictionaries().list().unwrap().is_empty());
    for id in data_blobs(&repo) {
        assert_ne!(repo.stored_payload(&id).unwrap()[0], MARKER_ZSTD_DICT);
    }
    repo.backup()
        .path(small_files(d.path(), 300, 1000))
        .run()
        .unwrap();
    assert_eq!(repo.dictionaries().list().unwrap().len(), 1);
    assert!(check_all(&repo).ok);
}

#[test]
fn damaged_dictionary_is_reported_and_restore_fails_clearly() {
    let d = tempfile::tempdir().unwrap();
    let src = small_files(d.path(), 200, 0);
    let repo = init(d.path(), "repo", true);
    repo.backup().path(&src).run().unwrap();
    let id = repo.dictionaries().list().unwrap()[0];
    drop(repo);
    let file = d.path().join("repo/dicts").join(id.to_hex());
    let mut bytes = fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::remove_file(&file).unwrap();
    fs::write(&file, bytes).unwrap();

    let repo = Repository::open(
        LocalBackend::open(d.path().join("repo")),
        b"pw",
        Default::default(),
    )
    .unwrap();
    let r = check_all(&repo);
    assert!(!r.ok);
    assert!(
        r.errors
            .iter()
            .any(|p| p.kind == ProblemKind::DictDamaged && p.message.contains(&id.to_hex())),
        "{r}"
    );
    // Each blob that needs it is unreadable, and says why.
    assert!(
        r.errors
            .iter()
            .any(|p| p.kind == ProblemKind::BlobDamaged && p.message.contains("dictionary")),
        "{r}"
    );
    let snap = repo
        .find_snapshot("latest", &SnapshotFilter::default())
        .unwrap();
    let err = repo
        .read_blob(&data_blobs(&repo)[0])
        .expect_err("blob needs the damaged dictionary");
    assert!(
        matches!(&err, Error::DictionaryUnavailable { dict, .. } if id.to_hex().starts_with(dict.as_str())),
        "{err}"
    );
    let restored = repo.restore(&snap).to(d.path().join("out")).run();
    let msg = match restored {
        Err(e) => e.to_string(),
        Ok(s) => format!("{s:?}"),
    };
    assert!(msg.contains("dictionary"), "restore: {msg}");
}

#[test]
fn version_1_repository_never_gains_a_dictionary() {
    let d = tempfile::tempdir().unwrap();
    let repo = init(d.path(), "repo", false);
    assert_eq!(repo.config().version, 1);
    let config = fs::read(d.path().join("repo/config")).unwrap();
    assert_eq!(config[8..12], 1u32.to_le_bytes());
    for seed in [0, 1000] {
        repo.backup()
            .path(small_files(d.path(), 300, seed))
            .run()
            .unwrap();
    }
    drop(repo);
    let repo = open_repo(d.path(), b"pw").unwrap();
    assert_eq!(repo.config().version, 1);
    assert!(repo.dictionaries().list().unwrap().is_empty());
    for id in data_blobs(&repo) {
        assert_ne!(repo.stored_payload(&id).unwrap()[0], MARKER_ZSTD_DICT);
    }
    // A new repository is version 2.
    assert_eq!(init(d.path(), "v2", true).config().version, 2);
}

/// What a version-1 build does with a version-2 config, this build does with
/// the next version: refuses it by name before trying any key.
#[test]
fn a_newer_config_version_is_refused_clearly() {
    let d = tempfile::tempdir().unwrap();
    drop(init(d.path(), "repo", true));
    let path = d.path().join("repo/config");
    let mut bytes = fs::read(&path).unwrap();
    bytes[8..12]
        .copy_from_slice(&(repo_core::unstable::format::REPOSITORY_VERSION + 1).to_le_bytes());
    fs::remove_file(&path).unwrap();
    fs::write(&path, bytes).unwrap();
    let err = open_repo(d.path(), b"wrong password").unwrap_err();
    assert!(
        matches!(
            err,
            Error::Format(
                repo_core::unstable::format::FormatError::UnsupportedVersion { version: 5, .. }
            )
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("unsupported config format version 5"),
        "{err}"
    );
}

/// Prune repacks dictionary-compressed blobs unchanged (they are opened with
/// the dictionary to verify them) and keeps the dictionary.
#[test]
fn prune_repacks_dictionary_blobs_and_keeps_the_dictionary() {
    let d = tempfile::tempdir().unwrap();
    let both = d.path().join("both");
    small_files(&both, 200, 0);
    let src1 = small_files(&both, 200, 3000);
    let repo = init(d.path(), "repo", true);
    let old = repo.backup().path(&both).run().unwrap().snapshot;
    repo.backup().path(&src1).run().unwrap();
    let dicts = repo.dictionaries().list().unwrap();
    assert_eq!(dicts.len(), 1);
    repo.backend()
        .delete(ObjectKind::Snapshot, &old.id.to_hex())
        .unwrap();
    let plan = repo
        .prune_plan(&repo_core::unstable::prune::PruneOptions {
            max_unused: 0.0,
            grace: std::time::Duration::ZERO,
        })
        .unwrap();
    assert!(plan.bytes_repacked > 0, "{plan}");
    repo.prune(plan).unwrap();

    let repo = Repository::open(
        LocalBackend::open(d.path().join("repo")),
        b"pw",
        Default::default(),
    )
    .unwrap();
    assert_eq!(repo.dictionaries().list().unwrap(), dicts);
    let r = check_all(&repo);
    assert!(r.ok, "{r}");
    for id in data_blobs(&repo) {
        assert_eq!(repo.stored_payload(&id).unwrap()[0], MARKER_ZSTD_DICT);
    }
    let snap = repo
        .find_snapshot("latest", &SnapshotFilter::default())
        .unwrap();
    let out = d.path().join("out");
    repo.restore(&snap).to(&out).run().unwrap();
    assert_same_tree(&src1, &out.join(src1.strip_prefix("/").unwrap()));
}
