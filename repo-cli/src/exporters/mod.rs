//! Exporters: native clients of database servers that produce a stream for
//! the library's stream backup, and put it back on restore. They live in the
//! CLI crate because they open sockets and start processes (the library
//! opens no sockets and starts no processes).

pub mod pg_base;
pub mod pg_delta;
pub mod pg_extract;
pub mod pg_globals;
pub mod pg_recompress;
pub mod pg_target;
pub mod postgres;
pub mod process;
pub mod qdrant;
// The RDB check is in the crate's library, so the fuzz target reaches it.
pub use repo_cli::exporters::rdb;
pub mod rdb_keys;
pub mod redis;
