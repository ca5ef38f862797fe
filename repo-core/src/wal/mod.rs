//! Archived PostgreSQL WAL (SPEC §28): one sealed object per file that
//! PostgreSQL's `archive_command` hands over, named by a keyed hash of the
//! cluster's system identifier and the file name, so that
//! `restore_command` fetches one file with one read, and a listing of
//! `wal/` tells what is there without opening anything.
//!
//! WAL lives outside snapshots and the index: storing or fetching a file
//! takes no lock and loads no index. Retention (which files no base backup
//! needs) is [`plan_release`]; gaps are found by [`verify`].

mod name;
mod object;
mod recompress;
mod segment;
mod timeline;

use std::collections::BTreeMap;
use std::sync::Arc;

use zeroize::Zeroizing;

pub use name::{BadWalName, WalFileKind, WalFileName};
pub use object::{
    CLUSTER_HEX_LEN, MAC_LEN, MAX_WAL_FILE, WAL_HEADER_LEN, WAL_LEVEL, WAL_MAGIC, WAL_VERSION,
    cluster_name, content_mac, encode_with_nonce, object_epoch, object_name, split_object_name,
};
pub use recompress::RECOMPRESS_LEVEL;
pub use segment::{SegmentHeader, control_file_system_identifier, parse_segment};
pub use timeline::{
    BASE_BACKUP_TAG, BaseBackupRef, ClusterReport, DEFAULT_SEGMENT_SIZE, TimelineHistory,
    TimelineReport, WalGap, WalRelease, parse_lsn, plan_release, verify,
};

use crate::backend::{Backend, BackendError, ObjectKind};
use crate::repository::{OpenOptions, Repository};
use crate::snapshot::SnapshotEntry;

/// Why storing, fetching or reading archived WAL failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// Not a WAL file name.
    #[error(transparent)]
    BadName(#[from] BadWalName),
    /// A segment whose first page does not match its name.
    #[error("{name} is not a WAL segment: {reason}")]
    NotASegment {
        /// The file name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A timeline history or backup label without a system identifier to
    /// file it under.
    #[error("{0}: the cluster's system identifier is unknown (only segments carry it)")]
    NoSystemIdentifier(String),
    /// A segment of another cluster than the one named.
    #[error("{name} belongs to the cluster with system identifier {found}, not {expected}")]
    WrongCluster {
        /// The file name.
        name: String,
        /// The system identifier in its header.
        found: u64,
        /// The one given.
        expected: u64,
    },
    /// The file is archived already, with other content.
    #[error(
        "{name} is archived already with different content (object wal/{object}); the stored file is kept"
    )]
    Conflict {
        /// The file name.
        name: String,
        /// The object holding the other content.
        object: String,
    },
    /// The file is larger than any WAL file.
    #[error("{name} is {len} bytes, larger than any WAL file ({MAX_WAL_FILE})")]
    TooLarge {
        /// The file name.
        name: String,
        /// Its length.
        len: u64,
    },
    /// A stored object fails to open.
    #[error("damaged WAL object wal/{object}: {reason}")]
    Corrupt {
        /// The object name.
        object: String,
        /// What is wrong.
        reason: String,
    },
    /// The storage failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Writing a fetched file's content failed ([`WalStore::fetch_to`]).
    #[error("cannot write the fetched content: {0}")]
    Output(#[source] std::io::Error),
}

/// An archived file, as the listing of `wal/` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalObject {
    /// The cluster part of the name ([`cluster_name`]).
    pub cluster: String,
    /// The file.
    pub file: WalFileName,
    /// The object name.
    pub object: String,
    /// Stored bytes.
    pub size: u64,
    /// When it was stored, by the storage's clock.
    pub modified_ns: i64,
}

/// What [`WalStore::list`] found.
#[derive(Debug, Clone, Default)]
pub struct WalListing {
    /// Every WAL object, by cluster, then timeline and position.
    pub objects: Vec<WalObject>,
    /// Names in `wal/` that are not WAL objects' (`check` reports them).
    pub foreign: Vec<String>,
}

/// What [`WalStore::archive`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    /// The object name.
    pub object: String,
    /// False when the same file was archived before (nothing written).
    pub written: bool,
    /// A damaged object under the name (a write cut off on storage that
    /// does not write atomically) was replaced.
    pub repaired: bool,
    /// The file's length.
    pub len: u64,
    /// The object's length (when written).
    pub stored: u64,
}

/// What is stored under a WAL object's name.
enum Existing {
    Absent,
    /// Opens; its content MAC.
    Intact([u8; MAC_LEN]),
    Damaged,
}

/// Archived WAL of one repository: store, fetch, list, read, delete.
pub struct WalStore {
    backend: Arc<dyn Backend>,
    data_key: crate::crypto::DataKeys,
    wal_key: Zeroizing<[u8; 32]>,
    level: i32,
}

impl std::fmt::Debug for WalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalStore")
            .field("location", &self.backend.location())
            .finish_non_exhaustive()
    }
}

impl Repository {
    /// The repository's archived WAL.
    pub fn wal(&self) -> WalStore {
        WalStore::with_keys(
            self.shared_backend(),
            self.master_key(),
            self.data_keys().clone(),
            self.config().compression_level,
        )
    }
}

impl Repository {
    /// What retention releases given the snapshots that remain: one
    /// listing of `wal/`.
    pub(crate) fn wal_release_plan(
        &self,
        snapshots: &[SnapshotEntry],
    ) -> crate::error::Result<WalRelease> {
        let store = self.wal();
        let listing = store.list().map_err(WalError::into_repo_error)?;
        Ok(store.plan_release(&listing, snapshots))
    }
}

impl WalError {
    /// As the repository's error, for operations (prune, check) that
    /// return one.
    pub(crate) fn into_repo_error(self) -> crate::error::Error {
        match self {
            WalError::Backend(e) => e.into(),
            WalError::Corrupt { object, reason } => crate::error::Error::CorruptObject {
                kind: ObjectKind::Wal,
                name: object,
                source: crate::format::FormatError::Malformed {
                    what: "WAL file",
                    reason,
                }
                .into(),
            },
            other => crate::error::Error::InvalidArgument(other.to_string()),
        }
    }
}

impl WalStore {
    /// Opens the WAL of the repository at `backend`: reads the config and
    /// unlocks a key, nothing else (no index, no cache, no lock), so that
    /// one `archive_command` or `restore_command` costs a few requests.
    pub fn open(
        backend: impl Backend + 'static,
        password: &[u8],
        opts: &OpenOptions,
    ) -> crate::error::Result<Self> {
        // No index is listed here, so nothing would confirm a key from
        // the cache's copy: the key file is always read.
        let opts = OpenOptions {
            key_from_cache: false,
            ..opts.clone()
        };
        let (key, _, config, keys, _) = Repository::unlock_config(&backend, password, &opts)?;
        Ok(Self::with_keys(
            Arc::new(backend),
            &key,
            keys.data_keys,
            config.compression_level,
        ))
    }

    fn with_keys(
        backend: Arc<dyn Backend>,
        key: &crate::crypto::MasterKey,
        data_keys: crate::crypto::DataKeys,
        level: i32,
    ) -> Self {
        Self {
            backend,
            data_key: data_keys,
            wal_key: Zeroizing::new(*key.wal_key()),
            // 0 (raw) stays raw; any other level is WAL's own (SPEC §28.2).
            level: level.min(object::WAL_LEVEL),
        }
    }

    /// The storage, for request counts and messages.
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// The cluster part of object names for `system_identifier`.
    pub fn cluster(&self, system_identifier: u64) -> String {
        cluster_name(&self.wal_key, system_identifier)
    }

    /// Stores `content` as `file`. A segment (or `.partial`) names its
    /// cluster in its first page, and must match its name;
    /// `system_identifier` files the others (history, backup label), and
    /// must agree with a segment's. Storing the same file again succeeds
    /// without writing; other content under an archived name is
    /// [`WalError::Conflict`], and the stored file stays. Returns once the
    /// object is durable (the backend's write contract).
    pub fn archive(
        &self,
        file: &WalFileName,
        content: &[u8],
        system_identifier: Option<u64>,
    ) -> Result<Archived, WalError> {
        if content.len() > MAX_WAL_FILE {
            return Err(WalError::TooLarge {
                name: file.to_string(),
                len: content.len() as u64,
            });
        }
        let sysid = match file.kind() {
            WalFileKind::Segment | WalFileKind::Partial => {
                let h = parse_segment(file, content)?;
                if let Some(expected) = system_identifier.filter(|&s| s != h.system_identifier) {
                    return Err(WalError::WrongCluster {
                        name: file.to_string(),
                        found: h.system_identifier,
                        expected,
                    });
                }
                h.system_identifier
            }
            WalFileKind::History | WalFileKind::Backup => {
                system_identifier.ok_or_else(|| WalError::NoSystemIdentifier(file.to_string()))?
            }
        };
        let object = object_name(&self.cluster(sysid), file);
        let mac = content_mac(&self.wal_key, file, content);
        let len = content.len() as u64;
        let mut repaired = false;
        match self.existing(&object, file)? {
            Existing::Absent => {}
            Existing::Intact(stored) if stored == mac => {
                return Ok(Archived {
                    object,
                    written: false,
                    repaired,
                    len,
                    stored: 0,
                });
            }
            Existing::Intact(_) => {
                return Err(WalError::Conflict {
                    name: file.to_string(),
                    object,
                });
            }
            // Left by a write that was cut off on storage that does not
            // write atomically: useless, so replaced by the file it was
            // meant to hold.
            Existing::Damaged => match self.backend.delete(ObjectKind::Wal, &object) {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => repaired = true,
            },
        }
        let bytes = object::encode(&self.data_key, &mac, &object, content, self.level);
        self.backend.write(ObjectKind::Wal, &object, &bytes)?;
        // A writer racing with other content under this name, on storage
        // that cannot refuse to replace (SPEC §11.3), is seen here.
        match self.stored_mac(&object)? {
            Some(Ok(m)) if m == mac => {}
            _ => {
                return Err(WalError::Conflict {
                    name: file.to_string(),
                    object,
                });
            }
        }
        Ok(Archived {
            object,
            written: true,
            repaired,
            len,
            stored: bytes.len() as u64,
        })
    }

    /// The MAC in an object's first bytes: `None` when there is no object,
    /// `Some(Err)` when it is too short or not a WAL object.
    fn stored_mac(
        &self,
        object: &str,
    ) -> Result<Option<Result<[u8; MAC_LEN], WalError>>, WalError> {
        match self
            .backend
            .read_range(ObjectKind::Wal, object, 0, WAL_HEADER_LEN as u32)
        {
            Ok(head) => Ok(Some(object::peek_mac(object, &head))),
            Err(e) if e.is_not_found() => Ok(None),
            // Shorter than a header, or unreadable: read it whole to tell.
            Err(_) => match self.backend.read(ObjectKind::Wal, object) {
                Ok(bytes) => Ok(Some(object::peek_mac(object, &bytes))),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// What is stored under `object` already. A matching MAC alone does not
    /// make a file archived: the whole object must open, or a retry after
    /// a cut-off write would take a damaged object for the file.
    fn existing(&self, object: &str, file: &WalFileName) -> Result<Existing, WalError> {
        match self.stored_mac(object)? {
            None => Ok(Existing::Absent),
            Some(Err(_)) => Ok(Existing::Damaged),
            Some(Ok(mac)) => match self.backend.read(ObjectKind::Wal, object) {
                Ok(bytes) => {
                    match object::decode(&self.data_key, &self.wal_key, object, file, &bytes) {
                        Ok(_) => Ok(Existing::Intact(mac)),
                        Err(WalError::Corrupt { .. }) => Ok(Existing::Damaged),
                        Err(e) => Err(e),
                    }
                }
                Err(e) if e.is_not_found() => Ok(Existing::Absent),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// The content of `file` of the cluster `system_identifier`, or `None`
    /// when it is not archived: one read.
    pub fn fetch(
        &self,
        system_identifier: u64,
        file: &WalFileName,
    ) -> Result<Option<Vec<u8>>, WalError> {
        let object = object_name(&self.cluster(system_identifier), file);
        match self.backend.read(ObjectKind::Wal, &object) {
            Ok(bytes) => Ok(Some(object::decode(
                &self.data_key,
                &self.wal_key,
                &object,
                file,
                &bytes,
            )?)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// [`fetch`](Self::fetch) that writes the content to `out` in pieces
    /// and returns its length, or `None` when it is not archived. `out`
    /// receives content before the MAC is checked: on an error, discard
    /// it (SPEC §28.4).
    pub fn fetch_to(
        &self,
        system_identifier: u64,
        file: &WalFileName,
        out: &mut dyn std::io::Write,
    ) -> Result<Option<u64>, WalError> {
        let object = object_name(&self.cluster(system_identifier), file);
        match self.backend.read(ObjectKind::Wal, &object) {
            Ok(bytes) => Ok(Some(object::decode_to(
                &self.data_key,
                &self.wal_key,
                &object,
                file,
                &bytes,
                out,
            )?)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every archived file: one listing, nothing opened.
    pub fn list(&self) -> Result<WalListing, WalError> {
        let mut out = WalListing::default();
        for info in self.backend.list(ObjectKind::Wal)? {
            match split_object_name(&info.name) {
                Some((cluster, file)) => out.objects.push(WalObject {
                    cluster: cluster.to_string(),
                    file,
                    object: info.name.clone(),
                    size: info.size,
                    modified_ns: info.modified_ns,
                }),
                None => out.foreign.push(info.name),
            }
        }
        out.objects
            .sort_by(|a, b| (&a.cluster, &a.file).cmp(&(&b.cluster, &b.file)));
        Ok(out)
    }

    /// The archived files of the cluster `system_identifier`, by timeline
    /// and position: one listing.
    pub fn list_cluster(&self, system_identifier: u64) -> Result<Vec<WalObject>, WalError> {
        let cluster = self.cluster(system_identifier);
        let mut objects = self.list()?.objects;
        objects.retain(|o| o.cluster == cluster);
        Ok(objects)
    }

    /// Reads, authenticates and decompresses a listed object.
    pub fn read(&self, o: &WalObject) -> Result<Vec<u8>, WalError> {
        let bytes = self.backend.read(ObjectKind::Wal, &o.object)?;
        object::decode(&self.data_key, &self.wal_key, &o.object, &o.file, &bytes)
    }

    /// Deletes a listed object (retention, in `prune`).
    pub(crate) fn delete(&self, o: &WalObject) -> Result<(), WalError> {
        Ok(self.backend.delete(ObjectKind::Wal, &o.object)?)
    }

    /// Judges every cluster of `listing` (and every cluster a base backup
    /// names) against its newest base backup ([`verify`]). Reads nothing
    /// but the history file of the newest timeline of a cluster whose
    /// newest base backup is on an older one.
    pub fn verify(&self, listing: &WalListing, bases: &[BaseBackupRef]) -> Vec<ClusterReport> {
        let mut clusters: BTreeMap<String, (Vec<&WalObject>, Vec<&BaseBackupRef>)> =
            BTreeMap::new();
        for o in &listing.objects {
            clusters.entry(o.cluster.clone()).or_default().0.push(o);
        }
        for b in bases {
            clusters
                .entry(self.cluster(b.system_identifier))
                .or_default()
                .1
                .push(b);
        }
        clusters
            .iter()
            .map(|(cluster, (objects, bases))| {
                let history =
                    |tli: u32| {
                        let o = objects.iter().find(|o| {
                            o.file.kind() == WalFileKind::History && o.file.timeline() == tli
                        })?;
                        Some(self.read(o).map_err(|e| e.to_string()).and_then(|b| {
                            TimelineHistory::parse(tli, &String::from_utf8_lossy(&b))
                        }))
                    };
                verify(cluster, objects, bases, &history)
            })
            .collect()
    }

    /// What retention may delete given the snapshots that remain
    /// ([`plan_release`]); nothing, with the reason, when a base backup's
    /// metadata cannot be read (its cluster and start are unknown).
    pub fn plan_release(&self, listing: &WalListing, snapshots: &[SnapshotEntry]) -> WalRelease {
        match BaseBackupRef::all(snapshots) {
            Ok(bases) => plan_release(&listing.objects, &bases, &|s| self.cluster(s)),
            Err(reason) => WalRelease {
                skipped: Some(reason),
                ..WalRelease::default()
            },
        }
    }
}
