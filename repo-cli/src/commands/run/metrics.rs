//! The Prometheus textfile-collector metrics of a run.

use std::time::SystemTime;

use super::report::{CopyResult, Outcome, Report, SourceResult};
use super::state::{State, unix};
use crate::plan::Loaded;

/// A Prometheus label value.
pub(super) fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The textfile-collector metrics for this run.
pub(super) fn metrics(loaded: &Loaded, r: &Report, state: &State, started: SystemTime) -> String {
    let plan = label(&loaded.name);
    let mut m = String::new();
    let mut family = |name: &str, help: &str, rows: Vec<(String, f64)>| {
        if rows.is_empty() {
            return;
        }
        m.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (labels, v) in rows {
            m.push_str(&format!("{name}{{{labels}}} {v}\n"));
        }
    };
    let src_labels = |s: &SourceResult| {
        format!(
            "plan=\"{plan}\",source=\"{}\",repository=\"{}\"",
            label(&s.source),
            label(&s.repository)
        )
    };
    let rows = |f: &dyn Fn(&SourceResult) -> Option<f64>| {
        r.sources
            .iter()
            .filter_map(|s| f(s).map(|v| (src_labels(s), v)))
            .collect::<Vec<_>>()
    };
    family(
        "cairn_source_success",
        "1 if the source's last backup into the repository succeeded, else 0.",
        rows(&|s| {
            Some(if s.status == Outcome::Failed {
                0.0
            } else {
                1.0
            })
        }),
    );
    // Every source of the plan in every repository, 0 when never saved: an
    // absent series would never trip `time() - x > 86400`, and a
    // `--source` run must not hide the others' age. In a copy destination
    // a source's success is its snapshots' arrival by a copy step.
    let mut last = Vec::new();
    for src in &loaded.plan.sources {
        for repo in &loaded.plan.repositories {
            let t = state
                .last_success
                .get(src.name())
                .and_then(|m| m.get(&repo.name))
                .map_or(0.0, |&t| t as f64);
            let labels = format!(
                "plan=\"{plan}\",source=\"{}\",repository=\"{}\"",
                label(src.name()),
                label(&repo.name)
            );
            last.push((labels, t));
        }
    }
    family(
        "cairn_source_last_success_timestamp_seconds",
        "Unix time of the source's last successful backup into the repository (0: never).",
        last,
    );
    family(
        "cairn_source_duration_seconds",
        "Duration of the source's last backup into the repository.",
        rows(&|s| Some(s.duration_s)),
    );
    family(
        "cairn_source_bytes_added",
        "Bytes of new data the source's last backup added to the repository.",
        rows(&|s| Some(s.bytes_added as f64)),
    );
    family(
        "cairn_source_verified",
        "1 if every snapshot of the source's last backup into the repository passed its verify, else 0 (sources with verify = true).",
        rows(&|s| s.verified.map(|ok| if ok { 1.0 } else { 0.0 })),
    );
    family(
        "cairn_source_verify_duration_seconds",
        "Duration of the verification of the source's last backup (for postgres-pitr: the pitr-verify restore and replay).",
        rows(&|s| s.verify_duration_s),
    );
    let pitr = |f: &dyn Fn(&crate::exporters::pg_base::PitrFacts) -> Option<f64>| {
        rows(&|s| s.pitr.as_ref().and_then(f))
    };
    family(
        "cairn_pitr_wal_newest_segment_timestamp_seconds",
        "Unix time the newest archived WAL segment of a postgres-pitr source's cluster was stored (its age is the data at risk).",
        pitr(&|p| p.wal.as_ref()?.newest_segment_unix),
    );
    family(
        "cairn_pitr_wal_bytes",
        "Stored bytes of the archived WAL of a postgres-pitr source's cluster.",
        pitr(&|p| p.wal.as_ref().map(|w| w.bytes as f64)),
    );
    family(
        "cairn_pitr_wal_files",
        "Archived WAL files of a postgres-pitr source's cluster.",
        pitr(&|p| p.wal.as_ref().map(|w| w.files as f64)),
    );
    family(
        "cairn_pitr_archive_failed_count",
        "Failed archive_command runs the server reports (pg_stat_archiver.failed_count).",
        pitr(&|p| p.archiver.as_ref().map(|a| a.failed_count as f64)),
    );
    family(
        "cairn_pitr_archive_last_failed_timestamp_seconds",
        "Unix time of the server's last failed archive_command (0: none since the statistics reset).",
        pitr(&|p| {
            p.archiver
                .as_ref()
                .map(|a| a.last_failed_unix.unwrap_or(0.0))
        }),
    );
    let repo_rows = |f: &dyn Fn(&str) -> Option<f64>| {
        r.repositories
            .iter()
            .filter_map(|x| {
                f(&x.repository).map(|v| {
                    (
                        format!("plan=\"{plan}\",repository=\"{}\"", label(&x.repository)),
                        v,
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    // Likewise 0 when never, for the steps the plan asks for.
    let (checks, drills) = (loaded.plan.check.is_some(), loaded.plan.drill.is_some());
    family(
        "cairn_check_last_success_timestamp_seconds",
        "Unix time of the repository's last successful check (0: never).",
        repo_rows(&|n| {
            let t = state.last_check.get(n).map(|&t| t as f64);
            if checks { t.or(Some(0.0)) } else { t }
        }),
    );
    family(
        "cairn_drill_last_success_timestamp_seconds",
        "Unix time of the repository's last successful restore drill (0: never).",
        repo_rows(&|n| {
            let t = state.last_drill.get(n).map(|&t| t as f64);
            if drills { t.or(Some(0.0)) } else { t }
        }),
    );
    let copy_labels = |from: &str, to: &str| {
        format!(
            "plan=\"{plan}\",from=\"{}\",to=\"{}\"",
            label(from),
            label(to)
        )
    };
    let copy_rows = |f: &dyn Fn(&CopyResult) -> Option<f64>| {
        r.copies
            .iter()
            .filter(|c| c.status != Outcome::Skipped)
            .filter_map(|c| f(c).map(|v| (copy_labels(&c.from, &c.to), v)))
            .collect::<Vec<_>>()
    };
    family(
        "cairn_copy_success",
        "1 if the copy step's last run succeeded, else 0 (absent when it had nothing to copy).",
        copy_rows(&|c| Some(if c.status == Outcome::Ok { 1.0 } else { 0.0 })),
    );
    // Every configured pair, 0 when never, as for the sources.
    family(
        "cairn_copy_last_success_timestamp_seconds",
        "Unix time of the copy step's last success (0: never).",
        loaded
            .plan
            .copies
            .iter()
            .map(|c| {
                let t = state
                    .last_copy
                    .get(&c.from)
                    .and_then(|m| m.get(&c.to))
                    .map_or(0.0, |&t| t as f64);
                (copy_labels(&c.from, &c.to), t)
            })
            .collect(),
    );
    family(
        "cairn_copy_snapshots_copied",
        "Snapshots the copy step's last run copied (not counting those already there).",
        copy_rows(&|c| (c.status == Outcome::Ok).then_some(c.snapshots_copied as f64)),
    );
    family(
        "cairn_copy_bytes_copied",
        "Plaintext bytes of the blobs the copy step's last run stored in the destination.",
        copy_rows(&|c| (c.status == Outcome::Ok).then_some(c.bytes_copied as f64)),
    );
    family(
        "cairn_copy_duration_seconds",
        "Duration of the copy step's last run.",
        copy_rows(&|c| Some(c.duration_s)),
    );
    family(
        "cairn_repository_stored_bytes",
        "Bytes of the repository's pack files after the run (absent when they could not be listed).",
        repo_rows(&|n| {
            r.repositories
                .iter()
                .find(|x| x.repository == n)
                .and_then(|x| x.inventory.stored_bytes)
                .map(|b| b as f64)
        }),
    );
    family(
        "cairn_repository_latest_snapshot_timestamp_seconds",
        "Unix time of the plan's newest snapshot in the repository (0: none; absent when the list could not be read).",
        repo_rows(&|n| {
            let x = r.repositories.iter().find(|x| x.repository == n)?;
            let inv = &x.inventory;
            inv.latest_snapshot_unix.or(inv.snapshots.map(|_| 0.0))
        }),
    );
    let run = |v: f64| vec![(format!("plan=\"{plan}\""), v)];
    family(
        "cairn_run_timestamp_seconds",
        "Unix time the plan's last run started.",
        run(unix(started)),
    );
    family(
        "cairn_run_duration_seconds",
        "Duration of the plan's last run.",
        run(r.duration_s),
    );
    family(
        "cairn_run_success",
        "1 if every step of the plan's last run succeeded, else 0.",
        run(if r.failed.is_empty() { 1.0 } else { 0.0 }),
    );
    m
}
