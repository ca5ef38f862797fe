//! [`Hooked`]: a backend that passes every call through to another and
//! lets a test look at each call first (count it, fail it, act as another
//! client) or act after it (between a listing and the reads that follow).
//!
//! For planned I/O faults and crashes use repo-core's `FaultyBackend`
//! (feature `fault-injection`); this is for hand-written races.

use std::fmt;
use std::sync::Arc;

use repo_core::{Backend, BackendError, ObjectInfo, ObjectKind};

/// One backend call, as a hook sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call<'a> {
    /// `read` or `read_into`.
    Read(ObjectKind, &'a str),
    /// `read_range` or `read_range_into`: offset and length.
    ReadRange(ObjectKind, &'a str, u64, u32),
    /// `size`.
    Size(ObjectKind, &'a str),
    /// `stat`.
    Stat(ObjectKind, &'a str),
    /// `write`: the object's length.
    Write(ObjectKind, &'a str, usize),
    /// `replace`: the object's length.
    Replace(ObjectKind, &'a str, usize),
    /// `list`.
    List(ObjectKind),
    /// `list_many`: the kinds of one walk. The hooks then see a `List`
    /// of each kind, as the walk lists them one by one.
    Walk(&'a [ObjectKind]),
    /// `delete`.
    Delete(ObjectKind, &'a str),
}

type Before = dyn Fn(&Call<'_>) -> Result<(), BackendError> + Send + Sync;
type After = dyn Fn(&Call<'_>) + Send + Sync;

/// Passes every call to `inner`, calling `before` first (an error it
/// returns is the call's result, and `inner` is not called) and `after`
/// once `inner` succeeded. Clones share the hooks.
#[derive(Clone)]
pub struct Hooked<B> {
    inner: B,
    before: Arc<Before>,
    after: Arc<After>,
    remote: bool,
}

impl<B: Backend> Hooked<B> {
    /// A pass-through with no hooks yet.
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            before: Arc::new(|_| Ok(())),
            after: Arc::new(|_| ()),
            remote: false,
        }
    }

    /// Says it is remote storage ([`Backend::is_remote`]), so the engine
    /// runs as many requests at once as it would over a network.
    pub fn remote(mut self) -> Self {
        self.remote = true;
        self
    }

    /// Runs `f` before each call.
    pub fn before(
        mut self,
        f: impl Fn(&Call<'_>) -> Result<(), BackendError> + Send + Sync + 'static,
    ) -> Self {
        self.before = Arc::new(f);
        self
    }

    /// Runs `f` after each call that succeeded.
    pub fn after(mut self, f: impl Fn(&Call<'_>) + Send + Sync + 'static) -> Self {
        self.after = Arc::new(f);
        self
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    fn call<T>(
        &self,
        call: Call<'_>,
        op: impl FnOnce(&B) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        (self.before)(&call)?;
        let out = op(&self.inner)?;
        (self.after)(&call);
        Ok(out)
    }
}

impl<B: fmt::Debug> fmt::Debug for Hooked<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooked")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Backend for Hooked<B> {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn is_remote(&self) -> bool {
        self.remote || self.inner.is_remote()
    }
    fn read(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>, BackendError> {
        self.call(Call::Read(kind, name), |b| b.read(kind, name))
    }
    fn read_into(
        &self,
        kind: ObjectKind,
        name: &str,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        self.call(Call::Read(kind, name), |b| b.read_into(kind, name, buf))
    }
    fn read_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, BackendError> {
        self.call(Call::ReadRange(kind, name, offset, len), |b| {
            b.read_range(kind, name, offset, len)
        })
    }
    fn read_range_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        self.call(Call::ReadRange(kind, name, offset, len), |b| {
            b.read_range_into(kind, name, offset, len, buf)
        })
    }
    fn size(&self, kind: ObjectKind, name: &str) -> Result<u64, BackendError> {
        self.call(Call::Size(kind, name), |b| b.size(kind, name))
    }
    fn stat(&self, kind: ObjectKind, name: &str) -> Result<ObjectInfo, BackendError> {
        self.call(Call::Stat(kind, name), |b| b.stat(kind, name))
    }
    fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        self.call(Call::Write(kind, name, data.len()), |b| {
            b.write(kind, name, data)
        })
    }
    fn replace(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        self.call(Call::Replace(kind, name, data.len()), |b| {
            b.replace(kind, name, data)
        })
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>, BackendError> {
        self.call(Call::List(kind), |b| b.list(kind))
    }
    fn list_many(&self, kinds: &[ObjectKind]) -> Result<Vec<Vec<ObjectInfo>>, BackendError> {
        // Kind by kind through `list`: a hook that fails or counts the
        // listing of one kind sees it inside a walk too.
        self.call(Call::Walk(kinds), |_| {
            kinds.iter().map(|&k| self.list(k)).collect()
        })
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<(), BackendError> {
        self.call(Call::Delete(kind, name), |b| b.delete(kind, name))
    }
}
