//! Opening a repository with one request for its `config` instead of two:
//! the command reads the config to learn that the location holds a
//! repository (before any password is asked for), and the library's open
//! gets those bytes instead of reading them again.

use std::sync::Mutex;

use repo_core::{Backend, BackendError, ObjectInfo, ObjectKind};

/// Reads the `config` of `backend`: `Ok(None)` when the location holds no
/// repository. A failed read is told apart the way a listing tells it (a
/// missing bucket is an error, an empty prefix is no repository), so the
/// errors are those of a look before the read; only the failure path pays
/// the extra request.
pub fn read_config(backend: &dyn Backend) -> Result<Option<Vec<u8>>, BackendError> {
    match backend.read(ObjectKind::Config, "config") {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) => match backend.list(ObjectKind::Config)? {
            found if found.is_empty() => Ok(None),
            _ => Err(e),
        },
    }
}

/// A backend whose first read of `config` is answered with bytes read
/// already; every other call, and any later read of the config, goes to
/// the storage.
#[derive(Debug)]
pub struct Primed<B> {
    inner: B,
    config: Mutex<Option<Vec<u8>>>,
}

impl<B: Backend> Primed<B> {
    pub fn new(inner: B, config: Vec<u8>) -> Self {
        Self {
            inner,
            config: Mutex::new(Some(config)),
        }
    }

    fn take(&self, kind: ObjectKind) -> Option<Vec<u8>> {
        if kind != ObjectKind::Config {
            return None;
        }
        self.config.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// A write of the config makes the bytes held stale.
    fn forget(&self, kind: ObjectKind) {
        let _ = self.take(kind);
    }
}

impl<B: Backend> Backend for Primed<B> {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
    fn wire_requests(&self) -> Option<repo_core::RequestStats> {
        self.inner.wire_requests()
    }
    fn read(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>, BackendError> {
        match self.take(kind) {
            Some(bytes) => Ok(bytes),
            None => self.inner.read(kind, name),
        }
    }
    fn read_into(
        &self,
        kind: ObjectKind,
        name: &str,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        match self.take(kind) {
            Some(bytes) => {
                *buf = bytes;
                Ok(())
            }
            None => self.inner.read_into(kind, name, buf),
        }
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
        self.forget(kind);
        self.inner.write(kind, name, data)
    }
    fn write_owned(&self, kind: ObjectKind, name: &str, data: Vec<u8>) -> Result<(), BackendError> {
        self.forget(kind);
        self.inner.write_owned(kind, name, data)
    }
    fn replace(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        self.forget(kind);
        self.inner.replace(kind, name, data)
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>, BackendError> {
        self.inner.list(kind)
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<(), BackendError> {
        self.forget(kind);
        self.inner.delete(kind, name)
    }
}
