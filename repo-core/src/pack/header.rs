//! The pack header: one fixed-size entry per blob (SPEC §7.2).

use crate::blob::{self, BlobError, BlobKind};
use crate::format::{
    self, FILE_PREFIX_LEN, FILE_VERSION, FormatError, MAX_PACK_HEADER, PACK_MAGIC,
    PACK_TRAILER_LEN, REFERENCES_VERSION,
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

/// The references of one delta blob (SPEC §6.6): the data blobs its
/// payload is decompressed against, in the payload's order.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, bincode::Encode, bincode::Decode,
)]
pub struct DeltaRefs {
    /// The delta blob.
    pub id: BlobId,
    /// Its references (1 to [`MAX_DELTA_REFS`](crate::compress::MAX_DELTA_REFS)).
    pub refs: Vec<BlobId>,
}

impl DeltaRefs {
    /// The references of `id` among `recorded` (ids ascending, as a
    /// header and an index file hold them), if it is a delta blob.
    pub fn find<'a>(recorded: &'a [DeltaRefs], id: &BlobId) -> Option<&'a DeltaRefs> {
        recorded
            .binary_search_by(|d| d.id.cmp(id))
            .ok()
            .map(|i| &recorded[i])
    }
}

/// The decrypted pack header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackHeader {
    /// Entries in file order.
    pub entries: Vec<PackEntry>,
    /// The references of the pack's delta blobs, ids ascending; empty in
    /// every pack without delta blobs (SPEC §7.2).
    pub references: Vec<DeltaRefs>,
}

impl PackHeader {
    /// Plain encoding: `count u32 || entries`, then, when the pack holds
    /// delta blobs, `ref_count u32 || (id || n u8 || n ids)…` (SPEC §7.2).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(encoded_len(self.entries.len(), &self.references));
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            out.push(e.kind.to_byte());
            out.extend_from_slice(e.id.as_bytes());
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.length.to_le_bytes());
            out.extend_from_slice(&e.raw_length.to_le_bytes());
        }
        if !self.references.is_empty() {
            out.extend_from_slice(&(self.references.len() as u32).to_le_bytes());
            for r in &self.references {
                out.extend_from_slice(r.id.as_bytes());
                out.push(r.refs.len() as u8);
                for id in &r.refs {
                    out.extend_from_slice(id.as_bytes());
                }
            }
        }
        out
    }

    /// The file version of a pack with this header: [`REFERENCES_VERSION`]
    /// when it records references, else [`FILE_VERSION`] (SPEC §1).
    pub fn version(&self) -> u32 {
        if self.references.is_empty() {
            FILE_VERSION
        } else {
            REFERENCES_VERSION
        }
    }

    /// Parses a plain header and checks that every entry lies inside
    /// `blobs_end` (where the sealed header starts) without overlap.
    pub fn decode(bytes: &[u8], blobs_end: u64) -> Result<Self, FormatError> {
        let what = "pack header";
        let count = u64::from(format::read_u32_le(bytes, 0, what)?);
        let need = count * PACK_ENTRY_LEN as u64;
        let (body, references) = if (bytes.len() - 4) as u64 > need {
            let (body, rest) = bytes[4..].split_at(need as usize);
            (body, Some(rest))
        } else {
            (&bytes[4..], None)
        };
        if body.len() as u64 != need {
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
        let references = match references {
            Some(r) => decode_references(r, &entries)?,
            None => Vec::new(),
        };
        Ok(Self {
            entries,
            references,
        })
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

/// Length of the plain header of `entries` entries recording `references`
/// (SPEC §7.2): what [`PackHeader::encode`] writes.
pub(crate) fn encoded_len(entries: usize, references: &[DeltaRefs]) -> usize {
    let section = if references.is_empty() {
        0
    } else {
        4 + references
            .iter()
            .map(|d| 33 + 32 * d.refs.len())
            .sum::<usize>()
    };
    4 + entries * PACK_ENTRY_LEN + section
}

/// Parses a header's references section: each names a data blob of the
/// pack, ids strictly ascending, 1 to `MAX_DELTA_REFS` references each,
/// nothing after the last.
fn decode_references(bytes: &[u8], entries: &[PackEntry]) -> Result<Vec<DeltaRefs>, FormatError> {
    let what = "pack header";
    let bad = |reason: String| FormatError::Malformed { what, reason };
    let count = format::read_u32_le(bytes, 0, what)? as usize;
    let data: std::collections::HashSet<&BlobId> = entries
        .iter()
        .filter(|e| e.kind == BlobKind::Data)
        .map(|e| &e.id)
        .collect();
    if count == 0 || count > data.len() {
        return Err(bad(format!(
            "{count} delta blobs recorded in a pack of {} data blobs",
            data.len()
        )));
    }
    let mut at = 4;
    let mut out: Vec<DeltaRefs> = Vec::with_capacity(count);
    let id_at = |at: usize| -> Result<BlobId, FormatError> {
        let raw = bytes
            .get(at..at + 32)
            .ok_or(FormatError::Truncated { what })?;
        Ok(BlobId::from_bytes(raw.try_into().expect("32 bytes")))
    };
    for _ in 0..count {
        let id = id_at(at)?;
        let n = *bytes.get(at + 32).ok_or(FormatError::Truncated { what })? as usize;
        at += 33;
        if !data.contains(&id) {
            return Err(bad(format!(
                "references recorded for {}, not a data blob of the pack",
                id.short()
            )));
        }
        if out.last().is_some_and(|l| l.id >= id) {
            return Err(bad("delta blobs not in ascending order".into()));
        }
        if !(1..=crate::compress::MAX_DELTA_REFS).contains(&n) {
            return Err(bad(format!("{} has {n} references", id.short())));
        }
        let refs = (0..n)
            .map(|i| id_at(at + 32 * i))
            .collect::<Result<_, _>>()?;
        at += 32 * n;
        out.push(DeltaRefs { id, refs });
    }
    if at != bytes.len() {
        return Err(bad(format!(
            "{} bytes after the references",
            bytes.len() - at
        )));
    }
    Ok(out)
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
            // Every other data blob is a delta of the one before it.
            let mut references: Vec<DeltaRefs> = entries
                .iter()
                .filter(|e| e.kind == BlobKind::Data)
                .collect::<Vec<_>>()
                .windows(2)
                .step_by(2)
                .map(|w| DeltaRefs { id: w[1].id, refs: vec![w[0].id] })
                .collect();
            references.sort();
            references.dedup_by(|a, b| a.id == b.id);
            let h = PackHeader { entries, references };
            prop_assert_eq!(encoded_len(h.entries.len(), &h.references), h.encode().len());
            prop_assert_eq!(PackHeader::decode(&h.encode(), u64::from(offset)).unwrap(), h.clone());
            // Any other end offset is inconsistent.
            prop_assert!(PackHeader::decode(&h.encode(), u64::from(offset) + 1).is_err());
        }

        #[test]
        fn references_of_other_blobs_or_out_of_order_are_refused(swap in any::<bool>()) {
            let e = |id: u8, offset: u32| PackEntry {
                kind: BlobKind::Data,
                id: BlobId::from_bytes([id; 32]),
                offset,
                length: 10,
                raw_length: 10,
            };
            let r = |id: u8, to: u8| DeltaRefs {
                id: BlobId::from_bytes([id; 32]),
                refs: vec![BlobId::from_bytes([to; 32])],
            };
            let entries = vec![e(1, 12), e(2, 22), e(3, 32)];
            let good = PackHeader { entries: entries.clone(), references: vec![r(2, 1), r(3, 1)] };
            prop_assert!(PackHeader::decode(&good.encode(), 42).is_ok());
            let bad = if swap {
                vec![r(3, 1), r(2, 1)] // not ascending
            } else {
                vec![r(9, 1)] // not a blob of the pack
            };
            let h = PackHeader { entries, references: bad };
            prop_assert!(PackHeader::decode(&h.encode(), 42).is_err());
            // A trailing byte after the section is refused too.
            let mut long = good.encode();
            long.push(0);
            prop_assert!(PackHeader::decode(&long, 42).is_err());
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), end in any::<u64>()) {
            let _ = PackHeader::decode(&bytes, end);
        }
    }
}
