//! cairn's repository engine: a content-addressed, deduplicating, encrypted
//! backup repository. The on-disk format is specified in `SPEC.md`.

pub mod format;
pub mod id;
pub mod encoding;
pub mod crypto;
pub mod hash;
pub mod chunker;
pub mod compress;
pub mod blob;
pub mod pack;
pub mod tree;
pub mod snapshot;
pub mod config;
pub mod backend;
pub mod cache;
