//! Shared property checks for cairn's fuzz targets.
//!
//! Each `fuzz_targets/<name>.rs` calls `checks::<name>`; the stable replay test
//! `tests/tests/fuzz_replay.rs` includes the same `checks.rs` file by path and
//! runs it over `seeds/<name>/` and `regressions/<name>/`.

pub mod checks;
