//! Acceptance (issue 3, Verify): `check` names the damaged pack, blob and
//! the affected files; the ledger rotates partial data checks through every
//! pack; drills restore and compare; integrity reports are reproducible.

use repo_core::unstable::RepositoryInternals as _;
use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use repo_core::unstable::check::{
    CheckOptions, CheckReport, DrillOptions, MerkleRoot, ProblemKind, ReadData, Sample,
    merkle_tree_hash,
};
use repo_core::unstable::repository::now_ns;
use repo_core::{
    LocalBackend, ObjectKind, OpenOptions, PackId, Repository, SnapshotEntry, SnapshotFilter,
    TreeId,
};

use super::{init_repo, open_repo, random_bytes, text_lines};

fn pack_file(d: &Path, pack: &PackId) -> PathBuf {
    let hex = pack.to_hex();
    d.join("repo").join("data").join(&hex[..2]).join(&hex)
}

fn check(repo: &Repository, read_data: ReadData) -> CheckReport {
    let opts = CheckOptions {
        read_data,
        ..Default::default()
    };
    repo.check(&opts).run().unwrap()
}

fn latest(repo: &Repository) -> SnapshotEntry {
    repo.find_snapshot("latest", &SnapshotFilter::default())
        .unwrap()
}

/// A repository with one snapshot of three files of distinct content.
fn setup() -> (tempfile::TempDir, PathBuf, Repository) {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.txt"), text_lines(300)).unwrap();
    fs::write(src.join("sub/c.bin"), random_bytes(40_000, 3)).unwrap();
    fs::write(src.join("sub/d.bin"), random_bytes(30_000, 4)).unwrap();
    let repo = init_repo(d.path());
    repo.backup().path(&src).run().unwrap();
    (d, src, repo)
}

/// Every file path of the snapshot with a chunk in `pack`.
fn files_in_pack(repo: &Repository, snap: &SnapshotEntry, pack: &PackId) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    repo.walk(&snap.snapshot.tree, &mut |path, node| {
        for c in &node.content {
            if repo.index().lookup(c)?.is_some_and(|l| l.pack == *pack) {
                out.insert(String::from_utf8_lossy(path).into_owned());
            }
        }
        Ok(true)
    })
    .unwrap();
    out
}

#[test]
fn flipped_data_byte_passes_structure_and_fails_read_data_naming_pack_and_path() {
    let (d, src, repo) = setup();
    let snap = latest(&repo);
    let victim_file = src.join("sub/c.bin");
    let node = repo
        .find_node(&snap.snapshot.tree, victim_file.as_os_str().as_bytes())
        .unwrap();
    assert_eq!(node.content.len(), 1, "a 40 kB file is one chunk");
    let loc = repo.index().lookup(&node.content[0]).unwrap().unwrap();
    // Flip a byte in the middle of the sealed blob: the header is untouched.
    let path = pack_file(d.path(), &loc.pack);
    let mut bytes = fs::read(&path).unwrap();
    bytes[(loc.entry.offset + loc.entry.length / 2) as usize] ^= 0x01;
    fs::write(&path, &bytes).unwrap();

    let structural = check(&repo, ReadData::None);
    assert!(structural.ok, "structure check failed: {structural}");
    assert!(structural.errors.is_empty() && structural.warnings.is_empty());
    assert_eq!(structural.packs_checked, 0);
    assert_eq!(structural.snapshots, 1);

    let full = check(&repo, ReadData::All);
    assert!(!full.ok);
    assert_eq!(full.errors.len(), 1, "{full}");
    let e = &full.errors[0];
    assert_eq!(e.kind, ProblemKind::BlobDamaged);
    assert_eq!(e.pack, Some(loc.pack));
    assert_eq!(e.blob, Some(node.content[0]));
    assert_eq!(e.snapshots, vec![snap.id]);
    assert_eq!(e.paths, vec![victim_file.display().to_string()]);
    assert!(e.message.contains(&loc.pack.to_hex()), "{}", e.message);
    let text = full.to_string();
    assert!(text.contains(&victim_file.display().to_string()), "{text}");
    // Every other pack verified and entered in the ledger; the bad one not.
    let packs = repo.backend().list(ObjectKind::Pack).unwrap().len() as u64;
    assert_eq!(full.packs_checked, packs);
    let ledger = repo.index().cache();
    assert_eq!(ledger.last_verified(&loc.pack).unwrap(), None);
    assert_eq!(ledger.verification_times().unwrap().len() as u64, packs - 1);
    let last = ledger.last_check(true).unwrap().unwrap();
    assert_eq!((last.errors, last.packs_verified), (1, packs));
}

#[test]
fn deleted_pack_fails_structure_naming_pack_and_affected_paths() {
    let (d, src, repo) = setup();
    let snap = latest(&repo);
    let node = repo
        .find_node(
            &snap.snapshot.tree,
            src.join("sub/d.bin").as_os_str().as_bytes(),
        )
        .unwrap();
    let data_pack = repo.index().lookup(&node.content[0]).unwrap().unwrap().pack;
    let tree_pack = repo
        .index()
        .lookup(&snap.snapshot.tree.into())
        .unwrap()
        .unwrap()
        .pack;
    let expected = files_in_pack(&repo, &snap, &data_pack);
    assert!(expected.contains(&src.join("sub/d.bin").display().to_string()));
    fs::remove_file(pack_file(d.path(), &data_pack)).unwrap();

    let r = check(&repo, ReadData::None);
    assert!(!r.ok);
    assert_eq!(r.errors.len(), 1, "{r}");
    let e = &r.errors[0];
    assert_eq!(e.kind, ProblemKind::PackMissing);
    assert_eq!(e.pack, Some(data_pack));
    assert_eq!(e.snapshots, vec![snap.id]);
    assert_eq!(e.paths.iter().cloned().collect::<BTreeSet<_>>(), expected);

    // Losing the tree pack loses the snapshot's root: attributed to "/".
    fs::remove_file(pack_file(d.path(), &tree_pack)).unwrap();
    let r = check(&repo, ReadData::None);
    let e = r
        .errors
        .iter()
        .find(|e| e.pack == Some(tree_pack))
        .unwrap_or_else(|| panic!("tree pack not named: {r}"));
    assert_eq!(e.kind, ProblemKind::PackMissing);
    assert!(e.paths.contains(&"/".to_string()), "{e}");
    assert_eq!(e.snapshots, vec![snap.id]);
}

#[test]
fn truncated_index_file_is_named() {
    let (d, _, repo) = setup();
    let idx = fs::read_dir(d.path().join("repo/index"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let name = idx.file_name().unwrap().to_string_lossy().into_owned();
    let b = fs::read(&idx).unwrap();
    fs::write(&idx, &b[..b.len() - 7]).unwrap();
    let r = check(&repo, ReadData::None);
    assert!(!r.ok);
    let e = &r.errors[0];
    assert_eq!(e.kind, ProblemKind::IndexCorrupt);
    assert_eq!(e.index.as_deref(), Some(name.as_str()));
    assert!(e.message.contains(&name), "{e}");
    // Without that index the snapshot's root is unindexed, and its packs
    // are unreferenced.
    assert!(
        r.errors
            .iter()
            .any(|e| e.kind == ProblemKind::TreeMissing && e.paths == ["/"]),
        "{r}"
    );
    let packs = repo.backend().list(ObjectKind::Pack).unwrap().len();
    assert_eq!(r.warnings.len(), packs);
    assert!(
        r.warnings
            .iter()
            .all(|w| w.kind == ProblemKind::PackUnreferenced)
    );
}

#[test]
fn unreferenced_pack_is_a_warning_not_an_error() {
    let (d, _, repo) = setup();
    let stray = b"not really a pack, left by an interrupted backup";
    let id = PackId::hash_of(stray);
    repo.backend()
        .write(ObjectKind::Pack, &id.to_hex(), stray)
        .unwrap();
    let r = check(&repo, ReadData::All);
    assert!(r.ok, "{r}");
    assert_eq!(r.warnings.len(), 1);
    assert_eq!(r.warnings[0].kind, ProblemKind::PackUnreferenced);
    assert_eq!(r.warnings[0].pack, Some(id));
    drop(d);
}

fn open_cached(d: &Path) -> Repository {
    Repository::open(
        LocalBackend::open(d.join("repo")),
        b"pw",
        OpenOptions {
            cache_dir: Some(d.join("cache")),
            ..Default::default()
        },
    )
    .unwrap()
}

/// A repository of several small backups: each adds a data pack and a tree pack.
fn many_packs() -> (tempfile::TempDir, HashSet<PackId>) {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let repo = init_repo(d.path());
    for i in 0..5u64 {
        fs::write(src.join(format!("f{i}")), random_bytes(20_000, 100 + i)).unwrap();
        repo.backup().path(&src).run().unwrap();
    }
    let packs: HashSet<PackId> = repo
        .backend()
        .list(ObjectKind::Pack)
        .unwrap()
        .into_iter()
        .map(|o| o.name.parse().unwrap())
        .collect();
    assert!(packs.len() >= 8, "only {} packs", packs.len());
    (d, packs)
}

#[test]
fn ledger_makes_four_quarter_runs_cover_every_pack_once() {
    let (d, packs) = many_packs();
    let mut union: HashSet<PackId> = HashSet::new();
    let mut total = 0u64;
    for run in 0..4 {
        // A new session each time: the ledger lives in the cache on disk.
        let repo = open_cached(d.path());
        let start = now_ns();
        let r = check(&repo, ReadData::Fraction(0.25));
        assert!(r.ok, "run {run}: {r}");
        let verified = repo.index().cache().verified_since(start).unwrap();
        assert_eq!(verified.len() as u64, r.packs_checked, "run {run}");
        assert!(!verified.is_empty(), "run {run} verified nothing");
        for p in &verified {
            assert!(union.insert(*p), "run {run} verified pack {p} again");
        }
        total += r.packs_checked;
    }
    assert_eq!(union, packs, "four 25% runs must cover every pack");
    assert_eq!(total, packs.len() as u64);

    // Everything was verified just now: a max-age run has nothing to do.
    let repo = open_cached(d.path());
    let r = repo
        .check(&CheckOptions {
            read_data: ReadData::All,
            max_age: Some(Duration::from_secs(30 * 86_400)),
            ..Default::default()
        })
        .run()
        .unwrap();
    assert_eq!((r.packs_selected, r.packs_checked), (0, 0));
    // A fifth 25% run starts the next cycle.
    assert!(check(&repo, ReadData::Fraction(0.25)).packs_checked >= 1);
}

#[test]
fn max_duration_stops_starting_packs_and_subsets_partition() {
    let (d, packs) = many_packs();
    let repo = open_cached(d.path());
    let r = repo
        .check(&CheckOptions {
            read_data: ReadData::All,
            max_duration: Some(Duration::ZERO),
            ..Default::default()
        })
        .run()
        .unwrap();
    assert_eq!(r.packs_selected, packs.len() as u64);
    assert_eq!((r.packs_checked, r.packs_skipped), (0, packs.len() as u64));
    assert!(
        repo.index()
            .cache()
            .verification_times()
            .unwrap()
            .is_empty()
    );

    let mut seen = 0;
    for n in 1..=3 {
        seen += check(&repo, ReadData::Subset(n, 3)).packs_checked;
    }
    assert_eq!(seen, packs.len() as u64);
}

#[test]
fn drill_restores_a_sample_and_compares_every_byte() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("plain.txt"), text_lines(50)).unwrap();
    fs::write(src.join("we*rd [1]{a,b}?.txt"), b"glob characters").unwrap();
    fs::write(src.join("back\\slash"), b"a backslash").unwrap();
    fs::write(
        src.join(std::ffi::OsStr::from_bytes(b"not-utf8-\xff")),
        random_bytes(5000, 9),
    )
    .unwrap();
    fs::write(src.join("dir/big.bin"), random_bytes(700_000, 8)).unwrap();
    fs::write(src.join("dir/empty"), b"").unwrap();
    std::os::unix::fs::symlink("plain.txt", src.join("link")).unwrap();
    let repo = init_repo(d.path());
    repo.backup().path(&src).run().unwrap();
    let snap = latest(&repo);
    let scratch = d.path().join("scratch");

    let opts = |sample| DrillOptions {
        sample,
        scratch_dir: Some(scratch.clone()),
        seed: Some(7),
    };
    let all = repo.drill(&snap, &opts(Sample::All)).run().unwrap();
    assert!(all.ok, "{all}");
    assert_eq!((all.files, all.files_total), (6, 6));
    assert_eq!(all.bytes, dir_bytes(&src));
    assert!(!Path::new(&all.scratch_dir).exists(), "scratch dir left");
    assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0);

    // A sample naming every file goes through include globs (and the
    // non-UTF-8 name through the by-hand path): all must match.
    let every = repo.drill(&snap, &opts(Sample::Count(100))).run().unwrap();
    assert!(every.ok, "{every}");
    assert_eq!(every.files, 6);

    let two = repo.drill(&snap, &opts(Sample::Count(2))).run().unwrap();
    assert!(two.ok && two.files == 2, "{two}");
    let rec = repo
        .index()
        .cache()
        .last_drill(Some(&snap.id))
        .unwrap()
        .unwrap();
    assert_eq!((rec.files, rec.ok), (2, true));

    // Damage the big file's data: the drill fails and names it.
    let big = src.join("dir/big.bin");
    let node = repo
        .find_node(&snap.snapshot.tree, big.as_os_str().as_bytes())
        .unwrap();
    let loc = repo.index().lookup(&node.content[0]).unwrap().unwrap();
    let path = pack_file(d.path(), &loc.pack);
    let mut bytes = fs::read(&path).unwrap();
    bytes[(loc.entry.offset + 100) as usize] ^= 0x80;
    fs::write(&path, &bytes).unwrap();
    let bad = repo.drill(&snap, &opts(Sample::All)).run().unwrap();
    assert!(!bad.ok);
    let big_s = big.display().to_string();
    assert!(bad.failures.iter().any(|f| f.path == big_s), "{bad}");
    assert!(!Path::new(&bad.scratch_dir).exists());
    assert!(
        !repo
            .index()
            .cache()
            .last_drill(Some(&snap.id))
            .unwrap()
            .unwrap()
            .ok
    );
}

fn dir_bytes(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// The Merkle root recomputed from the trees, as an auditor would.
fn merkle(repo: &Repository, tree: &TreeId) -> MerkleRoot {
    let t = repo.load_tree(tree).unwrap();
    merkle_tree_hash(&t, &mut |sub| Ok(merkle(repo, sub))).unwrap()
}

#[test]
fn integrity_report_is_reproducible_and_tracks_checks_and_drills() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    for dir in ["one", "two"] {
        // Identical directories share one tree: counted twice all the same.
        fs::create_dir_all(src.join(dir)).unwrap();
        fs::write(src.join(dir).join("x.txt"), b"same content\n").unwrap();
    }
    fs::write(src.join("data.bin"), random_bytes(10_000, 5)).unwrap();
    let repo = init_repo(d.path());
    repo.backup().path(&src).tag("audit").run().unwrap();
    let first = latest(&repo);
    let r1 = repo.report(&first).unwrap();
    assert_eq!(r1.snapshot, first.id);
    assert_eq!(r1.tree, first.snapshot.tree);
    assert_eq!(r1.files, 3);
    assert_eq!(r1.total_size, 2 * 13 + 10_000);
    assert_eq!(r1.tags, vec!["audit".to_string()]);
    assert_eq!(r1.merkle_root, merkle(&repo, &first.snapshot.tree));
    assert!(r1.last_check.is_none() && r1.last_drill.is_none());
    assert_eq!(r1.packs_verified, 0);

    // An unchanged second backup has the same root; a change moves it.
    repo.backup().path(&src).run().unwrap();
    let second = latest(&repo);
    assert_ne!(second.id, first.id);
    assert_eq!(repo.report(&second).unwrap().merkle_root, r1.merkle_root);
    fs::write(src.join("two/x.txt"), b"other content\n").unwrap();
    repo.backup().path(&src).run().unwrap();
    let third = latest(&repo);
    let r3 = repo.report(&third).unwrap();
    assert_ne!(r3.merkle_root, r1.merkle_root);
    assert_eq!(r3.merkle_root, merkle(&repo, &third.snapshot.tree));

    assert!(check(&repo, ReadData::All).ok);
    repo.drill(&first, &DrillOptions::default()).run().unwrap();
    let r = repo.report(&first).unwrap();
    let c = r.last_check.as_ref().unwrap();
    assert!(c.clean && c.read_data);
    assert_eq!(r.last_data_check.as_ref().unwrap().time_ns, c.time_ns);
    assert!(r.last_drill.as_ref().unwrap().ok);
    assert_eq!(r.packs_verified, r.packs);
    assert!(r.oldest_verification_ns.is_some());
    let md = r.to_markdown();
    assert!(
        md.contains(&r.merkle_root.to_hex()) && md.contains(&first.id.to_hex()),
        "{md}"
    );
    assert!(
        md.contains("Last restore drill") && md.contains("identical: yes"),
        "{md}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["merkle_root"], r.merkle_root.to_hex());
    assert_eq!(json["files"], 3);

    // Reports read the repository, not the session: a new one agrees.
    let again = open_repo(d.path(), b"pw").unwrap();
    assert_eq!(again.report(&first).unwrap().merkle_root, r.merkle_root);
}

#[test]
fn drill_of_unreadable_snapshot_is_a_recorded_failure() {
    let (d, _, repo) = setup();
    let snap = latest(&repo);
    let tree_pack = repo
        .index()
        .lookup(&snap.snapshot.tree.into())
        .unwrap()
        .unwrap()
        .pack;
    fs::remove_file(pack_file(d.path(), &tree_pack)).unwrap();
    let r = repo.drill(&snap, &DrillOptions::default()).run().unwrap();
    assert!(!r.ok);
    assert_eq!(r.files, 0);
    assert_eq!(r.failures.len(), 1);
    assert_eq!(r.failures[0].path, "/");
    assert!(r.failures[0].reason.contains("cannot read"), "{r}");
    let rec = repo.index().cache().last_drill(None).unwrap().unwrap();
    assert!(!rec.ok && rec.snapshot == snap.id);
}

/// The drill's scratch directory is the owner's alone while files are in
/// it (issue 12 item 6).
#[test]
fn drill_scratch_directory_is_private() {
    struct Modes(std::path::PathBuf, std::sync::Mutex<Vec<u32>>);
    impl repo_core::Progress for Modes {
        fn add_file(&self, _: &std::path::Path) {
            use std::os::unix::fs::PermissionsExt;
            for e in fs::read_dir(&self.0).unwrap() {
                let m = e.unwrap().metadata().unwrap().permissions().mode();
                self.1.lock().unwrap().push(m & 0o777);
            }
        }
    }
    let (d, _, repo) = setup();
    let snap = latest(&repo);
    let scratch = d.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    let modes = Modes(scratch.clone(), Default::default());
    let opts = DrillOptions {
        scratch_dir: Some(scratch),
        ..Default::default()
    };
    assert!(repo.drill(&snap, &opts).progress(&modes).run().unwrap().ok);
    let seen = modes.1.into_inner().unwrap();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|&m| m == 0o700), "{seen:?}");
}
