//! Request statistics: [`Counted`] passes every call through to another
//! backend and counts it by kind, with the bytes sent and received, so a
//! command can say what it cost on a network (`--json`'s `requests`). A
//! backend whose calls are not one request each (S3 reads ahead, looks
//! before some writes) counts its HTTP requests itself, and that count is
//! reported instead ([`Backend::wire_requests`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::{Backend, BackendError, ObjectInfo, ObjectKind};

/// Requests made to the storage so far, by kind, and the bytes moved.
/// Failed requests count too: each one went to the storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestStats {
    /// Whole-object reads.
    pub read: u64,
    /// Ranged reads (one blob, or a pack's header).
    pub read_range: u64,
    /// Object writes.
    pub write: u64,
    /// Listings (one per call, however the backend pages it).
    pub list: u64,
    /// Size and time look-ups of one object.
    pub stat: u64,
    /// Deletions.
    pub delete: u64,
    /// Bytes of objects written.
    pub bytes_sent: u64,
    /// Bytes of objects and ranges read.
    pub bytes_received: u64,
}

impl RequestStats {
    /// Requests of every kind together.
    pub fn total(&self) -> u64 {
        self.read + self.read_range + self.write + self.list + self.stat + self.delete
    }

    /// What was counted after `earlier` (a snapshot of the same counters).
    pub fn since(&self, earlier: &RequestStats) -> RequestStats {
        RequestStats {
            read: self.read.saturating_sub(earlier.read),
            read_range: self.read_range.saturating_sub(earlier.read_range),
            write: self.write.saturating_sub(earlier.write),
            list: self.list.saturating_sub(earlier.list),
            stat: self.stat.saturating_sub(earlier.stat),
            delete: self.delete.saturating_sub(earlier.delete),
            bytes_sent: self.bytes_sent.saturating_sub(earlier.bytes_sent),
            bytes_received: self.bytes_received.saturating_sub(earlier.bytes_received),
        }
    }
}

/// One kind of request, for a backend that counts its own (see
/// [`Backend::wire_requests`]).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
pub(crate) enum Request {
    Read,
    ReadRange,
    Write,
    List,
    Stat,
    Delete,
}

/// The live counters behind [`RequestStats`], shared by a [`Counted`]
/// backend and whoever reports on it.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    read: AtomicU64,
    read_range: AtomicU64,
    write: AtomicU64,
    list: AtomicU64,
    stat: AtomicU64,
    delete: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
}

impl Counters {
    /// What a repository on `backend` (whose calls these counters counted)
    /// asked of the storage: the backend's own count of the requests that
    /// went over the wire where it keeps one (all of them, from the
    /// backend's opening: a command's check that the location holds a
    /// repository included), else the calls.
    pub(crate) fn report(&self, backend: &dyn Backend) -> RequestStats {
        backend.wire_requests().unwrap_or_else(|| self.snapshot())
    }

    /// Counts one request that sent `sent` and received `received` bytes.
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    pub(crate) fn record(&self, kind: Request, sent: usize, received: usize) {
        let n = match kind {
            Request::Read => &self.read,
            Request::ReadRange => &self.read_range,
            Request::Write => &self.write,
            Request::List => &self.list,
            Request::Stat => &self.stat,
            Request::Delete => &self.delete,
        };
        n.fetch_add(1, Relaxed);
        self.bytes_sent.fetch_add(sent as u64, Relaxed);
        self.bytes_received.fetch_add(received as u64, Relaxed);
    }

    /// The counts so far.
    pub(crate) fn snapshot(&self) -> RequestStats {
        RequestStats {
            read: self.read.load(Relaxed),
            read_range: self.read_range.load(Relaxed),
            write: self.write.load(Relaxed),
            list: self.list.load(Relaxed),
            stat: self.stat.load(Relaxed),
            delete: self.delete.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
        }
    }
}

/// Counts every call to `inner` in shared [`Counters`]. It forwards each
/// method, the `_into` variants too, so the inner backend's own fast paths
/// stay in use.
#[derive(Debug)]
pub(crate) struct Counted<B> {
    inner: B,
    counters: Arc<Counters>,
}

impl<B> Counted<B> {
    pub(crate) fn new(inner: B, counters: Arc<Counters>) -> Self {
        Self { inner, counters }
    }

    fn received(&self, n: usize) {
        self.counters.bytes_received.fetch_add(n as u64, Relaxed);
    }
}

impl<B: Backend> Backend for Counted<B> {
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
        self.counters.read.fetch_add(1, Relaxed);
        let out = self.inner.read(kind, name)?;
        self.received(out.len());
        Ok(out)
    }
    fn read_into(
        &self,
        kind: ObjectKind,
        name: &str,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        self.counters.read.fetch_add(1, Relaxed);
        self.inner.read_into(kind, name, buf)?;
        self.received(buf.len());
        Ok(())
    }
    fn read_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, BackendError> {
        self.counters.read_range.fetch_add(1, Relaxed);
        let out = self.inner.read_range(kind, name, offset, len)?;
        self.received(out.len());
        Ok(out)
    }
    fn read_range_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        self.counters.read_range.fetch_add(1, Relaxed);
        self.inner.read_range_into(kind, name, offset, len, buf)?;
        self.received(buf.len());
        Ok(())
    }
    fn read_span_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        self.counters.read_range.fetch_add(1, Relaxed);
        self.inner.read_span_into(kind, name, offset, len, buf)?;
        self.received(buf.len());
        Ok(())
    }
    fn size(&self, kind: ObjectKind, name: &str) -> Result<u64, BackendError> {
        self.counters.stat.fetch_add(1, Relaxed);
        self.inner.size(kind, name)
    }
    fn stat(&self, kind: ObjectKind, name: &str) -> Result<ObjectInfo, BackendError> {
        self.counters.stat.fetch_add(1, Relaxed);
        self.inner.stat(kind, name)
    }
    fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        self.counters.write.fetch_add(1, Relaxed);
        self.counters
            .bytes_sent
            .fetch_add(data.len() as u64, Relaxed);
        self.inner.write(kind, name, data)
    }
    fn write_owned(&self, kind: ObjectKind, name: &str, data: Vec<u8>) -> Result<(), BackendError> {
        self.counters.write.fetch_add(1, Relaxed);
        self.counters
            .bytes_sent
            .fetch_add(data.len() as u64, Relaxed);
        self.inner.write_owned(kind, name, data)
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>, BackendError> {
        self.counters.list.fetch_add(1, Relaxed);
        self.inner.list(kind)
    }
    /// One listing per kind, as the default lists them; a backend that
    /// walks them at once counts its own requests ([`Backend::wire_requests`]).
    fn list_many(&self, kinds: &[ObjectKind]) -> Result<Vec<Vec<ObjectInfo>>, BackendError> {
        self.counters.list.fetch_add(kinds.len() as u64, Relaxed);
        self.inner.list_many(kinds)
    }
    fn replace(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        self.counters.write.fetch_add(1, Relaxed);
        self.counters
            .bytes_sent
            .fetch_add(data.len() as u64, Relaxed);
        self.inner.replace(kind, name, data)
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<(), BackendError> {
        self.counters.delete.fetch_add(1, Relaxed);
        self.inner.delete(kind, name)
    }
}
