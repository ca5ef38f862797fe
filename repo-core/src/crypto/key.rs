//! The master key, its sub-keys, and key files that wrap it (SPEC §3, §4).

use std::fmt;

use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{CryptoError, KdfParams, aead};
use crate::encoding;
use crate::format::{self, FILE_VERSION, FormatError, KEY_MAGIC};
use crate::id::RepoId;

/// Context strings for BLAKE3 `derive_key` (SPEC §3.1). Changing any of them
/// changes every id or ciphertext: they are part of the format.
pub const CONTEXT_CHUNK_ID: &str = "cairn 2026-11 chunk id key v1";
/// Tree id context (SPEC §3.1): trees and data chunks never share an id.
pub const CONTEXT_TREE_ID: &str = "cairn 2026-11 tree id key v1";
/// Chunker seed context (SPEC §3.1).
pub const CONTEXT_CHUNKER_SEED: &str = "cairn 2026-11 chunker gear seed v1";
/// Data encryption context (SPEC §3.1): blobs, pack headers, index, snapshots, config.
pub const CONTEXT_DATA: &str = "cairn 2026-11 data encryption key v1";
/// Dictionary id context (SPEC §3.1, §6.4), added in format version 2.
pub const CONTEXT_DICT_ID: &str = "cairn 2026-12 dictionary id key v2";
/// WAL archive context (SPEC §3.1, §28): cluster names and content MACs of
/// archived WAL files.
pub const CONTEXT_WAL: &str = "cairn 2026-12 wal archive key v1";

/// The repository's 256-bit master secret and the sub-keys derived from it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    master: [u8; 32],
    id_key: [u8; 32],
    tree_key: [u8; 32],
    data_key: [u8; 32],
    dict_key: [u8; 32],
    wal_key: [u8; 32],
    chunker_seed: u64,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A fresh random master key.
    pub fn generate() -> Self {
        let mut m = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut m);
        let k = Self::from_bytes(m);
        m.zeroize();
        k
    }

    /// Derives the sub-keys from the raw master secret.
    pub fn from_bytes(master: [u8; 32]) -> Self {
        let seed = blake3::derive_key(CONTEXT_CHUNKER_SEED, &master);
        Self {
            master,
            id_key: blake3::derive_key(CONTEXT_CHUNK_ID, &master),
            tree_key: blake3::derive_key(CONTEXT_TREE_ID, &master),
            data_key: blake3::derive_key(CONTEXT_DATA, &master),
            dict_key: blake3::derive_key(CONTEXT_DICT_ID, &master),
            wal_key: blake3::derive_key(CONTEXT_WAL, &master),
            chunker_seed: u64::from_le_bytes([
                seed[0], seed[1], seed[2], seed[3], seed[4], seed[5], seed[6], seed[7],
            ]),
        }
    }

    /// Key for keyed BLAKE3 blob ids.
    pub fn id_key(&self) -> &[u8; 32] {
        &self.id_key
    }
    /// Key for keyed BLAKE3 tree ids.
    pub fn tree_key(&self) -> &[u8; 32] {
        &self.tree_key
    }
    /// Key for XChaCha20-Poly1305 of every encrypted object.
    pub fn data_key(&self) -> &[u8; 32] {
        &self.data_key
    }
    /// Epoch 0 alone (SPEC §29): the sealing keys of a repository that was
    /// never rotated.
    pub fn data_keys(&self) -> super::DataKeys {
        super::DataKeys::epoch_zero(&self.data_key)
    }
    /// Key for keyed BLAKE3 dictionary ids (SPEC §6.4).
    pub fn dict_key(&self) -> &[u8; 32] {
        &self.dict_key
    }
    /// Key for keyed BLAKE3 of archived WAL: cluster names and content
    /// MACs (SPEC §28).
    pub fn wal_key(&self) -> &[u8; 32] {
        &self.wal_key
    }
    /// Seed XOR-ed into FastCDC's gear table.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }
}

/// Salt length in a key file (SPEC §4).
pub const SALT_LEN: usize = 32;

/// Length of `sealed_master`: nonce, the 32-byte master key, tag (SPEC §4).
const SEALED_MASTER_LEN: usize = format::NONCE_LEN + 32 + format::TAG_LEN;

/// Plain fields of a key file (SPEC §4); they are the AEAD's associated data.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode, serde::Serialize)]
pub struct KeyFileHeader {
    /// Repository this key opens; binds the file to it.
    pub repo_id: RepoId,
    /// Creation time, nanoseconds since the Unix epoch, UTC.
    pub created_ns: i64,
    /// Host that created it (informational).
    pub host: String,
    /// User that created it (informational).
    pub username: String,
    /// argon2id parameters.
    pub kdf: KdfParams,
    /// argon2id salt.
    pub salt: [u8; SALT_LEN],
}

/// A key file: header plus the sealed master secret (SPEC §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    /// Format version the file was written with; part of the AD.
    pub version: u32,
    /// Plain fields.
    pub header: KeyFileHeader,
    /// `seal(kek, magic||version||header, master)`.
    pub sealed_master: Vec<u8>,
}

impl KeyFile {
    /// Wraps `key` under `password`.
    pub fn create(
        key: &MasterKey,
        password: &[u8],
        repo_id: RepoId,
        kdf: KdfParams,
        host: String,
        username: String,
        created_ns: i64,
    ) -> Result<Self, CryptoError> {
        let mut salt = [0u8; SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let header = KeyFileHeader {
            repo_id,
            created_ns,
            host,
            username,
            kdf,
            salt,
        };
        let kek = kdf.derive(password, &salt)?;
        let ad = Self::ad(FILE_VERSION, &header);
        let sealed_master = aead::seal(&kek, &ad, &key.master);
        Ok(Self {
            version: FILE_VERSION,
            header,
            sealed_master,
        })
    }

    fn ad(version: u32, header: &KeyFileHeader) -> Vec<u8> {
        let mut ad = Vec::new();
        format::write_prefix(&mut ad, &KEY_MAGIC, version);
        ad.extend_from_slice(&encoding::encode(header));
        ad
    }

    /// Unwraps the master key with `password`.
    pub fn unlock(&self, password: &[u8]) -> Result<MasterKey, CryptoError> {
        let kek = self.header.kdf.derive(password, &self.header.salt)?;
        let plain = Zeroizing::new(
            aead::open(
                &kek,
                &Self::ad(self.version, &self.header),
                &self.sealed_master,
            )
            .map_err(|_| CryptoError::WrongPassword)?,
        );
        let master: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::WrongPassword)?;
        Ok(MasterKey::from_bytes(master))
    }

    /// `magic || version || header || u64 len || sealed_master` (SPEC §4).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        format::write_prefix(&mut out, &KEY_MAGIC, self.version);
        out.extend_from_slice(&encoding::encode(&(&self.header, &self.sealed_master)));
        out
    }

    /// Parses a key file without unlocking it. A file no reader could
    /// unlock (KDF parameters over the limits, a sealed master key of the
    /// wrong length) is refused here, so listings show it as damaged.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let (version, rest) = format::read_prefix(bytes, &KEY_MAGIC, "key file")?;
        let (header, sealed_master): (KeyFileHeader, Vec<u8>) = encoding::decode(rest, "key file")?;
        let malformed = |reason: String| FormatError::Malformed {
            what: "key file",
            reason,
        };
        if sealed_master.len() != SEALED_MASTER_LEN {
            return Err(malformed(format!(
                "sealed master key of {} bytes, not {SEALED_MASTER_LEN}",
                sealed_master.len()
            )));
        }
        header
            .kdf
            .check_limits()
            .map_err(|e| malformed(e.to_string()))?;
        Ok(Self {
            version,
            header,
            sealed_master,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weak() -> KdfParams {
        KdfParams::INSECURE_TEST
    }

    #[test]
    fn key_file_round_trip_and_wrong_password() {
        let k = MasterKey::generate();
        let rid = RepoId::from_bytes([1; 32]);
        let kf = KeyFile::create(&k, b"pw", rid, weak(), "h".into(), "u".into(), 5).unwrap();
        let bytes = kf.encode();
        let back = KeyFile::decode(&bytes).unwrap();
        assert_eq!(back, kf);
        let k2 = back.unlock(b"pw").unwrap();
        assert_eq!(k2.data_key(), k.data_key());
        assert_eq!(
            back.unlock(b"nope").unwrap_err(),
            CryptoError::WrongPassword
        );
        // The header is authenticated: changing the host breaks unlocking.
        let mut t = back.clone();
        t.header.host = "x".into();
        assert_eq!(t.unlock(b"pw").unwrap_err(), CryptoError::WrongPassword);
    }

    #[test]
    fn debug_hides_secret() {
        assert_eq!(format!("{:?}", MasterKey::generate()), "MasterKey(..)");
    }
}
