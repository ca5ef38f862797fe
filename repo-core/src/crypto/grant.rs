//! Epoch grants: an epoch's secret sealed to one key file's X25519 public
//! key, so a rotation reaches every key file without its password
//! (SPEC §29.3).
//!
//! `magic || version || ephemeral public (32) || seal(k, AD, secret)`, where
//! `k = BLAKE3-derive_key(CONTEXT_GRANT, shared || ephemeral public ||
//! recipient public)` and AD = `magic || version || repo id || key id ||
//! epoch (u32 LE) || ephemeral public`: a grant moved to another name, key
//! or repository does not open.

use rand::RngCore;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::{CryptoError, aead};
use crate::format::{self, EPOCH_VERSION, FILE_PREFIX_LEN, GRANT_MAGIC, NONCE_LEN, TAG_LEN};
use crate::id::{KeyId, RepoId};

/// BLAKE3 `derive_key` context of a grant's sealing key (SPEC §29.3).
pub const CONTEXT_GRANT: &str = "cairn 2026-12 epoch grant key v4";

/// Length of a grant object.
pub const GRANT_LEN: usize = FILE_PREFIX_LEN + 32 + NONCE_LEN + 32 + TAG_LEN;

/// The X25519 public key of `secret`.
pub fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*secret)).to_bytes()
}

/// The name of key file `key`'s grant of `epoch`: `<key id>-<epoch, 8 hex>`.
pub fn grant_name(key: &KeyId, epoch: u32) -> String {
    format!("{}-{epoch:08x}", key.to_hex())
}

/// The key file and epoch a grant name stands for.
pub fn parse_grant_name(name: &str) -> Option<(KeyId, u32)> {
    let (key, epoch) = name.split_once('-')?;
    if epoch.len() != 8 {
        return None;
    }
    Some((key.parse().ok()?, u32::from_str_radix(epoch, 16).ok()?))
}

fn ad(repo: &RepoId, key: &KeyId, epoch: u32, ephemeral: &[u8; 32]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(FILE_PREFIX_LEN + 32 + 32 + 4 + 32);
    format::write_prefix(&mut ad, &GRANT_MAGIC, EPOCH_VERSION);
    ad.extend_from_slice(repo.as_bytes());
    ad.extend_from_slice(key.as_bytes());
    ad.extend_from_slice(&epoch.to_le_bytes());
    ad.extend_from_slice(ephemeral);
    ad
}

fn sealing_key(
    shared: &[u8; 32],
    ephemeral: &[u8; 32],
    recipient: &[u8; 32],
) -> Zeroizing<[u8; 32]> {
    let mut h = blake3::Hasher::new_derive_key(CONTEXT_GRANT);
    h.update(shared);
    h.update(ephemeral);
    h.update(recipient);
    Zeroizing::new(*h.finalize().as_bytes())
}

/// Seals epoch `epoch`'s `secret` to the key file `key` whose public key is
/// `recipient`.
pub fn seal_grant(
    recipient: &[u8; 32],
    repo: &RepoId,
    key: &KeyId,
    epoch: u32,
    secret: &[u8; 32],
) -> Result<Vec<u8>, CryptoError> {
    let mut eph = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(eph.as_mut());
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    seal_grant_with(&eph, &nonce, recipient, repo, key, epoch, secret)
}

/// [`seal_grant`] with a given ephemeral secret and nonce: for golden
/// vectors only.
#[doc(hidden)]
pub fn seal_grant_with(
    ephemeral_secret: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    recipient: &[u8; 32],
    repo: &RepoId,
    key: &KeyId,
    epoch: u32,
    secret: &[u8; 32],
) -> Result<Vec<u8>, CryptoError> {
    let eph = StaticSecret::from(*ephemeral_secret);
    let eph_pub = PublicKey::from(&eph).to_bytes();
    let shared = eph.diffie_hellman(&PublicKey::from(*recipient));
    // A low-order public key would make the shared secret known to all.
    if !shared.was_contributory() {
        return Err(CryptoError::AuthFailed);
    }
    let k = sealing_key(shared.as_bytes(), &eph_pub, recipient);
    let mut out = Vec::with_capacity(GRANT_LEN);
    format::write_prefix(&mut out, &GRANT_MAGIC, EPOCH_VERSION);
    out.extend_from_slice(&eph_pub);
    out.extend_from_slice(&aead::seal_with_nonce(
        &k,
        nonce,
        &ad(repo, key, epoch, &eph_pub),
        secret,
    ));
    Ok(out)
}

/// Opens a grant with the key file's X25519 secret. Any damage, or a grant
/// of another key file, epoch or repository, is an error.
pub fn open_grant(
    dh_secret: &[u8; 32],
    repo: &RepoId,
    key: &KeyId,
    epoch: u32,
    bytes: &[u8],
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    if bytes.len() != GRANT_LEN || format::read_prefix(bytes, &GRANT_MAGIC, "epoch grant").is_err()
    {
        return Err(CryptoError::Truncated);
    }
    let eph_pub: [u8; 32] = bytes[FILE_PREFIX_LEN..FILE_PREFIX_LEN + 32]
        .try_into()
        .expect("32 bytes");
    let me = StaticSecret::from(*dh_secret);
    let recipient = PublicKey::from(&me).to_bytes();
    let shared = me.diffie_hellman(&PublicKey::from(eph_pub));
    if !shared.was_contributory() {
        return Err(CryptoError::AuthFailed);
    }
    let k = sealing_key(shared.as_bytes(), &eph_pub, &recipient);
    let plain = Zeroizing::new(aead::open(
        &k,
        &ad(repo, key, epoch, &eph_pub),
        &bytes[FILE_PREFIX_LEN + 32..],
    )?);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&plain);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_round_trip_and_binding() {
        let dh = [5u8; 32];
        let public = public_key(&dh);
        let repo = RepoId::from_bytes([1; 32]);
        let key = KeyId::from_bytes([2; 32]);
        let g = seal_grant(&public, &repo, &key, 3, &[7; 32]).unwrap();
        assert_eq!(g.len(), GRANT_LEN);
        assert_eq!(*open_grant(&dh, &repo, &key, 3, &g).unwrap(), [7; 32]);
        assert!(open_grant(&dh, &repo, &key, 4, &g).is_err(), "other epoch");
        let other = KeyId::from_bytes([3; 32]);
        assert!(open_grant(&dh, &repo, &other, 3, &g).is_err(), "other key");
        assert!(
            open_grant(&[6; 32], &repo, &key, 3, &g).is_err(),
            "other secret"
        );
        let mut t = g.clone();
        t[20] ^= 1;
        assert!(open_grant(&dh, &repo, &key, 3, &t).is_err(), "tampered");
        assert_eq!(parse_grant_name(&grant_name(&key, 3)), Some((key, 3)));
        assert_eq!(parse_grant_name("xyz-00000001"), None);
    }
}
