//! Repositories made by earlier versions: files 0644, directories 0755 and
//! pack directories created on demand (issue 12 items 14 and 15).

use std::fs;
use std::os::unix::fs::PermissionsExt;

use repo_core::SnapshotFilter;
use repo_core::unstable::check::CheckOptions;

use super::{init_repo, open_repo, random_bytes};

#[test]
fn a_repository_with_the_old_modes_and_layout_keeps_working() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), random_bytes(300_000, 1)).unwrap();
    let repo = init_repo(d.path());
    repo.backup().path(&src).run().unwrap();
    drop(repo);

    // Make it look old: umask modes, and only the pack directories in use.
    let root = d.path().join("repo");
    for e in walkdir::WalkDir::new(&root) {
        let e = e.unwrap();
        let mode = if e.file_type().is_dir() { 0o755 } else { 0o644 };
        fs::set_permissions(e.path(), fs::Permissions::from_mode(mode)).unwrap();
    }
    for e in fs::read_dir(root.join("data")).unwrap() {
        let _ = fs::remove_dir(e.unwrap().path()); // only empty ones go
    }
    let before = fs::read_dir(root.join("data")).unwrap().count();
    assert!(before < 256);

    fs::write(src.join("b"), random_bytes(300_000, 2)).unwrap();
    let repo = open_repo(d.path(), b"pw").unwrap();
    let snap = repo.backup().path(&src).run().unwrap().snapshot;
    let t = d.path().join("r");
    repo.restore(&snap).to(&t).run().unwrap();
    let base = t.join(src.strip_prefix("/").unwrap());
    assert_eq!(fs::read(base.join("b")).unwrap(), random_bytes(300_000, 2));
    let report = repo.check(&CheckOptions::default()).run().unwrap();
    assert!(report.ok, "{:?}", report.errors);
    assert_eq!(repo.snapshots().unwrap().len(), 2);
    assert!(
        repo.find_snapshot("latest", &SnapshotFilter::default())
            .is_ok()
    );
}
