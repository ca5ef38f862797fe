//! The audit trail (SPEC §31): one signed, hash-chained, encrypted record
//! per command that changes the repository or reads data out of it.
//!
//! Records live in `audit/`, named by the BLAKE3 hash of their clear
//! envelope and its signature. Each names the heads it saw as parents, so
//! the trail is a DAG: two hosts appending at once make a fork, which the
//! next record merges by naming both. An auditor holding only the public
//! key checks names, signatures and parent links; with the password the
//! bodies are opened and checked against their envelopes too.

mod file;
mod observe;
mod report;
mod seal;
mod signer;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::backend::BackendError;
use crate::backend::{Backend, ObjectKind};
use crate::blob::BlobError;
use crate::crypto::DataKeys;
use crate::repository::{Repository, now_ns};

pub use file::{Envelope, RECORD_MAGIC, RECORD_VERSION, RecordFile, decode, encode_head};
pub use observe::{ObjectTally, ObservedBackend};
pub use report::{SignedReport, sign_report_with, verify_signed_report};
pub use signer::{SIGNER_MAGIC, SIGNER_NAME, parse_public, public_text};

/// The text form of an audit public key starts with this.
pub const PUBLIC_KEY_PREFIX: &str = "cairn-audit-ed25519:";
/// Snapshot metadata key holding the trail's heads when the backup began
/// (names joined by `,`): an anchor a later truncation cannot remove.
pub const ANCHOR_KEY: &str = "audit.head";

/// What can be wrong with the audit trail's objects or keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A record or the signing key is not what the format says.
    #[error("malformed audit object: {0}")]
    Malformed(String),
    /// A public key that does not parse.
    #[error("not an audit public key: {0:?}")]
    BadPublicKey(String),
    /// A signed report that does not verify.
    #[error("signed report: {0}")]
    BadReport(String),
    /// A sealed audit object does not open under the repository's key.
    #[error("audit object does not open: {0}")]
    Sealed(#[from] BlobError),
    /// Storage failure.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A repository operation failed (reading snapshots for anchors).
    #[error(transparent)]
    Repository(#[from] crate::error::Error),
}

impl AuditError {
    /// For the engine's own errors: finding heads fails only on storage.
    pub(crate) fn into_error(self) -> crate::error::Error {
        match self {
            AuditError::Backend(e) => e.into(),
            AuditError::Repository(e) => e,
            e => BackendError {
                error_kind: crate::backend::BackendErrorKind::Permanent,
                op: "read",
                kind: ObjectKind::Audit,
                name: String::new(),
                source: std::io::Error::other(e.to_string()),
            }
            .into(),
        }
    }
}

/// Result with [`AuditError`].
pub type Result<T, E = AuditError> = std::result::Result<T, E>;

/// What one record says: its sealed body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the command ended, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// Host name.
    pub host: String,
    /// User name.
    pub user: String,
    /// The command (`backup`, `key add`, `pg restore`, …).
    pub command: String,
    /// Its arguments, with secrets replaced by `***`.
    pub args: Vec<String>,
    /// Objects created, by kind.
    pub created: BTreeMap<String, u64>,
    /// Objects deleted, by kind.
    pub deleted: BTreeMap<String, u64>,
    /// Snapshots written.
    pub snapshots_created: Vec<String>,
    /// Snapshots deleted.
    pub snapshots_deleted: Vec<String>,
    /// `ok`, `incomplete` or `error`.
    pub outcome: String,
    /// The error message, when it failed.
    pub error: Option<String>,
    /// The exit code the command ended with.
    pub exit_code: u8,
    /// `cairn x.y.z`.
    pub program_version: String,
    /// 16 random bytes (hex), so the envelope's hash of this body cannot
    /// be confirmed by guessing the body.
    #[serde(default)]
    pub salt: String,
}

impl AuditRecord {
    /// A record of `command` by this host and user.
    pub fn new(command: &str) -> Self {
        Self {
            host: crate::repository::hostname(),
            user: crate::repository::username(),
            command: command.into(),
            ..Default::default()
        }
    }

    /// Fills in the tally of a [`ObservedBackend`].
    pub fn with_tally(mut self, t: &ObjectTally) -> Self {
        self.created = t.created.clone();
        self.deleted = t.deleted.clone();
        self.snapshots_created = t.snapshots_created.clone();
        self.snapshots_deleted = t.snapshots_deleted.clone();
        self
    }
}

/// A record read back, with its place in the trail.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// Its name (64 hex digits).
    pub name: String,
    /// The records it follows.
    pub parents: Vec<String>,
    /// Its height in the DAG.
    pub height: u64,
    /// What it says.
    pub record: AuditRecord,
}

/// One problem `audit verify` found, naming the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditProblem {
    /// The record's name (or the name a missing record had).
    pub record: String,
    /// What is wrong.
    pub problem: String,
}

impl std::fmt::Display for AuditProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "audit record {}: {}", self.record, self.problem)
    }
}

/// The result of verifying the trail.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditVerification {
    /// Records found.
    pub records: usize,
    /// Records no other names as parent (more than one after a fork that
    /// no later record merged).
    pub heads: Vec<String>,
    /// Anchors checked (snapshots naming heads).
    pub anchors: usize,
    /// Whether the bodies were opened (with the password) or only the
    /// envelopes checked (public key only).
    pub bodies_checked: bool,
    /// Everything wrong; empty when the trail is intact.
    pub problems: Vec<AuditProblem>,
}

/// A record's place in the DAG, as cached locally.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Node {
    height: u64,
    parents: Vec<String>,
}

/// The audit trail of one repository: cheap to hold after the repository
/// itself is gone (a command's record is written when it ends). Clones
/// share the heads once found.
#[derive(Clone)]
pub struct AuditLog {
    backend: Arc<dyn Backend>,
    data_key: DataKeys,
    /// Where the DAG of records already read is kept between commands, so
    /// finding the heads costs one listing (SPEC §31.4).
    cache_file: Option<PathBuf>,
    /// The heads, once found: a command finds them once (SPEC §31.4).
    heads: Arc<std::sync::OnceLock<Heads>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("location", &self.backend.location())
            .finish_non_exhaustive()
    }
}

/// The current heads of the trail, from one listing.
#[derive(Debug, Clone, Default)]
pub struct Heads {
    names: Vec<String>,
    height: Option<u64>,
}

impl Heads {
    /// The head names, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }
    /// The anchor value for snapshot metadata (`a,b`), `None` for an empty trail.
    pub fn anchor(&self) -> Option<String> {
        (!self.names.is_empty()).then(|| self.names.join(","))
    }
}

fn is_record_name(n: &str) -> bool {
    n.len() == 64
        && n.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn name_bytes(n: &str) -> Option<[u8; 32]> {
    hex::decode(n).ok()?.try_into().ok()
}

impl Repository {
    /// The audit trail, with its DAG cached in `cache_file` (`None`: read
    /// every record's envelope to find the heads).
    pub fn audit_log(&self, cache_file: Option<PathBuf>) -> AuditLog {
        AuditLog {
            backend: self.shared_backend(),
            data_key: seal_key(self).clone(),
            cache_file,
            heads: Arc::default(),
        }
    }

    /// Makes the heads of `log` the anchor of every snapshot written from
    /// now on ([`ANCHOR_KEY`]), found when the first one is written: a
    /// backup takes them from the listing of its walk (SPEC §15), and the
    /// command's record then follows the same heads. The first call wins;
    /// [`Repository::set_audit_anchor`] takes precedence.
    pub fn anchor_to(&self, log: &AuditLog) {
        let _ = self.audit_trail.set(Box::new(log.clone()));
    }

    /// The anchor for a snapshot written now: set, or the heads of the
    /// trail given to [`Repository::anchor_to`] (found now if not yet).
    pub(crate) fn audit_anchor(&self) -> crate::error::Result<Option<String>> {
        if let Some(a) = self.audit_anchor_set() {
            return Ok(Some(a.to_string()));
        }
        match self.anchor_trail() {
            Some(log) => Ok(log.heads_once().map_err(AuditError::into_error)?.anchor()),
            None => Ok(None),
        }
    }

    fn anchor_trail(&self) -> Option<&AuditLog> {
        self.audit_trail.get()?.downcast_ref()
    }

    /// The trail whose heads a snapshot will need and nobody has found
    /// yet: a backup lists `audit/` in its walk for it.
    pub(crate) fn audit_trail_unread(&self) -> Option<&AuditLog> {
        self.anchor_trail()
            .filter(|l| self.audit_anchor_set().is_none() && l.heads.get().is_none())
    }

    /// Verifies the trail with the repository's own signing key, opening
    /// every body, and checks that the heads each snapshot names as its
    /// anchor ([`ANCHOR_KEY`]) exist.
    pub fn audit_verify(&self) -> Result<AuditVerification> {
        let log = self.audit_log(None);
        let key = signer::load(&*log.backend, &log.data_key)?;
        let mut anchors = Vec::new();
        for s in self.snapshots()? {
            // A copy keeps the anchor of the repository it was made in.
            if s.snapshot.original.is_some() {
                continue;
            }
            if let Some((_, v)) = s.snapshot.metadata.iter().find(|(k, _)| k == ANCHOR_KEY) {
                let heads = v.split(',').map(str::to_string).collect();
                anchors.push((format!("snapshot {}", s.id.short()), heads));
            }
        }
        let Some(key) = key else {
            let mut v = AuditVerification {
                bodies_checked: true,
                ..Default::default()
            };
            // No key: no record was ever written; an anchor proves otherwise.
            check_anchors(&mut v, &HashSet::new(), &anchors);
            if !log.record_names()?.is_empty() {
                v.problems.push(AuditProblem {
                    record: SIGNER_NAME.into(),
                    problem: "the signing key is missing, but records exist".into(),
                });
            }
            return Ok(v);
        };
        verify_trail(
            &*log.backend,
            &key.verifying_key(),
            Some(&log.data_key),
            &anchors,
        )
    }
}

/// Where a stored audit object's sealed part starts, and its associated
/// data: the signing key is a sealed file (SPEC §31.3), a record's body
/// follows its clear, signed head (§31.2). For the epoch census and rekey,
/// which re-seal that part in place; `None` for what does not parse.
pub(crate) fn sealed_part(name: &str, bytes: &[u8]) -> Option<(usize, Vec<u8>)> {
    use crate::format::FILE_PREFIX_LEN;
    if name == signer::SIGNER_NAME {
        return (bytes.len() >= FILE_PREFIX_LEN)
            .then(|| (FILE_PREFIX_LEN, bytes[..FILE_PREFIX_LEN].to_vec()));
    }
    let f = file::decode(bytes).ok()?;
    Some((f.body_at, seal::body_ad(&f.name)))
}

/// The key audit bodies and the signing key are sealed with.
fn seal_key(repo: &Repository) -> &DataKeys {
    repo.data_keys()
}

/// Verifies the trail in `backend` with only a public key: names,
/// signatures and parent links; bodies stay sealed (SPEC §31.5).
pub fn verify_audit_trail(
    backend: &dyn Backend,
    public_key: &VerifyingKey,
) -> Result<AuditVerification> {
    verify_trail(backend, public_key, None, &[])
}

impl AuditLog {
    /// Names of the records stored (one listing).
    fn record_names(&self) -> Result<Vec<String>> {
        Ok(self
            .backend
            .list(ObjectKind::Audit)?
            .into_iter()
            .map(|o| o.name)
            .filter(|n| is_record_name(n))
            .collect())
    }

    fn load_cache(&self) -> HashMap<String, Node> {
        self.cache_file
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save_cache(&self, dag: &HashMap<String, Node>) {
        let Some(p) = &self.cache_file else { return };
        // The cache is disposable: failing to write it costs reads next time.
        if let (Some(dir), Ok(bytes)) = (p.parent(), serde_json::to_vec(dag)) {
            let _ = std::fs::create_dir_all(dir);
            let tmp = p.with_extension("tmp");
            if std::fs::write(&tmp, bytes).is_ok() {
                let _ = std::fs::rename(&tmp, p);
            }
        }
    }

    /// The trail's current heads: one listing, plus a read of each record
    /// the local cache does not know yet. Damaged records are left out
    /// (`audit verify` names them).
    pub fn heads(&self) -> Result<Heads> {
        self.heads_listed(self.backend.list(ObjectKind::Audit)?)
    }

    /// The heads as this log (or a clone) first found them, by
    /// [`AuditLog::heads`] or from a backup's walk (SPEC §31.4): what a
    /// command's record follows and its snapshots anchor.
    pub fn heads_once(&self) -> Result<Heads> {
        if let Some(h) = self.heads.get() {
            return Ok(h.clone());
        }
        let h = self.heads()?;
        Ok(self.heads.get_or_init(|| h).clone())
    }

    /// [`AuditLog::heads_once`] from `listed`, the storage's listing of
    /// `audit/` (a backup's walk, SPEC §15).
    pub(crate) fn heads_once_listed(
        &self,
        listed: Vec<crate::backend::ObjectInfo>,
    ) -> Result<Heads> {
        if let Some(h) = self.heads.get() {
            return Ok(h.clone());
        }
        let h = self.heads_listed(listed)?;
        Ok(self.heads.get_or_init(|| h).clone())
    }

    /// The heads among `listed`, the storage's listing of `audit/`.
    fn heads_listed(&self, listed: Vec<crate::backend::ObjectInfo>) -> Result<Heads> {
        let names: Vec<String> = listed
            .into_iter()
            .map(|o| o.name)
            .filter(|n| is_record_name(n))
            .collect();
        let mut dag = self.load_cache();
        let listed: HashSet<&String> = names.iter().collect();
        dag.retain(|n, _| listed.contains(n));
        let mut changed = false;
        for n in &names {
            if dag.contains_key(n) {
                continue;
            }
            let Ok(bytes) = self.backend.read(ObjectKind::Audit, n) else {
                continue;
            };
            let Ok(f) = file::decode(&bytes) else {
                continue;
            };
            if hex::encode(f.name) != *n {
                continue;
            }
            dag.insert(
                n.clone(),
                Node {
                    height: f.envelope.height,
                    parents: f.envelope.parents.iter().map(hex::encode).collect(),
                },
            );
            changed = true;
        }
        if changed || dag.len() != names.len() {
            self.save_cache(&dag);
        }
        let referenced: HashSet<&String> = dag.values().flat_map(|n| &n.parents).collect();
        let mut heads: Vec<String> = dag
            .keys()
            .filter(|n| !referenced.contains(n))
            .cloned()
            .collect();
        heads.sort();
        let height = heads.iter().map(|h| dag[h].height).max();
        Ok(Heads {
            names: heads,
            height,
        })
    }

    /// Appends `record` after `heads` (from [`AuditLog::heads`]): one
    /// write (and, the first time, the signing key). Returns its name.
    pub fn append(&self, heads: &Heads, record: &AuditRecord) -> Result<String> {
        let cached = self
            .cache_file
            .as_ref()
            .map(|f| f.with_file_name("audit-signer"));
        let key = signer::load_or_create(&*self.backend, &self.data_key, cached.as_deref())?;
        let mut record = record.clone();
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        record.salt = hex::encode(salt);
        if record.time_ns == 0 {
            record.time_ns = now_ns();
        }
        let body = serde_json::to_vec(&record)
            .map_err(|e| AuditError::Malformed(format!("cannot encode a record: {e}")))?;
        let parents: Vec<[u8; 32]> = heads.names.iter().filter_map(|n| name_bytes(n)).collect();
        let envelope = Envelope {
            time_ns: record.time_ns,
            height: heads.height.map_or(0, |h| h + 1),
            body_commit: *blake3::hash(&body).as_bytes(),
            parents,
        };
        let (mut bytes, name) = file::encode_head(&envelope, &key);
        bytes.extend_from_slice(&seal::seal_body(&self.data_key, &name, &body));
        let hex_name = hex::encode(name);
        self.backend.write(ObjectKind::Audit, &hex_name, &bytes)?;
        let mut dag = self.load_cache();
        dag.insert(
            hex_name.clone(),
            Node {
                height: envelope.height,
                parents: heads.names.clone(),
            },
        );
        self.save_cache(&dag);
        Ok(hex_name)
    }

    /// Every record that opens, oldest first (by height, then time), and
    /// the names of those that did not.
    pub fn entries(&self) -> Result<(Vec<AuditEntry>, Vec<String>)> {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for n in self.record_names()? {
            match self.entry(&n) {
                Ok(e) => out.push(e),
                Err(_) => bad.push(n),
            }
        }
        out.sort_by(|a, b| {
            (a.height, a.record.time_ns, &a.name).cmp(&(b.height, b.record.time_ns, &b.name))
        });
        Ok((out, bad))
    }

    fn entry(&self, name: &str) -> Result<AuditEntry> {
        let bytes = self.backend.read(ObjectKind::Audit, name)?;
        let f = file::decode(&bytes)?;
        let body = seal::open_body(&self.data_key, &f.name, &bytes[f.body_at..])?;
        let record: AuditRecord = serde_json::from_slice(&body)
            .map_err(|e| AuditError::Malformed(format!("record {name}: {e}")))?;
        Ok(AuditEntry {
            name: name.to_string(),
            parents: f.envelope.parents.iter().map(hex::encode).collect(),
            height: f.envelope.height,
            record,
        })
    }

    /// The repository's audit public key, made on first use.
    pub fn public_key(&self) -> Result<VerifyingKey> {
        Ok(signer::load_or_create(&*self.backend, &self.data_key, None)?.verifying_key())
    }

    /// Signs a report (SPEC §31.6) with the repository's audit key.
    pub fn sign_report(&self, report: &[u8]) -> Result<Vec<u8>> {
        let key = signer::load_or_create(&*self.backend, &self.data_key, None)?;
        Ok(sign_report_with(&key, report))
    }
}

fn check_anchors(
    v: &mut AuditVerification,
    present: &HashSet<String>,
    anchors: &[(String, Vec<String>)],
) {
    for (what, heads) in anchors {
        v.anchors += 1;
        for h in heads.iter().filter(|h| !present.contains(*h)) {
            v.problems.push(AuditProblem {
                record: h.clone(),
                problem: format!("missing: {what} names it as the trail's head (truncated?)"),
            });
        }
    }
}

fn verify_trail(
    backend: &dyn Backend,
    key: &VerifyingKey,
    data_key: Option<&DataKeys>,
    anchors: &[(String, Vec<String>)],
) -> Result<AuditVerification> {
    let mut v = AuditVerification {
        bodies_checked: data_key.is_some(),
        ..Default::default()
    };
    let mut problem = |record: &str, p: String| {
        v.problems.push(AuditProblem {
            record: record.to_string(),
            problem: p,
        })
    };
    let mut good: HashMap<String, Envelope> = HashMap::new();
    let mut present = HashSet::new();
    for o in backend.list(ObjectKind::Audit)? {
        let n = o.name;
        if n == SIGNER_NAME {
            continue;
        }
        if !is_record_name(&n) {
            problem(&n, "not an audit record name".into());
            continue;
        }
        present.insert(n.clone());
        let bytes = match backend.read(ObjectKind::Audit, &n) {
            Ok(b) => b,
            Err(e) => {
                problem(&n, format!("cannot be read: {e}"));
                continue;
            }
        };
        let f = match file::decode(&bytes) {
            Ok(f) => f,
            Err(e) => {
                problem(&n, e.to_string());
                continue;
            }
        };
        if hex::encode(f.name) != n {
            problem(
                &n,
                "its content does not match its name (altered, or swapped with another record)"
                    .into(),
            );
            continue;
        }
        if !f.signed_by(&bytes, key) {
            problem(
                &n,
                "its signature does not verify with the public key".into(),
            );
            continue;
        }
        if let Some(dk) = data_key {
            match seal::open_body(dk, &f.name, &bytes[f.body_at..]) {
                Err(e) => {
                    problem(&n, format!("its body does not decrypt: {e}"));
                    continue;
                }
                Ok(body) if *blake3::hash(&body).as_bytes() != f.envelope.body_commit => {
                    problem(&n, "its body does not match its signed envelope".into());
                    continue;
                }
                Ok(_) => {}
            }
        }
        good.insert(n, f.envelope);
    }
    let mut referenced = HashSet::new();
    let mut names: Vec<&String> = good.keys().collect();
    names.sort();
    for n in names {
        let env = &good[n];
        let mut expect = 0;
        for p in env.parents.iter().map(hex::encode) {
            match good.get(&p) {
                Some(pe) => expect = expect.max(pe.height + 1),
                None if present.contains(&p) => {}
                None => problem(&p, format!("missing: record {n} names it as its parent")),
            }
            referenced.insert(p);
        }
        let parents_ok = env
            .parents
            .iter()
            .all(|p| good.contains_key(&hex::encode(p)));
        if parents_ok && env.height != expect {
            problem(
                n,
                format!(
                    "its height {} does not follow its parents' ({expect} expected): reordered",
                    env.height
                ),
            );
        }
    }
    v.records = present.len();
    let mut heads: Vec<String> = good
        .keys()
        .filter(|n| !referenced.contains(*n))
        .cloned()
        .collect();
    heads.sort();
    v.heads = heads;
    check_anchors(&mut v, &present, anchors);
    Ok(v)
}
