//! Archived WAL compressed again after a base backup (SPEC §28.6):
//! `archive-wal` stores at zstd level 1 to keep up with the server; once a
//! base backup is taken, the segments archived since the previous one are
//! no longer on that clock.

use anyhow::Result;
use repo_core::{Repository, SnapshotId, WalFileKind, WalFileName};

use super::pg_base::{BaseInfo, TAG};

/// What one run recompressed.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct WalRecompressed {
    /// Segments replaced.
    pub files: u64,
    /// Their stored bytes before.
    pub bytes_before: u64,
    /// And after.
    pub bytes_after: u64,
    /// Segments left alone because another user owns their file.
    #[serde(default)]
    pub skipped_other_owner: u64,
}

/// Whether the object's file, in a local repository, belongs to another
/// user: replacing it would give it to us with mode 0600, and the server's
/// `restore_command`, running as its owner, could no longer read it (which
/// PostgreSQL takes for the end of the archive).
fn owned_by_another(repo: &Repository, object: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    if repo.backend().is_remote() {
        return false;
    }
    let path = std::path::Path::new(&repo.backend().location())
        .join("wal")
        .join(object);
    std::fs::metadata(path).map_or(true, |m| m.uid() != nix::unistd::geteuid().as_raw())
}

/// Recompresses the segments of `info`'s cluster from the previous base
/// backup's `pg.start_wal` (the first segment, if there is none) up to the
/// new one's, on every timeline; the new base backup is `new`. In a local
/// repository only the segments whose files we own (see
/// [`owned_by_another`]).
pub fn since_previous(
    repo: &Repository,
    info: &BaseInfo,
    new: &SnapshotId,
) -> Result<WalRecompressed> {
    let sid = info.system_identifier.to_string();
    let previous = repo
        .snapshots()?
        .into_iter()
        .filter(|s| {
            s.id != *new
                && s.snapshot.tags.iter().any(|t| t == TAG)
                && s.snapshot
                    .metadata
                    .iter()
                    .any(|(k, v)| k == "pg.system_identifier" && *v == sid)
        })
        .max_by_key(|s| s.snapshot.time_ns);
    let from = previous
        .and_then(|s| BaseInfo::from_snapshot(&s).ok())
        .and_then(|b| WalFileName::parse(&b.start_wal).ok())
        .map_or(0, |f| f.position());
    let to = WalFileName::parse(&info.start_wal)?.position();
    let store = repo.wal();
    let mut r = WalRecompressed::default();
    for o in store.list_cluster(info.system_identifier)? {
        let p = o.file.position();
        if o.file.kind() != WalFileKind::Segment || p < from || p >= to {
            continue;
        }
        if owned_by_another(repo, &o.object) {
            r.skipped_other_owner += 1;
            continue;
        }
        if let Some(n) = store.recompress(&o)? {
            r.files += 1;
            r.bytes_before += o.size;
            r.bytes_after += n;
        }
    }
    Ok(r)
}
