//! The repository config: format version, id and parameters fixed at `init`
//! (SPEC §5).
//!
//! `magic || version || repo_id || sealed(body)`; the id is in clear so a
//! client can find its cache and match key files before decrypting.

use crate::blob::{self, BlobError};
use crate::chunker::ChunkerParams;
use crate::crypto::{Cipher, MasterKey};
use crate::encoding;
use crate::format::{
    self, CONFIG_MAGIC, COPY_VERSION, DICTIONARY_VERSION, EPOCH_VERSION, FILE_PREFIX_LEN,
    FormatError, MAX_META_FILE, MIN_READ_VERSION, REPOSITORY_VERSION,
};
use crate::id::{ID_LEN, RepoId};

/// A named chunker profile (SPEC §6.1).
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode, serde::Serialize)]
pub struct ChunkerProfile {
    /// Name users select it by (`default`, `small`, `tiny`).
    pub name: String,
    /// Sizes.
    pub params: ChunkerParams,
}

/// The secrets that name and cut content (SPEC §3.1, §5): the chunk and
/// tree id keys and the chunker seed. A repository derives them from its
/// master key, unless its config holds them: then they are another
/// repository's (`init --copy-chunker-params`), so the two cut and name the
/// same data alike and copies between them deduplicate.
#[derive(
    Clone, PartialEq, Eq, bincode::Encode, bincode::Decode, zeroize::Zeroize, zeroize::ZeroizeOnDrop,
)]
pub struct ContentKeys {
    /// Key of keyed BLAKE3 chunk ids.
    pub id_key: [u8; 32],
    /// Key of keyed BLAKE3 tree ids.
    pub tree_key: [u8; 32],
    /// Seed XOR-ed into FastCDC's gear table.
    pub chunker_seed: u64,
}

impl ContentKeys {
    /// The keys a master key derives (SPEC §3.1).
    pub fn of(key: &MasterKey) -> Self {
        Self {
            id_key: *key.id_key(),
            tree_key: *key.tree_key(),
            chunker_seed: key.chunker_seed(),
        }
    }

    /// A short public fingerprint: two repositories with the same one name
    /// content alike. Reveals nothing of the keys (a keyed-hash output).
    pub fn fingerprint(&self) -> String {
        let mut h = blake3::Hasher::new_derive_key(CONTEXT_CONTENT_FINGERPRINT);
        h.update(&self.id_key);
        h.update(&self.tree_key);
        h.update(&self.chunker_seed.to_le_bytes());
        h.finalize().to_hex()[..16].to_string()
    }
}

/// BLAKE3 `derive_key` context of [`ContentKeys::fingerprint`] (SPEC §5).
pub const CONTEXT_CONTENT_FINGERPRINT: &str = "cairn 2026-12 content keys fingerprint v3";

impl std::fmt::Debug for ContentKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ContentKeys({})", self.fingerprint())
    }
}

/// Secrets never reach output: `cat config` shows the fingerprint.
impl serde::Serialize for ContentKeys {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.fingerprint())
    }
}

/// Encrypted body of the config (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode, serde::Serialize)]
pub struct Config {
    /// Format version the repository was created with; also the config
    /// file's prefix version. From 2 on, blobs may use dictionaries (SPEC §6.4).
    pub version: u32,
    /// Same as the clear id.
    pub repo_id: RepoId,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_ns: i64,
    /// Chunker profiles; index 0 is the default for files. Node `chunker`
    /// fields index this list, so it is append-only.
    pub chunker_profiles: Vec<ChunkerProfile>,
    /// zstd level for data blobs (0 = store raw).
    pub compression_level: i32,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Content keys shared with another repository, in version 3
    /// ([`COPY_VERSION`]) only; `None` derives them from the master key.
    /// Older bodies end before this field.
    pub content_keys: Option<ContentKeys>,
    /// The live data-key epochs, ascending, in version 4
    /// ([`EPOCH_VERSION`]) only; empty before, where epoch 0 alone is
    /// live. Older bodies end before this field (SPEC §29.4).
    pub epochs: Vec<u32>,
}

/// The encoding of an empty epoch list, which bodies before version 4 lack.
fn no_epochs() -> Vec<u8> {
    encoding::encode(&Vec::<u32>::new())
}

/// The cipher byte of XChaCha20-Poly1305 in a version-4 config (SPEC
/// §3.3, §29.4); [`Cipher::to_byte`] gives the others.
pub const CIPHER_XCHACHA20_POLY1305: u8 = 0;

impl Config {
    /// A config with the default parameters for a fresh repository.
    pub fn new(repo_id: RepoId, created_ns: i64) -> Self {
        Self {
            version: DICTIONARY_VERSION,
            repo_id,
            created_ns,
            chunker_profiles: vec![
                ChunkerProfile {
                    name: "default".into(),
                    params: ChunkerParams::DEFAULT,
                },
                ChunkerProfile {
                    name: "small".into(),
                    params: ChunkerParams::SMALL,
                },
                ChunkerProfile {
                    name: "tiny".into(),
                    params: ChunkerParams::TINY,
                },
            ],
            compression_level: 3,
            pack_size: 16 * 1024 * 1024,
            content_keys: None,
            epochs: Vec::new(),
        }
    }

    /// The live epochs: those listed in version 4, else epoch 0 alone.
    pub fn live_epochs(&self) -> Vec<u32> {
        if self.version >= EPOCH_VERSION {
            self.epochs.clone()
        } else {
            vec![0]
        }
    }

    /// Whether blobs of this repository may be compressed with a dictionary
    /// (SPEC §6.4). A version-1 repository never gains one: its config cannot
    /// be replaced atomically, and version-1 readers would not read them.
    pub fn dictionaries(&self) -> bool {
        self.version >= DICTIONARY_VERSION
    }

    /// Checks every parameter; a config that fails here is refused at open.
    pub fn validate(&self) -> Result<(), FormatError> {
        let bad = |reason: String| FormatError::Malformed {
            what: "config",
            reason,
        };
        // Versions after REPOSITORY_VERSION are file versions only.
        if !(MIN_READ_VERSION..=REPOSITORY_VERSION).contains(&self.version) {
            return Err(FormatError::UnsupportedVersion {
                what: "config",
                version: self.version,
            });
        }
        if self.version >= EPOCH_VERSION {
            let ascending = self.epochs.windows(2).all(|w| w[0] < w[1]);
            if self.epochs.is_empty()
                || !ascending
                || self
                    .epochs
                    .last()
                    .is_some_and(|&e| e > crate::crypto::MAX_EPOCH)
            {
                return Err(bad(format!(
                    "live epochs {:?} are not 1..={} ascending numbers up to {}",
                    self.epochs,
                    crate::crypto::MAX_EPOCH + 1,
                    crate::crypto::MAX_EPOCH
                )));
            }
        } else if !self.epochs.is_empty() {
            return Err(bad(format!(
                "a version-{} config cannot list epochs",
                self.version
            )));
        } else if (self.version >= COPY_VERSION) != self.content_keys.is_some() {
            return Err(bad(format!(
                "a version-{} config {} content keys",
                self.version,
                if self.content_keys.is_some() {
                    "cannot hold"
                } else {
                    "must hold"
                }
            )));
        }
        if self.chunker_profiles.is_empty() || self.chunker_profiles.len() > 255 {
            return Err(bad("needs 1..=255 chunker profiles".into()));
        }
        for p in &self.chunker_profiles {
            p.params.validate()?;
        }
        if !(0..=22).contains(&self.compression_level) {
            return Err(bad(format!(
                "compression level {} outside 0..=22",
                self.compression_level
            )));
        }
        if !(1 << 20..=1 << 30).contains(&self.pack_size) {
            return Err(bad(format!(
                "pack size {} outside 1 MiB..=1 GiB",
                self.pack_size
            )));
        }
        Ok(())
    }

    /// Index of the profile named `name`.
    pub fn profile(&self, name: &str) -> Option<u8> {
        self.chunker_profiles
            .iter()
            .position(|p| p.name == name)
            .map(|i| i as u8)
    }

    /// The encoded body (SPEC §5): versions 1 and 2 end before
    /// `content_keys`, so their configs are what earlier builds wrote.
    pub fn encode_body(&self) -> Vec<u8> {
        let mut body = encoding::encode(self);
        if self.version < EPOCH_VERSION {
            // The empty `epochs` ends the encoding (its u64 length, SPEC
            // §2.2), and before it a `None` of `content_keys` is one byte.
            body.truncate(body.len() - no_epochs().len());
            if self.content_keys.is_none() {
                body.pop();
            }
        }
        body
    }

    /// Decodes a body, which starts with its version: one before 3 ends
    /// before `content_keys`, which is then `None`.
    pub fn decode_body(body: &[u8]) -> Result<Self, FormatError> {
        let version = format::read_u32_le(body, 0, "config")?;
        if version >= EPOCH_VERSION {
            return encoding::decode(body, "config");
        }
        if version >= COPY_VERSION {
            let mut full = body.to_vec();
            full.extend_from_slice(&no_epochs());
            let c: Self = encoding::decode(&full, "config")?;
            if c.content_keys.is_none() {
                // Its encoding would be a version-2 body's: not canonical.
                return Err(FormatError::Malformed {
                    what: "config",
                    reason: format!("a version-{version} config must hold content keys"),
                });
            }
            return Ok(c);
        }
        let mut full = body.to_vec();
        full.push(0);
        full.extend_from_slice(&no_epochs());
        encoding::decode(&full, "config")
    }

    /// The encrypted config file.
    pub fn to_file(&self, key: &crate::crypto::DataKeys) -> Vec<u8> {
        let mut out = Vec::new();
        format::write_prefix(&mut out, &CONFIG_MAGIC, self.version);
        out.extend_from_slice(self.repo_id.as_bytes());
        if self.version >= EPOCH_VERSION {
            out.push(key.cipher().to_byte());
        }
        let sealed = blob::seal_object(key, &out, &self.encode_body(), 0);
        out.extend_from_slice(&sealed);
        out
    }

    /// Reads the clear repository id (and checks magic and version).
    /// The version is checked before any key is tried (SPEC §1).
    pub fn peek_id(bytes: &[u8]) -> Result<RepoId, FormatError> {
        let (_, rest) = config_prefix(bytes)?;
        let id: [u8; ID_LEN] = rest
            .get(..ID_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(FormatError::Truncated { what: "config" })?;
        Ok(RepoId::from_bytes(id))
    }

    /// The cipher a config file names (SPEC §3.3): its clear byte in
    /// version 4, XChaCha20-Poly1305 before.
    pub fn peek_cipher(bytes: &[u8]) -> Result<Cipher, FormatError> {
        let (version, _) = config_prefix(bytes)?;
        if version < EPOCH_VERSION {
            return Ok(Cipher::XChaCha20Poly1305);
        }
        match bytes.get(FILE_PREFIX_LEN + ID_LEN) {
            Some(&b) => Cipher::from_byte(b).ok_or_else(|| FormatError::Malformed {
                what: "config",
                reason: format!("unknown cipher {b}"),
            }),
            None => Err(FormatError::Truncated { what: "config" }),
        }
    }

    /// Decrypts and validates the config file.
    pub fn from_file(key: &crate::crypto::DataKeys, bytes: &[u8]) -> Result<Self, BlobError> {
        let id = Self::peek_id(bytes)?;
        let (prefix_version, _) = config_prefix(bytes)?;
        let mut clear = FILE_PREFIX_LEN + ID_LEN;
        if prefix_version >= EPOCH_VERSION {
            let cipher = Self::peek_cipher(bytes)?;
            if cipher != key.cipher() {
                return Err(FormatError::Malformed {
                    what: "config",
                    reason: format!(
                        "sealed with {}, opened with {}",
                        cipher.name(),
                        key.cipher().name()
                    ),
                }
                .into());
            }
            clear += 1;
        }
        let (ad, sealed) = bytes.split_at(clear);
        let plain = blob::open_object(key, ad, sealed, MAX_META_FILE)?;
        let c = Self::decode_body(&plain)?;
        if c.repo_id != id {
            return Err(FormatError::Malformed {
                what: "config",
                reason: "repository id mismatch".into(),
            }
            .into());
        }
        if c.version != prefix_version {
            return Err(FormatError::Malformed {
                what: "config",
                reason: format!(
                    "body version {} differs from the file's {prefix_version}",
                    c.version
                ),
            }
            .into());
        }
        c.validate()?;
        Ok(c)
    }
}

/// The config's prefix version and the bytes after it: a repository
/// version, so nothing after [`REPOSITORY_VERSION`] (later versions are
/// file versions only, SPEC §1).
fn config_prefix(bytes: &[u8]) -> Result<(u32, &[u8]), FormatError> {
    let (version, rest) = format::read_prefix(bytes, &CONFIG_MAGIC, "config")?;
    if version > REPOSITORY_VERSION {
        return Err(FormatError::UnsupportedVersion {
            what: "config",
            version,
        });
    }
    Ok((version, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct DataKeysForTest;
    impl DataKeysForTest {
        fn rotated(k: &MasterKey) -> crate::crypto::DataKeys {
            crate::crypto::DataKeys::new(Some(k.data_key()), &[(2, [4; 32])]).unwrap()
        }
    }

    #[test]
    fn config_round_trip() {
        let k = MasterKey::generate();
        let c = Config::new(RepoId::from_bytes([5; 32]), 77);
        c.validate().unwrap();
        let f = c.to_file(&k.data_keys());
        assert_eq!(Config::peek_id(&f).unwrap(), c.repo_id);
        assert_eq!(Config::from_file(&k.data_keys(), &f).unwrap(), c);
        let mut t = f.clone();
        t[FILE_PREFIX_LEN] ^= 1; // the clear id is authenticated
        assert!(Config::from_file(&k.data_keys(), &t).is_err());
        assert_eq!(c.profile("small"), Some(1));
        assert!(c.dictionaries());

        // A version-1 config keeps its version in the prefix and the body.
        let mut v1 = c.clone();
        v1.version = 1;
        let f1 = v1.to_file(&k.data_keys());
        assert_eq!(f1[8..12], 1u32.to_le_bytes());
        let back = Config::from_file(&k.data_keys(), &f1).unwrap();
        assert!(!back.dictionaries());

        // Version 3 holds shared content keys; 1 and 2 cannot.
        let mut v3 = c.clone();
        v3.version = 3;
        assert!(v3.validate().is_err());
        v3.content_keys = Some(ContentKeys::of(&MasterKey::generate()));
        let f3 = v3.to_file(&k.data_keys());
        assert_eq!(f3[8..12], 3u32.to_le_bytes());
        assert_eq!(Config::from_file(&k.data_keys(), &f3).unwrap(), v3);
        let mut bad = c.clone();
        bad.content_keys = v3.content_keys.clone();
        assert!(bad.validate().is_err());
        // A version-3 body without keys is refused, not read as `None`.
        let mut none = encoding::encode(&c);
        none[..4].copy_from_slice(&3u32.to_le_bytes());
        assert!(Config::decode_body(&none).is_err());
        assert_eq!(Config::decode_body(&v3.encode_body()).unwrap(), v3);
        // Version 4 lists live epochs (and may hold content keys or not);
        // earlier versions cannot.
        let mut v4 = c.clone();
        v4.version = 4;
        assert!(v4.validate().is_err(), "no live epoch");
        v4.epochs = vec![0, 2];
        let keys = DataKeysForTest::rotated(&k);
        let f4 = v4.to_file(&keys);
        assert_eq!(f4[8..12], 4u32.to_le_bytes());
        assert_eq!(f4[FILE_PREFIX_LEN + ID_LEN], CIPHER_XCHACHA20_POLY1305);
        assert_eq!(Config::from_file(&keys, &f4).unwrap(), v4);
        let mut unknown = f4.clone();
        unknown[FILE_PREFIX_LEN + ID_LEN] = 9;
        assert!(Config::from_file(&keys, &unknown).is_err());
        v4.epochs = vec![2, 0];
        assert!(v4.validate().is_err(), "not ascending");
        let mut v2e = c.clone();
        v2e.epochs = vec![0];
        assert!(v2e.validate().is_err());
        // Secrets stay out of Debug and Serialize.
        let keys = v3.content_keys.unwrap();
        let shown = format!("{keys:?}") + &serde_json::to_string(&keys).unwrap();
        assert!(!shown.contains(&hex::encode(keys.id_key)));
    }
}
