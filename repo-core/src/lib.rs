//! cairn's repository engine: a content-addressed, deduplicating, encrypted
//! backup repository. The on-disk format is specified in `SPEC.md`.
//!
//! ```no_run
//! use repo_core::{LocalBackend, OpenOptions, Repository, SnapshotFilter};
//! # fn main() -> repo_core::Result<()> {
//! let repo = Repository::open(LocalBackend::open("/srv/backup"), b"secret", OpenOptions::default())?;
//! let outcome = repo.backup().path("/etc").tag("nightly").run()?;
//! let snap = repo.find_snapshot("latest", &SnapshotFilter::default())?;
//! repo.restore(&snap).to("/tmp/restore").run()?;
//! # let _ = outcome; Ok(()) }
//! ```
//!
//! Modules are layered: format primitives (`format` … `config`) know no I/O;
//! storage (`backend`, `cache`) knows no trees or snapshots; the engine
//! (`index` … `restore`) builds on both. `tests/layering.rs` enforces it.

// Without the `unstable` door, helpers that only the workspace's tests, fuzz
// targets and benches reach through it would read as dead code.
#![cfg_attr(not(feature = "unstable"), allow(dead_code, unused_imports))]
// Every type reachable from the public API can be named by its users.
#![warn(unnameable_types)]
mod backend;
mod backup;
mod blob;
mod cache;
mod check;
mod chunker;
mod compress;
mod config;
mod crypto;
mod dict;
mod encoding;
mod error;
mod forget;
mod format;
mod hash;
mod id;
mod index;
mod inspect;
mod keys;
mod lock;
mod mark;
mod pack;
mod pattern;
mod progress;
mod prune;
mod repair;
mod repository;
mod restore;
mod snapshot;
mod tree;

#[cfg(feature = "unstable")]
#[doc(hidden)]
pub mod unstable;

pub use backend::{
    Backend, BackendError, BackendErrorKind, LocalBackend, MemoryBackend, ObjectInfo, ObjectKind,
};
pub use backup::{Backup, BackupOutcome, ParentChoice};
pub use blob::BlobError;
pub use cache::{CacheError, CheckRecord, DrillRecord, SqliteError};
pub use check::{
    CheckOptions, CheckReport, CheckSummary, DrillFailure, DrillOptions, DrillReport, DrillSummary,
    IntegrityReport, MerkleRoot, Problem, ProblemKind, ReadData, Sample,
};
pub use crypto::{CryptoError, KdfParams};
pub use error::{Error, Result};
pub use forget::{
    ForgetGroup, ForgetPlan, ForgetSummary, GroupBy, GroupKey, Kept, Removed, RetentionPolicy,
    UtcOffset, parse_duration, plan_forget,
};
pub use format::FormatError;
pub use id::{BlobId, KeyId, PackId, ParseIdError, RepoId, SnapshotId, TreeId};
pub use inspect::{
    BlobTotals, Change, Diff, DiffEntry, DiffTotals, FindMatch, MetadataField, RepositorySize,
    RestoreTotals, Stats, StatsMode,
};
pub use keys::{KeyDetails, KeyInfo, KeyStatus, PasswordChange};
pub use pattern::{PathPattern, PathPatterns};
pub use progress::{NoProgress, Progress};
pub use prune::{CondemnReason, Condemned, PendingMark, PruneOptions, PrunePlan, PruneSummary};
pub use repair::{DamagedPath, RepairIndexReport, RepairSnapshotsReport};
pub use repository::{InitOptions, OpenOptions, Repository, SnapshotFilter};
pub use restore::{Overwrite, Restore, RestoreSummary};
pub use snapshot::{Snapshot, SnapshotEntry, SnapshotSummary};
pub use tree::{Node, NodeKind, Tree, Xattr};
