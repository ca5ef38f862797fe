//! Backup: files and directories, or named streams, into a new snapshot
//! (SPEC §15).

mod archiver;
mod delta;
mod source;
mod walk;

pub use delta::DeltaSource;

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use archiver::{Archiver, ArchiverSettings, Selection};

use crate::backend::ObjectKind;
use crate::error::{Error, Result};
use crate::id::{PackId, SnapshotId};
use crate::pattern::PathPatterns;
use crate::progress::{NoProgress, Progress};
use crate::repository::{self, Repository, SnapshotFilter};
use crate::snapshot::{Snapshot, SnapshotEntry};
use crate::tree::{Node, NodeKind, Tree};
use crate::warning::Warning;

/// Stack size of the threads that walk the source tree. A path is at most
/// `PATH_MAX` (4096) bytes, so at most 2048 directories deep; a debug build
/// needs tens of KiB of stack per level.
const WALK_STACK: usize = 256 << 20;

/// Name suffix of the file beside a delta-compressed stream that holds its
/// references (SPEC §6.6).
pub const REFERENCES_SUFFIX: &str = ".references";

/// Which snapshot to compare with.
#[derive(Debug, Clone, Default)]
pub enum ParentChoice {
    /// The latest snapshot of the same host and paths.
    #[default]
    Auto,
    /// None: read every file.
    None,
    /// This snapshot.
    Id(SnapshotId),
}

/// What a backup produced.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The new snapshot.
    pub snapshot: SnapshotEntry,
    /// Entries skipped or read inconsistently (the CLI exits 3 if any).
    pub warnings: Vec<Warning>,
    /// Packs left unindexed by interrupted backups that this one took over
    /// instead of uploading their blobs again.
    pub packs_resumed: usize,
}

/// Builder for one backup run.
pub struct Backup<'a> {
    repo: &'a Repository,
    paths: Vec<PathBuf>,
    stream: Option<(String, Box<dyn Read + Send + 'a>)>,
    excludes: Vec<String>,
    one_file_system: bool,
    exclude_caches: bool,
    tags: Vec<String>,
    host: Option<String>,
    parent: ParentChoice,
    profile: Option<String>,
    metadata: Vec<(String, String)>,
    late_metadata: Option<LateMetadata<'a>>,
    time_ns: Option<i64>,
    progress: &'a dyn Progress,
    delta: Option<&'a dyn DeltaSource>,
}

/// Metadata known only once the source has been read (see
/// [`Backup::metadata_after`]).
type LateMetadata<'a> = Box<dyn FnOnce() -> std::io::Result<Vec<(String, String)>> + Send + 'a>;

impl Repository {
    /// Starts a backup.
    pub fn backup(&self) -> Backup<'_> {
        Backup {
            repo: self,
            paths: Vec::new(),
            stream: None,
            excludes: Vec::new(),
            one_file_system: false,
            exclude_caches: false,
            tags: Vec::new(),
            host: None,
            parent: ParentChoice::Auto,
            profile: None,
            metadata: Vec::new(),
            late_metadata: None,
            time_ns: None,
            progress: &NoProgress,
            delta: None,
        }
    }
}

impl<'a> Backup<'a> {
    /// Adds a file or directory to back up.
    pub fn path(mut self, p: impl Into<PathBuf>) -> Self {
        self.paths.push(p.into());
        self
    }
    /// Backs up a stream as a file named `name` (may contain `/`) instead of paths.
    pub fn stream(mut self, name: impl Into<String>, reader: impl Read + Send + 'a) -> Self {
        self.stream = Some((name.into(), Box::new(reader)));
        self
    }
    /// Skips entries matching `pattern` (and everything below a match):
    /// see [`PathPattern`](crate::PathPattern) for the rules.
    pub fn exclude(mut self, pattern: impl Into<String>) -> Self {
        self.excludes.push(pattern.into());
        self
    }
    /// Stays on the file system of each given path.
    pub fn one_file_system(mut self, yes: bool) -> Self {
        self.one_file_system = yes;
        self
    }
    /// Skips the contents of directories holding a valid `CACHEDIR.TAG`.
    pub fn exclude_caches(mut self, yes: bool) -> Self {
        self.exclude_caches = yes;
        self
    }
    /// Adds a tag.
    pub fn tag(mut self, t: impl Into<String>) -> Self {
        self.tags.push(t.into());
        self
    }
    /// Overrides the host name recorded.
    pub fn host(mut self, h: impl Into<String>) -> Self {
        self.host = Some(h.into());
        self
    }
    /// Chooses the parent snapshot.
    pub fn parent(mut self, p: ParentChoice) -> Self {
        self.parent = p;
        self
    }
    /// Chunker profile by name (`default`, `small`, `tiny`); default is
    /// `default` for paths and `small` for streams.
    pub fn profile(mut self, name: impl Into<String>) -> Self {
        self.profile = Some(name.into());
        self
    }
    /// Delta-compresses the stream's new chunks against the references
    /// `source` names (SPEC §6.6); streams only.
    pub fn delta_source(mut self, source: &'a dyn DeltaSource) -> Self {
        self.delta = Some(source);
        self
    }
    /// Records a key/value pair in the snapshot.
    pub fn metadata(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.metadata.push((k.into(), v.into()));
        self
    }
    /// Records key/value pairs that `f` computes once the source has been
    /// read completely, before the snapshot is written: facts a stream
    /// reveals only at its end (a physical backup's stop position). An
    /// error from `f` fails the backup like a read error of the stream:
    /// no snapshot is written.
    pub fn metadata_after(
        mut self,
        f: impl FnOnce() -> std::io::Result<Vec<(String, String)>> + Send + 'a,
    ) -> Self {
        self.late_metadata = Some(Box::new(f));
        self
    }
    /// Overrides the snapshot time (nanoseconds since the epoch).
    pub fn time_ns(mut self, t: i64) -> Self {
        self.time_ns = Some(t);
        self
    }
    /// Reports progress to `p`.
    pub fn progress(mut self, p: &'a dyn Progress) -> Self {
        self.progress = p;
        self
    }

    /// Runs the backup and writes the snapshot. SPEC §13: packs, then index,
    /// then the snapshot; on any error no snapshot is written.
    pub fn run(self) -> Result<BackupOutcome> {
        // SPEC §22: announce the backup before reading the index, so a prune
        // that condemns packs after this point waits for us, and one that
        // condemned them before has already removed them from the index.
        // A thread keeps the heartbeat fresh even while a stream is silent.
        let heartbeat = crate::lock::Heartbeat::start(self.repo.backend())?;
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            s.spawn(|| heartbeat.keep_alive(rx));
            // The walk recurses once per directory level, inline on
            // whichever thread reaches a directory: give those threads room
            // for the deepest tree a path can name (only touched pages use
            // memory). Without such a pool, the default stacks still work
            // for ordinary depths.
            let work = || self.run_with(&heartbeat);
            let r = match rayon::ThreadPoolBuilder::new()
                .stack_size(WALK_STACK)
                .build()
            {
                Ok(pool) => pool.install(work),
                Err(_) => work(),
            };
            drop(tx);
            r
        })
    }

    fn run_with(self, heartbeat: &crate::lock::Heartbeat<'_>) -> Result<BackupOutcome> {
        let started = Instant::now();
        let time_ns = self.time_ns.unwrap_or_else(repository::now_ns);
        let host = self.host.clone().unwrap_or_else(repository::hostname);
        let is_stream = self.stream.is_some();
        let stream_name = self.stream.as_ref().map(|(n, _)| n.clone());
        if is_stream != self.paths.is_empty() {
            return Err(Error::InvalidArgument(
                "give either paths or one stream".into(),
            ));
        }
        let profile_name = self
            .profile
            .clone()
            .unwrap_or_else(|| if is_stream { "small" } else { "default" }.into());
        let profile = self.repo.config().profile(&profile_name).ok_or_else(|| {
            Error::InvalidArgument(format!("unknown chunker profile {profile_name:?}"))
        })?;
        let mut abs = Vec::new();
        for p in &self.paths {
            let a = std::path::absolute(p).map_err(|source| Error::Source {
                path: p.clone(),
                source,
            })?;
            abs.push(normalize_path(&a));
        }
        let mut snap_paths: Vec<Vec<u8>> = match &self.stream {
            Some((name, _)) => vec![name.as_bytes().to_vec()],
            None => abs
                .iter()
                .map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
                .collect(),
        };
        snap_paths.sort();
        snap_paths.dedup();
        let auto_parent = matches!(self.parent, ParentChoice::Auto);
        let walked = walk::start(self.repo, auto_parent)?;
        let parent = match &self.parent {
            ParentChoice::None => None,
            ParentChoice::Id(id) => Some(self.repo.snapshot(id)?),
            ParentChoice::Auto => {
                let f = SnapshotFilter {
                    host: Some(host.clone()),
                    tags: Vec::new(),
                    paths: snap_paths.clone(),
                };
                self.repo
                    .snapshots_cached_listed(walked.snapshots)?
                    .into_iter()
                    .rev()
                    .find(|s| f.matches(&s.snapshot))
            }
        };
        let packs_resumed = walked.packs_resumed;
        let archiver = Archiver::new(
            self.repo,
            ArchiverSettings {
                excludes: PathPatterns::new(&self.excludes)?,
                one_file_system: self.one_file_system,
                exclude_caches: self.exclude_caches,
                profile,
                progress: self.progress,
                heartbeat: Some(heartbeat),
                delta: self.delta,
            },
        )?;
        let root = match self.stream {
            Some((name, reader)) => {
                let (ids, n) = archiver.chunk_reader(reader, None).map_err(|e| match e {
                    Error::Source { source, .. } => Error::Stream {
                        name: name.clone(),
                        source,
                    },
                    e => e,
                })?;
                archiver.count_stream(n);
                let mut file = Node::new(Vec::new(), NodeKind::File);
                file.mode = 0o600;
                file.mtime_ns = time_ns;
                file.ctime_ns = time_ns;
                file.size = n;
                file.content = ids;
                file.chunker = profile;
                file.uid = nix::unistd::geteuid().as_raw();
                file.gid = nix::unistd::getegid().as_raw();
                let refs = match self.delta {
                    Some(_) => archiver.delta_closure(&file.content)?,
                    None => Vec::new(),
                };
                let references = (!refs.is_empty()).then(|| {
                    // Keeps the delta references alive (SPEC §6.6).
                    let mut r = file.clone();
                    r.size = refs.iter().map(|(_, n)| n).sum();
                    r.content = refs.into_iter().map(|(id, _)| id).collect();
                    r
                });
                stream_root(&archiver, &name, file, references, time_ns)?
            }
            None => {
                let parent_root = match &parent {
                    // As for subtrees (archiver): an unreadable parent
                    // only costs re-reading files; the warning names why.
                    Some(p) => match self.repo.load_parent_tree(&p.snapshot.tree) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            self.repo.warn(Warning::UnreadableParent {
                                snapshot: p.id,
                                reason: e.to_string(),
                            });
                            None
                        }
                    },
                    None => None,
                };
                archiver.archive_selection(&Selection::from_paths(&abs), parent_root.as_ref())?
            }
        };
        let late = match self.late_metadata {
            Some(f) => f().map_err(|source| match stream_name {
                Some(name) => Error::Stream { name, source },
                None => Error::Source {
                    path: PathBuf::new(),
                    source,
                },
            })?,
            None => Vec::new(),
        };
        let (mut summary, warnings) = archiver.finish()?;
        summary.duration_ns = started.elapsed().as_nanos() as u64;
        let mut tags = self.tags;
        tags.sort();
        tags.dedup();
        let mut metadata = self.metadata;
        metadata.extend(late);
        if let Some(heads) = self.repo.audit_anchor()? {
            metadata.retain(|(k, _)| k != crate::audit::ANCHOR_KEY);
            metadata.push((crate::audit::ANCHOR_KEY.into(), heads));
        }
        metadata.sort();
        let snapshot = Snapshot {
            time_ns,
            host,
            username: repository::username(),
            paths: snap_paths,
            tags,
            parent: parent.map(|p| p.id),
            tree: root,
            program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
            summary,
            metadata,
            original: None,
        };
        let id = self.repo.save_snapshot(&snapshot)?;
        Ok(BackupOutcome {
            snapshot: SnapshotEntry { id, snapshot },
            warnings,
            packs_resumed,
        })
    }
}

/// Resumes interrupted backups (SPEC §15): every pack that no index file
/// names and no prune mark condemns is read from its header and indexed by
/// this backup, so its blobs are not uploaded again. Called after the
/// heartbeat started and the index was synced: a mark written before the
/// heartbeat is listed here (marks before packs: a sweep deletes packs
/// before their mark), and one written later waits for this backup, whose
/// index file then keeps the pack. A pack a concurrent backup has written
/// but not indexed yet ends up named by two index files with the same
/// entries, which costs nothing. A header that does not open (damaged, or
/// another key's) leaves the pack alone for `check` and `prune`.
pub(crate) fn adopt_unindexed_packs(repo: &Repository) -> Result<usize> {
    let marks = crate::mark::load_marks(repo.backend(), repo.data_keys())?;
    let indexed = repo.index().cache().pack_ids()?;
    let listed = repo.backend().list(ObjectKind::Pack)?;
    adopt_listed(repo, marks, indexed, listed)
}

/// [`adopt_unindexed_packs`] from its three readings, taken in this order:
/// the marks read, the packs the synced index names, the listing of
/// `data/` (SPEC §15).
pub(crate) fn adopt_listed(
    repo: &Repository,
    marks: crate::mark::Marks,
    indexed: std::collections::HashSet<PackId>,
    listed: Vec<crate::backend::ObjectInfo>,
) -> Result<usize> {
    let condemned: std::collections::HashSet<PackId> = marks
        .good
        .into_iter()
        .flat_map(|(_, _, m)| m.packs.into_iter().map(|p| p.id))
        .collect();
    let mut n = 0;
    // An indexed pack the storage does not list is lost (SPEC §15): a
    // pack a prune deletes is first dropped from the index, before this
    // backup's heartbeat or after its end. Reusing a blob from it would
    // make a snapshot that cannot be restored.
    let present: std::collections::HashSet<PackId> =
        listed.iter().filter_map(|o| o.name.parse().ok()).collect();
    let lost: std::collections::HashSet<PackId> = indexed
        .iter()
        .filter(|p| !present.contains(*p))
        .copied()
        .collect();
    for p in &lost {
        repo.warn(Warning::MissingPack { pack: *p });
    }
    repo.index().set_lost_packs(lost);
    for o in listed {
        let Ok(id) = o.name.parse::<PackId>() else {
            continue;
        };
        if condemned.contains(&id) || indexed.contains(&id) {
            continue;
        }
        let Ok(header) = repo.read_pack_header(&id) else {
            continue;
        };
        repo.index()
            .adopt_pack(repo.backend(), repo.data_keys(), id, header)?;
        n += 1;
    }
    Ok(n)
}

/// Lexically removes `.` and `..` from an absolute path, without resolving
/// symlinks: how backup records the paths it is given, so a filter on
/// snapshot paths ([`SnapshotFilter::paths`](crate::SnapshotFilter)) matches.
pub fn normalize_path(p: &std::path::Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(s) => out.push(s),
            _ => {}
        }
    }
    out
}

/// Builds the root tree of a stream: `a/b/name` becomes directories `a`, `b`.
fn stream_root(
    archiver: &Archiver<'_>,
    name: &str,
    mut file: Node,
    references: Option<Node>,
    time_ns: i64,
) -> Result<crate::id::TreeId> {
    let comps: Vec<&str> = name
        .split('/')
        .filter(|c| !c.is_empty() && *c != "." && *c != "..")
        .collect();
    let Some((last, dirs)) = comps.split_last() else {
        return Err(Error::InvalidArgument(format!(
            "invalid stream name {name:?}"
        )));
    };
    file.name = last.as_bytes().to_vec();
    let mut nodes = vec![file];
    if let Some(mut r) = references {
        r.name = format!("{last}{REFERENCES_SUFFIX}").into_bytes();
        nodes.push(r);
    }
    let mut tree = Tree { nodes };
    for d in dirs.iter().rev() {
        let id = archiver.save_built_tree(tree)?;
        let mut dir = Node::new(d.as_bytes().to_vec(), NodeKind::Dir);
        dir.mode = 0o700;
        dir.mtime_ns = time_ns;
        dir.subtree = Some(id);
        tree = Tree { nodes: vec![dir] };
    }
    archiver.save_built_tree(tree)
}
