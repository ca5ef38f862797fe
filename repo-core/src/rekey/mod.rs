//! Rekey: rewrite every object sealed under an older data-key epoch under
//! the newest one (SPEC §30).
//!
//! Packs are rewritten like prune repacks them (SPEC §22): the blobs of
//! stale packs are verified, sealed again into new packs, new index files
//! supersede the old ones, and the old packs go into a mark that phase two
//! deletes after the grace period, once no backup that began before the
//! mark is alive. Snapshots are written again as copies of themselves
//! (`original` names the first id), then the old file is deleted. Every
//! step is durable before the next, so a rekey killed at any moment leaves
//! a repository `check` accepts, and a rerun finishes the job.

mod other;
mod seal;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::backend::ObjectKind;
use crate::blob::{self, BlobKind};
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::index::{IndexPack, References, load_index_files};
use crate::lock::Heartbeat;
use crate::mark::{MarkFile, load_marks};
use crate::pack::{DeltaRefs, PackEntry};
use crate::progress::{NoProgress, Progress};
use crate::prune::PruneSummary;
use crate::repository::{Repository, now_ns};
use crate::snapshot::{Snapshot, SnapshotEntry};

use seal::Sealer;

/// New packs written between two index checkpoints: work lost to a crash
/// is at most this much, and a checkpoint rewrites the whole index.
const CHECKPOINT_BYTES: u64 = 1 << 30;

/// Options of a rekey.
#[derive(Debug, Clone)]
pub struct RekeyOptions {
    /// Stop cleanly between objects once this much time has passed; what
    /// is done stays done, and a later run continues.
    pub max_duration: Option<Duration>,
    /// How long the old packs stay before they are deleted (prune's
    /// grace period, SPEC §22).
    pub grace: Duration,
    simulated_epoch: Option<u32>,
}

impl Default for RekeyOptions {
    fn default() -> Self {
        Self {
            max_duration: None,
            grace: Duration::from_secs(3600),
            simulated_epoch: None,
        }
    }
}

impl RekeyOptions {
    /// Test door: treats every object whose nonce does not carry `epoch` as
    /// stale and tags what it writes with it, as after a key rotation.
    #[cfg(feature = "unstable")]
    #[doc(hidden)]
    pub fn simulate_epoch(mut self, epoch: u32) -> Self {
        self.simulated_epoch = Some(epoch);
        self
    }
}

/// A snapshot written again under the newest epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RekeyedSnapshot {
    /// Its id before (deleted).
    pub old: SnapshotId,
    /// Its id now; the snapshot names `old` (or the snapshot `old` was a
    /// copy of) as its `original`.
    pub new: SnapshotId,
}

/// Stale objects a rekey left (as of its plan).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RekeyRemaining {
    /// Indexed packs not rewritten yet.
    pub packs: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Index files still sealed under an older epoch.
    pub index_files: usize,
    /// Snapshots not rewritten yet.
    pub snapshots: usize,
    /// Condemned packs (in prune marks) that still exist: deleted by a
    /// later prune or rekey after the grace period.
    pub condemned_packs: usize,
    /// Packs no index or mark names (an interrupted backup's or rekey's,
    /// or a running backup's): prune removes leftovers.
    pub unindexed_packs: usize,
}

/// What a rekey did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RekeyReport {
    /// Whether the repository has objects that can be stale at all (more
    /// than one data-key epoch).
    pub epochs_differ: bool,
    /// Old packs whose blobs were sealed again.
    pub packs_rewritten: usize,
    /// Their bytes.
    pub bytes_rewritten: u64,
    /// New packs written.
    pub packs_written: usize,
    /// Blobs sealed again.
    pub blobs_rewritten: u64,
    /// Index files written.
    pub index_files_written: usize,
    /// Stale packs no index named, condemned like prune's `unindexed`.
    pub unindexed_condemned: usize,
    /// Dictionaries replaced in place.
    pub dictionaries_rewritten: usize,
    /// Archived WAL files replaced in place.
    pub wal_files_rewritten: usize,
    /// Pending prune marks written anew.
    pub marks_rewritten: usize,
    /// Audit trail objects (record bodies, the signing key) re-sealed in
    /// place.
    pub audit_objects_rewritten: usize,
    /// Verification records written anew (or, when superseded, deleted).
    pub verification_records_rewritten: usize,
    /// Snapshots rewritten, old id → new id.
    pub snapshots: Vec<RekeyedSnapshot>,
    /// Stopped by `max_duration` before the end.
    pub stopped_early: bool,
    /// What is left.
    pub remaining: RekeyRemaining,
    /// Phase two of prune for the marks due now (this run's and earlier).
    pub sweep: PruneSummary,
}

impl RekeyReport {
    /// True when nothing is left to rewrite (condemned old packs may still
    /// await their grace period: see [`RekeyRemaining::condemned_packs`]).
    pub fn is_complete(&self) -> bool {
        let r = &self.remaining;
        !self.stopped_early && r.packs == 0 && r.index_files == 0 && r.snapshots == 0
    }
}

/// One checkpoint's worth of work.
#[derive(Default)]
struct Batch {
    /// Rewritten old packs, for the mark.
    old: Vec<IndexPack>,
    /// New packs, for the index.
    new: Vec<IndexPack>,
    /// Sealed blobs not yet in a pack, per kind (data, tree).
    pending: [Vec<(PackEntry, Vec<u8>)>; 2],
    pending_len: [usize; 2],
    /// The references of the pending delta blobs (SPEC §6.6).
    pending_refs: Vec<DeltaRefs>,
    /// The delta blobs of the new packs.
    new_refs: References,
    /// Bytes written since the last checkpoint.
    written: u64,
}

struct Run<'a> {
    repo: &'a Repository,
    sealer: Sealer<'a>,
    deadline: Option<Instant>,
    progress: &'a dyn Progress,
}

/// True for "not found" from the storage: deleted since it was listed.
fn vanished(e: &Error) -> bool {
    matches!(e, Error::Backend(b) if b.is_not_found())
}

impl Repository {
    /// Rewrites every object sealed under an older epoch (SPEC §30).
    pub fn rekey(&self, opts: &RekeyOptions) -> Result<RekeyReport> {
        self.rekey_with_progress(opts, &NoProgress)
    }

    /// [`Repository::rekey`], reporting bytes of old packs rewritten to `progress`.
    pub fn rekey_with_progress(
        &self,
        opts: &RekeyOptions,
        progress: &dyn Progress,
    ) -> Result<RekeyReport> {
        let sealer = match opts.simulated_epoch {
            Some(e) => Sealer::simulated(self.data_keys(), e),
            None => Sealer::current(self.data_keys()),
        };
        let mut report = RekeyReport {
            epochs_differ: sealer.can_be_stale(),
            ..RekeyReport::default()
        };
        if !sealer.can_be_stale() {
            return Ok(report);
        }
        let run = Run {
            repo: self,
            sealer,
            deadline: opts.max_duration.map(|d| Instant::now() + d),
            progress,
        };
        {
            // Announced like a backup (SPEC §22): a concurrent prune must
            // not delete the new packs before our index names them.
            let heartbeat = Heartbeat::start(self.backend())?;
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            std::thread::scope(|s| {
                s.spawn(|| heartbeat.keep_alive(rx));
                let r = run.rewrite(&mut report);
                drop(tx);
                r
            })?;
        }
        // Our heartbeat is gone, so only other backups hold our mark back.
        self.sweep_phase(opts.grace, None, &mut report.sweep)?;
        self.refresh_index()?;
        run.count_leftovers(&mut report)?;
        Ok(report)
    }
}

impl Run<'_> {
    fn out_of_time(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn rewrite(&self, report: &mut RekeyReport) -> Result<()> {
        let repo = self.repo;
        repo.refresh_index()?;
        repo.require_whole_index("rekey")?;
        // Index first, then the listing (SPEC §13): every indexed pack is listed.
        let files = load_index_files(repo.backend(), repo.data_keys())?;
        // Delta blobs keep their references in their new packs (SPEC §6.6).
        let mut known_refs: References = HashMap::new();
        for (_, f) in &files {
            known_refs.extend(f.references_by_pack());
        }
        let sizes: HashMap<String, u64> = repo
            .backend()
            .list(ObjectKind::Pack)?
            .into_iter()
            .map(|o| (o.name, o.size))
            .collect();
        let mut seen = HashSet::new();
        let mut stale = Vec::new();
        let mut located = HashSet::new();
        for p in files.into_iter().flat_map(|(_, f)| f.packs) {
            let Some(&size) = sizes.get(&p.id.to_hex()) else {
                continue; // indexed but missing: `check` reports it
            };
            if !seen.insert(p.id) {
                continue;
            }
            match self.pack_is_stale(&p.id, size) {
                Ok(true) => stale.push((p, size)),
                Ok(false) => located.extend(p.entries.iter().map(|e| e.id)),
                Err(e) if vanished(&e) => {} // a concurrent prune replaced it
                Err(e) => return Err(e),
            }
        }
        // Stale packs no index or mark names (an interrupted backup's, or
        // old packs a crashed rekey unindexed before its mark): condemned
        // as prune condemns `unindexed` packs, with their header entries so
        // phase two can resurrect one a snapshot turns out to need.
        let marked: HashSet<PackId> = load_marks(repo.backend(), repo.data_keys())?
            .good
            .iter()
            .flat_map(|(_, _, m)| m.packs.iter().map(|p| p.id))
            .collect();
        let mut batch = Batch::default();
        for (name, &size) in &sizes {
            let Ok(id) = name.parse::<PackId>() else {
                continue;
            };
            if seen.contains(&id) || marked.contains(&id) {
                continue;
            }
            match self.pack_is_stale(&id, size) {
                Ok(true) => {
                    let header = repo.read_pack_header(&id).unwrap_or_default();
                    if !header.references.is_empty() {
                        known_refs.insert(id, header.references);
                    }
                    batch.old.push(IndexPack {
                        id,
                        entries: header.entries,
                    });
                    report.unindexed_condemned += 1;
                }
                Ok(false) => {}
                Err(e) if vanished(&e) => {}
                Err(e) => return Err(e),
            }
        }
        self.progress
            .set_total(stale.iter().map(|(_, size)| size).sum());
        report.remaining.packs = stale.len();
        report.remaining.bytes = stale.iter().map(|(_, s)| s).sum();

        let mut checkpoints = 0;
        for (p, size) in &stale {
            if self.out_of_time() {
                report.stopped_early = true;
                break;
            }
            let data = match repo.backend().read(ObjectKind::Pack, &p.id.to_hex()) {
                Ok(d) => d,
                // Deleted by a concurrent prune, which indexed its live blobs first.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            for e in &p.entries {
                if !located.insert(e.id) {
                    continue; // stored elsewhere under the newest epoch, or copied already
                }
                let sealed = data
                    .get(e.offset as usize..e.offset as usize + e.length as usize)
                    .ok_or_else(|| Error::CorruptPack {
                        pack: p.id,
                        reason: format!("blob {} outside the pack", e.id.short()),
                    })?;
                let payload = self.sealer.open_verified(repo, p.id, e, sealed)?;
                let ad = blob::blob_ad(e.kind, &e.id);
                let resealed = self.sealer.reseal_payload(&ad, &payload);
                if let Some(d) = known_refs
                    .get(&p.id)
                    .and_then(|r| DeltaRefs::find(r, &e.id))
                {
                    batch.pending_refs.push(d.clone());
                }
                let k = usize::from(e.kind == BlobKind::Tree);
                batch.pending_len[k] += resealed.len();
                batch.pending[k].push((*e, resealed));
                report.blobs_rewritten += 1;
                if batch.pending_len[k] >= repo.config().pack_size as usize {
                    self.flush_pack(&mut batch, k, report)?;
                }
            }
            batch.old.push(p.clone());
            report.packs_rewritten += 1;
            report.bytes_rewritten += size;
            report.remaining.packs -= 1;
            report.remaining.bytes -= size;
            self.progress.add_bytes(*size);
            if batch.written >= CHECKPOINT_BYTES {
                self.checkpoint(&mut batch, report)?;
                checkpoints += 1;
            }
        }
        if !batch.old.is_empty() || !batch.pending.iter().all(Vec::is_empty) {
            self.checkpoint(&mut batch, report)?;
            checkpoints += 1;
        }
        if report.stopped_early {
            return Ok(());
        }
        // Index files: a checkpoint rewrote them all; else rewrite them
        // when any is stale.
        if checkpoints == 0 && self.stale_index_files()? > 0 {
            self.checkpoint(&mut batch, report)?;
        }
        self.rewrite_snapshots(report)?;
        if report.stopped_early {
            return Ok(());
        }
        self.rewrite_in_place(report)?;
        self.rewrite_marks(report)?;
        self.rewrite_verifications(report)
    }

    /// Whether a pack's header is sealed under an older epoch: its writer
    /// sealed every blob under the same epoch (SPEC §30.1).
    fn pack_is_stale(&self, id: &PackId, size: u64) -> Result<bool> {
        let name = id.to_hex();
        let b = self.repo.backend();
        if size < 4 {
            return Ok(false); // damaged: `check` reports it
        }
        let trailer = b.read_range(ObjectKind::Pack, &name, size - 4, 4)?;
        let hlen = u32::from_le_bytes(trailer.try_into().unwrap_or([0xff; 4]));
        if u64::from(hlen) + 4 > size {
            return Ok(false);
        }
        let sealed = b.read_range(ObjectKind::Pack, &name, size - 4 - u64::from(hlen), hlen)?;
        Ok(self.sealer.is_stale_header(&sealed))
    }

    fn flush_pack(&self, batch: &mut Batch, k: usize, report: &mut RekeyReport) -> Result<()> {
        let blobs = std::mem::take(&mut batch.pending[k]);
        batch.pending_len[k] = 0;
        if blobs.is_empty() {
            return Ok(());
        }
        let in_pack: HashSet<BlobId> = blobs.iter().map(|(e, _)| e.id).collect();
        let (refs, rest): (Vec<DeltaRefs>, Vec<DeltaRefs>) =
            std::mem::take(&mut batch.pending_refs)
                .into_iter()
                .partition(|d| in_pack.contains(&d.id));
        batch.pending_refs = rest;
        let (id, bytes, header) = self.sealer.pack(&blobs, refs);
        self.repo
            .backend()
            .write(ObjectKind::Pack, &id.to_hex(), &bytes)?;
        batch.written += bytes.len() as u64;
        if !header.references.is_empty() {
            batch.new_refs.insert(id, header.references);
        }
        batch.new.push(IndexPack {
            id,
            entries: header.entries,
        });
        report.packs_written += 1;
        Ok(())
    }

    /// Makes the batch durable (SPEC §22 steps 2–4): new index files naming
    /// every pack but the old ones and naming the new ones, superseding
    /// every index file read; those deleted; then the mark for the old
    /// packs. Index files written since the read are untouched.
    fn checkpoint(&self, batch: &mut Batch, report: &mut RekeyReport) -> Result<()> {
        for k in 0..2 {
            self.flush_pack(batch, k, report)?;
        }
        let repo = self.repo;
        let old: HashSet<PackId> = batch.old.iter().map(|p| p.id).collect();
        let mut supersedes = Vec::new();
        let mut packs = Vec::new();
        let mut seen = HashSet::new();
        let mut references = std::mem::take(&mut batch.new_refs);
        for (name, f) in load_index_files(repo.backend(), repo.data_keys())? {
            supersedes.push(
                name.parse::<IndexId>()
                    .map_err(|_| Error::InvalidArgument(name.clone()))?,
            );
            for (pack, blobs) in f.references_by_pack() {
                references.entry(pack).or_insert(blobs);
            }
            packs.extend(
                f.packs
                    .into_iter()
                    .filter(|p| !old.contains(&p.id) && seen.insert(p.id)),
            );
        }
        packs.extend(batch.new.drain(..).filter(|p| seen.insert(p.id)));
        let written =
            self.sealer
                .write_index_files(repo.backend(), &packs, &references, &supersedes)?;
        report.index_files_written += written.len();
        for id in &supersedes {
            match repo.backend().delete(ObjectKind::Index, &id.to_hex()) {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
        }
        if !batch.old.is_empty() {
            let mark = MarkFile {
                created_ns: now_ns(),
                packs: std::mem::take(&mut batch.old),
            };
            let bytes = self.sealer.mark_file(&mark);
            repo.backend()
                .write(ObjectKind::Mark, &IndexId::hash_of(&bytes).to_hex(), &bytes)?;
        }
        batch.written = 0;
        repo.refresh_index()
    }

    /// Index files sealed under an older epoch.
    fn stale_index_files(&self) -> Result<usize> {
        let b = self.repo.backend();
        let mut n = 0;
        for o in b.list(ObjectKind::Index)? {
            match b.read(ObjectKind::Index, &o.name) {
                Ok(bytes) if self.sealer.is_stale_file(&bytes) => n += 1,
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(n)
    }

    /// Every snapshot with whether its file is stale; damaged ones are
    /// counted as left (nothing can rewrite them).
    fn load_snapshots(&self, report: &mut RekeyReport) -> Result<Vec<(SnapshotEntry, bool)>> {
        let b = self.repo.backend();
        let mut out = Vec::new();
        for o in b.list(ObjectKind::Snapshot)? {
            let bytes = match b.read(ObjectKind::Snapshot, &o.name) {
                Ok(bytes) => bytes,
                Err(e) if e.is_not_found() => continue, // forgotten meanwhile
                Err(e) => return Err(e.into()),
            };
            let id = o.name.parse::<SnapshotId>().ok();
            let opened = id
                .filter(|id| SnapshotId::hash_of(&bytes) == *id)
                .and_then(|id| {
                    Snapshot::from_file(self.repo.data_keys(), &bytes)
                        .ok()
                        .map(|snapshot| SnapshotEntry { id, snapshot })
                });
            match opened {
                Some(e) => out.push((e, self.sealer.is_stale_file(&bytes))),
                None => report.remaining.snapshots += 1,
            }
        }
        Ok(out)
    }

    /// Writes each stale snapshot again as a copy of itself, then deletes
    /// the old file. A rerun after a crash between the two finds the copy
    /// by its `original` and only deletes.
    fn rewrite_snapshots(&self, report: &mut RekeyReport) -> Result<()> {
        let b = self.repo.backend();
        let all = self.load_snapshots(report)?;
        let origin = |e: &SnapshotEntry| e.snapshot.original.unwrap_or(e.id);
        // Fresh snapshots by the original they hold.
        let mut renamed: HashMap<SnapshotId, SnapshotId> = all
            .iter()
            .filter(|(_, stale)| !stale)
            .map(|(e, _)| (origin(e), e.id))
            .collect();
        let mut stale: Vec<SnapshotEntry> = all
            .into_iter()
            .filter(|(_, stale)| *stale)
            .map(|(e, _)| e)
            .collect();
        stale.sort_by_key(|e| (e.snapshot.time_ns, e.id));
        report.remaining.snapshots += stale.len();
        for e in stale {
            if self.out_of_time() {
                report.stopped_early = true;
                return Ok(());
            }
            let first = origin(&e);
            let new = match renamed.get(&first) {
                Some(&id) => id,
                None => {
                    let s = Snapshot {
                        original: Some(first),
                        parent: e
                            .snapshot
                            .parent
                            .map(|p| renamed.get(&p).copied().unwrap_or(p)),
                        ..e.snapshot.clone()
                    };
                    let bytes = self.sealer.snapshot_file(&s);
                    let id = SnapshotId::hash_of(&bytes);
                    b.write(ObjectKind::Snapshot, &id.to_hex(), &bytes)?;
                    renamed.insert(first, id);
                    id
                }
            };
            match b.delete(ObjectKind::Snapshot, &e.id.to_hex()) {
                Err(err) if !err.is_not_found() => return Err(err.into()),
                _ => {}
            }
            report.remaining.snapshots -= 1;
            report.snapshots.push(RekeyedSnapshot { old: e.id, new });
        }
        Ok(())
    }

    /// Counts what the marks still hold and what no index names, and the
    /// index files left stale.
    fn count_leftovers(&self, report: &mut RekeyReport) -> Result<()> {
        let repo = self.repo;
        let b = repo.backend();
        let mut indexed = HashSet::new();
        for (_, f) in load_index_files(b, repo.data_keys())? {
            indexed.extend(f.packs.iter().map(|p| p.id));
        }
        let marks = load_marks(b, repo.data_keys())?;
        let marked: HashSet<PackId> = marks
            .good
            .iter()
            .flat_map(|(_, _, m)| m.packs.iter().map(|p| p.id))
            .collect();
        for o in b.list(ObjectKind::Pack)? {
            let Ok(id) = o.name.parse::<PackId>() else {
                continue;
            };
            if indexed.contains(&id) {
                continue;
            }
            if marked.contains(&id) {
                report.remaining.condemned_packs += 1;
            } else {
                report.remaining.unindexed_packs += 1;
            }
        }
        report.remaining.index_files = self.stale_index_files()?;
        Ok(())
    }
}
