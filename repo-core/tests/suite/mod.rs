//! Shared helpers for the integration suites.

mod availability;
mod check;
mod check_spill;
mod concurrent_prune;
mod corruption;
mod corruption_sweep;
mod dictionary;
mod fault_model;
mod faults;
mod hostile;
mod incremental;
mod inspect;
mod key_race;
mod keys;
mod old_layout;
mod patterns;
mod plaintext;
mod prune;
mod repair;
mod restore_target;
mod resume;
mod roundtrip;
mod selection;

use std::path::Path;

use repo_core::{InitOptions, KdfParams, LocalBackend, OpenOptions, Repository};

/// Cheap argon2 so tests stay fast; production defaults are tested elsewhere.
pub fn weak_kdf() -> KdfParams {
    KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    }
}

/// A fresh local repository at `dir/repo` with password `pw`.
pub fn init_repo(dir: &Path) -> Repository {
    let opts = InitOptions {
        kdf: weak_kdf(),
        pack_size: 1 << 20,
        ..Default::default()
    };
    Repository::init(LocalBackend::create(dir.join("repo")).unwrap(), b"pw", opts).unwrap()
}

/// Opens `dir/repo` again (a new session, empty in-memory cache).
pub fn open_repo(dir: &Path, pw: &[u8]) -> repo_core::Result<Repository> {
    Repository::open(
        LocalBackend::open(dir.join("repo")),
        pw,
        OpenOptions::default(),
    )
}

/// Deterministic pseudo-random bytes (xorshift).
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Text lines, compressible, deterministic.
pub fn text_lines(n_lines: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..n_lines {
        s.push_str(&format!(
            "{i:08} INSERT INTO t VALUES ({i}, 'name {}', 'x{}@example.org');\n",
            i * 7 % 1000,
            i % 97
        ));
    }
    s.into_bytes()
}
