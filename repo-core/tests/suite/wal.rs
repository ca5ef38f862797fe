//! Archived WAL (SPEC §28): store and fetch one file per object, refuse
//! other content under an archived name, list, verify and release with one
//! listing however many segments there are (issue 15).

use std::time::Duration;

use repo_core::unstable::backend::ObjectKind;
use repo_core::unstable::prune::PruneOptions;
use repo_core::{Backend, MemoryBackend, OpenOptions, Repository, WalError, WalFileName, WalStore};

use super::{WEAK_KDF, init_memory, random_bytes};
use cairn_testkit::PASSWORD;

const SYSID: u64 = 7_301_234_567_890_123_456;
const SEG: u32 = 1 << 20;

/// A segment as PostgreSQL writes one: long page header at the start,
/// `fill` after it.
fn segment(name: &str, sysid: u64, fill: &[u8]) -> Vec<u8> {
    let n = WalFileName::parse(name).unwrap();
    let mut b = vec![0u8; SEG as usize];
    let tail = fill.len().min(b.len() - 64);
    b[64..64 + tail].copy_from_slice(&fill[..tail]);
    b[..2].copy_from_slice(&0xd110u16.to_le_bytes());
    b[2..4].copy_from_slice(&2u16.to_le_bytes());
    b[4..8].copy_from_slice(&n.timeline().to_le_bytes());
    let addr = n.segment_number(u64::from(SEG)) * u64::from(SEG);
    b[8..16].copy_from_slice(&addr.to_le_bytes());
    b[24..32].copy_from_slice(&sysid.to_le_bytes());
    b[32..36].copy_from_slice(&SEG.to_le_bytes());
    b[36..40].copy_from_slice(&8192u32.to_le_bytes());
    b
}

fn name(tli: u32, segno: u64) -> WalFileName {
    WalFileName::segment(tli, WalFileName::position_of(segno, u64::from(SEG)))
}

/// A base backup snapshot as `pg basebackup` records one (the contract).
fn base_backup(repo: &Repository, sysid: u64, tli: u32, start: u64, time_s: i64) {
    repo.backup()
        .stream("postgres/base.tar", &b"tar"[..])
        .tag("postgres-base")
        .metadata("pg.system_identifier", sysid.to_string())
        .metadata("pg.timeline", tli.to_string())
        .metadata("pg.start_wal", name(tli, start).to_string())
        .metadata("pg.stop_wal", name(tli, start).to_string())
        .metadata("pg.wal_segment_size", SEG.to_string())
        .time_ns(time_s * 1_000_000_000)
        .run()
        .unwrap();
}

#[test]
fn archive_fetch_and_conflicts() {
    let (b, repo) = init_memory();
    let wal = repo.wal();
    let n = name(1, 5);
    let seg = segment(n.as_str(), SYSID, &random_bytes(300_000, 1));
    let before = repo.request_stats();
    let done = wal.archive(&n, &seg, None).unwrap();
    assert!(done.written);
    // A 44-byte look, the write, a 44-byte read back: nothing else.
    let used = repo.request_stats();
    assert_eq!(
        (
            used.read_range - before.read_range,
            used.write - before.write,
            used.total() - before.total()
        ),
        (2, 1, 3)
    );
    // Zero padding and a compressible tail cost little.
    assert!(done.stored < 400_000, "{done:?}");

    // A new session that only unlocks the key fetches it with one read.
    let store = WalStore::open(b.clone(), PASSWORD, &OpenOptions::default()).unwrap();
    let before = repo.request_stats();
    assert_eq!(wal.fetch(SYSID, &n).unwrap().unwrap(), seg);
    let after = repo.request_stats();
    assert_eq!(
        (after.read - before.read, after.total() - before.total()),
        (1, 1)
    );
    assert_eq!(store.fetch(SYSID, &n).unwrap().unwrap(), seg);
    // Not archived, or another cluster's: none.
    assert_eq!(store.fetch(SYSID, &name(1, 6)).unwrap(), None);
    assert_eq!(store.fetch(SYSID + 1, &n).unwrap(), None);

    // The same file again: success, nothing written.
    let again = store.archive(&n, &seg, None).unwrap();
    assert!(!again.written);
    // Other content under the name: refused, the stored file stays.
    let mut other = seg.clone();
    other[100_000] ^= 1;
    let e = store.archive(&n, &other, None).unwrap_err();
    assert!(matches!(e, WalError::Conflict { .. }), "{e}");
    assert!(e.to_string().contains(n.as_str()), "{e}");
    assert_eq!(store.fetch(SYSID, &n).unwrap().unwrap(), seg);

    // A segment under the wrong name, or of another cluster than named.
    let e = store.archive(&name(1, 6), &seg, None).unwrap_err();
    assert!(matches!(e, WalError::NotASegment { .. }), "{e}");
    let e = store.archive(&n, &seg, Some(SYSID + 1)).unwrap_err();
    assert!(matches!(e, WalError::WrongCluster { .. }), "{e}");
    // A history file needs the system identifier.
    let h = WalFileName::parse("00000002.history").unwrap();
    let e = store.archive(&h, b"1\t0/5000000\tx\n", None).unwrap_err();
    assert!(matches!(e, WalError::NoSystemIdentifier(_)), "{e}");
    store
        .archive(&h, b"1\t0/5000000\tx\n", Some(SYSID))
        .unwrap();
    assert_eq!(
        store.fetch(SYSID, &h).unwrap().unwrap(),
        b"1\t0/5000000\tx\n"
    );
    let listing = store.list().unwrap();
    assert_eq!(listing.objects.len(), 2);
    assert!(listing.foreign.is_empty());
    let mine = store.list_cluster(SYSID).unwrap();
    let files: Vec<&str> = mine.iter().map(|o| o.file.as_str()).collect();
    assert_eq!(files, ["000000010000000000000005", "00000002.history"]);
    assert!(store.list_cluster(SYSID + 1).unwrap().is_empty());
}

#[test]
fn a_moved_or_damaged_object_fails_to_open() {
    let (b, repo) = init_memory();
    let wal = repo.wal();
    let (n5, n6) = (name(1, 5), name(1, 6));
    let seg = segment(n5.as_str(), SYSID, b"five");
    let obj = wal.archive(&n5, &seg, None).unwrap().object;
    let bytes = b.read(ObjectKind::Wal, &obj).unwrap();
    // Stored under segment 6's name: authentication binds the name.
    let moved = obj.replace(&n5.to_string(), &n6.to_string());
    b.write(ObjectKind::Wal, &moved, &bytes).unwrap();
    let e = wal.fetch(SYSID, &n6).unwrap_err();
    assert!(matches!(e, WalError::Corrupt { .. }), "{e}");
    // A flipped byte in the sealed part.
    b.delete(ObjectKind::Wal, &obj).unwrap();
    let mut bad = bytes.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    b.write(ObjectKind::Wal, &obj, &bad).unwrap();
    let e = wal.fetch(SYSID, &n5).unwrap_err();
    assert!(e.to_string().contains(&obj), "{e}");
}

#[test]
fn a_failed_write_stores_nothing_and_a_retry_succeeds() {
    use repo_core::unstable::backend::{Fault, FaultPlan, FaultyBackend, OpKind};
    let mem = MemoryBackend::new();
    let repo = Repository::init(
        mem.clone(),
        PASSWORD,
        repo_core::InitOptions {
            kdf: WEAK_KDF,
            ..Default::default()
        },
    )
    .unwrap();
    drop(repo);
    let faulty = FaultyBackend::new(mem.clone());
    let store = WalStore::open(faulty.clone(), PASSWORD, &OpenOptions::default()).unwrap();
    let n = name(1, 9);
    let seg = segment(n.as_str(), SYSID, &random_bytes(200_000, 9));
    // The write fails outright, or leaves a torn object (storage that
    // does not write atomically), cut inside or after the header.
    for fault in [
        Fault::Error(std::io::ErrorKind::TimedOut),
        Fault::TornWrite { keep: 20 },
        Fault::TornWrite { keep: 5000 },
    ] {
        faulty.set_plan(FaultPlan::none().and_nth(
            Some(OpKind::Write),
            Some(ObjectKind::Wal),
            0,
            fault,
        ));
        assert!(store.archive(&n, &seg, None).is_err(), "{fault:?}");
        faulty.set_plan(FaultPlan::none());
        // The retry (PostgreSQL's) stores the file whole, once.
        let done = store.archive(&n, &seg, None).unwrap();
        assert!(done.written, "{fault:?}");
        assert_eq!(
            done.repaired,
            !matches!(fault, Fault::Error(_)),
            "{fault:?}"
        );
        assert_eq!(mem.list(ObjectKind::Wal).unwrap().len(), 1);
        assert_eq!(store.fetch(SYSID, &n).unwrap().unwrap(), seg);
        assert!(!store.archive(&n, &seg, None).unwrap().written);
        mem.delete(ObjectKind::Wal, &done.object).unwrap();
    }
}

/// Writes an object of `tli`'s segment `segno` without content: listing,
/// verifying and releasing never open one.
fn plant(b: &dyn Backend, wal: &WalStore, sysid: u64, file: &WalFileName) {
    let object = format!("{}-{}", wal.cluster(sysid), file.as_str().replace('.', "_"));
    b.write(ObjectKind::Wal, &object, b"never read").unwrap();
}

#[test]
fn ten_thousand_segments_take_one_listing() {
    let (b, repo) = init_memory();
    let wal = repo.wal();
    let n = 10_500u64;
    for segno in 1..=n {
        if segno != 7_000 {
            plant(&b, &wal, SYSID, &name(1, segno));
        }
    }
    base_backup(&repo, SYSID, 1, 5_000, 100);
    base_backup(&repo, SYSID, 1, 8_000, 200);
    let snapshots = repo.snapshots().unwrap();
    let bases = repo_core::unstable::wal::BaseBackupRef::all(&snapshots).unwrap();

    let before = repo.request_stats();
    let listing = wal.list().unwrap();
    let reports = wal.verify(&listing, &bases);
    let release = wal.plan_release(&listing, &snapshots);
    let used = repo.request_stats();
    assert_eq!(
        (used.list - before.list, used.total() - before.total()),
        (1, 1)
    );
    assert_eq!(listing.objects.len() as u64, n - 1);

    // The gap is named; the newest base backup (start 8000) does not need
    // it, so it is no error.
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r.system_identifier, Some(SYSID));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let gaps = &r.timelines[0].gaps;
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].from, name(1, 7_000).to_string());
    assert!(!gaps[0].required);
    // Every segment before the oldest kept base backup's start is released.
    assert_eq!(release.files, 4_999);
    assert!(
        release
            .objects
            .iter()
            .all(|o| o.file.segment_number(u64::from(SEG)) < 5_000)
    );

    // With a base backup that starts before the gap, the gap is an error.
    base_backup(&repo, SYSID, 1, 6_000, 300);
    let bases = repo_core::unstable::wal::BaseBackupRef::all(&repo.snapshots().unwrap()).unwrap();
    let r = &wal.verify(&listing, &bases)[0];
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(
        r.errors[0].contains(name(1, 7_000).as_str()),
        "{:?}",
        r.errors
    );
}

#[test]
fn prune_releases_exactly_what_no_base_backup_needs() {
    let (b, repo) = init_memory();
    let wal = repo.wal();
    let other = SYSID + 1;
    for segno in 1..=40 {
        plant(&b, &wal, SYSID, &name(1, segno));
        plant(&b, &wal, other, &name(1, segno));
    }
    for f in [
        "00000002.history",
        "000000010000000000000014.00000028.backup",
    ] {
        plant(&b, &wal, SYSID, &WalFileName::parse(f).unwrap());
    }
    for segno in 30..=45 {
        plant(&b, &wal, SYSID, &name(2, segno));
    }
    let now = PruneOptions {
        grace: Duration::ZERO,
        ..Default::default()
    };
    // No base backup at all: nothing is released.
    let plan = repo.prune_plan(&now).unwrap();
    assert_eq!(plan.wal.files, 0);
    let sum = repo.prune(plan).unwrap();
    assert_eq!(sum.wal_deleted, 0);

    base_backup(&repo, SYSID, 1, 20, 100);
    base_backup(&repo, SYSID, 2, 35, 200);
    // A prune within the grace period deletes nothing yet.
    let plan = repo
        .prune_plan(&PruneOptions {
            grace: Duration::from_secs(3600),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(plan.wal.files, 19);
    let sum = repo.prune(plan).unwrap();
    assert_eq!((sum.wal_deleted, sum.wal_postponed), (0, 19));

    let keep_all = b.list(ObjectKind::Wal).unwrap().len();
    let sum = repo.prune(repo.prune_plan(&now).unwrap()).unwrap();
    // Segments 1..=19 of timeline 1 of the cluster with base backups; the
    // backup label at segment 20, the history file, timeline 2 and the
    // other cluster (no base backup) stay.
    assert_eq!(sum.wal_deleted, 19);
    let left = wal.list().unwrap();
    assert_eq!(left.objects.len(), keep_all - 19);
    let mine = wal.cluster(SYSID);
    for o in &left.objects {
        if o.cluster == mine && o.file.timeline() == 1 {
            assert!(o.file.segment_number(u64::from(SEG)) >= 20, "{}", o.file);
        }
    }
    assert_eq!(
        left.objects.iter().filter(|o| o.cluster != mine).count(),
        40
    );

    // Forgetting the older base backup releases timeline 1 up to 35.
    let old = repo
        .snapshots()
        .unwrap()
        .into_iter()
        .find(|s| s.snapshot.time_ns == 100_000_000_000)
        .unwrap();
    b.delete(ObjectKind::Snapshot, &old.id.to_hex()).unwrap();
    let sum = repo.prune(repo.prune_plan(&now).unwrap()).unwrap();
    // Timeline 1: 20..=34 (15) and the label at 20; timeline 2: 30..=34 (5).
    assert_eq!(sum.wal_deleted, 21);
}

#[test]
fn verify_follows_timeline_switches_through_history_files() {
    let (b, repo) = init_memory();
    let wal = repo.wal();
    // Timeline 1 runs to segment 10; timeline 2 branched from it in
    // segment 6 (LSN 6 MiB + 0x60) and runs to segment 12.
    for segno in 1..=10 {
        plant(&b, &wal, SYSID, &name(1, segno));
    }
    for segno in 6..=12 {
        plant(&b, &wal, SYSID, &name(2, segno));
    }
    base_backup(&repo, SYSID, 1, 3, 100);
    let verify = || {
        let bases =
            repo_core::unstable::wal::BaseBackupRef::all(&repo.snapshots().unwrap()).unwrap();
        wal.verify(&wal.list().unwrap(), &bases).remove(0)
    };
    // Without timeline 2's history file, recovery cannot follow it.
    let r = verify();
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(r.errors[0].contains("00000002.history"), "{:?}", r.errors);

    let history = format!("1\t0/{:X}\tno recovery target specified\n", 6 * SEG + 0x60);
    wal.archive(
        &WalFileName::parse("00000002.history").unwrap(),
        history.as_bytes(),
        Some(SYSID),
    )
    .unwrap();
    let r = verify();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.path, vec![1, 2]);
    assert!(
        r.timelines
            .iter()
            .find(|t| t.timeline == 2)
            .unwrap()
            .history
    );

    // Timeline 1 after the switch is not on the path: its segments 7..=10
    // may go. Segment 6 of timeline 1 too: recovery reads timeline 2's.
    let object = |tli, segno| format!("{}-{}", wal.cluster(SYSID), name(tli, segno).as_str());
    for segno in 6..=10 {
        b.delete(ObjectKind::Wal, &object(1, segno)).unwrap();
    }
    assert!(verify().errors.is_empty(), "{:?}", verify().errors);
    // Segments on the path are needed, on either timeline.
    b.delete(ObjectKind::Wal, &object(2, 8)).unwrap();
    b.delete(ObjectKind::Wal, &object(1, 4)).unwrap();
    let r = verify();
    assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
    let all = r.errors.join("\n");
    assert!(all.contains(name(2, 8).as_str()), "{all}");
    assert!(all.contains(name(1, 4).as_str()), "{all}");
    // Timeline 1's segment 5, just before the switch, is on the path: one
    // run of two missing segments now.
    b.delete(ObjectKind::Wal, &object(1, 5)).unwrap();
    let r = verify();
    assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
    assert!(r.errors.join("\n").contains(name(1, 5).as_str()));
    // A segment before the base backup's start is no error.
    b.delete(ObjectKind::Wal, &object(1, 1)).unwrap();
    assert_eq!(verify().errors.len(), 2);
}

#[test]
fn check_lists_wal_and_reads_it_with_read_data() {
    use repo_core::{CheckOptions, ProblemKind, ReadData};
    let (b, repo) = init_memory();
    let wal = repo.wal();
    let n = name(1, 3);
    let obj = wal
        .archive(&n, &segment(n.as_str(), SYSID, b"three"), None)
        .unwrap()
        .object;
    let read_all = CheckOptions {
        read_data: ReadData::All,
        ..Default::default()
    };
    let r = repo.check(&read_all).run().unwrap();
    assert!(r.ok, "{r}");
    assert_eq!((r.wal_files, r.wal_files_read), (1, 1));
    // A flipped byte: structure-only check lists it, read-data names it.
    let mut bytes = b.read(ObjectKind::Wal, &obj).unwrap();
    bytes[100] ^= 1;
    b.delete(ObjectKind::Wal, &obj).unwrap();
    b.write(ObjectKind::Wal, &obj, &bytes).unwrap();
    b.write(ObjectKind::Wal, "not-a-wal-name", b"x").unwrap();
    let r = repo.check(&CheckOptions::default()).run().unwrap();
    assert!(r.ok, "{r}");
    assert_eq!((r.wal_files, r.wal_files_read), (1, 0));
    assert!(r.warnings.iter().any(|p| p.kind == ProblemKind::WalDamaged));
    let r = repo.check(&read_all).run().unwrap();
    assert!(!r.ok);
    assert!(
        r.errors
            .iter()
            .any(|p| p.kind == ProblemKind::WalDamaged && p.message.contains(&obj)),
        "{r}"
    );
}

/// WAL is compressed at its own level 1 whatever level the repository's
/// blobs use (one `archive_command` per segment must be quick), and stored
/// raw when the repository stores raw (SPEC §28.2).
#[test]
fn wal_compression_level() {
    use repo_core::unstable::compress::compress;
    use repo_core::unstable::wal::{WAL_HEADER_LEN, WAL_LEVEL};
    let n = name(1, 9);
    let seg = segment(n.as_str(), SYSID, &super::text_lines(30_000));
    // Levels 1 and 3 give different sizes for this content, so the size
    // stored tells which one was used.
    let level1 = compress(&seg, WAL_LEVEL).len();
    assert_ne!(level1, compress(&seg, 3).len());
    assert!(level1 < seg.len() / 2);
    let overhead = (WAL_HEADER_LEN + 24 + 16) as u64;
    for (repo_level, expected) in [(3, level1), (19, level1), (1, level1), (0, seg.len() + 1)] {
        let opts = repo_core::InitOptions {
            compression_level: repo_level,
            ..cairn_testkit::repo::init_options()
        };
        let repo = Repository::init(MemoryBackend::new(), PASSWORD, opts).unwrap();
        let done = repo.wal().archive(&n, &seg, None).unwrap();
        assert_eq!(
            done.stored,
            expected as u64 + overhead,
            "level {repo_level}"
        );
        assert_eq!(repo.wal().fetch(SYSID, &n).unwrap().unwrap(), seg);
    }
}

/// `fetch_to` (what `restore-wal` uses) writes in pieces exactly what
/// `fetch` returns, for a compressed and a raw object, and fails on a
/// damaged one as `fetch` does.
#[test]
fn fetch_to_writes_what_fetch_returns() {
    let (b, repo) = init_memory();
    let wal = repo.wal();
    let (n5, n6) = (name(1, 5), name(1, 6));
    // Compressible (a zstd frame of several pieces) and random (stored raw).
    let text = b"INSERT INTO pgbench_history VALUES (1, 2, 3); ".repeat(20_000);
    let five = segment(n5.as_str(), SYSID, &text);
    let six = segment(n6.as_str(), SYSID, &random_bytes(900_000, 6));
    let o5 = wal.archive(&n5, &five, None).unwrap();
    assert!(o5.stored < five.len() as u64 / 4, "{o5:?}");
    let o6 = wal.archive(&n6, &six, None).unwrap();
    for (n, want) in [(&n5, &five), (&n6, &six)] {
        let mut out = Vec::new();
        let len = wal.fetch_to(SYSID, n, &mut out).unwrap();
        assert_eq!(len, Some(want.len() as u64));
        assert_eq!(&out, want);
        assert_eq!(&out, &wal.fetch(SYSID, n).unwrap().unwrap());
    }
    let mut out = Vec::new();
    assert_eq!(wal.fetch_to(SYSID, &name(1, 7), &mut out).unwrap(), None);
    assert!(out.is_empty());

    let mut bad = b.read(ObjectKind::Wal, &o6.object).unwrap();
    let at = bad.len() / 2;
    bad[at] ^= 1;
    b.delete(ObjectKind::Wal, &o6.object).unwrap();
    b.write(ObjectKind::Wal, &o6.object, &bad).unwrap();
    let e = wal.fetch_to(SYSID, &n6, &mut Vec::new()).unwrap_err();
    assert!(matches!(e, WalError::Corrupt { .. }), "{e}");
}
