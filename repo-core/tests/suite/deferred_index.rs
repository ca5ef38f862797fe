//! Issue 14, "a nothing-changed backup makes a handful of requests": a
//! handle opened for a backup or a copy (`OpenOptions::defer_index`) lists
//! the index files once, after the heartbeat (SPEC §22), not also at open;
//! and what it then stores still deduplicates against the whole index.

use std::fs;
use std::sync::{Arc, Mutex};

use cairn_testkit::PASSWORD;
use cairn_testkit::backend::{Call, Hooked};
use cairn_testkit::repo::init_options;
use repo_core::{InitOptions, LocalBackend, OpenOptions, ParentChoice, Repository};

use super::random_bytes;

/// What was listed and written, in order, as `list KIND` / `write KIND`.
type Log = Arc<Mutex<Vec<String>>>;

fn open(repo: &std::path::Path, cache: &std::path::Path, defer: bool, log: &Log) -> Repository {
    let log = Arc::clone(log);
    Repository::open(
        Hooked::new(LocalBackend::open(repo)).after(move |c| {
            let line = match c {
                Call::List(k) => format!("list {k}"),
                Call::Write(k, _, _) => format!("write {k}"),
                _ => return,
            };
            log.lock().unwrap().push(line);
        }),
        PASSWORD,
        OpenOptions {
            cache_dir: Some(cache.to_path_buf()),
            defer_index: defer,
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn a_backup_on_a_deferred_open_lists_the_index_once_after_its_heartbeat() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), random_bytes(300_000, 7)).unwrap();
    let (repo_dir, cache) = (d.path().join("repo"), d.path().join("cache"));
    Repository::init(
        LocalBackend::create(&repo_dir).unwrap(),
        PASSWORD,
        InitOptions {
            cache_dir: Some(cache.clone()),
            ..init_options()
        },
    )
    .unwrap()
    .backup()
    .path(&src)
    .run()
    .unwrap();

    let index_lists = |log: &Log| {
        let l = log.lock().unwrap();
        l.iter().filter(|s| *s == "list index").count()
    };
    let log: Log = Arc::default();
    let repo = open(&repo_dir, &cache, false, &log);
    repo.backup().path(&src).run().unwrap();
    assert_eq!(index_lists(&log), 2, "an ordinary open lists it too");

    // A new file in another cache: the index must come from the storage.
    fs::write(src.join("g"), random_bytes(300_000, 8)).unwrap();
    let other_cache = d.path().join("cache2");
    let log: Log = Arc::default();
    let repo = open(&repo_dir, &other_cache, true, &log);
    // No parent: every file is read and chunked, and each chunk looked up.
    let out = repo
        .backup()
        .parent(ParentChoice::None)
        .path(&src)
        .run()
        .unwrap();
    let l = log.lock().unwrap().clone();
    assert_eq!(index_lists(&log), 1, "{l:?}");
    let heartbeat = l.iter().position(|s| s == "write lock").unwrap();
    let listed = l.iter().position(|s| s == "list index").unwrap();
    assert!(
        heartbeat < listed,
        "the index is read after the heartbeat: {l:?}"
    );
    // `f` was deduplicated against the index read after the heartbeat:
    // only `g` (and trees) were stored.
    let s = &out.snapshot.snapshot.summary;
    assert!(
        s.bytes_added < 300_000 + 100_000,
        "f was stored again: {s:?}"
    );
}
