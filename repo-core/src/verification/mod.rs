//! Verification history stored in the repository (SPEC §32).
//!
//! `check`, `drill` and the exporters' verify commands each leave one
//! sealed record in `verify/`, naming *where* it ran: the storage location
//! (host and canonical path for a local directory, endpoint, bucket and
//! prefix for S3) and the host. The history so travels with the
//! repository: `report` on any machine shows it, and `check --max-age` on a
//! new machine skips packs verified at this location recently. A byte copy
//! elsewhere carries the records too, but they name the other location, so
//! the copy's packs are still due: a check proves the bytes it read, at the
//! place it read them, and nothing else.
//!
//! Records are history, never structure: nothing in them decides whether
//! data is intact, only which packs a `--max-age` check may skip. A record
//! that cannot be read is skipped with a warning. Per location, once more
//! than [`COMPACT_AFTER`] records accumulate, the next writer folds them
//! into one compacted record that supersedes them (`store`), so the history
//! a check reads stays small however many checks ran.

mod store;

use std::collections::{BTreeMap, HashMap};

use crate::error::Result;
use crate::id::{PackId, SnapshotId};
use crate::repository::{Repository, hostname, now_ns, username};

pub use store::COMPACT_AFTER;

/// At most this many error messages are kept in a check record (the count
/// is always exact): one lost pack must not make a record of megabytes.
pub const MAX_ERROR_MESSAGES: usize = 20;

/// One verification result as stored in `verify/` (SPEC §32).
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode, serde::Serialize)]
pub struct VerificationRecord {
    /// When it started, nanoseconds since the Unix epoch (the client's clock).
    pub time_ns: i64,
    /// How long it ran.
    pub duration_ns: u64,
    /// Where the repository was read ([`Repository::verification_location`]).
    pub location: String,
    /// The machine it ran on.
    pub host: String,
    /// The user it ran as.
    pub username: String,
    /// `cairn <version>`.
    pub program: String,
    /// What ran, and its outcome.
    pub outcome: VerificationOutcome,
    /// Names of the records this one replaces (a compacted record).
    pub supersedes: Vec<String>,
}

/// What a record reports.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VerificationOutcome {
    /// A `check`.
    Check(CheckOutcome),
    /// A restore drill.
    Drill(DrillOutcome),
    /// An exporter's verify (`pg verify`, `redis verify`, …).
    Exporter(ExporterOutcome),
    /// Older records of one location folded into one.
    Compacted(CompactedHistory),
}

/// A check's scope and findings.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode, serde::Serialize)]
pub struct CheckOutcome {
    /// The data selection (`none`, `all`, `n/m`, `x%` or a size).
    pub read_data: String,
    /// `--max-age` in seconds, if given.
    pub max_age_s: Option<u64>,
    /// Packs named by the index.
    pub packs: u64,
    /// Packs selected for reading.
    pub packs_selected: u64,
    /// Packs read and checked.
    pub packs_checked: u64,
    /// Packs whose data was read and verified intact. Emptied when the
    /// record is folded into a compacted one (their times move there).
    /// Not in JSON: a full check of a large repository lists 100,000s.
    #[serde(skip_serializing)]
    pub verified: Vec<PackId>,
    /// Errors found.
    pub errors: u64,
    /// Warnings found.
    pub warnings: u64,
    /// The first 20 error messages (`MAX_ERROR_MESSAGES`).
    pub error_messages: Vec<String>,
}

/// A restore drill's outcome.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode, serde::Serialize)]
pub struct DrillOutcome {
    /// The snapshot drilled.
    pub snapshot: SnapshotId,
    /// Files restored and compared.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files that did not restore identically.
    pub failures: u64,
    /// True when every file restored identically.
    pub ok: bool,
}

/// An exporter verify's outcome.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode, serde::Serialize)]
pub struct ExporterOutcome {
    /// The command: `pg verify`, `pg pitr-verify`, `redis verify`, `qdrant verify`.
    pub command: String,
    /// The snapshot verified.
    pub snapshot: SnapshotId,
    /// True when the restored data matched what was recorded.
    pub ok: bool,
    /// One line for people (what was compared, mismatches).
    pub summary: String,
}

/// Older records of one location, folded.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode, serde::Serialize)]
pub struct CompactedHistory {
    /// The newest verification time of every pack the folded records
    /// verified, sorted by pack id.
    #[serde(skip_serializing)]
    pub pack_times: Vec<(PackId, i64)>,
    /// The newest folded record of each kind (check, data check, drill,
    /// each exporter command), with their
    /// `verified` lists emptied.
    pub latest: Vec<VerificationRecord>,
}

/// What a record counts as for "the newest of its kind".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Slot {
    Check,
    DataCheck,
    Drill,
    Exporter(String),
}

impl VerificationRecord {
    /// A record of something that ran here and now-ish.
    fn here(
        location: String,
        time_ns: i64,
        duration_ns: u64,
        outcome: VerificationOutcome,
    ) -> Self {
        Self {
            time_ns,
            duration_ns,
            location,
            host: hostname(),
            username: username(),
            program: format!("cairn {}", env!("CARGO_PKG_VERSION")),
            outcome,
            supersedes: Vec::new(),
        }
    }

    fn slot(&self) -> Option<Slot> {
        match &self.outcome {
            VerificationOutcome::Check(c) if c.read_data != "none" => Some(Slot::DataCheck),
            VerificationOutcome::Check(_) => Some(Slot::Check),
            VerificationOutcome::Drill(_) => Some(Slot::Drill),
            VerificationOutcome::Exporter(e) => Some(Slot::Exporter(e.command.clone())),
            VerificationOutcome::Compacted(_) => None,
        }
    }

    /// What ran and what it found, in one line without time or place.
    pub fn describe(&self) -> String {
        match &self.outcome {
            VerificationOutcome::Check(c) if c.read_data == "none" => {
                format!("structure check, {} packs, {} errors", c.packs, c.errors)
            }
            VerificationOutcome::Check(c) => format!(
                "data check ({}), {} of {} packs read, {} errors",
                c.read_data, c.packs_checked, c.packs, c.errors
            ),
            VerificationOutcome::Drill(d) => format!(
                "restore drill of snapshot {}, {} files, {}",
                d.snapshot.short(),
                d.files,
                if d.ok {
                    "identical".to_string()
                } else {
                    format!("{} FAILED", d.failures)
                }
            ),
            VerificationOutcome::Exporter(e) => format!(
                "{} of snapshot {}: {}",
                e.command,
                e.snapshot.short(),
                e.summary
            ),
            VerificationOutcome::Compacted(c) => format!(
                "{} older records folded ({} pack times)",
                self.supersedes.len(),
                c.pack_times.len()
            ),
        }
    }

    /// True when it found nothing wrong (a compacted record: true).
    pub fn ok(&self) -> bool {
        match &self.outcome {
            VerificationOutcome::Check(c) => c.errors == 0,
            VerificationOutcome::Drill(d) => d.ok,
            VerificationOutcome::Exporter(e) => e.ok,
            VerificationOutcome::Compacted(_) => true,
        }
    }
}

/// Every readable record of the repository, superseded ones dropped.
#[derive(Debug, Clone, Default)]
pub struct VerificationHistory {
    /// Live records with their object names, oldest first.
    pub records: Vec<(String, VerificationRecord)>,
    /// Records that could not be read or opened, with why (skipped).
    pub damaged: Vec<(String, String)>,
}

/// The newest results of one location.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LocationSummary {
    /// The location.
    pub location: String,
    /// The newest check (structure only or with data).
    pub last_check: Option<VerificationRecord>,
    /// The newest check that read pack data.
    pub last_data_check: Option<VerificationRecord>,
    /// The newest restore drill.
    pub last_drill: Option<VerificationRecord>,
    /// The newest result of each exporter verify command.
    pub last_exporter: Vec<VerificationRecord>,
}

impl LocationSummary {
    /// Its records (newest check, data check, drill, exporter verifies),
    /// none twice.
    pub fn records(&self) -> Vec<&VerificationRecord> {
        let mut v: Vec<&VerificationRecord> = Vec::new();
        let all = [&self.last_check, &self.last_data_check, &self.last_drill];
        for r in all.into_iter().flatten().chain(&self.last_exporter) {
            if !v.contains(&r) {
                v.push(r);
            }
        }
        v
    }
}

impl VerificationHistory {
    /// Live records of `location`.
    fn at<'a>(
        &'a self,
        location: &'a str,
    ) -> impl Iterator<Item = &'a (String, VerificationRecord)> {
        self.records
            .iter()
            .filter(move |(_, r)| r.location == location)
    }

    /// When each pack was last verified at `location`, by the records.
    pub fn pack_times(&self, location: &str) -> HashMap<PackId, i64> {
        let mut times = HashMap::new();
        let mut put = |p: PackId, t: i64| {
            let e = times.entry(p).or_insert(t);
            *e = (*e).max(t);
        };
        for (_, r) in self.at(location) {
            match &r.outcome {
                VerificationOutcome::Check(c) => c.verified.iter().for_each(|p| put(*p, r.time_ns)),
                VerificationOutcome::Compacted(c) => {
                    c.pack_times.iter().for_each(|(p, t)| put(*p, *t))
                }
                _ => {}
            }
        }
        times
    }

    /// The newest record of each kind at `location`, compacted ones'
    /// survivors included.
    fn newest(&self, location: &str) -> BTreeMap<Slot, VerificationRecord> {
        let mut out: BTreeMap<Slot, VerificationRecord> = BTreeMap::new();
        let mut offer = |r: &VerificationRecord| {
            if let Some(s) = r.slot()
                && out.get(&s).is_none_or(|o| o.time_ns <= r.time_ns)
            {
                out.insert(s, r.clone());
            }
        };
        for (_, r) in self.at(location) {
            match &r.outcome {
                VerificationOutcome::Compacted(c) => c.latest.iter().for_each(&mut offer),
                _ => offer(r),
            }
        }
        out
    }

    /// The newest results per location, locations sorted.
    pub fn summaries(&self) -> Vec<LocationSummary> {
        let mut locations: Vec<&str> = self.records.iter().map(|(_, r)| &*r.location).collect();
        locations.sort_unstable();
        locations.dedup();
        locations
            .into_iter()
            .map(|loc| {
                let mut s = LocationSummary {
                    location: loc.to_string(),
                    ..Default::default()
                };
                for (slot, r) in self.newest(loc) {
                    match slot {
                        Slot::Check => s.last_check = Some(r),
                        Slot::DataCheck => s.last_data_check = Some(r),
                        Slot::Drill => s.last_drill = Some(r),
                        Slot::Exporter(_) => s.last_exporter.push(r),
                    }
                }
                // A data check is a check too.
                if let Some(d) = &s.last_data_check
                    && s.last_check.as_ref().is_none_or(|c| c.time_ns < d.time_ns)
                {
                    s.last_check = Some(d.clone());
                }
                s
            })
            .collect()
    }

    /// Live records at `location`.
    pub fn count_at(&self, location: &str) -> usize {
        self.at(location).count()
    }
}

impl Repository {
    /// Where this repository is read from, as verification records name it
    /// (SPEC §32): `file://HOST/CANONICAL/PATH` for a local directory (a
    /// directory on another machine is other storage, even at the same
    /// path), the S3 location with the endpoint it resolved to
    /// (`s3:ENDPOINT/BUCKET/PREFIX`; `s3://BUCKET/PREFIX` for AWS).
    pub fn verification_location(&self) -> String {
        let loc = self.backend().location();
        let path = std::path::Path::new(&loc);
        if !path.is_absolute() && (loc.starts_with("s3:") || loc.starts_with("memory:")) {
            return loc;
        }
        let canon = std::fs::canonicalize(path).unwrap_or_else(|_| {
            std::env::current_dir()
                .map(|d| d.join(path))
                .unwrap_or_else(|_| path.to_path_buf())
        });
        format!("file://{}{}", hostname(), canon.display())
    }

    /// Reads every verification record (SPEC §32); unreadable ones are
    /// listed in [`VerificationHistory::damaged`], never fatal.
    pub fn verification_history(&self) -> Result<VerificationHistory> {
        store::load(self)
    }

    /// Stores the outcome of an exporter's verify command, run here now
    /// (it started at `time_ns` and ran `duration_ns`). Returns the record's name.
    pub fn record_exporter_verification(
        &self,
        time_ns: i64,
        duration_ns: u64,
        outcome: ExporterOutcome,
    ) -> Result<String> {
        let r = VerificationRecord::here(
            self.verification_location(),
            time_ns,
            duration_ns,
            VerificationOutcome::Exporter(outcome),
        );
        self.store_verification(&r, None)
    }

    /// Stores `record`, then compacts its location's records if there are
    /// more than [`COMPACT_AFTER`]; `existing` (packs that exist now) lets
    /// compaction drop times of packs that prune deleted.
    pub(crate) fn store_verification(
        &self,
        record: &VerificationRecord,
        existing: Option<&std::collections::HashSet<PackId>>,
    ) -> Result<String> {
        let name = store::write(self, record)?;
        store::compact(self, &record.location, existing)?;
        Ok(name)
    }
}

/// When each pack was last verified at `location` (SPEC §32.3): this
/// machine's ledger, if it belongs to `location` (`ledger_ok`), merged with
/// the repository's records of `location`. What went wrong comes back as
/// messages for warnings; nothing is fatal, a pack without a time is due.
pub(crate) fn pack_times(
    repo: &Repository,
    location: &str,
    ledger_ok: bool,
) -> (HashMap<PackId, i64>, Vec<String>) {
    let mut problems = Vec::new();
    let mut times = match repo.index().cache().verification_times() {
        Ok(t) if ledger_ok => t,
        Ok(_) => HashMap::new(),
        Err(e) => {
            problems.push(format!(
                "could not read the verification ledger (treating every pack as unverified): {e}"
            ));
            HashMap::new()
        }
    };
    match repo.verification_history() {
        Ok(h) => {
            for (name, why) in &h.damaged {
                problems.push(format!(
                    "verification record {name} is unreadable and ignored: {why}"
                ));
            }
            for (p, t) in h.pack_times(location) {
                let e = times.entry(p).or_insert(t);
                *e = (*e).max(t);
            }
        }
        Err(e) => problems.push(format!(
            "could not read the repository's verification records (using this machine's ledger only): {e}"
        )),
    }
    (times, problems)
}

/// The record of a check, from what [`Repository::check`] found.
pub(crate) fn check_record(
    repo: &Repository,
    time_ns: i64,
    outcome: CheckOutcome,
) -> VerificationRecord {
    let duration = now_ns().saturating_sub(time_ns).max(0) as u64;
    VerificationRecord::here(
        repo.verification_location(),
        time_ns,
        duration,
        VerificationOutcome::Check(outcome),
    )
}

/// The record of a drill.
pub(crate) fn drill_record(
    repo: &Repository,
    time_ns: i64,
    duration_ns: u64,
    outcome: DrillOutcome,
) -> VerificationRecord {
    VerificationRecord::here(
        repo.verification_location(),
        time_ns,
        duration_ns,
        VerificationOutcome::Drill(outcome),
    )
}

/// A 63-bit tag of a location, for the local cache's ledger (which holds
/// integers): a cache ledger is used only at the location it was filled at.
pub(crate) fn location_tag(location: &str) -> i64 {
    let h = blake3::hash(location.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    (u64::from_le_bytes(b) >> 1) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outcome: VerificationOutcome) -> VerificationRecord {
        VerificationRecord {
            time_ns: 0x0102,
            duration_ns: 3,
            location: "L".into(),
            host: "h".into(),
            username: "u".into(),
            program: "p".into(),
            outcome,
            supersedes: vec!["ab".into()],
        }
    }

    /// The body layout of SPEC §32.2, written out by hand.
    #[test]
    fn golden_record_body() {
        let r = record(VerificationOutcome::Exporter(ExporterOutcome {
            command: "c".into(),
            snapshot: SnapshotId::from_bytes([0x11; 32]),
            ok: true,
            summary: "s".into(),
        }));
        let want = [
            "0201000000000000", // time_ns
            "0300000000000000", // duration_ns
            "0100000000000000",
            "4c", // location "L"
            "0100000000000000",
            "68", // host "h"
            "0100000000000000",
            "75", // username "u"
            "0100000000000000",
            "70",       // program "p"
            "02000000", // outcome: variant 2, Exporter
            "0100000000000000",
            "63",             // command "c"
            &"11".repeat(32), // snapshot
            "01",             // ok
            "0100000000000000",
            "73",               // summary "s"
            "0100000000000000", // supersedes: one name
            "0200000000000000",
            "6162", // "ab"
        ]
        .concat();
        assert_eq!(hex::encode(crate::encoding::encode(&r)), want);
        let back: VerificationRecord =
            crate::encoding::decode(&crate::encoding::encode(&r), "record").unwrap();
        assert_eq!(back, r);
    }

    /// Pack times come from the records of one location only; the newest
    /// of each kind wins, through compacted records too.
    #[test]
    fn times_and_newest_are_per_location() {
        let check = |loc: &str, t: i64, packs: &[u8]| {
            let mut r = record(VerificationOutcome::Check(CheckOutcome {
                read_data: "all".into(),
                max_age_s: None,
                packs: 3,
                packs_selected: 3,
                packs_checked: 3,
                verified: packs.iter().map(|b| PackId::from_bytes([*b; 32])).collect(),
                errors: 0,
                warnings: 0,
                error_messages: Vec::new(),
            }));
            r.location = loc.into();
            r.time_ns = t;
            r.supersedes.clear();
            r
        };
        let folded = {
            let mut r = record(VerificationOutcome::Compacted(CompactedHistory {
                pack_times: vec![(PackId::from_bytes([1; 32]), 50)],
                latest: vec![check("A", 50, &[])],
            }));
            r.location = "A".into();
            r.time_ns = 50;
            r.supersedes.clear();
            r
        };
        let h = VerificationHistory {
            records: vec![
                ("1".into(), check("A", 10, &[1, 2])),
                ("2".into(), check("B", 90, &[1, 2, 3])),
                ("3".into(), folded),
            ],
            damaged: Vec::new(),
        };
        let a = h.pack_times("A");
        assert_eq!(a.len(), 2);
        assert_eq!(a[&PackId::from_bytes([1; 32])], 50);
        assert_eq!(a[&PackId::from_bytes([2; 32])], 10);
        assert!(h.pack_times("C").is_empty());
        let s = h.summaries();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].last_data_check.as_ref().unwrap().time_ns, 50);
        assert_eq!(s[1].last_data_check.as_ref().unwrap().time_ns, 90);
        assert_eq!(
            s[0].records().len(),
            1,
            "check and data check are one record"
        );
    }
}
