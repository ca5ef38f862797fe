//! One property check per fuzz target: hostile bytes in, no panic out, and
//! whatever decodes must re-encode to the same bytes.
//!
//! Feature `fuzz`. One library for both runners: the libFuzzer targets in
//! `fuzz/` (`cairn_fuzz::checks` re-exports this module) and the stable
//! replay test `tests/tests/fuzz_replay.rs`. It depends on `repo_core` and
//! on the CLI library's RDB checker ([`rdb`]); it must build in the fuzz
//! crate's own workspace, so it uses nothing else.
//!
//! Every check panics (assert) on a violated property, and is otherwise
//! silent. Inputs that carry parameters read them from a little-endian
//! prefix; the layout is documented on each function and the seeds in
//! `fuzz/seeds/<target>/` follow it.
//!
//! Encrypted structures are exercised twice: once with the raw input as the
//! ciphertext (must fail cleanly: nobody can forge a tag), and once with the
//! input sealed under [`master`]'s data key with the fixed [`NONCE`], so the
//! decoder behind the AEAD sees the hostile plaintext and must agree with the
//! plain decoder.
//!
//! Known open bugs (each has an `open-*` file in `fuzz/regressions/`) are
//! skipped when `CAIRN_FUZZ_SKIP_OPEN=1`, so long fuzzing runs can look past
//! them; the replay test never sets it. Remove a skip when its bug is fixed.

use std::fs;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use repo_core::unstable::SnapshotFile as _;
use repo_core::unstable::blob::{self, BlobError, BlobKind};
use repo_core::unstable::cache::runs::{self, Run};
use repo_core::unstable::chunker::{Chunker, ChunkerParams};
use repo_core::unstable::compress;
use repo_core::unstable::config::Config;
use repo_core::unstable::crypto::{self, CryptoError, KeyFile, MasterKey};
use repo_core::unstable::encoding;
use repo_core::unstable::format::{
    self, CONFIG_MAGIC, COPY_VERSION, EPOCH_VERSION, FILE_PREFIX_LEN, FILE_VERSION, FormatError,
    INDEX_MAGIC, MAGIC_LEN, MARK_MAGIC, MAX_CHUNK_SIZE, MAX_META_FILE, MAX_PACK_HEADER, PACK_MAGIC,
    PACK_TRAILER_LEN, REFERENCES_VERSION, REPOSITORY_VERSION, SNAPSHOT_MAGIC,
};
use repo_core::unstable::hash::ContentHasher;
use repo_core::unstable::id::{BlobId, ID_LEN, PackId, RepoId};
use repo_core::unstable::index::IndexFile;
use repo_core::unstable::mark::MarkFile;
use repo_core::unstable::pack::{PackEntry, PackHeader};
use repo_core::unstable::snapshot::Snapshot;
use repo_core::unstable::tree::Tree;

/// The Redis exporter's RDB stream checker, from the CLI's library.
pub use repo_cli::exporters::rdb;

/// A check: panics if `data` violates a property.
pub type Check = fn(&[u8]);

/// Every target: its name (= `fuzz_targets/<name>.rs`, `seeds/<name>/`,
/// `regressions/<name>/`) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("pack_header_decode", pack_header_decode),
    ("pack_from_pack", pack_from_pack),
    ("pack_from_tail", pack_from_tail),
    ("tree_decode", tree_decode),
    ("snapshot_decode", snapshot_decode),
    ("key_file_decode", key_file_decode),
    ("config_decode", config_decode),
    ("decompress", decompress),
    ("open_blob", open_blob),
    ("chunker", chunker),
    ("index_file_decode", index_file_decode),
    ("mark_decode", mark_decode),
    ("cache_run", cache_run),
    ("rdb_stream", rdb_stream),
];

/// Raw master secret of the fixed fuzzing key.
pub const MASTER: [u8; 32] = [0x42; 32];
/// Fixed nonce for deterministic sealing (never do this outside tests).
pub const NONCE: [u8; format::NONCE_LEN] = [0x24; format::NONCE_LEN];
/// Associated data of a sealed pack header (SPEC §7.2).
pub const PACK_HEADER_AD: &[u8] = b"cairn pack header v1";
/// Largest `max_len` the `decompress` and `open_blob` targets pick.
pub const MAX_FUZZ_LEN: u32 = MAX_CHUNK_SIZE as u32;

/// True when `CAIRN_FUZZ_SKIP_OPEN=1`: skip inputs that hit a known open bug.
/// No bug is open right now; a check guards an input with it while one is.
#[allow(dead_code)]
pub fn skip_open() -> bool {
    static SKIP: OnceLock<bool> = OnceLock::new();
    *SKIP.get_or_init(|| std::env::var_os("CAIRN_FUZZ_SKIP_OPEN").is_some_and(|v| v == "1"))
}

/// The fixed master key the encrypted targets (and their seeds) use.
pub fn master() -> &'static MasterKey {
    static KEY: OnceLock<MasterKey> = OnceLock::new();
    KEY.get_or_init(|| MasterKey::from_bytes(MASTER))
}

/// The blob hasher of [`master`].
pub fn hasher() -> &'static ContentHasher {
    static HASHER: OnceLock<ContentHasher> = OnceLock::new();
    HASHER.get_or_init(|| ContentHasher::new(master()))
}

fn key() -> &'static crypto::DataKeys {
    static KEYS: OnceLock<crypto::DataKeys> = OnceLock::new();
    KEYS.get_or_init(|| master().data_keys())
}

/// `crypto::seal` with [`NONCE`]: the stored bytes (`marker || payload`) are
/// taken as given, so a hostile compressed payload reaches `decompress`.
fn seal_stored(ad: &[u8], stored: &[u8]) -> Vec<u8> {
    crypto::seal_with_nonce(master().data_key(), &NONCE, ad, stored)
}

/// `magic || version || seal(prefix, raw(plaintext))`, as `blob::seal_file` with level 0.
fn seal_file(magic: &[u8; MAGIC_LEN], plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    format::write_prefix(&mut out, magic, FILE_VERSION);
    let sealed = seal_stored(&out, &compress::compress(plaintext, 0));
    out.extend_from_slice(&sealed);
    out
}

/// Associated data of a blob: kind byte and id (SPEC §6.3).
pub fn blob_ad(kind: BlobKind, id: &BlobId) -> Vec<u8> {
    let mut ad = vec![kind.to_byte()];
    ad.extend_from_slice(id.as_bytes());
    ad
}

/// The id a blob of `kind` with `plain` content gets.
pub fn blob_id(kind: BlobKind, plain: &[u8]) -> BlobId {
    match kind {
        BlobKind::Data => hasher().chunk_id(plain),
        BlobKind::Tree => hasher().tree_id(plain).into(),
    }
}

/// Splits a little-endian u64 off the front (zero-padded if short).
fn take_u64(data: &[u8]) -> (u64, &[u8]) {
    let n = data.len().min(8);
    let mut b = [0u8; 8];
    b[..n].copy_from_slice(&data[..n]);
    (u64::from_le_bytes(b), &data[n..])
}

/// Splits a little-endian u32 off the front (zero-padded if short).
fn take_u32(data: &[u8]) -> (u32, &[u8]) {
    let n = data.len().min(4);
    let mut b = [0u8; 4];
    b[..n].copy_from_slice(&data[..n]);
    (u32::from_le_bytes(b), &data[n..])
}

/// The error `from_pack`/`from_file` report for a plain-decoder error.
fn same_error(plain: &FormatError, wrapped: &BlobError) -> bool {
    matches!(wrapped, BlobError::Format(e) if e == plain)
}

/// Checks that `h` describes contiguous blobs from the end of the file
/// prefix up to exactly `blobs_end`.
fn assert_contiguous(h: &PackHeader, blobs_end: u64) {
    let mut next = FILE_PREFIX_LEN as u64;
    for e in &h.entries {
        assert_eq!(u64::from(e.offset), next, "pack entries not contiguous");
        next += u64::from(e.length);
    }
    assert_eq!(next, blobs_end, "pack entries do not end at the header");
}

/// Input: `blobs_end u64 || plain pack header`.
///
/// `PackHeader::decode` must not panic; what decodes re-encodes to the same
/// bytes and covers `[12, blobs_end)` exactly. The same header sealed into a
/// pack of `blobs_end` bytes (when `12 <= blobs_end <= 1 MiB`) must give the
/// same result through `from_pack` and `from_tail`, and a tail one byte short
/// must ask for exactly the bytes it lacks.
pub fn pack_header_decode(data: &[u8]) {
    let (blobs_end, plain) = take_u64(data);
    let r = PackHeader::decode(plain, blobs_end);
    if let Ok(h) = &r {
        let enc = h.encode();
        assert_eq!(enc, plain, "pack header encoding is not canonical");
        assert_eq!(PackHeader::decode(&enc, blobs_end).as_ref(), Ok(h));
        assert_contiguous(h, blobs_end);
    }
    if !(FILE_PREFIX_LEN as u64..=1 << 20).contains(&blobs_end) {
        return;
    }
    let mut pack = Vec::new();
    format::write_prefix(&mut pack, &PACK_MAGIC, FILE_VERSION);
    pack.resize(blobs_end as usize, 0);
    let sealed = seal_stored(PACK_HEADER_AD, &compress::compress(plain, 0));
    pack.extend_from_slice(&sealed);
    pack.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    let whole = PackHeader::from_pack(key(), &pack);
    let too_large = plain.len() > MAX_PACK_HEADER;
    match (&r, &whole) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "from_pack disagrees with decode"),
        (Err(a), Err(b)) => assert!(
            too_large || same_error(a, b),
            "from_pack: {b:?}, decode: {a:?}"
        ),
        (a, b) => panic!("from_pack {b:?} but decode {a:?}"),
    }
    let need = sealed.len() + PACK_TRAILER_LEN;
    let len = pack.len() as u64;
    let tail = &pack[pack.len() - need..];
    assert_eq!(
        PackHeader::from_tail(key(), tail, len),
        whole.map(Ok),
        "exact tail"
    );
    let short = &pack[pack.len() - need + 1..];
    assert_eq!(
        PackHeader::from_tail(key(), short, len),
        Ok(Err(need as u64)),
        "short tail"
    );
}

/// Input: a whole pack file, sealed (if at all) under [`master`].
///
/// `from_pack` must not panic. When it succeeds, the entries cover the blob
/// area exactly, `from_tail` agrees for the exact tail and asks for more on
/// a shorter one, and every blob opens or fails cleanly.
pub fn pack_from_pack(data: &[u8]) {
    let len = data.len() as u64;
    let whole = PackHeader::from_pack(key(), data);
    if data.len() >= FILE_PREFIX_LEN + PACK_TRAILER_LEN {
        // Same bytes without the magic check: errors may differ, success may not.
        let t = PackHeader::from_tail(key(), data, len);
        if let Ok(h) = &whole {
            assert_eq!(
                t.as_ref(),
                Ok(&Ok(h.clone())),
                "from_tail(whole) disagrees with from_pack"
            );
        }
    }
    let Ok(h) = whole else { return };
    let (hlen, _) = take_u32(&data[data.len() - PACK_TRAILER_LEN..]);
    let need = hlen as usize + PACK_TRAILER_LEN;
    assert_contiguous(&h, len - need as u64);
    let tail = &data[data.len() - need..];
    assert_eq!(
        PackHeader::from_tail(key(), tail, len),
        Ok(Ok(h.clone())),
        "exact tail"
    );
    let short = &data[data.len() - need + 1..];
    assert_eq!(
        PackHeader::from_tail(key(), short, len),
        Ok(Err(need as u64)),
        "short tail"
    );
    for e in &h.entries {
        let start = e.offset as usize;
        let sealed = &data[start..start + e.length as usize];
        let raw = e.raw_length.min(MAX_FUZZ_LEN);
        if let Ok(p) = blob::open_blob(key(), hasher(), e.kind, &e.id, sealed, raw) {
            assert_eq!(p.len(), raw as usize);
            assert_eq!(blob_id(e.kind, &p), e.id);
        }
    }
}

/// Input: `pack_len u64 || tail`.
///
/// `from_tail` is called with whatever a backend returned for "the last n
/// bytes of a pack of pack_len bytes"; it must not panic, and a request for
/// more bytes must be for more than it got and no more than the pack holds.
pub fn pack_from_tail(data: &[u8]) {
    let (pack_len, tail) = take_u64(data);
    match PackHeader::from_tail(key(), tail, pack_len) {
        Ok(Err(need)) => {
            assert!(
                need > tail.len() as u64,
                "asks for {need} bytes but has {}",
                tail.len()
            );
            assert!(
                need + FILE_PREFIX_LEN as u64 <= pack_len,
                "asks for {need} of a {pack_len}-byte pack"
            );
        }
        Ok(Ok(h)) => {
            let (hlen, _) = take_u32(&tail[tail.len() - PACK_TRAILER_LEN..]);
            assert_contiguous(&h, pack_len - u64::from(hlen) - PACK_TRAILER_LEN as u64);
        }
        Err(_) => {}
    }
}

/// Input: an encoded tree (SPEC §9.2).
///
/// `Tree::decode` must not panic. A decoded tree re-encodes to the input
/// (the encoding is canonical), decodes back to itself, is already in the
/// order `Tree::sort` produces (nodes and each node's xattrs), and every node
/// is found by `get`.
pub fn tree_decode(data: &[u8]) {
    let Ok(t) = Tree::decode(data) else { return };
    let enc = t.encode();
    assert_eq!(enc, data, "tree encoding is not canonical");
    assert_eq!(Tree::decode(&enc).as_ref(), Ok(&t));
    let mut sorted = t.clone();
    sorted.sort();
    assert_eq!(
        sorted, t,
        "Tree::decode accepted a tree that Tree::sort reorders"
    );
    for n in &t.nodes {
        assert_eq!(t.get(&n.name), Some(n));
    }
}

/// Input: an encoded snapshot body (SPEC §10).
///
/// `Snapshot::decode_body` must not panic and re-encodes what it accepts
/// (as a version-1 and as a version-3 body); `Snapshot::from_file` on the same bytes sealed as a snapshot
/// file agrees with it; on the raw bytes it does not panic.
pub fn snapshot_decode(data: &[u8]) {
    // A body of a version-1 file (no `original`); the same bytes as a
    // version-3 body must be canonical too.
    let r = Snapshot::decode_body(FILE_VERSION, data);
    if let Ok(s) = &r {
        assert_eq!(
            s.encode_body(),
            (FILE_VERSION, data.to_vec()),
            "snapshot encoding is not canonical"
        );
    }
    if let Ok(s) = Snapshot::decode_body(COPY_VERSION, data) {
        assert_eq!(
            s.encode_body(),
            (COPY_VERSION, data.to_vec()),
            "copied snapshot encoding is not canonical"
        );
    }
    let f = Snapshot::from_file(key(), &seal_file(&SNAPSHOT_MAGIC, data));
    match (&r, &f) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert!(
            data.len() > MAX_META_FILE || same_error(a, b),
            "from_file {b:?}, decode {a:?}"
        ),
        (a, b) => panic!("from_file {b:?} but decode {a:?}"),
    }
    // Raw bytes as a file: authentication fails unless they are a real
    // snapshot file sealed under the fuzzing key (as a seed may be).
    let _ = Snapshot::from_file(key(), data);
}

/// Input: a key file (SPEC §4).
///
/// `KeyFile::decode` must not panic and re-encodes what it accepts. (No
/// `unlock`: argon2 with the file's parameters is slow by design.)
pub fn key_file_decode(data: &[u8]) {
    let Ok(k) = KeyFile::decode(data) else { return };
    let enc = k.encode();
    assert_eq!(enc, data, "key file encoding is not canonical");
    assert_eq!(KeyFile::decode(&enc).as_ref(), Ok(&k));
}

/// Input: either a config file or a config body (SPEC §5); both parsers run.
///
/// `peek_id` returns the clear id bytes; `Config::decode_body`
/// re-encodes what it accepts, `validate` never panics and its profiles
/// build chunkers; `from_file` on the body sealed as a config file accepts
/// exactly the bodies that decode and validate; on the raw bytes it does not
/// panic.
pub fn config_decode(data: &[u8]) {
    let id_range = FILE_PREFIX_LEN..FILE_PREFIX_LEN + ID_LEN;
    match Config::peek_id(data) {
        Ok(id) => assert_eq!(&id.as_bytes()[..], &data[id_range]),
        Err(_) => assert!(
            data.len() < id_range.end
                || !data.starts_with(&CONFIG_MAGIC)
                || !(1..=REPOSITORY_VERSION)
                    .any(|v| data[MAGIC_LEN..FILE_PREFIX_LEN] == v.to_le_bytes()),
            "peek_id refused a well-formed prefix"
        ),
    }
    let _ = Config::from_file(key(), data);

    let r = Config::decode_body(data);
    if let Ok(c) = &r {
        assert_eq!(c.encode_body(), data, "config encoding is not canonical");
        if c.validate().is_ok() {
            for (i, p) in c.chunker_profiles.iter().enumerate() {
                assert!(
                    Chunker::new(p.params, 0).is_ok(),
                    "validated profile {i} rejected by Chunker::new"
                );
                assert!(c.profile(&p.name).is_some_and(|j| usize::from(j) <= i));
            }
        }
    }
    let id = r
        .as_ref()
        .map_or(RepoId::from_bytes([0; ID_LEN]), |c| c.repo_id);
    // The prefix carries the body's version, as `Config::to_file` writes it.
    let version = r.as_ref().map_or(REPOSITORY_VERSION, |c| c.version);
    let mut file = Vec::new();
    format::write_prefix(&mut file, &CONFIG_MAGIC, version);
    file.extend_from_slice(id.as_bytes());
    if version >= EPOCH_VERSION {
        // The cipher byte of a version-4 config (SPEC §29.4).
        file.push(0);
    }
    let sealed = seal_stored(&file, &compress::compress(data, 0));
    file.extend_from_slice(&sealed);
    match (&r, Config::from_file(key(), &file)) {
        (Ok(a), Ok(b)) => assert_eq!(a, &b),
        (Ok(a), Err(e)) => assert!(
            a.validate().is_err(),
            "valid config refused by from_file: {e:?}"
        ),
        (Err(a), Err(b)) => assert!(
            data.len() > MAX_META_FILE || same_error(a, &b),
            "from_file {b:?}, decode {a:?}"
        ),
        (Err(a), Ok(_)) => panic!("from_file accepted a body that decode refuses: {a:?}"),
    }
}

/// Input: `max_len u32 || marker || payload` (`max_len` taken modulo
/// [`MAX_FUZZ_LEN`] + 1).
///
/// `decompress` must not panic and never returns more than `max_len`; its
/// output is reproducible with `max_len` equal to its length, refused with
/// one byte less, equals the payload for raw objects, and survives a
/// compress/decompress round trip.
pub fn decompress(data: &[u8]) {
    let (max, stored) = take_u32(data);
    let max_len = (max % (MAX_FUZZ_LEN + 1)) as usize;
    let Ok(out) = compress::decompress(stored, max_len) else {
        return;
    };
    assert!(
        out.len() <= max_len,
        "{} bytes out, limit {max_len}",
        out.len()
    );
    if stored[0] == compress::MARKER_RAW {
        assert_eq!(out, stored[1..]);
    }
    assert_eq!(
        compress::decompress(stored, out.len()).as_ref(),
        Ok(&out),
        "tight limit refused"
    );
    if !out.is_empty() {
        assert!(
            compress::decompress(stored, out.len() - 1).is_err(),
            "limit exceeded"
        );
    }
    if out.len() <= 1 << 20 {
        let again = compress::compress(&out, 1);
        assert_eq!(
            compress::decompress(&again, out.len()).as_ref(),
            Ok(&out),
            "round trip"
        );
    }
}

/// Input: `kind u8 (low bit) || raw_len u32 || marker || payload`
/// (`raw_len` taken modulo [`MAX_FUZZ_LEN`] + 1).
///
/// The stored bytes are sealed as a blob under [`master`] with the id of
/// their plaintext; `open_blob` must return exactly what `decompress` does,
/// or the length mismatch; the wrong kind, the wrong id and raw unsealed
/// bytes fail authentication; a blob sealed under an id that is not its hash
/// is caught.
pub fn open_blob(data: &[u8]) {
    let kind = if data.first().is_some_and(|b| b & 1 == 1) {
        BlobKind::Tree
    } else {
        BlobKind::Data
    };
    let (raw, stored) = take_u32(data.get(1..).unwrap_or_default());
    let raw_len = raw % (MAX_FUZZ_LEN + 1);
    let expected = compress::decompress(stored, raw_len as usize);
    let id = match &expected {
        Ok(p) => blob_id(kind, p),
        Err(_) => BlobId::from_bytes([0xab; ID_LEN]),
    };
    let sealed = seal_stored(&blob_ad(kind, &id), stored);
    let r = blob::open_blob(key(), hasher(), kind, &id, &sealed, raw_len);
    match (&expected, &r) {
        (Err(e), Err(b)) => assert!(same_error(e, b), "open_blob {b:?}, decompress {e:?}"),
        (Ok(p), Ok(q)) => {
            assert_eq!(p, q);
            assert_eq!(p.len(), raw_len as usize);
        }
        (Ok(p), Err(BlobError::LengthMismatch { expected, actual })) => {
            assert_eq!((*expected, *actual), (u64::from(raw_len), p.len() as u64));
            assert_ne!(p.len(), raw_len as usize);
        }
        (e, b) => panic!("open_blob {b:?}, decompress {e:?}"),
    }
    let other = if kind == BlobKind::Data {
        BlobKind::Tree
    } else {
        BlobKind::Data
    };
    let auth = Err(BlobError::Crypto(CryptoError::AuthFailed));
    assert_eq!(
        blob::open_blob(key(), hasher(), other, &id, &sealed, raw_len),
        auth,
        "wrong kind"
    );
    let mut wrong = *id.as_bytes();
    wrong[0] ^= 1;
    let wrong = BlobId::from_bytes(wrong);
    assert_eq!(
        blob::open_blob(key(), hasher(), kind, &wrong, &sealed, raw_len),
        auth,
        "wrong id"
    );
    assert!(
        blob::open_blob(key(), hasher(), kind, &id, stored, raw_len).is_err(),
        "unsealed bytes opened"
    );
    assert!(
        blob::open_object(key(), b"", stored, raw_len as usize).is_err(),
        "unsealed bytes opened"
    );
    if r.is_ok() {
        let lie = seal_stored(&blob_ad(kind, &wrong), stored);
        assert_eq!(
            blob::open_blob(key(), hasher(), kind, &wrong, &lie, raw_len),
            Err(BlobError::HashMismatch)
        );
    }
}

/// A reader that returns pieces of 1..=`cap` bytes, sizes from a xorshift.
struct Dribble<'a> {
    data: &'a [u8],
    state: u64,
    cap: usize,
}

impl Read for Dribble<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let n = (1 + (self.state % self.cap as u64) as usize)
            .min(out.len())
            .min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Input: `min u32 || avg u32 || max u32 || seed u64 || data`.
///
/// `validate` and `Chunker::new` agree on the parameters; when they are
/// invalid or large, small valid ones are derived from the same numbers.
/// `split_slice`, `stream` and `stream_batches` (with right, wrong and no
/// size hints, reading in dribbles) give the same chunks; they concatenate
/// to the input and every chunk but the last is within `[min, max]`.
pub fn chunker(data: &[u8]) {
    let (min, rest) = take_u32(data);
    let (avg, rest) = take_u32(rest);
    let (max, rest) = take_u32(rest);
    let (seed, input) = take_u64(rest);
    let p = ChunkerParams { min, avg, max };
    let valid = p.validate().is_ok();
    assert_eq!(
        valid,
        Chunker::new(p, seed).is_ok(),
        "validate and Chunker::new disagree on {p:?}"
    );
    let p = if valid && max <= 1 << 16 {
        p
    } else {
        let min = 64 + 2 * (min % 97);
        let avg = 256 + 2 * (avg % 512);
        ChunkerParams {
            min,
            avg,
            max: avg.max(1024) + 2 * (max % 2048),
        }
    };
    let c = Chunker::new(p, seed).expect("derived chunker parameters are valid");

    let sliced: Vec<&[u8]> = c.split_slice(input).collect();
    assert_eq!(
        sliced.concat(),
        input,
        "split_slice chunks do not concatenate to the input"
    );
    if let Some((_, init)) = sliced.split_last() {
        for ch in init {
            assert!(
                (p.min as usize..=p.max as usize).contains(&ch.len()),
                "chunk of {} bytes, {p:?}",
                ch.len()
            );
        }
    }
    assert!(
        sliced
            .iter()
            .all(|ch| !ch.is_empty() && ch.len() <= p.max as usize),
        "empty or oversized chunk"
    );

    let dribble = |salt: u64| Dribble {
        data: input,
        state: seed | salt | 1,
        cap: 2 * p.max as usize,
    };
    let mut streamed = Vec::new();
    let total = c
        .stream::<_, io::Error>(dribble(2), |ch| {
            streamed.push(ch.to_vec());
            Ok(())
        })
        .expect("reading from a slice cannot fail");
    assert_eq!(total, input.len() as u64);
    assert_eq!(streamed, sliced, "stream and split_slice disagree");

    let len = input.len() as u64;
    for (i, hint) in [
        None,
        Some(len),
        Some(0),
        Some(len / 2),
        Some(len * 2 + 1),
        Some(u64::MAX),
    ]
    .into_iter()
    .enumerate()
    {
        let mut batched = Vec::new();
        let total = c
            .stream_batches::<_, io::Error>(dribble(i as u64 * 4), hint, |batch| {
                assert!(!batch.is_empty(), "empty batch");
                batched.extend(batch.iter().map(|ch| ch.to_vec()));
                Ok(())
            })
            .expect("reading from a slice cannot fail");
        assert_eq!(total, len);
        assert_eq!(
            batched, sliced,
            "stream_batches (hint {hint:?}) and split_slice disagree"
        );
    }
}

/// `from_file` on a body sealed as a file must agree with `decode` of the
/// body (bodies over [`MAX_META_FILE`] may fail differently).
fn assert_file_agrees<T: PartialEq + std::fmt::Debug>(
    what: &str,
    len: usize,
    plain: &Result<T, FormatError>,
    file: &Result<T, BlobError>,
) {
    match (plain, file) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{what}: from_file disagrees with decode"),
        (Err(a), Err(b)) => assert!(
            len > MAX_META_FILE || same_error(a, b),
            "{what}: from_file {b:?}, decode {a:?}"
        ),
        (a, b) => panic!("{what}: from_file {b:?} but decode {a:?}"),
    }
}

/// Encoded size of one pack entry in a bincode body: integers are fixed
/// width, so every entry has the same size.
fn entry_len() -> usize {
    encoding::encode(&PackEntry {
        kind: BlobKind::Data,
        id: BlobId::from_bytes([0; ID_LEN]),
        offset: 0,
        length: 0,
        raw_length: 0,
    })
    .len()
}

/// Input: an encoded index file body (SPEC §8), or a whole index file.
///
/// Decoding a version-1 body must not panic and re-encodes what it
/// accepts; the body's size is exactly what its counts say (so
/// `entry_count` counts every entry and nothing else hides in it); the
/// index survives `to_file`/`from_file`; `from_file` on the body sealed as
/// an index file agrees with `decode`; on the raw bytes it does not panic.
/// As a version-5 body (with references, §8) it must not panic either, and
/// what it accepts re-encodes canonically and survives `to_file`/`from_file`.
pub fn index_file_decode(data: &[u8]) {
    if let Ok(f) = IndexFile::decode_versioned(REFERENCES_VERSION, data) {
        if !f.references.is_empty() {
            assert_eq!(
                f.encode_versioned(),
                (REFERENCES_VERSION, data.to_vec()),
                "index encoding (version 5) is not canonical"
            );
        }
        assert_eq!(
            IndexFile::from_file(key(), &f.to_file(key())).as_ref(),
            Ok(&f),
            "index (version 5) to_file/from_file round trip"
        );
    }
    let r = IndexFile::decode_versioned(FILE_VERSION, data);
    if let Ok(f) = &r {
        assert_eq!(
            f.encode_versioned(),
            (FILE_VERSION, data.to_vec()),
            "index encoding is not canonical"
        );
        let entries: usize = f.packs.iter().map(|p| p.entries.len()).sum();
        assert_eq!(f.entry_count(), entries);
        // Two counts; per pack an id and a count; fixed-size entries.
        assert_eq!(
            data.len(),
            16 + f.packs.len() * (ID_LEN + 8)
                + f.entry_count() * entry_len()
                + f.supersedes.len() * ID_LEN,
            "index body size does not match its counts"
        );
        assert_eq!(
            IndexFile::from_file(key(), &f.to_file(key())).as_ref(),
            Ok(f),
            "index to_file/from_file round trip"
        );
    }
    let file = IndexFile::from_file(key(), &seal_file(&INDEX_MAGIC, data));
    assert_file_agrees("index", data.len(), &r, &file);
    let _ = IndexFile::from_file(key(), data);
}

/// Input: an encoded prune mark body (SPEC §22), or a whole mark file.
///
/// `encoding::decode::<MarkFile>` must not panic and re-encodes what it
/// accepts; the body's size is exactly what its counts say; the mark
/// survives `to_file`/`from_file`; `from_file` on the body sealed as a mark
/// file agrees with `decode`; on the raw bytes it does not panic.
pub fn mark_decode(data: &[u8]) {
    let r = encoding::decode::<MarkFile>(data, "mark");
    if let Ok(m) = &r {
        assert_eq!(encoding::encode(m), data, "mark encoding is not canonical");
        let entries: usize = m.packs.iter().map(|p| p.entries.len()).sum();
        // The time, the pack count; per pack an id and a count; entries.
        assert_eq!(
            data.len(),
            16 + m.packs.len() * (ID_LEN + 8) + entries * entry_len(),
            "mark body size does not match its counts"
        );
        assert_eq!(
            MarkFile::from_file(key(), &m.to_file(key())).as_ref(),
            Ok(m),
            "mark to_file/from_file round trip"
        );
    }
    let file = MarkFile::from_file(key(), &seal_file(&MARK_MAGIC, data));
    assert_file_agrees("mark", data.len(), &r, &file);
    let _ = MarkFile::from_file(key(), data);
}

/// A fresh directory under the system temporary directory, removed on drop
/// (also when a check panics).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cairn-fuzz-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create a temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Records of a run file the checks look at, and entries they build a run
/// from, at most: every record costs a few positioned reads, and more
/// records only repeat the same fence blocks.
const MAX_RUN_RECORDS: usize = 768;

/// Ids near `id`: the same fence prefix and filter slot with another last
/// byte (they pass the filter whenever `id` does, so the block search
/// decides), and ids with another prefix.
fn neighbours(id: &[u8; 32]) -> [[u8; 32]; 4] {
    let mut out = [*id; 4];
    out[0][31] = id[31].wrapping_add(1);
    out[1][31] = id[31].wrapping_sub(1);
    out[2][7] ^= 0x10;
    out[3][0] = id[0].wrapping_add(0x10);
    out
}

/// Input: `mode u8 || rest`. An even `mode` makes `rest` a run file of the
/// local cache (SPEC §12.1) for `cache_run_file`; an odd one makes it a
/// list of entries for `cache_run_build`, in `1 + (mode >> 1) % 8` packs.
pub fn cache_run(data: &[u8]) {
    match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => {
            cache_run_build(rest, 1 + usize::from(mode >> 1) % 8);
        }
        Some((_, rest)) => cache_run_file(rest),
        None => {}
    }
}

/// `Run::open` on hostile bytes must not panic. When it accepts them, the
/// counts match the header, the pack table reads back through `pack` and
/// `for_each_pack`, a pack number out of range errors, `find` never fails
/// and only ever returns the record of the id asked for (for every id in
/// the record area and its neighbours). When the file is exactly what
/// `runs::build` writes for its own records (sorted, fence and filter
/// right), `find` returns each record.
fn cache_run_file(bytes: &[u8]) {
    let dir = TempDir::new();
    fs::write(dir.0.join("run"), bytes).expect("write the run file");
    let Ok(run) = Run::open(&dir.0, "run") else {
        return;
    };
    let at = |i: usize| take_u64(&bytes[i..]).0;
    let (records, packs, records_offset) = (at(16), at(24), at(32) as usize);
    assert_eq!(run.name(), "run");
    assert_eq!(run.records(), records);
    assert!(run.memory() <= bytes.len(), "more memory than file");
    let mut table = Vec::new();
    run.for_each_pack(|p| table.push(p))
        .expect("the pack table is within the file");
    assert_eq!(table.len() as u64, packs);
    for (no, p) in table.iter().enumerate().take(64) {
        assert_eq!(run.pack(no as u32).ok(), Some(*p), "pack {no}");
    }
    assert!(
        run.pack(packs as u32).is_err(),
        "pack number {packs} of {packs}"
    );
    assert!(run.pack(u32::MAX).is_err());

    let record = |i: usize| &bytes[records_offset + i * runs::RECORD_LEN..][..runs::RECORD_LEN];
    let shown = (records as usize).min(MAX_RUN_RECORDS);
    let ids: Vec<[u8; 32]> = (0..shown)
        .map(|i| record(i)[..32].try_into().expect("32 bytes"))
        .collect();
    let find = |id: &[u8; 32]| {
        let r = run.find(id).expect("find reads within the file");
        if let Some(r) = &r {
            assert_eq!(&r.id, id, "find returned another id's record");
        }
        r
    };
    for (i, id) in ids.iter().enumerate() {
        find(id);
        if i < 256 {
            for n in neighbours(id) {
                find(&n);
            }
        }
    }
    find(&[0; 32]);
    find(&[0xff; 32]);

    // Is the file what `build` writes for these records?
    let sorted = ids.windows(2).all(|w| w[0] < w[1]);
    let entries: Option<Vec<(u32, PackEntry)>> = (0..shown)
        .map(|i| {
            let b = record(i);
            let kind = BlobKind::from_byte(b[32]).filter(|_| b[33..36] == [0; 3])?;
            let u = |o: usize| take_u32(&b[o..]).0;
            let no = u(36);
            (u64::from(no) < packs).then_some((
                no,
                PackEntry {
                    kind,
                    id: BlobId::from_bytes(ids[i]),
                    offset: u(40),
                    length: u(44),
                    raw_length: u(48),
                },
            ))
        })
        .collect();
    let Some(entries) = entries.filter(|_| sorted && shown as u64 == records) else {
        return;
    };
    let mut grouped: Vec<(PackId, Vec<PackEntry>)> =
        table.iter().map(|p| (*p, Vec::new())).collect();
    for (no, e) in &entries {
        grouped[*no as usize].1.push(*e);
    }
    let (name, n) = runs::build(&dir.0, &grouped).expect("build a run");
    assert_eq!(n, records);
    if fs::read(dir.0.join(name)).expect("read the rebuilt run") != bytes {
        return;
    }
    for (no, e) in &entries {
        let r = find(e.id.as_bytes()).expect("a canonical run finds its record");
        assert_eq!((r.pack_no, r.entry()), (*no, Some(*e)));
    }
}

/// Input: 3-byte groups `a b c` (the first [`MAX_RUN_RECORDS`]), one blob
/// entry each (group `i` in pack
/// `i % packs`). The id has prefix `a >> 4, 0…, a & 15` (many ties, across
/// fence blocks too), filter words from `a` and `b`, and last byte `c`, so
/// ids that differ only in `c` share the prefix and the filter slot.
///
/// `runs::build` writes a run that `Run::open` accepts; `find` returns
/// every id with the first location listed (duplicates: the lowest pack,
/// then the earliest entry), `pack` maps its pack number to the pack id,
/// and ids not built (neighbours of built ones) are not found. The run
/// merged with itself (`runs::merge`) holds the same records, the pack
/// table twice, and each record from the first copy.
fn cache_run_build(data: &[u8], packs: usize) {
    let id_of = |g: &[u8]| {
        let mut id = [0u8; 32];
        id[0] = g[0] >> 4;
        id[7] = g[0] & 15;
        id[8..16].fill(g[1]);
        id[16..24].fill(g[0] ^ g[1].rotate_left(3));
        id[31] = g[2];
        id
    };
    let mut table: Vec<(PackId, Vec<PackEntry>)> = (0..packs)
        .map(|p| (PackId::from_bytes([p as u8 + 1; 32]), Vec::new()))
        .collect();
    for (i, g) in data.chunks_exact(3).take(MAX_RUN_RECORDS).enumerate() {
        table[i % packs].1.push(PackEntry {
            kind: if g[2] & 1 == 1 {
                BlobKind::Tree
            } else {
                BlobKind::Data
            },
            id: BlobId::from_bytes(id_of(g)),
            offset: i as u32,
            length: u32::from(g[1]),
            raw_length: i as u32 * 3,
        });
    }
    // The first location in pack order wins.
    let mut expected: std::collections::BTreeMap<[u8; 32], (u32, PackEntry)> = Default::default();
    for (no, (_, entries)) in table.iter().enumerate() {
        for e in entries {
            expected.entry(*e.id.as_bytes()).or_insert((no as u32, *e));
        }
    }
    let dir = TempDir::new();
    let (name, n) = runs::build(&dir.0, &table).expect("build a run");
    assert_eq!(n, expected.len() as u64, "records in the built run");
    let run = Run::open(&dir.0, &name).expect("open a built run");
    assert_eq!(run.records(), n);
    let mut listed = Vec::new();
    run.for_each_pack(|p| listed.push(p)).expect("pack table");
    assert!(listed.iter().eq(table.iter().map(|(p, _)| p)));
    assert!(run.pack(packs as u32).is_err());
    for (id, (no, e)) in &expected {
        assert!(run.may_contain(id), "the filter misses a built id");
        let r = run
            .find(id)
            .expect("find on a built run")
            .expect("a built id is found");
        assert_eq!((r.pack_no, r.entry()), (*no, Some(*e)), "wrong location");
        assert_eq!(run.pack(r.pack_no).ok(), Some(table[*no as usize].0));
        for m in neighbours(id) {
            if !expected.contains_key(&m) {
                assert_eq!(run.find(&m).expect("find"), None, "found an id not built");
            }
        }
    }
    // Merged with itself: the pack table twice, every record once, from the
    // first run.
    let (merged, m) = runs::merge(&dir.0, &[&run, &run]).expect("merge runs");
    assert_eq!(m, n, "records in the merged run");
    let twice = Run::open(&dir.0, &merged).expect("open a merged run");
    let mut listed = Vec::new();
    twice.for_each_pack(|p| listed.push(p)).expect("pack table");
    assert!(listed.iter().eq(table.iter().chain(&table).map(|(p, _)| p)));
    for (id, (no, e)) in &expected {
        let r = twice.find(id).expect("find").expect("a merged id is found");
        assert_eq!((r.pack_no, r.entry()), (*no, Some(*e)), "merged location");
    }
    drop(run);
    cache_run_file(&fs::read(dir.0.join(&name)).expect("read the built run"));
}

/// Splits a u64 off a xorshift state.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Reads `stream` through `rdb::RdbReader`, whole (`seed` None: the source
/// gives everything at once) or in pieces: the source and the caller's
/// buffer both of random sizes. Returns what came out and the verdict: the
/// version, or the error's text.
fn rdb_read(stream: &[u8], seed: Option<u64>) -> (Vec<u8>, Result<u32, String>) {
    let src: Box<dyn Read + '_> = match seed {
        None => Box::new(stream),
        Some(s) => Box::new(Dribble {
            data: stream,
            state: s | 1,
            cap: 64,
        }),
    };
    let mut r = match rdb::RdbReader::new(src) {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Err(e.to_string())),
    };
    let mut state = seed.unwrap_or(0) ^ 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; stream.len().max(32) + 1];
    let mut out = Vec::new();
    loop {
        let n = match seed {
            None => buf.len(),
            Some(_) => 1 + (xorshift(&mut state) % 32) as usize,
        };
        match r.read(&mut buf[..n]) {
            Ok(0) => return (out, Ok(r.version())),
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e) => return (out, Err(e.to_string())),
        }
    }
}

/// The RDB stream rule, written plainly: `REDIS` and 4 digits, the `0xFF`
/// opcode right before an 8-byte trailer, which is 0 (checksums off) or
/// the CRC-64 of everything before it.
fn rdb_valid(s: &[u8]) -> bool {
    let n = s.len();
    if n < rdb::HEADER_LEN + 1 + rdb::TRAILER_LEN || rdb::parse_header(s).is_err() {
        return false;
    }
    let trailer = take_u64(&s[n - rdb::TRAILER_LEN..]).0;
    s[n - rdb::TRAILER_LEN - 1] == 0xff
        && (trailer == 0 || trailer == rdb::crc64::update(0, &s[..n - rdb::TRAILER_LEN]))
}

/// `stream` gives the same verdict read whole and in random pieces, the
/// verdict is [`rdb_valid`]'s, the version is the header's, an accepted
/// stream comes out unchanged, and a refused one never lets its last 8
/// bytes (the unverified trailer) out.
fn rdb_agree(stream: &[u8], seed: u64) {
    let (whole_out, whole) = rdb_read(stream, None);
    let (piece_out, pieces) = rdb_read(stream, Some(seed));
    assert_eq!(whole, pieces, "whole and piecewise reads disagree");
    assert_eq!(whole_out, piece_out);
    let valid = rdb_valid(stream);
    assert_eq!(
        whole.is_ok(),
        valid,
        "verdict {whole:?} for a stream the rule calls valid={valid}"
    );
    match whole {
        Ok(v) => {
            assert_eq!(Ok(v), rdb::parse_header(stream).map_err(|e| e.to_string()));
            assert_eq!(whole_out, stream, "an accepted RDB came out changed");
        }
        Err(_) => assert!(
            stream.starts_with(&whole_out)
                && whole_out.len() + rdb::TRAILER_LEN <= stream.len().max(rdb::TRAILER_LEN),
            "a refused RDB let {} of {} bytes out",
            whole_out.len(),
            stream.len()
        ),
    }
}

/// Input: `seed u64 || stream`.
///
/// The stream goes through `rdb_agree`. Then a valid RDB is built from it
/// (header version `seed % 10000`, the stream as the body, `0xFF`, the
/// right CRC-64) and must pass; truncations of it (at the end, inside the
/// trailer, before the opcode, at a point from `seed`) and one with a
/// flipped trailer bit go through `rdb_agree` as well.
pub fn rdb_stream(data: &[u8]) {
    let (seed, stream) = take_u64(data);
    rdb_agree(stream, seed);

    let mut built = rdb::seal((seed % 10_000) as u32, stream);
    assert!(rdb_valid(&built));
    assert!(rdb_read(&built, None).1.is_ok(), "a valid RDB refused");
    rdb_agree(&built, seed);
    let n = built.len();
    for cut in [
        n - 1,
        n - rdb::TRAILER_LEN,
        n - rdb::TRAILER_LEN - 1,
        rdb::HEADER_LEN,
        (seed >> 32) as usize % n,
    ] {
        rdb_agree(&built[..cut], seed.rotate_left(7));
    }
    built[n - 1 - (seed % 8) as usize] ^= 1 << ((seed >> 8) % 8);
    rdb_agree(&built, seed.rotate_left(13));
}
