//! Issue 14, "Speed on a network": up to `connections` pack transfers in
//! flight (never more), a failed upload among several in flight fails the
//! backup cleanly, and the request counts a nothing-changed backup makes.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cairn_testkit::PASSWORD;
use cairn_testkit::backend::{Call, Hooked};
use cairn_testkit::repo::init_options;
use repo_core::{
    Backend, BackendError, InitOptions, LocalBackend, MemoryBackend, ObjectKind, OpenOptions,
    Repository,
};

use super::{check_all, random_bytes};

/// Pack transfers running now, and the most seen at once. Each transfer
/// lingers until `target` have been in flight together (or two seconds
/// passed), so the count does not depend on how fast the machine seals or
/// opens blobs: an engine that allows fewer never gets there, one that
/// allows more overshoots.
struct Gauge {
    target: usize,
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Gauge {
    fn new(target: usize) -> Arc<Self> {
        Arc::new(Self {
            target,
            now: AtomicUsize::new(0),
            max: AtomicUsize::new(0),
        })
    }

    /// Counts one transfer while it lingers.
    fn transfer(&self) {
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.max.fetch_max(n, SeqCst);
        let start = Instant::now();
        while self.max.load(SeqCst) < self.target && start.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(2));
        }
        // Long enough for a transfer the engine should not start to begin.
        std::thread::sleep(Duration::from_millis(20));
        self.now.fetch_sub(1, SeqCst);
    }
}

/// A memory backend whose pack calls `is_transfer` picks go through `gauge`.
fn gauged(
    mem: &MemoryBackend,
    gauge: &Arc<Gauge>,
    is_transfer: fn(&Call<'_>) -> bool,
) -> Hooked<MemoryBackend> {
    let g = Arc::clone(gauge);
    Hooked::new(mem.clone()).remote().before(move |c| {
        if is_transfer(c) {
            g.transfer();
        }
        Ok(())
    })
}

fn pack_write(c: &Call<'_>) -> bool {
    matches!(c, Call::Write(ObjectKind::Pack, ..))
}

/// A read of a whole pack or of a chunk: the sources' chunks are about
/// 1 MiB; trees and pack headers, read one at a time, are far smaller and
/// would only make the gauge wait.
fn pack_read(c: &Call<'_>) -> bool {
    match *c {
        Call::Read(ObjectKind::Pack, _) => true,
        Call::ReadRange(ObjectKind::Pack, _, _, len) => len >= 100_000,
        _ => false,
    }
}

/// 12 MiB of incompressible files: with 1 MiB packs, a dozen data packs.
fn source(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..12u64 {
        fs::write(
            src.join(format!("f{i:02}.bin")),
            random_bytes(1 << 20, 100 + i),
        )
        .unwrap();
    }
    src
}

/// A backup keeps exactly `connections` pack writes in flight (each takes
/// a while, so the packer would start more if it were allowed to), and one
/// with a single connection never overlaps two.
/// A memory repository holding one backup of `src`.
fn backed_up(src: &Path) -> MemoryBackend {
    let mem = MemoryBackend::new();
    Repository::init(mem.clone(), PASSWORD, init_options())
        .unwrap()
        .backup()
        .path(src)
        .run()
        .unwrap();
    mem
}

#[test]
fn backup_keeps_up_to_connections_pack_writes_in_flight() {
    let d = tempfile::tempdir().unwrap();
    let src = source(d.path());
    for n in [1, 4] {
        let mem = MemoryBackend::new();
        let gauge = Gauge::new(n);
        let mut repo =
            Repository::init(gauged(&mem, &gauge, pack_write), PASSWORD, init_options()).unwrap();
        repo.set_connections(n);
        assert_eq!(repo.connections(), n);
        repo.backup().path(&src).run().unwrap();
        assert_eq!(gauge.max.load(SeqCst), n, "pack writes in flight at once");
        assert!(mem.list(ObjectKind::Pack).unwrap().len() >= 8);
        assert!(check_all(&repo).is_ok());
    }
}

/// Restore and `check --read-data` read packs with exactly `connections`
/// requests in flight: more than the cores of a small machine when asked
/// for, never more than asked for.
#[test]
fn restore_and_check_read_with_up_to_connections_in_flight() {
    let d = tempfile::tempdir().unwrap();
    let src = source(d.path());
    let mem = backed_up(&src);
    for n in [1, 4] {
        let gauge = Gauge::new(n);
        let mut repo = Repository::open(
            gauged(&mem, &gauge, pack_read),
            PASSWORD,
            OpenOptions::default(),
        )
        .unwrap();
        repo.set_connections(n);
        let snap = repo.snapshots().unwrap().pop().unwrap();
        let out = d.path().join(format!("restore{n}"));
        repo.restore(&snap).to(&out).run().unwrap();
        assert_eq!(gauge.max.load(SeqCst), n, "restore reads in flight at once");
        let got = out.join(src.strip_prefix("/").unwrap());
        for i in [0u64, 11] {
            let name = format!("f{i:02}.bin");
            assert_eq!(
                fs::read(got.join(&name)).unwrap(),
                random_bytes(1 << 20, 100 + i)
            );
        }

        gauge.max.store(0, SeqCst);
        let report = check_all(&repo);
        assert!(report.is_ok(), "{report}");
        assert_eq!(gauge.max.load(SeqCst), n, "check reads in flight at once");
    }
}

/// On local storage the reads stay on the ordinary pool (as many threads
/// as cores): more threads than cores would only compete for them. The
/// connection limit still caps the reads in flight.
#[test]
fn local_storage_reads_on_the_ordinary_pool() {
    let d = tempfile::tempdir().unwrap();
    let src = source(d.path());
    let mem = backed_up(&src);
    // The 12 files are read in parallel: at most 12 reads at once.
    let cores = rayon::current_num_threads();
    let want = cores.min(12);
    let gauge = Gauge::new(want);
    let g = Arc::clone(&gauge);
    let local = Hooked::new(mem.clone()).before(move |c| {
        if pack_read(c) {
            g.transfer();
        }
        Ok(())
    });
    let mut repo = Repository::open(local, PASSWORD, OpenOptions::default()).unwrap();
    repo.set_connections(64);
    let snap = repo.snapshots().unwrap().pop().unwrap();
    repo.restore(&snap).to(d.path().join("out")).run().unwrap();
    assert_eq!(
        gauge.max.load(SeqCst),
        want,
        "reads in flight on {cores} cores"
    );
}

/// The third of several pack writes in flight fails: the backup fails
/// with that error, writes no snapshot, and leaves a repository that check
/// passes (the packs written stay, as after a crash); a rerun completes.
#[test]
fn failed_write_among_several_in_flight_leaves_no_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let src = source(d.path());
    let mem = MemoryBackend::new();
    let writes = Arc::new(AtomicUsize::new(0));
    let gauge = Gauge::new(4);
    let (w, g) = (Arc::clone(&writes), Arc::clone(&gauge));
    let hooked = Hooked::new(mem.clone()).before(move |c| {
        if let Call::Write(ObjectKind::Pack, name, _) = c {
            g.transfer();
            if w.fetch_add(1, SeqCst) == 2 {
                return Err(BackendError::io(
                    "write",
                    ObjectKind::Pack,
                    name,
                    io::Error::other("injected: connection reset"),
                ));
            }
        }
        Ok(())
    });
    let mut repo = Repository::init(hooked, PASSWORD, init_options()).unwrap();
    repo.set_connections(4);
    let err = repo.backup().path(&src).run().unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    assert_eq!(gauge.max.load(SeqCst), 4, "the writes overlapped");
    assert!(mem.list(ObjectKind::Snapshot).unwrap().is_empty());

    let fresh = Repository::open(mem.clone(), PASSWORD, OpenOptions::default()).unwrap();
    let report = check_all(&fresh);
    assert!(report.is_ok(), "{report}");
    fresh.backup().path(&src).run().unwrap();
    assert!(check_all(&fresh).is_ok());
    assert_eq!(fresh.snapshots().unwrap().len(), 1);
}

/// A backup with nothing changed, by a new process with a warm cache,
/// makes a handful of requests, independent of how much data the
/// repository holds: what it must do and nothing more.
#[test]
fn nothing_changed_backup_makes_a_handful_of_requests() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    // Three directories (the root and two below it), 40 files.
    for (i, sub) in ["", "a", "b"].iter().cycle().take(40).enumerate() {
        let dir = src.join(sub);
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join(format!("f{i}")),
            random_bytes(20_000 + i * 1000, i as u64),
        )
        .unwrap();
    }
    let cache = d.path().join("cache");
    let opts = InitOptions {
        cache_dir: Some(cache.clone()),
        ..init_options()
    };
    let open = || {
        Repository::open(
            LocalBackend::open(d.path().join("repo")),
            PASSWORD,
            OpenOptions {
                cache_dir: Some(cache.clone()),
                ..Default::default()
            },
        )
        .unwrap()
    };
    let first = Repository::init(
        LocalBackend::create(d.path().join("repo")).unwrap(),
        PASSWORD,
        opts,
    )
    .unwrap();
    first.backup().path(&src).run().unwrap();
    drop(first);
    // A second backup, so the repository holds more than one of each.
    open().backup().path(&src).run().unwrap();

    let repo = open();
    let outcome = repo.backup().path(&src).run().unwrap();
    let s = repo.request_stats();
    let summary = &outcome.snapshot.snapshot.summary;
    assert_eq!(summary.files_unmodified, 40);
    // What it must do, counted from the code:
    // - open: read the config and the one key file (2 reads); list keys
    //   and index files (2 lists); the cache knows every index file.
    // - backup: announce itself (heartbeat write, then its deletion); list
    //   the snapshots and read them (2 files) to find the parent; list the
    //   dictionaries and read one, if the repository trained one; write the
    //   snapshot. If an ancestor of `src` (`/tmp`) changed meanwhile (other
    //   tests make directories there), the trees above `src` are new: one
    //   tree pack and one index file more. The parent's trees come from the local cache, which the
    //   backups before filled: no ranged read, whatever the number of
    //   directories.
    // A backup that re-read packs or trees, re-read index files or listed
    // storage per file would exceed these bounds many times over.
    eprintln!("requests of a nothing-changed backup: {s:?}");
    assert!(s.read <= 2 + 2 + 1, "whole reads: {s:?}");
    assert_eq!(s.read_range, 0, "ranged reads: {s:?}");
    assert!(s.list <= 8, "listings: {s:?}");
    assert!(s.stat <= 1, "stats: {s:?}");
    assert!(
        s.write <= 4,
        "writes (heartbeat, snapshot, new trees): {s:?}"
    );
    assert!(s.delete <= 1, "deletions (heartbeat): {s:?}");
    assert!(s.total() <= 18, "{s:?}");
    // Bytes: a few small files and three trees, nowhere near one pack.
    assert!(s.bytes_received < 64 * 1024, "{s:?}");
    assert!(s.bytes_sent < 16 * 1024, "{s:?}");
}

/// A damaged tree in the local cache costs a read, not a wrong comparison:
/// the backup reads the tree from the storage and still finds every file
/// unmodified.
#[test]
fn damaged_cached_tree_is_read_from_the_storage() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    for i in 0..6 {
        let dir = src.join(format!("d{}", i % 2));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("f{i}")), random_bytes(10_000, i)).unwrap();
    }
    let cache = d.path().join("cache");
    let repo = Repository::init(
        LocalBackend::create(d.path().join("repo")).unwrap(),
        PASSWORD,
        InitOptions {
            cache_dir: Some(cache.clone()),
            ..init_options()
        },
    )
    .unwrap();
    repo.backup().path(&src).run().unwrap();
    let db = cache.join(repo.id().to_hex()).join("index.sqlite");
    drop(repo);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let damaged = conn
        .execute("UPDATE trees SET sealed = zeroblob(length(sealed))", [])
        .unwrap();
    assert!(damaged >= 3, "the backup cached its trees");
    drop(conn);

    let repo = Repository::open(
        LocalBackend::open(d.path().join("repo")),
        PASSWORD,
        OpenOptions {
            cache_dir: Some(cache),
            ..Default::default()
        },
    )
    .unwrap();
    let outcome = repo.backup().path(&src).run().unwrap();
    let summary = &outcome.snapshot.snapshot.summary;
    assert_eq!(
        (
            summary.files_unmodified,
            summary.files_changed,
            summary.files_new
        ),
        (6, 0, 0)
    );
    assert!(
        repo.request_stats().read_range >= damaged as u64,
        "read from the storage instead"
    );
    assert!(outcome.warnings.is_empty());
}
