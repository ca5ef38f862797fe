//! What a plan remembers between runs (cadences), its lock, and the
//! atomic writes of every file it leaves behind.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::report::{CopyResult, Outcome};

/// The state file's name inside the state directory.
pub(super) const STATE_FILE: &str = "state.json";

/// Cadence bookkeeping, kept between runs in STATE_DIR/state.json. Times
/// are whole Unix seconds (integers survive JSON exactly; floats may not).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct State {
    /// source → repository → last successful backup.
    #[serde(default)]
    pub(super) last_success: BTreeMap<String, BTreeMap<String, i64>>,
    /// repository → last successful check.
    #[serde(default)]
    pub(super) last_check: BTreeMap<String, i64>,
    /// repository → last successful drill.
    #[serde(default)]
    pub(super) last_drill: BTreeMap<String, i64>,
    /// from → to → last successful copy step.
    #[serde(default)]
    pub(super) last_copy: BTreeMap<String, BTreeMap<String, i64>>,
    /// from → to → the copy step's last failure, if it has not succeeded
    /// since: its next run catches up.
    #[serde(default)]
    pub(super) copy_failed: BTreeMap<String, BTreeMap<String, i64>>,
}

impl State {
    /// Whether the copy step `from` → `to` must copy every snapshot of the
    /// plan rather than this run's: it never succeeded, or failed last.
    pub(super) fn copy_catch_up(&self, from: &str, to: &str) -> bool {
        let has = |m: &BTreeMap<String, BTreeMap<String, i64>>| {
            m.get(from).is_some_and(|t| t.contains_key(to))
        };
        !has(&self.last_copy) || has(&self.copy_failed)
    }

    /// Records a copy step's outcome at `now`: a failure makes the next run
    /// catch up; a success clears that, and counts as a success in `to` for
    /// every source whose snapshots made in this run arrived there.
    pub(super) fn record_copy(&mut self, r: &CopyResult, now: i64) {
        match r.status {
            Outcome::Failed => {
                self.copy_failed
                    .entry(r.from.clone())
                    .or_default()
                    .insert(r.to.clone(), now);
            }
            Outcome::Ok => {
                if let Some(m) = self.copy_failed.get_mut(&r.from) {
                    m.remove(&r.to);
                }
                self.copy_failed.retain(|_, m| !m.is_empty());
                self.last_copy
                    .entry(r.from.clone())
                    .or_default()
                    .insert(r.to.clone(), now);
                for s in &r.sources {
                    self.last_success
                        .entry(s.clone())
                        .or_default()
                        .insert(r.to.clone(), now);
                }
            }
            Outcome::Warning | Outcome::Skipped => {}
        }
    }
}

/// `None` when due now; else when it is next due (Unix seconds).
pub(super) fn due(last: Option<&i64>, every: Duration, now: i64) -> Option<i64> {
    let next = last?.saturating_add(i64::try_from(every.as_secs()).unwrap_or(i64::MAX));
    (next > now).then_some(next)
}

pub(super) fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Whole Unix seconds, for the state.
pub(super) fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .try_into()
        .unwrap_or(i64::MAX)
}

pub(super) fn unix_ns(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .try_into()
        .unwrap_or(i64::MAX)
}

/// Takes `STATE_DIR/lock` (flock, exclusive, not waiting).
pub(super) fn lock(state_dir: &Path, name: &str) -> Result<Flock<std::fs::File>> {
    let path = state_dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == Errno::EWOULDBLOCK {
            anyhow::Error::from(crate::contract::LockHeld(format!(
                "plan {name} is already running (another process holds {})",
                path.display()
            )))
        } else {
            anyhow::Error::from(e).context(format!("cannot lock {}", path.display()))
        }
    })
}

pub(super) fn load_state(path: &Path) -> Result<State> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| {
            format!(
                "damaged plan state {} (delete it to start over)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes `path` so a reader (the metrics collector, a hook) sees the old
/// or the new content, never half of it: a temporary file in the same
/// directory, synced, renamed over.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(d) = dir {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::Error::from(e).context(format!("cannot write {}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy step catches up until it succeeds, and again after a failure;
    /// only a success moves its sources' last success in the destination.
    #[test]
    fn copy_catch_up_follows_failures() {
        let result = |status: Outcome| CopyResult {
            status,
            sources: vec!["files".into()],
            ..CopyResult::pending("a", "b", false)
        };
        let mut st = State::default();
        assert!(st.copy_catch_up("a", "b"), "never succeeded");
        st.record_copy(&result(Outcome::Failed), 5);
        assert!(st.copy_catch_up("a", "b"));
        assert!(st.last_success.is_empty());
        st.record_copy(&result(Outcome::Ok), 10);
        assert!(!st.copy_catch_up("a", "b"));
        assert!(st.copy_failed.is_empty());
        assert_eq!(st.last_success["files"]["b"], 10);
        assert!(st.copy_catch_up("b", "a"), "another pair");
        st.record_copy(&result(Outcome::Skipped), 20);
        assert!(!st.copy_catch_up("a", "b"), "nothing to copy is no failure");
        st.record_copy(&result(Outcome::Failed), 30);
        assert!(st.copy_catch_up("a", "b"));
        assert_eq!(st.last_copy["a"]["b"], 10);
    }

    #[test]
    fn cadence() {
        let day = Duration::from_secs(86_400);
        assert_eq!(due(None, day, 100), None);
        assert_eq!(due(Some(&100), day, 200), Some(86_500));
        assert_eq!(due(Some(&100), day, 86_500), None);
    }
}
