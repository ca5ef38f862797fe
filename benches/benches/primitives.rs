//! Micro-benchmarks of repo-core's primitives: chunking, hashing, sealing,
//! compression, pack writing and index-cache lookups.
//!
//! Run with `cargo bench -p cairn-benches --bench primitives`. Every group
//! uses few samples and short measurement times so the whole run stays
//! within a few minutes on a small machine; see `benches/README.md`.

use std::hint::black_box;
use std::io;
use std::time::{Duration, Instant};

use cairn_testkit::rng::XorShift;
use criterion::{
    BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime,
};
use repo_core::unstable::blob::{BlobKind, open_blob, seal_blob};
use repo_core::unstable::cache::Cache;
use repo_core::unstable::chunker::{Chunker, ChunkerParams};
use repo_core::unstable::compress::compress;
use repo_core::unstable::crypto::{self, Cipher, DataKeys, MasterKey};
use repo_core::unstable::format::NONCE_LEN;
use repo_core::unstable::hash::ContentHasher;
use repo_core::unstable::id::{BlobId, PackId};
use repo_core::unstable::pack::{PackEntry, PackWriter};

const MIB: usize = 1024 * 1024;
/// Size of the chunker's input.
const CORPUS_LEN: usize = 64 * MIB;
/// Size of the buffers hashed, sealed and compressed.
const BLOB_LEN: usize = MIB;
/// Blobs per benchmarked pack.
const PACK_BLOBS: usize = 16;
/// Entries in the index cache.
const INDEX_ENTRIES: usize = 1_000_000;
/// Entries per `add_index` call (one simulated index file).
const INDEX_FILE_ENTRIES: usize = 10_000;
/// Entries per simulated pack inside an index file.
const PACK_ENTRIES: usize = 100;
/// Lookups per measured iteration.
const LOOKUP_BATCH: usize = 1_000;

/// Words for the text-like blocks, separated by `|`.
const WORDS: &str = "the|backup|of|a|file|is|split|into|chunks|and|each|chunk|sealed|with|key|\
    repository|snapshot|tree|index|pack|error|warn|info|debug|2026-11-03T12:00:00Z|user|id=|\
    path=/home/|size|0x7f3a|return|fn|let|mut|{|}|(|);|\n|\n\n|    |request|GET|200|404|ms|\
    bytes|from|to|in|on|at|for|deduplicated";

/// `len` bytes mixing random blocks, text-like blocks and zero runs (each
/// block 4–64 KiB, roughly 40 % / 45 % / 15 %): compressible, but with
/// enough entropy that chunk boundaries are found in the random and text parts.
fn mixed_corpus(len: usize, seed: u64) -> Vec<u8> {
    let words: Vec<&str> = WORDS.split('|').collect();
    let mut rng = XorShift::new(seed | 1);
    let mut out = Vec::with_capacity(len + 64 * 1024);
    while out.len() < len {
        let block = 4096 + rng.below(60 * 1024) as usize;
        let start = out.len();
        match rng.below(100) {
            0..40 => {
                out.resize(start + block, 0);
                rng.fill(&mut out[start..]);
            }
            40..85 => {
                while out.len() - start < block {
                    out.extend_from_slice(words[rng.below(words.len() as u64) as usize].as_bytes());
                    out.push(b' ');
                }
            }
            _ => out.resize(start + block, 0),
        }
    }
    out.truncate(len);
    out
}

/// `len` incompressible bytes.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    XorShift::new(seed | 1).fill(&mut v);
    v
}

fn key() -> MasterKey {
    MasterKey::from_bytes([7; 32])
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
}

fn bench_chunker(c: &mut Criterion) {
    let data = mixed_corpus(CORPUS_LEN, 1);
    let seed = key().chunker_seed();
    let mut group = c.benchmark_group("chunker");
    configure(&mut group);
    group.throughput(Throughput::Bytes(data.len() as u64));
    for (name, params) in [
        ("default", ChunkerParams::DEFAULT),
        ("small", ChunkerParams::SMALL),
    ] {
        let chunker = Chunker::new(params, seed).expect("valid chunker params");
        let n = chunker.split_slice(&data).count();
        eprintln!(
            "chunker {name}: {n} chunks of {:.0} KiB on average",
            data.len() as f64 / n as f64 / 1024.0
        );
        group.bench_function(format!("stream_64MiB_{name}"), |b| {
            b.iter(|| {
                let mut chunks = 0usize;
                let total = chunker
                    .stream::<_, io::Error>(black_box(&data[..]), |ch| {
                        chunks += 1;
                        black_box(ch);
                        Ok(())
                    })
                    .expect("reading a slice cannot fail");
                assert_eq!(total, data.len() as u64);
                chunks
            })
        });
        // The same cuts without `stream`'s buffer: the cost of finding boundaries alone.
        group.bench_function(format!("split_slice_64MiB_{name}"), |b| {
            b.iter(|| chunker.split_slice(black_box(&data)).count())
        });
    }
    group.finish();
}

fn bench_hash(c: &mut Criterion) {
    let hasher = ContentHasher::new(&key());
    let data = mixed_corpus(BLOB_LEN, 2);
    let mut group = c.benchmark_group("hash");
    configure(&mut group);
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("chunk_id_1MiB", |b| {
        b.iter(|| hasher.chunk_id(black_box(&data)))
    });
    group.finish();
}

fn bench_compress(c: &mut Criterion) {
    let inputs = [
        ("compressible", mixed_corpus(BLOB_LEN, 3)),
        ("incompressible", random_bytes(BLOB_LEN, 4)),
    ];
    let mut group = c.benchmark_group("compress");
    configure(&mut group);
    group.throughput(Throughput::Bytes(BLOB_LEN as u64));
    for level in [1, 3] {
        for (name, data) in &inputs {
            eprintln!(
                "compress: {name} 1 MiB -> {} bytes at zstd level {level}",
                compress(data, level).len()
            );
            group.bench_function(format!("zstd{level}_{name}_1MiB"), |b| {
                b.iter(|| compress(black_box(data), level))
            });
        }
    }
    group.finish();
}

fn bench_blob(c: &mut Criterion) {
    let k = key();
    let keys = k.data_keys();
    let hasher = ContentHasher::new(&k);
    let inputs = [
        ("compressible", mixed_corpus(BLOB_LEN, 3)),
        ("incompressible", random_bytes(BLOB_LEN, 4)),
    ];
    let mut group = c.benchmark_group("blob");
    configure(&mut group);
    group.throughput(Throughput::Bytes(BLOB_LEN as u64));
    for (level, name, data) in [
        (3, inputs[0].0, &inputs[0].1),
        (3, inputs[1].0, &inputs[1].1),
        (1, inputs[0].0, &inputs[0].1),
        // Level 0 stores raw: what is left is the copy, AEAD and (on open) the id check.
        (0, inputs[1].0, &inputs[1].1),
    ] {
        let id = hasher.chunk_id(data);
        let raw_len = data.len() as u32;
        let codec = match level {
            0 => "raw".to_string(),
            l => format!("zstd{l}"),
        };
        group.bench_function(format!("seal_{codec}_{name}_1MiB"), |b| {
            b.iter(|| seal_blob(&keys, BlobKind::Data, &id, black_box(data), level))
        });
        let sealed = seal_blob(&keys, BlobKind::Data, &id, data, level);
        group.bench_function(format!("open_{codec}_{name}_1MiB"), |b| {
            b.iter(|| {
                open_blob(
                    &keys,
                    &hasher,
                    BlobKind::Data,
                    &id,
                    black_box(&sealed),
                    raw_len,
                )
                .expect("blob opens")
            })
        });
    }
    group.finish();
}

/// The AEAD alone, 1 MiB and 4 KiB in place: the raw-key primitive the
/// engine used before epochs, against the epoch-keyed sealing every object
/// goes through now (epoch 0, a rotated repository's tagged epoch 2, and
/// the compliance cipher XAES-256-GCM).
fn bench_seal(c: &mut Criterion) {
    let k = key();
    let rotated = DataKeys::new(Some(k.data_key()), &[(2, [9u8; 32])]).expect("epochs");
    let ad = [7u8; 33];
    for len in [BLOB_LEN, 4096] {
        let plain = random_bytes(len, 11);
        let mut group = c.benchmark_group("seal");
        configure(&mut group);
        group.throughput(Throughput::Bytes(len as u64));
        let size = if len == BLOB_LEN { "1MiB" } else { "4KiB" };
        let fresh = || {
            let mut buf = vec![0u8; NONCE_LEN];
            buf.extend_from_slice(&plain);
            buf
        };
        group.bench_function(format!("raw_key_seal_{size}"), |b| {
            b.iter_batched_ref(
                fresh,
                |buf| crypto::seal_in_place(k.data_key(), &ad, buf),
                criterion::BatchSize::LargeInput,
            )
        });
        let mut sealed = fresh();
        crypto::seal_in_place(k.data_key(), &ad, &mut sealed);
        group.bench_function(format!("raw_key_open_{size}"), |b| {
            b.iter_batched_ref(
                || sealed.clone(),
                |buf| crypto::open_in_place(k.data_key(), &ad, buf).map(|p| p.len()),
                criterion::BatchSize::LargeInput,
            )
        });
        let xaes = DataKeys::epoch_zero_with(Cipher::Xaes256Gcm, k.data_key());
        for (name, keys) in [
            ("epoch0", k.data_keys()),
            ("epoch2", rotated.clone()),
            ("xaes_epoch0", xaes),
        ] {
            group.bench_function(format!("{name}_seal_{size}"), |b| {
                b.iter_batched_ref(
                    fresh,
                    |buf| keys.seal_in_place(&ad, buf),
                    criterion::BatchSize::LargeInput,
                )
            });
            let mut sealed = fresh();
            keys.seal_in_place(&ad, &mut sealed);
            group.bench_function(format!("{name}_open_{size}"), |b| {
                b.iter_batched_ref(
                    || sealed.clone(),
                    |buf| keys.open_in_place(&ad, buf).map(|(p, _)| p.len()),
                    criterion::BatchSize::LargeInput,
                )
            });
        }
        group.finish();
    }
}

fn bench_pack(c: &mut Criterion) {
    let k = key();
    let keys = k.data_keys();
    let hasher = ContentHasher::new(&k);
    let corpus = mixed_corpus(PACK_BLOBS * BLOB_LEN, 5);
    let blobs: Vec<(BlobId, Vec<u8>, u32)> = corpus
        .chunks(BLOB_LEN)
        .map(|plain| {
            let id = hasher.chunk_id(plain);
            (
                id,
                seal_blob(&keys, BlobKind::Data, &id, plain, 3),
                plain.len() as u32,
            )
        })
        .collect();
    let sealed_total: usize = blobs.iter().map(|(_, s, _)| s.len()).sum();
    let mut group = c.benchmark_group("pack");
    configure(&mut group);
    group.throughput(Throughput::Bytes(sealed_total as u64));
    group.bench_function("write_16x1MiB_sealed", |b| {
        b.iter(|| {
            let mut w = PackWriter::new();
            for (id, sealed, raw_len) in &blobs {
                w.add(BlobKind::Data, *id, black_box(sealed), *raw_len);
            }
            w.finish(&keys)
        })
    });
    group.finish();
}

fn bench_index_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("index.sqlite");
    let cache = Cache::open(Some(&path)).expect("cache opens");
    let mut rng = XorShift::new(7);
    let mut ids = Vec::with_capacity(INDEX_ENTRIES);
    let calls = INDEX_ENTRIES / INDEX_FILE_ENTRIES;
    let mut call_secs = Vec::with_capacity(calls);
    let started = Instant::now();
    for file in 0..calls {
        let packs: Vec<(PackId, Vec<PackEntry>)> = (0..INDEX_FILE_ENTRIES / PACK_ENTRIES)
            .map(|_| {
                let pack = PackId::from_bytes(rng.array());
                let mut offset = 12u32;
                let entries = (0..PACK_ENTRIES)
                    .map(|_| {
                        let id = BlobId::from_bytes(rng.array());
                        ids.push(id);
                        let length = 1000 + rng.below(MIB as u64) as u32;
                        let e = PackEntry {
                            kind: BlobKind::Data,
                            id,
                            offset,
                            length,
                            raw_length: length + 100,
                        };
                        offset += length;
                        e
                    })
                    .collect();
                (pack, entries)
            })
            .collect();
        let t = Instant::now();
        cache
            .add_index(&format!("index-{file:04}"), &packs)
            .expect("add_index");
        // As `Index::sync` does after each batch.
        cache.compact().expect("compact");
        call_secs.push(t.elapsed().as_secs_f64());
    }
    let setup = started.elapsed().as_secs_f64();
    assert_eq!(
        cache.blob_count().expect("blob_count"),
        INDEX_ENTRIES as u64
    );
    drop(cache);
    let t = Instant::now();
    let cache = Cache::open(Some(&path)).expect("cache reopens");
    let reopen = t.elapsed().as_secs_f64();
    let tenth = calls / 10;
    let avg = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64 * 1000.0;
    eprintln!(
        "index_lookup setup: {} entries in {calls} add_index calls took {setup:.1} s \
         (first {tenth} calls {:.0} ms each, last {tenth} {:.0} ms each); \
         Cache::open of the {:.0} MB of run files took {:.2} s",
        ids.len(),
        avg(&call_secs[..tenth]),
        avg(&call_secs[calls - tenth..]),
        std::fs::read_dir(path.with_extension("runs"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum::<u64>()
            })
            .unwrap_or(0) as f64
            / 1e6,
        reopen,
    );
    assert_eq!(
        cache.blob_count().expect("blob_count"),
        INDEX_ENTRIES as u64
    );

    let mut group = c.benchmark_group("index_lookup");
    configure(&mut group);
    group.throughput(Throughput::Elements(LOOKUP_BATCH as u64));
    group.bench_function("present_1M", |b| {
        let mut rng = XorShift::new(7);
        b.iter(|| {
            for _ in 0..LOOKUP_BATCH {
                let id = &ids[rng.below(ids.len() as u64) as usize];
                let found = cache.lookup(black_box(id)).expect("lookup");
                assert!(found.is_some());
            }
        })
    });
    group.bench_function("absent_1M", |b| {
        let mut rng = XorShift::new(9);
        b.iter(|| {
            for _ in 0..LOOKUP_BATCH {
                let id = BlobId::from_bytes(rng.array());
                let found = cache.lookup(black_box(&id)).expect("lookup");
                assert!(found.is_none());
            }
        })
    });
    // `contains` is what deduplication asks for every chunk (Index::claim).
    group.bench_function("contains_present_1M", |b| {
        let mut rng = XorShift::new(9);
        b.iter(|| {
            for _ in 0..LOOKUP_BATCH {
                let id = &ids[rng.below(ids.len() as u64) as usize];
                assert!(cache.contains(black_box(id)).expect("contains"));
            }
        })
    });
    group.bench_function("contains_absent_1M", |b| {
        let mut rng = XorShift::new(11);
        b.iter(|| {
            for _ in 0..LOOKUP_BATCH {
                let id = BlobId::from_bytes(rng.array());
                assert!(!cache.contains(black_box(&id)).expect("contains"));
            }
        })
    });
    group.finish();
}

/// The private module keeps criterion's generated `pub fn` out of the
/// crate's public surface, so `missing_docs` has nothing to report.
mod group {
    use super::*;

    criterion_group!(
        name = benches;
        // Plot rendering would take longer than the measurements themselves.
        config = Criterion::default().without_plots();
        targets =
        bench_chunker,
        bench_seal,
        bench_hash,
        bench_compress,
        bench_blob,
        bench_pack,
        bench_index_lookup
    );
}
criterion_main!(group::benches);
