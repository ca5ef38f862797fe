//! What a backup lists before it reads files (SPEC §15): two walks of the
//! storage instead of a listing per kind. On S3 each is one paginated
//! listing of the sorted keys ([`Backend::list_many`]); elsewhere each kind
//! is listed as before.
//!
//! Order, after the heartbeat (SPEC §22): the first walk lists the index
//! files, the marks and (for the parent) the snapshots; the index is
//! synced and the marks read; only then the second walk lists the packs
//! (and the audit trail's records, for the heads). So the index is read
//! after the heartbeat, marks are listed and read before the packs are
//! listed (resume never adopts a pack a sweep is deleting), and the packs
//! the synced index names are known before the listing that tells lost
//! ones: the order of separate listings, kept.
//!
//! [`Backend::list_many`]: crate::backend::Backend::list_many

use crate::backend::{ObjectInfo, ObjectKind};
use crate::error::Result;
use crate::repository::Repository;

/// What the walks found that the backup still needs.
pub(super) struct Walked {
    /// The snapshot files, when the parent is to be found among them.
    pub snapshots: Option<Vec<ObjectInfo>>,
    /// Packs of interrupted backups taken over (SPEC §15).
    pub packs_resumed: usize,
}

/// Lists, syncs the index, reads the marks, tells lost packs and resumes
/// interrupted backups; finds the audit trail's heads on the way when a
/// snapshot will need them ([`Repository::anchor_to`]).
pub(super) fn start(repo: &Repository, want_snapshots: bool) -> Result<Walked> {
    // A key file unlocked from the cache's copy is confirmed by the same
    // walk: `keys/` lies between `index/` and `snapshots/` (SPEC §14).
    let confirm = repo.key_unconfirmed();
    let mut kinds = vec![ObjectKind::Index, ObjectKind::Mark];
    if confirm {
        kinds.push(ObjectKind::Key);
    }
    if want_snapshots {
        kinds.push(ObjectKind::Snapshot);
    }
    let mut first = repo.list_kinds(&kinds)?;
    let (index, marks) = (take(&mut first), take(&mut first));
    if confirm {
        repo.confirm_key(&take(&mut first))?;
    }
    let snapshots = first.next();
    repo.refresh_index_listed(index)?;
    let marks = crate::mark::load_listed_marks(repo.backend(), repo.data_keys(), marks)?;
    let indexed = repo.index().cache().pack_ids()?;

    let trail = repo.audit_trail_unread();
    let kinds: &[ObjectKind] = match trail {
        Some(_) => &[ObjectKind::Audit, ObjectKind::Pack],
        None => &[ObjectKind::Pack],
    };
    let mut second = repo.list_kinds(kinds)?;
    if let Some(log) = trail {
        // Records others write from now on are joined by the next record
        // that sees them (SPEC §31.4).
        log.heads_once_listed(take(&mut second))
            .map_err(crate::audit::AuditError::into_error)?;
    }
    let packs = take(&mut second);
    let packs_resumed = super::adopt_listed(repo, marks, indexed, packs)?;
    Ok(Walked {
        snapshots,
        packs_resumed,
    })
}

/// The next kind's listing ([`Repository::list_kinds`] checked there is
/// one per kind).
fn take(it: &mut impl Iterator<Item = Vec<ObjectInfo>>) -> Vec<ObjectInfo> {
    it.next().unwrap_or_default()
}
