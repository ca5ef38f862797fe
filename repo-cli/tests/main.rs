//! Black-box tests of the `cairn` binary: every test runs the real
//! executable against a repository in a temporary directory.
//!
//! Repositories are created with `--kdf-memory 64 --kdf-iterations 1` so
//! each command unlocks in microseconds, and the cache lives in the test's
//! temporary directory.

mod cli;
