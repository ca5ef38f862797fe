//! A backup takes over the packs an interrupted backup uploaded but never
//! indexed, instead of uploading their blobs again (issue 6, SPEC §15);
//! packs a prune condemned are left to the prune.

use std::fs;
use std::path::Path;
use std::time::Duration;

use repo_core::prune::PruneOptions;
use repo_core::{ObjectKind, Repository};

use super::{check_all, init_repo, open_repo, random_bytes};

fn restores(repo: &Repository, src: &Path, out: &Path) {
    let snap = repo.find_snapshot("latest", &Default::default()).unwrap();
    let _ = fs::remove_dir_all(out);
    repo.restore(&snap).to(out).run().unwrap();
    let root = out.join(src.strip_prefix("/").unwrap());
    for n in ["a", "b"] {
        assert_eq!(
            fs::read(root.join(n)).unwrap(),
            fs::read(src.join(n)).unwrap()
        );
    }
}

/// The state a backup killed after its uploads leaves: packs, no index
/// file naming them, no snapshot.
fn interrupted_backup(d: &Path) -> (std::path::PathBuf, usize) {
    let repo = init_repo(d);
    let src = d.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), random_bytes(3 << 20, 1)).unwrap();
    fs::write(src.join("b"), random_bytes(1 << 20, 2)).unwrap();
    let snap = repo.backup().path(&src).run().unwrap().snapshot;
    let b = repo.backend();
    b.delete(ObjectKind::Snapshot, &snap.id.to_hex()).unwrap();
    for o in b.list(ObjectKind::Index).unwrap() {
        b.delete(ObjectKind::Index, &o.name).unwrap();
    }
    (src, b.list(ObjectKind::Pack).unwrap().len())
}

#[test]
fn a_rerun_backup_indexes_the_packs_of_an_interrupted_one_and_uploads_nothing_again() {
    let d = tempfile::tempdir().unwrap();
    let (src, packs) = interrupted_backup(d.path());
    assert!(packs >= 2, "{packs} packs");
    let repo = open_repo(d.path(), b"pw").unwrap();
    let out = repo.backup().path(&src).run().unwrap();
    assert_eq!(out.packs_resumed, packs);
    // No chunk is stored again (trees of the ancestors of `src` may be new:
    // /tmp changes whenever a parallel test makes a directory there).
    assert_eq!(out.snapshot.snapshot.summary.data_blobs, 0);
    // At most one new pack, of those ancestor trees.
    assert!(repo.backend().list(ObjectKind::Pack).unwrap().len() <= packs + 1);
    let r = check_all(&repo);
    assert!(r.is_ok() && r.warnings.is_empty(), "{r}");
    restores(&repo, &src, &d.path().join("out"));
    // Indexed now: the next backup has nothing to take over.
    let again = open_repo(d.path(), b"pw").unwrap();
    assert_eq!(again.backup().path(&src).run().unwrap().packs_resumed, 0);
}

#[test]
fn packs_condemned_by_a_prune_are_not_taken_over() {
    let d = tempfile::tempdir().unwrap();
    let (src, packs) = interrupted_backup(d.path());
    let repo = open_repo(d.path(), b"pw").unwrap();
    // Phase one condemns the unindexed packs; the grace period keeps them.
    let opts = PruneOptions {
        grace: Duration::from_secs(3600),
        ..Default::default()
    };
    let sum = repo.prune(repo.prune_plan(&opts).unwrap()).unwrap();
    assert_eq!(sum.packs_condemned, packs);
    let out = repo.backup().path(&src).run().unwrap();
    assert_eq!(out.packs_resumed, 0, "a condemned pack was taken over");
    assert!(out.snapshot.snapshot.summary.bytes_added_packed > 4 << 20);
    restores(&repo, &src, &d.path().join("out"));
}
