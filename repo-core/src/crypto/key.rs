//! The master key, its sub-keys, and key files that wrap it (SPEC §3, §4).

use std::fmt;

use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{CryptoError, KdfParams, aead};
use crate::encoding;
use crate::format::{self, EPOCH_VERSION, FILE_VERSION, FormatError, KEY_MAGIC};
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
/// In a version-4 key file it also seals the X25519 secret (SPEC §29.2).
const SEALED_MASTER_V4_LEN: usize = SEALED_MASTER_LEN + 32;

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
    /// The X25519 public key epoch grants are sealed to: in version 4
    /// ([`format::EPOCH_VERSION`]) key files only (SPEC §29.2).
    pub public: Option<[u8; 32]>,
    /// `seal(kek, AD, master)`, or `master || x25519 secret` in version 4.
    pub sealed_master: Vec<u8>,
}

/// What a password unlocks: the master key, and in a version-4 key file
/// the X25519 secret that opens its epoch grants.
pub struct Unlocked {
    /// The master key.
    pub master: MasterKey,
    /// The key file's X25519 secret and public key (SPEC §29.2).
    pub dh: Option<(Zeroizing<[u8; 32]>, [u8; 32])>,
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
        let ad = Self::ad(FILE_VERSION, &header, None);
        let sealed_master = aead::seal(&kek, &ad, &key.master);
        Ok(Self {
            version: FILE_VERSION,
            header,
            public: None,
            sealed_master,
        })
    }

    /// Wraps `key` and a fresh X25519 key pair under `password`: a
    /// version-4 key file, which epoch grants can be sealed to without
    /// its password (SPEC §29.2).
    pub fn create_v4(
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
        let mut dh = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(dh.as_mut());
        let kek = kdf.derive(password, &salt)?;
        Ok(Self::create_v4_with(
            key, &kek, repo_id, kdf, host, username, created_ns, salt, &dh, None,
        ))
    }

    /// [`KeyFile::create_v4`] from given secrets (and a given nonce): for
    /// golden vectors only.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn create_v4_with(
        key: &MasterKey,
        kek: &[u8; 32],
        repo_id: RepoId,
        kdf: KdfParams,
        host: String,
        username: String,
        created_ns: i64,
        salt: [u8; SALT_LEN],
        dh: &[u8; 32],
        nonce: Option<&[u8; format::NONCE_LEN]>,
    ) -> Self {
        let header = KeyFileHeader {
            repo_id,
            created_ns,
            host,
            username,
            kdf,
            salt,
        };
        let public = super::grant::public_key(dh);
        let ad = Self::ad(EPOCH_VERSION, &header, Some(&public));
        let mut plain = Zeroizing::new([0u8; 64]);
        plain[..32].copy_from_slice(&key.master);
        plain[32..].copy_from_slice(dh);
        let sealed_master = match nonce {
            Some(n) => aead::seal_with_nonce(kek, n, &ad, plain.as_ref()),
            None => aead::seal(kek, &ad, plain.as_ref()),
        };
        Self {
            version: EPOCH_VERSION,
            header,
            public: Some(public),
            sealed_master,
        }
    }

    fn ad(version: u32, header: &KeyFileHeader, public: Option<&[u8; 32]>) -> Vec<u8> {
        let mut ad = Vec::new();
        format::write_prefix(&mut ad, &KEY_MAGIC, version);
        ad.extend_from_slice(&encoding::encode(header));
        if let Some(p) = public {
            ad.extend_from_slice(p);
        }
        ad
    }

    /// Unwraps the master key with `password`.
    pub fn unlock(&self, password: &[u8]) -> Result<MasterKey, CryptoError> {
        Ok(self.unlock_full(password)?.master)
    }

    /// Unwraps the master key and, in a version-4 file, the X25519 secret.
    pub fn unlock_full(&self, password: &[u8]) -> Result<Unlocked, CryptoError> {
        let kek = self.header.kdf.derive(password, &self.header.salt)?;
        let plain = Zeroizing::new(
            aead::open(
                &kek,
                &Self::ad(self.version, &self.header, self.public.as_ref()),
                &self.sealed_master,
            )
            .map_err(|_| CryptoError::WrongPassword)?,
        );
        let want = if self.public.is_some() { 64 } else { 32 };
        if plain.len() != want {
            return Err(CryptoError::WrongPassword);
        }
        let mut master = [0u8; 32];
        master.copy_from_slice(&plain[..32]);
        let dh = self.public.map(|p| {
            let mut s = Zeroizing::new([0u8; 32]);
            s.copy_from_slice(&plain[32..]);
            (s, p)
        });
        Ok(Unlocked {
            master: MasterKey::from_bytes(master),
            dh,
        })
    }

    /// `magic || version || header || u64 len || sealed_master` (SPEC §4);
    /// version 4 puts the public key between header and `sealed_master`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        format::write_prefix(&mut out, &KEY_MAGIC, self.version);
        match &self.public {
            None => out.extend_from_slice(&encoding::encode(&(&self.header, &self.sealed_master))),
            Some(p) => {
                out.extend_from_slice(&encoding::encode(&(&self.header, p, &self.sealed_master)))
            }
        }
        out
    }

    /// Parses a key file without unlocking it. A file no reader could
    /// unlock (KDF parameters over the limits, a sealed master key of the
    /// wrong length) is refused here, so listings show it as damaged.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let (version, rest) = format::read_prefix(bytes, &KEY_MAGIC, "key file")?;
        let (header, public, sealed_master) = if version >= EPOCH_VERSION {
            let (h, p, s): (KeyFileHeader, [u8; 32], Vec<u8>) = encoding::decode(rest, "key file")?;
            (h, Some(p), s)
        } else {
            let (h, s): (KeyFileHeader, Vec<u8>) = encoding::decode(rest, "key file")?;
            (h, None, s)
        };
        let malformed = |reason: String| FormatError::Malformed {
            what: "key file",
            reason,
        };
        let want = if public.is_some() {
            SEALED_MASTER_V4_LEN
        } else {
            SEALED_MASTER_LEN
        };
        if sealed_master.len() != want {
            return Err(malformed(format!(
                "sealed master key of {} bytes, not {want}",
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
            public,
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
    fn v4_key_file_carries_an_authenticated_public_key() {
        let k = MasterKey::generate();
        let rid = RepoId::from_bytes([1; 32]);
        let kf = KeyFile::create_v4(&k, b"pw", rid, weak(), "h".into(), "u".into(), 5).unwrap();
        let back = KeyFile::decode(&kf.encode()).unwrap();
        assert_eq!(back, kf);
        let u = back.unlock_full(b"pw").unwrap();
        assert_eq!(u.master.data_key(), k.data_key());
        let (secret, public) = u.dh.unwrap();
        assert_eq!(super::super::grant::public_key(&secret), public);
        assert_eq!(Some(public), kf.public);
        let mut t = back.clone();
        t.public = Some([9; 32]);
        assert_eq!(t.unlock(b"pw").unwrap_err(), CryptoError::WrongPassword);
    }

    #[test]
    fn debug_hides_secret() {
        assert_eq!(format!("{:?}", MasterKey::generate()), "MasterKey(..)");
    }
}
