//! Verification records in `verify/`: sealing, reading, compaction (SPEC §32).
//!
//! Sealing and opening go through [`seal`] and [`open`] only, so that a
//! change of the sealing key (data-key epochs) touches one place.

use std::collections::HashSet;

use rayon::prelude::*;

use super::{CompactedHistory, VerificationHistory, VerificationOutcome, VerificationRecord};
use crate::backend::ObjectKind;
use crate::blob::{self, BlobError};
use crate::encoding;
use crate::error::{Error, Result};
use crate::id::PackId;
use crate::repository::Repository;

pub use crate::format::VERIFY_MAGIC;

/// A location's live records are folded into one once there are more than
/// this many: a check then reads at most this many records (plus one per
/// other location's, bounded the same way) however many checks ran.
pub const COMPACT_AFTER: usize = 16;

fn seal(repo: &Repository, plain: &[u8]) -> Vec<u8> {
    blob::seal_file(&VERIFY_MAGIC, repo.data_keys(), plain, 3)
}

fn open(repo: &Repository, bytes: &[u8]) -> std::result::Result<Vec<u8>, BlobError> {
    blob::open_file(
        &VERIFY_MAGIC,
        "verification record",
        repo.data_keys(),
        bytes,
    )
}

/// Seals and writes `r`; its name is the BLAKE3 of the file (like snapshots).
pub(super) fn write(repo: &Repository, r: &VerificationRecord) -> Result<String> {
    let bytes = seal(repo, &encoding::encode(r));
    let name = crate::id::SnapshotId::hash_of(&bytes).to_hex();
    repo.backend().write(ObjectKind::Verify, &name, &bytes)?;
    Ok(name)
}

fn read(repo: &Repository, name: &str) -> Result<VerificationRecord> {
    let bytes = repo.backend().read(ObjectKind::Verify, name)?;
    let corrupt = |source| Error::CorruptObject {
        kind: ObjectKind::Verify,
        name: name.to_string(),
        source,
    };
    if crate::id::SnapshotId::hash_of(&bytes).to_hex() != name {
        return Err(corrupt(BlobError::HashMismatch));
    }
    let plain = open(repo, &bytes).map_err(corrupt)?;
    Ok(encoding::decode(&plain, "verification record")?)
}

/// Every record, superseded ones dropped, oldest first.
pub(super) fn load(repo: &Repository) -> Result<VerificationHistory> {
    let names: Vec<String> = repo
        .backend()
        .list(ObjectKind::Verify)?
        .into_iter()
        .map(|o| o.name)
        .collect();
    let read: Vec<(String, Result<VerificationRecord>)> = names
        .into_par_iter()
        .map(|n| {
            let r = read(repo, &n);
            (n, r)
        })
        .collect();
    let mut h = VerificationHistory::default();
    for (name, r) in read {
        match r {
            Ok(r) => h.records.push((name, r)),
            // Deleted by a concurrent compaction after the listing.
            Err(Error::Backend(e)) if e.is_not_found() => {}
            Err(e) => h.damaged.push((name, e.to_string())),
        }
    }
    let gone: HashSet<&str> = h
        .records
        .iter()
        .flat_map(|(_, r)| r.supersedes.iter().map(String::as_str))
        .collect();
    let gone: HashSet<String> = gone.into_iter().map(str::to_owned).collect();
    h.records.retain(|(n, _)| !gone.contains(n));
    h.records
        .sort_by(|a, b| (a.1.time_ns, &a.0).cmp(&(b.1.time_ns, &b.0)));
    Ok(h)
}

/// Folds `location`'s live records into one if there are more than
/// [`COMPACT_AFTER`]: writes the compacted record first, then deletes
/// the records it supersedes. A crash between leaves both, and readers
/// drop the superseded ones; two writers compacting at once each write a
/// record that keeps everything it read, so nothing is lost.
pub(super) fn compact(
    repo: &Repository,
    location: &str,
    existing: Option<&HashSet<PackId>>,
) -> Result<()> {
    // A listing is cheaper than reading: with few records in all, no
    // location can have too many.
    if repo.backend().list(ObjectKind::Verify)?.len() <= COMPACT_AFTER {
        return Ok(());
    }
    let h = load(repo)?;
    if h.count_at(location) <= COMPACT_AFTER {
        return Ok(());
    }
    let mut times = h.pack_times(location);
    if let Some(keep) = existing {
        times.retain(|p, _| keep.contains(p));
    }
    let mut pack_times: Vec<(PackId, i64)> = times.into_iter().collect();
    pack_times.sort_unstable();
    let latest: Vec<VerificationRecord> = h
        .newest(location)
        .into_values()
        .map(|mut r| {
            if let VerificationOutcome::Check(c) = &mut r.outcome {
                c.verified.clear();
            }
            r.supersedes.clear();
            r
        })
        .collect();
    let folded: Vec<&(String, VerificationRecord)> = h.at(location).collect();
    let newest = folded.iter().map(|(_, r)| r.time_ns).max().unwrap_or(0);
    let supersedes: Vec<String> = folded.iter().map(|(n, _)| n.clone()).collect();
    let mut record = VerificationRecord::here(
        location.to_string(),
        newest,
        0,
        VerificationOutcome::Compacted(CompactedHistory { pack_times, latest }),
    );
    record.supersedes = supersedes.clone();
    write(repo, &record)?;
    for name in supersedes {
        match repo.backend().delete(ObjectKind::Verify, &name) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
