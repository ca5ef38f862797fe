//! The one place where rekey seals, opens and judges sealed bytes.
//!
//! An object is *stale* when it opens under an epoch older than the newest
//! (SPEC §30). With a single live epoch nothing is stale. Tests simulate a
//! newer epoch with [`Sealer::simulated`]: epoch 0's key, nonces tagged with
//! a chosen epoch number that is not live (readers fall back to epoch 0),
//! and staleness judged by that tag, so the rewriting and resuming
//! machinery is exercised exactly as after a key rotation.

use crate::backend::{Backend, ObjectKind};
use crate::blob;
use crate::compress;
use crate::crypto::{CryptoError, DataKeys, EPOCH_TAG_LEN};
use crate::encoding;
use crate::error::Result;
use crate::format::{self, FILE_PREFIX_LEN, INDEX_MAGIC, NONCE_LEN, SNAPSHOT_MAGIC};
use crate::id::{IndexId, PackId};
use crate::index::{IndexPack, References, index_files_for};
use crate::pack::{DeltaRefs, PACK_HEADER_AD, PackEntry, PackHeader};
use crate::snapshot::Snapshot;

/// Seals under the newest epoch and tells stale sealed bytes apart.
pub(crate) struct Sealer<'a> {
    keys: &'a DataKeys,
    /// Test mode: the simulated newest epoch's tag.
    simulated: Option<u32>,
}

impl<'a> Sealer<'a> {
    /// The repository's live epochs.
    pub(crate) fn current(keys: &'a DataKeys) -> Self {
        Self {
            keys,
            simulated: None,
        }
    }

    /// Test mode: objects whose nonce does not start with `epoch` are stale,
    /// and everything written is tagged with it.
    pub(crate) fn simulated(keys: &'a DataKeys, epoch: u32) -> Self {
        Self {
            keys,
            simulated: Some(epoch),
        }
    }

    /// Whether anything can be stale at all (else rekey reads nothing).
    pub(crate) fn can_be_stale(&self) -> bool {
        self.simulated.is_some() || self.keys.live_epochs().len() > 1
    }

    /// Whether AEAD output `sealed` (nonce first, associated data `ad`) is
    /// under an older epoch. Bytes that open under no live epoch are not
    /// stale but damaged: `check` reports them, rekey leaves them.
    pub(crate) fn is_stale(&self, ad: &[u8], sealed: &[u8]) -> bool {
        match self.simulated {
            Some(e) => sealed.get(..EPOCH_TAG_LEN) != Some(&e.to_le_bytes()[..]),
            // Opened, not judged by the tag alone: an epoch-0 nonce is
            // random and may carry any tag.
            None => self
                .keys
                .open(ad, sealed)
                .is_ok_and(|(_, epoch)| epoch != self.keys.newest_epoch()),
        }
    }

    /// Whether a whole file (`magic || version || sealed`, the prefix
    /// being the associated data, SPEC §2.3) is stale.
    pub(crate) fn is_stale_file(&self, bytes: &[u8]) -> bool {
        if bytes.len() < FILE_PREFIX_LEN {
            return false;
        }
        let (ad, sealed) = bytes.split_at(FILE_PREFIX_LEN);
        self.is_stale(ad, sealed)
    }

    /// Whether a pack's sealed header is stale.
    pub(crate) fn is_stale_header(&self, sealed: &[u8]) -> bool {
        self.is_stale(PACK_HEADER_AD, sealed)
    }

    fn seal(&self, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        match self.simulated {
            None => self.keys.seal(ad, plaintext),
            Some(e) => {
                let mut nonce = [0u8; NONCE_LEN];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
                nonce[..EPOCH_TAG_LEN].copy_from_slice(&e.to_le_bytes());
                let mut buf = nonce.to_vec();
                buf.extend_from_slice(plaintext);
                // The tag names no live epoch: epoch 0's key seals it.
                self.keys
                    .seal_tail_with_nonce(&nonce, ad, &mut buf, NONCE_LEN);
                buf
            }
        }
    }

    /// The payload of `sealed` when it is stale ([`Self::is_stale`]),
    /// opened once; `None` when it is current or opens under no live epoch.
    pub(crate) fn stale_payload(&self, ad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        match self.simulated {
            Some(_) if self.is_stale(ad, sealed) => self.open_payload(ad, sealed).ok(),
            Some(_) => None,
            None => match self.keys.open(ad, sealed) {
                Ok((payload, epoch)) if epoch != self.keys.newest_epoch() => Some(payload),
                _ => None,
            },
        }
    }

    /// Decrypts a blob's stored payload (compression marker and data, not
    /// decompressed); the caller has verified the blob already.
    pub(crate) fn open_payload(
        &self,
        ad: &[u8],
        sealed: &[u8],
    ) -> std::result::Result<Vec<u8>, CryptoError> {
        self.keys.open(ad, sealed).map(|(p, _)| p)
    }

    /// Seals a blob's stored payload again, unchanged inside.
    pub(crate) fn reseal_payload(&self, ad: &[u8], payload: &[u8]) -> Vec<u8> {
        self.seal(ad, payload)
    }

    fn seal_file(&self, magic: &[u8; format::MAGIC_LEN], version: u32, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        format::write_prefix(&mut out, magic, version);
        let sealed = self.seal(&out, &compress::compress(plain, 3));
        out.extend_from_slice(&sealed);
        out
    }

    /// A prune mark file (SPEC §22.1).
    pub(crate) fn mark_file(&self, m: &crate::mark::MarkFile) -> Vec<u8> {
        self.seal_file(
            &format::MARK_MAGIC,
            format::FILE_VERSION,
            &encoding::encode(m),
        )
    }

    /// A snapshot file (SPEC §10).
    pub(crate) fn snapshot_file(&self, s: &Snapshot) -> Vec<u8> {
        let (version, body) = s.encode_body();
        self.seal_file(&SNAPSHOT_MAGIC, version, &body)
    }

    /// A whole pack (SPEC §7.1) from sealed blobs `(entry, sealed)`;
    /// offsets are assigned here.
    pub(crate) fn pack(
        &self,
        blobs: &[(PackEntry, Vec<u8>)],
        mut references: Vec<DeltaRefs>,
    ) -> (PackId, Vec<u8>, PackHeader) {
        references.sort();
        references.dedup_by(|a, b| a.id == b.id);
        let mut header = PackHeader {
            entries: Vec::new(),
            references,
        };
        let mut buf = Vec::with_capacity(blobs.iter().map(|(_, s)| s.len()).sum::<usize>() + 4096);
        format::write_prefix(&mut buf, &format::PACK_MAGIC, header.version());
        for (e, sealed) in blobs {
            header.entries.push(PackEntry {
                offset: buf.len() as u32,
                length: sealed.len() as u32,
                ..*e
            });
            buf.extend_from_slice(sealed);
        }
        let sealed = self.seal(PACK_HEADER_AD, &compress::compress(&header.encode(), 0));
        buf.extend_from_slice(&sealed);
        buf.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        (PackId::hash_of(&buf), buf, header)
    }

    /// Writes `packs` as index files (a pack is never split), each naming
    /// `supersedes` and its packs' `references` (SPEC §8).
    pub(crate) fn write_index_files(
        &self,
        backend: &dyn Backend,
        packs: &[IndexPack],
        references: &References,
        supersedes: &[IndexId],
    ) -> Result<Vec<IndexId>> {
        let mut written = Vec::new();
        for f in index_files_for(packs, references, supersedes) {
            let (version, body) = f.encode_versioned();
            let bytes = self.seal_file(&INDEX_MAGIC, version, &body);
            let id = IndexId::hash_of(&bytes);
            backend.write(ObjectKind::Index, &id.to_hex(), &bytes)?;
            written.push(id);
        }
        Ok(written)
    }

    /// Opens a blob once: returns its stored payload (compression marker
    /// and data) after checking, from the decompressed bytes, its length
    /// and id, so nothing damaged is sealed again (SPEC §6.3).
    pub(crate) fn open_verified(
        &self,
        repo: &crate::repository::Repository,
        pack: PackId,
        e: &PackEntry,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let fail = |err: blob::BlobError| repo.blob_error(pack, &e.id, err);
        let (payload, _) = self
            .keys
            .open(&blob::blob_ad(e.kind, &e.id), sealed)
            .map_err(|err| fail(err.into()))?;
        let mut plain = Vec::new();
        compress::decompress_into_with(
            &payload,
            e.raw_length as usize,
            &mut plain,
            &repo.blob_sources(),
        )
        .map_err(|err| fail(err.into()))?;
        if plain.len() != e.raw_length as usize {
            return Err(fail(blob::BlobError::LengthMismatch {
                expected: e.raw_length.into(),
                actual: plain.len() as u64,
            }));
        }
        let actual = match e.kind {
            blob::BlobKind::Data => repo.hasher().chunk_id(&plain),
            blob::BlobKind::Tree => repo.hasher().tree_id(&plain).as_blob(),
        };
        if actual != e.id {
            return Err(fail(blob::BlobError::HashMismatch));
        }
        Ok(payload)
    }
}
