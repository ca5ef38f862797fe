//! Format constants and limits shared by every on-disk structure (SPEC §1, §2).
//!
//! Each constant is defined once here and cited by the SPEC section that
//! describes it; decoders bound every length they read against these limits
//! before allocating.

use thiserror::Error;

/// The newest format version: this build reads files up to it (SPEC §1,
/// §19). It creates version-2 repositories, version 3 only when their
/// content keys are shared with another repository, and turns either into
/// version 4 at the first key rotation (SPEC §29). Version 5 is a file
/// version only (packs and index files recording delta references, §6.6).
pub const FORMAT_VERSION: u32 = 5;
/// The oldest format version this build can read (SPEC §1).
pub const MIN_READ_VERSION: u32 = 1;
/// The version in the prefix of key, pack, index, snapshot and mark files.
/// Their encodings did not change in version 2, so a version-1 repository
/// that this build writes to stays readable by version-1 builds (SPEC §1).
pub const FILE_VERSION: u32 = 1;
/// The first repository version whose blobs may be compressed with a
/// dictionary (SPEC §6.4); its config and dictionary files carry it.
pub const DICTIONARY_VERSION: u32 = 2;
/// The first version with copies (SPEC §5, §10, §24): a snapshot file that
/// records the snapshot it was copied from, and the config of a repository
/// whose content keys (and chunker profiles) come from another one, carry it.
/// Files without either keep their earlier versions, byte for byte.
pub const COPY_VERSION: u32 = 3;

/// The first version with data-key epochs (SPEC §29): its config lists
/// the live epochs, its key files carry an X25519 public key, and epoch
/// grants (`keyring/`) carry it too. Builds before it refuse such a config,
/// so none of them seals under a retired key.
pub const EPOCH_VERSION: u32 = 4;
/// The newest repository (config) version: versions after it are file
/// versions only.
pub const REPOSITORY_VERSION: u32 = EPOCH_VERSION;

/// The first version whose packs and index files record the references of
/// the delta blobs they hold (SPEC §6.6, §7.2, §8). Only files that record
/// some carry it; every other file keeps its earlier version, byte for
/// byte. Builds before it refuse such a file rather than drop what it
/// records.
pub const REFERENCES_VERSION: u32 = 5;

/// Length of every magic prefix (SPEC §2).
pub const MAGIC_LEN: usize = 8;
/// Magic of the repository config file (SPEC §5): seven ASCII letters and
/// 0x1a (Ctrl-Z, which stops `type`/`cat`-style text dumps early).
pub const CONFIG_MAGIC: [u8; MAGIC_LEN] = *b"CAIRNCF\x1a";
/// Magic of a key file (SPEC §4).
pub const KEY_MAGIC: [u8; MAGIC_LEN] = *b"CAIRNKY\x1a";
/// Magic at the start of every pack file (SPEC §7).
pub const PACK_MAGIC: [u8; MAGIC_LEN] = *b"CAIRNPK\x1a";
/// Magic of an index file (SPEC §8).
pub const INDEX_MAGIC: [u8; MAGIC_LEN] = *b"CAIRNIX\x1a";
/// Magic of a snapshot file (SPEC §10).
pub const SNAPSHOT_MAGIC: [u8; MAGIC_LEN] = *b"CAIRNSN\x1a";

/// Magic of an epoch grant (SPEC §29.3).
pub const GRANT_MAGIC: [u8; MAGIC_LEN] = *b"CAIRNGR\x1a";

/// Magic of a prune mark (SPEC §22).
pub const MARK_MAGIC: [u8; MAGIC_LEN] = *b"CAIRNMK\x1a";
/// Magic of a compression dictionary file (SPEC §6.4).
pub const DICT_MAGIC: [u8; MAGIC_LEN] = *b"CAIRNDC\x1a";
/// Verification records (SPEC §32.2).
pub const VERIFY_MAGIC: [u8; MAGIC_LEN] = *b"CAIRNVR\x1a";
/// Largest dictionary (SPEC §6.4); writers train about 112 KiB.
pub const MAX_DICT_SIZE: usize = 1 << 20;

/// Magic followed by the little-endian format version (SPEC §2).
pub const FILE_PREFIX_LEN: usize = MAGIC_LEN + size_of::<u32>();

/// XChaCha20-Poly1305 nonce length (SPEC §3.2).
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag length (SPEC §3.2).
pub const TAG_LEN: usize = 16;
/// Bytes a sealed object adds to its compressed plaintext: nonce, tag, and
/// the one-byte compression marker (SPEC §6).
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN + 1;

/// Largest chunk any chunker profile may produce (SPEC §6.1).
pub const MAX_CHUNK_SIZE: usize = 16 * 1024 * 1024;
/// Largest plaintext of a tree blob (SPEC §9). A directory listing larger than
/// this is refused at backup rather than written unreadable.
pub const MAX_TREE_SIZE: usize = 256 * 1024 * 1024;
/// Most entries in one directory (SPEC §9): a sanity cap that keeps one
/// tree blob, and the memory to decode it, bounded. A later format version
/// may split larger directories over several blobs.
pub const MAX_TREE_ENTRIES: usize = 1_000_000;
/// Largest plaintext of any blob of any kind.
pub const MAX_BLOB_SIZE: usize = MAX_TREE_SIZE;
/// Largest encrypted pack header (SPEC §7): about 1.49 M 45-byte entries.
pub const MAX_PACK_HEADER: usize = 64 * 1024 * 1024;
/// Length of the trailer holding the header length (SPEC §7).
pub const PACK_TRAILER_LEN: usize = size_of::<u32>();
/// Largest pack file (SPEC §7): offsets are u32.
pub const MAX_PACK_SIZE: u64 = u32::MAX as u64;
/// Largest index, snapshot, config or key file plaintext (SPEC §8, §10).
pub const MAX_META_FILE: usize = 256 * 1024 * 1024;

/// A structure read from disk does not follow the format.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// The bytes do not start with the expected magic.
    #[error("bad magic: not a cairn {what}")]
    BadMagic {
        /// What was expected.
        what: &'static str,
    },
    /// The version is outside the readable range.
    #[error(
        "unsupported {what} format version {version} (this build reads {MIN_READ_VERSION}..={FORMAT_VERSION})"
    )]
    UnsupportedVersion {
        /// What was being read.
        what: &'static str,
        /// The version found.
        version: u32,
    },
    /// The input ended before the structure did.
    #[error("truncated {what}")]
    Truncated {
        /// What was being read.
        what: &'static str,
    },
    /// A length read from disk exceeds its limit.
    #[error("{what} is too large ({len} bytes, limit {limit})")]
    TooLarge {
        /// What was being read.
        what: &'static str,
        /// The length found.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// A payload names a compression dictionary that cannot be had
    /// (missing, damaged, or not allowed in this repository; SPEC §6.4).
    #[error("dictionary {dict}: {reason}")]
    Dictionary {
        /// The 8-byte reference, in hex.
        dict: String,
        /// Why it is unavailable.
        reason: String,
    },
    /// The encoded structure could not be decoded.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },
}

/// Writes `magic || version_le` (SPEC §2).
pub fn write_prefix(out: &mut Vec<u8>, magic: &[u8; MAGIC_LEN], version: u32) {
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
}

/// Checks `magic || version_le` and returns the version and the rest.
pub fn read_prefix<'a>(
    bytes: &'a [u8],
    magic: &[u8; MAGIC_LEN],
    what: &'static str,
) -> Result<(u32, &'a [u8]), FormatError> {
    if bytes.len() < FILE_PREFIX_LEN {
        return Err(FormatError::Truncated { what });
    }
    let (head, rest) = bytes.split_at(FILE_PREFIX_LEN);
    let (m, v) = head.split_at(MAGIC_LEN);
    if m != magic {
        return Err(FormatError::BadMagic { what });
    }
    let version = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
    if !(MIN_READ_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(FormatError::UnsupportedVersion { what, version });
    }
    Ok((version, rest))
}

/// Reads a little-endian u32 at `pos`, or fails as truncated.
pub fn read_u32_le(bytes: &[u8], pos: usize, what: &'static str) -> Result<u32, FormatError> {
    bytes
        .get(pos..pos + size_of::<u32>())
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(FormatError::Truncated { what })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_round_trip_and_rejections() {
        let mut v = Vec::new();
        write_prefix(&mut v, &PACK_MAGIC, FORMAT_VERSION);
        v.push(7);
        let (ver, rest) = read_prefix(&v, &PACK_MAGIC, "pack").unwrap();
        assert_eq!((ver, rest), (FORMAT_VERSION, &[7u8][..]));
        assert!(matches!(
            read_prefix(&v, &INDEX_MAGIC, "index"),
            Err(FormatError::BadMagic { .. })
        ));
        assert!(matches!(
            read_prefix(&v[..5], &PACK_MAGIC, "pack"),
            Err(FormatError::Truncated { .. })
        ));
        let mut future = Vec::new();
        write_prefix(&mut future, &PACK_MAGIC, FORMAT_VERSION + 1);
        assert!(matches!(
            read_prefix(&future, &PACK_MAGIC, "pack"),
            Err(FormatError::UnsupportedVersion { version: 6, .. })
        ));
    }
}
