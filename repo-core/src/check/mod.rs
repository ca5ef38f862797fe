//! Verification (docs/check.md): `check` proves the structure of a repository and,
//! with `read_data`, every byte of the packs it selects; the verification
//! ledger in the local cache (SPEC §12) rotates partial data checks through
//! every pack over successive runs (`select`); `drill` restores a sample of
//! a snapshot and compares it with the snapshot's chunk ids; `report`
//! summarises a snapshot for auditors, with a Merkle root over its tree.
//!
//! `check` never trusts the local cache for structure: it reads every index
//! file, pack listing, pack header, snapshot and tree from the backend. The
//! cache only supplies the ledger, which decides *which* packs a partial
//! run reads, never whether they are intact.
//!
//! The structure check runs in flat memory: the index and the referenced
//! chunks are streamed through sorted scratch files in the local cache
//! (`view`, `spill`; docs/check.md §1), never held whole.

mod drill;
mod report;
mod select;
mod spill;
mod view;

pub use drill::{Drill, DrillFailure, DrillOptions, DrillReport, Sample};
pub use report::{
    CheckSummary, DrillSummary, IntegrityReport, MERKLE_DOMAIN, MerkleRoot, merkle_tree_hash,
};

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rayon::prelude::*;

use crate::backend::{BackendErrorKind, ObjectKind};
use crate::blob::{self, BlobKind};
use crate::cache::{CacheError, CheckRecord};
use crate::crypto::KeyFile;
use crate::error::{Error, Result};
use crate::format::{FILE_PREFIX_LEN, PACK_TRAILER_LEN, SEAL_OVERHEAD};
use crate::id::{BlobId, IndexId, KeyId, PackId, SnapshotId, TreeId};
use crate::index::{References, load_index_file, references_by_blob};
use crate::pack::{PackEntry, header_len};
use crate::progress::Progress;
use crate::repository::{Repository, now_ns};
use crate::snapshot::SnapshotEntry;
use crate::tree::Tree;
use select::{Cycle, select_packs};
use spill::Spill;
use view::{IndexView, Ref, RefIssue, Slot, TreeIssue, ViewBuilder};

/// Default of [`CheckOptions::spill_bytes`].
pub const DEFAULT_SPILL_BYTES: usize = 32 << 20;

/// At most this many paths are listed per problem; the rest are counted in
/// [`Problem::paths_omitted`], so one lost pack cannot make a report of
/// millions of lines.
pub const MAX_PATHS_PER_PROBLEM: usize = 1000;

/// Trees decoded at once while walking: bounds memory on wide levels.
const TREE_BATCH: usize = 256;

/// Largest pack buffer a check thread keeps for the next pack.
const MAX_KEPT_PACK_BUF: usize = 64 << 20;

thread_local! {
    static PACK_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Which pack data `check` reads, decrypts and hashes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ReadData {
    /// Structure only: no pack data is read (pack headers are).
    #[default]
    None,
    /// Every pack (or, with `max_age`, every pack not verified recently).
    All,
    /// `Subset(n, m)`: the packs whose id's first byte modulo `m` is `n − 1`
    /// (`1 ≤ n ≤ m ≤ 256`), so `1/4` … `4/4` partition the repository.
    Subset(u32, u32),
    /// This share of the packs (0 < f ≤ 1), least recently verified first,
    /// never one twice in a rotation cycle (docs/check.md §3).
    Fraction(f64),
    /// Packs up to this many bytes, least recently verified first, never one
    /// twice in a rotation cycle.
    Bytes(u64),
}

impl ReadData {
    /// True when some pack data is to be read.
    pub fn reads(&self) -> bool {
        !matches!(self, ReadData::None)
    }

    /// Refuses subsets that select nothing sensible (`0/4`, `5/4`, `0%`,
    /// `150%`, zero bytes); [`FromStr`] never produces them.
    pub fn validate(&self) -> Result<()> {
        let ok = match *self {
            ReadData::None | ReadData::All => true,
            ReadData::Subset(n, m) => (1..=256).contains(&m) && (1..=m).contains(&n),
            ReadData::Fraction(f) => f > 0.0 && f <= 1.0,
            ReadData::Bytes(b) => b > 0,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "read-data subset {self} selects nothing"
            )))
        }
    }
}

impl fmt::Display for ReadData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadData::None => f.write_str("none"),
            ReadData::All => f.write_str("all"),
            ReadData::Subset(n, m) => write!(f, "{n}/{m}"),
            // Rounded so that `10%` prints as typed, not as 10.000000000000002%.
            ReadData::Fraction(x) => write!(f, "{}%", (x * 1e8).round() / 1e6),
            ReadData::Bytes(b) => write!(f, "{b} bytes"),
        }
    }
}

/// Parses a `--read-data-subset` value: `n/m`, `x%` (a decimal percentage),
/// or a size (`500M`, `5G`, `1T`, `4096`; binary units, an optional `B` or
/// `iB`).
impl FromStr for ReadData {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "read-data subset {s:?}: {why} (expected n/m, x% or a size like 5G)"
            ))
        };
        let t = s.trim();
        if let Some((n, m)) = t.split_once('/') {
            let n: u32 = n.trim().parse().map_err(|_| bad("n is not a number"))?;
            let m: u32 = m.trim().parse().map_err(|_| bad("m is not a number"))?;
            if m == 0 || m > 256 || n == 0 || n > m {
                return Err(bad("need 1 <= n <= m <= 256"));
            }
            return Ok(ReadData::Subset(n, m));
        }
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad("not a percentage"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad("the percentage must be above 0 and at most 100"));
            }
            return Ok(ReadData::Fraction(p / 100.0));
        }
        let b = parse_size(t).ok_or_else(|| bad("not a size"))?;
        if b == 0 {
            return Err(bad("the size must not be zero"));
        }
        Ok(ReadData::Bytes(b))
    }
}

/// `4096`, `500K`, `5G`, `1.5T`, `2GiB`, `10MB`: binary units.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let upper = s.to_ascii_uppercase();
    let body = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (num, mult) = match body.chars().last()? {
        'K' => (&body[..body.len() - 1], 1u64 << 10),
        'M' => (&body[..body.len() - 1], 1 << 20),
        'G' => (&body[..body.len() - 1], 1 << 30),
        'T' => (&body[..body.len() - 1], 1 << 40),
        c if c.is_ascii_digit() => (body, 1),
        _ => return None,
    };
    let v: f64 = num.trim().parse().ok()?;
    if v.is_nan() || v < 0.0 || !v.is_finite() {
        return None;
    }
    let bytes = v * mult as f64;
    (bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Options for [`Repository::check`].
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Which pack data to read.
    pub read_data: ReadData,
    /// Read only packs not verified within this age (per the ledger).
    pub max_age: Option<Duration>,
    /// Start no new pack once the check has run this long.
    pub max_duration: Option<Duration>,
    /// Memory for each of the check's sorts; past it, sorted runs go to
    /// scratch files (docs/check.md §1). Tests set it tiny to force spilling.
    #[doc(hidden)]
    pub spill_bytes: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            read_data: ReadData::None,
            max_age: None,
            max_duration: None,
            spill_bytes: DEFAULT_SPILL_BYTES,
        }
    }
}

/// What a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProblemKind {
    /// An index file cannot be read, does not match its name, or does not decode.
    IndexCorrupt,
    /// Two index files describe the same pack differently.
    IndexConflict,
    /// A pack named by the index does not exist.
    PackMissing,
    /// A pack's size differs from what its index entries imply.
    PackSize,
    /// A pack's header cannot be read, opened or decoded.
    PackHeader,
    /// The index and a pack's header list different blobs.
    IndexMismatch,
    /// A pack no index names (warning: left by an interrupted backup, or
    /// condemned by a prune that has not deleted it yet).
    PackUnreferenced,
    /// A snapshot file cannot be read, does not match its name, or does not decode.
    SnapshotCorrupt,
    /// A tree a snapshot needs is in no index.
    TreeMissing,
    /// A tree cannot be read, opened or decoded.
    TreeDamaged,
    /// A data chunk a file needs is in no index.
    BlobMissing,
    /// The index lists a chunk a file needs as a tree blob.
    BlobWrongKind,
    /// A pack could not be read while reading data.
    PackRead,
    /// A pack's bytes do not hash to its name.
    PackHashMismatch,
    /// A blob fails to decrypt, decompress or hash to its id.
    BlobDamaged,
    /// The ledger could not be updated (warning: the check itself stands).
    Ledger,
    /// A key file cannot be read or decoded, belongs to another repository,
    /// or does not hash to its name (damaged, or replaced by other bytes).
    KeyDamaged,
    /// A compression dictionary cannot be read, decrypted or parsed, or does
    /// not hash to its name (SPEC §6.4): blobs compressed with it are lost.
    DictDamaged,
    /// A prune mark cannot be read or decoded (SPEC §22).
    MarkDamaged,
    /// A heartbeat or prune mark is dated in the storage's future (warning:
    /// prune ignores such a heartbeat and rewrites such a mark, SPEC §22).
    FutureDated,
    /// An archived WAL file fails to open (SPEC §28), or a file in `wal/`
    /// is not named like one (warning).
    WalDamaged,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        f.write_str(&s)
    }
}

/// One problem found by `check`, with what it affects.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Problem {
    /// What is wrong.
    pub kind: ProblemKind,
    /// The pack concerned, if one is.
    pub pack: Option<PackId>,
    /// The blob concerned, if one is.
    pub blob: Option<BlobId>,
    /// The index file concerned, if one is.
    pub index: Option<String>,
    /// Snapshots with files (or trees) that depend on the damaged object.
    pub snapshots: Vec<SnapshotId>,
    /// Those files and directories (paths in the snapshots, lossy UTF-8),
    /// sorted, at most 1000.
    pub paths: Vec<String>,
    /// Affected paths not listed.
    pub paths_omitted: u64,
    /// A sentence naming the objects.
    pub message: String,
}

impl Problem {
    fn new(kind: ProblemKind, message: String) -> Self {
        Self {
            kind,
            pack: None,
            blob: None,
            index: None,
            snapshots: Vec::new(),
            paths: Vec::new(),
            paths_omitted: 0,
            message,
        }
    }
    fn pack(mut self, p: PackId) -> Self {
        self.pack = Some(p);
        self
    }
    fn blob(mut self, b: BlobId) -> Self {
        self.blob = Some(b);
        self
    }
    fn index(mut self, name: &str) -> Self {
        self.index = Some(name.to_string());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if !self.snapshots.is_empty() {
            let ids: Vec<String> = self.snapshots.iter().map(SnapshotId::short).collect();
            write!(f, "\n  affects snapshot(s) {}", ids.join(", "))?;
        }
        for p in &self.paths {
            write!(f, "\n    {p}")?;
        }
        if self.paths_omitted > 0 {
            write!(f, "\n    … and {} more path(s)", self.paths_omitted)?;
        }
        Ok(())
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Durations in JSON are seconds as a float (the CLI's scripting contract).
fn ser_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// What [`Repository::check`] found and did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    /// True when no errors were found (warnings allowed).
    pub ok: bool,
    /// Problems that mean data is lost, damaged or unreachable.
    pub errors: Vec<Problem>,
    /// Problems that cost space or history, not data.
    pub warnings: Vec<Problem>,
    /// Index files read (superseded ones included).
    pub index_files: u64,
    /// Packs named by the index.
    pub packs: u64,
    /// Packs selected for reading data.
    pub packs_selected: u64,
    /// Selected packs whose data was read and checked.
    pub packs_checked: u64,
    /// Selected packs left unread because `max_duration` ran out.
    pub packs_skipped: u64,
    /// Packs not due: verified at this location within `max_age`, by this
    /// machine's ledger or the repository's verification records (SPEC §32).
    pub packs_recent: u64,
    /// Where the check read the repository (SPEC §32).
    pub location: String,
    /// Blobs opened (decrypted, decompressed, hashed).
    pub blobs_checked: u64,
    /// Pack bytes read for data checks.
    pub bytes_read: u64,
    /// Snapshots read.
    pub snapshots: u64,
    /// Distinct trees loaded and decoded.
    pub trees: u64,
    /// Data chunk references checked against the index.
    pub data_refs: u64,
    /// Compression dictionaries read and verified (SPEC §6.4).
    pub dictionaries: u64,
    /// Archived WAL files listed (SPEC §28).
    pub wal_files: u64,
    /// Archived WAL files read and verified (with read-data).
    pub wal_files_read: u64,
    /// Sorted run files the check wrote to its scratch directory (zero
    /// when its sorts fit in memory).
    #[serde(skip_serializing_if = "is_zero")]
    pub spill_files: u64,
    /// Wall time.
    #[serde(rename = "duration_s", serialize_with = "ser_seconds")]
    pub duration: Duration,
}

impl CheckReport {
    /// True when no errors were found (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "structure: {} index files, {} packs, {} snapshots, {} trees, {} data references",
            self.index_files, self.packs, self.snapshots, self.trees, self.data_refs
        )?;
        if self.packs_selected == 0 && self.packs_recent > 0 {
            writeln!(
                f,
                "data: nothing due, no packs read ({} packs verified at this location within --max-age)",
                self.packs_recent
            )?;
        }
        if self.packs_selected > 0 {
            write!(
                f,
                "data: {} of {} packs read ({} blobs, {})",
                self.packs_checked,
                self.packs,
                self.blobs_checked,
                crate::size::format_bytes(self.bytes_read)
            )?;
            if self.packs_skipped > 0 {
                write!(
                    f,
                    "; {} left for the next run (time limit)",
                    self.packs_skipped
                )?;
            }
            if self.packs_recent > 0 {
                write!(
                    f,
                    "; {} not due (verified here within --max-age)",
                    self.packs_recent
                )?;
            }
            writeln!(f)?;
        }
        if self.wal_files > 0 {
            writeln!(
                f,
                "archived WAL: {} files, {} read",
                self.wal_files, self.wal_files_read
            )?;
        }
        for p in &self.errors {
            writeln!(f, "error: {p}")?;
        }
        for p in &self.warnings {
            writeln!(f, "warning: {p}")?;
        }
        let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
        if self.errors.is_empty() {
            write!(
                f,
                "no errors found ({}) in {:.1}s",
                plural(self.warnings.len(), "warning"),
                self.duration.as_secs_f64()
            )
        } else {
            write!(
                f,
                "{} and {} found in {:.1}s",
                plural(self.errors.len(), "error"),
                plural(self.warnings.len(), "warning"),
                self.duration.as_secs_f64()
            )
        }
    }
}

/// Outcome of loading one tree without the cache.
enum TreeLoad {
    Ok(Tree),
    /// In no index file.
    NotIndexed,
    /// Only in packs already known to be bad (the pack's problem covers it).
    InBadPack,
    /// Read, opened or decoded with an error.
    Damaged(PackId, String),
}

/// Paths affected by one problem.
#[derive(Default)]
struct Affected {
    snapshots: BTreeSet<SnapshotId>,
    paths: BTreeSet<String>,
    omitted: u64,
}

impl Affected {
    fn add(&mut self, snap: SnapshotId, path: &[u8]) {
        self.snapshots.insert(snap);
        let p = if path.is_empty() {
            "/".to_string()
        } else {
            String::from_utf8_lossy(path).into_owned()
        };
        if self.paths.len() < MAX_PATHS_PER_PROBLEM || self.paths.contains(&p) {
            self.paths.insert(p);
        } else {
            self.omitted += 1;
        }
    }
}

/// One data check's result for one pack.
#[derive(Default)]
struct PackOutcome {
    skipped: bool,
    checked: bool,
    blobs: u64,
    bytes: u64,
    problems: Vec<Problem>,
    verified: bool,
}

struct Checker<'a> {
    repo: &'a Repository,
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
    /// The index files' packs and blobs, mostly on scratch disk.
    view: IndexView,
    /// Index file names, by number.
    index_names: Vec<String>,
    /// Packs with a structural error, mapped to that error.
    bad_packs: HashMap<PackId, usize>,
    /// Blobs whose loss or damage an error describes, mapped to the errors.
    bad_blobs: HashMap<BlobId, Vec<usize>>,
    /// Where the repository is read (SPEC §32).
    location: String,
    /// Whether the local ledger belongs to `location` and may be used.
    ledger_ok: bool,
    /// Packs whose data was read and verified intact.
    verified: Vec<PackId>,
    /// The delta blobs the index files record, per pack (SPEC §6.6, §8):
    /// in memory, one entry per delta blob.
    references: References,
}

/// A check set up by [`Repository::check`], run by [`Check::run`]; the
/// same builder shape as backup and restore.
#[must_use = "a check does nothing until `run`"]
pub struct Check<'a> {
    repo: &'a Repository,
    opts: &'a CheckOptions,
    progress: &'a dyn Progress,
}

impl<'a> Check<'a> {
    /// Reports progress to `p` (packs read, bytes).
    pub fn progress(mut self, p: &'a dyn Progress) -> Self {
        self.progress = p;
        self
    }

    /// Runs the check.
    pub fn run(self) -> Result<CheckReport> {
        self.repo
            .with_read_pool(|| self.repo.check_in_pool(self.opts, self.progress))
    }
}

impl Repository {
    /// Verifies the repository (docs/check.md): every index file decodes; every
    /// indexed pack exists, has the size its entries imply, and a header
    /// listing exactly those entries; every snapshot decodes; every tree
    /// they reach loads and decodes; every data chunk they reference is
    /// indexed. With [`CheckOptions::read_data`], the selected packs are read
    /// whole, hashed against their names, and every blob is opened.
    /// Problems name the pack, blob or file, and the snapshots and paths
    /// they affect. Verified packs are recorded in the ledger as they pass,
    /// and the run in the check history.
    ///
    /// Returns `Err` only when the check itself cannot proceed (invalid
    /// options, a backend that cannot be listed); everything wrong with the
    /// repository is in the report.
    ///
    /// Packs are read with up to [`Repository::connections`] requests in
    /// flight. Nothing happens until [`Check::run`].
    pub fn check<'a>(&'a self, opts: &'a CheckOptions) -> Check<'a> {
        Check {
            repo: self,
            opts,
            progress: &crate::progress::NoProgress,
        }
    }

    fn check_in_pool(&self, opts: &CheckOptions, progress: &dyn Progress) -> Result<CheckReport> {
        opts.read_data.validate()?;
        let started = Instant::now();
        let time_ns = now_ns();
        // The sorts' run files, removed when this handle drops (docs/check.md §1).
        let scratch = self.index().cache().scratch_dir()?;
        let location = self.verification_location();
        let claimed = self
            .index()
            .cache()
            .claim_ledger(crate::verification::location_tag(&location));
        let mut errors = check_keys(self)?;
        let (view, index_names, index_errors, references) =
            read_index(self, scratch.path(), opts.spill_bytes)?;
        errors.extend(index_errors);
        let mut ck = Checker {
            repo: self,
            errors,
            warnings: Vec::new(),
            view,
            index_names,
            bad_packs: HashMap::new(),
            bad_blobs: HashMap::new(),
            location,
            ledger_ok: claimed.is_ok(),
            verified: Vec::new(),
            references,
        };
        if let Err(e) = claimed {
            ck.warnings.push(Problem::new(
                ProblemKind::Ledger,
                format!("could not read the local verification ledger (not using it): {e}"),
            ));
        }
        let dictionaries = ck.check_dictionaries()?;
        let index_files = ck.index_names.len() as u64;
        let listed = ck.check_packs()?;
        ck.check_prune_objects()?;
        let snaps = ck.read_snapshots()?;
        let (trees, data_refs, spill_files) =
            ck.walk_trees(&snaps, scratch.path(), opts.spill_bytes)?;

        let mut report = CheckReport {
            ok: false,
            errors: Vec::new(),
            warnings: Vec::new(),
            index_files,
            packs: ck.view.packs().len() as u64,
            packs_selected: 0,
            packs_checked: 0,
            packs_skipped: 0,
            packs_recent: 0,
            location: ck.location.clone(),
            blobs_checked: 0,
            bytes_read: 0,
            snapshots: snaps.len() as u64,
            trees,
            data_refs,
            dictionaries,
            wal_files: 0,
            wal_files_read: 0,
            spill_files,
            duration: Duration::ZERO,
        };
        if opts.read_data.reads() {
            ck.read_data(opts, &listed, started, progress, &mut report);
        }
        (report.wal_files, report.wal_files_read) = ck.check_wal(opts.read_data.reads())?;
        if !ck.bad_blobs.is_empty() {
            ck.attribute(&snaps);
        }
        let ledger = self.index().cache();
        let existing: HashSet<PackId> = listed.keys().copied().collect();
        if ck.ledger_ok
            && let Err(e) = ledger.retain_verified(&existing)
        {
            ck.warnings.push(Problem::new(
                ProblemKind::Ledger,
                format!("could not update the verification ledger: {e}"),
            ));
        }
        let verified = std::mem::take(&mut ck.verified);
        report.errors = ck.errors;
        report.warnings = ck.warnings;
        report.ok = report.errors.is_empty();
        report.duration = started.elapsed();
        let outcome = crate::verification::CheckOutcome {
            read_data: opts.read_data.to_string(),
            max_age_s: opts.max_age.map(|d| d.as_secs()),
            packs: report.packs,
            packs_selected: report.packs_selected,
            packs_checked: report.packs_checked,
            verified,
            errors: report.errors.len() as u64,
            warnings: report.warnings.len() as u64,
            error_messages: report
                .errors
                .iter()
                .take(crate::verification::MAX_ERROR_MESSAGES)
                .map(|p| p.message.clone())
                .collect(),
        };
        let record = crate::verification::check_record(self, time_ns, outcome);
        if let Err(e) = self.store_verification(&record, Some(&existing)) {
            report.warnings.push(Problem::new(
                ProblemKind::Ledger,
                format!("could not store this check's verification record in the repository: {e}"),
            ));
        }
        let record = CheckRecord {
            time_ns,
            duration_ns: report.duration.as_nanos() as u64,
            read_data: opts.read_data.reads(),
            packs: report.packs,
            packs_verified: report.packs_checked,
            errors: report.errors.len() as u64,
            warnings: report.warnings.len() as u64,
            report_json: serde_json::to_string(&report).unwrap_or_default(),
        };
        if let Err(e) = ledger.record_check(&record) {
            report.warnings.push(Problem::new(
                ProblemKind::Ledger,
                format!("could not record this check in the local cache: {e}"),
            ));
        }
        Ok(report)
    }
}

impl Checker<'_> {
    /// Prune marks decode, and no mark or heartbeat is dated in the
    /// storage's future (SPEC §22). The storage clock is probed only when
    /// there is something to compare with it.
    fn check_prune_objects(&mut self) -> Result<()> {
        let backend = self.repo.backend();
        let marks = crate::mark::load_marks(backend, self.repo.data_keys())?;
        for (name, _, e) in &marks.damaged {
            self.errors.push(Problem::new(
                ProblemKind::MarkDamaged,
                format!("prune mark {name} is damaged ({e}); the next prune deletes it"),
            ));
        }
        let beats = crate::lock::Heartbeat::list(backend)?;
        if beats.is_empty() && marks.good.is_empty() {
            return Ok(());
        }
        let now = match crate::lock::storage_now(backend) {
            Ok(t) => t,
            Err(e) => {
                self.warnings.push(Problem::new(
                    ProblemKind::FutureDated,
                    format!("could not read the storage clock to date marks and heartbeats: {e}"),
                ));
                return Ok(());
            }
        };
        for h in beats.iter().filter(|h| h.is_future(now)) {
            self.warnings.push(Problem::new(
                ProblemKind::FutureDated,
                format!(
                    "heartbeat locks/{} is dated in the storage's future; prune ignores it \
                     (delete it)",
                    h.name
                ),
            ));
        }
        for (name, t, _) in &marks.good {
            if crate::lock::is_future(*t, now) {
                self.warnings.push(Problem::new(
                    ProblemKind::FutureDated,
                    format!(
                        "prune mark {name} is dated in the storage's future; the next prune \
                         rewrites it"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A scratch file failed: the check cannot go on.
fn scratch(e: std::io::Error) -> Error {
    Error::Cache(CacheError::Io(e))
}

/// Step 0: every key file decodes, belongs to this repository and hashes
/// to its name. Without the passwords, the name is what shows that the
/// encrypted part is intact (SPEC §17).
fn check_keys(repo: &Repository) -> Result<Vec<Problem>> {
    let backend = repo.backend();
    let repo_id = repo.config().repo_id;
    let mut errors = Vec::new();
    for o in backend.list(ObjectKind::Key)? {
        let why = match backend.read(ObjectKind::Key, &o.name) {
            Err(e) if e.is_not_found() => continue, // removed meanwhile
            Err(e) => Some(e.to_string()),
            Ok(bytes) => match KeyFile::decode(&bytes) {
                Err(e) => Some(e.to_string()),
                Ok(kf) if kf.header.repo_id != repo_id => {
                    Some("belongs to another repository".into())
                }
                Ok(_) if KeyId::hash_of(&bytes).to_hex() != o.name => {
                    Some("content does not match its name".into())
                }
                Ok(_) => None,
            },
        };
        if let Some(why) = why {
            errors.push(Problem::new(
                ProblemKind::KeyDamaged,
                format!("key file {}: {why}", o.name),
            ));
        }
    }
    Ok(errors)
}

/// Step 1: every index file, read from the backend (docs/check.md §1) into the
/// check's view. Returns the view, the index file names (sorted), the
/// problems found, in file order, and the recorded delta blobs.
fn read_index(
    repo: &Repository,
    dir: &Path,
    budget: usize,
) -> Result<(IndexView, Vec<String>, Vec<Problem>, References)> {
    let mut references = References::new();
    let backend = repo.backend();
    let key = repo.data_keys();
    let mut names: Vec<String> = backend
        .list(ObjectKind::Index)?
        .into_iter()
        .map(|o| o.name)
        .collect();
    names.sort();
    let mut builder = ViewBuilder::new(dir, budget).map_err(scratch)?;
    let mut supersedes: HashSet<IndexId> = HashSet::new();
    let mut problems: Vec<(u32, Problem)> = Vec::new();
    // One file per thread at a time (each about 10 MiB decoded at the
    // largest): all at once would hold the whole index.
    let batch = rayon::current_num_threads().max(1);
    for (k, chunk) in names.chunks(batch).enumerate() {
        let files: Vec<_> = chunk
            .par_iter()
            .map(|n| load_index_file(backend, key, n))
            .collect();
        for (i, (name, file)) in chunk.iter().zip(files).enumerate() {
            let no = (k * batch + i) as u32;
            match file {
                Err(e) => problems.push((
                    no,
                    Problem::new(ProblemKind::IndexCorrupt, format!("index file {name}: {e}"))
                        .index(name),
                )),
                Ok(f) => {
                    supersedes.extend(f.supersedes.iter().copied());
                    references.extend(f.references_by_pack());
                    for p in &f.packs {
                        builder.add(no, p).map_err(scratch)?;
                    }
                }
            }
        }
    }
    let superseded: Vec<bool> = names
        .iter()
        .map(|n| {
            n.parse::<IndexId>()
                .is_ok_and(|id| supersedes.contains(&id))
        })
        .collect();
    let (view, conflicts) = builder.finish(&superseded).map_err(scratch)?;
    for (w, o) in conflicts {
        let (w, o) = (view.slot(w), view.slot(o));
        let name = &names[o.file as usize];
        let msg = format!(
            "index files {} and {name} describe pack {} differently",
            names[w.file as usize], o.pack
        );
        problems.push((
            o.file,
            Problem::new(ProblemKind::IndexConflict, msg)
                .pack(o.pack)
                .index(name),
        ));
    }
    // Stable: in file order, as the files were read.
    problems.sort_by_key(|(f, _)| *f);
    Ok((
        view,
        names,
        problems.into_iter().map(|(_, p)| p).collect(),
        references,
    ))
}

impl Checker<'_> {
    fn error(&mut self, p: Problem) -> usize {
        self.errors.push(p);
        self.errors.len() - 1
    }

    /// Step 0b: every compression dictionary decrypts, hashes to its name
    /// and is a dictionary zstd loads (docs/check.md §1, SPEC §6.4). That each blob's
    /// reference resolves is seen when its data is read (step 6).
    fn check_dictionaries(&mut self) -> Result<u64> {
        let backend = self.repo.backend();
        let mut n = 0;
        for o in backend.list(ObjectKind::Dict)? {
            let why = if !self.repo.config().dictionaries() {
                Some("a version-1 repository has no dictionaries".to_string())
            } else {
                match o.name.parse::<crate::id::DictId>() {
                    Err(_) => Some("its name is not a dictionary id".into()),
                    Ok(id) => match self.repo.dictionaries().load(&id) {
                        Err(crate::dict::DictLoadError::Backend(e)) if e.is_not_found() => {
                            continue;
                        }
                        Err(e) => Some(e.to_string()),
                        Ok(_) => None,
                    },
                }
            };
            n += 1;
            if let Some(why) = why {
                self.error(Problem::new(
                    ProblemKind::DictDamaged,
                    format!("dictionary {}: {why}", o.name),
                ));
            }
        }
        Ok(n)
    }

    /// Archived WAL (SPEC §28): every name in `wal/` is a WAL object's;
    /// with `read`, every object opens under its name and matches its MAC.
    /// Returns the files listed and read.
    fn check_wal(&mut self, read: bool) -> Result<(u64, u64)> {
        let store = self.repo.wal();
        let listing = store
            .list()
            .map_err(crate::wal::WalError::into_repo_error)?;
        for name in &listing.foreign {
            self.warnings.push(Problem::new(
                ProblemKind::WalDamaged,
                format!("file wal/{name} is not named like an archived WAL file"),
            ));
        }
        if !read {
            return Ok((listing.objects.len() as u64, 0));
        }
        let found: Vec<(u64, Option<Problem>)> = listing
            .objects
            .par_iter()
            .map(|o| match store.read(o) {
                Ok(_) => (1, None),
                // Deleted by a prune since the listing.
                Err(crate::wal::WalError::Backend(e)) if e.is_not_found() => (0, None),
                Err(e) => (
                    1,
                    Some(Problem::new(
                        ProblemKind::WalDamaged,
                        format!("archived WAL file {} ({}): {e}", o.file, o.object),
                    )),
                ),
            })
            .collect();
        let mut n = 0;
        for (read, p) in found {
            n += read;
            if let Some(p) = p {
                self.error(p);
            }
        }
        Ok((listing.objects.len() as u64, n))
    }

    /// Step 2 and 3: indexed packs exist, have the right size and a
    /// matching header; unindexed packs are warned about. Returns the
    /// listed packs with their sizes.
    fn check_packs(&mut self) -> Result<HashMap<PackId, u64>> {
        let mut listed: HashMap<PackId, u64> = HashMap::new();
        for o in self.repo.backend().list(ObjectKind::Pack)? {
            match o.name.parse::<PackId>() {
                Ok(id) => {
                    listed.insert(id, o.size);
                }
                Err(_) => self.warnings.push(Problem::new(
                    ProblemKind::PackUnreferenced,
                    format!("file data/{} is not named like a pack", o.name),
                )),
            }
        }
        // In pack id order; each pack's entries are read back from the
        // scratch file by the worker that compares them with its header.
        let slots: Vec<Slot> = self.view.packs().copied().collect();
        // Only the problems are kept: one result per pack would grow with
        // the repository.
        let found: Vec<(Slot, Problem)> = slots
            .par_iter()
            .filter_map(|s| {
                self.check_pack(s, listed.get(&s.pack).copied())
                    .transpose()
                    .map(|p| p.map(|p| (*s, p)))
            })
            .collect::<Result<_>>()?;
        for (s, p) in found {
            let at = self.error(p);
            self.bad_packs.insert(s.pack, at);
            for e in self.view.entries(&s).map_err(scratch)? {
                self.bad_blobs.entry(e.id).or_default().push(at);
            }
        }
        let mut stray: Vec<(&PackId, &u64)> = listed
            .iter()
            .filter(|(id, _)| self.view.find(id).is_none())
            .collect();
        stray.sort();
        for (id, size) in stray {
            self.warnings.push(
                Problem::new(
                    ProblemKind::PackUnreferenced,
                    format!(
                        "pack {id} ({}) is in no index file (left by an interrupted backup, or awaiting prune)",
                        crate::size::format_bytes(*size)
                    ),
                )
                .pack(*id),
            );
        }
        Ok(listed)
    }

    fn index_name(&self, s: &Slot) -> &str {
        &self.index_names[s.file as usize]
    }

    /// One pack's existence, size and header, against the index entries
    /// of its winning slot; `Err` only when the scratch file fails.
    fn check_pack(&self, s: &Slot, size: Option<u64>) -> Result<Option<Problem>> {
        let id = &s.pack;
        let index = self.index_name(s);
        let Some(size) = size else {
            return Ok(Some(
                Problem::new(
                    ProblemKind::PackMissing,
                    format!("pack {id} is missing (named by index file {index})"),
                )
                .pack(*id)
                .index(index),
            ));
        };
        let entries: Vec<PackEntry> = self.view.entries(s).map_err(scratch)?;
        // SPEC §7: the header is stored raw, so its sealed size follows from
        // the entry count and the recorded references (§7.2).
        let blobs_end = entries.last().map_or(FILE_PREFIX_LEN as u64, |e| {
            u64::from(e.offset) + u64::from(e.length)
        });
        let recorded = self.references.get(id).map(Vec::as_slice).unwrap_or(&[]);
        let header = header_len(entries.len(), recorded);
        let expected = blobs_end + (SEAL_OVERHEAD + header + PACK_TRAILER_LEN) as u64;
        if size != expected {
            return Ok(Some(
                Problem::new(
                    ProblemKind::PackSize,
                    format!("pack {id} has {size} bytes, index file {index} implies {expected}"),
                )
                .pack(*id)
                .index(index),
            ));
        }
        Ok(match self.repo.read_pack_header(id) {
            Err(e) => Some(
                Problem::new(
                    ProblemKind::PackHeader,
                    format!("pack {id}: header unreadable: {e}"),
                )
                .pack(*id),
            ),
            Ok(h) if h.entries != entries => {
                let differ = h
                    .entries
                    .iter()
                    .zip(&entries)
                    .position(|(a, b)| a != b)
                    .unwrap_or(h.entries.len().min(entries.len()));
                Some(
                    Problem::new(
                        ProblemKind::IndexMismatch,
                        format!(
                            "index file {index} is inconsistent with the header of pack {id}: \
                             {} entries in the header, {} in the index, first difference at entry {differ}",
                            h.entries.len(),
                            entries.len()
                        ),
                    )
                    .pack(*id)
                    .index(index),
                )
            }
            Ok(h) if h.references != recorded => Some(
                Problem::new(
                    ProblemKind::IndexMismatch,
                    format!(
                        "index file {index} is inconsistent with the header of pack {id}: \
                         the header records {} delta blobs, the index {}",
                        h.references.len(),
                        recorded.len()
                    ),
                )
                .pack(*id)
                .index(index),
            ),
            Ok(_) => None,
        })
    }

    /// Step 4a: every snapshot file decodes.
    fn read_snapshots(&mut self) -> Result<Vec<SnapshotEntry>> {
        let mut names: Vec<String> = self
            .repo
            .backend()
            .list(ObjectKind::Snapshot)?
            .into_iter()
            .map(|o| o.name)
            .collect();
        names.sort();
        let loaded: Vec<(String, Result<SnapshotEntry>)> = names
            .par_iter()
            .map(|n| {
                let r = match n.parse::<SnapshotId>() {
                    Ok(id) => self.repo.snapshot(&id),
                    Err(_) => Err(Error::InvalidArgument("file name is not an id".into())),
                };
                (n.clone(), r)
            })
            .collect();
        let mut out = Vec::new();
        for (name, r) in loaded {
            match r {
                Ok(s) => out.push(s),
                // Forgotten by another client since the listing.
                Err(Error::SnapshotNotFound(_)) => {}
                Err(e) => {
                    let mut p = Problem::new(
                        ProblemKind::SnapshotCorrupt,
                        format!("snapshot {name}: {e}"),
                    );
                    if let Ok(id) = name.parse() {
                        p.snapshots.push(id);
                    }
                    self.error(p);
                }
            }
        }
        out.sort_by_key(|a| (a.snapshot.time_ns, a.id));
        Ok(out)
    }

    /// Loads a tree through the index files read by this check, never the
    /// cache, preferring a copy in a pack not known to be bad.
    fn load_tree(&self, id: &TreeId) -> TreeLoad {
        let mut locs = self.view.tree_locations(&id.as_blob()).peekable();
        if locs.peek().is_none() {
            // Not indexed as a tree; the join after the walk tells whether
            // it is indexed at all.
            return TreeLoad::NotIndexed;
        }
        let Some(loc) = locs.find(|l| !self.bad_packs.contains_key(&l.pack)) else {
            return TreeLoad::InBadPack;
        };
        match self.repo.read_blob_at(&loc) {
            Err(e) => TreeLoad::Damaged(loc.pack, e.to_string()),
            Ok(bytes) => match Tree::decode(&bytes) {
                Ok(t) => TreeLoad::Ok(t),
                Err(e) => TreeLoad::Damaged(loc.pack, e.to_string()),
            },
        }
    }

    /// Step 4b: every tree reachable from a snapshot, once each, level by
    /// level in parallel; every data chunk referenced is indexed as data.
    /// The references go into a sort and are joined with the index's
    /// locations afterwards, so their number does not bound memory.
    /// Returns (trees loaded, data references checked, run files written).
    fn walk_trees(
        &mut self,
        snaps: &[SnapshotEntry],
        dir: &Path,
        budget: usize,
    ) -> Result<(u64, u64, u64)> {
        let mut seen: HashSet<TreeId> = HashSet::new();
        let mut frontier: Vec<TreeId> = snaps
            .iter()
            .map(|s| s.snapshot.tree)
            .filter(|t| seen.insert(*t))
            .collect();
        let (mut trees, mut refs) = (0u64, 0u64);
        let mut referenced: Spill<Ref> = Spill::new(dir, "refs", budget);
        // A used delta blob needs its references (SPEC §6.6): they are
        // looked up like the files' own data, once each.
        let by_blob = references_by_blob(&self.references);
        let mut needed: HashSet<BlobId> = HashSet::new();
        // Trees with no tree location, in walk order.
        let mut unindexed: Vec<TreeId> = Vec::new();
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for batch in frontier.chunks(TREE_BATCH) {
                let loaded: Vec<(TreeId, TreeLoad)> = batch
                    .par_iter()
                    .map(|id| (*id, self.load_tree(id)))
                    .collect();
                for (id, r) in loaded {
                    match r {
                        TreeLoad::Ok(t) => {
                            trees += 1;
                            for n in &t.nodes {
                                if let Some(sub) = n.subtree
                                    && seen.insert(sub)
                                {
                                    next.push(sub);
                                }
                                for c in &n.content {
                                    refs += 1;
                                    referenced.push(Ref(*c.as_bytes())).map_err(scratch)?;
                                    let mut todo: Vec<BlobId> =
                                        by_blob.get(c).cloned().unwrap_or_default();
                                    while let Some(r) = todo.pop() {
                                        if needed.insert(r) {
                                            referenced.push(Ref(*r.as_bytes())).map_err(scratch)?;
                                            todo.extend(by_blob.get(&r).into_iter().flatten());
                                        }
                                    }
                                }
                            }
                        }
                        TreeLoad::InBadPack => {}
                        TreeLoad::NotIndexed => unindexed.push(id),
                        TreeLoad::Damaged(pack, why) => self.tree_damaged(id, pack, &why),
                    }
                }
            }
            frontier = next;
        }
        let (referenced, ref_files) = referenced.finish().map_err(scratch)?;
        let pending: BTreeSet<BlobId> = unindexed.iter().map(TreeId::as_blob).collect();
        let bad_packs = &self.bad_packs;
        let joined = self
            .view
            .join(referenced, &pending, &|p| bad_packs.contains_key(p))
            .map_err(scratch)?;
        for id in unindexed {
            match joined
                .trees
                .get(&id.as_blob())
                .copied()
                .unwrap_or(TreeIssue::Missing)
            {
                TreeIssue::InBadPack => {}
                TreeIssue::DataBlob(pack) => self.tree_damaged(id, pack, "indexed as a data blob"),
                TreeIssue::Missing => {
                    let at = self.error(
                        Problem::new(
                            ProblemKind::TreeMissing,
                            format!("tree {id} is in no index file"),
                        )
                        .blob(id.as_blob()),
                    );
                    self.bad_blobs.entry(id.as_blob()).or_default().push(at);
                }
            }
        }
        for (c, issue) in joined.refs {
            let problem = match issue {
                RefIssue::Missing => Problem::new(
                    ProblemKind::BlobMissing,
                    if needed.contains(&c) {
                        format!("data blob {c}, a delta blob's reference, is in no index file")
                    } else {
                        format!("data blob {c} is in no index file")
                    },
                )
                .blob(c),
                RefIssue::WrongKind(pack) => Problem::new(
                    ProblemKind::BlobWrongKind,
                    format!(
                        "blob {c} is referenced as file data but indexed as a tree (pack {pack})"
                    ),
                )
                .blob(c)
                .pack(pack),
            };
            let at = self.error(problem);
            self.bad_blobs.entry(c).or_default().push(at);
        }
        Ok((trees, refs, ref_files + joined.files))
    }

    fn tree_damaged(&mut self, id: TreeId, pack: PackId, why: &str) {
        let at = self.error(
            Problem::new(
                ProblemKind::TreeDamaged,
                format!("tree {id} in pack {pack}: {why}"),
            )
            .blob(id.as_blob())
            .pack(pack),
        );
        self.bad_blobs.entry(id.as_blob()).or_default().push(at);
    }

    /// Step 5: reads the selected packs whole, in parallel, and opens every
    /// blob; records each pack that passes in the ledger.
    fn read_data(
        &mut self,
        opts: &CheckOptions,
        listed: &HashMap<PackId, u64>,
        started: Instant,
        progress: &dyn Progress,
        report: &mut CheckReport,
    ) {
        let ledger = self.repo.index().cache();
        // This machine's ledger and the records other machines left here.
        let (times, problems) =
            crate::verification::pack_times(self.repo, &self.location, self.ledger_ok);
        for p in problems {
            self.warnings.push(Problem::new(ProblemKind::Ledger, p));
        }
        let cycle = ledger
            .rotation_cycle()
            .ok()
            .flatten()
            .filter(|_| self.ledger_ok)
            .map(|(start_ns, runs)| Cycle { start_ns, runs });
        let mut candidates: Vec<(PackId, u64)> = self
            .view
            .packs()
            .map(|s| s.pack)
            .filter(|p| !self.bad_packs.contains_key(p))
            .filter_map(|p| listed.get(&p).map(|s| (p, *s)))
            .collect();
        candidates.shuffle(&mut rand::thread_rng());
        let now = now_ns();
        if let Some(age) = opts.max_age {
            let since = now.saturating_sub(age.as_nanos().min(i64::MAX as u128) as i64);
            report.packs_recent = candidates
                .iter()
                .filter(|(p, _)| times.get(p).is_some_and(|t| *t >= since))
                .count() as u64;
        }
        let sel = select_packs(candidates, &times, opts, now, cycle);
        if let Some(c) = sel.cycle
            && let Err(e) = ledger.set_rotation_cycle(c.start_ns, c.runs)
        {
            self.warnings.push(Problem::new(
                ProblemKind::Ledger,
                format!("could not update the rotation cycle in the ledger: {e}"),
            ));
        }
        report.packs_selected = sel.packs.len() as u64;
        progress.set_total(sel.packs.iter().map(|(_, s)| *s).sum());
        let ledger_failed = Mutex::new(None::<String>);
        let outcomes: Vec<(PackId, PackOutcome)> = sel
            .packs
            .par_iter()
            .map(|(id, _)| {
                if opts.max_duration.is_some_and(|d| started.elapsed() >= d) {
                    return (
                        *id,
                        PackOutcome {
                            skipped: true,
                            ..Default::default()
                        },
                    );
                }
                let out = self.read_pack(id);
                progress.add_bytes(out.bytes);
                if out.verified
                    && let Err(e) = ledger.record_verified(id, now_ns())
                {
                    *ledger_failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                }
                (*id, out)
            })
            .collect();
        if let Some(e) = ledger_failed
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
        {
            self.warnings.push(Problem::new(
                ProblemKind::Ledger,
                format!("could not record verified packs in the ledger: {e}"),
            ));
        }
        for (id, o) in outcomes {
            if o.verified {
                self.verified.push(id);
            }
            report.packs_skipped += u64::from(o.skipped);
            report.packs_checked += u64::from(o.checked);
            report.blobs_checked += o.blobs;
            report.bytes_read += o.bytes;
            for p in o.problems {
                let blob = p.blob;
                let pack = p.pack;
                let at = self.error(p);
                match blob {
                    Some(b) => self.bad_blobs.entry(b).or_default().push(at),
                    None => {
                        // The whole pack is suspect (unreadable or gone).
                        if let Some(pk) =
                            pack.filter(|_| self.errors[at].kind != ProblemKind::PackHashMismatch)
                            && let Some(s) = self.view.find(&pk)
                        {
                            // A scratch read failing here only loses the
                            // attribution; the problem itself stands.
                            for e in self.view.entries(s).unwrap_or_default() {
                                self.bad_blobs.entry(e.id).or_default().push(at);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reads one pack and opens every blob the index lists in it.
    fn read_pack(&self, id: &PackId) -> PackOutcome {
        let mut out = PackOutcome {
            checked: true,
            ..Default::default()
        };
        let Some(slot) = self.view.find(id) else {
            return out;
        };
        let index = self.index_name(slot);
        let entries = match self.view.entries(slot) {
            Ok(e) => e,
            Err(e) => {
                out.problems.push(
                    Problem::new(
                        ProblemKind::PackRead,
                        format!("pack {id}: its index entries could not be read back from the check's scratch file: {e}"),
                    )
                    .pack(*id)
                    .index(index),
                );
                return out;
            }
        };
        // One pack buffer per thread, kept between packs: a fresh 16 MiB
        // allocation per pack costs page faults and zeroing on every read.
        let mut bytes = PACK_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
        let outcome = self.read_pack_into(id, index, &entries, &mut bytes, out);
        if bytes.capacity() <= MAX_KEPT_PACK_BUF {
            PACK_BUF.with(|b| *b.borrow_mut() = bytes);
        }
        outcome
    }

    fn read_pack_into(
        &self,
        id: &PackId,
        index: &str,
        entries: &[PackEntry],
        bytes: &mut Vec<u8>,
        mut out: PackOutcome,
    ) -> PackOutcome {
        match self
            .repo
            .backend()
            .read_into(ObjectKind::Pack, &id.to_hex(), bytes)
        {
            Ok(()) => {}
            Err(e) => {
                let kind = if e.error_kind == BackendErrorKind::NotFound {
                    ProblemKind::PackMissing
                } else {
                    ProblemKind::PackRead
                };
                out.problems.push(
                    Problem::new(kind, format!("pack {id}: {e}"))
                        .pack(*id)
                        .index(index),
                );
                return out;
            }
        };
        out.bytes = bytes.len() as u64;
        let hash_ok = PackId::hash_of(bytes) == *id;
        let key = self.repo.data_keys();
        let hasher = self.repo.hasher();
        // Blobs are opened in place in the pack buffer (the pack hash is
        // taken above) when the entries are disjoint; if a damaged index
        // makes them overlap, each is copied first so it is judged on the
        // pack's own bytes, not on bytes another entry decrypted in place.
        let in_place = entries
            .windows(2)
            .all(|w| u64::from(w[0].offset) + u64::from(w[0].length) <= u64::from(w[1].offset));
        let (mut sealed, mut plain) = (Vec::new(), Vec::new());
        for e in entries {
            out.blobs += 1;
            let (start, end) = (e.offset as usize, e.offset as usize + e.length as usize);
            let r = match bytes.get_mut(start..end) {
                None => Err("lies beyond the end of the pack".to_string()),
                Some(range) => {
                    let range = if in_place {
                        range
                    } else {
                        sealed.clear();
                        sealed.extend_from_slice(range);
                        &mut sealed[..]
                    };
                    blob::open_blob_into_with(
                        key,
                        hasher,
                        e.kind,
                        &e.id,
                        range,
                        e.raw_length,
                        &mut plain,
                        &self.repo.blob_sources(),
                    )
                    .map_err(|err| err.to_string())
                }
            };
            if let Err(why) = r {
                let what = match e.kind {
                    BlobKind::Data => "data blob",
                    BlobKind::Tree => "tree",
                };
                out.problems.push(
                    Problem::new(
                        ProblemKind::BlobDamaged,
                        format!("pack {id}: {what} {} at offset {start}: {why}", e.id),
                    )
                    .pack(*id)
                    .blob(e.id),
                );
            }
        }
        if !hash_ok && out.problems.is_empty() {
            // Every blob opens, yet the bytes changed: the prefix or the
            // header's own bytes are damaged. No file is affected (yet).
            out.problems.push(
                Problem::new(
                    ProblemKind::PackHashMismatch,
                    format!("pack {id}: content does not hash to its name (blobs intact)"),
                )
                .pack(*id),
            );
        }
        out.verified = hash_ok && out.problems.is_empty();
        out
    }

    /// Finds the snapshots and paths affected by each error that names
    /// blobs, walking every snapshot but skipping subtrees known clean.
    fn attribute(&mut self, snaps: &[SnapshotEntry]) {
        let mut affected: HashMap<usize, Affected> = HashMap::new();
        let mut clean: HashMap<TreeId, bool> = HashMap::new();
        let mut kept: HashMap<TreeId, std::sync::Arc<Tree>> = HashMap::new();
        for s in snaps {
            let root = s.snapshot.tree;
            for &p in self.bad_blobs.get(&root.as_blob()).into_iter().flatten() {
                affected.entry(p).or_default().add(s.id, b"");
            }
            let mut prefix = Vec::new();
            self.attribute_tree(
                s.id,
                &root,
                &mut prefix,
                &mut clean,
                &mut kept,
                &mut affected,
            );
        }
        for (at, a) in affected {
            let p = &mut self.errors[at];
            p.snapshots = a.snapshots.into_iter().collect();
            p.paths = a.paths.into_iter().collect();
            p.paths_omitted = a.omitted;
        }
    }

    /// True when something below `tree` is affected.
    fn attribute_tree(
        &self,
        snap: SnapshotId,
        tree: &TreeId,
        prefix: &mut Vec<u8>,
        clean: &mut HashMap<TreeId, bool>,
        kept: &mut HashMap<TreeId, std::sync::Arc<Tree>>,
        affected: &mut HashMap<usize, Affected>,
    ) -> bool {
        if clean.get(tree) == Some(&true) {
            return false;
        }
        let t = match kept.get(tree) {
            Some(t) => t.clone(),
            None => match self.load_tree(tree) {
                TreeLoad::Ok(t) => std::sync::Arc::new(t),
                // Unloadable: its own problem was attributed to its parent.
                _ => {
                    clean.insert(*tree, true);
                    return false;
                }
            },
        };
        let mut found = false;
        for n in &t.nodes {
            let len = prefix.len();
            prefix.push(b'/');
            prefix.extend_from_slice(&n.name);
            for c in &n.content {
                for &p in self.bad_blobs.get(c).into_iter().flatten() {
                    affected.entry(p).or_default().add(snap, prefix);
                    found = true;
                }
            }
            if let Some(sub) = &n.subtree {
                for &p in self.bad_blobs.get(&sub.as_blob()).into_iter().flatten() {
                    affected.entry(p).or_default().add(snap, prefix);
                    found = true;
                }
                if self.attribute_tree(snap, sub, prefix, clean, kept, affected) {
                    found = true;
                }
            }
            prefix.truncate(len);
        }
        clean.insert(*tree, !found);
        if found {
            kept.insert(*tree, t);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_syntax() {
        assert_eq!("2/5".parse::<ReadData>().unwrap(), ReadData::Subset(2, 5));
        assert_eq!("25%".parse::<ReadData>().unwrap(), ReadData::Fraction(0.25));
        assert_eq!("10%".parse::<ReadData>().unwrap().to_string(), "10%");
        assert_eq!("12.5%".parse::<ReadData>().unwrap().to_string(), "12.5%");
        for bad in [
            ReadData::Subset(0, 4),
            ReadData::Subset(5, 4),
            ReadData::Subset(1, 0),
            ReadData::Fraction(0.0),
            ReadData::Fraction(1.5),
            ReadData::Fraction(f64::NAN),
            ReadData::Bytes(0),
        ] {
            assert!(bad.validate().is_err(), "{bad:?} accepted");
        }
        assert!(ReadData::Subset(4, 4).validate().is_ok());
        assert_eq!("5G".parse::<ReadData>().unwrap(), ReadData::Bytes(5 << 30));
        assert_eq!(
            "500MiB".parse::<ReadData>().unwrap(),
            ReadData::Bytes(500 << 20)
        );
        assert_eq!("1.5K".parse::<ReadData>().unwrap(), ReadData::Bytes(1536));
        assert_eq!("4096".parse::<ReadData>().unwrap(), ReadData::Bytes(4096));
        for bad in [
            "0/4", "5/4", "1/0", "1/300", "0%", "101%", "x%", "5Q", "", "0", "-1G",
        ] {
            assert!(
                matches!(bad.parse::<ReadData>(), Err(Error::InvalidArgument(_))),
                "{bad:?} accepted"
            );
        }
    }
}
