//! Sealing: compress, then encrypt, binding what the bytes are into the AEAD's
//! associated data (SPEC §6).

use crate::compress::{self, Dictionary, DictionarySource, NoDictionaries};
use crate::crypto::CryptoError;
use crate::format::FormatError;
use crate::hash::ContentHasher;
use crate::id::BlobId;

/// What a blob holds (SPEC §6.3). The discriminant is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    /// File or stream content.
    Data = 0,
    /// An encoded directory tree.
    Tree = 1,
}

impl BlobKind {
    /// The on-disk byte.
    pub fn to_byte(self) -> u8 {
        self as u8
    }
    /// Parses the on-disk byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Data),
            1 => Some(Self::Tree),
            _ => None,
        }
    }
}

/// Why a blob could not be opened.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobError {
    /// Decryption failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The decrypted payload is malformed.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The plaintext has a different length than recorded.
    #[error("plaintext length {actual} differs from the recorded {expected}")]
    LengthMismatch {
        /// Recorded.
        expected: u64,
        /// Found.
        actual: u64,
    },
    /// The plaintext does not hash to the blob's id.
    #[error("content does not match its id")]
    HashMismatch,
}

impl bincode::Encode for BlobKind {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        e: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.to_byte().encode(e)
    }
}
impl<C> bincode::Decode<C> for BlobKind {
    fn decode<D: bincode::de::Decoder<Context = C>>(
        d: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let b = u8::decode(d)?;
        Self::from_byte(b).ok_or(bincode::error::DecodeError::Other("unknown blob kind"))
    }
}
bincode::impl_borrow_decode!(BlobKind);

/// Associated data of a blob: its kind byte and id (SPEC §6.3).
pub fn blob_ad(kind: BlobKind, id: &BlobId) -> [u8; 33] {
    let mut ad = [0u8; 33];
    ad[0] = kind.to_byte();
    ad[1..].copy_from_slice(id.as_bytes());
    ad
}

/// Compresses (at `level`, 0 = off) and encrypts `plaintext` under `key` with `ad`.
pub fn seal_object(
    key: &crate::crypto::DataKeys,
    ad: &[u8],
    plaintext: &[u8],
    level: i32,
) -> Vec<u8> {
    key.seal(ad, &compress::compress(plaintext, level))
}

/// Decrypts and decompresses an object sealed by [`seal_object`].
pub fn open_object(
    key: &crate::crypto::DataKeys,
    ad: &[u8],
    sealed: &[u8],
    max_len: usize,
) -> Result<Vec<u8>, BlobError> {
    let (stored, _) = key.open(ad, sealed)?;
    Ok(compress::decompress(&stored, max_len)?)
}

/// Seals a blob whose id is already known.
pub fn seal_blob(
    key: &crate::crypto::DataKeys,
    kind: BlobKind,
    id: &BlobId,
    plaintext: &[u8],
    level: i32,
) -> Vec<u8> {
    seal_object(key, &blob_ad(kind, id), plaintext, level)
}

/// [`seal_blob`] into `out` (replacing its contents), for writers of many
/// blobs: compression and encryption work inside one reused buffer.
pub fn seal_blob_into(
    key: &crate::crypto::DataKeys,
    kind: BlobKind,
    id: &BlobId,
    plaintext: &[u8],
    level: i32,
    out: &mut Vec<u8>,
) {
    seal_blob_into_with(key, kind, id, plaintext, level, None, out);
}

/// [`seal_blob_into`], compressed with `dict` when one is given (SPEC §6.4).
pub fn seal_blob_into_with(
    key: &crate::crypto::DataKeys,
    kind: BlobKind,
    id: &BlobId,
    plaintext: &[u8],
    level: i32,
    dict: Option<&Dictionary>,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.resize(crate::format::NONCE_LEN, 0);
    match dict {
        Some(d) => compress::compress_into_dict(plaintext, level, d, out),
        None => compress::compress_into(plaintext, level, out),
    }
    key.seal_in_place(&blob_ad(kind, id), out);
}

/// [`seal_blob_into_with`] for a data blob, delta-compressed against
/// `refs` (SPEC §6.6) when that is shorter than compressing it alone;
/// whether it was.
#[allow(clippy::too_many_arguments)]
pub fn seal_blob_into_delta(
    key: &crate::crypto::DataKeys,
    id: &BlobId,
    plaintext: &[u8],
    level: i32,
    dict: Option<&Dictionary>,
    refs: &[(BlobId, &[u8])],
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    out.resize(crate::format::NONCE_LEN, 0);
    match dict {
        Some(d) => compress::compress_into_dict(plaintext, level, d, out),
        None => compress::compress_into(plaintext, level, out),
    }
    let mut used = false;
    if let Some(d) = compress::compress_delta(plaintext, level, refs)
        && d.len() < out.len() - crate::format::NONCE_LEN
    {
        out.truncate(crate::format::NONCE_LEN);
        out.extend_from_slice(&d);
        used = true;
    }
    key.seal_in_place(&blob_ad(BlobKind::Data, id), out);
    used
}

/// Opens a blob and verifies its length and id.
pub fn open_blob(
    key: &crate::crypto::DataKeys,
    hasher: &ContentHasher,
    kind: BlobKind,
    id: &BlobId,
    sealed: &[u8],
    raw_len: u32,
) -> Result<Vec<u8>, BlobError> {
    open_blob_with(key, hasher, kind, id, sealed, raw_len, &NoDictionaries)
}

/// A sealed blob as it may go into a new pack. A pack's blobs share its
/// header's epoch (SPEC §30.1), so a blob sealed under an older epoch is
/// sealed again, unchanged inside, under the newest: `Some(new bytes)`;
/// `None` when the stored bytes can be copied as they are.
pub fn resealed_for_new_pack(
    key: &crate::crypto::DataKeys,
    kind: BlobKind,
    id: &BlobId,
    sealed: &[u8],
) -> Option<Vec<u8>> {
    if key.live_epochs().len() < 2 {
        return None;
    }
    match key.open(&blob_ad(kind, id), sealed) {
        Ok((payload, epoch)) if epoch != key.newest_epoch() => {
            Some(key.seal(&blob_ad(kind, id), &payload))
        }
        _ => None,
    }
}

/// [`open_blob`] that resolves dictionary references with `dicts`.
pub fn open_blob_with(
    key: &crate::crypto::DataKeys,
    hasher: &ContentHasher,
    kind: BlobKind,
    id: &BlobId,
    sealed: &[u8],
    raw_len: u32,
    dicts: &dyn DictionarySource,
) -> Result<Vec<u8>, BlobError> {
    let mut plain = Vec::new();
    open_blob_into_with(
        key,
        hasher,
        kind,
        id,
        &mut sealed.to_vec(),
        raw_len,
        &mut plain,
        dicts,
    )?;
    Ok(plain)
}

/// [`open_blob`] for readers of many blobs: decrypts inside `sealed` (left
/// scrambled) and decompresses into `plain`, whose capacity is reused. A
/// restore or check then allocates per thread, not per blob: a fresh
/// megabyte buffer per blob costs more in page faults than its decryption.
pub fn open_blob_into(
    key: &crate::crypto::DataKeys,
    hasher: &ContentHasher,
    kind: BlobKind,
    id: &BlobId,
    sealed: &mut [u8],
    raw_len: u32,
    plain: &mut Vec<u8>,
) -> Result<(), BlobError> {
    open_blob_into_with(
        key,
        hasher,
        kind,
        id,
        sealed,
        raw_len,
        plain,
        &NoDictionaries,
    )
}

/// [`open_blob_into`] that resolves dictionary references with `dicts`.
#[allow(clippy::too_many_arguments)]
pub fn open_blob_into_with(
    key: &crate::crypto::DataKeys,
    hasher: &ContentHasher,
    kind: BlobKind,
    id: &BlobId,
    sealed: &mut [u8],
    raw_len: u32,
    plain: &mut Vec<u8>,
    dicts: &dyn DictionarySource,
) -> Result<(), BlobError> {
    let (stored, _) = key.open_in_place(&blob_ad(kind, id), sealed)?;
    compress::decompress_into_with(stored, raw_len as usize, plain, dicts)?;
    if plain.len() != raw_len as usize {
        return Err(BlobError::LengthMismatch {
            expected: raw_len.into(),
            actual: plain.len() as u64,
        });
    }
    let actual = match kind {
        BlobKind::Data => hasher.chunk_id(plain),
        BlobKind::Tree => hasher.tree_id(plain).as_blob(),
    };
    if actual != *id {
        return Err(BlobError::HashMismatch);
    }
    Ok(())
}

/// Seals a whole repository file: `magic || version || sealed(plaintext)`,
/// with `magic || version` as associated data (SPEC §2.3).
pub fn seal_file(
    magic: &[u8; crate::format::MAGIC_LEN],
    key: &crate::crypto::DataKeys,
    plaintext: &[u8],
    level: i32,
) -> Vec<u8> {
    seal_file_version(magic, crate::format::FILE_VERSION, key, plaintext, level)
}

/// [`seal_file`] with an explicit prefix version (dictionaries carry the
/// version that introduced them, SPEC §6.4).
pub fn seal_file_version(
    magic: &[u8; crate::format::MAGIC_LEN],
    version: u32,
    key: &crate::crypto::DataKeys,
    plaintext: &[u8],
    level: i32,
) -> Vec<u8> {
    let mut out = Vec::new();
    crate::format::write_prefix(&mut out, magic, version);
    let sealed = seal_object(key, &out, plaintext, level);
    out.extend_from_slice(&sealed);
    out
}

/// Opens a file made by [`seal_file`].
pub fn open_file(
    magic: &[u8; crate::format::MAGIC_LEN],
    what: &'static str,
    key: &crate::crypto::DataKeys,
    bytes: &[u8],
) -> Result<Vec<u8>, BlobError> {
    crate::format::read_prefix(bytes, magic, what)?;
    let (ad, sealed) = bytes.split_at(crate::format::FILE_PREFIX_LEN);
    open_object(key, ad, sealed, crate::format::MAX_META_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    /// The buffer-reusing paths make the same objects as the allocating
    /// ones: whatever a reused buffer held before does not leak into them.
    #[test]
    fn reused_buffers_seal_and_open_like_fresh_ones() {
        let k = MasterKey::generate();
        let h = ContentHasher::new(&k);
        let text = b"compressible ".repeat(5000);
        let noise: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let (mut sealed, mut plain) = (vec![0xAB; 999_999], vec![0xCD; 3]);
        for data in [&text[..], &noise[..], &text[..100], &[][..]] {
            let id = h.chunk_id(data);
            seal_blob_into(&k.data_keys(), BlobKind::Data, &id, data, 3, &mut sealed);
            let raw = data.len() as u32;
            assert_eq!(
                open_blob(&k.data_keys(), &h, BlobKind::Data, &id, &sealed, raw).unwrap(),
                data
            );
            open_blob_into(
                &k.data_keys(),
                &h,
                BlobKind::Data,
                &id,
                &mut sealed,
                raw,
                &mut plain,
            )
            .unwrap();
            assert_eq!(plain, data);
        }
        // Damage is still caught on the in-place path.
        let id = h.chunk_id(&text);
        seal_blob_into(&k.data_keys(), BlobKind::Data, &id, &text, 3, &mut sealed);
        sealed[40] ^= 1;
        let raw = text.len() as u32;
        assert!(matches!(
            open_blob_into(
                &k.data_keys(),
                &h,
                BlobKind::Data,
                &id,
                &mut sealed,
                raw,
                &mut plain
            ),
            Err(BlobError::Crypto(_))
        ));
    }

    #[test]
    fn blob_round_trip_and_swaps_fail() {
        let k = MasterKey::generate();
        let h = ContentHasher::new(&k);
        let data = b"some file content ".repeat(100);
        let id = h.chunk_id(&data);
        let sealed = seal_blob(&k.data_keys(), BlobKind::Data, &id, &data, 3);
        assert!(sealed.len() < data.len());
        let raw = data.len() as u32;
        assert_eq!(
            open_blob(&k.data_keys(), &h, BlobKind::Data, &id, &sealed, raw).unwrap(),
            data
        );
        // Wrong kind or wrong id: the associated data no longer matches.
        assert!(matches!(
            open_blob(&k.data_keys(), &h, BlobKind::Tree, &id, &sealed, raw),
            Err(BlobError::Crypto(_))
        ));
        let other = h.chunk_id(b"x");
        assert!(matches!(
            open_blob(&k.data_keys(), &h, BlobKind::Data, &other, &sealed, raw),
            Err(BlobError::Crypto(_))
        ));
        // A blob sealed under an id that is not its content's hash is caught.
        let lie = seal_blob(&k.data_keys(), BlobKind::Data, &other, &data, 3);
        assert_eq!(
            open_blob(&k.data_keys(), &h, BlobKind::Data, &other, &lie, raw),
            Err(BlobError::HashMismatch)
        );
    }
}
