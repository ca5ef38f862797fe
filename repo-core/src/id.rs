//! Typed 32-byte identifiers (SPEC §2.1).
//!
//! Every id is a BLAKE3 output: keyed for chunk and tree ids (so an attacker
//! cannot confirm a guessed plaintext), plain for packs, index and snapshot
//! files (so their integrity can be checked without the key). Ids compare in
//! constant time and print as lowercase hex.

use std::fmt;
use std::str::FromStr;

use subtle::ConstantTimeEq;

/// Length of every id in bytes.
pub const ID_LEN: usize = 32;

/// A string is not a valid hex id.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("invalid id {0:?}: expected 64 hex digits")]
pub struct ParseIdError(pub String);

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialOrd, Ord)]
        pub struct $name([u8; ID_LEN]);

        impl $name {
            /// Wraps raw id bytes.
            pub const fn from_bytes(bytes: [u8; ID_LEN]) -> Self {
                Self(bytes)
            }
            /// The raw id bytes.
            pub const fn as_bytes(&self) -> &[u8; ID_LEN] {
                &self.0
            }
            /// Lowercase hex, 64 characters.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// The first 8 hex digits, as shown in listings.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
            /// Plain (unkeyed) BLAKE3 of `data`: the content address of files.
            pub fn hash_of(data: &[u8]) -> Self {
                Self(*blake3::hash(data).as_bytes())
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.0.ct_eq(&other.0).into()
            }
        }
        impl Eq for $name {}

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
                self.0.hash(h)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }
        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; ID_LEN];
                hex::decode_to_slice(s, &mut out).map_err(|_| ParseIdError(s.to_string()))?;
                Ok(Self(out))
            }
        }
        impl bincode::Encode for $name {
            fn encode<E: bincode::enc::Encoder>(
                &self,
                e: &mut E,
            ) -> Result<(), bincode::error::EncodeError> {
                self.0.encode(e)
            }
        }
        impl<C> bincode::Decode<C> for $name {
            fn decode<D: bincode::de::Decoder<Context = C>>(
                d: &mut D,
            ) -> Result<Self, bincode::error::DecodeError> {
                Ok(Self(<[u8; ID_LEN] as bincode::Decode<C>>::decode(d)?))
            }
        }
        impl<'de, C> bincode::BorrowDecode<'de, C> for $name {
            fn borrow_decode<D: bincode::de::BorrowDecoder<'de, Context = C>>(
                d: &mut D,
            ) -> Result<Self, bincode::error::DecodeError> {
                Ok(Self(<[u8; ID_LEN] as bincode::Decode<C>>::decode(d)?))
            }
        }
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }
    };
}

define_id!(
    /// Keyed BLAKE3 of a data chunk's plaintext, or of a tree's encoding.
    BlobId
);
define_id!(
    /// Plain BLAKE3 of a pack file's bytes; also its file name.
    PackId
);
define_id!(
    /// Plain BLAKE3 of an index file's bytes; also its file name.
    IndexId
);
define_id!(
    /// Plain BLAKE3 of a snapshot file's bytes; also its file name.
    SnapshotId
);
define_id!(
    /// Keyed BLAKE3 of a compression dictionary (SPEC §6.4); also its file
    /// name. Its first 8 bytes are the dictionary reference in blobs.
    DictId
);
define_id!(
    /// Random identifier of a repository, chosen at `init`.
    RepoId
);
define_id!(
    /// Plain BLAKE3 of a key file's bytes; also its file name.
    KeyId
);

/// A tree is a blob of kind tree; its id is a [`BlobId`].
pub type TreeId = BlobId;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = PackId::hash_of(b"abc");
        let s = id.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<PackId>().unwrap(), id);
        assert!("zz".parse::<PackId>().is_err());
        assert_eq!(id.short(), &s[..8]);
    }
}
