//! The connection limit: [`Limited`] lets at most N pack transfers (reads
//! and writes of `data/` objects) run against the inner backend at once,
//! however many threads ask. Small requests (config, index, snapshots,
//! locks) are not held back, so a lock's heartbeat never waits behind a
//! slow pack upload.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};

use super::{Backend, BackendError, ObjectInfo, ObjectKind};

/// A counting semaphore whose size can change while in use.
#[derive(Debug)]
pub(crate) struct Slots {
    max: AtomicUsize,
    /// Transfers running, and threads waiting for a slot.
    state: Mutex<(usize, usize)>,
    freed: Condvar,
}

impl Slots {
    /// `max` slots (at least one).
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max: AtomicUsize::new(max.max(1)),
            state: Mutex::new((0, 0)),
            freed: Condvar::new(),
        }
    }

    /// How many transfers may run at once.
    pub(crate) fn max(&self) -> usize {
        self.max.load(Relaxed)
    }

    /// Changes the limit; transfers already running finish.
    pub(crate) fn set_max(&self, max: usize) {
        self.max.store(max.max(1), Relaxed);
        self.freed.notify_all();
    }

    /// Runs `f` in a slot, waiting for one first.
    fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            while st.0 >= self.max() {
                st.1 += 1;
                st = self.freed.wait(st).unwrap_or_else(|e| e.into_inner());
                st.1 -= 1;
            }
            st.0 += 1;
        }
        // Released on unwind too, so a panicking transfer frees its slot.
        struct Release<'a>(&'a Slots);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                let mut st = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
                st.0 -= 1;
                // A wake-up is a system call: none when no one waits (local
                // storage, where transfers rarely queue).
                if st.1 > 0 {
                    self.0.freed.notify_one();
                }
            }
        }
        let _release = Release(self);
        f()
    }
}

/// Passes every call to `inner`; pack reads and writes take a slot of the
/// shared [`Slots`] first.
#[derive(Debug)]
pub(crate) struct Limited<B> {
    inner: B,
    slots: Arc<Slots>,
}

impl<B> Limited<B> {
    pub(crate) fn new(inner: B, slots: Arc<Slots>) -> Self {
        Self { inner, slots }
    }

    fn transfer<T>(&self, kind: ObjectKind, f: impl FnOnce(&B) -> T) -> T {
        if kind == ObjectKind::Pack {
            self.slots.run(|| f(&self.inner))
        } else {
            f(&self.inner)
        }
    }
}

impl<B: Backend> Backend for Limited<B> {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
    fn wire_requests(&self) -> Option<super::RequestStats> {
        self.inner.wire_requests()
    }
    fn read(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>, BackendError> {
        self.transfer(kind, |b| b.read(kind, name))
    }
    fn read_into(
        &self,
        kind: ObjectKind,
        name: &str,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        self.transfer(kind, |b| b.read_into(kind, name, buf))
    }
    fn read_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, BackendError> {
        self.transfer(kind, |b| b.read_range(kind, name, offset, len))
    }
    fn read_range_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        self.transfer(kind, |b| b.read_range_into(kind, name, offset, len, buf))
    }
    fn read_span_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        self.transfer(kind, |b| b.read_span_into(kind, name, offset, len, buf))
    }
    fn size(&self, kind: ObjectKind, name: &str) -> Result<u64, BackendError> {
        self.inner.size(kind, name)
    }
    fn stat(&self, kind: ObjectKind, name: &str) -> Result<ObjectInfo, BackendError> {
        self.inner.stat(kind, name)
    }
    fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        self.transfer(kind, |b| b.write(kind, name, data))
    }
    fn write_owned(&self, kind: ObjectKind, name: &str, data: Vec<u8>) -> Result<(), BackendError> {
        self.transfer(kind, |b| b.write_owned(kind, name, data))
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>, BackendError> {
        self.inner.list(kind)
    }
    fn list_many(&self, kinds: &[ObjectKind]) -> Result<Vec<Vec<ObjectInfo>>, BackendError> {
        self.inner.list_many(kinds)
    }
    fn replace(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        self.inner.replace(kind, name, data)
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<(), BackendError> {
        self.inner.delete(kind, name)
    }
}
