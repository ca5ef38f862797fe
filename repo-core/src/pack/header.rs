//! The pack header: one fixed-size entry per blob (SPEC §7.2).

use crate::blob::{self, BlobError, BlobKind};
use crate::format::{
    self, FILE_PREFIX_LEN, FormatError, MAX_PACK_HEADER, PACK_MAGIC, PACK_TRAILER_LEN,
};
use crate::id::BlobId;

/// Associated data of a pack header (SPEC §7.2).
pub const PACK_HEADER_AD: &[u8] = b"cairn pack header v1";

/// One blob in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, bincode::Encode, bincode::Decode)]
pub struct PackEntry {
    /// Data or tree.
    pub kind: BlobKind,
    /// The blob's id.
    pub id: BlobId,
    /// Offset of the sealed blob from the start of the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
}

/// Encoded size of one entry: kind, id, offset, length, raw length.
pub const PACK_ENTRY_LEN: usize = 1 + 32 + 4 + 4 + 4;

/// The decrypted pack header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackHeader {
    /// Entries in file order.
    pub entries: Vec<PackEntry>,
}

impl PackHeader {
    /// Plain encoding: `count u32 || entries` (SPEC §7.2).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.entries.len() * PACK_ENTRY_LEN);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            out.push(e.kind.to_byte());
            out.extend_from_slice(e.id.as_bytes());
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.length.to_le_bytes());
            out.extend_from_slice(&e.raw_length.to_le_bytes());
        }
        out
    }

    /// Parses a plain header and checks that every entry lies inside
    /// `blobs_end` (where the sealed header starts) without overlap.
    pub fn decode(bytes: &[u8], blobs_end: u64) -> Result<Self, FormatError> {
        let what = "pack header";
        let count = u64::from(format::read_u32_le(bytes, 0, what)?);
        let body = &bytes[4..];
        if body.len() as u64 != count * PACK_ENTRY_LEN as u64 {
            return Err(FormatError::Malformed {
                what,
                reason: format!(
                    "{count} entries need {} bytes, have {}",
                    count * PACK_ENTRY_LEN as u64,
                    body.len()
                ),
            });
        }
        let mut entries = Vec::with_capacity(body.len() / PACK_ENTRY_LEN);
        let mut next = FILE_PREFIX_LEN as u64;
        for raw in body.chunks_exact(PACK_ENTRY_LEN) {
            let kind = BlobKind::from_byte(raw[0]).ok_or_else(|| FormatError::Malformed {
                what,
                reason: format!("unknown blob kind {}", raw[0]),
            })?;
            let mut id = [0u8; 32];
            id.copy_from_slice(&raw[1..33]);
            let e = PackEntry {
                kind,
                id: BlobId::from_bytes(id),
                offset: format::read_u32_le(raw, 33, what)?,
                length: format::read_u32_le(raw, 37, what)?,
                raw_length: format::read_u32_le(raw, 41, what)?,
            };
            // Blobs are contiguous and in order: a writer never leaves gaps.
            if u64::from(e.offset) != next {
                return Err(FormatError::Malformed {
                    what,
                    reason: format!(
                        "blob {} at offset {} instead of {next}",
                        e.id.short(),
                        e.offset
                    ),
                });
            }
            next += u64::from(e.length);
            if next > blobs_end {
                return Err(FormatError::Malformed {
                    what,
                    reason: format!("blob {} runs past the blobs' end", e.id.short()),
                });
            }
            entries.push(e);
        }
        if next != blobs_end {
            return Err(FormatError::Malformed {
                what,
                reason: format!("blobs end at {next}, the header starts at {blobs_end}"),
            });
        }
        Ok(Self { entries })
    }

    /// Reads the header from the tail of a pack of `pack_len` bytes. `tail`
    /// holds the last `tail.len()` bytes of the pack (the whole pack is fine).
    /// Returns `Err(Ok(n))` when at least `n` tail bytes are needed.
    pub fn from_tail(
        key: &crate::crypto::DataKeys,
        tail: &[u8],
        pack_len: u64,
    ) -> Result<Result<Self, u64>, BlobError> {
        let what = "pack";
        if pack_len < (FILE_PREFIX_LEN + PACK_TRAILER_LEN) as u64
            || tail.len() < PACK_TRAILER_LEN
            || (tail.len() as u64) > pack_len
        {
            return Err(FormatError::Truncated { what }.into());
        }
        let hlen = format::read_u32_le(tail, tail.len() - PACK_TRAILER_LEN, what)? as u64;
        if hlen > MAX_PACK_HEADER as u64 {
            return Err(FormatError::TooLarge {
                what: "pack header",
                len: hlen,
                limit: MAX_PACK_HEADER as u64,
            }
            .into());
        }
        let need = hlen + PACK_TRAILER_LEN as u64;
        if need + FILE_PREFIX_LEN as u64 > pack_len {
            return Err(FormatError::Truncated { what }.into());
        }
        if (tail.len() as u64) < need {
            return Ok(Err(need));
        }
        let start = tail.len() - need as usize;
        let sealed = &tail[start..tail.len() - PACK_TRAILER_LEN];
        let plain = blob::open_object(key, PACK_HEADER_AD, sealed, MAX_PACK_HEADER)?;
        Ok(Ok(Self::decode(&plain, pack_len - need)?))
    }

    /// Parses a whole pack: checks the magic and returns its header.
    pub fn from_pack(key: &crate::crypto::DataKeys, pack: &[u8]) -> Result<Self, BlobError> {
        format::read_prefix(pack, &PACK_MAGIC, "pack")?;
        match Self::from_tail(key, pack, pack.len() as u64)? {
            Ok(h) => Ok(h),
            Err(_) => Err(FormatError::Truncated { what: "pack" }.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decode_encode_round_trip(blobs in proptest::collection::vec((any::<bool>(), any::<[u8; 32]>(), 1u32..10_000, any::<u32>()), 0..20)) {
            let mut offset = FILE_PREFIX_LEN as u32;
            let entries: Vec<PackEntry> = blobs
                .into_iter()
                .map(|(tree, id, length, raw_length)| {
                    let e = PackEntry {
                        kind: if tree { BlobKind::Tree } else { BlobKind::Data },
                        id: BlobId::from_bytes(id),
                        offset,
                        length,
                        raw_length,
                    };
                    offset += length;
                    e
                })
                .collect();
            let h = PackHeader { entries };
            prop_assert_eq!(PackHeader::decode(&h.encode(), u64::from(offset)).unwrap(), h.clone());
            // Any other end offset is inconsistent.
            prop_assert!(PackHeader::decode(&h.encode(), u64::from(offset) + 1).is_err());
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), end in any::<u64>()) {
            let _ = PackHeader::decode(&bytes, end);
        }
    }
}
