//! The library's public error type: matchable variants for what a caller
//! must tell apart (exit codes, retries), wrapping each layer's error.
//!
//! Messages state what happened and name the object; they never tell the
//! user which command to run next: that advice belongs to the frontend (the
//! `cairn` CLI adds it when it prints an error).

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::backend::{BackendError, ObjectKind};
use crate::blob::BlobError;
use crate::cache::CacheError;
use crate::crypto::CryptoError;
use crate::format::FormatError;
use crate::id::{BlobId, PackId};
use crate::warning::Warning;

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a repository operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No repository config at the location.
    #[error("no cairn repository at {0}")]
    NotARepository(String),
    /// `init` found an existing repository.
    #[error("a repository already exists at {0}")]
    AlreadyExists(String),
    /// No key file could be unlocked with the password.
    #[error("wrong password or no matching key")]
    WrongPassword,
    /// No key file that was tried unlocked with the password, and some were
    /// not tried: their KDF parameters are over what one open spends on
    /// key files it was not told to use (SPEC §14), or there were too many.
    #[error(
        "wrong password or no matching key among the key files tried; not tried \
         (KDF cost over the limit for one open, or too many key files): {}",
        short_ids(.0)
    )]
    KeysNotTried(Vec<crate::id::KeyId>),
    /// No snapshot matched the selection.
    #[error("no snapshot matches {0:?}")]
    SnapshotNotFound(String),
    /// A selection of snapshots (filters, ids) matched none; names the
    /// repository.
    #[error("no snapshot of {0} matches the selection")]
    NothingSelected(String),
    /// A copy's source and destination are the same repository.
    #[error("cannot copy snapshots of repository {} into itself", .0.short())]
    CopyIntoItself(crate::id::RepoId),
    /// An id prefix matched several snapshots.
    #[error("snapshot id prefix {0:?} is ambiguous")]
    AmbiguousSnapshot(String),
    /// No key file matched the id or prefix.
    #[error("no key matches {0:?}")]
    KeyNotFound(String),
    /// Text given as an unattended key's token is not one (SPEC §4.2).
    #[error("not an unattended key token: {0}")]
    BadServiceToken(String),
    /// The key file an unattended key's token names is not in the
    /// repository: it was removed (revoked), or the token is of another
    /// repository (SPEC §4.2).
    #[error(
        "the unattended key {} is not in this repository (removed, or of another repository)",
        .0.short()
    )]
    ServiceKeyGone(crate::id::KeyId),
    /// The key file this machine's cache held a copy of, which opened the
    /// repository, is no longer in it: removed (revoked). The copy is
    /// dropped, so the next open searches the key files (SPEC §14).
    #[error(
        "key {} (opened from this machine's cached copy) is no longer in the repository: it was removed; the copy is dropped",
        .0.short()
    )]
    CachedKeyGone(crate::id::KeyId),
    /// An id prefix matched several key files.
    #[error("key id prefix {0:?} is ambiguous")]
    AmbiguousKey(String),
    /// Removing the key would leave no usable key: the repository could
    /// never be opened again.
    #[error(
        "refusing to remove key {}: it is the last key that opens this repository \
         (add another key first)",
        .0.short()
    )]
    LastKey(crate::id::KeyId),
    /// The key unlocked the current session; removing it is refused so a
    /// typo cannot lock the user out mid-session.
    #[error(
        "refusing to remove key {}: it is the key this session was opened with",
        .0.short()
    )]
    KeyInUse(crate::id::KeyId),
    /// The key file that unlocked holds no grant of a live data-key epoch
    /// (SPEC §29.3): it was added by a build without epochs, or the grant
    /// is missing or damaged.
    #[error("key {} holds no usable grant of data-key epoch {epoch}", key.short())]
    MissingGrant {
        /// The key file.
        key: crate::id::KeyId,
        /// The epoch.
        epoch: u32,
    },
    /// A rotation would leave key files without the new epoch: they are
    /// of a version without a public key (SPEC §29.2).
    #[error(
        "refusing to rotate: key files without a public key could not open new data: {}",
        short_ids(.0)
    )]
    KeysWithoutPublicKey(Vec<crate::id::KeyId>),
    /// `key retire` of an epoch that objects are still sealed under.
    #[error(
        "refusing to retire epoch {epoch}: {count} objects are still sealed under it ({examples})"
    )]
    EpochInUse {
        /// The epoch.
        epoch: u32,
        /// How many objects use it.
        count: u64,
        /// Some of them, `kind/name`.
        examples: String,
    },
    /// `key retire` of the newest epoch, or of one that is not live.
    #[error("cannot retire epoch {epoch}: {reason}")]
    CannotRetire {
        /// The epoch.
        epoch: u32,
        /// Why.
        reason: &'static str,
    },
    /// A path is not in a snapshot.
    #[error("path {0:?} not found in the snapshot")]
    PathNotFound(String),
    /// A blob the snapshot needs is not in any index.
    #[error("blob {0} is not in the index (lost data)")]
    BlobNotFound(BlobId),
    /// A file's content list names a tree blob: the snapshot is damaged or
    /// forged (a file's content may only be data blobs, SPEC §9.1).
    #[error("file content names blob {0}, which is a tree, not data")]
    TreeAsContent(BlobId),
    /// A pack could not be parsed or a blob in it failed verification.
    #[error("pack {pack} is corrupt: {reason}")]
    CorruptPack {
        /// The damaged pack.
        pack: PackId,
        /// What failed.
        reason: String,
    },
    /// A blob names a compression dictionary that is missing or damaged
    /// (SPEC §6.4): every blob compressed with it is unreadable.
    #[error("blob {blob} needs dictionary {dict}, which is unavailable: {reason}")]
    DictionaryUnavailable {
        /// The dictionary reference, in hex.
        dict: String,
        /// The blob being read.
        blob: BlobId,
        /// Why the dictionary cannot be used.
        reason: String,
    },
    /// A repository file other than a pack failed to decrypt or decode.
    #[error("{kind} {name} is corrupt: {source}")]
    CorruptObject {
        /// The kind of file.
        kind: ObjectKind,
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: BlobError,
    },
    /// An operation that deletes or rewrites data refuses to run while a
    /// file it must read is damaged: what it cannot read it would treat as
    /// unused or lost.
    #[error("refusing to {op}: {kind} {name} is damaged")]
    Damaged {
        /// The operation refused.
        op: &'static str,
        /// The kind of the damaged file.
        kind: ObjectKind,
        /// Its name.
        name: String,
    },
    /// A backup would reuse a blob whose indexed pack the storage no
    /// longer lists (SPEC §15): its snapshot could not be restored.
    #[error("blob {blob} is indexed in pack {pack}, which the storage no longer lists (lost data)")]
    LostPack {
        /// The blob the backup needed.
        blob: BlobId,
        /// The pack the index names for it.
        pack: PackId,
    },
    /// A source could not be read at all (not a per-file warning).
    #[error("cannot read {}: {source}", path.display())]
    Source {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A stream's reader failed (e.g. the producing command exited non-zero).
    #[error("stream {name}: {source}")]
    Stream {
        /// The stream name.
        name: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Writing a restored file or directory failed.
    #[error("cannot restore {}: {source}", path.display())]
    Target {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// An argument is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Storage failure.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Local cache failure.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Malformed structure.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Cryptographic failure.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

fn short_ids(ids: &[crate::id::KeyId]) -> String {
    ids.iter().map(|k| k.short()).collect::<Vec<_>>().join(", ")
}

/// Receives each warning as it happens (the CLI prints it on stderr).
pub type WarnFn = Arc<dyn Fn(&Warning) + Send + Sync>;

/// Warnings of one repository session: damaged files skipped so that the
/// rest of the repository stays usable. Each message is kept once.
#[derive(Default)]
pub struct Warnings {
    seen: Mutex<Vec<Warning>>,
    sink: Option<WarnFn>,
}

impl std::fmt::Debug for Warnings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.list()).finish()
    }
}

impl Warnings {
    /// Warnings passed to `sink` as they happen.
    pub fn new(sink: Option<WarnFn>) -> Self {
        Self {
            seen: Mutex::new(Vec::new()),
            sink,
        }
    }

    /// Records `msg` (and passes it on) unless it was recorded before.
    pub fn warn(&self, msg: Warning) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(&msg) {
            return;
        }
        if let Some(f) = &self.sink {
            f(&msg);
        }
        seen.push(msg);
    }

    /// Every warning so far, in order.
    pub fn list(&self) -> Vec<Warning> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Library messages name what happened; advice such as "run `cairn
    /// check`" is the CLI's to give, not the library's.
    #[test]
    fn messages_carry_no_cli_advice() {
        let id = BlobId::from_bytes([1; 32]);
        let key = crate::id::KeyId::from_bytes([2; 32]);
        let errors = [
            Error::NotARepository("/r".into()),
            Error::KeyInUse(key),
            Error::LastKey(key),
            Error::BlobNotFound(id),
            Error::TreeAsContent(id),
            Error::LostPack {
                blob: id,
                pack: crate::id::PackId::from_bytes([3; 32]),
            },
            Error::Damaged {
                op: "prune",
                kind: ObjectKind::Index,
                name: "ab".into(),
            },
            Error::DictionaryUnavailable {
                dict: "00".into(),
                blob: id,
                reason: "missing".into(),
            },
        ];
        for e in errors {
            let m = e.to_string();
            assert!(!m.contains("`cairn"), "{m}");
            assert!(!m.contains("run `"), "{m}");
        }
    }
}
