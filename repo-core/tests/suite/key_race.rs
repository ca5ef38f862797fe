//! Two sessions removing each other's key at the same moment must not
//! leave the repository without a key (issue 6: the `key remove` race).

use std::sync::Mutex;

use repo_core::unstable::backend::{BackendError, ObjectInfo};
use repo_core::{Backend, LocalBackend, ObjectKind, OpenOptions, Repository};

use super::{init_repo, open_repo, weak_kdf};

/// A local backend on which another session's deletion of a key file lands
/// just before this session's own key deletion.
#[derive(Debug)]
struct Interleaved {
    inner: LocalBackend,
    other: LocalBackend,
    other_deletes: Mutex<Option<String>>,
}

impl Backend for Interleaved {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn read(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>, BackendError> {
        self.inner.read(kind, name)
    }
    fn read_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, BackendError> {
        self.inner.read_range(kind, name, offset, len)
    }
    fn size(&self, kind: ObjectKind, name: &str) -> Result<u64, BackendError> {
        self.inner.size(kind, name)
    }
    fn stat(&self, kind: ObjectKind, name: &str) -> Result<ObjectInfo, BackendError> {
        self.inner.stat(kind, name)
    }
    fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        self.inner.write(kind, name, data)
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>, BackendError> {
        self.inner.list(kind)
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<(), BackendError> {
        if kind == ObjectKind::Key
            && let Some(theirs) = self.other_deletes.lock().unwrap().take()
        {
            // The other session checked its rules before we deleted anything,
            // as we did: both saw two usable keys.
            self.other.delete(ObjectKind::Key, &theirs)?;
        }
        self.inner.delete(kind, name)
    }
}

#[test]
fn two_sessions_removing_each_others_key_at_once_leave_one() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let first = repo.key_id();
    let second = repo.add_key(b"second pw", weak_kdf()).unwrap();
    drop(repo);
    let path = d.path().join("repo");
    let session = Repository::open(
        Interleaved {
            inner: LocalBackend::open(&path),
            other: LocalBackend::open(&path),
            other_deletes: Mutex::new(Some(first.to_hex())),
        },
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
