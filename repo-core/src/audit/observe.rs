//! A backend decorator that tallies the objects a command writes and
//! deletes, by kind, for its audit record (SPEC §31.1).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::backend::{Backend, BackendError, ObjectInfo, ObjectKind, RequestStats};

/// Objects created and deleted so far, by kind, and the snapshots among them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectTally {
    /// Objects written, by kind name (`snapshot`, `pack`, …).
    pub created: BTreeMap<String, u64>,
    /// Objects deleted, by kind name.
    pub deleted: BTreeMap<String, u64>,
    /// Names of the snapshots written.
    pub snapshots_created: Vec<String>,
    /// Names of the snapshots deleted.
    pub snapshots_deleted: Vec<String>,
}

/// Wraps a backend and tallies successful writes and deletes; locks and
/// the audit trail's own objects are not counted (every command makes and
/// removes locks; the record is written after the tally is taken).
#[derive(Debug)]
pub struct ObservedBackend<B> {
    inner: B,
    tally: Arc<Mutex<ObjectTally>>,
}

impl<B: Backend> ObservedBackend<B> {
    /// The decorator, and a handle to read its tally later.
    pub fn new(inner: B) -> (Self, Arc<Mutex<ObjectTally>>) {
        let tally = Arc::new(Mutex::new(ObjectTally::default()));
        (
            Self {
                inner,
                tally: Arc::clone(&tally),
            },
            tally,
        )
    }

    fn note(&self, kind: ObjectKind, name: &str, created: bool) {
        if matches!(kind, ObjectKind::Lock | ObjectKind::Audit) {
            return;
        }
        let mut guard = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        let t = &mut *guard;
        let (map, snaps) = if created {
            (&mut t.created, &mut t.snapshots_created)
        } else {
            (&mut t.deleted, &mut t.snapshots_deleted)
        };
        *map.entry(kind.to_string()).or_default() += 1;
        if kind == ObjectKind::Snapshot {
            snaps.push(name.to_string());
        }
    }
}

impl<B: Backend> Backend for ObservedBackend<B> {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
    fn wire_requests(&self) -> Option<RequestStats> {
        self.inner.wire_requests()
    }
    fn read(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>, BackendError> {
        self.inner.read(kind, name)
    }
    fn read_into(
        &self,
        kind: ObjectKind,
        name: &str,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        self.inner.read_into(kind, name, buf)
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
    fn read_range_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        self.inner.read_range_into(kind, name, offset, len, buf)
    }
    fn read_span_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        self.inner.read_span_into(kind, name, offset, len, buf)
    }
    fn size(&self, kind: ObjectKind, name: &str) -> Result<u64, BackendError> {
        self.inner.size(kind, name)
    }
    fn stat(&self, kind: ObjectKind, name: &str) -> Result<ObjectInfo, BackendError> {
        self.inner.stat(kind, name)
    }
    fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        self.inner.write(kind, name, data)?;
        self.note(kind, name, true);
        Ok(())
    }
    fn write_owned(&self, kind: ObjectKind, name: &str, data: Vec<u8>) -> Result<(), BackendError> {
        self.inner.write_owned(kind, name, data)?;
        self.note(kind, name, true);
        Ok(())
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>, BackendError> {
        self.inner.list(kind)
    }
    fn list_many(&self, kinds: &[ObjectKind]) -> Result<Vec<Vec<ObjectInfo>>, BackendError> {
        self.inner.list_many(kinds)
    }
    fn replace(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        self.inner.replace(kind, name, data)?;
        self.note(kind, name, true);
        Ok(())
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<(), BackendError> {
        self.inner.delete(kind, name)?;
        self.note(kind, name, false);
        Ok(())
    }
}
