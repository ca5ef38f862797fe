//! `rekey` (SPEC §30): every object sealed under an older epoch is written
//! again, nothing is lost, and a killed or time-limited run is finished by
//! the next one. Until several epochs exist, a simulated newer epoch (the
//! same key, nonces tagged with it) makes every older object stale.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use repo_core::unstable::RepositoryInternals;
use repo_core::unstable::backend::{Fault, FaultPlan, FaultyBackend};
use repo_core::unstable::blob::blob_ad;
use repo_core::unstable::crypto::{DataKeys, MasterKey};
use repo_core::unstable::pack::PackHeader;
use repo_core::unstable::wal::{WAL_HEADER_LEN, WalFileName};
use repo_core::{
    Backend, MemoryBackend, ObjectKind, OpenOptions, RekeyOptions, RekeyReport, Repository,
    SnapshotFilter, SnapshotId,
};

use super::{
    Files, XorShift, check_clean, fork, init_memory, init_repo, open_repo, random_bytes, restored,
    write_tree,
};

const EPOCH: u32 = 7;
const SYSID: u64 = 7_300_000_000_000_000_001;

fn opts() -> RekeyOptions {
    let mut o = RekeyOptions::default().simulate_epoch(EPOCH);
    o.grace = Duration::ZERO;
    o
}

/// Every object (pack header and each blob in it, index file, snapshot)
/// whose nonce does not carry `EPOCH`, by kind and name.
fn stale_objects(b: &dyn Backend, repo: &Repository) -> Vec<String> {
    let tag = EPOCH.to_le_bytes();
    let mut out = Vec::new();
    for kind in [
        ObjectKind::Index,
        ObjectKind::Snapshot,
        ObjectKind::Mark,
        ObjectKind::Dict,
    ] {
        for o in b.list(kind).unwrap() {
            let bytes = b.read(kind, &o.name).unwrap();
            if bytes[12..16] != tag {
                out.push(format!("{kind:?} {}", o.name));
            }
        }
    }
    for o in b.list(ObjectKind::Pack).unwrap() {
        let bytes = b.read(ObjectKind::Pack, &o.name).unwrap();
        let n = bytes.len();
        let hlen = u32::from_le_bytes(bytes[n - 4..].try_into().unwrap()) as usize;
        if bytes[n - 4 - hlen..n - hlen] != tag {
            out.push(format!("pack header {}", o.name));
        }
        let header = repo.read_pack_header(&o.name.parse().unwrap()).unwrap();
        for e in header.entries {
            let at = e.offset as usize;
            if bytes[at..at + 4] != tag {
                out.push(format!("blob {} in pack {}", e.id, o.name));
            }
        }
    }
    out
}

/// Files of backup round `round`: some shared (deduplicated), some new.
fn round_files(round: u64) -> Files {
    let mut f = Files::new();
    f.insert("same/keep.bin".into(), random_bytes(200_000, 1));
    f.insert("same/empty".into(), Vec::new());
    f.insert(
        format!("r{round}/new.bin"),
        random_bytes(150_000, 100 + round),
    );
    f.insert(
        "changing.txt".into(),
        format!("round {round}\n").repeat(2000).into_bytes(),
    );
    f
}

/// Snapshots by the id they were first written under, and their files.
type Model = BTreeMap<SnapshotId, Files>;

fn three_backups(repo: &Repository, src: &Path) -> Model {
    let mut model = Model::new();
    for round in 0..3 {
        let f = round_files(round);
        let _ = std::fs::remove_dir_all(src);
        write_tree(src, &f);
        let id = repo
            .backup()
            .path(src)
            .time_ns(1_000_000_000 * (round as i64 + 1))
            .run()
            .unwrap()
            .snapshot
            .id;
        model.insert(id, f);
    }
    model
}

/// Every listed snapshot belongs to the model (by its first id) and
/// restores exactly; every model snapshot is listed.
fn assert_model(repo: &Repository, model: &Model, src: &Path, scratch: &Path, what: &str) {
    let mut seen = BTreeMap::new();
    for s in repo.snapshots().unwrap() {
        let first = s.snapshot.original.unwrap_or(s.id);
        let want = model
            .get(&first)
            .unwrap_or_else(|| panic!("{what}: unexpected snapshot {}", s.id));
        assert!(
            restored(repo, &s.id, src, scratch) == *want,
            "{what}: snapshot {} (first {first}) restores different bytes",
            s.id
        );
        seen.insert(first, s.id);
    }
    for id in model.keys() {
        assert!(seen.contains_key(id), "{what}: snapshot {id} lost");
    }
}

fn complete(r: &RekeyReport) {
    assert!(r.is_complete(), "{r:#?}");
    assert_eq!(r.remaining.condemned_packs, 0, "{r:#?}");
}

#[test]
fn everything_stale_is_rewritten_and_every_snapshot_restores() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let (mem, repo) = init_memory();
    let model = three_backups(&repo, &src);
    // A copy made before the rekey: copying again afterwards must find it.
    let (_, dst) = init_memory();
    assert_eq!(dst.copy_from(&repo).run().unwrap().copied.len(), 3);
    assert!(stale_objects(&mem, &repo).len() > 10);

    let r = repo.rekey(&opts()).unwrap();
    complete(&r);
    assert!(r.packs_rewritten > 0 && r.packs_written > 0, "{r:#?}");
    assert_eq!(r.snapshots.len(), 3);
    assert_eq!(stale_objects(&mem, &repo), Vec::<String>::new());
    let repo =
        Repository::open(mem.clone(), cairn_testkit::PASSWORD, OpenOptions::default()).unwrap();
    check_clean(&repo).unwrap();
    assert_model(&repo, &model, &src, d.path(), "after rekey");
    for s in &r.snapshots {
        let new = repo.snapshot(&s.new).unwrap();
        assert_eq!(
            new.snapshot.original,
            Some(s.old),
            "the new one names the old"
        );
        assert!(repo.snapshot(&s.old).is_err(), "the old file is gone");
        let found = repo
            .find_snapshot(&s.old.to_hex(), &SnapshotFilter::default())
            .unwrap();
        assert_eq!(found.id, s.new, "the old id finds the new snapshot");
    }
    // The copy stays idempotent: the rekeyed snapshots are known by their originals.
    let again = dst.copy_from(&repo).run().unwrap();
    assert!(again.copied.is_empty(), "{:?}", again.copied);
    assert_eq!(again.skipped.len(), 3);

    // Nothing left: a second run rewrites nothing.
    let r2 = repo.rekey(&opts()).unwrap();
    complete(&r2);
    assert_eq!(
        (
            r2.packs_rewritten,
            r2.index_files_written,
            r2.snapshots.len()
        ),
        (0, 0, 0),
        "{r2:#?}"
    );
}

#[test]
fn without_a_newer_epoch_rekey_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let (mem, repo) = init_memory();
    three_backups(&repo, &d.path().join("src"));
    let before = fork(&mem);
    let r = repo.rekey(&RekeyOptions::default()).unwrap();
    assert!(!r.epochs_differ && r.is_complete(), "{r:#?}");
    let names = |b: &MemoryBackend, kind| {
        let mut v: Vec<String> = b.list(kind).unwrap().into_iter().map(|o| o.name).collect();
        v.sort();
        v
    };
    for kind in [ObjectKind::Pack, ObjectKind::Index, ObjectKind::Snapshot] {
        assert_eq!(names(&mem, kind), names(&before, kind));
    }
}

#[test]
fn a_time_limit_stops_cleanly_and_the_next_run_finishes() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let (mem, repo) = init_memory();
    let model = three_backups(&repo, &src);
    let mut limited = opts();
    limited.max_duration = Some(Duration::ZERO);
    let stopped = repo.rekey(&limited).unwrap();
    assert!(
        stopped.stopped_early && !stopped.is_complete(),
        "{stopped:#?}"
    );
    assert!(stopped.remaining.packs > 0, "{stopped:#?}");
    check_clean(&repo).unwrap();
    let r = repo.rekey(&opts()).unwrap();
    complete(&r);
    assert_eq!(stale_objects(&mem, &repo), Vec::<String>::new());
    check_clean(&repo).unwrap();
    assert_model(&repo, &model, &src, d.path(), "after the second run");
}

#[test]
fn a_rekey_killed_at_any_moment_loses_nothing_and_a_rerun_finishes() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let (base, repo) = init_memory();
    let model = three_backups(&repo, &src);
    drop(repo);
    kill_loop(&base, &model, &src, d.path(), &opts(), 24, &|b, r, what| {
        assert_eq!(stale_objects(b, r), Vec::<String>::new(), "{what}");
    });
}

/// The same with a real rotation: after the rerun nothing is sealed under
/// epoch 0 any more and it retires.
#[test]
fn a_rekey_after_a_real_rotation_killed_at_any_moment_finishes_and_retires() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let (base, mut repo) = init_memory();
    let model = three_backups(&repo, &src);
    repo.rotate_key(cairn_testkit::PASSWORD).unwrap();
    drop(repo);
    let mut real = RekeyOptions::default();
    real.grace = Duration::ZERO;
    kill_loop(&base, &model, &src, d.path(), &real, 12, &|_, r, what| {
        let census = r.epoch_census().unwrap();
        assert_eq!(census.per_epoch.get(&0), None, "{what}: {census:?}");
    });
}

/// Crashes a rekey of a fork of `base` at `random` random operations
/// (and the first and last), then checks that nothing was lost, that a
/// rerun completes, and whatever `finished` asks of the result.
fn kill_loop(
    base: &MemoryBackend,
    model: &Model,
    src: &Path,
    scratch: &Path,
    o: &RekeyOptions,
    random: usize,
    finished: &dyn Fn(&MemoryBackend, &Repository, &str),
) {
    // Counting pass.
    let count = {
        let fb = FaultyBackend::new(fork(base));
        let r =
            Repository::open(fb.clone(), cairn_testkit::PASSWORD, OpenOptions::default()).unwrap();
        fb.set_plan(FaultPlan::none());
        complete(&r.rekey(o).unwrap());
        fb.ops()
    };
    assert!(count > 20, "{count} operations");
    // Random crash points, plus the first and the last.
    let mut rng = XorShift::seeded("rekey kill loop");
    let mut points: Vec<u64> = (0..random).map(|_| rng.below(count)).collect();
    points.extend([0, count - 1]);
    points.sort_unstable();
    points.dedup();
    for n in points {
        let what = format!("crash at op {n}/{count}");
        let fb = FaultyBackend::new(fork(base));
        let r =
            Repository::open(fb.clone(), cairn_testkit::PASSWORD, OpenOptions::default()).unwrap();
        fb.set_plan(FaultPlan::at(n, Fault::Crash));
        // A crash the library shrugs off (a heartbeat's removal) may
        // still end in Ok; what survived is what counts.
        let _ = r.rekey(o);
        drop(r);
        let survived: &MemoryBackend = fb.inner();
        let mut after = Repository::open(
            survived.clone(),
            cairn_testkit::PASSWORD,
            OpenOptions::default(),
        )
        .unwrap();
        check_clean(&after).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_model(&after, model, src, scratch, &what);
        // The dead run's heartbeat would hold its mark for 30 minutes
        // (SPEC §22): let it expire.
        for o in survived.list(ObjectKind::Lock).unwrap() {
            survived.delete(ObjectKind::Lock, &o.name).unwrap();
        }
        complete(&after.rekey(o).unwrap());
        finished(survived, &after, &what);
        check_clean(&after).unwrap_or_else(|e| panic!("{what}: after the rerun: {e}"));
        assert_model(&after, model, src, scratch, &format!("{what}, rerun"));
        assert_eq!(after.snapshots().unwrap().len(), model.len(), "{what}");
        if after.data_keys().live_epochs().len() > 1 {
            after
                .retire_epoch(0)
                .unwrap_or_else(|e| panic!("{what}: retire: {e}"));
            check_clean(&after).unwrap_or_else(|e| panic!("{what}: after retire: {e}"));
        }
    }
}

/// Runs `work` while one thread backs up a new tree per round and another
/// prunes `prunes` times with no grace; returns the new snapshots with
/// their trees, and what `work` returned.
fn amid_backups_and_prunes<T>(
    scratch: &Path,
    open: &(dyn Fn() -> Repository + Sync),
    rounds: std::ops::Range<u64>,
    prunes: usize,
    work: impl FnOnce() -> T,
) -> (BTreeMap<SnapshotId, (std::path::PathBuf, Files)>, T) {
    std::thread::scope(|s| {
        let backups = s.spawn(|| {
            let repo = open();
            let mut made = BTreeMap::new();
            for round in rounds {
                let dir = scratch.join(format!("src{round}"));
                let f = round_files(round);
                write_tree(&dir, &f);
                let id = repo.backup().path(&dir).run().unwrap().snapshot.id;
                made.insert(id, (dir, f));
            }
            made
        });
        let pruner = s.spawn(|| {
            let repo = open();
            let opts = repo_core::PruneOptions {
                max_unused: 0.0,
                grace: Duration::ZERO,
            };
            for _ in 0..prunes {
                repo.prune(repo.prune_plan(&opts).unwrap()).unwrap();
            }
        });
        let out = work();
        pruner.join().unwrap();
        (backups.join().unwrap(), out)
    })
}

#[test]
fn a_rekey_while_a_backup_and_a_prune_run_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(&d.path().join("repo"));
    let src = d.path().join("src");
    let model = three_backups(&repo, &src);
    drop(repo);
    let open = || open_repo(&d.path().join("repo"), cairn_testkit::PASSWORD).unwrap();
    let (more, ()) = amid_backups_and_prunes(d.path(), &open, 10..14, 4, || {
        let repo = open();
        for _ in 0..3 {
            repo.rekey(&opts()).unwrap();
        }
    });
    // The concurrent backups wrote under the old epoch: a last run, alone.
    let repo = open();
    complete(&repo.rekey(&opts()).unwrap());
    assert_eq!(stale_objects(repo.backend(), &repo), Vec::<String>::new());
    check_clean(&repo).unwrap();
    let mut want: BTreeMap<SnapshotId, (std::path::PathBuf, Files)> = more;
    want.extend(model.into_iter().map(|(id, f)| (id, (src.clone(), f))));
    let listed = repo.snapshots().unwrap();
    assert_eq!(listed.len(), want.len(), "a snapshot lost or doubled");
    for s in listed {
        let first = s.snapshot.original.unwrap_or(s.id);
        let (dir, f) = want
            .get(&first)
            .unwrap_or_else(|| panic!("unexpected snapshot {}", s.id));
        assert!(
            restored(&repo, &s.id, dir, d.path()) == *f,
            "snapshot {first} restores different bytes"
        );
    }
}

/// True when `keys` opens any sealed part of an object: a file's body
/// after its 12-byte prefix (the config's after 44 or 45 bytes), a pack's
/// header and every blob in it.
fn opens_anything(
    keys: &DataKeys,
    kind: ObjectKind,
    name: &str,
    bytes: &[u8],
    repo: &Repository,
) -> bool {
    match kind {
        ObjectKind::Wal => {
            let mut ad = bytes[..WAL_HEADER_LEN].to_vec();
            ad.extend_from_slice(name.as_bytes());
            keys.open(&ad, &bytes[WAL_HEADER_LEN..]).is_ok()
        }
        ObjectKind::Pack => {
            let n = bytes.len();
            let hlen = u32::from_le_bytes(bytes[n - 4..].try_into().unwrap()) as usize;
            let header = PackHeader::from_pack(repo.data_keys(), bytes).unwrap();
            keys.open(b"cairn pack header v1", &bytes[n - 4 - hlen..n - 4])
                .is_ok()
                || header.entries.iter().any(|e| {
                    let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
                    keys.open(&blob_ad(e.kind, &e.id), sealed).is_ok()
                })
        }
        ObjectKind::Config => [44, 45]
            .into_iter()
            .any(|at| keys.open(&bytes[..at], &bytes[at..]).is_ok()),
        _ => keys.open(&bytes[..12], &bytes[12..]).is_ok(),
    }
}

#[test]
fn rotate_back_up_rekey_amid_a_backup_and_a_prune_retire_and_the_old_key_opens_nothing() {
    let d = tempfile::tempdir().unwrap();
    let at = d.path().join("r");
    let mut repo = init_repo(&at);
    let src = d.path().join("src");
    let mut want: BTreeMap<SnapshotId, (std::path::PathBuf, Files)> = three_backups(&repo, &src)
        .into_iter()
        .map(|(id, f)| (id, (src.clone(), f)))
        .collect();
    // An archived WAL file, sealed under epoch 0 like the rest.
    let history = WalFileName::parse("00000002.history").unwrap();
    let history_text = b"1\t0/5000000\tno recovery target specified\n";
    repo.wal()
        .archive(&history, history_text, Some(SYSID))
        .unwrap();
    // A verification record (SPEC §32), sealed under epoch 0 too.
    check_clean(&repo).unwrap();
    assert!(!repo.backend().list(ObjectKind::Verify).unwrap().is_empty());
    let old: MasterKey = repo.master_key().clone();
    let rotation = repo.rotate_key(cairn_testkit::PASSWORD).unwrap();
    assert_eq!(rotation.epoch, 1);
    // A backup under the new epoch: rekey leaves its objects alone.
    let after = d.path().join("after");
    let f = round_files(20);
    write_tree(&after, &f);
    let id = repo.backup().path(&after).run().unwrap().snapshot.id;
    want.insert(id, (after, f));
    drop(repo);

    let open = || open_repo(&at, cairn_testkit::PASSWORD).unwrap();
    let real = || {
        let mut o = RekeyOptions::default();
        o.grace = Duration::ZERO;
        o
    };
    let (made, ()) = amid_backups_and_prunes(d.path(), &open, 30..33, 3, || {
        let r = open().rekey(&real()).unwrap();
        assert!(r.epochs_differ && r.packs_rewritten > 0, "{r:#?}");
        assert_eq!(r.snapshots.len(), 3, "{r:#?}");
    });
    want.extend(made);
    // Marks the concurrent backups held back are swept now.
    let mut repo = open();
    complete(&repo.rekey(&real()).unwrap());
    let census = repo.epoch_census().unwrap();
    assert_eq!(census.per_epoch.get(&0), None, "{census:?}");
    repo.retire_epoch(0).unwrap();
    assert_eq!(repo.data_keys().live_epochs(), vec![1]);
    drop(repo);

    let repo = open();
    check_clean(&repo).unwrap();
    let listed = repo.snapshots().unwrap();
    assert_eq!(listed.len(), want.len(), "a snapshot lost or doubled");
    for s in &listed {
        let first = s.snapshot.original.unwrap_or(s.id);
        let (dir, f) = want
            .get(&first)
            .unwrap_or_else(|| panic!("unexpected snapshot {}", s.id));
        assert!(
            restored(&repo, &s.id, dir, d.path()) == *f,
            "snapshot {first} restores different bytes"
        );
    }
    assert_eq!(
        repo.wal().fetch(SYSID, &history).unwrap().as_deref(),
        Some(&history_text[..])
    );
    // The saved old master key opens nothing in the repository.
    let b = repo.backend();
    let mut objects = 0;
    for kind in [
        ObjectKind::Config,
        ObjectKind::Snapshot,
        ObjectKind::Index,
        ObjectKind::Pack,
        ObjectKind::Mark,
        ObjectKind::Dict,
        ObjectKind::Wal,
        ObjectKind::Verify,
    ] {
        for o in b.list(kind).unwrap() {
            let bytes = b.read(kind, &o.name).unwrap();
            assert!(
                !opens_anything(&old.data_keys(), kind, &o.name, &bytes, &repo),
                "{kind:?} {} opens with the old master key",
                o.name
            );
            objects += 1;
        }
    }
    assert!(objects > 10, "{objects} objects");
}

#[test]
fn a_prune_between_the_new_packs_and_their_index_is_held_by_the_heartbeat() {
    use cairn_testkit::backend::{Call, Hooked};
    use std::sync::{Arc, Mutex};

    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let (mem, repo) = init_memory();
    let model = three_backups(&repo, &src);
    drop(repo);
    // Just before rekey writes its index, its new packs are unindexed: a
    // prune condemns them, and must not delete them.
    let held: Arc<Mutex<Option<Vec<String>>>> = Arc::default();
    let (seen, other) = (Arc::clone(&held), mem.clone());
    let hooked = Hooked::new(mem.clone()).before(move |call| {
        if matches!(call, Call::Write(ObjectKind::Index, ..)) && seen.lock().unwrap().is_none() {
            let p = Repository::open(
                other.clone(),
                cairn_testkit::PASSWORD,
                OpenOptions::default(),
            )
            .unwrap();
            let plan = p
                .prune_plan(&repo_core::PruneOptions {
                    max_unused: 0.0,
                    grace: Duration::ZERO,
                })
                .unwrap();
            let sum = p.prune(plan).unwrap();
            *seen.lock().unwrap() = Some(sum.waiting_for);
        }
        Ok(())
    });
    let repo = Repository::open(hooked, cairn_testkit::PASSWORD, OpenOptions::default()).unwrap();
    repo.rekey(&opts()).unwrap();
    let waited = held.lock().unwrap().clone().expect("the prune ran");
    assert_eq!(waited.len(), 1, "the rekey's heartbeat held the sweep");
    drop(repo);

    let repo =
        Repository::open(mem.clone(), cairn_testkit::PASSWORD, OpenOptions::default()).unwrap();
    check_clean(&repo).unwrap();
    assert_model(&repo, &model, &src, d.path(), "after the overtaken rekey");
    // The prune's index still named the old packs: the next run retires them.
    complete(&repo.rekey(&opts()).unwrap());
    assert_eq!(stale_objects(&mem, &repo), Vec::<String>::new());
    check_clean(&repo).unwrap();
    assert_model(&repo, &model, &src, d.path(), "after the second run");
}

/// `repair index --read-data` salvages the good blobs of a damaged pack
/// into a new pack, whose header is sealed under the newest epoch; blobs
/// sealed under an older one must be sealed again on the way, or the
/// census would count them as new, retire would proceed and they would
/// no longer open (SPEC §30.1).
#[test]
fn a_repair_salvages_old_epoch_blobs_under_the_newest_epoch() {
    let d = tempfile::tempdir().unwrap();
    let at = d.path().join("r");
    let mut repo = init_repo(&at);
    let src = d.path().join("src");
    three_backups(&repo, &src);
    repo.rotate_key(cairn_testkit::PASSWORD).unwrap();
    drop(repo);
    // Damage the last blob of the largest data pack.
    let packs = at.join("repo").join("data");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&packs)
        .unwrap()
        .flat_map(|sub| std::fs::read_dir(sub.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    files.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let victim = files.last().unwrap().clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let repo = open_repo(&at, cairn_testkit::PASSWORD).unwrap();
    let header = PackHeader::from_pack(repo.data_keys(), &bytes).unwrap();
    assert!(header.entries.len() > 1, "a pack of several blobs");
    let last = header.entries.last().unwrap();
    bytes[last.offset as usize + 30] ^= 1;
    std::fs::write(&victim, &bytes).unwrap();

    let r = repo
        .repair_index(&repo_core::RepairIndexOptions { read_data: true })
        .unwrap();
    assert_eq!(r.blobs_lost.len(), 1, "{r:?}");
    drop(repo);
    let mut repo = open_repo(&at, cairn_testkit::PASSWORD).unwrap();
    let mut o = RekeyOptions::default();
    o.grace = Duration::ZERO;
    repo.rekey(&o).unwrap();
    repo.retire_epoch(0).unwrap();
    // Every salvaged blob still opens: a data check finds only the one
    // blob the damage destroyed.
    let report = repo
        .check(&repo_core::CheckOptions {
            read_data: repo_core::ReadData::All,
            ..Default::default()
        })
        .run()
        .unwrap();
    let text = format!("{report}");
    assert!(
        !text.contains("epoch") && !text.contains("authentication"),
        "a salvaged blob no longer opens: {text}"
    );
}
