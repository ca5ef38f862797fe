//! Data-key epochs: the sealing key rotates, content keys never do (SPEC §29).
//!
//! Epoch 0's key is the master key's `data_key`; epoch n >= 1 has a random
//! secret of its own. An object sealed under epoch n >= 1 carries n in the
//! first four bytes of its nonce (u32 little-endian); epoch-0 nonces are
//! fully random. The nonce is an AEAD input, so the tag is authenticated.

use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use rand::RngCore;
use xaes_256_gcm::Xaes256Gcm;
use zeroize::Zeroizing;

use super::CryptoError;
use crate::format::{NONCE_LEN, TAG_LEN};

/// BLAKE3 `derive_key` context of an epoch's sealing key from its secret
/// (SPEC §29.1).
pub const CONTEXT_EPOCH_SEAL: &str = "cairn 2026-12 epoch sealing key v4";

/// Bytes of the nonce that name the epoch (SPEC §29.1).
pub const EPOCH_TAG_LEN: usize = 4;

/// The AEAD that seals a repository's objects (SPEC §3.3), chosen at
/// `init` and named by a clear byte of a version-4 config. Both take a
/// 256-bit key and a 24-byte random nonce, so the epoch tag works alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cipher {
    /// XChaCha20-Poly1305 (§3.2), the default; the only one before version 4.
    #[default]
    #[serde(rename = "xchacha20-poly1305")]
    XChaCha20Poly1305,
    /// XAES-256-GCM (C2SP), for policies that name AES-256.
    #[serde(rename = "xaes-256-gcm")]
    Xaes256Gcm,
}

impl Cipher {
    /// The config's cipher byte.
    pub fn to_byte(self) -> u8 {
        match self {
            Cipher::XChaCha20Poly1305 => 0,
            Cipher::Xaes256Gcm => 1,
        }
    }
    /// The cipher of a config's cipher byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Cipher::XChaCha20Poly1305),
            1 => Some(Cipher::Xaes256Gcm),
            _ => None,
        }
    }
    /// The name `init --cipher` takes and output shows.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::XChaCha20Poly1305 => "xchacha20-poly1305",
            Cipher::Xaes256Gcm => "xaes-256-gcm",
        }
    }
    /// Parses [`Cipher::name`].
    pub fn parse(s: &str) -> Option<Self> {
        [Cipher::XChaCha20Poly1305, Cipher::Xaes256Gcm]
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
    }
}

/// One epoch's keyed AEAD. XAES keeps its two derived block keys, so a
/// seal costs no key schedule beyond the per-message one XAES defines.
#[derive(Clone)]
enum Aead {
    XChaCha(XChaCha20Poly1305),
    Xaes(Box<Xaes256Gcm>),
}

impl Aead {
    fn new(cipher: Cipher, key: &[u8; 32]) -> Self {
        match cipher {
            Cipher::XChaCha20Poly1305 => Aead::XChaCha(XChaCha20Poly1305::new(key.into())),
            Cipher::Xaes256Gcm => Aead::Xaes(Box::new(Xaes256Gcm::new(key.into()))),
        }
    }

    /// Encrypts `buf` in place and returns the tag. Inputs are bounded
    /// far below either cipher's limit (256 GiB, 64 GiB), so it cannot
    /// fail; storing a nonce without ciphertext would lose data.
    fn seal(&self, nonce: &[u8; NONCE_LEN], ad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = match self {
            Aead::XChaCha(c) => c.encrypt_inout_detached(&(*nonce).into(), ad, buf.into()),
            Aead::Xaes(c) => c.encrypt_inout_detached(&(*nonce).into(), ad, buf.into()),
        };
        tag.expect("AEAD input within limits").into()
    }

    /// Checks the tag, then decrypts `buf` in place; on failure `buf` is
    /// left as it was (both ciphers verify before they decrypt).
    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        ad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> bool {
        match self {
            Aead::XChaCha(c) => c
                .decrypt_inout_detached(&(*nonce).into(), ad, buf.into(), &(*tag).into())
                .is_ok(),
            Aead::Xaes(c) => c
                .decrypt_inout_detached(&(*nonce).into(), ad, buf.into(), &(*tag).into())
                .is_ok(),
        }
    }
}

/// A repository's live sealing keys: what every object is sealed and
/// opened with. Cloning is cheap enough for a handle per repository.
#[derive(Clone)]
pub struct DataKeys {
    /// Indexed by epoch number: a tag costs one bounds check and a load.
    slots: Vec<Option<Aead>>,
    newest: u32,
    cipher: Cipher,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKeys(epochs {:?})", self.live_epochs())
    }
}

/// The sealing key of epoch n >= 1, derived from its secret (SPEC §29.1).
pub fn epoch_sealing_key(secret: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(blake3::derive_key(CONTEXT_EPOCH_SEAL, secret))
}

impl DataKeys {
    /// Only epoch 0, keyed by `data_key`: every repository before its first
    /// rotation (SPEC §29).
    pub fn epoch_zero(data_key: &[u8; 32]) -> Self {
        Self::epoch_zero_with(Cipher::default(), data_key)
    }

    /// [`DataKeys::epoch_zero`] under `cipher`.
    pub fn epoch_zero_with(cipher: Cipher, data_key: &[u8; 32]) -> Self {
        Self {
            slots: vec![Some(Aead::new(cipher, data_key))],
            newest: 0,
            cipher,
        }
    }

    /// The cipher every epoch uses.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// The live epochs: `data_key` for epoch 0 when it is live, and the
    /// secrets of the others. The newest is the highest number. Fails on
    /// an empty set or an epoch number too large to index.
    pub fn new(
        data_key: Option<&[u8; 32]>,
        secrets: &[(u32, [u8; 32])],
    ) -> Result<Self, CryptoError> {
        Self::new_with(Cipher::default(), data_key, secrets)
    }

    /// [`DataKeys::new`] under `cipher`.
    pub fn new_with(
        cipher: Cipher,
        data_key: Option<&[u8; 32]>,
        secrets: &[(u32, [u8; 32])],
    ) -> Result<Self, CryptoError> {
        let newest = secrets
            .iter()
            .map(|(n, _)| *n)
            .chain(data_key.map(|_| 0))
            .max()
            .ok_or(CryptoError::NoEpoch)?;
        if newest > MAX_EPOCH || secrets.iter().any(|(n, _)| *n == 0) {
            return Err(CryptoError::NoEpoch);
        }
        let mut slots = vec![None; newest as usize + 1];
        if let Some(k) = data_key {
            slots[0] = Some(Aead::new(cipher, k));
        }
        for (n, s) in secrets {
            slots[*n as usize] = Some(Aead::new(cipher, &epoch_sealing_key(s)));
        }
        Ok(Self {
            slots,
            newest,
            cipher,
        })
    }

    /// The epoch everything is sealed under now.
    pub fn newest_epoch(&self) -> u32 {
        self.newest
    }

    /// Every epoch this handle can open, ascending.
    pub fn live_epochs(&self) -> Vec<u32> {
        (0..self.slots.len() as u32)
            .filter(|n| self.slots[*n as usize].is_some())
            .collect()
    }

    /// True when objects of `epoch` can be opened.
    pub fn is_live(&self, epoch: u32) -> bool {
        self.slot(epoch).is_some()
    }

    fn slot(&self, epoch: u32) -> Option<&Aead> {
        self.slots.get(epoch as usize).and_then(Option::as_ref)
    }

    fn newest_cipher(&self) -> &Aead {
        self.slot(self.newest).expect("the newest epoch is live")
    }

    /// A fresh random nonce tagged with the newest epoch.
    pub fn fresh_nonce(&self) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        self.tag_nonce(&mut nonce);
        nonce
    }

    fn tag_nonce(&self, nonce: &mut [u8]) {
        if self.newest >= 1 {
            nonce[..EPOCH_TAG_LEN].copy_from_slice(&self.newest.to_le_bytes());
        }
    }

    /// Seals under the newest epoch: `nonce || ciphertext || tag`.
    pub fn seal(&self, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.resize(NONCE_LEN, 0);
        out.extend_from_slice(plaintext);
        self.seal_in_place(ad, &mut out);
        out
    }

    /// Encrypts in place: `buf[NONCE_LEN..]` holds the plaintext on entry;
    /// on return `buf` is what [`DataKeys::seal`] makes.
    pub fn seal_in_place(&self, ad: &[u8], buf: &mut Vec<u8>) {
        assert!(buf.len() >= NONCE_LEN, "no room for the nonce");
        let nonce = self.fresh_nonce();
        buf[..NONCE_LEN].copy_from_slice(&nonce);
        let tag = self.newest_cipher().seal(&nonce, ad, &mut buf[NONCE_LEN..]);
        buf.extend_from_slice(&tag);
    }

    /// Encrypts `buf[at..]` in place under `nonce` and appends the tag; the
    /// epoch is the one `nonce` names (take it from
    /// [`DataKeys::fresh_nonce`]). Never reuse a nonce.
    pub fn seal_tail_with_nonce(
        &self,
        nonce: &[u8; NONCE_LEN],
        ad: &[u8],
        buf: &mut Vec<u8>,
        at: usize,
    ) {
        let tag = self
            .candidates(nonce)
            .0
            .expect("a nonce from fresh_nonce names a live epoch")
            .1
            .seal(nonce, ad, &mut buf[at..]);
        buf.extend_from_slice(&tag);
    }

    /// The epoch the nonce's tag names, if live, then epoch 0 if live and
    /// different: the order a reader tries them in (SPEC §29.1).
    #[allow(clippy::type_complexity)]
    fn candidates(&self, nonce: &[u8]) -> (Option<(u32, &Aead)>, Option<(u32, &Aead)>) {
        let tag = u32::from_le_bytes([nonce[0], nonce[1], nonce[2], nonce[3]]);
        let zero = self.slot(0).map(|c| (0, c));
        match self.slot(tag) {
            Some(c) if tag != 0 => (Some((tag, c)), zero),
            _ => (zero, None),
        }
    }

    /// Decrypts and authenticates bytes made by [`DataKeys::seal`]; also
    /// says which epoch opened them.
    pub fn open(&self, ad: &[u8], sealed: &[u8]) -> Result<(Vec<u8>, u32), CryptoError> {
        let mut buf = sealed.to_vec();
        let (plain, epoch) = self.open_in_place(ad, &mut buf)?;
        let len = plain.len();
        buf.truncate(NONCE_LEN + len);
        buf.drain(..NONCE_LEN);
        Ok((buf, epoch))
    }

    /// Like [`DataKeys::open`], but decrypts inside `sealed` and returns the
    /// plaintext as a sub-slice of it: no allocation and no copy. The tag
    /// is checked before anything is decrypted, so a failed first try
    /// leaves the bytes intact for the epoch-0 fallback.
    pub fn open_in_place<'a>(
        &self,
        ad: &[u8],
        sealed: &'a mut [u8],
    ) -> Result<(&'a [u8], u32), CryptoError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Truncated);
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let (ct, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let nonce: &[u8; NONCE_LEN] = (&*nonce).try_into().expect("split at NONCE_LEN");
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().expect("split at TAG_LEN");
        let (first, second) = self.candidates(nonce);
        for (epoch, c) in first.into_iter().chain(second) {
            if c.open(nonce, ad, ct, tag) {
                return Ok((ct, epoch));
            }
        }
        Err(CryptoError::AuthFailed)
    }
}

/// The highest epoch number a reader indexes (SPEC §29.1): a rotation a
/// day for almost three years; far more than any repository needs.
pub const MAX_EPOCH: u32 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_fallback_and_tamper() {
        let dk = [3u8; 32];
        let zero = DataKeys::epoch_zero(&dk);
        let s0 = zero.seal(b"ad", b"old");
        let both = DataKeys::new(Some(&dk), &[(2, [9u8; 32])]).unwrap();
        assert_eq!(both.newest_epoch(), 2);
        assert_eq!(both.live_epochs(), vec![0, 2]);
        let s2 = both.seal(b"ad", b"new");
        assert_eq!(s2[..4], 2u32.to_le_bytes());
        assert_eq!(both.open(b"ad", &s0).unwrap(), (b"old".to_vec(), 0));
        assert_eq!(both.open(b"ad", &s2).unwrap(), (b"new".to_vec(), 2));
        assert_eq!(zero.open(b"ad", &s2), Err(CryptoError::AuthFailed));
        // An epoch-0 object whose random nonce looks like epoch 2's tag
        // still opens: the reader falls back to epoch 0.
        let mut n = [7u8; NONCE_LEN];
        n[..4].copy_from_slice(&2u32.to_le_bytes());
        let mut buf = n.to_vec();
        buf.extend_from_slice(b"collide");
        zero.seal_tail_with_nonce(&n, b"ad", &mut buf, NONCE_LEN);
        assert_eq!(both.open(b"ad", &buf).unwrap(), (b"collide".to_vec(), 0));
        assert_eq!(
            both.open_in_place(b"ad", &mut buf.clone()).unwrap().1,
            0,
            "the failed try left the bytes intact"
        );
        // The tag is authenticated: changing it fails.
        let mut t = s2.clone();
        t[0] = 0;
        assert_eq!(both.open(b"ad", &t), Err(CryptoError::AuthFailed));
        // Without epoch 0, epoch-0 objects no longer open.
        let only2 = DataKeys::new(None, &[(2, [9u8; 32])]).unwrap();
        assert_eq!(only2.open(b"ad", &s0), Err(CryptoError::AuthFailed));
        let mut in_place = vec![0u8; NONCE_LEN];
        in_place.extend_from_slice(b"xyz");
        only2.seal_in_place(b"ad", &mut in_place);
        assert_eq!(
            only2.open_in_place(b"ad", &mut in_place).unwrap(),
            (&b"xyz"[..], 2)
        );
        assert!(DataKeys::new(None, &[]).is_err());
        // XAES-256-GCM: the same tags and fallback; the ciphers do not mix.
        let x = DataKeys::new_with(Cipher::Xaes256Gcm, Some(&dk), &[(2, [9u8; 32])]).unwrap();
        let sx = x.seal(b"ad", b"aes");
        assert_eq!(sx[..4], 2u32.to_le_bytes());
        assert_eq!(x.open(b"ad", &sx).unwrap(), (b"aes".to_vec(), 2));
        assert!(both.open(b"ad", &sx).is_err());
        assert!(x.open(b"ad", &s2).is_err());
        let x0 = DataKeys::epoch_zero_with(Cipher::Xaes256Gcm, &dk);
        assert_eq!(x.open(b"ad", &x0.seal(b"ad", b"zero")).unwrap().1, 0);
        assert_eq!(Cipher::parse("XAES-256-GCM"), Some(Cipher::Xaes256Gcm));
        assert_eq!(
            Cipher::from_byte(Cipher::Xaes256Gcm.to_byte()),
            Some(Cipher::Xaes256Gcm)
        );
        assert!(DataKeys::new(None, &[(MAX_EPOCH + 1, [0; 32])]).is_err());
    }
}
