//! One pattern dialect (issue 13): the same patterns drive backup excludes,
//! restore includes and excludes, and find, and select the same files. The
//! bug this pins: `restore --exclude '/src/*.conf'` also dropped
//! `/src/sub/b.conf` (its `*` crossed `/`) while backup kept it.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use walkdir::WalkDir;

use super::init_repo;

const FILES: &[&str] = &[
    "etc/a.conf",
    "etc/sub/b.conf",
    "etc/c.txt",
    "log/x.gz",
    "var/log/y.gz",
    "var/log/keep.txt",
];

/// Files below `root`, as paths relative to it.
fn files_below(root: &Path) -> BTreeSet<String> {
    if !root.exists() {
        return BTreeSet::new();
    }
    WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            e.path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn backup_restore_and_find_select_the_same_files() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    for f in FILES {
        let p = src.join(f);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, f.as_bytes()).unwrap();
    }
    let all: BTreeSet<String> = FILES.iter().map(|s| s.to_string()).collect();
    let repo = init_repo(d.path());
    let full = repo.backup().path(&src).run().unwrap().snapshot;
    let s = src.display().to_string();

    // (pattern, the files it selects: the file or one of its directories matches)
    let cases: Vec<(String, &[&str])> = vec![
        ("*.conf".into(), &["etc/a.conf", "etc/sub/b.conf"]),
        (format!("{s}/etc/*.conf"), &["etc/a.conf"]),
        (
            format!("{s}/etc/*"),
            &["etc/a.conf", "etc/c.txt", "etc/sub/b.conf"],
        ),
        ("log/*.gz".into(), &["log/x.gz", "var/log/y.gz"]),
        ("sub".into(), &["etc/sub/b.conf"]),
        (format!("{s}/**/*.gz"), &["log/x.gz", "var/log/y.gz"]),
        ("etc/*.txt".into(), &["etc/c.txt"]),
        ("nothing*".into(), &[]),
    ];
    for (i, (pattern, expected)) in cases.iter().enumerate() {
        let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        let kept: BTreeSet<String> = all.difference(&expected).cloned().collect();

        // find: an entry matching selects itself and everything below it.
        let matched: Vec<String> = repo
            .find(pattern, std::slice::from_ref(&full))
            .unwrap()
            .iter()
            .map(|m| {
                let p = String::from_utf8(m.path.clone()).unwrap();
                p.strip_prefix(&format!("{s}/")).unwrap().to_string()
            })
            .collect();
        let found: BTreeSet<String> = all
            .iter()
            .filter(|f| {
                matched
                    .iter()
                    .any(|m| *f == m || f.starts_with(&format!("{m}/")))
            })
            .cloned()
            .collect();
        assert_eq!(found, expected, "find {pattern:?}");

        // backup --exclude keeps exactly the rest.
        let excluded = repo
            .backup()
            .path(&src)
            .exclude(pattern.clone())
            .run()
            .unwrap()
            .snapshot;
        let out = d.path().join(format!("backup-{i}"));
        repo.restore(&excluded).to(&out).run().unwrap();
        let rel = |o: &Path| o.join(src.strip_prefix("/").unwrap());
        assert_eq!(
            files_below(&rel(&out)),
            kept,
            "backup --exclude {pattern:?}"
        );

        // restore --exclude of the full snapshot keeps the same files.
        let out = d.path().join(format!("exclude-{i}"));
        repo.restore(&full)
            .to(&out)
            .exclude(pattern.clone())
            .run()
            .unwrap();
        assert_eq!(
            files_below(&rel(&out)),
            kept,
            "restore --exclude {pattern:?}"
        );

        // restore --include restores exactly what find matched.
        let out = d.path().join(format!("include-{i}"));
        repo.restore(&full)
            .to(&out)
            .include(pattern.clone())
            .run()
            .unwrap();
        assert_eq!(
            files_below(&rel(&out)),
            expected,
            "restore --include {pattern:?}"
        );
    }
}
