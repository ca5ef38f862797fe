//! Builds one pack in memory (SPEC §7.1).

use super::{DeltaRefs, PackEntry, PackHeader, header::PACK_HEADER_AD};
use crate::blob::{self, BlobKind};
use crate::format::{self, FILE_PREFIX_LEN, FILE_VERSION, PACK_MAGIC};
use crate::id::{BlobId, PackId};

/// Accumulates sealed blobs of one kind until the pack is big enough.
#[derive(Debug)]
pub struct PackWriter {
    buf: Vec<u8>,
    header: PackHeader,
}

impl Default for PackWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl PackWriter {
    /// An empty pack.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty pack with room for `bytes` without reallocating (a growing
    /// Vec would briefly hold two copies of a nearly full pack).
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes);
        format::write_prefix(&mut buf, &PACK_MAGIC, FILE_VERSION);
        Self {
            buf,
            header: PackHeader::default(),
        }
    }

    /// Appends an already sealed blob.
    pub fn add(&mut self, kind: BlobKind, id: BlobId, sealed: &[u8], raw_length: u32) {
        self.header.entries.push(PackEntry {
            kind,
            id,
            offset: self.buf.len() as u32,
            length: sealed.len() as u32,
            raw_length,
        });
        self.buf.extend_from_slice(sealed);
    }

    /// Records that the data blob just added is a delta of `refs` (SPEC
    /// §6.6): the header will name them, so the pack tells what its blobs
    /// need without being decrypted blob by blob.
    pub fn add_references(&mut self, id: BlobId, refs: Vec<BlobId>) {
        if !refs.is_empty() {
            self.header.references.push(DeltaRefs { id, refs });
        }
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.header.entries.is_empty()
    }

    /// Number of blobs.
    pub fn count(&self) -> usize {
        self.header.entries.len()
    }

    /// Appends the sealed header and trailer; returns the pack's id, bytes
    /// and header.
    pub fn finish(mut self, key: &crate::crypto::DataKeys) -> (PackId, Vec<u8>, PackHeader) {
        self.header.references.sort();
        self.header.references.dedup_by(|a, b| a.id == b.id);
        if !self.header.references.is_empty() {
            // The prefix names the header's layout (SPEC §1, §7.2).
            self.buf[format::MAGIC_LEN..FILE_PREFIX_LEN]
                .copy_from_slice(&self.header.version().to_le_bytes());
        }
        self.buf.extend_from_slice(&seal_header(key, &self.header));
        let id = PackId::hash_of(&self.buf);
        (id, self.buf, self.header)
    }
}

/// The end of a pack (SPEC §7.1): the sealed header and the trailer
/// giving its length.
pub fn seal_header(key: &crate::crypto::DataKeys, header: &PackHeader) -> Vec<u8> {
    let mut out = blob::seal_object(key, PACK_HEADER_AD, &header.encode(), 0);
    let len = out.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::hash::ContentHasher;

    #[test]
    fn pack_round_trip_and_damage() {
        let k = MasterKey::generate();
        let h = ContentHasher::new(&k);
        let mut w = PackWriter::new();
        let blobs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000 + i as usize]).collect();
        for b in &blobs {
            let id = h.chunk_id(b);
            w.add(
                BlobKind::Data,
                id,
                &blob::seal_blob(&k.data_keys(), BlobKind::Data, &id, b, 3),
                b.len() as u32,
            );
        }
        let (pid, bytes, header) = w.finish(&k.data_keys());
        assert_eq!(pid, PackId::hash_of(&bytes));
        let hdr = PackHeader::from_pack(&k.data_keys(), &bytes).unwrap();
        assert_eq!(hdr, header);
        for (e, b) in hdr.entries.iter().zip(&blobs) {
            let s = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(
                &blob::open_blob(&k.data_keys(), &h, e.kind, &e.id, s, e.raw_length).unwrap(),
                b
            );
        }
        // Truncation and a flipped header byte are errors, not panics.
        for cut in [0, 5, 12, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                PackHeader::from_pack(&k.data_keys(), &bytes[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 10] ^= 1;
        assert!(PackHeader::from_pack(&k.data_keys(), &bad).is_err());
    }

    #[test]
    fn a_pack_with_delta_blobs_records_their_references_and_is_version_5() {
        let k = MasterKey::generate();
        let h = ContentHasher::new(&k);
        let mut w = PackWriter::new();
        let (a, b) = (vec![1u8; 500], vec![2u8; 500]);
        let (ia, ib) = (h.chunk_id(&a), h.chunk_id(&b));
        for (id, p) in [(ia, &a), (ib, &b)] {
            let sealed = blob::seal_blob(&k.data_keys(), BlobKind::Data, &id, p, 3);
            w.add(BlobKind::Data, id, &sealed, 500);
        }
        w.add_references(ib, vec![ia]);
        let (_, bytes, header) = w.finish(&k.data_keys());
        assert_eq!(
            format::read_prefix(&bytes, &PACK_MAGIC, "pack").unwrap().0,
            5
        );
        let read = PackHeader::from_pack(&k.data_keys(), &bytes).unwrap();
        assert_eq!(read, header);
        assert_eq!(
            read.references,
            vec![DeltaRefs {
                id: ib,
                refs: vec![ia]
            }]
        );
        // Without delta blobs: version 1, no section, as before.
        let mut w = PackWriter::new();
        let sealed = blob::seal_blob(&k.data_keys(), BlobKind::Data, &ia, &a, 3);
        w.add(BlobKind::Data, ia, &sealed, 500);
        let (_, bytes, header) = w.finish(&k.data_keys());
        assert_eq!(
            format::read_prefix(&bytes, &PACK_MAGIC, "pack").unwrap().0,
            1
        );
        assert!(header.references.is_empty());
    }
}
