//! Hostile repository content (issue 12, items 11-13): planted key files
//! with costly KDF parameters, trees nested deeper than a thread's stack,
//! and trees that decode but lie (NUL names, tree blobs as file content,
//! sizes that overflow).

use std::path::Path;

use repo_core::unstable::RepositoryInternals as _;
use repo_core::unstable::blob::BlobKind;
use repo_core::unstable::crypto::KeyFile;
use repo_core::unstable::id::KeyId;
use repo_core::{
    Backend, DrillOptions, Error, KdfBudget, KdfParams, LocalBackend, Node, NodeKind, ObjectKind,
    OpenOptions, Repository, Sample, SnapshotEntry, StatsMode, Tree, TreeId,
};

use super::{WEAK_KDF, check_clean, init_memory, init_repo};

/// Stores `tree` as it is (no validation) and returns its id.
fn forge_tree(repo: &Repository, tree: &Tree) -> TreeId {
    let id = repo
        .forge_blobs(&[(BlobKind::Tree, &tree.encode())])
        .unwrap()[0];
    TreeId::from_bytes(*id.as_bytes())
}

fn file(name: &[u8], size: u64) -> Node {
    let mut n = Node::new(name.to_vec(), NodeKind::File);
    n.size = size;
    n.mode = 0o644;
    n
}

fn dir(name: &[u8], sub: TreeId) -> Node {
    let mut n = Node::new(name.to_vec(), NodeKind::Dir);
    n.subtree = Some(sub);
    n.mode = 0o755;
    n
}

/// Runs `f` on a thread with a 2 MiB stack (Rust's default for spawned
/// threads), so a walk that recurses per level would overflow it.
fn on_small_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn_scoped(s, f)
            .unwrap()
            .join()
            .expect("no stack overflow")
    })
}

/// A snapshot of `depth` directories `d` nested in each other, the deepest
/// holding an empty file `f`.
fn deep_snapshot(repo: &Repository, depth: usize) -> SnapshotEntry {
    let mut encoded = Vec::with_capacity(depth + 1);
    let mut t = Tree {
        nodes: vec![file(b"f", 0)],
    };
    for _ in 0..depth {
        let bytes = t.encode();
        let id = repo.hasher().tree_id(&bytes);
        encoded.push(bytes);
        t = Tree {
            nodes: vec![dir(b"d", id)],
        };
    }
    encoded.push(t.encode());
    let blobs: Vec<_> = encoded
        .iter()
        .map(|b| (BlobKind::Tree, b.as_slice()))
        .collect();
    let ids = repo.forge_blobs(&blobs).unwrap();
    repo.forge_snapshot(TreeId::from_bytes(*ids.last().unwrap().as_bytes()), 1)
        .unwrap()
}

#[test]
fn walks_of_trees_thousands_of_levels_deep_fit_a_2_mib_stack() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let depth = 50_000;
    let snap = deep_snapshot(&repo, depth);
    on_small_stack(|| {
        let st = repo
            .stats(std::slice::from_ref(&snap), StatsMode::Raw)
            .unwrap();
        assert_eq!((st.restore.dirs, st.restore.files), (depth as u64, 1));
        assert_eq!(st.tree_blobs.unwrap().count, depth as u64 + 1);

        let r = repo.report(&snap).unwrap();
        assert_eq!((r.dirs, r.files), (depth as u64, 1));

        let m = repo.find("f", std::slice::from_ref(&snap)).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].path.len(), depth * 2 + 2, "/d/d/.../f");

        let mut seen = 0usize;
        repo.walk(&snap.snapshot.tree, &mut |_, _| {
            seen += 1;
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, depth + 1);
    });
    // The drill restores for real, one directory per level, so it gets a
    // shallower chain; a walk recursing per level overflows 2 MiB at a few
    // thousand levels already (the restore planner did at 5,000). The file's
    // path is longer than PATH_MAX: the drill either restores and compares
    // it or records why not; it does not crash.
    let snap = deep_snapshot(&repo, 5_000);
    on_small_stack(|| {
        let r = repo
            .drill(
                &snap,
                &DrillOptions {
                    sample: Sample::All,
                    scratch_dir: Some(d.path().to_path_buf()),
                    seed: Some(1),
                },
            )
            .run()
            .unwrap();
        assert_eq!(r.files_total, 1);
        assert!(r.files == 1 || !r.failures.is_empty(), "{r:?}");
    });
    // The scratch directory is gone, however deep it was.
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("cairn-drill"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_name_with_nul_is_refused_by_the_decoder_check_and_restore() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let tree = Tree {
        nodes: vec![file(b"a\0b", 0)],
    };
    let id = forge_tree(&repo, &tree);
    let snap = repo.forge_snapshot(id, 1).unwrap();
    let e = repo.load_tree(&id).unwrap_err();
    assert!(e.to_string().contains("invalid entry name"), "{e}");
    let report = check_clean(&repo).unwrap_err();
    assert!(report.contains(&id.to_hex()[..8]), "{report}");
    assert!(repo.restore(&snap).to(d.path().join("r")).run().is_err());
}

#[test]
fn file_content_naming_a_tree_blob_is_refused_by_restore_and_check() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    // A tree blob whose bytes would be restored as the file's content.
    let inner = forge_tree(
        &repo,
        &Tree {
            nodes: vec![file(b"x", 0)],
        },
    );
    let mut f = file(b"f", 0);
    f.content = vec![inner.into()];
    f.size = Tree {
        nodes: vec![file(b"x", 0)],
    }
    .encode()
    .len() as u64;
    let root = forge_tree(
        &repo,
        &Tree {
            nodes: vec![f.clone(), dir(b"keep", inner)],
        },
    );
    let snap = repo.forge_snapshot(root, 1).unwrap();
    let r = repo.restore(&snap).to(d.path().join("r")).run();
    assert!(
        matches!(r, Err(Error::TreeAsContent(id)) if id == inner.into()),
        "{r:?}"
    );
    let mut sink = Vec::new();
    assert!(matches!(
        repo.dump_node(&f, &mut sink),
        Err(Error::TreeAsContent(_))
    ));
    assert!(sink.is_empty());
    assert!(check_clean(&repo).is_err());
}

#[test]
fn sizes_that_overflow_saturate_instead_of_wrapping() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let half = u64::MAX / 2 + 1;
    let root = forge_tree(
        &repo,
        &Tree {
            nodes: vec![file(b"a", half), file(b"b", half), file(b"c", 5)],
        },
    );
    let snap = repo.forge_snapshot(root, 1).unwrap();
    let st = repo
        .stats(std::slice::from_ref(&snap), StatsMode::RestoreSize)
        .unwrap();
    assert_eq!(st.restore.bytes, u64::MAX);
    // Two snapshots of it: still the maximum, not a wrapped small number.
    let twice = [snap.clone(), snap.clone()];
    assert_eq!(
        repo.stats(&twice, StatsMode::RestoreSize)
            .unwrap()
            .restore
            .bytes,
        u64::MAX
    );
    assert_eq!(repo.report(&snap).unwrap().total_size, u64::MAX);
}

#[test]
fn find_reports_a_malformed_tree_and_searches_the_other_snapshots() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let bad = forge_tree(
        &repo,
        &Tree {
            nodes: vec![file(b"b", 0), file(b"a", 0)], // out of order
        },
    );
    let broken = repo
        .forge_snapshot(
            forge_tree(
                &repo,
                &Tree {
                    nodes: vec![dir(b"sub", bad)],
                },
            ),
            1,
        )
        .unwrap();
    let good = repo
        .forge_snapshot(
            forge_tree(
                &repo,
                &Tree {
                    nodes: vec![file(b"a", 1)],
                },
            ),
            2,
        )
        .unwrap();
    let both = [broken.clone(), good.clone()];
    assert!(repo.find("a", &both).is_err(), "find alone stops");
    let mut failed = Vec::new();
    let m = repo
        .find_with("a", &both, &mut |s, e| {
            failed.push((s.id, e.to_string()));
            Ok(())
        })
        .unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!((m[0].snapshot, m[0].path.as_slice()), (good.id, &b"/a"[..]));
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, broken.id);
    assert!(failed[0].1.contains("order"), "{}", failed[0].1);
}

// ---------------------------------------------------------------- keys

fn open_with(dir: &Path, pw: &[u8], opts: OpenOptions) -> repo_core::Result<Repository> {
    Repository::open(LocalBackend::open(dir.join("repo")), pw, opts)
}

fn kdf(memory_kib: u32, iterations: u32) -> KdfParams {
    KdfParams {
        memory_kib,
        iterations,
        parallelism: 1,
    }
}

#[test]
fn keys_are_tried_cheapest_first() {
    // The memory backend lists in name order, which the test arranges.
    let (b, repo) = init_memory();
    // Two key files for the same password: the costlier one is listed
    // first, so trying in listing order would pick it.
    let cheap = repo.add_key(b"same", kdf(64, 1)).unwrap();
    let costly = loop {
        let id = repo.add_key(b"same", kdf(256, 2)).unwrap();
        if id.to_hex() < cheap.to_hex() {
            break id;
        }
        repo.remove_key(&id).unwrap();
    };
    let listed: Vec<String> = b
        .list(ObjectKind::Key)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    let pos = |id: &KeyId| listed.iter().position(|n| *n == id.to_hex());
    assert!(pos(&costly) < pos(&cheap), "{listed:?}");
    let r = Repository::open(b.clone(), b"same", OpenOptions::default()).unwrap();
    assert_eq!(
        r.key_id(),
        cheap,
        "the costlier key {costly} was tried first"
    );
}

#[test]
fn a_key_over_the_budget_is_not_tried_unless_named() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let big = repo.add_key(b"big", kdf(256, 1)).unwrap();
    let budget = KdfBudget {
        max_memory_kib: 128,
        ..Default::default()
    };
    let opts = |key: Option<String>| OpenOptions {
        kdf_budget: budget,
        key,
        ..Default::default()
    };
    // The ordinary key still opens under the small budget.
    assert_eq!(
        open_with(d.path(), b"pw", opts(None)).unwrap().key_id(),
        repo.key_id()
    );
    // The costly one is skipped, and the error names it.
    let e = open_with(d.path(), b"big", opts(None)).unwrap_err();
    assert!(
        matches!(&e, Error::KeysNotTried(ids) if ids == &[big]),
        "{e}"
    );
    assert!(e.to_string().contains(&big.short()), "{e}");
    // Named (by a prefix of its id), it opens whatever it costs.
    let named = open_with(d.path(), b"big", opts(Some(big.to_hex()[..10].into()))).unwrap();
    assert_eq!(named.key_id(), big);
    // A name matching no key file.
    assert!(matches!(
        open_with(d.path(), b"big", opts(Some("0000000000zz".into()))),
        Err(Error::KeyNotFound(_))
    ));
    // The total budget counts every key tried: the third is over it.
    let total = KdfBudget {
        max_total_cost: 64 * 2,
        ..Default::default()
    };
    repo.add_key(b"x", WEAK_KDF).unwrap();
    let e = open_with(
        d.path(),
        b"big",
        OpenOptions {
            kdf_budget: total,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::KeysNotTried(ids) if ids == &[big]),
        "{e}"
    );
}

#[test]
fn the_number_of_keys_tried_is_capped() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    for i in 0..3 {
        repo.add_key(format!("other {i}").as_bytes(), WEAK_KDF)
            .unwrap();
    }
    let last = repo.add_key(b"last", kdf(128, 1)).unwrap();
    let opts = OpenOptions {
        kdf_budget: KdfBudget {
            max_keys: 4,
            ..Default::default()
        },
        ..Default::default()
    };
    let e = open_with(d.path(), b"last", opts).unwrap_err();
    assert!(
        matches!(&e, Error::KeysNotTried(ids) if ids == &[last]),
        "{e}"
    );
}

#[test]
fn a_key_file_changed_after_writing_is_listed_as_damaged() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let second = repo.add_key(b"second", WEAK_KDF).unwrap();
    let b = LocalBackend::open(d.path().join("repo"));
    let mut bytes = b.read(ObjectKind::Key, &second.to_hex()).unwrap();
    // Still decodes: the last byte is inside the sealed master key's tag.
    *bytes.last_mut().unwrap() ^= 1;
    assert!(KeyFile::decode(&bytes).is_ok());
    std::fs::write(d.path().join("repo/keys").join(second.to_hex()), &bytes).unwrap();
    assert_ne!(KeyId::hash_of(&bytes), second);
    let keys = repo.keys().unwrap();
    let k = keys.iter().find(|k| k.id == second).unwrap();
    assert!(!k.is_usable(), "{k:?}");
    // Key files with parameters no reader runs do not decode at all.
    let mut kf =
        KeyFile::decode(&b.read(ObjectKind::Key, &repo.key_id().to_hex()).unwrap()).unwrap();
    kf.header.kdf = kdf(4 * 1024 * 1024, 101);
    assert!(KeyFile::decode(&kf.encode()).is_err());
}

#[test]
fn a_regular_file_is_not_a_repository() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("file");
    std::fs::write(&f, b"not a repository").unwrap();
    let r = Repository::open(LocalBackend::open(&f), b"pw", OpenOptions::default());
    assert!(matches!(r, Err(Error::NotARepository(_))), "{r:?}");
    assert!(
        LocalBackend::open(&f)
            .list(ObjectKind::Config)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_renamed_key_file_still_opens_but_is_not_removed_by_its_own_session() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let first = repo.key_id();
    let keys = d.path().join("repo/keys");
    // Renamed: its content is intact, its name no longer its hash.
    let other = KeyId::hash_of(b"another name");
    std::fs::rename(keys.join(first.to_hex()), keys.join(other.to_hex())).unwrap();
    let r = open_with(d.path(), b"pw", OpenOptions::default()).unwrap();
    assert_eq!(r.key_id(), first);
    let listed = r.keys().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].current && !listed[0].is_usable(), "{listed:?}");
    // Listed as damaged, but it is the only key that opens: refused.
    assert!(matches!(r.remove_key(&other), Err(Error::KeyInUse(_))));
    assert!(open_with(d.path(), b"pw", OpenOptions::default()).is_ok());
}
