//! The repository's audit signing key (SPEC §31.3): a random Ed25519 seed,
//! stored sealed in one fixed object (`audit/signer`) so a rekey can
//! re-seal it in place, made on first use.

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::RngCore;
use std::path::Path;

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
    read_sealed(backend)?
        .map(|b| from_sealed(data_key, &b))
        .transpose()
}

fn read_sealed(backend: &dyn Backend) -> Result<Option<Vec<u8>>> {
    match backend.read(ObjectKind::Audit, SIGNER_NAME) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn from_sealed(data_key: &DataKeys, bytes: &[u8]) -> Result<SigningKey> {
    let seed = Zeroizing::new(seal::open_signer(data_key, bytes)?);
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| AuditError::Malformed("signing key is not 32 bytes".into()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The stored signing key, made and stored first when there is none. Two
/// writers racing to make it both read back the one the storage kept
/// (writes never replace an object, SPEC §11.3).
///
/// `cached` is a sealed copy in this machine's cache: the key never
/// changes, so once read it costs no request. A copy that no longer opens
/// (its epoch retired) is read again. Only a key found in the repository
/// is cached, never one this call just wrote: on storage that ignores
/// conditional writes a racing writer's key may replace it (§31.3).
pub fn load_or_create(
    backend: &dyn Backend,
    data_key: &DataKeys,
    cached: Option<&Path>,
) -> Result<SigningKey> {
    if let Some(k) = cached
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| from_sealed(data_key, &b).ok())
    {
        return Ok(k);
    }
    if let Some(bytes) = read_sealed(backend)? {
        let k = from_sealed(data_key, &bytes)?;
        if let Some(p) = cached {
            // The cache is disposable: failing to fill it costs a read.
            let _ = std::fs::write(p, &bytes);
        }
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
