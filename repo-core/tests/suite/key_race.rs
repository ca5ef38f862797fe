//! Two sessions removing each other's key at the same moment must not
//! leave the repository without a key (issue 6: the `key remove` race).

use std::sync::Mutex;

use cairn_testkit::backend::{Call, Hooked};
use repo_core::{Backend, LocalBackend, ObjectKind, OpenOptions, Repository};

use super::{WEAK_KDF, init_repo, open_repo};

/// A local backend on which another session's deletion of key `theirs`
/// lands just before this session's own key deletion.
fn interleaved(path: LocalBackend, theirs: String) -> Hooked<LocalBackend> {
    let other = path.clone();
    let other_deletes = Mutex::new(Some(theirs));
    Hooked::new(path).before(move |call| {
        if let Call::Delete(ObjectKind::Key, _) = call
            && let Some(theirs) = other_deletes.lock().unwrap().take()
        {
            // The other session checked its rules before we deleted
            // anything, as we did: both saw two usable keys.
            other.delete(ObjectKind::Key, &theirs)?;
        }
        Ok(())
    })
}

#[test]
fn two_sessions_removing_each_others_key_at_once_leave_one() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let first = repo.key_id();
    let second = repo.add_key(b"second pw", WEAK_KDF).unwrap();
    drop(repo);
    let path = d.path().join("repo");
    let session = Repository::open(
        interleaved(LocalBackend::open(&path), first.to_hex()),
        b"pw",
        OpenOptions::default(),
    )
    .unwrap();
    assert_eq!(session.key_id(), first);
    // We remove the second key while a session of the second key removes ours.
    session.remove_key(&second).unwrap();
    let opened = open_repo(d.path(), b"pw")
        .expect("the password of the session that removed last still opens");
    assert_eq!(opened.key_id(), first);
    assert!(open_repo(d.path(), b"second pw").is_err());
}
