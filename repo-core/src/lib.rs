//! cairn's repository engine: a content-addressed, deduplicating, encrypted
//! backup repository. The on-disk format is specified in `SPEC.md`.
//!
//! # Example
//!
//! Create a repository, back up a directory and an in-memory stream, list
//! the snapshots, restore one, and read a stored file back:
//!
//! ```
//! use std::io::Read;
//! use repo_core::{InitOptions, KdfParams, LocalBackend, OpenOptions, Repository, SnapshotFilter};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let source = dir.path().join("documents");
//! std::fs::create_dir(&source)?;
//! std::fs::write(source.join("notes.txt"), "buy milk\n")?;
//!
//! // `LocalBackend::create` lays out a new repository; `open` is for one that exists.
//! // `KdfParams::INSECURE_TEST` keeps this example fast: use the default for real data.
//! let options = InitOptions { kdf: KdfParams::INSECURE_TEST, ..InitOptions::default() };
//! let repo = Repository::init(LocalBackend::create(dir.path().join("repo"))?, b"secret", options)?;
//!
//! // One snapshot of a directory, another of a stream (e.g. a database dump).
//! let files = repo.backup().path(&source).tag("nightly").run()?;
//! assert!(files.warnings.is_empty());
//! repo.backup().stream("db/dump.sql", &b"CREATE TABLE t (x int);\n"[..]).run()?;
//!
//! // A later session opens the same repository.
//! drop(repo);
//! let repo = Repository::open(LocalBackend::open(dir.path().join("repo")), b"secret", OpenOptions::default())?;
//! for s in repo.snapshots()? {
//!     println!("{} {:?} {:?}", s.id.short(), s.snapshot.paths_lossy(), s.snapshot.tags);
//! }
//!
//! // Restore recreates each source path below the target directory.
//! let target = dir.path().join("restored");
//! repo.restore(&files.snapshot).to(&target).run()?;
//! let restored = target.join(source.strip_prefix("/")?).join("notes.txt");
//! assert_eq!(std::fs::read_to_string(restored)?, "buy milk\n");
//!
//! // Or read one stored file as a stream, verified chunk by chunk.
//! let latest = repo.find_snapshot("latest", &SnapshotFilter::default())?;
//! let mut dump = String::new();
//! repo.open_file(&latest, "db/dump.sql")?.read_to_string(&mut dump)?;
//! assert_eq!(dump, "CREATE TABLE t (x int);\n");
//! # Ok(()) }
//! ```
//!
//! More in `repo-core/examples/`.
//!
//! # Contents
//!
//! - The repository: [`Repository`] ([`Repository::init`],
//!   [`Repository::open`]) with [`InitOptions`], [`OpenOptions`],
//!   [`KdfParams`], and key management ([`KeyInfo`], [`PasswordChange`]).
//! - Operations, each a builder or an options struct, most with a plan
//!   computed before anything is deleted: [`Repository::backup`]
//!   ([`Backup`]), [`Repository::restore`] ([`Restore`]),
//!   [`Repository::check`] ([`CheckOptions`]), [`Repository::forget_plan`]
//!   ([`RetentionPolicy`]), [`Repository::prune_plan`] ([`PruneOptions`]),
//!   [`Repository::copy_from`] ([`Copy`](struct@Copy)).
//!   Long operations report through [`Progress`].
//! - Views of stored data: [`SnapshotEntry`], [`Snapshot`], [`Tree`],
//!   [`Node`], [`FileReader`] (a stored file as `impl Read`), and the
//!   typed ids [`SnapshotId`], [`TreeId`], [`BlobId`], [`PackId`].
//! - Path patterns: [`PathPattern`], one glob dialect for all commands.
//! - Errors: [`Error`] and the per-layer errors it wraps; per-file problems
//!   of a backup that still succeeds are [`Warning`]s.
//! - Storage: the [`Backend`] trait with [`LocalBackend`] and
//!   [`MemoryBackend`], and (feature `s3`) `S3Backend`; a [`Location`]
//!   parsed from a path or an `s3:` URL opens the right one.
//!
//! Internally, modules are layered: format primitives (`format` …
//! `config`) know no I/O; storage (`backend`, `cache`) knows no trees or
//! snapshots; the engine (`index` … `restore`) builds on both.
//! `tests/layering.rs` enforces it.

// Without the `unstable` door, helpers that only the workspace's tests, fuzz
// targets and benches reach through it would read as dead code.
#![cfg_attr(not(feature = "unstable"), allow(dead_code, unused_imports))]
// Every type reachable from the public API can be named by its users.
#![warn(unnameable_types)]
mod audit;
mod backend;
mod backup;
mod blob;
mod cache;
mod check;
mod chunker;
mod compress;
mod config;
mod copy;
mod crypto;
mod dict;
mod duration;
mod encoding;
mod epochs;
mod error;
mod forget;
mod format;
mod hash;
mod id;
mod index;
mod inspect;
mod key_hint;
mod keyring;
mod keys;
mod lock;
mod mark;
mod pack;
mod pattern;
mod progress;
mod prune;
mod reader;
mod rekey;
mod repair;
mod repository;
mod restore;
mod size;
mod snapshot;
mod tree;
mod unattended;
mod verification;
mod wal;
mod warning;

#[cfg(feature = "unstable")]
#[doc(hidden)]
pub mod unstable;

// The repository and its options.
pub use crypto::{Cipher, DataKeys, KdfBudget, KdfParams};
pub use epochs::{EpochCensus, Rotation};
pub use id::{KeyId, RepoId};
pub use keys::{KeyDetails, KeyInfo, KeyStatus, PasswordChange};
pub use repository::{ContentParams, InitOptions, OpenOptions, Repository, SnapshotFilter};
pub use unattended::ServiceToken;

// Backup and restore.
pub use backup::{
    Backup, BackupOutcome, DeltaSource, ParentChoice, REFERENCES_SUFFIX, normalize_path,
};
pub use compress::MAX_DELTA_REFS;
pub use reader::FileReader;
pub use repository::MAX_DELTA_DEPTH;
pub use restore::{Overwrite, Restore, RestoreSummary};

// The audit trail (SPEC §31).
pub use audit::{
    ANCHOR_KEY, AuditEntry, AuditError, AuditLog, AuditProblem, AuditRecord, AuditVerification,
    Heads, ObjectTally, ObservedBackend, PUBLIC_KEY_PREFIX, SignedReport, parse_public,
    public_text, verify_audit_trail, verify_signed_report,
};
pub use ed25519_dalek::VerifyingKey;

// Copy between repositories.
pub use copy::{CopiedSnapshot, Copy, CopyStats};

// Check, drill and repair.
pub use cache::{CheckRecord, DrillRecord};
pub use check::{
    Check, CheckOptions, CheckReport, CheckSummary, Drill, DrillFailure, DrillOptions, DrillReport,
    DrillSummary, IntegrityReport, MerkleRoot, Problem, ProblemKind, ReadData, Sample,
};
pub use repair::{DamagedPath, RepairIndexOptions, RepairIndexReport, RepairSnapshotsReport};
pub use verification::{
    COMPACT_AFTER, CheckOutcome, CompactedHistory, DrillOutcome, ExporterOutcome, LocationSummary,
    VerificationHistory, VerificationOutcome, VerificationRecord,
};

// Forget and prune: plan first, then execute.
pub use forget::{
    ForgetGroup, ForgetPlan, ForgetSummary, GroupBy, GroupKey, Kept, Removed, RetentionPolicy,
    UtcOffset, plan_forget,
};
pub use prune::{CondemnReason, Condemned, PendingMark, PruneOptions, PrunePlan, PruneSummary};
pub use rekey::{RekeyOptions, RekeyRemaining, RekeyReport, RekeyedSnapshot};

// Archived PostgreSQL WAL (SPEC §28).
pub use wal::RECOMPRESS_LEVEL as WAL_RECOMPRESS_LEVEL;
pub use wal::{
    Archived, BASE_BACKUP_TAG, BadWalName, BaseBackupRef, ClusterReport, SegmentHeader,
    TimelineHistory, TimelineReport, WalError, WalFileKind, WalFileName, WalGap, WalListing,
    WalObject, WalRelease, WalStore, control_file_system_identifier, parse_segment,
};

// Views of stored data, and inspection.
pub use id::{BlobId, PackId, ParseIdError, SnapshotId, TreeId};
pub use inspect::{
    BlobTotals, Change, Diff, DiffEntry, DiffTotals, FindMatch, MetadataField, RepositorySize,
    RestoreTotals, Stats, StatsMode,
};
pub use snapshot::{Snapshot, SnapshotEntry, SnapshotSummary};
pub use tree::{Node, NodeKind, Tree, Xattr};

// Durations and sizes as people write and read them, patterns and
// progress: shared by all operations.
pub use duration::{DurationError, HumanDuration, format_duration, parse_duration, parse_run_time};
pub use pattern::{PathPattern, PathPatterns};
pub use progress::{NoProgress, Progress};
pub use size::{HumanBytes, format_bytes};

// Errors.
pub use blob::BlobError;
pub use cache::{CacheError, SqliteError};
pub use crypto::CryptoError;
pub use error::{Error, Result, WarnFn, Warnings};
pub use format::FormatError;
pub use warning::Warning;

// Storage, and the conformance suite every backend runs (feature
// `conformance`): public, so backends outside this crate prove themselves
// the same way.
#[cfg(feature = "s3")]
pub use backend::S3Backend;
#[cfg(feature = "conformance")]
pub use backend::conformance;
pub use backend::{
    Backend, BackendError, BackendErrorKind, LOCATION_FORMS, LocalBackend, Location, LocationError,
    MemoryBackend, ObjectInfo, ObjectKind, RequestStats, S3Credentials, S3Location, S3Options,
};
