//! Typed warnings: problems with single entries, or damaged repository
//! files, that an operation records and then works around, so it still
//! completes (SPEC §13).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::ser::SerializeStruct;

use crate::id::{PackId, SnapshotId};

/// A problem with one entry that did not stop the operation. A backup with
/// warnings still saves its snapshot, without (or with partial) data for
/// the entries named; a restore with warnings restores everything else.
///
/// `Display` gives a one-line message starting with the path; `Serialize`
/// gives `{"kind", "path", "message"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// A source entry could not be read; it is not in the snapshot.
    Unreadable {
        /// The entry.
        path: PathBuf,
        /// The operating system's error message.
        reason: String,
    },
    /// Extended attributes of a source entry could not be read; the entry
    /// is stored without them.
    UnreadableXattrs {
        /// The entry.
        path: PathBuf,
        /// The operating system's error message.
        reason: String,
    },
    /// A file's size changed while it was read; the snapshot holds the
    /// bytes that were read.
    SizeChanged {
        /// The file.
        path: PathBuf,
        /// Its size before reading.
        expected: u64,
        /// The bytes read.
        read: u64,
    },
    /// A file was modified while it was read: the snapshot may hold a mix
    /// of old and new content.
    ModifiedWhileReading {
        /// The file.
        path: PathBuf,
    },
    /// A restore could not restore an entry, or part of its metadata.
    NotRestored {
        /// The entry below the target directory.
        path: PathBuf,
        /// What was not restored, and why.
        reason: String,
    },
    /// A damaged index file was skipped: the packs it alone names count as
    /// unindexed until the index is repaired.
    DamagedIndexFile {
        /// The index file's name.
        name: String,
        /// Why it cannot be read.
        reason: String,
    },
    /// A damaged snapshot file was skipped.
    DamagedSnapshot {
        /// The snapshot file's name.
        name: String,
        /// Why it cannot be read.
        reason: String,
    },
    /// A damaged prune mark was skipped.
    DamagedPruneMark {
        /// Why it cannot be read.
        reason: String,
    },
    /// The parent snapshot's tree is unreadable: every file is read again.
    UnreadableParent {
        /// The parent snapshot.
        snapshot: SnapshotId,
        /// Why its tree cannot be read.
        reason: String,
    },
    /// A heartbeat lock dated in the storage's future was ignored.
    FutureHeartbeat {
        /// The lock's name.
        name: String,
    },
    /// A prune mark dated in the storage's future was rewritten.
    FuturePruneMark {
        /// The mark's name.
        name: String,
        /// The name of the rewritten mark.
        new_name: String,
    },
    /// A pack the index names is missing from the storage (lost data); a
    /// backup fails rather than reuse a blob from it.
    MissingPack {
        /// The missing pack.
        pack: PackId,
    },
}

impl Warning {
    /// The file-system entry concerned, for warnings about one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Unreadable { path, .. }
            | Self::UnreadableXattrs { path, .. }
            | Self::SizeChanged { path, .. }
            | Self::ModifiedWhileReading { path }
            | Self::NotRestored { path, .. } => Some(path),
            _ => None,
        }
    }

    /// A stable, snake_case name of the variant (`--json`'s `kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreadable { .. } => "unreadable",
            Self::UnreadableXattrs { .. } => "unreadable_xattrs",
            Self::SizeChanged { .. } => "size_changed",
            Self::ModifiedWhileReading { .. } => "modified_while_reading",
            Self::NotRestored { .. } => "not_restored",
            Self::DamagedIndexFile { .. } => "damaged_index_file",
            Self::DamagedSnapshot { .. } => "damaged_snapshot",
            Self::DamagedPruneMark { .. } => "damaged_prune_mark",
            Self::UnreadableParent { .. } => "unreadable_parent",
            Self::FutureHeartbeat { .. } => "future_heartbeat",
            Self::FuturePruneMark { .. } => "future_prune_mark",
            Self::MissingPack { .. } => "missing_pack",
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path().unwrap_or(Path::new("")).display();
        match self {
            Self::Unreadable { reason, .. } => write!(f, "{p}: {reason}"),
            Self::UnreadableXattrs { reason, .. } => {
                write!(f, "{p}: cannot read extended attributes: {reason}")
            }
            Self::SizeChanged { expected, read, .. } => {
                write!(
                    f,
                    "{p}: size changed while reading ({expected} -> {read} bytes)"
                )
            }
            Self::ModifiedWhileReading { .. } => {
                write!(f, "{p}: modified while reading; the snapshot holds a mix")
            }
            Self::NotRestored { reason, .. } => write!(f, "{p}: {reason}"),
            Self::DamagedIndexFile { name, reason } => write!(
                f,
                "skipped damaged index file {name} (its packs count as unindexed until \
                 the index is repaired): {reason}"
            ),
            Self::DamagedSnapshot { name, reason } => {
                write!(f, "skipped damaged snapshot {name}: {reason}")
            }
            Self::DamagedPruneMark { reason } => write!(f, "skipped damaged prune mark: {reason}"),
            Self::UnreadableParent { snapshot, reason } => write!(
                f,
                "parent snapshot {} is unreadable, every file is read: {reason}",
                snapshot.short()
            ),
            Self::FutureHeartbeat { name } => write!(
                f,
                "ignored heartbeat locks/{name} dated in the storage's future"
            ),
            Self::FuturePruneMark { name, new_name } => write!(
                f,
                "prune mark {name} was dated in the storage's future; rewritten as {new_name}"
            ),
            Self::MissingPack { pack } => write!(
                f,
                "pack {pack} is indexed but missing from the storage (lost data): \
                 this backup fails rather than reuse a blob from it"
            ),
        }
    }
}

impl serde::Serialize for Warning {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Warning", 3)?;
        st.serialize_field("kind", self.kind())?;
        st.serialize_field("path", &self.path().map(Path::to_string_lossy))?;
        st.serialize_field("message", &self.to_string())?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_json_name_the_path_and_kind() {
        let w = Warning::SizeChanged {
            path: "/a/b".into(),
            expected: 3,
            read: 5,
        };
        assert_eq!(
            w.to_string(),
            "/a/b: size changed while reading (3 -> 5 bytes)"
        );
        let v = serde_json::to_value(&w).unwrap();
        assert_eq!(v["kind"], "size_changed");
        assert_eq!(v["path"], "/a/b");
        assert_eq!(v["message"], w.to_string());
    }
}
