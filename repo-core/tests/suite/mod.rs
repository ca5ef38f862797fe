//! Shared helpers for the integration suites.

mod audit;
mod availability;
mod check;
mod check_spill;
mod concurrent_prune;
mod conformance;
mod connections;
mod copy;
mod corruption;
mod corruption_sweep;
mod deferred_index;
mod delta;
mod dictionary;
mod epochs;
mod fault_model;
mod faults;
mod hostile;
mod incremental;
mod inspect;
mod key_hint;
mod key_race;
mod keys;
mod old_layout;
mod patterns;
mod plaintext;
mod prune;
mod reader;
mod rekey;
mod repair;
mod restore_packed;
mod restore_target;
mod resume;
mod roundtrip;
mod s3;
mod selection;
mod snapshot_cache;
mod unattended;
mod verification;
mod wal;
mod walks;

// The suites' shared helpers come from the workspace's test-support crate.
pub use cairn_testkit::WEAK_KDF;
pub use cairn_testkit::repo::{
    check_all, check_clean, fork, init_memory, init_repo, open_any, open_repo,
};
pub use cairn_testkit::rng::{XorShift, random_bytes, text_lines};
pub use cairn_testkit::tree::{Files, read_tree, restored, write_tree};
