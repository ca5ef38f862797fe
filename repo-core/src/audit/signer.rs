//! The repository's audit signing key (SPEC §31.3): a random Ed25519 seed,
//! stored sealed in one fixed object (`audit/signer`) so a rekey can
//! re-seal it in place, made on first use.

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::RngCore;
use zeroize::Zeroizing;

use super::Result;
use super::{AuditError, PUBLIC_KEY_PREFIX, seal};
use crate::backend::{Backend, ObjectKind};
use crate::crypto::DataKeys;

/// The signing key's object name in the `audit/` namespace.
pub const SIGNER_NAME: &str = "signer";
/// `CAIRNAK\x1a`: the sealed signing key.
pub const SIGNER_MAGIC: [u8; 8] = *b"CAIRNAK\x1a";

/// The stored signing key, if any.
pub fn load(backend: &dyn Backend, data_key: &DataKeys) -> Result<Option<SigningKey>> {
    let bytes = match backend.read(ObjectKind::Audit, SIGNER_NAME) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let seed = Zeroizing::new(seal::open_signer(data_key, &bytes)?);
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| AuditError::Malformed("signing key is not 32 bytes".into()))?;
    Ok(Some(SigningKey::from_bytes(&seed)))
}

/// The stored signing key, made and stored first when there is none. Two
/// writers racing to make it both read back the one the storage kept
/// (writes never replace an object, SPEC §11.3).
pub fn load_or_create(backend: &dyn Backend, data_key: &DataKeys) -> Result<SigningKey> {
    if let Some(k) = load(backend, data_key)? {
        return Ok(k);
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut seed[..]);
    let sealed = seal::seal_signer(data_key, &seed[..]);
    backend.write(ObjectKind::Audit, SIGNER_NAME, &sealed)?;
    load(backend, data_key)?
        .ok_or_else(|| AuditError::Malformed("signing key vanished after writing".into()))
}

/// The short text form of a public key: `cairn-audit-ed25519:<64 hex>`.
pub fn public_text(key: &VerifyingKey) -> String {
    format!("{PUBLIC_KEY_PREFIX}{}", hex::encode(key.to_bytes()))
}

/// Parses a public key in its text form, or as bare hex.
pub fn parse_public(text: &str) -> std::result::Result<VerifyingKey, AuditError> {
    let t = text.trim();
    let hex_part = t.strip_prefix(PUBLIC_KEY_PREFIX).unwrap_or(t);
    let bytes: [u8; 32] = hex::decode(hex_part)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| AuditError::BadPublicKey(text.trim().chars().take(80).collect()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| AuditError::BadPublicKey(hex_part.into()))
}
