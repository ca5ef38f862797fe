//! Verification history in the repository (SPEC §32): checks, drills and
//! exporter verifies leave records naming where they ran; `check --max-age`
//! trusts only the records (and a local ledger) of its own location.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use repo_core::unstable::check::{CheckOptions, CheckReport, DrillOptions, ProblemKind, ReadData};
use repo_core::{
    COMPACT_AFTER, ExporterOutcome, LocalBackend, ObjectKind, OpenOptions, Repository,
    SnapshotFilter, VerificationOutcome,
};

use cairn_testkit::PASSWORD;

use super::{init_repo, random_bytes};

const MONTH: Duration = Duration::from_secs(30 * 86_400);

/// `dir/repo` opened with the cache in `cache` (one directory = one machine).
fn open_at(dir: &Path, cache: &Path) -> Repository {
    let opts = OpenOptions {
        cache_dir: Some(cache.to_path_buf()),
        ..Default::default()
    };
    Repository::open(LocalBackend::open(dir.join("repo")), PASSWORD, opts).unwrap()
}

fn check(repo: &Repository, max_age: Option<Duration>) -> CheckReport {
    let opts = CheckOptions {
        read_data: ReadData::All,
        max_age,
        ..Default::default()
    };
    repo.check(&opts).run().unwrap()
}

/// A repository at `d/a/repo` with a few packs' worth of data.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a");
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        fs::write(src.join(format!("f{i}")), random_bytes(400_000, i)).unwrap();
    }
    let repo = init_repo(&a);
    repo.backup().path(&src).run().unwrap();
    (d, a)
}

fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn some_pack(dir: &Path) -> PathBuf {
    let data = dir.join("repo/data");
    for sub in fs::read_dir(&data).unwrap() {
        if let Some(f) = fs::read_dir(sub.unwrap().path()).unwrap().next() {
            return f.unwrap().path();
        }
    }
    panic!("no pack in {}", data.display())
}

/// The scenario: check A with read-data; copy A's bytes to B; flip
/// a byte in a pack of B. B's check with `--max-age 30d` on the same
/// machine (same cache, same repository id) reads B's packs and finds the
/// damage: A's verification was never obtained at B.
#[test]
fn a_byte_copy_elsewhere_does_not_inherit_verification() {
    let (d, a) = setup();
    let cache = d.path().join("cache");
    let first = check(&open_at(&a, &cache), None);
    assert!(first.is_ok(), "{first}");
    assert!(first.packs >= 2, "several packs: {first}");
    assert_eq!(first.packs_checked, first.packs);

    let b = d.path().join("b");
    copy_dir(&a, &b);
    let victim = some_pack(&b);
    let mut bytes = fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&victim, bytes).unwrap();

    let rb = check(&open_at(&b, &cache), Some(MONTH));
    assert_eq!(rb.packs_checked, rb.packs, "B reads every pack: {rb}");
    assert_eq!(rb.packs_recent, 0);
    assert!(!rb.is_ok(), "the flipped byte is found: {rb}");
    let victim_id = victim.file_name().unwrap().to_str().unwrap();
    assert!(
        rb.errors
            .iter()
            .any(|p| p.pack.is_some_and(|id| id.to_hex() == victim_id)),
        "the damaged pack is named: {rb}"
    );
    assert_ne!(rb.location, first.location);

    // A itself, on the same machine, is still not due.
    let ra = check(&open_at(&a, &cache), Some(MONTH));
    assert!(ra.is_ok(), "{ra}");
    assert_eq!((ra.packs_selected, ra.packs_recent), (0, ra.packs), "{ra}");
}

/// A new machine (an empty cache) checking the same location skips what
/// was verified there; without the repository's records it would read
/// every pack again.
#[test]
fn a_new_machine_skips_what_was_verified_at_this_location() {
    let (d, a) = setup();
    let r = check(&open_at(&a, &d.path().join("cache1")), None);
    assert!(r.is_ok(), "{r}");

    let fresh = check(&open_at(&a, &d.path().join("cache2")), Some(MONTH));
    assert_eq!(fresh.packs_selected, 0, "{fresh}");
    assert_eq!(fresh.packs_recent, fresh.packs);
    assert!(
        fresh.to_string().contains("nothing due"),
        "says why nothing was read: {fresh}"
    );

    // The records are what made the difference.
    fs::remove_dir_all(a.join("repo/verify")).unwrap();
    let again = check(&open_at(&a, &d.path().join("cache3")), Some(MONTH));
    assert_eq!(again.packs_checked, again.packs, "{again}");
}

/// Thousands of checks must not make `check` slow: a location's records
/// are folded once there are more than `COMPACT_AFTER`, keeping every
/// pack's time and the newest result of each kind.
#[test]
fn records_of_one_location_are_compacted() {
    let (d, a) = setup();
    let repo = open_at(&a, &d.path().join("cache1"));
    let data = check(&repo, None);
    for _ in 0..(2 * COMPACT_AFTER + 3) {
        let opts = CheckOptions::default();
        assert!(repo.check(&opts).run().unwrap().is_ok());
    }
    let h = repo.verification_history().unwrap();
    let here = repo.verification_location();
    let live = h.count_at(&here);
    assert!(live <= COMPACT_AFTER + 1, "{live} live records");
    let listed = repo.backend().list(ObjectKind::Verify).unwrap().len();
    assert_eq!(listed, live, "superseded records are deleted");
    assert!(
        h.records
            .iter()
            .any(|(_, r)| matches!(r.outcome, VerificationOutcome::Compacted(_)))
    );
    assert_eq!(h.pack_times(&here).len() as u64, data.packs);
    let s = &h.summaries()[0];
    assert!(
        s.last_data_check.is_some(),
        "the data check survives folding"
    );

    let fresh = check(&open_at(&a, &d.path().join("cache2")), Some(MONTH));
    assert_eq!(fresh.packs_selected, 0, "{fresh}");
}

/// `report` on a new machine shows the check, the drill and an exporter's
/// verify from the repository's records.
#[test]
fn report_on_a_new_machine_shows_recorded_results() {
    let (d, a) = setup();
    let repo = open_at(&a, &d.path().join("cache1"));
    assert!(check(&repo, None).is_ok());
    let snap = repo
        .find_snapshot("latest", &SnapshotFilter::default())
        .unwrap();
    let drill = repo.drill(&snap, &DrillOptions::default()).run().unwrap();
    assert!(drill.ok && drill.record_error.is_none());
    repo.record_exporter_verification(
        1,
        2,
        ExporterOutcome {
            command: "redis verify".into(),
            snapshot: snap.id,
            ok: true,
            summary: "1 database(s), key counts match".into(),
        },
    )
    .unwrap();

    let other = open_at(&a, &d.path().join("cache2"));
    let r = other.report(&snap).unwrap();
    assert!(r.last_check.is_none(), "nothing in the new machine's cache");
    assert_eq!(r.verification.len(), 1);
    let s = &r.verification[0];
    assert_eq!(s.location, r.location);
    assert!(s.last_data_check.as_ref().is_some_and(|c| c.ok()));
    assert!(s.last_drill.as_ref().is_some_and(|c| c.ok()));
    assert_eq!(s.last_exporter.len(), 1);
    assert_eq!(
        r.packs_verified, r.packs,
        "the records count as verified here"
    );
    let md = r.to_markdown();
    assert!(md.contains("restore drill of snapshot"), "{md}");
    assert!(md.contains("redis verify"), "{md}");
}

/// A damaged record is skipped with a warning naming it; the check stands.
#[test]
fn a_damaged_record_is_named_and_ignored() {
    let (d, a) = setup();
    let repo = open_at(&a, &d.path().join("cache1"));
    assert!(check(&repo, None).is_ok());
    let name = "00".repeat(32);
    fs::write(a.join("repo/verify").join(&name), b"not a record").unwrap();
    let r = check(&open_at(&a, &d.path().join("cache2")), Some(MONTH));
    assert!(r.is_ok(), "{r}");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.kind == ProblemKind::Ledger && w.message.contains(&name)),
        "{r}"
    );
    assert_eq!(r.packs_selected, 0, "the good record still counts: {r}");
}
