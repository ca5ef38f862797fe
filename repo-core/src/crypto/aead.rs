//! XChaCha20-Poly1305 with random 192-bit nonces (SPEC §3.2).
//!
//! Sealed layout: `nonce (24) || ciphertext || tag (16)`. A random 192-bit
//! nonce can be drawn for every message without a counter: collisions are
//! negligible at any realistic volume, and no state must survive a crash.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use super::CryptoError;
use crate::format::{NONCE_LEN, TAG_LEN};

/// Encrypts `plaintext` under `key`, authenticating `ad` too.
pub fn seal(key: &[u8; 32], ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    seal_with_nonce(key, &nonce, ad, plaintext)
}

/// Encrypts with a given nonce: only for golden test vectors; never reuse a nonce.
#[doc(hidden)]
pub fn seal_with_nonce(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    ad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(nonce);
    // Encryption cannot fail below 256 GiB of input; ours is bounded far
    // below that. Storing a nonce without ciphertext would lose data.
    let ct = cipher
        .encrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: plaintext,
                aad: ad,
            },
        )
        .expect("XChaCha20-Poly1305 input under 256 GiB");
    out.extend_from_slice(&ct);
    out
}

/// Decrypts and authenticates bytes made by [`seal`].
pub fn open(key: &[u8; 32], ad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Truncated);
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: ad })
        .map_err(|_| CryptoError::AuthFailed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = [7u8; 32];
        let s = seal(&key, b"ad", b"hello");
        assert_eq!(open(&key, b"ad", &s).unwrap(), b"hello");
        assert_eq!(open(&key, b"other", &s), Err(CryptoError::AuthFailed));
        assert_eq!(open(&[8u8; 32], b"ad", &s), Err(CryptoError::AuthFailed));
        let mut t = s.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert_eq!(open(&key, b"ad", &t), Err(CryptoError::AuthFailed));
        assert_eq!(open(&key, b"ad", &s[..30]), Err(CryptoError::Truncated));
    }
}
