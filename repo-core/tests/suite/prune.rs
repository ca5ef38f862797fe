//! Prune: space is reclaimed, nothing referenced is lost, a prune stopped at
//! any step leaves a usable repository, and backups run alongside (issue 3).

use repo_core::unstable::RepositoryInternals as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use repo_core::unstable::backend::ObjectKind;
use repo_core::unstable::lock::Heartbeat;
use repo_core::unstable::prune::{PruneOptions, PruneStep};
use repo_core::{Repository, SnapshotEntry};

use super::{init_repo, open_repo, random_bytes};

fn now_prune() -> PruneOptions {
    PruneOptions {
        grace: Duration::ZERO,
        ..Default::default()
    }
}

fn dir_bytes(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// Restores `snap` and compares it with `src`, byte for byte.
fn assert_restores(repo: &Repository, snap: &SnapshotEntry, src: &Path, out: &Path) {
    let _ = fs::remove_dir_all(out);
    repo.restore(snap).to(out).run().unwrap();
    let root = out.join(src.strip_prefix("/").unwrap());
    for e in walkdir::WalkDir::new(src)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
    {
        let rel = e.path().strip_prefix(src).unwrap();
        assert_eq!(
            fs::read(root.join(rel)).unwrap(),
            fs::read(e.path()).unwrap(),
            "{}",
            rel.display()
        );
    }
}

/// Two snapshots of different data; the first is then forgotten (its file
/// bytes are kept in `d/old.snapshot`).
fn two_generations(d: &Path) -> (Repository, PathBuf, SnapshotEntry, SnapshotEntry) {
    let repo = init_repo(d);
    let src = d.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.bin"), random_bytes(2 << 20, 1)).unwrap();
    fs::write(src.join("keep.bin"), random_bytes(1 << 20, 2)).unwrap();
    let old = repo.backup().path(&src).run().unwrap().snapshot;
    fs::write(src.join("a.bin"), random_bytes(2 << 20, 3)).unwrap();
    let new = repo.backup().path(&src).run().unwrap().snapshot;
    let bytes = repo
        .backend()
        .read(ObjectKind::Snapshot, &old.id.to_hex())
        .unwrap();
    fs::write(d.join("old.snapshot"), bytes).unwrap();
    repo.backend()
        .delete(ObjectKind::Snapshot, &old.id.to_hex())
        .unwrap();
    (repo, src, old, new)
}

#[test]
fn prune_frees_what_no_snapshot_needs_and_keeps_the_rest() {
    let d = tempfile::tempdir().unwrap();
    let (repo, src, _, new) = two_generations(d.path());
    let before = dir_bytes(&d.path().join("repo/data"));
    let plan = repo.prune_plan(&now_prune()).unwrap();
    assert!(plan.bytes_condemned >= 2 << 20, "{plan}");
    let sum = repo.prune(plan).unwrap();
    assert!(sum.packs_deleted > 0 && sum.marks_postponed == 0, "{sum:?}");
    let after = dir_bytes(&d.path().join("repo/data"));
    // The kept snapshot holds 3 MiB of incompressible data.
    assert!(after < before - (3 << 19), "{before} -> {after}");
    assert!(
        (3 << 20..(3 << 20) + (1 << 19)).contains(&after),
        "{after} bytes for 3 MiB of live data"
    );
    let repo = open_repo(d.path(), b"pw").unwrap();
    assert_restores(&repo, &new, &src, &d.path().join("out"));
    // Nothing more to do.
    let again = repo.prune_plan(&now_prune()).unwrap();
    assert!(
        again.condemn.is_empty() && again.marks.is_empty(),
        "{again}"
    );
}

#[test]
fn grace_period_and_running_backups_postpone_deletion() {
    let d = tempfile::tempdir().unwrap();
    let (repo, src, _, new) = two_generations(d.path());
    let packs = || repo.backend().list(ObjectKind::Pack).unwrap().len();
    let n0 = packs();
    // A backup that began before the mark and is still running.
    let running = Heartbeat::start(repo.backend()).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    // Phase one only: the grace period has not passed.
    let sum = repo
        .prune(repo.prune_plan(&PruneOptions::default()).unwrap())
        .unwrap();
    assert!(sum.packs_condemned > 0 && sum.packs_deleted == 0, "{sum:?}");
    assert_eq!(packs(), n0 + sum.packs_written);
    assert_eq!(repo.backend().list(ObjectKind::Mark).unwrap().len(), 1);
    // The grace period is over, but that backup is still running: phase two waits.
    let sum = repo.prune(repo.prune_plan(&now_prune()).unwrap()).unwrap();
    assert_eq!((sum.packs_deleted, sum.marks_postponed), (0, 1), "{sum:?}");
    drop(running);
    let sum = repo.prune(repo.prune_plan(&now_prune()).unwrap()).unwrap();
    assert!(sum.packs_deleted > 0 && sum.marks_postponed == 0, "{sum:?}");
    assert!(repo.backend().list(ObjectKind::Mark).unwrap().is_empty());
    assert_restores(&repo, &new, &src, &d.path().join("out"));
}

#[test]
fn a_snapshot_that_references_a_condemned_pack_resurrects_it() {
    let d = tempfile::tempdir().unwrap();
    let (repo, src, old, _) = two_generations(d.path());
    // The forgotten snapshot comes back after phase one, as if a backup
    // that deduplicated against the old data finished late.
    let snap_bytes = fs::read(d.path().join("old.snapshot")).unwrap();
    let old_blobs: Vec<_> = {
        let mut v = Vec::new();
        repo.walk(&old.snapshot.tree, &mut |_, n| {
            v.extend(n.content.iter().copied());
            Ok(true)
        })
        .unwrap();
        v
    };
    repo.prune(repo.prune_plan(&PruneOptions::default()).unwrap())
        .unwrap();
    repo.backend()
        .write(ObjectKind::Snapshot, &old.id.to_hex(), &snap_bytes)
        .unwrap();
    let sum = repo.prune(repo.prune_plan(&now_prune()).unwrap()).unwrap();
    assert!(sum.packs_resurrected > 0, "{sum:?}");
    let missing: Vec<_> = old_blobs
        .iter()
        .filter(|b| repo.index().lookup(b).unwrap().is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} blobs of the resurrected snapshot are not indexed",
        missing.len(),
        old_blobs.len()
    );
    let repo = open_repo(d.path(), b"pw").unwrap();
    let back = repo.snapshot(&old.id).unwrap();
    // The old a.bin restores again.
    let out = d.path().join("out");
    repo.restore(&back).to(&out).run().unwrap();
    let got = fs::read(out.join(src.strip_prefix("/").unwrap()).join("a.bin")).unwrap();
    assert_eq!(got, random_bytes(2 << 20, 1));
}

#[test]
fn a_prune_stopped_at_any_step_leaves_a_usable_repository() {
    for step in [
        PruneStep::Repacked,
        PruneStep::IndexWritten,
        PruneStep::OldIndexDeleted,
        PruneStep::Marked,
        PruneStep::SweptSome,
    ] {
        let d = tempfile::tempdir().unwrap();
        let (repo, src, _, new) = two_generations(d.path());
        let plan = repo
            .prune_plan(&PruneOptions {
                max_unused: 0.0,
                grace: Duration::ZERO,
            })
            .unwrap();
        repo.prune_until(plan, Some(step)).unwrap();
        // "Crash": a new session must restore everything kept...
        let repo = open_repo(d.path(), b"pw").unwrap();
        assert_restores(&repo, &new, &src, &d.path().join("out1"));
        // ...back up again...
        let next = repo.backup().path(&src).run().unwrap().snapshot;
        // ...and a full prune must finish the job.
        repo.prune(repo.prune_plan(&now_prune()).unwrap()).unwrap();
        let repo = open_repo(d.path(), b"pw").unwrap();
        assert_restores(&repo, &next, &src, &d.path().join("out2"));
        let plan = repo.prune_plan(&now_prune()).unwrap();
        assert!(
            plan.condemn.is_empty() && plan.marks.is_empty(),
            "step {step:?}: {plan}"
        );
    }
}

#[test]
fn backups_run_while_prunes_run() {
    let d = tempfile::tempdir().unwrap();
    let (repo, src, _, _) = two_generations(d.path());
    drop(repo);
    let srcs: Vec<PathBuf> = (0..3)
        .map(|i| {
            let s = d.path().join(format!("src{i}"));
            fs::create_dir_all(&s).unwrap();
            fs::write(s.join("f.bin"), random_bytes(2 << 20, 10 + i)).unwrap();
            // Shares data with the first generation, so dedup hits packs prune may condemn.
            fs::copy(src.join("keep.bin"), s.join("keep.bin")).unwrap();
            s
        })
        .collect();
    let dir: &Path = d.path();
    let snaps = std::thread::scope(|s| {
        let pruner = s.spawn(move || {
            let repo = open_repo(dir, b"pw").unwrap();
            for _ in 0..5 {
                repo.prune(
                    repo.prune_plan(&PruneOptions {
                        max_unused: 0.0,
                        grace: Duration::ZERO,
                    })
                    .unwrap(),
                )
                .unwrap();
            }
        });
        let backups: Vec<_> = srcs
            .iter()
            .map(|src| {
                s.spawn(move || {
                    let repo = open_repo(dir, b"pw").unwrap();
                    repo.backup().path(src).run().unwrap().snapshot
                })
            })
            .collect();
        pruner.join().unwrap();
        backups
            .into_iter()
            .map(|b| b.join().unwrap())
            .collect::<Vec<_>>()
    });
    let repo = open_repo(d.path(), b"pw").unwrap();
    repo.prune(repo.prune_plan(&now_prune()).unwrap()).unwrap();
    let repo = open_repo(d.path(), b"pw").unwrap();
    for (snap, src) in snaps.iter().zip(&srcs) {
        assert_restores(&repo, snap, src, &d.path().join("out"));
    }
}
