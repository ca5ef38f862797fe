//! Snapshot selection, excludes and cache-directory tags (issue 2).

use std::fs;

use repo_core::{Error, ParentChoice, SnapshotFilter};

use super::init_repo;

#[test]
fn latest_prefix_and_filters() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"1").unwrap();
    let repo = init_repo(d.path());
    let a = repo
        .backup()
        .path(&src)
        .host("alpha")
        .tag("daily")
        .time_ns(1_000)
        .run()
        .unwrap()
        .snapshot;
    let b = repo
        .backup()
        .path(&src)
        .host("beta")
        .time_ns(2_000)
        .run()
        .unwrap()
        .snapshot;
    let all = SnapshotFilter::default();
    assert_eq!(repo.find_snapshot("latest", &all).unwrap().id, b.id);
    let alpha = SnapshotFilter {
        host: Some("alpha".into()),
        ..Default::default()
    };
    assert_eq!(repo.find_snapshot("latest", &alpha).unwrap().id, a.id);
    let daily = SnapshotFilter {
        tags: vec!["daily".into()],
        ..Default::default()
    };
    assert_eq!(repo.find_snapshot("latest", &daily).unwrap().id, a.id);
    assert_eq!(repo.find_snapshot(&a.id.to_hex(), &all).unwrap().id, a.id);
    assert_eq!(
        repo.find_snapshot(&b.id.to_hex()[..8], &all).unwrap().id,
        b.id
    );
    assert!(matches!(
        repo.find_snapshot("", &all),
        Err(Error::SnapshotNotFound(_))
    ));
    assert!(matches!(
        repo.find_snapshot("zz", &all),
        Err(Error::SnapshotNotFound(_))
    ));
    let none = SnapshotFilter {
        host: Some("gamma".into()),
        ..Default::default()
    };
    assert!(matches!(
        repo.find_snapshot("latest", &none),
        Err(Error::SnapshotNotFound(_))
    ));
    // Parent is per host: beta's first backup had none, alpha's second has alpha's first.
    assert_eq!(b.snapshot.parent, None);
    let a2 = repo
        .backup()
        .path(&src)
        .host("alpha")
        .run()
        .unwrap()
        .snapshot;
    assert_eq!(a2.snapshot.parent, Some(a.id));
    let forced = repo
        .backup()
        .path(&src)
        .host("alpha")
        .parent(ParentChoice::None)
        .run()
        .unwrap()
        .snapshot;
    assert_eq!(forced.snapshot.parent, None);
    assert_eq!(forced.snapshot.summary.files_new, 1);
}

#[test]
fn ambiguous_prefix_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    // 17 snapshots make two share a first hex digit (pigeonhole).
    for i in 0..17 {
        repo.backup()
            .stream("s", &b"x"[..])
            .time_ns(i)
            .run()
            .unwrap();
    }
    let ids: Vec<String> = repo
        .snapshots()
        .unwrap()
        .iter()
        .map(|s| s.id.to_hex())
        .collect();
    let digit = (0..16)
        .map(|i| format!("{i:x}"))
        .find(|c| ids.iter().filter(|id| id.starts_with(c.as_str())).count() > 1)
        .unwrap();
    assert!(matches!(
        repo.find_snapshot(&digit, &SnapshotFilter::default()),
        Err(Error::AmbiguousSnapshot(_))
    ));
}

#[test]
fn excludes_and_cachedir_tags() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(src.join("build/obj")).unwrap();
    fs::create_dir_all(src.join("cache")).unwrap();
    fs::create_dir_all(src.join("keep")).unwrap();
    fs::write(src.join("keep/a.txt"), b"a").unwrap();
    fs::write(src.join("keep/b.tmp"), b"b").unwrap();
    fs::write(src.join("build/obj/x.o"), b"o").unwrap();
    fs::write(
        src.join("cache/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n# tag\n",
    )
    .unwrap();
    fs::write(src.join("cache/blob"), b"cached").unwrap();
    let repo = init_repo(d.path());
    let snap = repo
        .backup()
        .path(&src)
        .exclude("*.tmp")
        .exclude(format!("{}/build", src.display()))
        .exclude_caches(true)
        .run()
        .unwrap()
        .snapshot;
    let mut paths = Vec::new();
    repo.walk(&snap.snapshot.tree, &mut |p, _| {
        paths.push(String::from_utf8_lossy(p).into_owned());
        Ok(true)
    })
    .unwrap();
    let has = |suffix: &str| paths.iter().any(|p| p.ends_with(suffix));
    assert!(has("/keep/a.txt"));
    assert!(!has("/keep/b.tmp"), "{paths:?}");
    assert!(!has("/build"), "{paths:?}");
    assert!(has("/cache/CACHEDIR.TAG"));
    assert!(!has("/cache/blob"), "{paths:?}");
    assert!(matches!(
        repo.backup().path(&src).exclude("[").run(),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn missing_source_is_an_error_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let err = repo
        .backup()
        .path(d.path().join("does-not-exist"))
        .run()
        .unwrap_err();
    assert!(matches!(err, Error::Source { .. }), "{err:?}");
    assert!(err.to_string().contains("does-not-exist"));
    assert!(repo.snapshots().unwrap().is_empty());
}
