//! Snapshots: small encrypted files naming a root tree (SPEC §10).

use crate::blob::{self, BlobError};
use crate::encoding;
use crate::format::{self, COPY_VERSION, FILE_VERSION, FormatError, SNAPSHOT_MAGIC};
use crate::id::{SnapshotId, TreeId};

/// Counters recorded by the backup that made a snapshot (SPEC §10).
#[derive(
    Debug, Clone, Default, PartialEq, Eq, bincode::Encode, bincode::Decode, serde::Serialize,
)]
pub struct SnapshotSummary {
    /// Files not in the parent snapshot.
    pub files_new: u64,
    /// Files whose metadata changed since the parent, so they were read again.
    pub files_changed: u64,
    /// Files reused from the parent without reading.
    pub files_unmodified: u64,
    /// Directories not in the parent.
    pub dirs_new: u64,
    /// Directories whose tree changed.
    pub dirs_changed: u64,
    /// Directories whose tree is unchanged.
    pub dirs_unmodified: u64,
    /// Data blobs this backup stored.
    pub data_blobs: u64,
    /// Tree blobs this backup stored.
    pub tree_blobs: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Plaintext bytes of the blobs this backup stored.
    pub bytes_added: u64,
    /// Bytes those blobs take in packs (compressed and sealed).
    pub bytes_added_packed: u64,
    /// Files (and streams) in the snapshot.
    pub total_files: u64,
    /// Bytes of file content in the snapshot.
    pub total_bytes: u64,
    /// Entries that could not be read and were skipped.
    pub errors: u64,
    /// Wall time of the backup.
    pub duration_ns: u64,
}

/// A snapshot (SPEC §10). Field order is the encoding order.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Snapshot {
    /// Start of the backup, nanoseconds since the Unix epoch, UTC.
    pub time_ns: i64,
    /// Host name.
    pub host: String,
    /// User name.
    pub username: String,
    /// Backed-up paths as given (absolute, raw bytes), or stream names.
    pub paths: Vec<Vec<u8>>,
    /// Tags, sorted.
    pub tags: Vec<String>,
    /// The snapshot this one was compared with.
    pub parent: Option<SnapshotId>,
    /// Root tree.
    pub tree: TreeId,
    /// `cairn x.y.z` that wrote it.
    pub program_version: String,
    /// Counters.
    pub summary: SnapshotSummary,
    /// Free-form key/value pairs (exporters record server versions etc.), sorted by key.
    pub metadata: Vec<(String, String)>,
    /// The snapshot this one is a copy of, in the repository it was first
    /// written to (SPEC §10, §24); `None` for a snapshot made by a backup.
    /// A copy of a copy names the first one. Encoded only in files of
    /// version 3 ([`crate::format::COPY_VERSION`]): older files lack it.
    pub original: Option<SnapshotId>,
}

impl Snapshot {
    /// The file version and the encoded body (SPEC §10): a snapshot
    /// without `original` is written as version 1, without the field, so it
    /// is byte for byte what earlier builds wrote and read; a copy is
    /// version 3 with the field.
    pub fn encode_body(&self) -> (u32, Vec<u8>) {
        let mut body = encoding::encode(self);
        if self.original.is_some() {
            return (COPY_VERSION, body);
        }
        // `None` is the last byte, a single 0 (SPEC §2.2).
        body.pop();
        (FILE_VERSION, body)
    }

    /// Decodes the body of a snapshot file of `version`.
    pub fn decode_body(version: u32, body: &[u8]) -> Result<Self, FormatError> {
        if version >= COPY_VERSION {
            let s: Self = encoding::decode(body, "snapshot")?;
            if s.original.is_none() {
                return Err(FormatError::Malformed {
                    what: "snapshot",
                    reason: format!("a version-{version} snapshot must name its original"),
                });
            }
            return Ok(s);
        }
        // Older bodies end before `original`: supply its `None`.
        let mut full = Vec::with_capacity(body.len() + 1);
        full.extend_from_slice(body);
        full.push(0);
        encoding::decode(&full, "snapshot")
    }

    /// The encrypted file (SPEC §10).
    pub(crate) fn to_file(&self, key: &crate::crypto::DataKeys) -> Vec<u8> {
        let (version, body) = self.encode_body();
        blob::seal_file_version(&SNAPSHOT_MAGIC, version, key, &body, 3)
    }

    /// Parses a snapshot file.
    pub(crate) fn from_file(
        key: &crate::crypto::DataKeys,
        bytes: &[u8],
    ) -> Result<Self, BlobError> {
        let (version, _) = format::read_prefix(bytes, &SNAPSHOT_MAGIC, "snapshot")?;
        let plain = blob::open_file(&SNAPSHOT_MAGIC, "snapshot", key, bytes)?;
        Ok(Self::decode_body(version, &plain)?)
    }

    /// Paths for display (lossy for non-UTF-8).
    pub fn paths_lossy(&self) -> Vec<String> {
        self.paths
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }
}

/// A snapshot with the id it is stored under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// File name / content address.
    pub id: SnapshotId,
    /// Decoded snapshot.
    pub snapshot: Snapshot,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decode_encode_round_trip(
            time_ns in any::<i64>(),
            host in ".{0,20}",
            paths in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 0..4),
            tags in proptest::collection::vec("[a-z]{0,8}", 0..4),
            parent in proptest::option::of(any::<[u8; 32]>()),
            counters in any::<[u64; 6]>(),
            metadata in proptest::collection::vec((".{0,8}", ".{0,8}"), 0..3),
            original in proptest::option::of(any::<[u8; 32]>()),
        ) {
            let s = Snapshot {
                time_ns,
                host,
                username: "u".into(),
                paths,
                tags,
                parent: parent.map(SnapshotId::from_bytes),
                tree: TreeId::from_bytes([1; 32]),
                program_version: "cairn test".into(),
                summary: SnapshotSummary {
                    files_new: counters[0],
                    bytes_read: counters[1],
                    bytes_added: counters[2],
                    total_files: counters[3],
                    errors: counters[4],
                    duration_ns: counters[5],
                    ..Default::default()
                },
                metadata,
                original: original.map(SnapshotId::from_bytes),
            };
            let (version, enc) = s.encode_body();
            prop_assert_eq!(version, if s.original.is_some() { 3 } else { 1 });
            prop_assert_eq!(Snapshot::decode_body(version, &enc).unwrap(), s);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Snapshot::decode_body(1, &bytes);
            let _ = Snapshot::decode_body(3, &bytes);
        }
    }

    #[test]
    fn snapshot_file_round_trip() {
        let k = MasterKey::generate();
        let s = Snapshot {
            time_ns: 1_700_000_000_123_456_789,
            host: "h".into(),
            username: "u".into(),
            paths: vec![b"/srv/\xff".to_vec()],
            tags: vec!["a".into()],
            parent: None,
            tree: TreeId::from_bytes([3; 32]),
            program_version: "cairn 0.1.0".into(),
            summary: SnapshotSummary {
                files_new: 4,
                ..Default::default()
            },
            metadata: vec![("k".into(), "v".into())],
            original: None,
        };
        let f = s.to_file(&k.data_keys());
        assert_eq!(f[8..12], 1u32.to_le_bytes(), "no original: version 1");
        assert_eq!(Snapshot::from_file(&k.data_keys(), &f).unwrap(), s);
        // A copy is version 3 and keeps its original.
        let mut copy = s.clone();
        copy.original = Some(SnapshotId::from_bytes([9; 32]));
        let fc = copy.to_file(&k.data_keys());
        assert_eq!(fc[8..12], 3u32.to_le_bytes());
        assert_eq!(Snapshot::from_file(&k.data_keys(), &fc).unwrap(), copy);
        // Version 3 without an original is not canonical.
        let (_, body) = s.encode_body();
        let mut full = body.clone();
        full.push(0);
        assert!(Snapshot::decode_body(3, &full).is_err());
        assert!(Snapshot::decode_body(1, &encoding::encode(&copy)).is_err());
        assert!(Snapshot::from_file(&MasterKey::generate().data_keys(), &f).is_err());
        assert!(Snapshot::from_file(&k.data_keys(), &f[..f.len() - 1]).is_err());
    }
}
