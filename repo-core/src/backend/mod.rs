//! Where repository files live (SPEC §11): a small synchronous trait that a
//! local directory, memory, or an object store implements.
//!
//! Contract for every implementation:
//! - `write` is atomic (readers see all of the object or nothing), durable
//!   when it returns, and writing a name that exists returns `Ok`. It never
//!   replaces a `config`, key or WAL file (names not derived from the bytes);
//!   packs, index files, snapshots, dictionaries, marks and audit records
//!   are named by their content, so a backend may rewrite one of those with the same
//!   bytes instead of looking first (SPEC §11.3); lock names carry 64
//!   random bits, so no two writers use one and a backend need not look
//!   before writing a lock either.
//! - `read_range` returns exactly `len` bytes or fails.
//! - `list` may omit objects written concurrently, never invents any.
//!
//! `repo_core::conformance::run` (feature `conformance`) checks these promises; every
//! implementation runs it from its tests.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(any(test, feature = "fault-injection"))]
pub mod faulty;
mod limit;
mod local;
mod location;
mod memory;
#[cfg(feature = "s3")]
mod s3;
mod stats;

#[cfg(any(test, feature = "fault-injection"))]
pub use faulty::{Fault, FaultPlan, FaultyBackend, OpKind};
pub(crate) use limit::{Limited, Slots};
pub use local::LocalBackend;
pub(crate) use local::valid_name;
pub use location::{LOCATION_FORMS, Location, LocationError, S3Credentials, S3Location, S3Options};
pub use memory::MemoryBackend;
#[cfg(feature = "s3")]
pub use s3::S3Backend;
#[cfg(feature = "s3")]
pub(crate) use stats::Request;
pub use stats::RequestStats;
pub(crate) use stats::{Counted, Counters};

use std::fmt;
use std::io;

/// Kinds of repository files; each has its own namespace (SPEC §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// The single `config` file.
    Config,
    /// Key files.
    Key,
    /// Snapshot files.
    Snapshot,
    /// Index files.
    Index,
    /// Pack files.
    Pack,
    /// Lock and heartbeat files (never block a backup; SPEC §22).
    Lock,
    /// Prune marks: packs condemned by phase one of a prune (SPEC §22).
    Mark,
    /// Compression dictionaries (SPEC §6.4); never deleted.
    Dict,
    /// Archived PostgreSQL WAL files, one object each (SPEC §28).
    Wal,
    /// Audit trail records and the audit signing key (SPEC §31).
    Audit,
    /// Verification records: check, drill and exporter verify results,
    /// each naming where it ran (SPEC §32).
    Verify,
    /// Data-key epoch grants, one per key file and epoch (SPEC §29.3).
    Keyring,
}

impl ObjectKind {
    /// Every kind, for listings and sweeps.
    pub const ALL: [ObjectKind; 12] = [
        ObjectKind::Config,
        ObjectKind::Key,
        ObjectKind::Snapshot,
        ObjectKind::Index,
        ObjectKind::Pack,
        ObjectKind::Lock,
        ObjectKind::Mark,
        ObjectKind::Dict,
        ObjectKind::Wal,
        ObjectKind::Audit,
        ObjectKind::Verify,
        ObjectKind::Keyring,
    ];

    /// Directory name in the layout (SPEC §11).
    pub fn dir(self) -> &'static str {
        match self {
            ObjectKind::Config => "",
            ObjectKind::Key => "keys",
            ObjectKind::Snapshot => "snapshots",
            ObjectKind::Index => "index",
            ObjectKind::Pack => "data",
            ObjectKind::Lock => "locks",
            ObjectKind::Mark => "marks",
            ObjectKind::Dict => "dicts",
            ObjectKind::Wal => "wal",
            ObjectKind::Audit => "audit",
            ObjectKind::Verify => "verify",
            ObjectKind::Keyring => "keyring",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Config => "config",
            ObjectKind::Key => "key",
            ObjectKind::Snapshot => "snapshot",
            ObjectKind::Index => "index",
            ObjectKind::Pack => "pack",
            ObjectKind::Lock => "lock",
            ObjectKind::Mark => "mark",
            ObjectKind::Dict => "dictionary",
            ObjectKind::Wal => "WAL file",
            ObjectKind::Audit => "audit record",
            ObjectKind::Verify => "verification record",
            ObjectKind::Keyring => "epoch grant",
        })
    }
}

/// A listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its name (hex id, or `config`).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was written, nanoseconds since the epoch, by the storage's
    /// clock (not the client's): prune compares these times only with each
    /// other, so client clock skew cannot shorten a grace period.
    pub modified_ns: i64,
}

/// What went wrong, as far as a caller must decide on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The object does not exist.
    NotFound,
    /// The object exists (only where an operation must not find one).
    AlreadyExists,
    /// Out of space: nothing was written.
    NoSpace,
    /// May succeed if retried (network, timeouts).
    Transient,
    /// Will very likely not be resolved by retrying.
    Permanent,
}

/// A failed backend operation, naming the object.
#[derive(Debug, thiserror::Error)]
#[error("{op} {kind} {name}: {source}")]
pub struct BackendError {
    /// Classification.
    pub error_kind: BackendErrorKind,
    /// Operation (`read`, `write`, …).
    pub op: &'static str,
    /// Object kind.
    pub kind: ObjectKind,
    /// Object name.
    pub name: String,
    /// Underlying error.
    #[source]
    pub source: io::Error,
}

impl BackendError {
    /// Wraps an I/O error, classifying it.
    pub fn io(op: &'static str, kind: ObjectKind, name: &str, source: io::Error) -> Self {
        let error_kind = match source.kind() {
            // ENOTDIR: a component of the path is a file, so nothing exists there.
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => BackendErrorKind::NotFound,
            io::ErrorKind::AlreadyExists => BackendErrorKind::AlreadyExists,
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => BackendErrorKind::NoSpace,
            io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                BackendErrorKind::Transient
            }
            _ => BackendErrorKind::Permanent,
        };
        Self {
            error_kind,
            op,
            kind,
            name: name.to_string(),
            source,
        }
    }

    /// True when the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.error_kind == BackendErrorKind::NotFound
    }
}

/// Storage for repository files. Implementations are shared across threads.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Human-readable location, for messages.
    fn location(&self) -> String;
    /// Whether each request waits for a network round trip (object
    /// storage): then running more requests at once than there are cores
    /// pays (`Repository::set_connections`). Local storage answers from the
    /// page cache or a disk queue, and extra threads would only compete
    /// for the cores; decorators forward it.
    fn is_remote(&self) -> bool {
        false
    }
    /// The requests this backend sent over the wire so far, by kind, for
    /// a backend whose calls are not one request each (one that reads
    /// ahead, or looks before it writes); `None` (the default): each call
    /// is one request, and the repository counts the calls. Decorators
    /// forward it.
    fn wire_requests(&self) -> Option<RequestStats> {
        None
    }
    /// Reads a whole object.
    fn read(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>, BackendError>;
    /// [`Backend::read`] into `buf` (replacing its contents): a reader of
    /// many packs reuses one buffer instead of faulting in a fresh one per
    /// pack. Backends that can read into caller memory override it.
    fn read_into(
        &self,
        kind: ObjectKind,
        name: &str,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        *buf = self.read(kind, name)?;
        Ok(())
    }
    /// Reads exactly `len` bytes at `offset`.
    fn read_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, BackendError>;
    /// [`Backend::read_range`] into `buf` (replacing its contents), so a
    /// reader of many ranges can reuse one buffer. Backends that can read
    /// into caller memory override it.
    fn read_range_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        *buf = self.read_range(kind, name, offset, len)?;
        Ok(())
    }
    /// [`Backend::read_range_into`] of a range the caller planned (a
    /// restore's or check's span of a pack): exactly these bytes in one
    /// request, no read-ahead around them. Backends that read ahead
    /// override it.
    fn read_span_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        self.read_range_into(kind, name, offset, len, buf)
    }
    /// Size of an object.
    fn size(&self, kind: ObjectKind, name: &str) -> Result<u64, BackendError>;
    /// Size and modification time of an object.
    fn stat(&self, kind: ObjectKind, name: &str) -> Result<ObjectInfo, BackendError>;
    /// Stores an object atomically and durably; never replaces a `config`,
    /// key or WAL file (see the module's contract).
    fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError>;
    /// [`Backend::write`] of bytes the caller gives away (a finished
    /// pack): a backend that must hold the bytes while it sends them (S3)
    /// takes them instead of copying them, so a backup's packs in flight
    /// are in memory once. Decorators forward it.
    fn write_owned(&self, kind: ObjectKind, name: &str, data: Vec<u8>) -> Result<(), BackendError> {
        self.write(kind, name, &data)
    }
    /// Stores an object atomically and durably, replacing one of the same
    /// name: for the few objects with fixed names that change (the
    /// `config` at a key rotation, SPEC §29.4). A reader sees the old bytes
    /// or the new ones, never a mix; after `Ok` the new ones survive a
    /// crash. Decorators forward it.
    fn replace(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError>;
    /// Lists objects of a kind.
    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>, BackendError>;
    /// Lists several kinds: for each of `kinds`, in that order, what
    /// [`Backend::list`] returns. The kinds of one call are listed in no
    /// promised order, as if at once; a caller that needs one kind listed
    /// before another makes two calls. The default lists each kind; object
    /// storage overrides it to list the kinds with one walk of its sorted
    /// keys (SPEC §11.2). Decorators forward it.
    fn list_many(&self, kinds: &[ObjectKind]) -> Result<Vec<Vec<ObjectInfo>>, BackendError> {
        kinds.iter().map(|&k| self.list(k)).collect()
    }
    /// Deletes an object; deleting a missing object is `NotFound`, except
    /// that a missing lock may be reported deleted (S3 deletes a missing key
    /// silently, and a look first would cost every backup a round trip).
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<(), BackendError>;
}

/// A boxed backend is a backend: what [`Location::open`] returns can be
/// handed to [`Repository::open`](crate::Repository::open).
impl Backend for Box<dyn Backend> {
    fn location(&self) -> String {
        (**self).location()
    }
    fn read(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>, BackendError> {
        (**self).read(kind, name)
    }
    fn read_into(
        &self,
        kind: ObjectKind,
        name: &str,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        (**self).read_into(kind, name, buf)
    }
    fn read_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, BackendError> {
        (**self).read_range(kind, name, offset, len)
    }
    fn read_range_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        (**self).read_range_into(kind, name, offset, len, buf)
    }
    fn read_span_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        (**self).read_span_into(kind, name, offset, len, buf)
    }
    fn size(&self, kind: ObjectKind, name: &str) -> Result<u64, BackendError> {
        (**self).size(kind, name)
    }
    fn stat(&self, kind: ObjectKind, name: &str) -> Result<ObjectInfo, BackendError> {
        (**self).stat(kind, name)
    }
    fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        (**self).write(kind, name, data)
    }
    fn write_owned(&self, kind: ObjectKind, name: &str, data: Vec<u8>) -> Result<(), BackendError> {
        (**self).write_owned(kind, name, data)
    }
    fn replace(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        (**self).replace(kind, name, data)
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>, BackendError> {
        (**self).list(kind)
    }
    fn list_many(&self, kinds: &[ObjectKind]) -> Result<Vec<Vec<ObjectInfo>>, BackendError> {
        (**self).list_many(kinds)
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<(), BackendError> {
        (**self).delete(kind, name)
    }
    fn is_remote(&self) -> bool {
        (**self).is_remote()
    }
    fn wire_requests(&self) -> Option<RequestStats> {
        (**self).wire_requests()
    }
}
