//! Repair: rebuild the index from pack headers, salvage damaged packs, and
//! rewrite snapshots that reference lost data (docs/repair.md).

use std::collections::{HashMap, HashSet};

use crate::backend::ObjectKind;
use crate::blob::{self, BlobKind};
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, PackId, SnapshotId, TreeId};
use crate::index::{NewPacks, write_index_files};
use crate::pack::{DeltaRefs, PackHeader, PackWriter};
use crate::repository::{Repository, now_ns};
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind, Tree, Xattr};

/// Extended attribute that marks a file or directory whose content was lost.
pub const DAMAGED_XATTR: &[u8] = b"user.cairn.damaged";

/// Tag added to snapshots rewritten by `repair snapshots`.
pub const REPAIRED_TAG: &str = "repaired";

/// What `repair index` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairIndexReport {
    /// Packs whose headers were read into the new index.
    pub packs_indexed: usize,
    /// Blobs in the new index.
    pub blobs_indexed: usize,
    /// Packs whose bytes no longer match their name and whose good blobs were
    /// copied into new packs (the damaged pack is then deleted).
    pub packs_salvaged: Vec<PackId>,
    /// Blobs that failed verification and are gone.
    pub blobs_lost: Vec<BlobId>,
    /// Packs that could not be read at all (header unreadable); left in place.
    pub packs_unreadable: Vec<PackId>,
    /// Index files replaced.
    pub index_files_replaced: usize,
}

/// A path in a rewritten snapshot that lost data.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DamagedPath {
    /// The original snapshot.
    pub snapshot: SnapshotId,
    /// The path (lossy for display).
    pub path: String,
    /// Chunks (or the subtree) lost.
    pub missing_blobs: usize,
}

/// What `repair snapshots` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairSnapshotsReport {
    /// Snapshots checked.
    pub snapshots: usize,
    /// (old, new) ids of rewritten snapshots; the old ones are deleted.
    pub rewritten: Vec<(SnapshotId, SnapshotId)>,
    /// Every damaged path.
    pub damaged: Vec<DamagedPath>,
    /// Damaged snapshot files skipped (left in place) or, with
    /// `--forget-damaged`, deleted.
    pub damaged_files: Vec<String>,
    /// True if the damaged files were deleted.
    pub damaged_files_deleted: bool,
}

/// Options for [`Repository::repair_index`].
#[derive(Debug, Clone, Default)]
pub struct RepairIndexOptions {
    /// Read every pack whole and verify its blobs, instead of trusting the
    /// pack headers.
    pub read_data: bool,
}

impl Repository {
    /// Rebuilds the index from the pack headers. With `read_data`, every pack
    /// is read whole: a pack whose bytes do not hash to its name has each
    /// blob verified, the good ones copied into new packs and the bad ones
    /// dropped. Packs condemned by a pending prune mark are left out, as the
    /// prune that marked them decided.
    pub fn repair_index(&self, opts: &RepairIndexOptions) -> Result<RepairIndexReport> {
        let read_data = opts.read_data;
        let mut report = RepairIndexReport::default();
        let key = self.data_keys();
        let condemned: HashSet<PackId> = self.marked_pack_ids()?;
        let old_index: Vec<String> = self
            .backend()
            .list(ObjectKind::Index)?
            .into_iter()
            .map(|o| o.name)
            .collect();
        // Packs with what their headers say their delta blobs need (SPEC §6.6).
        let mut found = NewPacks::default();
        let mut salvage = PackWriter::new();
        let mut salvaged = NewPacks::default();
        let mut damaged_packs = Vec::new();
        for o in self.backend().list(ObjectKind::Pack)? {
            let Ok(id) = o.name.parse::<PackId>() else {
                continue;
            };
            if condemned.contains(&id) {
                continue;
            }
            if !read_data {
                match self.read_pack_header(&id) {
                    Ok(h) => found.add(id, h),
                    // Deleted since the listing (a concurrent prune).
                    Err(Error::Backend(e)) if e.is_not_found() => {}
                    // A failed read says nothing about the pack: leaving it
                    // out of the new index would lose every blob in it.
                    Err(e @ Error::Backend(_)) => return Err(e),
                    Err(_) => report.packs_unreadable.push(id),
                }
                continue;
            }
            let data = self.backend().read(ObjectKind::Pack, &o.name)?;
            let Ok(header) = PackHeader::from_pack(key, &data) else {
                report.packs_unreadable.push(id);
                continue;
            };
            if PackId::hash_of(&data) == id {
                found.add(id, header);
                continue;
            }
            // Damaged: keep what still verifies.
            for e in &header.entries {
                let sealed = &data[e.offset as usize..(e.offset + e.length) as usize];
                // Blobs whose dictionary is damaged are lost too: repair
                // cannot recompress them without their plaintext.
                match blob::open_blob_with(
                    key,
                    self.hasher(),
                    e.kind,
                    &e.id,
                    sealed,
                    e.raw_length,
                    &self.blob_sources(),
                ) {
                    Ok(_) => {
                        let resealed = blob::resealed_for_new_pack(key, e.kind, &e.id, sealed);
                        let sealed = resealed.as_deref().unwrap_or(sealed);
                        salvage.add(e.kind, e.id, sealed, e.raw_length);
                        if let Some(d) = DeltaRefs::find(&header.references, &e.id) {
                            salvage.add_references(e.id, d.refs.clone());
                        }
                        if salvage.len() >= self.config().pack_size as usize {
                            salvaged.store(self.backend(), key, std::mem::take(&mut salvage))?;
                        }
                    }
                    Err(_) => report.blobs_lost.push(e.id),
                }
            }
            damaged_packs.push(id);
        }
        salvaged.store(self.backend(), key, salvage)?;
        let NewPacks {
            mut packs,
            mut references,
        } = found;
        packs.extend(salvaged.packs);
        references.extend(salvaged.references);
        // A blob lost in one pack may survive in another copy.
        let indexed: HashSet<BlobId> = packs
            .iter()
            .flat_map(|p| p.entries.iter().map(|e| e.id))
            .collect();
        report.blobs_lost.retain(|b| !indexed.contains(b));
        report.packs_indexed = packs.len();
        report.blobs_indexed = indexed.len();
        let supersedes: Vec<IndexId> = old_index.iter().filter_map(|n| n.parse().ok()).collect();
        // SPEC §13: new index (naming only durable packs) first, then delete
        // what it replaces.
        write_index_files(self.backend(), key, &packs, &references, &supersedes)?;
        for name in &old_index {
            match self.backend().delete(ObjectKind::Index, name) {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => report.index_files_replaced += 1,
            }
        }
        for id in &damaged_packs {
            self.backend().delete(ObjectKind::Pack, &id.to_hex())?;
        }
        report.packs_salvaged = damaged_packs;
        self.refresh_index()?;
        Ok(report)
    }

    /// Rewrites every snapshot that references a blob the index no longer
    /// has: a file that lost any chunk keeps its name and metadata but no
    /// content (size 0) and gets the `user.cairn.damaged` xattr; a directory
    /// whose tree is lost becomes empty and is marked the same way. The new
    /// snapshot is tagged `repaired` and names the old one as parent; the
    /// old one is deleted. Everything else stays restorable.
    pub fn repair_snapshots(&self) -> Result<RepairSnapshotsReport> {
        self.repair_snapshots_with(false)
    }

    /// [`Repository::repair_snapshots`]; with `forget_damaged`, damaged
    /// snapshot files (which cannot be decrypted, so name nothing that can
    /// be restored) are deleted, otherwise skipped with a warning. Refused
    /// while an index file is damaged: blobs only it names would look
    /// lost, and the snapshots naming them would be cut.
    pub fn repair_snapshots_with(&self, forget_damaged: bool) -> Result<RepairSnapshotsReport> {
        self.require_whole_index("repair snapshots")?;
        let mut report = RepairSnapshotsReport::default();
        let (entries, damaged_files) = self.snapshots_and_damaged()?;
        for (name, e) in damaged_files {
            if forget_damaged {
                match self.backend().delete(ObjectKind::Snapshot, &name) {
                    Err(e) if !e.is_not_found() => return Err(e.into()),
                    _ => {}
                }
            } else {
                self.warn(crate::warning::Warning::DamagedSnapshot {
                    name: name.clone(),
                    reason: e.to_string(),
                });
            }
            report.damaged_files.push(name);
        }
        report.damaged_files_deleted = forget_damaged;
        let packer = self.packer();
        let mut memo: HashMap<TreeId, Option<TreeId>> = HashMap::new();
        for entry in entries {
            report.snapshots += 1;
            let mut damaged = Vec::new();
            let new_root = if self
                .index()
                .lookup(&entry.snapshot.tree.as_blob())?
                .is_none()
            {
                // The root tree itself is lost: nothing below it can be
                // found, so the snapshot keeps its record and an empty root.
                let empty = Tree::default().encode();
                let eid = self.hasher().tree_id(&empty);
                packer.save(BlobKind::Tree, eid.as_blob(), &empty)?;
                damaged.push((b"/".to_vec(), 1));
                Some(eid)
            } else {
                self.repair_tree(&entry.snapshot.tree, b"", &packer, &mut memo, &mut damaged)?
            };
            let Some(root) = new_root else { continue };
            let mut snap: Snapshot = entry.snapshot.clone();
            snap.tree = root;
            snap.parent = Some(entry.id);
            if !snap.tags.iter().any(|t| t == REPAIRED_TAG) {
                snap.tags.push(REPAIRED_TAG.into());
                snap.tags.sort();
            }
            snap.metadata
                .push(("repaired_from".into(), entry.id.to_hex()));
            snap.metadata.sort();
            report.damaged.extend(
                damaged
                    .into_iter()
                    .map(|(path, missing_blobs)| DamagedPath {
                        snapshot: entry.id,
                        path: String::from_utf8_lossy(&path).into_owned(),
                        missing_blobs,
                    }),
            );
            // SPEC §13: the new snapshot's trees are durable and indexed first.
            packer.flush_all()?;
            let new_id = self.save_snapshot(&snap)?;
            self.backend()
                .delete(ObjectKind::Snapshot, &entry.id.to_hex())?;
            report.rewritten.push((entry.id, new_id));
        }
        packer.finish()?;
        Ok(report)
    }

    /// Returns the id of a repaired copy of `tree`, or `None` if nothing below
    /// it is lost.
    fn repair_tree(
        &self,
        id: &TreeId,
        path: &[u8],
        packer: &crate::repository::Packer<'_>,
        memo: &mut HashMap<TreeId, Option<TreeId>>,
        damaged: &mut Vec<(Vec<u8>, usize)>,
    ) -> Result<Option<TreeId>> {
        if let Some(r) = memo.get(id) {
            // Shared subtree: already repaired once; its damage is reported
            // under the first path it was found at.
            return Ok(*r);
        }
        let mut tree = self.load_tree(id)?;
        let mut changed = false;
        for n in &mut tree.nodes {
            let mut p = path.to_vec();
            p.push(b'/');
            p.extend_from_slice(&n.name);
            match n.kind {
                NodeKind::Dir => {
                    let Some(sub) = n.subtree else { continue };
                    if self.index().lookup(&sub.as_blob())?.is_none() {
                        let empty = Tree::default().encode();
                        let eid = self.hasher().tree_id(&empty);
                        packer.save(BlobKind::Tree, eid.as_blob(), &empty)?;
                        n.subtree = Some(eid);
                        mark_damaged(n, 1);
                        damaged.push((p, 1));
                        changed = true;
                    } else if let Some(new) = self.repair_tree(&sub, &p, packer, memo, damaged)? {
                        n.subtree = Some(new);
                        changed = true;
                    }
                }
                _ => {
                    let mut missing = 0;
                    for c in &n.content {
                        if self.index().lookup(c)?.is_none() {
                            missing += 1;
                        }
                    }
                    if missing > 0 {
                        n.content.clear();
                        n.size = 0;
                        mark_damaged(n, missing);
                        damaged.push((p, missing));
                        changed = true;
                    }
                }
            }
        }
        let result = if changed {
            tree.sort();
            let bytes = tree.encode();
            let new = self.hasher().tree_id(&bytes);
            packer.save(BlobKind::Tree, new.as_blob(), &bytes)?;
            Some(new)
        } else {
            None
        };
        memo.insert(*id, result);
        Ok(result)
    }
}

fn mark_damaged(n: &mut Node, missing: usize) {
    n.xattrs.retain(|x| x.name != DAMAGED_XATTR);
    n.xattrs.push(Xattr {
        name: DAMAGED_XATTR.to_vec(),
        value: format!(
            "{missing} blob(s) lost; content removed by cairn repair snapshots at {}",
            now_ns()
        )
        .into_bytes(),
    });
    n.xattrs.sort_by(|a, b| a.name.cmp(&b.name));
}
