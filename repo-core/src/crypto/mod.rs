//! Keys, key derivation and authenticated encryption (SPEC §3, §4).

mod aead;
mod epoch;
mod grant;
mod kdf;
mod key;

pub use aead::{open, open_in_place, seal, seal_in_place, seal_tail_with_nonce, seal_with_nonce};
pub use epoch::{
    CONTEXT_EPOCH_SEAL, Cipher, DataKeys, EPOCH_TAG_LEN, MAX_EPOCH, epoch_sealing_key,
};
pub use grant::{
    CONTEXT_GRANT, GRANT_LEN, grant_name, open_grant, parse_grant_name, public_key, seal_grant,
    seal_grant_with,
};
pub use kdf::{KdfBudget, KdfParams, kdf_spent};
pub use key::{KeyFile, KeyFileHeader, MasterKey, Unlocked};

use thiserror::Error;

/// Cryptographic failures. None of them carry secret material.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// Authentication failed: wrong key, or the bytes were changed.
    #[error("authentication failed (wrong key or tampered data)")]
    AuthFailed,
    /// The sealed bytes are shorter than nonce and tag.
    #[error("sealed data is truncated")]
    Truncated,
    /// The passphrase did not unlock the key file.
    #[error("wrong password or no matching key")]
    WrongPassword,
    /// KDF parameters are out of range.
    #[error("invalid key-derivation parameters: {0}")]
    BadKdfParams(String),
    /// A set of data-key epochs that is empty or numbered beyond the limit.
    #[error("no usable data-key epoch")]
    NoEpoch,
}
