//! zstd compression, stored raw when it does not shrink (SPEC §6.2), and
//! with a per-repository dictionary for small blobs (SPEC §6.4).

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use crate::format::FormatError;
use crate::id::{BlobId, DictId};

/// Marker byte before the payload inside every sealed object (SPEC §6.2).
pub const MARKER_RAW: u8 = 0;
/// Marker: the payload is one zstd frame.
pub const MARKER_ZSTD: u8 = 1;
/// Marker: a [`DictRef`], then one zstd frame made with that dictionary
/// (SPEC §6.4; format version 2).
pub const MARKER_ZSTD_DICT: u8 = 2;
/// Length of the dictionary reference after [`MARKER_ZSTD_DICT`] (SPEC §6.4).
pub const DICT_REF_LEN: usize = 8;
/// Marker: a count, that many data blob ids, then one zstd frame made with
/// those blobs' plaintext, concatenated, as its raw-content prefix (SPEC
/// §6.6; data blobs of version-2 repositories).
pub const MARKER_ZSTD_DELTA: u8 = 3;
/// The most reference blobs one delta payload names (SPEC §6.6).
pub const MAX_DELTA_REFS: usize = 4;

/// How a blob names the dictionary it was compressed with: the first
/// [`DICT_REF_LEN`] bytes of the dictionary's id (SPEC §6.4).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DictRef([u8; DICT_REF_LEN]);

impl DictRef {
    /// The reference of dictionary `id`.
    pub fn of(id: &DictId) -> Self {
        let mut r = [0u8; DICT_REF_LEN];
        r.copy_from_slice(&id.as_bytes()[..DICT_REF_LEN]);
        Self(r)
    }
    /// The on-disk bytes.
    pub fn as_bytes(&self) -> &[u8; DICT_REF_LEN] {
        &self.0
    }
    /// Whether `id` is the dictionary this reference names.
    pub fn names(&self, id: &DictId) -> bool {
        id.as_bytes()[..DICT_REF_LEN] == self.0
    }
}

impl fmt::Display for DictRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl fmt::Debug for DictRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DictRef({self})")
    }
}

/// A compression dictionary (the zstd dictionary format, RFC 8878 §5) and
/// its id. Compression and decompression contexts are cached per thread by
/// that id, so a dictionary is parsed once per thread, not once per blob.
pub struct Dictionary {
    id: DictId,
    bytes: Vec<u8>,
}

impl fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dictionary")
            .field("id", &self.id)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl Dictionary {
    /// Wraps dictionary `bytes` whose (verified) id is `id`.
    pub fn new(id: DictId, bytes: Vec<u8>) -> Self {
        Self { id, bytes }
    }
    /// Its id.
    pub fn id(&self) -> &DictId {
        &self.id
    }
    /// How blobs name it.
    pub fn reference(&self) -> DictRef {
        DictRef::of(&self.id)
    }
    /// The dictionary itself.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Finds the dictionary a [`MARKER_ZSTD_DICT`] payload names; a missing or
/// damaged one is [`FormatError::Dictionary`].
pub trait DictionarySource {
    /// The dictionary `r` names.
    fn dictionary(&self, r: DictRef) -> Result<Arc<Dictionary>, FormatError>;
    /// The plaintext of data blob `id`, a reference of a
    /// [`MARKER_ZSTD_DELTA`] payload (SPEC §6.6). Sources that cannot read
    /// blobs refuse.
    fn reference(&self, id: &BlobId) -> Result<Vec<u8>, FormatError> {
        Err(FormatError::Malformed {
            what: "delta reference",
            reason: format!("{}: cannot be read here", id.short()),
        })
    }
}

/// A source without dictionaries, for objects that never use one (index,
/// snapshot and config files, pack headers) and version-1 repositories.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDictionaries;

impl DictionarySource for NoDictionaries {
    fn dictionary(&self, r: DictRef) -> Result<Arc<Dictionary>, FormatError> {
        Err(FormatError::Dictionary {
            dict: r.to_string(),
            reason: "no dictionaries here".into(),
        })
    }
}

thread_local! {
    // One compressor per thread and level: creating a zstd context costs more
    // than compressing a small chunk.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    // Likewise one decompression context per thread.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    // Dictionary contexts apart from the plain ones, keyed by dictionary id
    // (and level): loading a dictionary into a context costs about as much
    // as compressing a few small blobs, so it happens once per thread.
    static DICT_COMPRESSOR: RefCell<Option<(DictId, i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DICT_DECOMPRESSOR: RefCell<Option<(DictId, zstd::bulk::Decompressor<'static>)>> = const { RefCell::new(None) };
    // Delta payloads (SPEC §6.6): creating a context per blob was 6 % of a
    // base backup's restore (zstd asks the CPU for its features each time).
    static DELTA_DECOMPRESSOR: RefCell<Option<zstd::zstd_safe::DCtx<'static>>> = const { RefCell::new(None) };
}

/// The first bytes of a zstd dictionary (`ZSTD_MAGIC_DICTIONARY`, LE).
const ZSTD_DICT_MAGIC: [u8; 4] = 0xEC30_A437u32.to_le_bytes();

/// Inputs longer than this are compressed at the default level 3 with a
/// minimum match of [`LONG_MIN_MATCH`] bytes instead of zstd's 5. Measured
/// on the benchmark corpus in 1 MiB chunks (CPU time, one core): a SQL dump
/// 141 → 170 MB/s and 2 % smaller, binaries 236 → 263 MB/s and 0.3 %
/// smaller, JSON/log text 1 % larger at the same speed. Below 128 KiB
/// (small files, whose own tables zstd picks) it costs up to 7 %: left alone.
/// An encoder setting only: every zstd decoder reads the frames.
const LONG_INPUT: usize = 128 << 10;
const LONG_MIN_MATCH: u32 = 6;

/// `marker || payload` for `data` at zstd `level` (0 = never compress).
pub fn compress(data: &[u8], level: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    compress_into(data, level, &mut out);
    out
}

/// The most [`compress_into`] appends for `len` bytes of data: a caller
/// that reserves it gets no reallocation (and no stray copy).
pub fn compressed_bound(len: usize) -> usize {
    1 + zstd::zstd_safe::compress_bound(len).max(len)
}

/// [`compress`], appended to `out` (whose capacity a caller can reuse).
pub fn compress_into(data: &[u8], level: i32, out: &mut Vec<u8>) {
    let start = out.len();
    if level != 0 {
        out.push(MARKER_ZSTD);
        let ok = COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().map(|(l, _)| *l) != Some(level) {
                *c = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
            }
            let Some((_, z)) = c.as_mut() else {
                return false;
            };
            // 0 restores the level's own minimum match length.
            let min_match = if level == 3 && data.len() > LONG_INPUT {
                LONG_MIN_MATCH
            } else {
                0
            };
            if z.set_parameter(zstd::zstd_safe::CParameter::MinMatch(min_match))
                .is_err()
            {
                return false;
            }
            matches!(append_frame(z, data, out), Some(n) if n < data.len())
        });
        if ok {
            return;
        }
        out.truncate(start);
    }
    out.push(MARKER_RAW);
    out.extend_from_slice(data);
}

/// Compresses `data` with `z` straight into `out`'s spare capacity after
/// its current end (no intermediate buffer); the frame's length.
fn append_frame(
    z: &mut zstd::bulk::Compressor<'static>,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Option<usize> {
    let at = out.len();
    out.reserve(zstd::zstd_safe::compress_bound(data.len()));
    let mut cur = std::io::Cursor::new(std::mem::take(out));
    cur.set_position(at as u64);
    let r = z.compress_to_buffer(data, &mut cur);
    *out = cur.into_inner();
    r.ok()
}

/// Like [`compress_into`] but with dictionary `dict`: `2 || ref || frame`
/// (SPEC §6.4). Falls back to [`compress_into`] when that is not strictly
/// shorter than the data, so a payload never exceeds the data plus marker.
pub fn compress_into_dict(data: &[u8], level: i32, dict: &Dictionary, out: &mut Vec<u8>) {
    let start = out.len();
    if level != 0 {
        out.push(MARKER_ZSTD_DICT);
        out.extend_from_slice(dict.reference().as_bytes());
        let ok = DICT_COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().map(|(id, l, _)| (id, *l)) != Some((dict.id(), level)) {
                *c = zstd::bulk::Compressor::with_dictionary(level, dict.bytes())
                    .and_then(|mut z| {
                        // The reference after the marker names the
                        // dictionary; zstd's own 4-byte id would repeat it.
                        z.set_parameter(zstd::zstd_safe::CParameter::DictIdFlag(false))?;
                        Ok(z)
                    })
                    .ok()
                    .map(|z| (*dict.id(), level, z));
            }
            let Some((_, _, z)) = c.as_mut() else {
                return false;
            };
            matches!(append_frame(z, data, out), Some(n) if n + DICT_REF_LEN < data.len())
        });
        if ok {
            return;
        }
        out.truncate(start);
    }
    compress_into(data, level, out);
}

/// Undoes [`compress`]; refuses output larger than `max_len`.
pub fn decompress(stored: &[u8], max_len: usize) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    decompress_into(stored, max_len, &mut out)?;
    Ok(out)
}

/// Undoes [`compress`] into `out` (cleared first; its capacity is reused,
/// so a reader that opens many blobs allocates once). A dictionary payload
/// fails: see [`decompress_into_with`].
pub fn decompress_into(
    stored: &[u8],
    max_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    decompress_into_with(stored, max_len, out, &NoDictionaries)
}

/// [`decompress_into`] that resolves dictionary references with `dicts`.
pub fn decompress_into_with(
    stored: &[u8],
    max_len: usize,
    out: &mut Vec<u8>,
    dicts: &dyn DictionarySource,
) -> Result<(), FormatError> {
    out.clear();
    let what = "compressed payload";
    let (&marker, payload) = stored
        .split_first()
        .ok_or(FormatError::Truncated { what })?;
    match marker {
        MARKER_RAW => {
            if payload.len() > max_len {
                return Err(FormatError::TooLarge {
                    what,
                    len: payload.len() as u64,
                    limit: max_len as u64,
                });
            }
            out.extend_from_slice(payload);
            Ok(())
        }
        MARKER_ZSTD => {
            let n = frame_size(payload, max_len)?;
            out.reserve(n);
            let r = DECOMPRESSOR.with(|d| {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = Some(zstd::bulk::Decompressor::new()?);
                }
                match d.as_mut() {
                    Some(z) => z.decompress_to_buffer(payload, out),
                    None => Err(std::io::Error::other("no zstd context")),
                }
            });
            check_frame(r, n)
        }
        MARKER_ZSTD_DICT => {
            let (r, frame) = payload
                .split_first_chunk::<DICT_REF_LEN>()
                .ok_or(FormatError::Truncated { what })?;
            let r = DictRef(*r);
            // Bound the output before fetching the dictionary.
            let n = frame_size(frame, max_len)?;
            let dict = dicts.dictionary(r)?;
            out.reserve(n);
            let res = DICT_DECOMPRESSOR.with(|d| {
                let mut d = d.borrow_mut();
                if d.as_ref().map(|(id, _)| id) != Some(dict.id()) {
                    *d = None;
                    let z =
                        zstd::bulk::Decompressor::with_dictionary(dict.bytes()).map_err(|e| {
                            FormatError::Dictionary {
                                dict: r.to_string(),
                                reason: format!("zstd refuses it: {e}"),
                            }
                        })?;
                    *d = Some((*dict.id(), z));
                }
                Ok(match d.as_mut() {
                    Some((_, z)) => z.decompress_to_buffer(frame, out),
                    None => Err(std::io::Error::other("no zstd context")),
                })
            })?;
            check_frame(res, n)
        }
        MARKER_ZSTD_DELTA => decompress_delta(payload, max_len, out, dicts),
        m => Err(FormatError::Malformed {
            what,
            reason: format!("unknown compression marker {m}"),
        }),
    }
}

/// The reference ids of a [`MARKER_ZSTD_DELTA`] payload (after the
/// marker) and its frame.
pub fn delta_references(payload: &[u8]) -> Result<(Vec<BlobId>, &[u8]), FormatError> {
    let what = "delta payload";
    let (&n, rest) = payload
        .split_first()
        .ok_or(FormatError::Truncated { what })?;
    let n = n as usize;
    if !(1..=MAX_DELTA_REFS).contains(&n) {
        return Err(FormatError::Malformed {
            what,
            reason: format!("{n} references (1 to {MAX_DELTA_REFS} allowed)"),
        });
    }
    if rest.len() < n * 32 {
        return Err(FormatError::Truncated { what });
    }
    let (ids, frame) = rest.split_at(n * 32);
    let ids = ids
        .chunks_exact(32)
        .map(|c| {
            let mut b = [0u8; 32];
            b.copy_from_slice(c);
            BlobId::from_bytes(b)
        })
        .collect();
    Ok((ids, frame))
}

fn decompress_delta(
    payload: &[u8],
    max_len: usize,
    out: &mut Vec<u8>,
    src: &dyn DictionarySource,
) -> Result<(), FormatError> {
    let (ids, frame) = delta_references(payload)?;
    // Bound the output before reading any reference.
    let n = frame_size(frame, max_len)?;
    let mut prefix = Vec::new();
    for id in &ids {
        prefix.extend_from_slice(&src.reference(id)?);
    }
    out.reserve(n);
    let with_prefix = |out: &mut Vec<u8>| {
        let mut d = zstd::zstd_safe::DCtx::create();
        d.ref_prefix(&prefix).and_then(|_| d.decompress(out, frame))
    };
    // A dictionary given whole is raw content, as a prefix is, unless it
    // starts with the dictionary magic: such a reference gets a prefix.
    let r = if prefix.starts_with(&ZSTD_DICT_MAGIC) {
        with_prefix(out)
    } else {
        DELTA_DECOMPRESSOR.with(|d| match d.try_borrow_mut() {
            Ok(mut d) => d
                .get_or_insert_with(zstd::zstd_safe::DCtx::create)
                .decompress_using_dict(out, frame, &prefix),
            Err(_) => with_prefix(out),
        })
    };
    check_frame(
        r.map_err(|c| std::io::Error::other(zstd::zstd_safe::get_error_name(c))),
        n,
    )
}

/// `03 || count || ids || frame`: `data` compressed at `level` with the
/// concatenated `refs` as its prefix (SPEC §6.6); `None` when `level` is 0,
/// there are no or too many references, or zstd fails.
pub fn compress_delta(data: &[u8], level: i32, refs: &[(BlobId, &[u8])]) -> Option<Vec<u8>> {
    if level == 0 || refs.is_empty() || refs.len() > MAX_DELTA_REFS {
        return None;
    }
    let prefix: Vec<u8> = refs.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let mut out =
        Vec::with_capacity(2 + 32 * refs.len() + zstd::zstd_safe::compress_bound(data.len()));
    out.push(MARKER_ZSTD_DELTA);
    out.push(refs.len() as u8);
    for (id, _) in refs {
        out.extend_from_slice(id.as_bytes());
    }
    let mut c = zstd::zstd_safe::CCtx::create();
    c.set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(level))
        .ok()?;
    c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(true))
        .ok()?;
    c.ref_prefix(&prefix).ok()?;
    let at = out.len();
    let mut cur = std::io::Cursor::new(out);
    cur.set_position(at as u64);
    c.compress2(&mut cur, data).ok()?;
    Some(cur.into_inner())
}

/// The content size a frame declares, bounded by `max_len`. Our frames
/// always record it: the output gets exactly that, never `max_len` itself.
pub(crate) fn frame_size(frame: &[u8], max_len: usize) -> Result<usize, FormatError> {
    let what = "compressed payload";
    let n = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) => n,
        _ => {
            return Err(FormatError::Malformed {
                what,
                reason: "zstd frame without content size".into(),
            });
        }
    };
    if n > max_len as u64 {
        return Err(FormatError::TooLarge {
            what,
            len: n,
            limit: max_len as u64,
        });
    }
    Ok(n as usize)
}

/// A decompression result checked against the declared size `n`.
fn check_frame(r: std::io::Result<usize>, n: usize) -> Result<(), FormatError> {
    let what = "compressed payload";
    let got = r.map_err(|e| FormatError::Malformed {
        what,
        reason: e.to_string(),
    })?;
    if got != n {
        return Err(FormatError::Malformed {
            what,
            reason: "frame shorter than its declared size".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_shrinks_random_stays_raw() {
        let text = b"hello world ".repeat(1000);
        let c = compress(&text, 3);
        assert_eq!(c[0], MARKER_ZSTD);
        assert!(c.len() < text.len() / 10);
        assert_eq!(decompress(&c, text.len()).unwrap(), text);

        let random: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let r = compress(&random, 3);
        assert_eq!(decompress(&r, random.len()).unwrap(), random);

        let none = compress(&text, 0);
        assert_eq!(none[0], MARKER_RAW);
    }

    #[test]
    fn decompress_is_bounded() {
        let text = vec![0u8; 100_000];
        let c = compress(&text, 3);
        assert!(decompress(&c, 1000).is_err());
        assert!(decompress(&[9, 1, 2], 10).is_err());
        assert!(decompress(&[], 10).is_err());
    }

    /// A dictionary made of the kind of text it compresses.
    fn dictionary() -> Dictionary {
        let samples: Vec<Vec<u8>> = (0..300u32)
            .map(|i| {
                format!("key_{} = value {} # comment {}\n", i % 13, i * 7, i % 5)
                    .repeat(4)
                    .into_bytes()
            })
            .collect();
        let sizes: Vec<usize> = samples.iter().map(Vec::len).collect();
        let bytes = zstd::dict::from_continuous(&samples.concat(), &sizes, 2048).unwrap();
        Dictionary::new(DictId::from_bytes([7; 32]), bytes)
    }

    struct One(Arc<Dictionary>);
    impl DictionarySource for One {
        fn dictionary(&self, r: DictRef) -> Result<Arc<Dictionary>, FormatError> {
            assert_eq!(r, self.0.reference());
            Ok(Arc::clone(&self.0))
        }
    }

    /// Looks up nothing: any lookup fails the test.
    struct Never;
    impl DictionarySource for Never {
        fn dictionary(&self, _: DictRef) -> Result<Arc<Dictionary>, FormatError> {
            panic!("dictionary fetched before the output was bounded")
        }
    }

    #[test]
    fn dictionary_round_trip_fallback_and_bounds() {
        let d = Arc::new(dictionary());
        let text = b"key_3 = value 21 # comment 1\nkey_4 = value 28 # comment 2\n".to_vec();
        let mut c = Vec::new();
        compress_into_dict(&text, 3, &d, &mut c);
        assert_eq!(c[0], MARKER_ZSTD_DICT);
        assert_eq!(c[1..1 + DICT_REF_LEN], d.id().as_bytes()[..DICT_REF_LEN]);
        // Smaller than without the dictionary.
        assert!(c.len() < compress(&text, 3).len(), "{} bytes", c.len());
        let mut out = vec![1, 2, 3];
        decompress_into_with(&c, text.len(), &mut out, &One(Arc::clone(&d))).unwrap();
        assert_eq!(out, text);
        // Without a source it fails and names the dictionary.
        let e = decompress(&c, text.len()).unwrap_err();
        assert!(
            matches!(&e, FormatError::Dictionary { dict, .. } if *dict == d.reference().to_string())
        );
        // Bounded before the dictionary is looked up.
        assert!(matches!(
            decompress_into_with(&c, text.len() - 1, &mut out, &Never),
            Err(FormatError::TooLarge { .. })
        ));
        assert!(matches!(
            decompress_into_with(&c[..5], 100, &mut out, &Never),
            Err(FormatError::Truncated { .. })
        ));
        // Incompressible data falls back to marker 1 or 0, never grows.
        let noise = cairn_testkit::rng::XorShift::new(0x9E37_79B9_7F4A_7C15).top_bytes(3000);
        let mut n = Vec::new();
        compress_into_dict(&noise, 3, &d, &mut n);
        assert_ne!(n[0], MARKER_ZSTD_DICT);
        assert!(n.len() <= noise.len() + 1);
        assert_eq!(decompress(&n, noise.len()).unwrap(), noise);
        // Level 0 never compresses.
        let mut z = Vec::new();
        compress_into_dict(&text, 0, &d, &mut z);
        assert_eq!(z[0], MARKER_RAW);
    }

    /// Resolves one reference, `[0x11; 32]`, to [`REF_TEXT`].
    struct OneRef;
    const REF_TEXT: &[u8] = b"the quick brown fox jumps over the lazy dog; \
        the quick brown fox jumps over the lazy dog; 0123456789";
    impl DictionarySource for OneRef {
        fn dictionary(&self, r: DictRef) -> Result<Arc<Dictionary>, FormatError> {
            NoDictionaries.dictionary(r)
        }
        fn reference(&self, id: &BlobId) -> Result<Vec<u8>, FormatError> {
            if *id.as_bytes() == [0x11; 32] {
                Ok(REF_TEXT.to_vec())
            } else {
                NoDictionaries.reference(id)
            }
        }
    }

    #[test]
    fn delta_round_trip_bounds_and_golden_vector() {
        let id = BlobId::from_bytes([0x11; 32]);
        let data = b"the quick brown fox jumps over the lazy cat; \
            the quick brown fox jumps over the lazy dog; 0123456789!";
        let p = compress_delta(data, 3, &[(id, REF_TEXT)]).unwrap();
        assert_eq!(&p[..2], &[MARKER_ZSTD_DELTA, 1]);
        assert!(p.len() < compress(data, 3).len(), "{}", p.len());
        assert_eq!(decompress_with(&p, data.len(), &OneRef).unwrap(), data);
        // Bounded before any reference is read; unresolvable references fail.
        assert!(matches!(
            decompress_with(&p, data.len() - 1, &OneRef),
            Err(FormatError::TooLarge { .. })
        ));
        assert!(decompress(&p, data.len()).is_err());
        for bad in [
            &[MARKER_ZSTD_DELTA][..],
            &[MARKER_ZSTD_DELTA, 0],
            &[MARKER_ZSTD_DELTA, 5],
        ] {
            assert!(decompress_with(bad, 100, &OneRef).is_err());
        }
        // SPEC §20 (s): this payload decodes to `data` with REF_TEXT as the
        // reference's plaintext, whatever encoder wrote it.
        let golden = hex::decode(GOLDEN).unwrap();
        assert_eq!(decompress_with(&golden, data.len(), &OneRef).unwrap(), data);
    }

    /// A reference that starts like a zstd dictionary is still raw content
    /// (the reused context would parse it as a dictionary).
    #[test]
    fn delta_reference_starting_with_the_dictionary_magic() {
        struct MagicRef(Vec<u8>);
        impl DictionarySource for MagicRef {
            fn dictionary(&self, r: DictRef) -> Result<Arc<Dictionary>, FormatError> {
                NoDictionaries.dictionary(r)
            }
            fn reference(&self, _: &BlobId) -> Result<Vec<u8>, FormatError> {
                Ok(self.0.clone())
            }
        }
        let mut reference = ZSTD_DICT_MAGIC.to_vec();
        reference.extend_from_slice(&[7u8; 12]);
        reference.extend_from_slice(REF_TEXT);
        let data = [&reference[..], b" and a little more"].concat();
        let id = BlobId::from_bytes([0x22; 32]);
        let p = compress_delta(&data, 3, &[(id, &reference)]).unwrap();
        let src = MagicRef(reference.clone());
        assert_eq!(decompress_with(&p, data.len(), &src).unwrap(), data);
        // And the reused context still decodes the others afterwards.
        let plain = b"the quick brown fox jumps over the lazy cat";
        let q = compress_delta(plain, 3, &[(BlobId::from_bytes([0x11; 32]), REF_TEXT)]).unwrap();
        for _ in 0..2 {
            assert_eq!(decompress_with(&q, plain.len(), &OneRef).unwrap(), plain);
            assert_eq!(decompress_with(&p, data.len(), &src).unwrap(), data);
        }
    }

    const GOLDEN: &str = "03011111111111111111111111111111111111111111111111111111111111111111\
        28b52ffd2065950000306361743b2021030067e840a84aad4b1504";

    fn decompress_with(
        stored: &[u8],
        max: usize,
        src: &dyn DictionarySource,
    ) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::new();
        decompress_into_with(stored, max, &mut out, src)?;
        Ok(out)
    }
}
