//! XChaCha20-Poly1305 with random 192-bit nonces (SPEC §3.2).
//!
//! Sealed layout: `nonce (24) || ciphertext || tag (16)`. A random 192-bit
//! nonce can be drawn for every message without a counter: collisions are
//! negligible at any realistic volume, and no state must survive a crash.

use chacha20poly1305::aead::{Aead, AeadInOut, KeyInit, Payload};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
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
            &XNonce::from(*nonce),
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
    let nonce = XNonce::try_from(nonce).expect("split at NONCE_LEN");
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(&nonce, Payload { msg: ct, aad: ad })
        .map_err(|_| CryptoError::AuthFailed)
}

/// Encrypts in place: `buf[NONCE_LEN..]` holds the plaintext on entry; on
/// return `buf` is `nonce || ciphertext || tag`, the layout [`seal`] makes,
/// without a second buffer. The first `NONCE_LEN` bytes are overwritten.
pub fn seal_in_place(key: &[u8; 32], ad: &[u8], buf: &mut Vec<u8>) {
    assert!(buf.len() >= NONCE_LEN, "no room for the nonce");
    let (nonce, msg) = buf.split_at_mut(NONCE_LEN);
    rand::rngs::OsRng.fill_bytes(nonce);
    // As in `seal_with_nonce`: cannot fail for inputs below 256 GiB.
    let nonce = XNonce::try_from(&*nonce).expect("split at NONCE_LEN");
    let tag = XChaCha20Poly1305::new(key.into())
        .encrypt_inout_detached(&nonce, ad, msg.into())
        .expect("XChaCha20-Poly1305 input within limits");
    buf.extend_from_slice(&tag);
}

/// Encrypts `buf[at..]` in place under `nonce` and appends the tag: with
/// the nonce written just before `at`, `buf[at - NONCE_LEN..]` is what
/// [`seal_with_nonce`] makes, and a caller's header before it costs no
/// second buffer. Never reuse a nonce.
pub fn seal_tail_with_nonce(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    ad: &[u8],
    buf: &mut Vec<u8>,
    at: usize,
) {
    // As in `seal_with_nonce`: cannot fail for inputs below 256 GiB.
    let tag = XChaCha20Poly1305::new(key.into())
        .encrypt_inout_detached(&XNonce::from(*nonce), ad, (&mut buf[at..]).into())
        .expect("XChaCha20-Poly1305 input within limits");
    buf.extend_from_slice(&tag);
}

/// Like [`open`], but decrypts inside `sealed` and returns the plaintext as
/// a sub-slice of it: no allocation and no copy, for the read paths (restore,
/// check) that open every blob of a repository. `sealed` is left scrambled
/// when authentication fails.
pub fn open_in_place<'a>(
    key: &[u8; 32],
    ad: &[u8],
    sealed: &'a mut [u8],
) -> Result<&'a [u8], CryptoError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Truncated);
    }
    let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
    let (ct, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
    let nonce = XNonce::try_from(&*nonce).expect("split at NONCE_LEN");
    let tag = Tag::try_from(&*tag).expect("split at TAG_LEN");
    XChaCha20Poly1305::new(key.into())
        .decrypt_inout_detached(&nonce, ad, (&mut *ct).into(), &tag)
        .map_err(|_| CryptoError::AuthFailed)?;
    Ok(ct)
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
        assert_eq!(
            open_in_place(&key, b"ad", &mut s.clone()).unwrap(),
            b"hello"
        );
        let mut buf = vec![0u8; NONCE_LEN];
        buf.extend_from_slice(b"in place");
        seal_in_place(&key, b"ad", &mut buf);
        assert_eq!(buf.len(), NONCE_LEN + 8 + TAG_LEN);
        assert_eq!(open(&key, b"ad", &buf).unwrap(), b"in place");
        assert_eq!(
            open_in_place(&key, b"ad", &mut t.clone()),
            Err(CryptoError::AuthFailed)
        );
        assert_eq!(
            open_in_place(&key, b"ad", &mut s[..NONCE_LEN + TAG_LEN - 1].to_vec()),
            Err(CryptoError::Truncated)
        );
        assert_eq!(open(&key, b"ad", &s[..30]), Err(CryptoError::Truncated));
    }
}
