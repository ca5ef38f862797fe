//! Passphrase stretching with argon2id (SPEC §4).

use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use super::CryptoError;

/// argon2id parameters, stored in each key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode, serde::Serialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// t=3, m=64 MiB, p=4: RFC 9106's second recommended option. The four
    /// lanes are filled in parallel (argon2's `parallel` feature), so
    /// opening a repository costs half the wall time on two cores that one
    /// lane would, for the same memory and passes.
    fn default() -> Self {
        Self {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 4,
        }
    }
}

/// Upper bounds accepted from a key file, so a hostile file cannot make
/// `open` allocate without limit (4 GiB, 100 passes, 64 lanes).
const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
const MAX_ITERATIONS: u32 = 100;
const MAX_PARALLELISM: u32 = 64;

impl KdfParams {
    /// Deliberately weak parameters (64 KiB, one pass, one lane) for tests
    /// only: opening a repository then takes microseconds instead of the
    /// default's ~1 s (several seconds in a debug build). **Never** use it
    /// for a real repository: it makes guessing the password cheap.
    ///
    /// ```
    /// use repo_core::{InitOptions, KdfParams};
    /// let opts = InitOptions { kdf: KdfParams::INSECURE_TEST, ..InitOptions::default() };
    /// # let _ = opts;
    /// ```
    pub const INSECURE_TEST: Self = Self {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    /// Derives a 32-byte key-encryption key from `password` and `salt`.
    pub fn derive(&self, password: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        if self.memory_kib > MAX_MEMORY_KIB
            || self.iterations > MAX_ITERATIONS
            || self.parallelism > MAX_PARALLELISM
        {
            return Err(CryptoError::BadKdfParams(format!(
                "{self:?} exceeds limits"
            )));
        }
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| CryptoError::BadKdfParams(e.to_string()))?;
        let mut out = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(password, salt, out.as_mut())
            .map_err(|e| CryptoError::BadKdfParams(e.to_string()))?;
        Ok(out)
    }
}
