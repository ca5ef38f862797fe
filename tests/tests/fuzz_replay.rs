//! Replays the fuzz corpora on stable: every file in `fuzz/seeds/<target>/`
//! and `fuzz/regressions/<target>/` goes through the same check the libFuzzer
//! target runs (`cairn_testkit::fuzz`, the same library the targets call).
//!
//! A regression whose file name starts with `open-` reproduces a bug that is
//! not fixed yet: it is run and reported, but does not fail the test. Once it
//! passes, drop the prefix so it guards against the bug coming back.
//!
//! Besides the check's own assertions, no single allocation made while
//! checking an input may exceed [`ALLOC_BUDGET`] plus 64 bytes per input
//! byte: hostile input must not make a decoder reserve memory out of
//! proportion to its size. (libFuzzer's `-malloc_limit_mb` is the same
//! guard while fuzzing.)
//!
//! `CAIRN_WRITE_SEEDS=1 cargo test -p cairn-tests --test fuzz_replay -- --ignored`
//! regenerates the seeds.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use cairn_testkit::fuzz as checks;
use checks::Check;

/// Prefix of regression files whose bug is still open.
const OPEN_PREFIX: &str = "open-";

/// Largest single allocation any check may make regardless of input size:
/// the `decompress` and `open_blob` targets ask for up to 16 MiB of output.
const ALLOC_BUDGET: usize = checks::MAX_FUZZ_LEN as usize;
/// Allowance per input byte on top of [`ALLOC_BUDGET`].
const ALLOC_PER_BYTE: usize = 64;

/// A global allocator that records, per thread and only while asked to, the
/// largest single allocation requested.
#[allow(unsafe_code)]
mod alloc_track {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        /// `Some(largest so far)` while tracking on this thread.
        static LARGEST: Cell<Option<usize>> = const { Cell::new(None) };
    }

    fn note(size: usize) {
        // `try_with`: allocations during thread teardown are not tracked.
        let _ = LARGEST.try_with(|l| {
            if let Some(m) = l.get() {
                l.set(Some(m.max(size)));
            }
        });
    }

    /// Forwards to [`System`], noting sizes.
    pub struct Tracking;

    // SAFETY: every method forwards to `System` with the caller's arguments
    // unchanged; `note` neither allocates nor touches the memory.
    unsafe impl GlobalAlloc for Tracking {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: same contract as ours.
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: same contract as ours.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            // SAFETY: same contract as ours.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as ours.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    /// Runs `f` and returns its result with the largest single allocation
    /// it requested on this thread.
    pub fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
        LARGEST.with(|l| l.set(Some(0)));
        let r = f();
        (r, LARGEST.with(|l| l.replace(None)).unwrap_or(0))
    }
}

#[global_allocator]
static ALLOC: alloc_track::Tracking = alloc_track::Tracking;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fuzz")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = rd
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

fn check_for(target: &str) -> Check {
    checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no check named {target}"))
        .1
}

thread_local! {
    /// Set while this thread runs a check: its panics are expected, so the
    /// hook only records where they happened instead of printing them.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static PANIC_AT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Runs `f` with this thread's panics recorded rather than printed.
fn quietly<R>(f: impl FnOnce() -> R) -> R {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET.with(|q| q.get()) {
                let at = info.location().map(|l| l.to_string()).unwrap_or_default();
                PANIC_AT.with(|p| *p.borrow_mut() = at);
            } else {
                default(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let r = f();
    QUIET.with(|q| q.set(false));
    r
}

/// Runs `check` on `file`; returns why it failed: the panic message, or the
/// allocation that exceeded the budget.
fn run(check: Check, file: &Path) -> Option<String> {
    let data = fs::read(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let (result, largest) = alloc_track::largest_allocation(|| {
        quietly(|| panic::catch_unwind(AssertUnwindSafe(|| check(&data))))
    });
    if let Err(p) = result {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "non-string panic".into());
        let at = PANIC_AT.with(|p| p.take());
        return Some(format!("panicked at {at}: {msg}"));
    }
    let budget = ALLOC_BUDGET + ALLOC_PER_BYTE * data.len();
    (largest > budget).then(|| {
        format!(
            "a single allocation of {largest} bytes for {} input bytes (budget {budget})",
            data.len()
        )
    })
}

fn replay(target: &str) {
    let check = check_for(target);
    let dir = fuzz_dir();
    let seeds = files_in(&dir.join("seeds").join(target));
    assert!(!seeds.is_empty(), "no seeds in fuzz/seeds/{target}/");
    let regressions = files_in(&dir.join("regressions").join(target));
    let mut failures = Vec::new();
    for file in seeds.iter().chain(&regressions) {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let open = regressions.contains(file) && name.starts_with(OPEN_PREFIX);
        match (run(check, file), open) {
            (None, false) => {}
            (Some(msg), false) => failures.push(format!("{}: {msg}", file.display())),
            (Some(msg), true) => {
                eprintln!("known open bug still reproduces: {}: {msg}", file.display())
            }
            (None, true) => eprintln!(
                "{} passes now: drop the `{OPEN_PREFIX}` prefix",
                file.display()
            ),
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: {} input(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

macro_rules! replay_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name));
            }
        )*

        /// Every check has a test here, a fuzz target file and a `[[bin]]`.
        #[test]
        fn every_target_is_wired_up() {
            let tested = [$(stringify!($name)),*];
            let names: Vec<&str> = checks::TARGETS.iter().map(|(n, _)| *n).collect();
            assert_eq!(names, tested, "checks::TARGETS and the replay tests differ");
            let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
            for name in names {
                let path = format!("fuzz_targets/{name}.rs");
                assert!(fuzz_dir().join(&path).is_file(), "missing fuzz/{path}");
                assert!(manifest.contains(&format!("name = \"{name}\"")), "no [[bin]] {name} in fuzz/Cargo.toml");
                let src = fs::read_to_string(fuzz_dir().join(&path)).expect("fuzz target source");
                assert!(src.contains(&format!("checks::{name}(")), "fuzz/{path} does not call checks::{name}");
            }
        }
    };
}

replay_tests!(
    pack_header_decode,
    pack_from_pack,
    pack_from_tail,
    tree_decode,
    snapshot_decode,
    key_file_decode,
    config_decode,
    decompress,
    open_blob,
    chunker,
    index_file_decode,
    mark_decode,
    cache_run,
    rdb_stream,
);

/// Seed inputs per target, following the layouts documented in `cairn_testkit::fuzz`.
mod seeds {
    use repo_core::unstable::SnapshotFile as _;
    use repo_core::unstable::blob::{self, BlobKind};
    use repo_core::unstable::cache::runs;
    use repo_core::unstable::chunker::ChunkerParams;
    use repo_core::unstable::compress;
    use repo_core::unstable::config::Config;
    use repo_core::unstable::crypto::{KeyFile, MasterKey};
    use repo_core::unstable::encoding;
    use repo_core::unstable::format::{CONFIG_MAGIC, FORMAT_VERSION, SNAPSHOT_MAGIC};
    use repo_core::unstable::id::{BlobId, IndexId, PackId, RepoId, SnapshotId, TreeId};
    use repo_core::unstable::index::{IndexFile, IndexPack};
    use repo_core::unstable::mark::MarkFile;
    use repo_core::unstable::pack::{PackEntry, PackHeader, PackWriter};
    use repo_core::unstable::snapshot::{Snapshot, SnapshotSummary};
    use repo_core::unstable::tree::{Node, NodeKind, Tree, Xattr};

    use cairn_testkit::rng::XorShift;

    use super::checks::rdb::crc64;
    use super::checks::{MASTER, blob_id, master};

    pub type Seeds = Vec<(&'static str, Vec<u8>)>;

    fn pseudo_random(n: usize, x: u64) -> Vec<u8> {
        XorShift::new(x).low_bytes(n)
    }

    fn le64(v: u64, rest: &[u8]) -> Vec<u8> {
        let mut out = v.to_le_bytes().to_vec();
        out.extend_from_slice(rest);
        out
    }

    fn le32(v: u32, rest: &[u8]) -> Vec<u8> {
        let mut out = v.to_le_bytes().to_vec();
        out.extend_from_slice(rest);
        out
    }

    fn text() -> Vec<u8> {
        b"the quick brown fox jumps over the lazy dog\n".repeat(40)
    }

    /// Packs sealed under the fuzzing key: empty, and one data plus one tree blob.
    fn packs() -> Vec<(&'static str, Vec<u8>)> {
        let keys = master().data_keys();
        let key = &keys;
        let empty = PackWriter::new().finish(key).1;
        let mut w = PackWriter::new();
        let data = text();
        let tree = Tree {
            nodes: vec![Node::new(b"a".to_vec(), NodeKind::File)],
        }
        .encode();
        for (kind, plain, level) in [(BlobKind::Data, &data, 3), (BlobKind::Tree, &tree, 0)] {
            let id = blob_id(kind, plain);
            w.add(
                kind,
                id,
                &blob::seal_blob(key, kind, &id, plain, level),
                plain.len() as u32,
            );
        }
        vec![("empty", empty), ("two-blobs", w.finish(key).1)]
    }

    fn trees() -> Vec<(&'static str, Tree)> {
        let mut file = Node::new(b"file.txt".to_vec(), NodeKind::File);
        file.mode = 0o644;
        file.user = "alice".into();
        file.group = "users".into();
        file.mtime_ns = 1_700_000_000_000_000_000;
        file.size = 42;
        file.content = vec![BlobId::from_bytes([1; 32]), BlobId::from_bytes([2; 32])];
        file.xattrs = vec![
            Xattr {
                name: b"user.a".to_vec(),
                value: b"1".to_vec(),
            },
            Xattr {
                name: b"user.b".to_vec(),
                value: Vec::new(),
            },
        ];
        let mut dir = Node::new(b"dir".to_vec(), NodeKind::Dir);
        dir.subtree = Some(TreeId::from_bytes([3; 32]));
        let mut link = Node::new(b"link\xff\n".to_vec(), NodeKind::Symlink);
        link.symlink_target = b"../elsewhere".to_vec();
        let mut dev = Node::new(b"null".to_vec(), NodeKind::CharDevice);
        dev.rdev = 0x103;
        let mut full = Tree {
            nodes: vec![
                file.clone(),
                dir,
                link,
                dev,
                Node::new(b"pipe".to_vec(), NodeKind::Fifo),
            ],
        };
        full.sort();
        vec![
            ("empty", Tree::default()),
            ("one-file", Tree { nodes: vec![file] }),
            ("mixed", full),
        ]
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            time_ns: 1_700_000_000_123_456_789,
            host: "host".into(),
            username: "user".into(),
            paths: vec![b"/srv/data".to_vec(), b"/home/\xff".to_vec()],
            tags: vec!["daily".into(), "db".into()],
            parent: Some(SnapshotId::from_bytes([4; 32])),
            tree: TreeId::from_bytes([5; 32]),
            program_version: "cairn 0.1.0".into(),
            summary: SnapshotSummary {
                files_new: 3,
                bytes_read: 1024,
                ..Default::default()
            },
            metadata: vec![("pg".into(), "16.2".into())],
            original: None,
        }
    }

    fn config() -> Config {
        Config::new(RepoId::from_bytes([6; 32]), 1_700_000_000_000_000_000)
    }

    /// All seeds, per target.
    pub fn all() -> Vec<(&'static str, Seeds)> {
        let keys = master().data_keys();
        let key = &keys;
        let mut out: Vec<(&'static str, Seeds)> = Vec::new();

        let entry = |kind, offset, length| PackEntry {
            kind,
            id: BlobId::from_bytes([offset as u8; 32]),
            offset,
            length,
            raw_length: length * 2,
        };
        let two = PackHeader {
            entries: vec![
                entry(BlobKind::Data, 12, 100),
                entry(BlobKind::Tree, 112, 50),
            ],
            references: Vec::new(),
        };
        out.push((
            "pack_header_decode",
            vec![
                ("empty", le64(12, &PackHeader::default().encode())),
                ("two-entries", le64(162, &two.encode())),
            ],
        ));

        let packs = packs();
        out.push(("pack_from_pack", packs.clone()));
        let mut tails = Vec::new();
        for (name, p) in &packs {
            let hlen = u32::from_le_bytes(p[p.len() - 4..].try_into().expect("4 bytes")) as usize;
            let need = hlen + 4;
            let tail = &p[p.len() - need..];
            tails.push((
                if *name == "empty" {
                    "empty-whole"
                } else {
                    "two-blobs-whole"
                },
                le64(p.len() as u64, p),
            ));
            tails.push((
                if *name == "empty" {
                    "empty-tail"
                } else {
                    "two-blobs-tail"
                },
                le64(p.len() as u64, tail),
            ));
        }
        out.push(("pack_from_tail", tails));

        out.push((
            "tree_decode",
            trees().into_iter().map(|(n, t)| (n, t.encode())).collect(),
        ));

        let snap = snapshot();
        let mut bare = snap.clone();
        bare.parent = None;
        bare.paths.clear();
        bare.tags.clear();
        bare.metadata.clear();
        out.push((
            "snapshot_decode",
            vec![
                ("full", encoding::encode(&snap)),
                ("bare", encoding::encode(&bare)),
                ("file", snap.to_file(key)),
                (
                    "file-raw",
                    blob::seal_file(&SNAPSHOT_MAGIC, key, &encoding::encode(&snap), 0),
                ),
            ],
        ));

        let kf = KeyFile::create(
            &MasterKey::from_bytes(MASTER),
            b"password",
            RepoId::from_bytes([6; 32]),
            cairn_testkit::WEAK_KDF,
            "host".into(),
            "user".into(),
            1_700_000_000_000_000_000,
        )
        .expect("weak kdf params are valid");
        out.push(("key_file_decode", vec![("weak-kdf", kf.encode())]));

        let c = config();
        let mut one = c.clone();
        one.chunker_profiles.truncate(1);
        let mut prefix = Vec::new();
        repo_core::unstable::format::write_prefix(&mut prefix, &CONFIG_MAGIC, FORMAT_VERSION);
        prefix.extend_from_slice(c.repo_id.as_bytes());
        out.push((
            "config_decode",
            vec![
                ("body", encoding::encode(&c)),
                ("body-one-profile", encoding::encode(&one)),
                ("file", c.to_file(key)),
                ("file-prefix", prefix),
            ],
        ));

        let random = pseudo_random(3000, 7);
        out.push((
            "decompress",
            vec![
                ("zstd", le32(1 << 16, &compress::compress(&text(), 3))),
                (
                    "zstd-tight",
                    le32(text().len() as u32, &compress::compress(&text(), 19)),
                ),
                ("raw", le32(4096, &compress::compress(&random, 3))),
                ("empty-raw", le32(0, &[compress::MARKER_RAW])),
            ],
        ));

        let blob_seed = |kind: u8, plain: &[u8], level| {
            let mut v = vec![kind];
            v.extend_from_slice(&le32(plain.len() as u32, &compress::compress(plain, level)));
            v
        };
        let tree = trees().remove(2).1.encode();
        out.push((
            "open_blob",
            vec![
                ("data-zstd", blob_seed(0, &text(), 3)),
                ("data-raw", blob_seed(0, &random, 0)),
                ("tree-zstd", blob_seed(1, &tree, 3)),
                ("empty", blob_seed(0, b"", 0)),
            ],
        ));

        let params = |p: ChunkerParams, seed: u64, data: &[u8]| {
            let mut v = Vec::new();
            for x in [p.min, p.avg, p.max] {
                v.extend_from_slice(&x.to_le_bytes());
            }
            v.extend_from_slice(&le64(seed, data));
            v
        };
        let small = ChunkerParams {
            min: 64,
            avg: 256,
            max: 1024,
        };
        let mid = ChunkerParams {
            min: 256,
            avg: 1024,
            max: 4096,
        };
        out.push((
            "chunker",
            vec![
                ("small-random", params(small, 1, &pseudo_random(6000, 3))),
                ("mid-random", params(mid, 0, &pseudo_random(20_000, 5))),
                ("small-text", params(small, 9, &text())),
                ("zeros", params(small, 2, &[0; 5000])),
                ("empty", params(mid, 3, b"")),
            ],
        ));

        let packs = index_packs();
        let index = IndexFile {
            packs: packs.clone(),
            supersedes: vec![IndexId::from_bytes([9; 32])],
            references: Vec::new(),
        };
        out.push((
            "index_file_decode",
            vec![
                ("empty", IndexFile::default().encode_versioned().1),
                ("two-packs", index.encode_versioned().1),
                ("file", index.to_file(key)),
            ],
        ));

        let mark = MarkFile {
            created_ns: 1_700_000_000_000_000_000,
            packs,
        };
        let bare = MarkFile {
            created_ns: -1,
            packs: Vec::new(),
        };
        out.push((
            "mark_decode",
            vec![
                ("bare", encoding::encode(&bare)),
                ("two-packs", encoding::encode(&mark)),
                ("file", mark.to_file(key)),
            ],
        ));

        out.push(("cache_run", cache_runs()));

        let mut redis7 = b"REDIS0011".to_vec();
        redis7.extend_from_slice(b"\xfa\x09redis-ver\x057.2.4\xfa\x0aredis-bits\xc0\x40");
        redis7.extend_from_slice(b"\xfe\x00\xfb\x02\x00\x00\x01k\x01v\x00\x02k2\x03abc\xff");
        let mut zero_trailer = redis7.clone();
        zero_trailer.extend_from_slice(&[0; 8]);
        let crc = crc64::update(0, &redis7);
        redis7.extend_from_slice(&crc.to_le_bytes());
        out.push((
            "rdb_stream",
            vec![
                ("redis7", le64(11, &redis7)),
                ("zero-trailer", le64(10, &zero_trailer)),
                ("truncated", le64(3, &redis7[..redis7.len() - 3])),
                ("empty", le64(0, b"")),
            ],
        ));
        out
    }

    /// Two packs of an index or mark body.
    fn index_packs() -> Vec<IndexPack> {
        let entry = |kind, n: u8| PackEntry {
            kind,
            id: BlobId::from_bytes([n; 32]),
            offset: 12 + u32::from(n) * 100,
            length: 100,
            raw_length: 180,
        };
        vec![
            IndexPack {
                id: PackId::from_bytes([7; 32]),
                entries: vec![entry(BlobKind::Data, 1), entry(BlobKind::Tree, 2)],
            },
            IndexPack {
                id: PackId::from_bytes([8; 32]),
                entries: vec![entry(BlobKind::Data, 3)],
            },
        ]
    }

    /// `cache_run` seeds: run files `runs::build` wrote (mode 0), and entry
    /// lists to build from (odd modes).
    fn cache_runs() -> Seeds {
        let dir = tempfile::tempdir().expect("temporary directory");
        let built = |name, packs: &[(PackId, Vec<PackEntry>)]| {
            let (file, _) = runs::build(dir.path(), packs).expect("build a run");
            let mut v = vec![0];
            v.extend(std::fs::read(dir.path().join(file)).expect("read the run"));
            (name, v)
        };
        let entries = |seed: u64, n: usize| -> Vec<PackEntry> {
            pseudo_random(n * 32, seed)
                .chunks(32)
                .enumerate()
                .map(|(i, id)| PackEntry {
                    kind: if i % 3 == 0 {
                        BlobKind::Tree
                    } else {
                        BlobKind::Data
                    },
                    id: BlobId::from_bytes(id.try_into().expect("32 bytes")),
                    offset: i as u32 * 10,
                    length: 10,
                    raw_length: 20,
                })
                .collect()
        };
        let mut out = vec![
            built("run-empty", &[(PackId::from_bytes([1; 32]), Vec::new())]),
            built("run-small", &[(PackId::from_bytes([1; 32]), entries(1, 5))]),
            built(
                "run-blocks",
                &[
                    (PackId::from_bytes([1; 32]), entries(2, 90)),
                    (PackId::from_bytes([2; 32]), entries(3, 90)),
                ],
            ),
        ];
        // Groups `a b c`: random; one fence prefix throughout (300 records,
        // several blocks); and many duplicates in three packs.
        out.push(("build-random", [vec![3], pseudo_random(1500, 9)].concat()));
        let mut one_prefix = vec![1];
        for (i, r) in pseudo_random(600, 4).chunks(2).enumerate() {
            one_prefix.extend_from_slice(&[0x5a, r[0], r[1] ^ i as u8]);
        }
        out.push(("build-one-prefix", one_prefix));
        let mut dups = vec![5];
        for r in pseudo_random(120, 6).chunks(3) {
            dups.extend_from_slice(&[r[0] & 0x11, r[1] & 3, r[2] & 7]);
        }
        out.push(("build-duplicates", dups));
        out
    }
}

/// The generated seeds pass their checks, cover every target, and are
/// written to `fuzz/seeds/` when `CAIRN_WRITE_SEEDS=1`.
#[test]
#[ignore = "writes fuzz/seeds/ with CAIRN_WRITE_SEEDS=1; otherwise only checks the generated seeds"]
fn write_seeds() {
    let all = seeds::all();
    let names: Vec<&str> = all.iter().map(|(n, _)| *n).collect();
    let targets: Vec<&str> = checks::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, targets, "a target has no seed generator");
    let write = std::env::var_os("CAIRN_WRITE_SEEDS").is_some_and(|v| v == "1");
    for (target, seeds) in all {
        let check = check_for(target);
        let dir = fuzz_dir().join("seeds").join(target);
        if write {
            fs::create_dir_all(&dir).expect("create seed directory");
        }
        for (name, bytes) in seeds {
            check(&bytes);
            if write {
                fs::write(dir.join(name), &bytes).expect("write seed");
            }
        }
    }
}
