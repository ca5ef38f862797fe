//! Repair: the index is rebuilt from packs; damaged packs are salvaged and
//! snapshots rewritten so every unaffected file still restores (issue 3).

use repo_core::unstable::RepositoryInternals as _;
use std::fs;
use std::path::{Path, PathBuf};

use repo_core::unstable::repair::{DAMAGED_XATTR, REPAIRED_TAG};
use repo_core::{BlobId, SnapshotFilter};

use super::{init_repo, open_repo, random_bytes, text_lines};

fn source(d: &Path) -> PathBuf {
    let src = d.join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..6 {
        fs::write(
            src.join(format!("f{i}.bin")),
            random_bytes(300_000 + i * 1000, i as u64),
        )
        .unwrap();
    }
    fs::write(src.join("sub/text.sql"), text_lines(20_000)).unwrap();
    src
}

fn compare(src: &Path, restored: &Path, skip: Option<&Path>) -> usize {
    let mut n = 0;
    for e in walkdir::WalkDir::new(src)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
    {
        let rel = e.path().strip_prefix(src).unwrap();
        if Some(rel) == skip {
            continue;
        }
        assert_eq!(
            fs::read(restored.join(rel)).unwrap(),
            fs::read(e.path()).unwrap(),
            "{}",
            rel.display()
        );
        n += 1;
    }
    n
}

#[test]
fn repair_index_rebuilds_a_deleted_index() {
    let d = tempfile::tempdir().unwrap();
    let src = source(d.path());
    let repo = init_repo(d.path());
    repo.backup().path(&src).run().unwrap();
    fs::write(src.join("f0.bin"), random_bytes(200_000, 99)).unwrap();
    repo.backup().path(&src).run().unwrap();
    drop(repo);
    for e in fs::read_dir(d.path().join("repo/index")).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    // Without an index nothing restores...
    let repo = open_repo(d.path(), b"pw").unwrap();
    let snap = repo
        .find_snapshot("latest", &SnapshotFilter::default())
        .unwrap();
    assert!(repo.restore(&snap).to(d.path().join("x")).run().is_err());
    // ...after `repair index` everything does.
    let report = repo.repair_index(&Default::default()).unwrap();
    assert!(
        report.packs_indexed >= 2 && report.blobs_lost.is_empty(),
        "{report:?}"
    );
    let repo = open_repo(d.path(), b"pw").unwrap();
    let out = d.path().join("out");
    let latest = repo
        .find_snapshot("latest", &SnapshotFilter::default())
        .unwrap();
    repo.restore(&latest).to(&out).run().unwrap();
    assert_eq!(
        compare(&src, &out.join(src.strip_prefix("/").unwrap()), None),
        7
    );
    let first = &repo.snapshots().unwrap()[0];
    repo.restore(first).to(d.path().join("out0")).run().unwrap();
}

#[test]
fn a_flipped_byte_costs_one_file_and_repair_keeps_the_rest() {
    let d = tempfile::tempdir().unwrap();
    let src = source(d.path());
    let repo = init_repo(d.path());
    let snap = repo.backup().path(&src).run().unwrap().snapshot;
    // The chunk of f3.bin (one chunk: smaller than the minimum chunk size).
    let f3 = repo
        .find_node(&snap.snapshot.tree, format!("{}/f3.bin", src.display()))
        .unwrap();
    let victim: BlobId = f3.content[0];
    let loc = repo.index().lookup(&victim).unwrap().unwrap();
    let pack_path = d
        .path()
        .join("repo/data")
        .join(&loc.pack.to_hex()[..2])
        .join(loc.pack.to_hex());
    let mut bytes = fs::read(&pack_path).unwrap();
    bytes[loc.entry.offset as usize + 100] ^= 0x01;
    fs::write(&pack_path, &bytes).unwrap();
    drop(repo);

    let repo = open_repo(d.path(), b"pw").unwrap();
    let report = repo
        .repair_index(&repo_core::RepairIndexOptions { read_data: true })
        .unwrap();
    assert_eq!(report.blobs_lost, vec![victim], "{report:?}");
    assert_eq!(report.packs_salvaged, vec![loc.pack]);
    assert!(!pack_path.exists(), "the damaged pack stays in place");
    let fixed = repo.repair_snapshots().unwrap();
    assert_eq!(fixed.rewritten.len(), 1);
    assert_eq!(fixed.damaged.len(), 1);
    assert!(
        fixed.damaged[0].path.ends_with("/f3.bin"),
        "{:?}",
        fixed.damaged
    );

    let repo = open_repo(d.path(), b"pw").unwrap();
    let snaps = repo.snapshots().unwrap();
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0].snapshot.tags.contains(&REPAIRED_TAG.to_string()));
    assert_eq!(snaps[0].snapshot.parent, Some(snap.id));
    let out = d.path().join("out");
    repo.restore(&snaps[0]).to(&out).run().unwrap();
    let root = out.join(src.strip_prefix("/").unwrap());
    assert_eq!(compare(&src, &root, Some(Path::new("f3.bin"))), 6);
    assert_eq!(fs::metadata(root.join("f3.bin")).unwrap().len(), 0);
    let node = repo
        .find_node(&snaps[0].snapshot.tree, format!("{}/f3.bin", src.display()))
        .unwrap();
    assert!(node.xattrs.iter().any(|x| x.name == DAMAGED_XATTR));
    assert!(repo.index().lookup(&victim).unwrap().is_none());
}
