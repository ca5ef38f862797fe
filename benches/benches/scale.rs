//! The scale benchmark: a repository of 10 million chunks (about 10 TB at
//! 1 MiB each). The index is real (encrypted index files, 1024 blobs per
//! pack by default); the packs are sparse placeholders: a real prefix, a
//! hole where the blobs would be, and a real sealed header and trailer, so
//! the structure check's size and header comparison read real bytes. Each
//! step runs in a child process of its own so its peak RSS is its own.
//!
//! ```sh
//! cargo bench -p cairn-benches --bench scale              # 10,000,000 chunks
//! CAIRN_SCALE_CHUNKS=1000000 cargo bench -p cairn-benches --bench scale
//! CAIRN_SCALE_BLOBS_PER_PACK=16 ...                       # 16 times the packs
//! ```
//!
//! `CAIRN_SCALE_DIR` chooses where the repository is made (default: the
//! system temp dir; it needs about 1.2 GB, plus about 0.9 GB of scratch
//! files during the check, on a file system with sparse files).

use repo_core::unstable::RepositoryInternals as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use cairn_testkit::WEAK_KDF;
use cairn_testkit::rng::XorShift;
use repo_core::unstable::blob::BlobKind;
use repo_core::unstable::check::CheckOptions;
use repo_core::unstable::format::FILE_PREFIX_LEN;
use repo_core::unstable::index::IndexPack;
use repo_core::unstable::pack::PackEntry;
use repo_core::{BlobId, InitOptions, LocalBackend, OpenOptions, PackId, Repository};

const PASSWORD: &[u8] = b"scale";
/// Blobs per pack unless `CAIRN_SCALE_BLOBS_PER_PACK` says otherwise.
const BLOBS_PER_PACK: usize = 1024;
const CHUNK: u32 = 1 << 20;
/// Present ids kept for the lookup step: every `SAMPLE`-th.
const SAMPLE: usize = 997;
/// Lookups per measurement.
const LOOKUPS: usize = 2_000_000;
/// New data backed up into the big repository.
const NEW_DATA: usize = 256 << 20;

/// Peak resident set size of this process, MiB (Linux `VmHWM`).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn open(dir: &Path) -> Repository {
    Repository::open(
        LocalBackend::open(dir.join("repo")),
        PASSWORD,
        OpenOptions {
            cache_dir: Some(dir.join("cache")),
            ..Default::default()
        },
    )
    .expect("repository opens")
}

fn sample_ids(dir: &Path) -> Vec<BlobId> {
    let raw = std::fs::read(dir.join("sample.bin")).expect("sample ids");
    raw.chunks_exact(32)
        .map(|c| BlobId::from_bytes(c.try_into().expect("32 bytes")))
        .collect()
}

/// A placeholder pack: its prefix, a hole up to where the header starts,
/// and the sealed header and trailer its entries imply.
fn write_placeholder_pack(repo: &Repository, dir: &Path, pack: &IndexPack) {
    use std::io::{Seek, SeekFrom, Write};
    let hex = pack.id.to_hex();
    let sub = dir.join("repo").join("data").join(&hex[..2]);
    std::fs::create_dir_all(&sub).expect("pack dir");
    let (prefix, tail) = repo.pack_ends(&pack.entries);
    let end = pack.entries.last().map_or(FILE_PREFIX_LEN as u64, |e| {
        u64::from(e.offset) + u64::from(e.length)
    });
    let mut f = std::fs::File::create(sub.join(&hex)).expect("pack file");
    f.write_all(&prefix).expect("pack prefix");
    f.set_len(end).expect("sparse blob region");
    f.seek(SeekFrom::Start(end)).expect("seek");
    f.write_all(&tail).expect("pack header");
}

/// Step "generate": the repository, its index and placeholder packs, in
/// this process.
fn generate(dir: &Path, chunks: usize, per_pack: usize) {
    let repo = Repository::init(
        LocalBackend::create(dir.join("repo")).expect("repo dir"),
        PASSWORD,
        InitOptions {
            kdf: WEAK_KDF,
            cache_dir: Some(dir.join("gen-cache")),
            ..Default::default()
        },
    )
    .expect("init");
    let mut rng = XorShift::new(0x5ca1e);
    let mut sample = Vec::new();
    let per_file = repo_core::unstable::index::MAX_INDEX_ENTRIES;
    let mut made = 0;
    while made < chunks {
        let n = per_file.min(chunks - made);
        let packs: Vec<IndexPack> = (0..n.div_ceil(per_pack))
            .map(|p| {
                let blobs = per_pack.min(n - p * per_pack);
                let entries = (0..blobs)
                    .map(|i| {
                        let id = rng.array();
                        if (made + p * per_pack + i).is_multiple_of(SAMPLE) {
                            sample.extend_from_slice(&id);
                        }
                        PackEntry {
                            kind: BlobKind::Data,
                            id: BlobId::from_bytes(id),
                            offset: FILE_PREFIX_LEN as u32 + i as u32 * (CHUNK / 2),
                            length: CHUNK / 2,
                            raw_length: CHUNK,
                        }
                    })
                    .collect();
                IndexPack {
                    id: PackId::from_bytes(rng.array()),
                    entries,
                }
            })
            .collect();
        // Packs first, then the index naming them (SPEC's write order).
        for p in &packs {
            write_placeholder_pack(&repo, dir, p);
        }
        repo.write_index(&packs).expect("index written");
        made += n;
    }
    std::fs::write(dir.join("sample.bin"), sample).expect("sample written");
    drop(repo);
    let _ = std::fs::remove_dir_all(dir.join("gen-cache"));
}

/// Runs one step in this process and prints `key=value` lines.
fn step(name: &str, dir: &Path) {
    match name {
        "open-cold" => {
            let _ = std::fs::remove_dir_all(dir.join("cache"));
            let t = Instant::now();
            let repo = open(dir);
            println!("secs={:.2}", t.elapsed().as_secs_f64());
            let (runs, fence) = repo.index().cache().run_stats();
            println!(
                "blobs={}",
                repo.index().cache().blob_count().expect("count")
            );
            println!("runs={runs}");
            println!("fence_kib={:.0}", fence as f64 / 1024.0);
        }
        "open-warm" => {
            let t = Instant::now();
            let _repo = open(dir);
            println!("secs={:.2}", t.elapsed().as_secs_f64());
        }
        "lookup" => {
            let repo = open(dir);
            let present = sample_ids(dir);
            let mut rng = XorShift::new(0xab5e17);
            let absent: Vec<BlobId> = (0..4096).map(|_| BlobId::from_bytes(rng.array())).collect();
            let cache = repo.index().cache();
            let measure = |ids: &[BlobId], threads: usize, want: bool| {
                let per = LOOKUPS / threads;
                let t = Instant::now();
                std::thread::scope(|s| {
                    for k in 0..threads {
                        s.spawn(move || {
                            for i in 0..per {
                                let id = &ids[(i * 7 + k * 13) % ids.len()];
                                let found = if want {
                                    cache.lookup(id).expect("lookup").is_some()
                                } else {
                                    cache.contains(id).expect("contains")
                                };
                                assert_eq!(found, want);
                            }
                        });
                    }
                });
                (per * threads) as f64 / t.elapsed().as_secs_f64()
            };
            // One pass first, so every block read below is in the page cache.
            measure(&present, 2, true);
            println!("present_1t={:.0}", measure(&present, 1, true));
            println!("present_2t={:.0}", measure(&present, 2, true));
            println!("absent_1t={:.0}", measure(&absent, 1, false));
            println!("absent_2t={:.0}", measure(&absent, 2, false));
        }
        "backup" => {
            let src = dir.join("new-data");
            let _ = std::fs::remove_dir_all(&src);
            std::fs::create_dir_all(&src).expect("source dir");
            let mut rng = XorShift::new(0x0dd5);
            for f in 0..NEW_DATA / (8 << 20) {
                let data: Vec<u8> = (0..(8 << 20) / 8)
                    .flat_map(|_| rng.next_u64().to_le_bytes())
                    .collect();
                std::fs::write(src.join(format!("f{f:03}")), data).expect("source file");
            }
            let repo = open(dir);
            let t = Instant::now();
            let out = repo.backup().path(&src).run().expect("backup");
            println!("secs={:.2}", t.elapsed().as_secs_f64());
            println!("bytes_added={}", out.snapshot.snapshot.summary.bytes_added);
        }
        "check" => {
            let repo = open(dir);
            let t = Instant::now();
            let report = repo
                .check(&CheckOptions::default())
                .run()
                .expect("check runs");
            println!("secs={:.2}", t.elapsed().as_secs_f64());
            println!("packs={}", report.packs);
            println!("trees={}", report.trees);
            println!("spill_files={}", report.spill_files);
            println!("errors={}", report.errors.len());
            for p in report.errors.iter().take(5) {
                eprintln!("check: error: {}", p.message);
            }
            assert!(report.is_ok(), "the structure check found errors");
        }
        other => panic!("unknown step {other}"),
    }
    println!("rss_mib={:.1}", peak_rss_mib());
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for l in status.lines().filter(|l| l.starts_with("Rss")) {
        eprintln!("{name}: {l}");
    }
}

fn run_child(step: &str, dir: &Path) -> Vec<(String, String)> {
    let out = Command::new(std::env::current_exe().expect("own path"))
        .env("CAIRN_SCALE_STEP", step)
        .env("CAIRN_SCALE_WORKDIR", dir)
        .output()
        .expect("child runs");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "step {step} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The allocator setting the `cairn` binary makes (repo-cli/src/main.rs),
/// so the library steps here use memory as the command would.
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mallopt only changes a malloc tunable, before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() {
    if let Ok(s) = std::env::var("CAIRN_SCALE_STEP") {
        tune_allocator();
        let dir = PathBuf::from(std::env::var("CAIRN_SCALE_WORKDIR").expect("workdir"));
        step(&s, &dir);
        return;
    }
    // `cargo bench` passes `--bench`; a filter that does not name this
    // benchmark skips it, as criterion does.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if !args.is_empty() && !args.iter().any(|a| "scale".contains(a.as_str())) {
        return;
    }
    let chunks: usize = std::env::var("CAIRN_SCALE_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let per_pack: usize = std::env::var("CAIRN_SCALE_BLOBS_PER_PACK")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=8192).contains(n))
        .unwrap_or(BLOBS_PER_PACK);
    let base = std::env::var_os("CAIRN_SCALE_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = tempfile::Builder::new()
        .prefix("cairn-scale-")
        .tempdir_in(base)
        .expect("work dir");
    eprintln!(
        "scale: generating a repository of {chunks} chunks ({per_pack} per pack) in {}",
        dir.path().display()
    );
    let t = Instant::now();
    generate(dir.path(), chunks, per_pack);
    let gen_secs = t.elapsed().as_secs_f64();
    let du = |p: &Path| -> u64 { walk_size(p) };
    let index_mb = du(&dir.path().join("repo").join("index")) as f64 / 1e6;
    let mut rows = vec![(
        "generate (index files, placeholder packs)".to_string(),
        format!("{gen_secs:.1} s"),
        String::from("-"),
        format!(
            "{index_mb:.0} MB of index files, {} sparse packs of {per_pack} blobs",
            chunks.div_ceil(per_pack)
        ),
    )];
    for s in ["open-cold", "open-warm", "lookup", "backup", "check"] {
        eprintln!("scale: step {s}");
        let kv = run_child(s, dir.path());
        let get = |k: &str| {
            kv.iter()
                .find(|(a, _)| a == k)
                .map_or_else(String::new, |(_, v)| v.clone())
        };
        let per_s = |k: &str| {
            get(k)
                .parse::<f64>()
                .map_or_else(|_| "?".into(), |v| format!("{:.2} M/s", v / 1e6))
        };
        let (secs, note) = match s {
            "open-cold" => (
                format!("{} s", get("secs")),
                format!(
                    "cache built from scratch: {} blobs in {} runs, {} KiB of pack tables, fences and filters in memory, {:.0} MB of runs on disk",
                    get("blobs"),
                    get("runs"),
                    get("fence_kib"),
                    du(&dir.path().join("cache")) as f64 / 1e6
                ),
            ),
            "open-warm" => (format!("{} s", get("secs")), "cache up to date".into()),
            "lookup" => (
                "-".into(),
                format!(
                    "present: {} (1 thread), {} (2 threads); absent: {} / {}",
                    per_s("present_1t"),
                    per_s("present_2t"),
                    per_s("absent_1t"),
                    per_s("absent_2t")
                ),
            ),
            "check" => (
                format!("{} s", get("secs")),
                format!(
                    "structure check: {} packs (headers read), {} trees, {} spill files, {} errors",
                    get("packs"),
                    get("trees"),
                    get("spill_files"),
                    get("errors")
                ),
            ),
            _ => (
                format!("{} s", get("secs")),
                format!(
                    "{} MiB of new files, {:.0} MiB added",
                    NEW_DATA >> 20,
                    get("bytes_added").parse::<f64>().unwrap_or(0.0) / 1048576.0
                ),
            ),
        };
        rows.push((s.to_string(), secs, format!("{} MiB", get("rss_mib")), note));
    }
    println!("\nscale benchmark: {chunks} chunks\n");
    println!("| step | time | peak RSS | notes |");
    println!("| --- | --- | --- | --- |");
    for (a, b, c, d) in rows {
        println!("| {a} | {b} | {c} | {d} |");
    }
}

fn walk_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}
