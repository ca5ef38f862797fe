//! cairn's fuzz targets: each `fuzz_targets/<name>.rs` calls
//! `checks::<name>`. The checks live in the workspace's test kit
//! (`tests/testkit/src/fuzz.rs`, feature `fuzz`), where the stable replay
//! test `tests/tests/fuzz_replay.rs` runs the same functions over
//! `seeds/<name>/` and `regressions/<name>/`.

pub use cairn_testkit::fuzz as checks;
