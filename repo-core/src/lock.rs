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
    state: Mutex<(String, Instant)>,
    started_ns: i64,
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
    /// Announces a backup. The object's content is the storage time of the
    /// first heartbeat, so refreshes keep the original start.
    pub fn start(backend: &'a dyn Backend) -> Result<Self, BackendError> {
        let name = format!("{HEARTBEAT_PREFIX}{}-0", random_hex(8));
        backend.write(ObjectKind::Lock, &name, b"")?;
        let started_ns = backend.stat(ObjectKind::Lock, &name)?.modified_ns;
        Ok(Self {
            backend,
            state: Mutex::new((name, Instant::now())),
            started_ns,
        })
    }

    /// Rewrites the heartbeat if it is due; cheap to call often.
    pub fn refresh(&self) -> Result<(), BackendError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.1.elapsed() < HEARTBEAT_REFRESH {
            return Ok(());
        }
        let base =
            st.0.rsplit_once('-')
                .map_or(st.0.as_str(), |(b, _)| b)
                .to_string();
        let name = format!("{base}-{}", random_hex(4));
        self.backend
            .write(ObjectKind::Lock, &name, &self.started_ns.to_le_bytes())?;
        let old = std::mem::replace(&mut st.0, name);
        st.1 = Instant::now();
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
        let _ = self.backend.delete(ObjectKind::Lock, &st.0);
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
}
