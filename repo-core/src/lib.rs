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

pub mod backend;
pub mod backup;
pub mod blob;
pub mod cache;
pub mod check;
pub mod chunker;
pub mod compress;
pub mod config;
pub mod crypto;
pub mod dict;
pub mod duration;
pub mod encoding;
pub mod error;
pub mod forget;
pub mod format;
pub mod hash;
pub mod id;
pub mod index;
pub mod inspect;
pub mod keys;
pub mod lock;
pub mod mark;
pub mod pack;
pub mod pattern;
pub mod progress;
pub mod prune;
pub mod repair;
pub mod repository;
pub mod restore;
pub mod size;
pub mod snapshot;
pub mod tree;

/// The backend conformance suite (feature `conformance`): public, so that
/// backends outside this crate prove themselves the same way.
#[cfg(feature = "conformance")]
pub use backend::conformance;
pub use backend::{
    Backend, BackendError, BackendErrorKind, LocalBackend, MemoryBackend, ObjectInfo, ObjectKind,
};
pub use backup::{BackupOutcome, ParentChoice};
pub use check::{
    CheckOptions, CheckReport, DrillOptions, DrillReport, IntegrityReport, Problem, ProblemKind,
    ReadData, Sample,
};
pub use crypto::{KdfBudget, KdfParams};
pub use duration::{DurationError, HumanDuration, format_duration, parse_duration, parse_run_time};
pub use error::{Error, Result, WarnFn, Warnings};
pub use forget::{
    ForgetGroup, ForgetPlan, ForgetSummary, GroupBy, GroupKey, Kept, Removed, RetentionPolicy,
    plan_forget,
};
pub use id::{BlobId, PackId, SnapshotId, TreeId};
pub use inspect::{
    Change, Diff, DiffEntry, DiffTotals, FindMatch, MetadataField, Stats, StatsMode,
};
pub use keys::{KeyDetails, KeyInfo, KeyStatus, PasswordChange};
pub use pattern::{PathPattern, PathPatterns};
pub use progress::{NoProgress, Progress};
pub use repository::{InitOptions, OpenOptions, Repository, SnapshotFilter};
pub use restore::{Overwrite, RestoreSummary};
pub use size::{HumanBytes, format_bytes};
pub use snapshot::{Snapshot, SnapshotEntry, SnapshotSummary};
pub use tree::{Node, NodeKind, Tree};
