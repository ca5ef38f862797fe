//! An in-memory backend for tests and benchmarks.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, RwLock};

use super::{Backend, BackendError, ObjectInfo, ObjectKind};

/// The store's own clock.
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

type Objects = BTreeMap<(ObjectKind, String), (Arc<Vec<u8>>, i64)>;

/// Keeps every object in a map; clones share the same storage.
#[derive(Debug, Default, Clone)]
pub struct MemoryBackend {
    objects: Arc<RwLock<Objects>>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn get(
        &self,
        kind: ObjectKind,
        name: &str,
        op: &'static str,
    ) -> Result<(Arc<Vec<u8>>, i64), BackendError> {
        self.objects
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(kind, name.to_string()))
            .cloned()
            .ok_or_else(|| BackendError::io(op, kind, name, io::ErrorKind::NotFound.into()))
    }

    /// Replaces an object's bytes: only for tests that simulate corruption.
    pub(crate) fn corrupt(&self, kind: ObjectKind, name: &str, data: Vec<u8>) {
        self.objects
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((kind, name.to_string()), (Arc::new(data), now_ns()));
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory:".into()
    }

    fn read(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>, BackendError> {
        Ok(self.get(kind, name, "read")?.0.as_ref().clone())
    }

    fn read_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, BackendError> {
        let (d, _) = self.get(kind, name, "read")?;
        let end = offset
            .checked_add(u64::from(len))
            .filter(|&e| e <= d.len() as u64);
        match end {
            Some(end) => Ok(d[offset as usize..end as usize].to_vec()),
            None => Err(BackendError::io(
                "read",
                kind,
                name,
                io::ErrorKind::UnexpectedEof.into(),
            )),
        }
    }

    fn size(&self, kind: ObjectKind, name: &str) -> Result<u64, BackendError> {
        Ok(self.get(kind, name, "stat")?.0.len() as u64)
    }

    fn stat(&self, kind: ObjectKind, name: &str) -> Result<ObjectInfo, BackendError> {
        let (d, modified_ns) = self.get(kind, name, "stat")?;
        Ok(ObjectInfo {
            name: name.to_string(),
            size: d.len() as u64,
            modified_ns,
        })
    }

    fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        self.objects
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry((kind, name.to_string()))
            .or_insert_with(|| (Arc::new(data.to_vec()), now_ns()));
        Ok(())
    }

    fn replace(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        if !super::local::valid_name(name) {
            return Err(BackendError::io(
                "replace",
                kind,
                name,
                io::Error::new(io::ErrorKind::InvalidInput, "invalid object name"),
            ));
        }
        self.objects
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                (kind, name.to_string()),
                (Arc::new(data.to_vec()), now_ns()),
            );
        Ok(())
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>, BackendError> {
        Ok(self
            .objects
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, n), (d, t))| ObjectInfo {
                name: n.clone(),
                size: d.len() as u64,
                modified_ns: *t,
            })
            .collect())
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<(), BackendError> {
        self.objects
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(kind, name.to_string()))
            .map(|_| ())
            .ok_or_else(|| BackendError::io("delete", kind, name, io::ErrorKind::NotFound.into()))
    }
}
