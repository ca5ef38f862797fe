//! Restoring into a target that is not empty, or that others can reach
//! (issue 12 items 6 and 7, issue 11 item 7; SPEC §16).

use repo_core::unstable::RepositoryInternals as _;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use filetime::FileTime;
use repo_core::{ObjectKind, Overwrite};

use super::{init_repo, open_repo, random_bytes};

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn set_mtime(p: &Path, secs: i64) {
    let t = FileTime::from_unix_time(secs, 0);
    filetime::set_file_times(p, t, t).unwrap();
}

/// Snapshot A has `d -> OUTSIDE`; restoring it and then snapshot B, where
/// `d` is a directory holding `x`, into the same target replaces the
/// symlink: nothing is written below OUTSIDE and its mode stays.
#[test]
fn a_symlink_left_in_the_target_is_replaced_never_followed() {
    let d = tempfile::tempdir().unwrap();
    let outside = d.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o751)).unwrap();
    let src = d.path().join("src");
    fs::create_dir(&src).unwrap();
    symlink(&outside, src.join("d")).unwrap();
    let repo = init_repo(d.path());
    let a = repo.backup().path(&src).run().unwrap().snapshot;

    fs::remove_file(src.join("d")).unwrap();
    fs::create_dir(src.join("d")).unwrap();
    fs::write(src.join("d/x"), b"from B").unwrap();
    fs::set_permissions(src.join("d/x"), fs::Permissions::from_mode(0o604)).unwrap();
    fs::set_permissions(src.join("d"), fs::Permissions::from_mode(0o777)).unwrap();
    let b = repo.backup().path(&src).run().unwrap().snapshot;

    let t = d.path().join("target");
    let base = t.join(src.strip_prefix("/").unwrap());
    repo.restore(&a).to(&t).run().unwrap();
    assert_eq!(fs::read_link(base.join("d")).unwrap(), outside);

    let sum = repo.restore(&b).to(&t).run().unwrap();
    assert!(sum.warnings.is_empty(), "{:?}", sum.warnings);
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "wrote outside");
    assert_eq!(mode(&outside), 0o751, "chmod went through the symlink");
    assert!(fs::symlink_metadata(base.join("d")).unwrap().is_dir());
    assert_eq!(fs::read(base.join("d/x")).unwrap(), b"from B");
    assert_eq!(mode(&base.join("d")), 0o777);
    assert_eq!(mode(&base.join("d/x")), 0o604);

    // With --overwrite never the symlink stays, still unfollowed, and
    // what would go below it is reported, not written.
    let t2 = d.path().join("target2");
    repo.restore(&a).to(&t2).run().unwrap();
    let sum = repo
        .restore(&b)
        .to(&t2)
        .overwrite(Overwrite::Never)
        .run()
        .unwrap();
    let base2 = t2.join(src.strip_prefix("/").unwrap());
    assert_eq!(fs::read_link(base2.join("d")).unwrap(), outside);
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "wrote outside");
    assert_eq!(mode(&outside), 0o751);
    assert_eq!(sum.skipped, 1);
    assert!(sum.warnings.iter().any(|w| matches!(
        w,
        repo_core::Warning::NotRestored { path, reason }
            if path.ends_with("d") && reason.contains("not a directory")
    )));
}

/// `--overwrite always|if-changed|never` on a target that holds files.
#[test]
fn overwrite_modes_decide_what_happens_to_existing_files() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("same"), b"snapshot").unwrap();
    fs::write(src.join("newer"), b"snapshot").unwrap();
    set_mtime(&src.join("same"), 1_600_000_000);
    set_mtime(&src.join("newer"), 1_600_000_000);
    symlink("somewhere", src.join("link")).unwrap();
    let repo = init_repo(d.path());
    let snap = repo.backup().path(&src).run().unwrap().snapshot;

    // The target holds the same names: `same` with the recorded size and
    // mtime but other bytes, `newer` with another mtime, `link` a file.
    let prepare = |t: &Path| {
        let base = t.join(src.strip_prefix("/").unwrap());
        fs::create_dir_all(&base).unwrap();
        fs::write(base.join("same"), b"SNAPSHOT").unwrap();
        set_mtime(&base.join("same"), 1_600_000_000);
        fs::write(base.join("newer"), b"SNAPSHOT").unwrap();
        set_mtime(&base.join("newer"), 1_700_000_000);
        fs::write(base.join("link"), b"a file").unwrap();
        base
    };
    let run = |name: &str, mode: Overwrite| {
        let t = d.path().join(name);
        let base = prepare(&t);
        let sum = repo.restore(&snap).to(&t).overwrite(mode).run().unwrap();
        let read = |n: &str| fs::read(base.join(n)).unwrap();
        (sum, read("same"), read("newer"), base)
    };

    let (sum, same, newer, base) = run("always", Overwrite::Always);
    assert_eq!(
        (same.as_slice(), newer.as_slice()),
        (&b"snapshot"[..], &b"snapshot"[..])
    );
    assert_eq!(
        fs::read_link(base.join("link")).unwrap(),
        Path::new("somewhere")
    );
    assert_eq!((sum.files, sum.others, sum.skipped), (2, 1, 0));

    let (sum, same, newer, base) = run("if-changed", Overwrite::IfChanged);
    assert_eq!(same, b"SNAPSHOT", "size and mtime match: kept");
    assert_eq!(newer, b"snapshot");
    assert_eq!(
        fs::read_link(base.join("link")).unwrap(),
        Path::new("somewhere")
    );
    assert_eq!((sum.files, sum.others, sum.skipped), (1, 1, 1));
    assert_eq!(sum.bytes_restored, 8);

    let (sum, same, newer, base) = run("never", Overwrite::Never);
    assert_eq!(
        (same.as_slice(), newer.as_slice()),
        (&b"SNAPSHOT"[..], &b"SNAPSHOT"[..])
    );
    assert_eq!(fs::read(base.join("link")).unwrap(), b"a file");
    assert_eq!((sum.files, sum.others, sum.skipped), (0, 0, 3));
    assert_eq!(sum.bytes_restored, 0);
}

/// Directories are created 0700 and get their recorded modes only when
/// everything below them is restored: a restore that fails partway leaves
/// nothing readable by others, a complete one leaves the recorded modes.
#[test]
fn directories_stay_private_until_the_restore_completes() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(src.join("open/sub")).unwrap();
    fs::write(src.join("open/sub/file"), random_bytes(100_000, 7)).unwrap();
    fs::set_permissions(src.join("open/sub/file"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(src.join("open/sub"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(src.join("open"), fs::Permissions::from_mode(0o750)).unwrap();
    let repo = init_repo(d.path());
    let snap = repo.backup().path(&src).run().unwrap().snapshot;

    let t = d.path().join("complete");
    repo.restore(&snap).to(&t).run().unwrap();
    let base = t.join(src.strip_prefix("/").unwrap());
    assert_eq!(mode(&base.join("open")), 0o750);
    assert_eq!(mode(&base.join("open/sub")), 0o755);
    assert_eq!(mode(&base.join("open/sub/file")), 0o644);
    assert_eq!(mode(&t), 0o700, "a target restore creates is the owner's");

    // Lose the file's pack (not the trees'): the restore fails after the
    // directories exist.
    let node = repo
        .find_node(
            &snap.snapshot.tree,
            format!("{}/open/sub/file", src.display()),
        )
        .unwrap();
    let data_pack = repo.locate(&node.content[0]).unwrap().pack;
    let tree_pack = repo.locate(&snap.snapshot.tree.into()).unwrap().pack;
    assert_ne!(data_pack, tree_pack);
    repo.backend()
        .delete(ObjectKind::Pack, &data_pack.to_hex())
        .unwrap();
    drop(repo);
    let repo = open_repo(d.path(), b"pw").unwrap();
    let t = d.path().join("interrupted");
    assert!(repo.restore(&snap).to(&t).run().is_err());
    let base = t.join(src.strip_prefix("/").unwrap());
    assert!(base.join("open/sub").is_dir());
    for p in [&t, &base, &base.join("open"), &base.join("open/sub")] {
        assert_eq!(mode(p), 0o700, "{}", p.display());
    }
    if let Ok(m) = fs::symlink_metadata(base.join("open/sub/file")) {
        assert_eq!(m.mode() & 0o777, 0o600);
    }
}

/// The summary counts the apparent size of what it restores, holes
/// included, as backup's `bytes_read` does (issue 11 item 7).
#[test]
fn restored_bytes_are_the_apparent_size_of_sparse_files() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir(&src).unwrap();
    let f = fs::File::create(src.join("sparse")).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&random_bytes(1 << 20, 1), 0).unwrap();
    f.set_len(33 << 20).unwrap();
    drop(f);
    fs::write(src.join("small"), b"12345").unwrap();
    let repo = init_repo(d.path());
    let out = repo.backup().path(&src).run().unwrap();
    let read = out.snapshot.snapshot.summary.bytes_read;
    let t = d.path().join("r");
    let sum = repo.restore(&out.snapshot).to(&t).run().unwrap();
    assert_eq!(sum.bytes_restored, (33 << 20) + 5);
    assert_eq!(sum.bytes_restored, read);
    let m = fs::metadata(t.join(src.strip_prefix("/").unwrap()).join("sparse")).unwrap();
    assert!(m.blocks() * 512 < 8 << 20, "restored sparse");
}
