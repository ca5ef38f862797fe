//! `check` keeps its memory flat by sorting the index and the referenced
//! chunks through scratch files (docs/check.md §1). With a budget of a few
//! records it must spill, and find exactly what it finds in memory.

use repo_core::unstable::RepositoryInternals as _;
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use repo_core::unstable::blob::BlobKind;
use repo_core::unstable::check::{CheckOptions, CheckReport, ProblemKind, ReadData};
use repo_core::unstable::index::IndexPack;
use repo_core::{LocalBackend, ObjectKind, OpenOptions, PackId, Repository};

use super::{init_repo, random_bytes, text_lines};

fn pack_file(d: &Path, pack: &PackId) -> PathBuf {
    let hex = pack.to_hex();
    d.join("repo").join("data").join(&hex[..2]).join(&hex)
}

fn index_names(repo: &Repository) -> HashSet<String> {
    repo.backend()
        .list(ObjectKind::Index)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect()
}

fn pack_names(repo: &Repository) -> HashSet<PackId> {
    repo.backend()
        .list(ObjectKind::Pack)
        .unwrap()
        .into_iter()
        .map(|o| o.name.parse().unwrap())
        .collect()
}

/// A name that is not `p`'s: its last hex digit changed.
fn other_name(p: &PackId) -> PackId {
    let mut b = *p.as_bytes();
    b[31] ^= 0x5a;
    PackId::from_bytes(b)
}

fn check(repo: &Repository, read_data: ReadData, spill_bytes: usize) -> CheckReport {
    let opts = CheckOptions {
        read_data,
        spill_bytes,
        ..Default::default()
    };
    repo.check(&opts).run().unwrap()
}

/// Damage of every kind the streamed index answers for: a lost index file
/// (chunks and trees in no index, its packs unreferenced), a pack whose
/// blobs are also in a copy (duplicates across packs), an index entry that
/// disagrees with its pack's header, a missing pack, and a stray pack.
fn damaged_repo(d: &Path) -> Repository {
    let src = d.join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..12u64 {
        fs::write(
            src.join(format!("sub/r{i}.bin")),
            random_bytes(30_000 + i as usize * 100, i),
        )
        .unwrap();
    }
    fs::write(src.join("a.txt"), text_lines(2000)).unwrap();
    drop(init_repo(d));
    let repo = Repository::open(
        LocalBackend::open(d.join("repo")),
        b"pw",
        OpenOptions {
            cache_dir: Some(d.join("cache")),
            ..Default::default()
        },
    )
    .unwrap();
    repo.backup().path(&src).run().unwrap();

    // A second backup whose index file is then lost, and replaced by one
    // naming only its tree packs: its new chunks are in no index.
    let before = index_names(&repo);
    let packs_before = pack_names(&repo);
    fs::create_dir_all(src.join("new")).unwrap();
    for i in 0..6u64 {
        fs::write(
            src.join(format!("new/n{i}.bin")),
            random_bytes(25_000, 100 + i),
        )
        .unwrap();
    }
    repo.backup().path(&src).run().unwrap();
    let lost: Vec<String> = index_names(&repo).difference(&before).cloned().collect();
    assert_eq!(lost.len(), 1);
    fs::remove_file(d.join("repo/index").join(&lost[0])).unwrap();
    let tree_packs: Vec<IndexPack> = pack_names(&repo)
        .difference(&packs_before)
        .map(|p| IndexPack {
            id: *p,
            entries: repo.read_pack_header(p).unwrap().entries,
        })
        .filter(|p| p.entries.iter().all(|e| e.kind == BlobKind::Tree))
        .collect();
    assert!(!tree_packs.is_empty());
    repo.write_index(&tree_packs).unwrap();

    // Pick data packs of the first backup from the cache.
    let f = repo
        .find_node(
            &repo
                .find_snapshot("latest", &Default::default())
                .unwrap()
                .snapshot
                .tree,
            src.join("sub/r3.bin").as_os_str().as_encoded_bytes(),
        )
        .unwrap();
    let loc = repo.index().lookup(&f.content[0]).unwrap().unwrap();
    let header = repo.read_pack_header(&loc.pack).unwrap();

    // A copy of that pack under another name, indexed with the same entries:
    // its blobs now have two locations each.
    let dup = other_name(&loc.pack);
    fs::create_dir_all(pack_file(d, &dup).parent().unwrap()).unwrap();
    fs::copy(pack_file(d, &loc.pack), pack_file(d, &dup)).unwrap();
    // A second copy, indexed with one entry's raw length changed: the size
    // matches, the header does not.
    let mut b = *loc.pack.as_bytes();
    b[0] ^= 0xa5;
    let mismatched = PackId::from_bytes(b);
    fs::create_dir_all(pack_file(d, &mismatched).parent().unwrap()).unwrap();
    fs::copy(pack_file(d, &loc.pack), pack_file(d, &mismatched)).unwrap();
    let mut wrong = header.entries.clone();
    wrong[0].raw_length += 1;
    // A pack the index names that does not exist.
    let mut b = *loc.pack.as_bytes();
    b[5] ^= 0x33;
    let gone = PackId::from_bytes(b);
    repo.write_index(&[
        IndexPack {
            id: dup,
            entries: header.entries.clone(),
        },
        IndexPack {
            id: mismatched,
            entries: wrong,
        },
        IndexPack {
            id: gone,
            entries: header.entries[..1].to_vec(),
        },
    ])
    .unwrap();

    // A stray pack.
    let stray = b"left by an interrupted backup";
    repo.backend()
        .write(ObjectKind::Pack, &PackId::hash_of(stray).to_hex(), stray)
        .unwrap();
    repo
}

fn kinds(r: &CheckReport) -> HashSet<ProblemKind> {
    r.errors.iter().chain(&r.warnings).map(|p| p.kind).collect()
}

/// Scratch directories left in the cache.
fn scratch_left(d: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(d.join("cache"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("check-"))
        .map(|e| e.path().to_path_buf())
        .collect()
}

#[test]
fn tiny_spill_budget_finds_exactly_what_memory_finds() {
    let d = tempfile::tempdir().unwrap();
    let repo = damaged_repo(d.path());

    let mem = check(&repo, ReadData::None, CheckOptions::default().spill_bytes);
    let spilled = check(&repo, ReadData::None, 200);
    assert_eq!(mem.spill_files, 0, "{mem}");
    assert!(
        spilled.spill_files > 10,
        "{} run files",
        spilled.spill_files
    );
    assert!(!mem.ok);
    for k in [
        ProblemKind::BlobMissing,
        ProblemKind::IndexMismatch,
        ProblemKind::PackMissing,
        ProblemKind::PackUnreferenced,
    ] {
        assert!(kinds(&mem).contains(&k), "no {k} in\n{mem}");
    }
    // Files of the lost backup are named.
    assert!(
        mem.errors
            .iter()
            .any(|e| e.kind == ProblemKind::BlobMissing
                && e.paths.iter().any(|p| p.contains("/new/n"))),
        "{mem}"
    );
    assert_eq!(mem.errors, spilled.errors);
    assert_eq!(mem.warnings, spilled.warnings);
    assert_eq!(
        (mem.packs, mem.trees, mem.data_refs, mem.index_files),
        (
            spilled.packs,
            spilled.trees,
            spilled.data_refs,
            spilled.index_files
        )
    );

    // Reading data takes each pack's entries from the scratch file too.
    let mem = check(&repo, ReadData::All, CheckOptions::default().spill_bytes);
    let spilled = check(&repo, ReadData::All, 200);
    assert!(
        kinds(&mem).contains(&ProblemKind::PackHashMismatch),
        "{mem}"
    );
    assert_eq!(mem.errors, spilled.errors);
    assert_eq!(mem.warnings, spilled.warnings);
    assert_eq!(mem.blobs_checked, spilled.blobs_checked);
    assert!(mem.blobs_checked > 0);

    assert!(
        scratch_left(d.path()).is_empty(),
        "{:?}",
        scratch_left(d.path())
    );
}
