//! One archived WAL file as one object (SPEC §28):
//!
//! ```text
//! object = prefix || mac (32) || seal(data_key, AD = prefix || mac || object name, marker || payload)
//! mac    = BLAKE3-keyed(wal_key, "content\0" || u64 len(file name) || file name || content)
//! ```
//!
//! The MAC in clear lets "is this the same file?" be answered from the
//! object's first 44 bytes, without fetching or decrypting the rest.

use super::{WalError, WalFileName};
use crate::compress;
use crate::format::{self, FILE_PREFIX_LEN, MAGIC_LEN, NONCE_LEN, TAG_LEN};

/// Magic of an archived WAL file.
pub const WAL_MAGIC: [u8; MAGIC_LEN] = *b"CAIRNWL\x1a";
/// Version of the WAL object layout; independent of the repository's.
pub const WAL_VERSION: u32 = 1;
/// Length of the content MAC after the prefix.
pub const MAC_LEN: usize = 32;
/// Bytes before the sealed part: prefix and MAC.
pub const WAL_HEADER_LEN: usize = FILE_PREFIX_LEN + MAC_LEN;
/// Largest file stored: PostgreSQL's largest segment size, 1 GiB.
pub const MAX_WAL_FILE: usize = 1 << 30;
/// zstd level of WAL objects unless the repository stores raw: one
/// `archive_command` runs per segment, and on pgbench WAL level 1 costs
/// about three quarters of level 3's time. Readers do not depend on it.
pub const WAL_LEVEL: i32 = 1;
/// Hex digits of the cluster part of an object name.
pub const CLUSTER_HEX_LEN: usize = 16;

/// The cluster part of object names: the first 8 bytes, in hex, of
/// `BLAKE3-keyed(wal_key, "cluster\0" || system identifier (u64 LE))`.
pub fn cluster_name(wal_key: &[u8; 32], system_identifier: u64) -> String {
    let mut h = blake3::Hasher::new_keyed(wal_key);
    h.update(b"cluster\0");
    h.update(&system_identifier.to_le_bytes());
    hex::encode(&h.finalize().as_bytes()[..CLUSTER_HEX_LEN / 2])
}

/// `<cluster>-<file name with '.' as '_'>`.
pub fn object_name(cluster: &str, file: &WalFileName) -> String {
    format!("{cluster}-{}", file.object_part())
}

/// Splits an object name into cluster and file name; `None` for names
/// that are not a WAL object's.
pub fn split_object_name(name: &str) -> Option<(&str, WalFileName)> {
    let (cluster, part) = name.split_once('-')?;
    let hex = cluster.len() == CLUSTER_HEX_LEN
        && cluster
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    hex.then_some(())?;
    Some((cluster, WalFileName::from_object_part(part).ok()?))
}

/// The content MAC of `file` holding `content`.
pub fn content_mac(wal_key: &[u8; 32], file: &WalFileName, content: &[u8]) -> [u8; MAC_LEN] {
    let mut h = mac_hasher(wal_key, file);
    h.update(content);
    *h.finalize().as_bytes()
}

/// The content MAC's hasher before the content.
fn mac_hasher(wal_key: &[u8; 32], file: &WalFileName) -> blake3::Hasher {
    let mut h = blake3::Hasher::new_keyed(wal_key);
    h.update(b"content\0");
    h.update(&(file.as_str().len() as u64).to_le_bytes());
    h.update(file.as_str().as_bytes());
    h
}

fn header(mac: &[u8; MAC_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(WAL_HEADER_LEN);
    format::write_prefix(&mut out, &WAL_MAGIC, WAL_VERSION);
    out.extend_from_slice(mac);
    out
}

/// The object for `content`, compressed at `level` (0 = raw) and sealed
/// under `data_key` with a fresh nonce.
pub fn encode(
    data_key: &crate::crypto::DataKeys,
    mac: &[u8; MAC_LEN],
    object: &str,
    content: &[u8],
    level: i32,
) -> Vec<u8> {
    let nonce = data_key.fresh_nonce();
    encode_with_nonce(data_key, &nonce, mac, object, content, level)
}

/// [`encode`] with a given nonce: for golden test vectors only.
#[doc(hidden)]
pub fn encode_with_nonce(
    data_key: &crate::crypto::DataKeys,
    nonce: &[u8; NONCE_LEN],
    mac: &[u8; MAC_LEN],
    object: &str,
    content: &[u8],
    level: i32,
) -> Vec<u8> {
    let mut ad = header(mac);
    ad.extend_from_slice(object.as_bytes());
    // One buffer: header, nonce, then the content compressed straight into
    // it and sealed in place. A 16 MiB segment otherwise cost four more
    // buffers of its size, and their page faults and copies were a large
    // part of an `archive_command`'s time.
    let mut out = Vec::with_capacity(
        WAL_HEADER_LEN + NONCE_LEN + compress::compressed_bound(content.len()) + TAG_LEN,
    );
    out.extend_from_slice(&ad[..WAL_HEADER_LEN]);
    out.extend_from_slice(nonce);
    let at = out.len();
    compress::compress_into(content, level, &mut out);
    data_key.seal_tail_with_nonce(nonce, &ad, &mut out, at);
    out
}

/// The MAC from an object's first [`WAL_HEADER_LEN`] bytes (magic and
/// version checked).
pub fn peek_mac(object: &str, bytes: &[u8]) -> Result<[u8; MAC_LEN], WalError> {
    let corrupt = |reason: String| WalError::Corrupt {
        object: object.to_string(),
        reason,
    };
    let (version, rest) =
        format::read_prefix(bytes, &WAL_MAGIC, "WAL file").map_err(|e| corrupt(e.to_string()))?;
    if version != WAL_VERSION {
        return Err(corrupt(format!("unsupported WAL object version {version}")));
    }
    rest.get(..MAC_LEN)
        .and_then(|m| m.try_into().ok())
        .ok_or_else(|| corrupt("truncated".into()))
}

/// The data-key epoch an object is sealed under, when it opens (SPEC
/// §29.5): authenticated, not decompressed.
pub fn object_epoch(data_key: &crate::crypto::DataKeys, object: &str, bytes: &[u8]) -> Option<u32> {
    peek_mac(object, bytes).ok()?;
    let (head, sealed) = bytes.split_at(WAL_HEADER_LEN);
    let mut ad = head.to_vec();
    ad.extend_from_slice(object.as_bytes());
    data_key.open(&ad, sealed).ok().map(|(_, e)| e)
}

/// Size of the pieces [`decode_to`] writes: small enough to stay in the
/// CPU's cache between decompressing and writing.
const PIECE: usize = 256 << 10;

/// [`decode`] that writes the content to `out` in pieces instead of
/// returning it, and returns its length: a segment is never held whole,
/// and each piece is written while it is still in the cache (one 16 MiB
/// `write` of a cold buffer was most of a `restore-wal`'s time). `out`
/// receives content *before* the MAC is checked: on an error the caller
/// must discard what it wrote (write to a temporary file, rename it only
/// on success). Write errors are [`WalError::Output`].
pub fn decode_to(
    data_key: &crate::crypto::DataKeys,
    wal_key: &[u8; 32],
    object: &str,
    file: &WalFileName,
    bytes: &[u8],
    out: &mut dyn std::io::Write,
) -> Result<u64, WalError> {
    use std::io::{BufRead, Read};
    let corrupt = |reason: String| WalError::Corrupt {
        object: object.to_string(),
        reason,
    };
    let mac = peek_mac(object, bytes)?;
    let (head, sealed) = bytes.split_at(WAL_HEADER_LEN);
    let mut ad = head.to_vec();
    ad.extend_from_slice(object.as_bytes());
    let (stored, _) = data_key
        .open(&ad, sealed)
        .map_err(|e| corrupt(e.to_string()))?;
    let mut h = mac_hasher(wal_key, file);
    let mut emit = |piece: &[u8]| -> Result<(), WalError> {
        h.update(piece);
        out.write_all(piece).map_err(WalError::Output)
    };
    let (&marker, payload) = stored
        .split_first()
        .ok_or_else(|| corrupt("empty payload".into()))?;
    let len = match marker {
        compress::MARKER_RAW => {
            if payload.len() > MAX_WAL_FILE {
                return Err(corrupt(format!(
                    "{} bytes, larger than any WAL file",
                    payload.len()
                )));
            }
            for piece in payload.chunks(PIECE) {
                emit(piece)?;
            }
            payload.len() as u64
        }
        compress::MARKER_ZSTD => {
            // The same bounds as `compress::decompress`: one frame whose
            // declared size is at most MAX_WAL_FILE, and exactly that much.
            let n = compress::frame_size(payload, MAX_WAL_FILE)
                .map_err(|e| corrupt(e.to_string()))? as u64;
            let mut d = zstd::stream::read::Decoder::with_buffer(payload)
                .map_err(|e| corrupt(e.to_string()))?
                .single_frame();
            let mut buf = vec![0u8; PIECE];
            let mut got = 0u64;
            loop {
                let k = match d.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(corrupt(e.to_string())),
                };
                got += k as u64;
                if got > n {
                    return Err(corrupt("frame longer than its declared size".into()));
                }
                emit(&buf[..k])?;
            }
            if got != n {
                return Err(corrupt("frame shorter than its declared size".into()));
            }
            if !d.finish().fill_buf().map_or(true, |rest| rest.is_empty()) {
                return Err(corrupt("bytes after the zstd frame".into()));
            }
            n
        }
        m => return Err(corrupt(format!("unknown compression marker {m}"))),
    };
    if *h.finalize().as_bytes() != mac {
        return Err(corrupt("content does not match its MAC".into()));
    }
    Ok(len)
}

/// Opens an object: checks the prefix, authenticates it under its own
/// name, decompresses, and checks the content against the MAC.
pub fn decode(
    data_key: &crate::crypto::DataKeys,
    wal_key: &[u8; 32],
    object: &str,
    file: &WalFileName,
    bytes: &[u8],
) -> Result<Vec<u8>, WalError> {
    let mut content = Vec::new();
    decode_to(data_key, wal_key, object, file, bytes, &mut content)?;
    Ok(content)
}
