//! Exporter verify results recorded in the repository (SPEC §32), so that
//! `cairn report` on any machine shows them.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use repo_core::{ExporterOutcome, Repository, SnapshotId};

use crate::output::Output;

/// When an exporter verify started.
pub(crate) struct Started {
    at: Instant,
    time_ns: i64,
}

impl Started {
    pub(crate) fn now() -> Self {
        let time_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Self {
            at: Instant::now(),
            time_ns,
        }
    }

    /// Stores the outcome of `command` (`redis verify`, …) on `snapshot`;
    /// failing to store it only warns: the verification itself stands.
    pub(crate) fn record(
        self,
        repo: &Repository,
        out: Output,
        command: &str,
        snapshot: SnapshotId,
        ok: bool,
        summary: String,
    ) {
        let outcome = ExporterOutcome {
            command: command.to_string(),
            snapshot,
            ok,
            summary,
        };
        let took = self.at.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        if let Err(e) = repo.record_exporter_verification(self.time_ns, took, outcome) {
            out.warn(format!(
                "the {command} result could not be recorded in the repository: {e}"
            ));
        }
    }
}
