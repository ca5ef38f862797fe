//! Issue 12, items 3 and 4: a lost pack never ends up silently referenced
//! by a new backup, and a heartbeat or mark the storage clock cannot vouch
//! for does not stall prune, is named, and is reported by check.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use repo_core::backend::{Backend, ObjectKind};
use repo_core::blob::BlobKind;
use repo_core::prune::PruneOptions;
use repo_core::{Error, ProblemKind, Repository};

use super::{check_all, init_repo, open_repo, random_bytes};

fn now_prune() -> PruneOptions {
    PruneOptions {
        grace: Duration::ZERO,
        ..Default::default()
    }
}

fn restores_exactly(repo: &Repository, src: &Path, out: &Path) {
    let snap = repo.snapshots().unwrap().pop().unwrap();
    let _ = fs::remove_dir_all(out);
    repo.restore(&snap).to(out).run().unwrap();
    let got = out.join(src.strip_prefix("/").unwrap());
    for name in ["a.bin", "b.bin"] {
        assert_eq!(
            fs::read(got.join(name)).unwrap(),
            fs::read(src.join(name)).unwrap()
        );
    }
}

/// Item 3: after a data pack is lost, the next backup of the same files
/// fails naming the pack instead of writing a snapshot that references
/// it; `repair index` and `repair snapshots` then let a backup store the
/// data again, and that snapshot restores exactly.
#[test]
fn backup_never_reuses_a_blob_from_a_lost_pack() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.bin"), random_bytes(200_000, 1)).unwrap();
    fs::write(src.join("b.bin"), random_bytes(100_000, 2)).unwrap();
    let repo = init_repo(d.path());
    repo.backup().path(&src).run().unwrap();
    let lost = repo
        .backend()
        .list(ObjectKind::Pack)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .find(|n| {
            let h = repo.read_pack_header(&n.parse().unwrap()).unwrap();
            h.entries.iter().all(|e| e.kind == BlobKind::Data)
        })
        .unwrap();
    repo.backend().delete(ObjectKind::Pack, &lost).unwrap();
    drop(repo);
    let before = open_repo(d.path(), b"pw")
        .unwrap()
        .snapshots()
        .unwrap()
        .len();

    // With the parent (unchanged files) and without it (new chunking).
    for parent in [true, false] {
        let repo = open_repo(d.path(), b"pw").unwrap();
        let mut b = repo.backup().path(&src);
        if !parent {
            b = b.parent(repo_core::ParentChoice::None);
        }
        let e = b.run().unwrap_err();
        assert!(matches!(e, Error::LostPack { .. }), "{e}");
        assert!(e.to_string().contains(&lost), "{e}");
        assert!(repo.warnings().iter().any(|w| w.contains(&lost)));
        assert_eq!(
            repo.snapshots().unwrap().len(),
            before,
            "a snapshot was written"
        );
    }

    let repo = open_repo(d.path(), b"pw").unwrap();
    repo.repair_index(false).unwrap();
    repo.repair_snapshots().unwrap();
    drop(repo);
    let repo = open_repo(d.path(), b"pw").unwrap();
    repo.backup().path(&src).run().unwrap();
    restores_exactly(&repo, &src, &d.path().join("out"));
}

/// Sets a file's modification time `secs` seconds from now.
fn set_mtime(p: &Path, secs: u64) {
    let t = SystemTime::now() + Duration::from_secs(secs);
    filetime::set_file_mtime(p, filetime::FileTime::from_system_time(t)).unwrap();
}

/// Two backups, the first forgotten: a prune has packs to condemn and delete.
fn repo_with_garbage(d: &Path) -> std::path::PathBuf {
    let src = d.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.bin"), random_bytes(200_000, 1)).unwrap();
    fs::write(src.join("b.bin"), random_bytes(100_000, 2)).unwrap();
    let repo = init_repo(d);
    let first = repo.backup().path(&src).run().unwrap().snapshot;
    fs::write(src.join("a.bin"), random_bytes(200_000, 3)).unwrap();
    repo.backup().path(&src).run().unwrap();
    repo.backend()
        .delete(ObjectKind::Snapshot, &first.id.to_hex())
        .unwrap();
    src
}

/// Item 4: a heartbeat dated a year in the storage's future (a start of 0
/// in its content) no longer holds prune's sweep back forever: prune
/// ignores it and names it, and check warns about it. A current heartbeat
/// still holds the sweep back, and prune names it.
#[test]
fn a_future_dated_heartbeat_is_ignored_named_and_reported() {
    let d = tempfile::tempdir().unwrap();
    let src = repo_with_garbage(d.path());
    let name = "backup-00112233aabbccdd-0";
    let hb = d.path().join("repo/locks").join(name);
    fs::write(&hb, 0i64.to_le_bytes()).unwrap();
    set_mtime(&hb, 365 * 24 * 3600);

    let repo = open_repo(d.path(), b"pw").unwrap();
    let report = check_all(&repo);
    assert!(
        report
            .warnings
            .iter()
            .any(|p| p.kind == ProblemKind::FutureDated && p.message.contains(name)),
        "{report}"
    );
    let sum = repo.prune(repo.prune_plan(&now_prune()).unwrap()).unwrap();
    assert!(sum.packs_deleted > 0, "{sum:?}");
    assert_eq!(sum.heartbeats_ignored, vec![name.to_string()]);
    assert!(repo.warnings().iter().any(|w| w.contains(name)));
    restores_exactly(&repo, &src, &d.path().join("out"));

    // A live heartbeat that started before the mark still holds it back.
    fs::remove_file(&hb).unwrap();
    fs::write(src.join("a.bin"), random_bytes(200_000, 4)).unwrap();
    let old = repo.snapshots().unwrap().pop().unwrap();
    repo.backup().path(&src).run().unwrap();
    repo.backend()
        .delete(ObjectKind::Snapshot, &old.id.to_hex())
        .unwrap();
    let beat = repo_core::lock::Heartbeat::start(repo.backend()).unwrap();
    let sum = repo.prune(repo.prune_plan(&now_prune()).unwrap()).unwrap();
    assert_eq!(sum.packs_deleted, 0, "{sum:?}");
    assert_eq!(sum.waiting_for.len(), 1, "{sum:?}");
    assert!(sum.waiting_for[0].starts_with("backup-"));
    drop(beat);
}

/// Item 4: garbage in `marks/` no longer makes prune (or backup) fail:
/// check reports it as an error naming it, prune skips it with a warning
/// and deletes it once the grace period has passed by the storage clock,
/// after which check is clean. A mark dated in the future is rewritten.
#[test]
fn a_garbage_mark_is_reported_skipped_and_removed() {
    let d = tempfile::tempdir().unwrap();
    let src = repo_with_garbage(d.path());
    let name = "ab".repeat(32);
    let mark = d.path().join("repo/marks").join(&name);
    fs::create_dir_all(mark.parent().unwrap()).unwrap();
    fs::write(&mark, b"not a mark at all").unwrap();

    let repo = open_repo(d.path(), b"pw").unwrap();
    let report = check_all(&repo);
    assert!(
        report
            .errors
            .iter()
            .any(|p| p.kind == ProblemKind::MarkDamaged && p.message.contains(&name)),
        "{report}"
    );
    repo.backup().path(&src).run().unwrap();
    // Within the grace period: skipped, named, kept.
    let sum = repo
        .prune(repo.prune_plan(&PruneOptions::default()).unwrap())
        .unwrap();
    assert!(sum.marks_damaged_deleted.is_empty());
    assert!(repo.warnings().iter().any(|w| w.contains(&name)));
    assert!(mark.exists());
    // Past it (grace zero): deleted, and every mark is swept.
    let sum = repo.prune(repo.prune_plan(&now_prune()).unwrap()).unwrap();
    assert_eq!(sum.marks_damaged_deleted, vec![name.clone()], "{sum:?}");
    assert!(!mark.exists());
    assert!(check_all(&repo).is_ok());
    restores_exactly(&repo, &src, &d.path().join("out"));
}

/// Item 4: a readable mark dated in the storage's future would never
/// reach its grace period; prune rewrites it with the storage's time and
/// a later prune sweeps it.
#[test]
fn a_future_dated_mark_is_rewritten_and_then_swept() {
    let d = tempfile::tempdir().unwrap();
    let src = repo_with_garbage(d.path());
    let repo = open_repo(d.path(), b"pw").unwrap();
    // Condemn without sweeping: a long grace period.
    let sum = repo
        .prune(repo.prune_plan(&PruneOptions::default()).unwrap())
        .unwrap();
    assert!(sum.packs_condemned > 0);
    let marks: Vec<_> = fs::read_dir(d.path().join("repo/marks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(marks.len(), 1);
    set_mtime(&marks[0], 365 * 24 * 3600);
    let report = check_all(&repo);
    assert!(
        report
            .warnings
            .iter()
            .any(|p| p.kind == ProblemKind::FutureDated),
        "{report}"
    );
    let sum = repo.prune(repo.prune_plan(&now_prune()).unwrap()).unwrap();
    let old = marks[0].file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(sum.marks_redated, vec![old]);
    let sum = repo.prune(repo.prune_plan(&now_prune()).unwrap()).unwrap();
    assert!(sum.packs_deleted > 0, "{sum:?}");
    assert!(check_all(&repo).is_ok());
    restores_exactly(&repo, &src, &d.path().join("out"));
}

/// Item 2: resolving a full snapshot id reads that snapshot file and no
/// other, and lists none, so damage elsewhere cannot stop it; a prefix
/// resolves by listing (and skips a damaged snapshot with a warning).
#[test]
fn a_full_id_reads_only_its_own_snapshot_file() {
    use repo_core::backend::{FaultPlan, FaultyBackend, OpKind};
    use repo_core::{OpenOptions, SnapshotFilter};

    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let (mem, repo) = super::init_memory();
    let mut ids = Vec::new();
    for i in 0..3u64 {
        fs::write(src.join("f.bin"), random_bytes(10_000, i)).unwrap();
        ids.push(repo.backup().path(&src).run().unwrap().snapshot.id);
    }
    drop(repo);
    let fb = FaultyBackend::new(mem);
    let repo = Repository::open(fb.clone(), b"pw", OpenOptions::default()).unwrap();
    fb.set_plan(FaultPlan::none());
    let s = repo
        .find_snapshot(&ids[1].to_hex(), &SnapshotFilter::default())
        .unwrap();
    assert_eq!(s.id, ids[1]);
    assert_eq!(fb.ops_on(OpKind::Read, ObjectKind::Snapshot), 1);
    assert_eq!(fb.ops_on(OpKind::List, ObjectKind::Snapshot), 0);

    // Damage another snapshot: the prefix still resolves, with a warning.
    let mut bad = fb
        .inner()
        .read(ObjectKind::Snapshot, &ids[2].to_hex())
        .unwrap();
    bad[20] ^= 1;
    fb.inner()
        .corrupt(ObjectKind::Snapshot, &ids[2].to_hex(), bad);
    let s = repo
        .find_snapshot(&ids[0].to_hex()[..10], &SnapshotFilter::default())
        .unwrap();
    assert_eq!(s.id, ids[0]);
    assert!(repo.warnings().iter().any(|w| w.contains(&ids[2].to_hex())));
    // `latest` is the newest readable snapshot.
    let s = repo
        .find_snapshot("latest", &SnapshotFilter::default())
        .unwrap();
    assert_eq!(s.id, ids[1]);
}
