//! Heartbeats of running backups and the storage's clock (SPEC §22).
//!
//! cairn takes no lock that could block a backup. A backup announces itself
//! with a heartbeat object in `locks/`, rewritten every few minutes and
//! deleted when it ends; a prune postpones deleting packs it condemned while
//! a heartbeat that began before the condemnation is alive. A crashed
//! backup's heartbeat simply expires. All times are the storage's own
//! (object modification times), so client clocks may be wrong.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::backend::{Backend, BackendError, ObjectKind};

/// A heartbeat older than this (by the storage's clock) is dead.
pub const HEARTBEAT_EXPIRY: Duration = Duration::from_secs(30 * 60);
/// How often a running backup rewrites its heartbeat.
pub const HEARTBEAT_REFRESH: Duration = Duration::from_secs(5 * 60);
/// A heartbeat or mark dated further than this after the storage's now is
/// not trusted (SPEC §22): the storage stamps the times it writes, so only
/// tampering, or a clock stepped back, puts one there. Unbounded, one such
/// file would hold prune sweeps back forever.
pub const MAX_FUTURE: Duration = HEARTBEAT_EXPIRY;
/// Name prefix of backup heartbeats in `locks/`.
pub const HEARTBEAT_PREFIX: &str = "backup-";

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// The storage's current time: writes a probe object, reads its
/// modification time, deletes it.
pub fn storage_now(backend: &dyn Backend) -> Result<i64, BackendError> {
    let name = format!("clock-{}", random_hex(8));
    backend.write(ObjectKind::Lock, &name, b"")?;
    let t = backend.stat(ObjectKind::Lock, &name)?.modified_ns;
    backend.delete(ObjectKind::Lock, &name)?;
    Ok(t)
}

/// One running backup's heartbeat. Dropping it removes it.
pub struct Heartbeat<'a> {
    backend: &'a dyn Backend,
    state: Mutex<Beat>,
}

struct Beat {
    /// The current heartbeat's name and when it was written (our clock,
    /// only to know when the next rewrite is due).
    name: String,
    written: Instant,
    /// The first heartbeat's modification time, read at the first rewrite:
    /// a backup that ends sooner never needs it, and so saves a request.
    started_ns: Option<i64>,
}

/// A heartbeat as seen by prune.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatInfo {
    /// Its object name in `locks/`.
    pub name: String,
    /// When the backup began (storage clock; never after `refreshed_ns`).
    pub started_ns: i64,
    /// When the heartbeat was last rewritten (storage clock).
    pub refreshed_ns: i64,
}

impl HeartbeatInfo {
    /// True if it is dated more than [`MAX_FUTURE`] after `now`: ignored.
    pub fn is_future(&self, now_ns: i64) -> bool {
        is_future(self.refreshed_ns, now_ns)
    }

    /// True if its backup may still be running at storage time `now`.
    pub fn is_alive(&self, now_ns: i64) -> bool {
        !self.is_future(now_ns)
            && Duration::from_nanos(now_ns.saturating_sub(self.refreshed_ns).max(0) as u64)
                < HEARTBEAT_EXPIRY
    }
}

/// True if storage time `t` is more than [`MAX_FUTURE`] after `now`.
pub fn is_future(t_ns: i64, now_ns: i64) -> bool {
    t_ns.saturating_sub(now_ns) > MAX_FUTURE.as_nanos() as i64
}

impl<'a> Heartbeat<'a> {
    /// Announces a backup: writes its first (empty) heartbeat, whose
    /// modification time is the backup's start.
    pub fn start(backend: &'a dyn Backend) -> Result<Self, BackendError> {
        let name = format!("{HEARTBEAT_PREFIX}{}-0", random_hex(8));
        backend.write(ObjectKind::Lock, &name, b"")?;
        Ok(Self {
            backend,
            state: Mutex::new(Beat {
                name,
                written: Instant::now(),
                started_ns: None,
            }),
        })
    }

    /// Rewrites the heartbeat if it is due; cheap to call often. The new
    /// heartbeat carries the first one's modification time, so refreshes
    /// keep the original start.
    pub fn refresh(&self) -> Result<(), BackendError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.written.elapsed() < HEARTBEAT_REFRESH {
            return Ok(());
        }
        let started_ns = match st.started_ns {
            Some(t) => t,
            // The first heartbeat is still there (we delete it only after
            // writing its successor): its time is the start. Gone anyway
            // (deleted by hand): the earliest start there is, so a prune
            // waits for this backup rather than not at all.
            None => match self.backend.stat(ObjectKind::Lock, &st.name) {
                Ok(o) => o.modified_ns,
                Err(e) if e.is_not_found() => 0,
                Err(e) => return Err(e),
            },
        };
        st.started_ns = Some(started_ns);
        let base = st
            .name
            .rsplit_once('-')
            .map_or(st.name.as_str(), |(b, _)| b)
            .to_string();
        let name = format!("{base}-{}", random_hex(4));
        self.backend
            .write(ObjectKind::Lock, &name, &started_ns.to_le_bytes())?;
        let old = std::mem::replace(&mut st.name, name);
        st.written = Instant::now();
        let _ = self.backend.delete(ObjectKind::Lock, &old);
        Ok(())
    }

    /// Refreshes every [`HEARTBEAT_REFRESH`] until `stop` is closed.
    pub fn keep_alive(&self, stop: std::sync::mpsc::Receiver<()>) {
        loop {
            match stop.recv_timeout(HEARTBEAT_REFRESH) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    // A failed refresh is retried next time; the backup goes on.
                    let _ = self.refresh();
                }
                _ => return,
            }
        }
    }

    /// Lists the heartbeats of running (or crashed, not yet expired) backups.
    pub fn list(backend: &dyn Backend) -> Result<Vec<HeartbeatInfo>, BackendError> {
        let mut out = Vec::new();
        for o in backend.list(ObjectKind::Lock)? {
            if !o.name.starts_with(HEARTBEAT_PREFIX) {
                continue;
            }
            // A refreshed heartbeat carries its start; a first one is its own start.
            let started_ns = if o.size == 8 {
                match backend.read(ObjectKind::Lock, &o.name) {
                    Ok(b) => i64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e),
                }
            } else {
                o.modified_ns
            };
            out.push(HeartbeatInfo {
                // A backup cannot start after its heartbeat was written.
                started_ns: started_ns.min(o.modified_ns),
                refreshed_ns: o.modified_ns,
                name: o.name,
            });
        }
        Ok(out)
    }
}

impl Drop for Heartbeat<'_> {
    fn drop(&mut self) {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.backend.delete(ObjectKind::Lock, &st.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;

    #[test]
    fn heartbeat_lives_until_dropped() {
        let b = MemoryBackend::new();
        let now = storage_now(&b).unwrap();
        {
            let h = Heartbeat::start(&b).unwrap();
            let l = Heartbeat::list(&b).unwrap();
            assert_eq!(l.len(), 1);
            assert!(l[0].started_ns >= now);
            h.refresh().unwrap(); // not due: nothing changes
            assert_eq!(Heartbeat::list(&b).unwrap(), l);
        }
        assert!(Heartbeat::list(&b).unwrap().is_empty());
        assert!(
            b.list(ObjectKind::Lock).unwrap().is_empty(),
            "clock probe left behind"
        );
    }

    /// Makes the next refresh of `h` due.
    fn make_due(h: &Heartbeat<'_>) {
        let mut st = h.state.lock().unwrap();
        st.written = Instant::now()
            .checked_sub(HEARTBEAT_REFRESH)
            .expect("the clock is past the refresh interval");
    }

    /// Announcing a backup is one request (a write); the start time is
    /// read only when the heartbeat is first rewritten, and every rewrite
    /// carries the first heartbeat's time.
    #[test]
    fn the_start_is_read_only_when_a_refresh_needs_it() {
        let counters = std::sync::Arc::new(crate::backend::Counters::default());
        let b = crate::backend::Counted::new(MemoryBackend::new(), counters.clone());
        let h = Heartbeat::start(&b).unwrap();
        let s = counters.snapshot();
        assert_eq!((s.write, s.total()), (1, 1), "{s:?}");
        let first = Heartbeat::list(&b).unwrap();
        assert_eq!(first.len(), 1);
        let started = first[0].started_ns;

        std::thread::sleep(Duration::from_millis(5));
        make_due(&h);
        h.refresh().unwrap();
        let l = Heartbeat::list(&b).unwrap();
        assert_eq!(l.len(), 1, "the old heartbeat is deleted: {l:?}");
        assert_ne!(l[0].name, first[0].name);
        assert_eq!(l[0].started_ns, started, "{l:?}");
        assert!(l[0].refreshed_ns > started, "{l:?}");

        // The second rewrite reads nothing: the start is known.
        let before = counters.snapshot();
        make_due(&h);
        h.refresh().unwrap();
        let s = counters.snapshot().since(&before);
        assert_eq!((s.stat, s.write, s.delete), (0, 1, 1), "{s:?}");
        assert_eq!(Heartbeat::list(&b).unwrap()[0].started_ns, started);
    }

    /// A first heartbeat deleted under a running backup: the rewrite
    /// claims the earliest start there is, so a prune waits for it.
    #[test]
    fn a_vanished_first_heartbeat_means_the_earliest_start() {
        let b = MemoryBackend::new();
        let h = Heartbeat::start(&b).unwrap();
        let name = Heartbeat::list(&b).unwrap()[0].name.clone();
        b.delete(ObjectKind::Lock, &name).unwrap();
        make_due(&h);
        h.refresh().unwrap();
        let l = Heartbeat::list(&b).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].started_ns, 0, "{l:?}");
    }
}
