//! The one place where rekey seals, opens and judges sealed bytes.
//!
//! An object is *stale* when its nonce does not carry the newest epoch's
//! tag (SPEC §30). Until the repository has more than one epoch nothing is
//! stale. Tests simulate a newer epoch with [`Sealer::simulated`]: the same
//! key, nonces tagged with a chosen epoch number, so the rewriting and
//! resuming machinery is exercised exactly as after a key rotation.

use crate::backend::{Backend, ObjectKind};
use crate::blob;
use crate::compress;
use crate::crypto::{self, CryptoError};
use crate::encoding;
use crate::error::Result;
use crate::format::{self, FILE_PREFIX_LEN, INDEX_MAGIC, NONCE_LEN, SNAPSHOT_MAGIC};
use crate::id::{IndexId, PackId};
use crate::index::{IndexFile, IndexPack, MAX_INDEX_ENTRIES};
use crate::pack::{PACK_HEADER_AD, PackEntry, PackHeader};
use crate::snapshot::Snapshot;

/// Bytes of the nonce that name the epoch (u32 little-endian).
const TAG_LEN: usize = 4;

/// Seals under the newest epoch and tells stale sealed bytes apart.
pub(crate) struct Sealer<'a> {
    key: &'a [u8; 32],
    /// The newest epoch's tag; `None`: a single epoch, nothing is stale.
    newest: Option<u32>,
}

impl<'a> Sealer<'a> {
    /// The repository as it is: one epoch, so nothing is stale.
    pub(crate) fn current(key: &'a [u8; 32]) -> Self {
        Self { key, newest: None }
    }

    /// Test mode: objects whose nonce does not start with `epoch` are stale,
    /// and everything written is tagged with it.
    pub(crate) fn simulated(key: &'a [u8; 32], epoch: u32) -> Self {
        Self {
            key,
            newest: Some(epoch),
        }
    }

    /// Whether anything can be stale at all (else rekey reads nothing).
    pub(crate) fn can_be_stale(&self) -> bool {
        self.newest.is_some()
    }

    /// Whether AEAD output `sealed` (nonce first) is under an older epoch.
    pub(crate) fn is_stale(&self, sealed: &[u8]) -> bool {
        match self.newest {
            None => false,
            Some(e) => sealed.get(..TAG_LEN) != Some(&e.to_le_bytes()[..]),
        }
    }

    /// Whether a whole file (`magic || version || sealed`) is stale.
    pub(crate) fn is_stale_file(&self, bytes: &[u8]) -> bool {
        self.is_stale(bytes.get(FILE_PREFIX_LEN..).unwrap_or_default())
    }

    fn seal(&self, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        match self.newest {
            None => crypto::seal(self.key, ad, plaintext),
            Some(e) => {
                let mut nonce = [0u8; NONCE_LEN];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
                nonce[..TAG_LEN].copy_from_slice(&e.to_le_bytes());
                crypto::seal_with_nonce(self.key, &nonce, ad, plaintext)
            }
        }
    }

    /// Decrypts a blob's stored payload (compression marker and data, not
    /// decompressed); the caller has verified the blob already.
    pub(crate) fn open_payload(
        &self,
        ad: &[u8],
        sealed: &[u8],
    ) -> std::result::Result<Vec<u8>, CryptoError> {
        crypto::open(self.key, ad, sealed)
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

    /// A snapshot file (SPEC §10).
    pub(crate) fn snapshot_file(&self, s: &Snapshot) -> Vec<u8> {
        let (version, body) = s.encode_body();
        self.seal_file(&SNAPSHOT_MAGIC, version, &body)
    }

    /// A whole pack (SPEC §7.1) from sealed blobs `(entry, sealed)`;
    /// offsets are assigned here.
    pub(crate) fn pack(&self, blobs: &[(PackEntry, Vec<u8>)]) -> (PackId, Vec<u8>, Vec<PackEntry>) {
        let mut buf = Vec::with_capacity(blobs.iter().map(|(_, s)| s.len()).sum::<usize>() + 4096);
        format::write_prefix(&mut buf, &format::PACK_MAGIC, format::FILE_VERSION);
        let mut header = PackHeader::default();
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
        (PackId::hash_of(&buf), buf, header.entries)
    }

    /// Writes `packs` as index files (a pack is never split), each naming
    /// `supersedes` (SPEC §8).
    pub(crate) fn write_index_files(
        &self,
        backend: &dyn Backend,
        packs: &[IndexPack],
        supersedes: &[IndexId],
    ) -> Result<Vec<IndexId>> {
        let mut written = Vec::new();
        let mut start = 0;
        while start < packs.len() {
            let (mut end, mut n) = (start, 0);
            while end < packs.len() && (n == 0 || n + packs[end].entries.len() <= MAX_INDEX_ENTRIES)
            {
                n += packs[end].entries.len();
                end += 1;
            }
            let f = IndexFile {
                packs: packs[start..end].to_vec(),
                supersedes: supersedes.to_vec(),
            };
            let bytes = self.seal_file(&INDEX_MAGIC, format::FILE_VERSION, &encoding::encode(&f));
            let id = IndexId::hash_of(&bytes);
            backend.write(ObjectKind::Index, &id.to_hex(), &bytes)?;
            written.push(id);
            start = end;
        }
        Ok(written)
    }

    /// Checks a blob's id and length, so nothing damaged is sealed again.
    pub(crate) fn verify_blob(
        &self,
        repo: &crate::repository::Repository,
        pack: PackId,
        e: &PackEntry,
        sealed: &[u8],
    ) -> Result<()> {
        blob::open_blob_with(
            self.key,
            repo.hasher(),
            e.kind,
            &e.id,
            sealed,
            e.raw_length,
            repo.dictionaries(),
        )
        .map(|_| ())
        .map_err(|err| repo.blob_error(pack, &e.id, err))
    }
}
