//! Rekey of the objects beside packs, index and snapshots (SPEC §30.4):
//! dictionaries, archived WAL files and the audit trail keep their names
//! and are replaced in place; prune marks and verification records are
//! named by their bytes, so each is written anew and the old one deleted.

use crate::backend::ObjectKind;
use crate::error::Result;
use crate::format::FILE_PREFIX_LEN;
use crate::id::IndexId;
use crate::mark::MarkFile;
use crate::wal::WAL_HEADER_LEN;

use super::{RekeyReport, Run};

/// Where an object's sealed part starts and its associated data, given
/// its name and bytes; `None` for bytes that do not parse.
type SealedPart = fn(&str, &[u8]) -> Option<(usize, Vec<u8>)>;

impl Run<'_> {
    /// Dictionaries, archived WAL files and the audit trail: the sealed
    /// part is opened and sealed again under the newest epoch, the clear
    /// part kept, and the object replaced atomically. Their names do not
    /// change: a dictionary's and a WAL file's come from their content
    /// (a concurrent writer of the same name writes the same content), an
    /// audit record's and its signature cover only its clear head (§31.2).
    pub(super) fn rewrite_in_place(&self, report: &mut RekeyReport) -> Result<()> {
        let kinds: [(ObjectKind, SealedPart); 3] = [
            (ObjectKind::Dict, |_, b| {
                (b.len() >= FILE_PREFIX_LEN)
                    .then(|| (FILE_PREFIX_LEN, b[..FILE_PREFIX_LEN].to_vec()))
            }),
            (ObjectKind::Wal, |name, b| {
                // SPEC §28.2: the header and the name are the associated data.
                (b.len() >= WAL_HEADER_LEN).then(|| {
                    let mut ad = b[..WAL_HEADER_LEN].to_vec();
                    ad.extend_from_slice(name.as_bytes());
                    (WAL_HEADER_LEN, ad)
                })
            }),
            (ObjectKind::Audit, crate::audit::sealed_part),
        ];
        let b = self.repo.backend();
        for (kind, locate) in kinds {
            for o in b.list(kind)? {
                if self.out_of_time() {
                    report.stopped_early = true;
                    return Ok(());
                }
                let bytes = match b.read(kind, &o.name) {
                    Ok(bytes) => bytes,
                    Err(e) if e.is_not_found() => continue, // released by a prune
                    Err(e) => return Err(e.into()),
                };
                // Damaged: `check` or `audit verify` reports it.
                let Some((at, ad)) = locate(&o.name, &bytes) else {
                    continue;
                };
                let (head, sealed) = bytes.split_at(at);
                let Some(payload) = self.sealer.stale_payload(&ad, sealed) else {
                    continue;
                };
                let mut fresh = head.to_vec();
                fresh.extend_from_slice(&self.sealer.reseal_payload(&ad, &payload));
                match b.replace(kind, &o.name, &fresh) {
                    Ok(()) => {}
                    // A WAL file released by a concurrent prune stays gone.
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                }
                *match kind {
                    ObjectKind::Dict => &mut report.dictionaries_rewritten,
                    ObjectKind::Wal => &mut report.wal_files_rewritten,
                    _ => &mut report.audit_objects_rewritten,
                } += 1;
            }
        }
        Ok(())
    }

    /// Pending prune marks under an older epoch: each written again (with
    /// `created_ns` + 1, so under a new name) before the old one is
    /// deleted. The copy's later modification time only lengthens its
    /// grace period, and every heartbeat that held the original holds it.
    pub(super) fn rewrite_marks(&self, report: &mut RekeyReport) -> Result<()> {
        let repo = self.repo;
        let b = repo.backend();
        for o in b.list(ObjectKind::Mark)? {
            let bytes = match b.read(ObjectKind::Mark, &o.name) {
                Ok(bytes) => bytes,
                Err(e) if e.is_not_found() => continue, // swept meanwhile
                Err(e) => return Err(e.into()),
            };
            if !self.sealer.is_stale_file(&bytes) {
                continue;
            }
            // A damaged mark is prune's to delete (§22.1).
            let Ok(mark) = MarkFile::from_file(repo.data_keys(), &bytes) else {
                continue;
            };
            let fresh = self.sealer.mark_file(&MarkFile {
                created_ns: mark.created_ns.wrapping_add(1),
                packs: mark.packs,
            });
            b.write(ObjectKind::Mark, &IndexId::hash_of(&fresh).to_hex(), &fresh)?;
            match b.delete(ObjectKind::Mark, &o.name) {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
            report.marks_rewritten += 1;
        }
        Ok(())
    }

    /// Verification records (SPEC §32.2) are named by their bytes: a live
    /// one is written anew before the old one is deleted; one that a live
    /// record supersedes is only deleted (writing it anew under another
    /// name would bring it back to life, §32.3).
    pub(super) fn rewrite_verifications(&self, report: &mut RekeyReport) -> Result<()> {
        let repo = self.repo;
        let b = repo.backend();
        let listed = b.list(ObjectKind::Verify)?;
        if listed.is_empty() {
            return Ok(());
        }
        let history = repo.verification_history()?;
        let live: std::collections::HashSet<&str> =
            history.records.iter().map(|(n, _)| n.as_str()).collect();
        let damaged: std::collections::HashSet<&str> =
            history.damaged.iter().map(|(n, _)| n.as_str()).collect();
        for o in &listed {
            if self.out_of_time() {
                report.stopped_early = true;
                return Ok(());
            }
            if damaged.contains(o.name.as_str()) {
                continue; // `check` names it
            }
            let bytes = match b.read(ObjectKind::Verify, &o.name) {
                Ok(bytes) => bytes,
                Err(e) if e.is_not_found() => continue, // compacted meanwhile
                Err(e) => return Err(e.into()),
            };
            if bytes.len() < FILE_PREFIX_LEN {
                continue;
            }
            let (ad, sealed) = bytes.split_at(FILE_PREFIX_LEN);
            let Some(payload) = self.sealer.stale_payload(ad, sealed) else {
                continue;
            };
            if live.contains(o.name.as_str()) {
                let mut fresh = ad.to_vec();
                fresh.extend_from_slice(&self.sealer.reseal_payload(ad, &payload));
                let name = crate::id::SnapshotId::hash_of(&fresh).to_hex();
                b.write(ObjectKind::Verify, &name, &fresh)?;
            }
            match b.delete(ObjectKind::Verify, &o.name) {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
            report.verification_records_rewritten += 1;
        }
        Ok(())
    }
}
