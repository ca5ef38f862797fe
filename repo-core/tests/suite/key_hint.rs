//! Issue 14, "a nothing-changed backup makes a handful of requests": the
//! key file that opened a repository is remembered in its cache directory
//! (SPEC §14), so the next open reads it without listing `keys/`; a hint
//! that no longer fits (the key removed, another password) costs only the
//! listing, and a wrong password is still refused.

use std::sync::{Arc, Mutex};

use cairn_testkit::PASSWORD;
use cairn_testkit::backend::{Call, Hooked};
use cairn_testkit::repo::init_options;
use repo_core::{Error, InitOptions, KeyId, LocalBackend, OpenOptions, Repository};

type Log = Arc<Mutex<Vec<String>>>;

fn open(
    repo: &std::path::Path,
    cache: &std::path::Path,
    password: &[u8],
    log: &Log,
) -> repo_core::Result<Repository> {
    open_with(
        repo,
        password,
        log,
        OpenOptions {
            cache_dir: Some(cache.to_path_buf()),
            ..Default::default()
        },
    )
}

/// Opens `repo` with `opts`, logging listings and reads into `log`.
fn open_with(
    repo: &std::path::Path,
    password: &[u8],
    log: &Log,
    opts: OpenOptions,
) -> repo_core::Result<Repository> {
    let log = Arc::clone(log);
    Repository::open(
        Hooked::new(LocalBackend::open(repo)).after(move |c| {
            let line = match c {
                Call::List(k) => format!("list {k}"),
                Call::Read(k, _) => format!("read {k}"),
                _ => return,
            };
            log.lock().unwrap().push(line);
        }),
        password,
        opts,
    )
}

/// A new repository at `dir` (cache `cache`) with two keys: `PASSWORD`'s,
/// then "another password"'s.
fn two_keys(dir: &std::path::Path, cache: &std::path::Path) -> (KeyId, KeyId) {
    let repo = Repository::init(
        LocalBackend::create(dir).unwrap(),
        PASSWORD,
        InitOptions {
            cache_dir: Some(cache.to_path_buf()),
            ..init_options()
        },
    )
    .unwrap();
    let second = repo
        .add_key(b"another password", cairn_testkit::WEAK_KDF)
        .unwrap();
    (repo.key_id(), second)
}

fn key_listings(log: &Log) -> usize {
    let l = log.lock().unwrap();
    l.iter().filter(|s| s.as_str() == "list key").count()
}

#[test]
fn the_last_key_is_read_without_listing_and_a_stale_hint_falls_back() {
    let d = tempfile::tempdir().unwrap();
    let (dir, cache) = (d.path().join("repo"), d.path().join("cache"));
    let (first, second) = two_keys(&dir, &cache);

    // The first open here lists the keys and remembers the one it used;
    // the next reads only that one.
    let log: Log = Arc::default();
    assert_eq!(open(&dir, &cache, PASSWORD, &log).unwrap().key_id(), first);
    assert_eq!(key_listings(&log), 1);
    let log: Log = Arc::default();
    assert_eq!(open(&dir, &cache, PASSWORD, &log).unwrap().key_id(), first);
    let l = log.lock().unwrap().clone();
    assert_eq!(key_listings(&log), 0, "{l:?}");
    assert_eq!(l.iter().filter(|s| *s == "read key").count(), 1, "{l:?}");

    // Another password: the hinted key does not open, the listing finds
    // the other, which is remembered from then on.
    let log: Log = Arc::default();
    let r = open(&dir, &cache, b"another password", &log).unwrap();
    assert_eq!(r.key_id(), second);
    assert_eq!(key_listings(&log), 1);
    drop(r);
    let log: Log = Arc::default();
    assert_eq!(
        open(&dir, &cache, b"another password", &log)
            .unwrap()
            .key_id(),
        second
    );
    assert_eq!(key_listings(&log), 0);

    // A wrong password is refused, hint or not.
    let log: Log = Arc::default();
    assert!(matches!(
        open(&dir, &cache, b"wrong", &log),
        Err(Error::WrongPassword)
    ));

    // The remembered key removed: the listing finds the one left.
    let r = open(&dir, &cache, PASSWORD, &Log::default()).unwrap();
    r.remove_key(&second).unwrap();
    drop(r);
    let log: Log = Arc::default();
    assert!(matches!(
        open(&dir, &cache, b"another password", &log),
        Err(Error::WrongPassword)
    ));
    assert_eq!(key_listings(&log), 1);
    assert_eq!(open(&dir, &cache, PASSWORD, &log).unwrap().key_id(), first);
}

/// `key_from_cache` (a backup's or copy's open, SPEC §14): an open keeps a
/// copy of the key file it used in the cache directory and the next one
/// unlocks that copy, reading no key file; the handle's first index
/// listing lists `keys/` with it and confirms the key is still there. A
/// removed key then fails before the index is read, and its copy and hint
/// are dropped, so the open after that searches the key files again.
#[test]
fn a_cached_key_copy_opens_without_a_read_and_a_removed_key_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (dir, cache) = (d.path().join("repo"), d.path().join("cache"));
    let src = d.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"some data to back up").unwrap();
    let (first, second) = two_keys(&dir, &cache);
    let elsewhere = d.path().join("another machine's cache");
    let cached_in = |cache: &std::path::Path, password: &[u8], defer_index: bool, log: &Log| {
        open_with(
            &dir,
            password,
            log,
            OpenOptions {
                cache_dir: Some(cache.to_path_buf()),
                key_from_cache: true,
                defer_index,
                ..Default::default()
            },
        )
    };
    let cached = |password: &[u8], defer_index: bool, log: &Log| {
        cached_in(&cache, password, defer_index, log)
    };
    let key_reads = |log: &Log| {
        let l = log.lock().unwrap();
        l.iter().filter(|s| s.as_str() == "read key").count()
    };

    // The first open searches (and keeps a copy of the key it found); from
    // then on no key file is read.
    let log: Log = Arc::default();
    assert_eq!(cached(PASSWORD, false, &log).unwrap().key_id(), first);
    assert_eq!(key_listings(&log), 1);
    let log: Log = Arc::default();
    let r = cached(PASSWORD, true, &log).unwrap();
    assert_eq!(r.key_id(), first);
    assert_eq!(key_reads(&log), 0, "{:?}", log.lock().unwrap());
    assert_eq!(key_listings(&log), 0, "{:?}", log.lock().unwrap());
    // The backup's first walk lists `keys/` with the index and confirms.
    r.backup().path(&src).run().unwrap();
    assert_eq!(key_listings(&log), 1, "{:?}", log.lock().unwrap());
    drop(r);
    // An open that reads the index itself confirms there.
    let log: Log = Arc::default();
    cached(PASSWORD, false, &log).unwrap();
    assert_eq!((key_reads(&log), key_listings(&log)), (0, 1));

    // The key removed from another machine (through the other key): the
    // copy here still unlocks, but the first listing refuses it, before
    // any snapshot is written.
    let other = cached_in(&elsewhere, b"another password", false, &Log::default()).unwrap();
    assert_eq!(other.key_id(), second);
    other.remove_key(&first).unwrap();
    let before = other.snapshots().unwrap().len();
    drop(other);
    let r = cached(PASSWORD, true, &Log::default()).unwrap();
    let e = r.backup().path(&src).run().unwrap_err();
    assert!(matches!(e, Error::CachedKeyGone(k) if k == first), "{e}");
    drop(r);
    let r = cached(PASSWORD, false, &Log::default());
    assert!(
        matches!(r, Err(Error::WrongPassword)),
        "copy and hint dropped"
    );
    let other = cached_in(&elsewhere, b"another password", false, &Log::default()).unwrap();
    assert_eq!(other.snapshots().unwrap().len(), before);
    assert!(
        !cache
            .join(other.id().to_hex())
            .join(format!("key-{}", first.to_hex()))
            .exists()
    );
}
