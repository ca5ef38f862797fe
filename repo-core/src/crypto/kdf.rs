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

/// What one open may spend stretching a password through key files the
/// user did not name (SPEC §14): a key file anyone could have planted in
/// `keys/` must not make every open take minutes or gigabytes. Key files
/// are tried cheapest first; one over a limit is not tried unless named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfBudget {
    /// Most memory one key file may ask for, in KiB.
    pub max_memory_kib: u32,
    /// Most [`KdfParams::cost`] all key files tried in one open may add up to.
    pub max_total_cost: u64,
    /// Most key files one open runs the KDF for.
    pub max_keys: usize,
}

impl Default for KdfBudget {
    /// 1 GiB per key; in all, 32 times the cost of a default key (so a
    /// key of 1 GiB and 6 passes, or 32 default keys); 20 key files.
    fn default() -> Self {
        Self {
            max_memory_kib: 1024 * 1024,
            max_total_cost: 32 * KdfParams::default().cost(),
            max_keys: 20,
        }
    }
}

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

    /// The parameters of an unattended key (SPEC §4.2): the smallest argon2
    /// accepts (8 KiB, one pass, one lane), so unlocking costs microseconds.
    /// Safe only because such a key's secret is 256 random bits, never a
    /// password a person chose: there is nothing for stretching to protect.
    pub const UNATTENDED: Self = Self {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };

    /// True for [`KdfParams::UNATTENDED`]: how `key list` tells an
    /// unattended key from a password (a key file carries no other mark).
    pub fn is_unattended(&self) -> bool {
        *self == Self::UNATTENDED
    }

    /// Memory times passes (KiB × passes): what stretching one password
    /// costs, in time as in memory traffic. Lanes share the memory and
    /// do not change it.
    pub fn cost(&self) -> u64 {
        u64::from(self.memory_kib) * u64::from(self.iterations)
    }

    /// True when weaker than RFC 9106's second recommended option (the
    /// default): less than 64 MiB, or less memory × passes than it.
    pub fn is_weak(&self) -> bool {
        let d = Self::default();
        self.memory_kib < d.memory_kib || self.cost() < d.cost()
    }

    /// True when an open would not try a key file of these parameters
    /// without being told its id, under `budget`.
    pub fn exceeds(&self, budget: &KdfBudget) -> bool {
        self.memory_kib > budget.max_memory_kib || self.cost() > budget.max_total_cost
    }

    /// Refuses parameters beyond what any reader accepts (SPEC §4).
    pub fn check_limits(&self) -> Result<(), CryptoError> {
        if self.memory_kib > MAX_MEMORY_KIB
            || self.iterations > MAX_ITERATIONS
            || self.parallelism > MAX_PARALLELISM
        {
            return Err(CryptoError::BadKdfParams(format!(
                "{self:?} exceeds limits"
            )));
        }
        Ok(())
    }

    /// Derives a 32-byte key-encryption key from `password` and `salt`.
    pub(crate) fn derive(
        &self,
        password: &[u8],
        salt: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        self.check_limits()?;
        SPENT.with(|s| {
            let (calls, cost) = s.get();
            s.set((calls + 1, cost.saturating_add(self.cost())));
        });
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| CryptoError::BadKdfParams(e.to_string()))?;
        let mut out = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(password, salt, out.as_mut())
            .map_err(|e| CryptoError::BadKdfParams(e.to_string()))?;
        Ok(out)
    }
}

thread_local! {
    /// Calls to [`KdfParams::derive`] on this thread, and their summed cost.
    static SPENT: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// How many times this thread has stretched a password, and the summed
/// [`KdfParams::cost`] of those runs: lets tests show which key files an
/// open tried without timing it.
pub fn kdf_spent() -> (u64, u64) {
    SPENT.with(|s| s.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_and_over_budget() {
        let d = KdfParams::default();
        let b = KdfBudget::default();
        assert!(!d.is_weak() && !d.exceeds(&b));
        let p = |memory_kib, iterations| KdfParams {
            memory_kib,
            iterations,
            parallelism: 4,
        };
        assert!(p(32 * 1024, 6).is_weak(), "less memory than RFC 9106 asks");
        assert!(p(64 * 1024, 2).is_weak());
        assert!(!p(1024 * 1024, 6).exceeds(&b));
        assert!(p(1024 * 1024, 7).exceeds(&b), "over the total cost");
        assert!(p(1024 * 1024 + 1, 1).exceeds(&b), "over the memory cap");
        assert!(p(4 * 1024 * 1024, 100).exceeds(&b));
        assert!(p(4 * 1024 * 1024, 100).check_limits().is_ok());
        assert!(p(4 * 1024 * 1024, 101).check_limits().is_err());
    }
}
