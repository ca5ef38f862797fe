//! Prune: remove data no snapshot references, without locking out backups
//! (SPEC §22).
//!
//! Deletion has two phases. Phase one rewrites the index without the
//! condemned packs (repacking the live blobs of mostly-unused packs first)
//! and records the condemned packs in a mark. Phase two, in a later prune
//! once the grace period has passed by the storage's clock and no backup
//! that began before the mark is still alive, deletes each condemned pack —
//! unless some snapshot now references a blob in it, in which case the pack
//! is resurrected into the index instead. Backups never wait for a prune.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use crate::backend::ObjectKind;
use crate::blob;
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, PackId};
use crate::index::{
    IndexPack, NewPacks, References, close_over_references, load_index_files, references_by_blob,
    write_index_files,
};
use crate::lock::{Heartbeat, is_future, storage_now};
use crate::mark::{MarkFile, load_marks};
use crate::pack::{BlobLocation, DeltaRefs, PackEntry, PackWriter};
use crate::repository::{Repository, now_ns};
use crate::tree::{NodeKind, Tree};
use crate::wal::{WalError, WalRelease};

/// Options of a prune.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Repack a pack whose unused share of bytes exceeds this (0.0..=1.0).
    pub max_unused: f64,
    /// How long condemned packs stay before phase two may delete them.
    /// Zero sweeps in the same run (only safe when no backup is running,
    /// which the heartbeat check still verifies).
    pub grace: Duration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            max_unused: 0.05,
            grace: Duration::from_secs(3600),
        }
    }
}

/// Why a pack is condemned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CondemnReason {
    /// No blob in it is referenced.
    Unused,
    /// Its live blobs are copied to new packs first.
    Repacked,
    /// No index names it (left by an interrupted backup, or one running now).
    Unindexed,
}

/// A pack to condemn in phase one.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Condemned {
    /// The pack.
    pub pack: PackId,
    /// Its size in bytes.
    pub size: u64,
    /// Why.
    pub reason: CondemnReason,
    /// Bytes of live blobs copied out first (repacked packs).
    pub live_bytes: u64,
    #[serde(skip)]
    entries: Vec<PackEntry>,
    #[serde(skip)]
    live: Vec<PackEntry>,
}

/// A mark from an earlier prune, and whether phase two may act on it now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PendingMark {
    /// The mark's name.
    pub name: String,
    /// Packs it condemns.
    pub packs: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Seconds since it was written (storage clock).
    pub age_s: u64,
    /// Old enough for phase two.
    pub due: bool,
}

/// What a prune will do; computed first, executed by [`Repository::prune`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct PrunePlan {
    /// Snapshots considered.
    pub snapshots: usize,
    /// Distinct blobs they reference.
    pub referenced_blobs: u64,
    /// Packs in the repository.
    pub packs: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Packs kept as they are.
    pub keep: usize,
    /// Packs condemned by this run's phase one.
    pub condemn: Vec<Condemned>,
    /// Marks of earlier runs.
    pub marks: Vec<PendingMark>,
    /// Bytes phase one condemns (freed by a later phase two).
    pub bytes_condemned: u64,
    /// Bytes of live blobs repacked.
    pub bytes_repacked: u64,
    /// Archived WAL that no remaining base backup needs (SPEC §28).
    pub wal: WalRelease,
    #[serde(skip)]
    options_grace: Duration,
    #[serde(skip)]
    options_max_unused: f64,
    #[serde(skip)]
    index_files: Vec<IndexId>,
    #[serde(skip)]
    kept_packs: Vec<IndexPack>,
    /// The recorded delta blobs of the indexed packs (SPEC §6.6).
    #[serde(skip)]
    references: References,
}

/// What a prune did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneSummary {
    /// Packs condemned (phase one).
    pub packs_condemned: usize,
    /// New packs written by repacking.
    pub packs_written: usize,
    /// Packs deleted (phase two).
    pub packs_deleted: usize,
    /// Bytes those held.
    pub bytes_deleted: u64,
    /// Condemned packs put back because a snapshot references them again.
    pub packs_resurrected: usize,
    /// Marks left for a later run (grace not over, or a backup still running).
    pub marks_postponed: usize,
    /// Heartbeats of running backups that held a mark back.
    pub waiting_for: Vec<String>,
    /// Heartbeats dated in the storage's future (SPEC §22): ignored.
    pub heartbeats_ignored: Vec<String>,
    /// Damaged marks deleted (their packs are condemned again as unindexed).
    pub marks_damaged_deleted: Vec<String>,
    /// Marks dated in the storage's future, rewritten with the storage's
    /// current time so their grace period can end.
    pub marks_redated: Vec<String>,
    /// Archived WAL files deleted (SPEC §28).
    pub wal_deleted: usize,
    /// Bytes those held.
    pub wal_bytes_deleted: u64,
    /// Released WAL files kept for now: stored within the grace period.
    pub wal_postponed: usize,
}

/// A prune step, for tests that stop a prune part-way (a crash between two
/// durable writes leaves the same state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum PruneStep {
    /// After repacked packs are written.
    Repacked,
    /// After the new index is written.
    IndexWritten,
    /// After superseded index files are deleted.
    OldIndexDeleted,
    /// After the mark is written.
    Marked,
    /// After phase two resurrected or deleted some packs.
    SweptSome,
}

impl fmt::Display for PrunePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        writeln!(
            f,
            "{} snapshots reference {} blobs",
            self.snapshots, self.referenced_blobs
        )?;
        writeln!(
            f,
            "{} packs, {:.1} MiB; {} kept as they are",
            self.packs,
            mib(self.bytes),
            self.keep
        )?;
        let count = |r| self.condemn.iter().filter(|c| c.reason == r).count();
        writeln!(
            f,
            "condemn {} packs ({:.1} MiB): {} unused, {} repacked ({:.1} MiB of live blobs copied), {} unindexed",
            self.condemn.len(),
            mib(self.bytes_condemned),
            count(CondemnReason::Unused),
            count(CondemnReason::Repacked),
            mib(self.bytes_repacked),
            count(CondemnReason::Unindexed),
        )?;
        for m in &self.marks {
            writeln!(
                f,
                "mark {}: {} packs, {:.1} MiB, {} s old: {}",
                &m.name[..8.min(m.name.len())],
                m.packs,
                mib(m.bytes),
                m.age_s,
                if m.due {
                    "delete now"
                } else {
                    "in grace period"
                }
            )?;
        }
        if self.wal.files > 0 {
            writeln!(
                f,
                "release {} archived WAL files ({:.1} MiB) that no base backup needs",
                self.wal.files,
                mib(self.wal.bytes)
            )?;
        }
        if let Some(why) = &self.wal.skipped {
            writeln!(f, "archived WAL kept: {why}")?;
        }
        write!(f, "grace period {} s", self.options_grace.as_secs())
    }
}

/// How often a prune starts over when a concurrent prune deleted something
/// it was about to read.
const CONCURRENT_RETRIES: u32 = 3;

/// A damaged index file (one the cache merged before the damage, so the
/// sync did not flag it) refuses the prune with the repair to run (SPEC §13).
fn refuse(e: Error) -> Error {
    match e {
        Error::CorruptObject {
            kind: ObjectKind::Index,
            name,
            ..
        } => Error::Damaged {
            op: "prune",
            kind: ObjectKind::Index,
            name,
        },
        e => e,
    }
}

/// True for "not found" from the storage: deleted since it was listed.
fn vanished(e: &Error) -> bool {
    matches!(e, Error::Backend(b) if b.is_not_found())
}

/// What phase two weighs a mark against, read when the first mark is due.
struct Current {
    indexed_packs: HashSet<PackId>,
    indexed_blobs: HashSet<BlobId>,
    /// Blobs the snapshots use, and what the delta blobs among them need.
    referenced: HashSet<BlobId>,
    /// The headers of the condemned packs that hold a referenced blob
    /// (the readable ones).
    headers: HashMap<PackId, crate::pack::PackHeader>,
}

impl Repository {
    /// Every blob reachable from every snapshot (trees and data).
    pub(crate) fn referenced_blobs(&self) -> Result<HashSet<BlobId>> {
        self.referenced_blobs_with(&HashMap::new())
    }

    /// [`Repository::referenced_blobs`], also reading trees from condemned
    /// packs (`extra`): a snapshot written after phase one may need them.
    fn referenced_blobs_with(
        &self,
        extra: &HashMap<BlobId, BlobLocation>,
    ) -> Result<HashSet<BlobId>> {
        let mut seen: HashSet<BlobId> = HashSet::new();
        let mut stack = Vec::new();
        // A damaged snapshot's blobs are unknown: counting them unused
        // could delete what a good copy of the file would need.
        for s in self.snapshots_or_refuse("prune")? {
            if seen.insert(s.snapshot.tree.as_blob()) {
                stack.push(s.snapshot.tree);
            }
        }
        while let Some(t) = stack.pop() {
            let tree = match (self.index().lookup(&t.as_blob())?, extra.get(&t.as_blob())) {
                (None, Some(loc)) => Tree::decode(&self.read_blob_at(loc)?)?,
                _ => self.load_tree(&t)?,
            };
            for n in tree.nodes {
                if n.kind == NodeKind::Dir {
                    if let Some(sub) = n.subtree
                        && seen.insert(sub.as_blob())
                    {
                        stack.push(sub);
                    }
                } else {
                    seen.extend(n.content);
                }
            }
        }
        Ok(seen)
    }

    /// [`Current`], recomputed now rather than taken from the plan:
    /// snapshots written since count. A condemned pack that holds a needed
    /// blob has its header read: its delta blobs may need blobs of other
    /// condemned packs (SPEC §6.6, §22.3), until nothing more is needed.
    fn current_use(&self, marks: &[(String, i64, MarkFile)]) -> Result<Current> {
        let mut indexed_packs = HashSet::new();
        let mut indexed_blobs = HashSet::new();
        let mut references = References::new();
        for (_, f) in load_index_files(self.backend(), self.data_keys()).map_err(refuse)? {
            references.extend(f.references_by_pack());
            for p in f.packs {
                indexed_blobs.extend(p.entries.iter().map(|e| e.id));
                indexed_packs.insert(p.id);
            }
        }
        let mut referenced = self.referenced_blobs_with(&Self::marked_locations(marks))?;
        let mut headers = HashMap::new();
        loop {
            close_over_references(&mut referenced, &references_by_blob(&references));
            let mut grew = false;
            for p in marks.iter().flat_map(|(_, _, m)| &m.packs) {
                if headers.contains_key(&p.id)
                    || indexed_packs.contains(&p.id)
                    || !p
                        .entries
                        .iter()
                        .any(|e| referenced.contains(&e.id) && !indexed_blobs.contains(&e.id))
                {
                    continue;
                }
                // Unreadable: not resurrected, as before (its blobs are
                // lost either way); `check` reports the snapshots.
                if let Ok(h) = self.read_pack_header(&p.id) {
                    if !h.references.is_empty() {
                        references.insert(p.id, h.references.clone());
                        grew = true;
                    }
                    headers.insert(p.id, h);
                }
            }
            if !grew {
                break;
            }
        }
        Ok(Current {
            indexed_packs,
            indexed_blobs,
            referenced,
            headers,
        })
    }

    /// Locations of the blobs in condemned packs, from the marks.
    fn marked_locations(marks: &[(String, i64, MarkFile)]) -> HashMap<BlobId, BlobLocation> {
        marks
            .iter()
            .flat_map(|(_, _, m)| m.packs.iter())
            .flat_map(|p| {
                p.entries.iter().map(move |e| {
                    (
                        e.id,
                        BlobLocation {
                            pack: p.id,
                            entry: *e,
                        },
                    )
                })
            })
            .collect()
    }

    /// Packs named by pending prune marks (condemned, not yet deleted).
    pub(crate) fn marked_pack_ids(&self) -> Result<HashSet<PackId>> {
        Ok(self
            .load_marks()?
            .iter()
            .flat_map(|(_, _, m)| m.packs.iter().map(|p| p.id))
            .collect())
    }

    /// The readable marks; damaged ones are skipped with a warning (the
    /// sweep deletes them).
    fn load_marks(&self) -> Result<Vec<(String, i64, MarkFile)>> {
        let marks = load_marks(self.backend(), self.data_keys())?;
        for (_, _, e) in &marks.damaged {
            self.warn(crate::warning::Warning::DamagedPruneMark {
                reason: e.to_string(),
            });
        }
        Ok(marks.good)
    }

    /// Computes what a prune would do. Reads every snapshot, tree and index
    /// file from the repository (not the cache).
    pub fn prune_plan(&self, opts: &PruneOptions) -> Result<PrunePlan> {
        // A concurrent prune may delete an index file or a pack between our
        // listing (or cache) and our read; what it deletes it has replaced
        // first (SPEC §13, §22), so sync and plan again from what is there now.
        let mut attempts = 0;
        loop {
            match self.prune_plan_once(opts) {
                Err(e) if vanished(&e) && attempts < CONCURRENT_RETRIES => {
                    attempts += 1;
                    self.refresh_index()?;
                }
                r => return r,
            }
        }
    }

    fn prune_plan_once(&self, opts: &PruneOptions) -> Result<PrunePlan> {
        // Damaged snapshots refuse in referenced_blobs_with.
        self.require_whole_index("prune")?;
        if !(0.0..=1.0).contains(&opts.max_unused) {
            return Err(Error::InvalidArgument(format!(
                "max-unused {} outside 0..=1",
                opts.max_unused
            )));
        }
        let entries = self.snapshots()?;
        let snapshots = entries.len();
        let wal = self.wal_release_plan(&entries)?;
        let marks = self.load_marks()?;
        let mut referenced = self.referenced_blobs_with(&Self::marked_locations(&marks))?;
        let marked: HashSet<PackId> = marks
            .iter()
            .flat_map(|(_, _, m)| m.packs.iter().map(|p| p.id))
            .collect();

        let mut index_files = Vec::new();
        let mut packs: Vec<IndexPack> = Vec::new();
        let mut seen_packs = HashSet::new();
        let mut references = References::new();
        for (name, f) in load_index_files(self.backend(), self.data_keys()).map_err(refuse)? {
            index_files.push(
                name.parse::<IndexId>()
                    .map_err(|_| Error::InvalidArgument(name.clone()))?,
            );
            references.extend(f.references_by_pack());
            for p in f.packs {
                if seen_packs.insert(p.id) {
                    packs.push(p);
                }
            }
        }
        // A used delta blob needs its references, whoever else uses them
        // (SPEC §6.6): they are live too.
        close_over_references(&mut referenced, &references_by_blob(&references));
        // Packs are listed after the index is read: every pack an index
        // file names was written before that file (SPEC §13), so it is
        // listed unless deleted since. Listed first, a pack written by a
        // concurrent prune's repack (and named by its new index) would look
        // missing, and this plan's index would leave it out.
        let listed = self.backend().list(ObjectKind::Pack)?;
        let sizes: HashMap<String, u64> = listed.iter().map(|o| (o.name.clone(), o.size)).collect();
        // The first location of each blob is the one kept.
        let mut located: HashSet<BlobId> = HashSet::new();
        let (mut keep, mut condemn, mut kept_packs) = (0usize, Vec::new(), Vec::new());
        let mut bytes = 0u64;
        for p in packs {
            let Some(&size) = sizes.get(&p.id.to_hex()) else {
                continue; // indexed but missing: `check` reports it; nothing to free
            };
            bytes += size;
            let (mut live, mut dead_bytes) = (Vec::new(), 0u64);
            for e in &p.entries {
                if referenced.contains(&e.id) && located.insert(e.id) {
                    live.push(*e);
                } else {
                    dead_bytes += u64::from(e.length);
                }
            }
            let reason = if live.is_empty() {
                Some(CondemnReason::Unused)
            } else if dead_bytes as f64 > opts.max_unused * size as f64 {
                Some(CondemnReason::Repacked)
            } else {
                None
            };
            match reason {
                None => {
                    keep += 1;
                    kept_packs.push(p);
                }
                Some(reason) => {
                    let live_bytes = live.iter().map(|e| u64::from(e.length)).sum();
                    condemn.push(Condemned {
                        pack: p.id,
                        size,
                        reason,
                        live_bytes,
                        entries: p.entries,
                        live,
                    });
                }
            }
        }
        for o in &listed {
            let Ok(id) = o.name.parse::<PackId>() else {
                continue;
            };
            if !seen_packs.contains(&id) && !marked.contains(&id) {
                bytes += o.size;
                // Header entries let phase two resurrect it if it was a running backup's.
                let entries = self
                    .read_pack_header(&id)
                    .map(|h| h.entries)
                    .unwrap_or_default();
                condemn.push(Condemned {
                    pack: id,
                    size: o.size,
                    reason: CondemnReason::Unindexed,
                    live_bytes: 0,
                    entries,
                    live: Vec::new(),
                });
            }
        }
        let now = storage_now(self.backend())?;
        let pending = marks
            .iter()
            .map(|(name, t, m)| {
                let age = Duration::from_nanos(now.saturating_sub(*t).max(0) as u64);
                PendingMark {
                    name: name.clone(),
                    packs: m.packs.len(),
                    bytes: m
                        .packs
                        .iter()
                        .map(|p| sizes.get(&p.id.to_hex()).copied().unwrap_or(0))
                        .sum(),
                    age_s: age.as_secs(),
                    due: age >= opts.grace,
                }
            })
            .collect();
        Ok(PrunePlan {
            snapshots,
            referenced_blobs: referenced.len() as u64,
            packs: listed.len(),
            bytes,
            keep,
            bytes_condemned: condemn.iter().map(|c| c.size).sum(),
            bytes_repacked: condemn.iter().map(|c| c.live_bytes).sum(),
            condemn,
            marks: pending,
            wal,
            options_grace: opts.grace,
            options_max_unused: opts.max_unused,
            index_files,
            kept_packs,
            references,
        })
    }

    /// Executes a plan: phase one for the packs it condemns, then phase two
    /// for every mark whose grace period is over.
    ///
    /// A concurrent prune may delete what this one is about to read (a pack
    /// to repack, an index file, a tree's pack). Every step is crash-safe
    /// (SPEC §22), so such a failure is a crash at that step: the prune plans
    /// again from the repository as it is now and runs that plan.
    pub fn prune(&self, plan: PrunePlan) -> Result<PruneSummary> {
        let opts = PruneOptions {
            max_unused: plan.options_max_unused,
            grace: plan.options_grace,
        };
        let mut r = self.prune_until(plan, None);
        let mut attempts = 0;
        while let Err(e) = &r
            && vanished(e)
            && attempts < CONCURRENT_RETRIES
        {
            attempts += 1;
            self.refresh_index()?;
            r = self.prune_until(self.prune_plan(&opts)?, None);
        }
        r
    }

    /// [`Repository::prune`], stopping after `stop` (crash-consistency tests).
    #[doc(hidden)]
    pub(crate) fn prune_until(
        &self,
        plan: PrunePlan,
        stop: Option<PruneStep>,
    ) -> Result<PruneSummary> {
        let mut sum = PruneSummary::default();
        if !plan.condemn.is_empty() && self.mark_phase(&plan, stop, &mut sum)? {
            return Ok(sum);
        }
        self.sweep_phase(plan.options_grace, stop, &mut sum)?;
        self.release_wal(&plan.wal, plan.options_grace, &mut sum)?;
        self.refresh_index()?;
        Ok(sum)
    }

    /// Phase one. Returns true when stopped early by `stop`.
    fn mark_phase(
        &self,
        plan: &PrunePlan,
        stop: Option<PruneStep>,
        sum: &mut PruneSummary,
    ) -> Result<bool> {
        let key = self.data_keys();
        // 1. Copy live blobs out of packs being repacked (verifying each).
        let mut new_packs = NewPacks::default();
        let mut w = PackWriter::new();
        for c in plan.condemn.iter().filter(|c| !c.live.is_empty()) {
            let data = self.backend().read(ObjectKind::Pack, &c.pack.to_hex())?;
            for e in &c.live {
                let sealed = data
                    .get(e.offset as usize..(e.offset as usize + e.length as usize))
                    .ok_or_else(|| Error::CorruptPack {
                        pack: c.pack,
                        reason: format!("blob {} outside the pack", e.id.short()),
                    })?;
                blob::open_blob_with(
                    key,
                    self.hasher(),
                    e.kind,
                    &e.id,
                    sealed,
                    e.raw_length,
                    &self.blob_sources(),
                )
                .map_err(|err| self.blob_error(c.pack, &e.id, err))?;
                let resealed = blob::resealed_for_new_pack(key, e.kind, &e.id, sealed);
                w.add(
                    e.kind,
                    e.id,
                    resealed.as_deref().unwrap_or(sealed),
                    e.raw_length,
                );
                // A delta blob keeps its references in its new pack.
                if let Some(d) = plan
                    .references
                    .get(&c.pack)
                    .and_then(|r| DeltaRefs::find(r, &e.id))
                {
                    w.add_references(e.id, d.refs.clone());
                }
                if w.len() >= self.config().pack_size as usize {
                    new_packs.store(self.backend(), key, std::mem::take(&mut w))?;
                }
            }
        }
        new_packs.store(self.backend(), key, w)?;
        sum.packs_written = new_packs.packs.len();
        if stop == Some(PruneStep::Repacked) {
            return Ok(true);
        }
        // 2. New index: kept packs and new packs, superseding every index
        //    file the plan read (files written since stay untouched).
        let all: Vec<IndexPack> = plan
            .kept_packs
            .iter()
            .cloned()
            .chain(new_packs.packs)
            .collect();
        let mut references = plan.references.clone();
        references.extend(new_packs.references);
        write_index_files(self.backend(), key, &all, &references, &plan.index_files)?;
        if stop == Some(PruneStep::IndexWritten) {
            return Ok(true);
        }
        // 3. Delete the superseded files before marking: a backup that
        //    starts after the mark then cannot see a condemned blob.
        for id in &plan.index_files {
            match self.backend().delete(ObjectKind::Index, &id.to_hex()) {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
        }
        if stop == Some(PruneStep::OldIndexDeleted) {
            return Ok(true);
        }
        // 4. The mark names the condemned packs and their blobs.
        let mark = MarkFile {
            created_ns: now_ns(),
            packs: plan
                .condemn
                .iter()
                .map(|c| IndexPack {
                    id: c.pack,
                    entries: c.entries.clone(),
                })
                .collect(),
        };
        let bytes = mark.to_file(key);
        self.backend()
            .write(ObjectKind::Mark, &IndexId::hash_of(&bytes).to_hex(), &bytes)?;
        sum.packs_condemned = plan.condemn.len();
        Ok(stop == Some(PruneStep::Marked))
    }

    /// Deletes the released WAL files stored before the grace period
    /// (storage clock). The listing was taken when the prune was planned,
    /// so a file archived since is never among them.
    fn release_wal(
        &self,
        release: &WalRelease,
        grace: std::time::Duration,
        sum: &mut PruneSummary,
    ) -> Result<()> {
        if release.objects.is_empty() {
            return Ok(());
        }
        let now = crate::lock::storage_now(self.backend())?;
        let store = self.wal();
        for o in &release.objects {
            let age =
                std::time::Duration::from_nanos(now.saturating_sub(o.modified_ns).max(0) as u64);
            if age < grace {
                sum.wal_postponed += 1;
                continue;
            }
            match store.delete(o) {
                Ok(()) => {
                    sum.wal_deleted += 1;
                    sum.wal_bytes_deleted += o.size;
                }
                // A concurrent prune deleted it.
                Err(WalError::Backend(e)) if e.is_not_found() => {}
                Err(e) => return Err(e.into_repo_error()),
            }
        }
        Ok(())
    }

    /// Phase two for every mark past its grace period.
    pub(crate) fn sweep_phase(
        &self,
        grace: Duration,
        stop: Option<PruneStep>,
        sum: &mut PruneSummary,
    ) -> Result<()> {
        let loaded = load_marks(self.backend(), self.data_keys())?;
        if loaded.good.is_empty() && loaded.damaged.is_empty() {
            return Ok(());
        }
        let now = storage_now(self.backend())?;
        let old_enough =
            |t: i64| Duration::from_nanos(now.saturating_sub(t).max(0) as u64) >= grace;
        // A damaged mark names nothing this prune can act on; deleting it
        // only delays its packs' deletion (a later prune condemns them
        // again as unindexed). It is kept for the grace period, by the
        // storage clock, so `check` can report it first.
        for (name, t, e) in loaded.damaged {
            self.warn(crate::warning::Warning::DamagedPruneMark {
                reason: e.to_string(),
            });
            if old_enough(t) && !is_future(t, now) {
                match self.backend().delete(ObjectKind::Mark, &name) {
                    Err(e) if !e.is_not_found() => return Err(e.into()),
                    _ => sum.marks_damaged_deleted.push(name),
                }
            } else {
                sum.marks_postponed += 1;
            }
        }
        let mut marks = Vec::new();
        for (name, t, mark) in loaded.good {
            if !is_future(t, now) {
                marks.push((name, t, mark));
                continue;
            }
            // Dated in the storage's future, its grace period would never
            // end: rewritten now (a later condemnation time only waits
            // longer), the replacement durable before the original goes.
            let fresh = MarkFile {
                created_ns: mark.created_ns.wrapping_add(1),
                packs: mark.packs,
            };
            let bytes = fresh.to_file(self.data_keys());
            let new_name = IndexId::hash_of(&bytes).to_hex();
            self.backend().write(ObjectKind::Mark, &new_name, &bytes)?;
            match self.backend().delete(ObjectKind::Mark, &name) {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
            self.warn(crate::warning::Warning::FuturePruneMark {
                name: name.clone(),
                new_name: new_name.clone(),
            });
            sum.marks_redated.push(name);
            sum.marks_postponed += 1;
        }
        if marks.is_empty() {
            return Ok(());
        }
        let marks_for_lookup = marks.clone();
        let mut beats = Heartbeat::list(self.backend())?;
        beats.retain(|h| {
            if h.is_future(now) {
                self.warn(crate::warning::Warning::FutureHeartbeat {
                    name: h.name.clone(),
                });
                sum.heartbeats_ignored.push(h.name.clone());
                return false;
            }
            true
        });
        let mut current: Option<Current> = None;
        for (name, t, mark) in marks {
            if !old_enough(t) {
                sum.marks_postponed += 1;
                continue;
            }
            // A backup that began before the mark may reference condemned
            // blobs it found in the old index: wait for it (or its expiry).
            let holding: Vec<&str> = beats
                .iter()
                .filter(|h| h.started_ns <= t && h.is_alive(now))
                .map(|h| h.name.as_str())
                .collect();
            if !holding.is_empty() {
                for h in holding {
                    if !sum.waiting_for.iter().any(|w| w == h) {
                        sum.waiting_for.push(h.to_string());
                    }
                }
                sum.marks_postponed += 1;
                continue;
            }
            if current.is_none() {
                current = Some(self.current_use(&marks_for_lookup)?);
            }
            let Some(Current {
                indexed_packs,
                indexed_blobs,
                referenced,
                headers,
            }) = &current
            else {
                continue;
            };
            let mut resurrect = Vec::new();
            let mut delete = Vec::new();
            for p in mark.packs {
                if indexed_packs.contains(&p.id) {
                    continue; // a backup indexed it since: not ours to delete
                }
                if p.entries
                    .iter()
                    .any(|e| referenced.contains(&e.id) && !indexed_blobs.contains(&e.id))
                {
                    resurrect.push(p);
                } else {
                    delete.push(p.id);
                }
            }
            if !resurrect.is_empty() {
                // SPEC §22: resurrection is an index entry, written before
                // anything is deleted. The header, read once the pack
                // turned out to be needed, gives its delta blobs' references.
                let mut found = NewPacks::default();
                for p in resurrect {
                    if let Some(h) = headers.get(&p.id) {
                        found.add(p.id, h.clone());
                    }
                }
                sum.packs_resurrected += found.packs.len();
                write_index_files(
                    self.backend(),
                    self.data_keys(),
                    &found.packs,
                    &found.references,
                    &[],
                )?;
            }
            for id in delete {
                let name = id.to_hex();
                let size = self.backend().size(ObjectKind::Pack, &name).unwrap_or(0);
                match self.backend().delete(ObjectKind::Pack, &name) {
                    Ok(()) => {
                        sum.packs_deleted += 1;
                        sum.bytes_deleted += size;
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
                if stop == Some(PruneStep::SweptSome) {
                    return Ok(());
                }
            }
            match self.backend().delete(ObjectKind::Mark, &name) {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }
}
