//! A prune overtaken by a concurrent one (which deleted the index files and
//! packs its plan read) starts over instead of failing (issue 6).

use std::fs;
use std::time::Duration;

use repo_core::prune::PruneOptions;
use repo_core::{ObjectKind, SnapshotFilter};

use super::{check_clean, init_repo, open_repo, random_bytes};

#[test]
fn a_prune_overtaken_by_a_concurrent_prune_plans_again_and_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    // Small files, one chunk each, so every pack mixes files kept and
    // files rewritten: the prune has to repack (read) them.
    for i in 0..40 {
        fs::write(src.join(format!("f{i:02}")), random_bytes(100_000, i)).unwrap();
    }
    let old = repo.backup().path(&src).run().unwrap().snapshot;
    for i in (0..40).step_by(2) {
        fs::write(src.join(format!("f{i:02}")), random_bytes(100_000, 100 + i)).unwrap();
    }
    repo.backup().path(&src).run().unwrap();
    repo.backend()
        .delete(ObjectKind::Snapshot, &old.id.to_hex())
        .unwrap();
    let opts = PruneOptions {
        max_unused: 0.0,
        grace: Duration::ZERO,
    };
    let stale = repo.prune_plan(&opts).unwrap();
    assert!(stale.bytes_repacked > 0, "{stale}");
    // Another process prunes to the end first: it deletes the index files
    // and the packs the stale plan is about to read.
    let other = open_repo(d.path(), b"pw").unwrap();
    other.prune(other.prune_plan(&opts).unwrap()).unwrap();
    repo.prune(stale).unwrap();

    let repo = open_repo(d.path(), b"pw").unwrap();
    check_clean(&repo).unwrap();
    let latest = repo
        .find_snapshot("latest", &SnapshotFilter::default())
        .unwrap();
    let out = d.path().join("out");
    repo.restore(&latest).to(&out).run().unwrap();
    let root = out.join(src.strip_prefix("/").unwrap());
    for i in 0..40 {
        let n = format!("f{i:02}");
        assert_eq!(
            fs::read(root.join(&n)).unwrap(),
            fs::read(src.join(&n)).unwrap()
        );
    }
}
