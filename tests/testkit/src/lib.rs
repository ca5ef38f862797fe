//! Test support shared by every test suite of the workspace (repo-core's,
//! repo-cli's, `tests/`, the benches and the fuzz targets), so each helper
//! exists once:
//!
//! - [`rng`]: deterministic pseudo-random data (xorshift64);
//! - [`WEAK_KDF`] and [`PASSWORD`]: cheap argon2 for test repositories;
//! - [`repo`]: repository init/open helpers and [`repo::check_clean`];
//! - [`tree`]: writing and reading source trees as path → bytes maps;
//! - [`backend`]: a pass-through backend with hooks, for counting calls or
//!   acting between two of them;
//! - [`garage`]: a 3-node Garage cluster on loopback, the real object
//!   store of the S3 tests;
//! - [`proxy`]: a TCP proxy that adds latency, throttles and cuts
//!   connections between a client and a server;
//! - `fuzz` (feature `fuzz`): the property check of every fuzz target.
//!
//! Not for production use: the KDF is deliberately weak. The backend
//! conformance suite lives in repo-core (`repo_core::conformance`,
//! feature `conformance`) so that backends outside this workspace can run it.

pub mod backend;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod garage;
pub mod proxy;
pub mod repo;
pub mod rng;
pub mod tree;

use repo_core::KdfParams;

/// argon2id at its minimum cost (64 KiB, one pass, one lane), so tests
/// open repositories in microseconds. Production defaults are tested in
/// repo-core's own unit tests. The key-file vector of SPEC §20 and the
/// format fixtures (`tests/fixtures/`) were made with it: never change it.
pub const WEAK_KDF: KdfParams = KdfParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

/// The password of the repositories [`repo`] creates.
pub const PASSWORD: &[u8] = b"pw";
