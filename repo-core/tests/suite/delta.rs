//! Delta-compressed chunks (SPEC §6.6): a stream backed up with a
//! `DeltaSource` restores byte-identically through a chain, its references
//! outlive the snapshots they came from (prune), copies rehydrate them, and
//! a second generation with small edits per page costs a fraction of the
//! first.

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use repo_core::unstable::backend::ObjectKind;
use repo_core::unstable::prune::PruneOptions;
use repo_core::{BlobId, DeltaSource, REFERENCES_SUFFIX, Repository, SnapshotEntry};

use super::{XorShift, check_clean, init_memory, init_repo};

const PATH: &str = "db/base.tar";
const PAGE: usize = 8192;

/// A table of compressible 8 KiB pages (text-like rows).
fn table(pages: usize, seed: u64) -> Vec<u8> {
    let mut r = XorShift::new(seed);
    let mut out = Vec::with_capacity(pages * PAGE);
    while out.len() < pages * PAGE {
        let row = format!(
            "|{:08}|{:>10}|{}|",
            r.next_u64() % 100_000_000,
            r.next_u64() % 1_000_000,
            ["alpha", "beta", "gamma", "delta"][(r.next_u64() % 4) as usize]
        );
        out.extend_from_slice(row.as_bytes());
    }
    out.truncate(pages * PAGE);
    out
}

/// Yesterday's table with a few dozen bytes rewritten in most pages, as
/// row updates do.
fn next_day(prev: &[u8], seed: u64) -> Vec<u8> {
    let mut r = XorShift::new(seed);
    let mut out = prev.to_vec();
    for page in out.chunks_mut(PAGE) {
        if r.next_u64() % 10 < 7 {
            for _ in 0..4 {
                let at = (r.next_u64() as usize) % (PAGE - 16);
                for b in &mut page[at..at + 12] {
                    *b = b'0' + (r.next_u64() % 10) as u8;
                }
            }
        }
    }
    out
}

/// References: the previous stream's chunks covering the same offsets.
struct SameOffset<'a> {
    repo: &'a Repository,
    chunks: Vec<(u64, u64, BlobId)>,
}

impl<'a> SameOffset<'a> {
    fn of(repo: &'a Repository, prev: Option<&SnapshotEntry>) -> Self {
        let mut chunks = Vec::new();
        if let Some(p) = prev {
            let node = repo.find_node(&p.snapshot.tree, PATH).unwrap();
            let mut at = 0;
            for id in &node.content {
                let n = repo.read_blob(id).unwrap().len() as u64;
                chunks.push((at, n, *id));
                at += n;
            }
        }
        Self { repo, chunks }
    }
}

impl DeltaSource for SameOffset<'_> {
    fn references(&self, offset: u64, chunk: &[u8]) -> Vec<(BlobId, Arc<Vec<u8>>)> {
        let end = offset + chunk.len() as u64;
        let first = self.chunks.partition_point(|(o, n, _)| o + n <= offset);
        self.chunks[first..]
            .iter()
            .take_while(|(o, _, _)| *o < end)
            .take(repo_core::MAX_DELTA_REFS)
            .map(|(_, _, id)| (*id, Arc::new(self.repo.read_blob(id).unwrap())))
            .collect()
    }
}

fn backup(repo: &Repository, data: &[u8], prev: Option<&SnapshotEntry>, t: i64) -> SnapshotEntry {
    let src = SameOffset::of(repo, prev);
    repo.backup()
        .stream(PATH, data)
        .profile("tiny")
        .delta_source(&src)
        .time_ns(1_700_000_000_000_000_000 + t)
        .run()
        .unwrap()
        .snapshot
}

fn dump(repo: &Repository, s: &SnapshotEntry) -> Vec<u8> {
    read_at(repo, s, PATH)
}

fn added(s: &SnapshotEntry) -> u64 {
    s.snapshot.summary.bytes_added_packed
}

#[test]
fn a_delta_chain_restores_byte_identically_and_costs_a_fraction() {
    let (_b, repo) = init_memory();
    let mut days = vec![table(256, 1)];
    for d in 1..4 {
        let next = next_day(&days[d - 1], 100 + d as u64);
        days.push(next);
    }
    let mut snaps: Vec<SnapshotEntry> = Vec::new();
    for (i, data) in days.iter().enumerate() {
        let s = backup(&repo, data, snaps.last(), i as i64);
        snaps.push(s);
    }
    for (s, data) in snaps.iter().zip(&days) {
        assert!(dump(&repo, s) == *data, "snapshot {} differs", s.id);
    }
    // Without deltas, the same second generation costs most of a first.
    let (_b2, plain) = init_memory();
    plain
        .backup()
        .stream(PATH, &days[0][..])
        .profile("tiny")
        .run()
        .unwrap();
    let whole = plain
        .backup()
        .stream(PATH, &days[1][..])
        .profile("tiny")
        .run()
        .unwrap()
        .snapshot;
    for s in &snaps[1..] {
        assert!(
            added(s) * 4 < added(&whole),
            "a delta generation added {} bytes, a whole one {}",
            added(s),
            added(&whole)
        );
    }
    // Later generations list the references they need beside the stream.
    let refs = repo
        .find_node(
            &snaps[3].snapshot.tree,
            format!("{PATH}{REFERENCES_SUFFIX}"),
        )
        .unwrap();
    assert!(!refs.content.is_empty());
    check_clean(&repo).unwrap();
}

#[test]
fn prune_after_forgetting_older_generations_keeps_what_the_newest_needs() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let a = table(192, 7);
    let b = next_day(&a, 8);
    let c = next_day(&b, 9);
    let sa = backup(&repo, &a, None, 0);
    let sb = backup(&repo, &b, Some(&sa), 1);
    let sc = backup(&repo, &c, Some(&sb), 2);
    for old in [&sa, &sb] {
        repo.backend()
            .delete(ObjectKind::Snapshot, &old.id.to_hex())
            .unwrap();
    }
    let opts = PruneOptions {
        grace: Duration::ZERO,
        ..Default::default()
    };
    repo.prune(repo.prune_plan(&opts).unwrap()).unwrap();
    let repo = super::open_repo(d.path(), cairn_testkit::PASSWORD).unwrap();
    assert!(dump(&repo, &sc) == c);
    check_clean(&repo).unwrap();
}

#[test]
fn a_copy_of_a_delta_snapshot_restores_in_a_repository_without_its_references() {
    let (_b, src) = init_memory();
    let a = table(128, 21);
    let b = next_day(&a, 22);
    let sa = backup(&src, &a, None, 0);
    let sb = backup(&src, &b, Some(&sa), 1);
    // An unrelated repository: other keys, so every chunk is read, and
    // sealed anew there.
    let (_d, dst) = init_memory();
    dst.copy_from(&src).snapshots([sb.id]).run().unwrap();
    let copied = dst.snapshots().unwrap();
    assert_eq!(copied.len(), 1);
    assert!(dump(&dst, &copied[0]) == b);
    check_clean(&dst).unwrap();
}

#[test]
fn a_version_1_repository_gets_no_delta_blobs() {
    let b = repo_core::MemoryBackend::new();
    let opts = repo_core::InitOptions {
        dictionary: false,
        ..cairn_testkit::repo::init_options()
    };
    let repo = Repository::init(b, cairn_testkit::PASSWORD, opts).unwrap();
    let a = table(64, 31);
    let b = next_day(&a, 32);
    let sa = backup(&repo, &a, None, 0);
    let sb = backup(&repo, &b, Some(&sa), 1);
    assert!(dump(&repo, &sb) == b);
    // Nothing was stored as a delta, so nothing needs references.
    assert!(
        repo.find_node(&sb.snapshot.tree, format!("{PATH}{REFERENCES_SUFFIX}"))
            .is_err()
    );
    check_clean(&repo).unwrap();
}

/// Names one fixed reference for every chunk, whatever it is.
struct Fixed(BlobId, Arc<Vec<u8>>);

impl DeltaSource for Fixed {
    fn references(&self, _: u64, _: &[u8]) -> Vec<(BlobId, Arc<Vec<u8>>)> {
        vec![(self.0, self.1.clone())]
    }
}

#[test]
fn missing_references_are_not_used_and_chains_too_deep_are_refused() {
    use repo_core::unstable::RepositoryInternals as _;
    let (_b, repo) = init_memory();
    let one = |data: &[u8], src: &dyn DeltaSource, t: i64| {
        repo.backup()
            .stream(PATH, data)
            .profile("tiny")
            .delta_source(src)
            .time_ns(1_700_000_000_000_000_000 + t)
            .run()
    };
    // Incompressible alone, one byte apart: each is a delta of the other.
    let a = super::random_bytes(3000, 41);
    let mut b = a.clone();
    b[1500] ^= 1;
    let idb = repo.hasher().chunk_id(&b);
    // A reference that is nowhere is not used.
    let s = one(&a, &Fixed(idb, Arc::new(b.clone())), 0).unwrap();
    let ida = repo.hasher().chunk_id(&a);
    assert_ne!(repo.stored_payload(&ida).unwrap()[0], 3);
    assert!(dump(&repo, &s.snapshot) == a);
    // A chain of generations, each a delta of the one before: readable up
    // to MAX_DELTA_DEPTH references in a row, refused beyond.
    let max = repo_core::MAX_DELTA_DEPTH as usize;
    let mut data = super::random_bytes(3000, 42);
    let mut prev: Option<Fixed> = None;
    for i in 0..=max + 1 {
        data[i] ^= 0x55;
        let none = Fixed(BlobId::from_bytes([0; 32]), Arc::new(Vec::new()));
        let r = one(&data, prev.as_ref().unwrap_or(&none), 1 + i as i64);
        let id = repo.hasher().chunk_id(&data);
        if i <= max {
            let s = r.unwrap_or_else(|e| panic!("generation {i}: {e}"));
            assert!(dump(&repo, &s.snapshot) == data, "generation {i}");
            if i > 0 {
                assert_eq!(repo.stored_payload(&id).unwrap()[0], 3, "generation {i}");
            }
        } else {
            let err = r.unwrap_err().to_string();
            assert!(err.contains("deeper than"), "{err}");
        }
        prev = Some(Fixed(id, Arc::new(data.clone())));
    }
    check_clean(&repo).unwrap();
}

const COPY: &str = "files/base.tar";

/// Backs up `data` as a plain stream (no delta source) at `COPY`: its
/// chunks are deduplicated against whatever stored them, deltas included.
fn plain(repo: &Repository, data: &[u8], t: i64) -> SnapshotEntry {
    repo.backup()
        .stream(COPY, data)
        .profile("tiny")
        .time_ns(1_700_000_000_000_000_000 + t)
        .run()
        .unwrap()
        .snapshot
}

fn read_at(repo: &Repository, s: &SnapshotEntry, path: &str) -> Vec<u8> {
    let node = repo.find_node(&s.snapshot.tree, path).unwrap();
    let mut out = Vec::new();
    repo.read_node(&node)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn prune_now(repo: &Repository, max_unused: f64) {
    let opts = PruneOptions {
        grace: Duration::ZERO,
        max_unused,
    };
    let sum = repo.prune(repo.prune_plan(&opts).unwrap()).unwrap();
    // A needed pack condemned by phase one would only be saved by phase two.
    assert_eq!(sum.packs_resurrected, 0, "{sum:?}");
}

/// SPEC §6.6: two base backups (the second mostly delta blobs), then a
/// plain snapshot holding most of the second's bytes, which names no
/// references; `between` runs, then both base backups are forgotten and
/// the repository pruned twice (the first prune repacks the second base
/// backup's half-used packs). The plain snapshot must still read back and
/// check clean: its delta blobs' references are recorded with them.
fn shared_deltas_survive(between: impl Fn(&Repository)) {
    use repo_core::unstable::RepositoryInternals as _;
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let a = table(192, 51);
    let b = next_day(&a, 52);
    let sa = backup(&repo, &a, None, 0);
    let sb = backup(&repo, &b, Some(&sa), 1);
    let part = &b[..b.len() * 2 / 3];
    let sp = plain(&repo, part, 2);
    // Deduplicated but for the last chunk (and the trees).
    assert!(sp.snapshot.summary.bytes_added_packed * 20 < part.len() as u64);
    let node = repo.find_node(&sp.snapshot.tree, COPY).unwrap();
    let deltas = node
        .content
        .iter()
        .filter(|id| repo.stored_payload(id).unwrap()[0] == 3)
        .count();
    assert!(deltas * 2 > node.content.len(), "{deltas} delta blobs");
    assert!(
        repo.find_node(&sp.snapshot.tree, format!("{COPY}{REFERENCES_SUFFIX}"))
            .is_err(),
        "a plain snapshot lists no references"
    );
    between(&repo);
    // Forgotten: the base backups (found by content: a rekey renames them).
    for s in repo.snapshots().unwrap() {
        if s.snapshot.tree == sa.snapshot.tree || s.snapshot.tree == sb.snapshot.tree {
            repo.backend()
                .delete(ObjectKind::Snapshot, &s.id.to_hex())
                .unwrap();
        }
    }
    assert_eq!(repo.snapshots().unwrap().len(), 1);
    prune_now(&repo, 0.0);
    prune_now(&repo, 0.0);
    let repo = super::open_repo(d.path(), cairn_testkit::PASSWORD).unwrap();
    assert!(read_at(&repo, &sp, COPY) == part);
    check_clean(&repo).unwrap();
}

#[test]
fn a_plain_snapshot_sharing_delta_blobs_outlives_the_base_backups() {
    shared_deltas_survive(|_| {});
}

#[test]
fn delta_references_survive_an_index_rebuilt_from_pack_headers() {
    shared_deltas_survive(|repo| {
        let r = repo.repair_index(&Default::default()).unwrap();
        assert!(r.index_files_replaced > 0);
    });
}

#[test]
fn delta_references_survive_a_rekey() {
    shared_deltas_survive(|repo| {
        let mut o = repo_core::RekeyOptions::default().simulate_epoch(7);
        o.grace = Duration::ZERO;
        let r = repo.rekey(&o).unwrap();
        assert!(r.packs_rewritten > 0);
    });
}

/// SPEC §6.6, docs/check.md step 4: a structural check (no data read)
/// finds a used delta blob whose recorded reference is gone from the
/// index, and says what it is.
#[test]
fn a_structural_check_finds_a_missing_delta_reference() {
    use repo_core::unstable::RepositoryInternals as _;
    use repo_core::{CheckOptions, ProblemKind, ReadData};
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let a = table(96, 61);
    let b = next_day(&a, 62);
    let sa = backup(&repo, &a, None, 0);
    let sb = backup(&repo, &b, Some(&sa), 1);
    let sp = plain(&repo, &b, 2);
    let node = repo.find_node(&sp.snapshot.tree, COPY).unwrap();
    // The first reference of the first delta blob (payload: 3, n, ids).
    let reference = node
        .content
        .iter()
        .map(|id| repo.stored_payload(id).unwrap())
        .find(|p| p[0] == 3)
        .map(|p| BlobId::from_bytes(p[2..34].try_into().unwrap()))
        .expect("a delta blob");
    let pack = repo.index().lookup(&reference).unwrap().unwrap().pack;
    // As if the base backups were pruned by a build that ignored it.
    for s in [&sa, &sb] {
        repo.backend()
            .delete(ObjectKind::Snapshot, &s.id.to_hex())
            .unwrap();
    }
    repo.backend()
        .delete(ObjectKind::Pack, &pack.to_hex())
        .unwrap();
    repo.repair_index(&Default::default()).unwrap();
    let opts = CheckOptions {
        read_data: ReadData::None,
        ..Default::default()
    };
    let r = repo.check(&opts).run().unwrap();
    let missing: Vec<_> = r
        .errors
        .iter()
        .filter(|p| p.kind == ProblemKind::BlobMissing && p.blob == Some(reference))
        .collect();
    assert_eq!(missing.len(), 1, "{r}");
    assert!(
        missing[0].message.contains("a delta blob's reference"),
        "{}",
        missing[0].message
    );
}
