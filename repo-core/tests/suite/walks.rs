//! Issue 14: a nothing-changed backup lists the storage in two walks
//! (SPEC §15): the index files, marks and snapshots after its heartbeat,
//! then the audit trail and the packs; nothing is listed alone. Counted
//! by a decorator on local disk, which lists each kind of a walk itself.

use std::fs;
use std::sync::{Arc, Mutex};

use cairn_testkit::PASSWORD;
use cairn_testkit::repo::init_options;
use repo_core::{
    AuditRecord, Backend, BackendError, LocalBackend, ObjectInfo, ObjectKind, OpenOptions,
    ParentChoice, Repository,
};

use super::random_bytes;

/// Logs writes (`write KIND`), listings (`list KIND`) and walks
/// (`walk KIND,KIND`) and passes every call to a local directory.
#[derive(Debug)]
struct Walks {
    inner: LocalBackend,
    log: Arc<Mutex<Vec<String>>>,
}

impl Walks {
    fn note(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }
}

impl Backend for Walks {
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
        self.note(format!("write {kind}"));
        self.inner.write(kind, name, data)
    }
    fn replace(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        self.inner.replace(kind, name, data)
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>, BackendError> {
        self.note(format!("list {kind}"));
        self.inner.list(kind)
    }
    fn list_many(&self, kinds: &[ObjectKind]) -> Result<Vec<Vec<ObjectInfo>>, BackendError> {
        let names: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
        self.note(format!("walk {}", names.join(",")));
        self.inner.list_many(kinds)
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<(), BackendError> {
        self.inner.delete(kind, name)
    }
}

#[test]
fn a_nothing_changed_backup_lists_in_two_walks_and_anchors_from_the_second() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), random_bytes(100_000, 3)).unwrap();
    let repo_dir = d.path().join("repo");
    let cache = d.path().join("cache");
    let repo = Repository::init(
        LocalBackend::create(&repo_dir).unwrap(),
        PASSWORD,
        init_options(),
    )
    .unwrap();
    repo.backup().path(&src).run().unwrap();
    let log = repo.audit_log(None);
    let first = log
        .append(&log.heads().unwrap(), &AuditRecord::new("test"))
        .unwrap();

    let calls = Arc::new(Mutex::new(Vec::new()));
    let repo = Repository::open(
        Walks {
            inner: LocalBackend::open(&repo_dir),
            log: Arc::clone(&calls),
        },
        PASSWORD,
        OpenOptions {
            cache_dir: Some(cache),
            defer_index: true,
            ..Default::default()
        },
    )
    .unwrap();
    let trail = repo.audit_log(None);
    repo.anchor_to(&trail);
    calls.lock().unwrap().clear();
    let out = repo.backup().path(&src).run().unwrap().snapshot;
    assert_eq!(out.snapshot.summary.files_unmodified, 1);
    assert_eq!(
        *calls.lock().unwrap(),
        [
            "write lock",
            "walk index,mark,snapshot",
            "walk audit record,pack",
            "write snapshot",
        ],
        "a listing alone, or a walk out of order"
    );
    // The heads came from the second walk: the snapshot anchors them, and
    // the command's record follows them without listing again.
    let anchor = out
        .snapshot
        .metadata
        .iter()
        .find(|(k, _)| k == repo_core::ANCHOR_KEY)
        .map(|(_, v)| v.clone());
    assert_eq!(anchor, Some(first.clone()));
    calls.lock().unwrap().clear();
    assert_eq!(trail.heads_once().unwrap().names(), [first]);
    assert!(
        calls.lock().unwrap().is_empty(),
        "{:?}",
        calls.lock().unwrap()
    );

    // Without a parent to find, the first walk leaves the snapshots out;
    // without a trail to anchor, the second is the packs alone.
    let repo = Repository::open(
        Walks {
            inner: LocalBackend::open(&repo_dir),
            log: Arc::clone(&calls),
        },
        PASSWORD,
        OpenOptions {
            defer_index: true,
            ..Default::default()
        },
    )
    .unwrap();
    calls.lock().unwrap().clear();
    repo.backup()
        .parent(ParentChoice::None)
        .path(&src)
        .run()
        .unwrap();
    let got = calls.lock().unwrap().clone();
    let walks: Vec<&String> = got.iter().filter(|c| !c.starts_with("write")).collect();
    assert_eq!(walks, ["walk index,mark", "walk pack"]);
}
