//! Rekey of the objects beside packs, index and snapshots (SPEC §30.4):
//! dictionaries and archived WAL files keep their names and are replaced in
//! place; prune marks are named by their bytes, so a mark is written anew
//! and the old one deleted, as prune re-dates a mark (§22.1).

use crate::backend::ObjectKind;
use crate::error::Result;
use crate::format::FILE_PREFIX_LEN;
use crate::id::IndexId;
use crate::mark::MarkFile;
use crate::wal::WAL_HEADER_LEN;

use super::{RekeyReport, Run};

impl Run<'_> {
    /// Dictionaries and archived WAL files: the sealed part is opened and
    /// sealed again under the newest epoch, the clear header kept, and the
    /// object replaced atomically. Their content, so their names, do not
    /// change; a concurrent writer of the same name writes the same content.
    pub(super) fn rewrite_in_place(&self, report: &mut RekeyReport) -> Result<()> {
        let b = self.repo.backend();
        for (kind, head_len) in [
            (ObjectKind::Dict, FILE_PREFIX_LEN),
            (ObjectKind::Wal, WAL_HEADER_LEN),
        ] {
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
                if bytes.len() < head_len {
                    continue; // damaged: `check` reports it
                }
                let (head, sealed) = bytes.split_at(head_len);
                let mut ad = head.to_vec();
                if kind == ObjectKind::Wal {
                    ad.extend_from_slice(o.name.as_bytes()); // SPEC §28.2
                }
                if !self.sealer.is_stale(&ad, sealed) {
                    continue;
                }
                let Ok(payload) = self.sealer.open_payload(&ad, sealed) else {
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
                if kind == ObjectKind::Dict {
                    report.dictionaries_rewritten += 1;
                } else {
                    report.wal_files_rewritten += 1;
                }
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

    /// The audit trail (SPEC §31.2, §31.3): a record's name and signature
    /// cover only its clear head, so its body is re-sealed and the object
    /// replaced in place; the signing key likewise keeps its seed and name.
    pub(super) fn rewrite_audit(&self, report: &mut RekeyReport) -> Result<()> {
        let b = self.repo.backend();
        for o in b.list(ObjectKind::Audit)? {
            if self.out_of_time() {
                report.stopped_early = true;
                return Ok(());
            }
            let bytes = match b.read(ObjectKind::Audit, &o.name) {
                Ok(bytes) => bytes,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            // Damaged: `audit verify` names it.
            let Some((at, ad)) = crate::audit::sealed_part(&o.name, &bytes) else {
                continue;
            };
            let (head, sealed) = bytes.split_at(at);
            if !self.sealer.is_stale(&ad, sealed) {
                continue;
            }
            let Ok(payload) = self.sealer.open_payload(&ad, sealed) else {
                continue;
            };
            let mut fresh = head.to_vec();
            fresh.extend_from_slice(&self.sealer.reseal_payload(&ad, &payload));
            b.replace(ObjectKind::Audit, &o.name, &fresh)?;
            report.audit_objects_rewritten += 1;
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
            if !self.sealer.is_stale_file(&bytes) {
                continue;
            }
            if live.contains(o.name.as_str()) {
                let (ad, sealed) = bytes.split_at(FILE_PREFIX_LEN);
                let Ok(payload) = self.sealer.open_payload(ad, sealed) else {
                    continue;
                };
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
