//! The repository: init and open, keys, loading and saving blobs, and the
//! write ordering that keeps it consistent (SPEC §13, §14).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::backend::{
    Backend, Counted, Counters, Limited, ObjectInfo, ObjectKind, RequestStats, Slots,
};
use crate::blob::{self, BlobKind};
use crate::cache::Cache;
use crate::chunker::Chunker;
use crate::compress::Dictionary;
use crate::config::{Config, ContentKeys};
use crate::crypto::{
    Cipher, CryptoError, DataKeys, KdfBudget, KdfParams, KeyFile, MasterKey, Unlocked,
};
use crate::dict::{self, Dictionaries};
use crate::error::{Error, Result, WarnFn, Warnings};
use crate::hash::ContentHasher;
use crate::id::{BlobId, KeyId, RepoId, SnapshotId, TreeId};
use crate::index::Index;
use crate::keyring::{EpochKeys, EpochSecret};
use crate::pack::{BlobLocation, PackHeader, PackWriter};
use crate::snapshot::{Snapshot, SnapshotEntry};
use crate::tree::{Node, NodeKind, Tree};
use crate::warning::Warning;

mod delta;
pub use delta::MAX_DELTA_DEPTH;

/// Options for [`Repository::init`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// argon2id parameters of the first key.
    pub kdf: KdfParams,
    /// zstd level for new blobs (0 = none).
    pub compression_level: i32,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Where the index cache lives (`None`: in memory).
    pub cache_dir: Option<PathBuf>,
    /// Create a version-2 repository, whose small blobs are compressed with
    /// a trained dictionary (SPEC §6.4). `false` creates version 1, which
    /// version-1 builds can read and which never gains a dictionary.
    pub dictionary: bool,
    /// Cut and name content like another repository (`Repository::content_params`),
    /// so snapshots copied between the two deduplicate with each other and
    /// with backups made directly into either (SPEC §5, §24). Creates a
    /// version-3 repository, which needs `dictionary`.
    pub content: Option<ContentParams>,
    /// The AEAD that seals every object (SPEC §3.3). Anything but the
    /// default XChaCha20-Poly1305 creates a version-4 repository (§29.4),
    /// which needs `dictionary`.
    pub cipher: Cipher,
}

/// Another repository's chunker profiles and content keys (SPEC §5), from
/// [`Repository::content_params`], for [`InitOptions::content`]. Holds
/// secrets: its `Debug` shows only a fingerprint.
#[derive(Clone)]
pub struct ContentParams {
    profiles: Vec<crate::config::ChunkerProfile>,
    keys: ContentKeys,
}

impl ContentParams {
    /// A public fingerprint of the content keys: repositories that show the
    /// same one name and cut content alike.
    pub fn fingerprint(&self) -> String {
        self.keys.fingerprint()
    }
}

impl std::fmt::Debug for ContentParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ContentParams({})", self.keys.fingerprint())
    }
}

impl Default for InitOptions {
    fn default() -> Self {
        let c = Config::new(RepoId::from_bytes([0; 32]), 0);
        Self {
            kdf: KdfParams::default(),
            compression_level: c.compression_level,
            pack_size: c.pack_size,
            cache_dir: None,
            dictionary: true,
            content: None,
            cipher: Cipher::default(),
        }
    }
}

/// Damaged files skipped by a read: each name with the error.
pub type DamagedFiles = Vec<(String, Error)>;

/// Options for [`Repository::open`].
#[derive(Clone, Default)]
pub struct OpenOptions {
    /// Directory holding per-repository caches (`None`: in memory).
    pub cache_dir: Option<PathBuf>,
    /// Try only the key file whose id starts with this hex prefix, however
    /// costly its KDF parameters (up to the limits of SPEC §4).
    pub key: Option<String>,
    /// What the open may spend on key files it is not told to use.
    pub kdf_budget: KdfBudget,
    /// Called with each warning as it happens: a damaged index or snapshot
    /// file is skipped with a warning naming it, so the rest of the
    /// repository stays usable (SPEC §13). [`Repository::warnings`] lists
    /// them too.
    pub on_warning: Option<WarnFn>,
    /// Leave reading the index to the handle's first backup or copy, which
    /// reads it anyway after announcing itself (SPEC §22): an open would
    /// list the index files once more, one request on object storage.
    /// Anything else run before that sees only what the local cache held.
    pub defer_index: bool,
    /// The `config` object's bytes when the caller has read them already
    /// (to tell a repository from an empty location before asking for a
    /// password): the open uses them instead of reading it again, one
    /// request fewer on object storage. `None`: the open reads it.
    pub config: Option<Vec<u8>>,
    /// Unlock a copy of the key file kept in the cache directory (by an
    /// earlier open with this option) instead of reading it, one request
    /// fewer on object storage (SPEC §14). That the key file is still in
    /// the repository is confirmed by the handle's first index listing,
    /// which lists `keys/` with it: a removed key then fails with
    /// [`Error::CachedKeyGone`] before anything is read or written through
    /// the index. Meant for handles that sync the index next (a backup, a
    /// copy, or an open without `defer_index`).
    pub key_from_cache: bool,
}

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions")
            .field("cache_dir", &self.cache_dir)
            .field("key", &self.key)
            .field("kdf_budget", &self.kdf_budget)
            .field("on_warning", &self.on_warning.is_some())
            .field("defer_index", &self.defer_index)
            .field("config", &self.config.as_ref().map(Vec::len))
            .field("key_from_cache", &self.key_from_cache)
            .finish()
    }
}

/// Read buffers above this size (two default-profile chunks) are not kept
/// between blobs, so one huge chunk does not pin its memory in every thread.
const MAX_KEPT_BUFFER: usize = 16 << 20;

/// An open, unlocked repository. `Send + Sync`; operations take `&self`.
pub struct Repository {
    backend: Arc<dyn Backend>,
    /// Every request made through `backend`, for [`Repository::request_stats`].
    requests: Arc<Counters>,
    /// Pack transfers allowed at once ([`Repository::set_connections`]).
    slots: Arc<Slots>,
    key: MasterKey,
    /// The live sealing keys (SPEC §29).
    data_keys: DataKeys,
    /// The secrets of the live epochs n >= 1, for grants to new key files.
    epoch_secrets: Vec<EpochSecret>,
    /// Changes when `change_password` replaces this session's key file.
    key_id: std::sync::RwLock<KeyId>,
    hasher: ContentHasher,
    config: Config,
    index: Index,
    dicts: Dictionaries,
    warnings: Arc<Warnings>,
    /// The audit trail's heads, recorded in each new snapshot (SPEC §31.4).
    audit_anchor: std::sync::OnceLock<String>,
    /// The audit trail (an `AuditLog`, which sits below this module) whose
    /// heads are the anchor when none was set (`anchor_to`).
    pub(crate) audit_trail: std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>,
    /// The key file this handle was opened with and the cache directory,
    /// while the key came from the cache's copy and no listing of `keys/`
    /// has shown it yet (SPEC §14).
    key_unconfirmed: std::sync::Mutex<Option<(KeyId, Option<PathBuf>)>>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("location", &self.backend.location())
            .field("id", &self.config.repo_id)
            .finish_non_exhaustive()
    }
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// This machine's host name, or `unknown`.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The current user's name, or their uid.
pub fn username() -> String {
    let uid = nix::unistd::geteuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// A backend as the repository uses it: counted, with pack transfers
/// limited to the connection count.
struct Wired {
    backend: Arc<dyn Backend>,
    requests: Arc<Counters>,
    slots: Arc<Slots>,
}

impl Wired {
    fn new(backend: impl Backend + 'static) -> Self {
        let requests = Arc::new(Counters::default());
        let slots = Arc::new(Slots::new(Repository::DEFAULT_CONNECTIONS));
        let limited = Limited::new(backend, Arc::clone(&slots));
        Self {
            backend: Arc::new(Counted::new(limited, Arc::clone(&requests))),
            requests,
            slots,
        }
    }
}

fn cache_for(dir: &Option<PathBuf>, id: &RepoId) -> Result<Cache> {
    let path = dir
        .as_ref()
        .map(|d| d.join(id.to_hex()).join("index.sqlite"));
    Ok(Cache::open(path.as_deref())?)
}

impl Repository {
    /// Creates a repository in an empty backend. SPEC §13: the key file is
    /// written before the config, so an interrupted init is not a repository.
    pub fn init(
        backend: impl Backend + 'static,
        password: &[u8],
        opts: InitOptions,
    ) -> Result<Self> {
        let wired = Wired::new(backend);
        let backend = Arc::clone(&wired.backend);
        if !backend.list(ObjectKind::Config)?.is_empty() {
            return Err(Error::AlreadyExists(backend.location()));
        }
        let mut rid = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut rid);
        let repo_id = RepoId::from_bytes(rid);
        let mut config = Config::new(repo_id, now_ns());
        config.compression_level = opts.compression_level;
        config.pack_size = opts.pack_size;
        if !opts.dictionary {
            config.version = 1;
        }
        if let Some(c) = opts.content {
            if !opts.dictionary {
                return Err(Error::InvalidArgument(
                    "shared content keys need a repository with dictionaries (version 3)".into(),
                ));
            }
            config.version = crate::format::COPY_VERSION;
            config.chunker_profiles = c.profiles;
            config.content_keys = Some(c.keys);
        }
        if opts.cipher != Cipher::default() {
            if !opts.dictionary {
                return Err(Error::InvalidArgument(format!(
                    "cipher {} needs a repository of version 4, not 1",
                    opts.cipher.name()
                )));
            }
            config.version = crate::format::EPOCH_VERSION;
            config.epochs = vec![0];
        }
        config.validate()?;
        let key = MasterKey::generate();
        let create = if config.version >= crate::format::EPOCH_VERSION {
            KeyFile::create_v4
        } else {
            KeyFile::create
        };
        let kf = create(
            &key,
            password,
            repo_id,
            opts.kdf,
            hostname(),
            username(),
            now_ns(),
        )?;
        let kbytes = kf.encode();
        let key_id = KeyId::hash_of(&kbytes);
        backend.write(ObjectKind::Key, &key_id.to_hex(), &kbytes)?;
        backend.write(
            ObjectKind::Config,
            "config",
            &config.to_file(&DataKeys::epoch_zero_with(opts.cipher, key.data_key())),
        )?;
        let warnings = Arc::new(Warnings::default());
        let index = Index::new(cache_for(&opts.cache_dir, &repo_id)?, Arc::clone(&warnings));
        let keys = EpochKeys {
            data_keys: DataKeys::epoch_zero_with(opts.cipher, key.data_key()),
            secrets: Vec::new(),
        };
        Ok(Self::assemble(
            wired, key, key_id, config, keys, index, warnings,
        ))
    }

    fn assemble(
        wired: Wired,
        key: MasterKey,
        key_id: KeyId,
        config: Config,
        keys: EpochKeys,
        index: Index,
        warnings: Arc<Warnings>,
    ) -> Self {
        let Wired {
            backend,
            requests,
            slots,
        } = wired;
        let hasher = match &config.content_keys {
            Some(c) => ContentHasher::with_keys(c.id_key, c.tree_key, *key.dict_key()),
            None => ContentHasher::new(&key),
        };
        let EpochKeys { data_keys, secrets } = keys;
        let dicts = Dictionaries::new(
            Arc::clone(&backend),
            data_keys.clone(),
            hasher.clone(),
            config.dictionaries(),
        );
        Self {
            hasher,
            backend,
            requests,
            slots,
            key,
            data_keys,
            epoch_secrets: secrets,
            key_id: std::sync::RwLock::new(key_id),
            config,
            index,
            dicts,
            warnings,
            audit_anchor: std::sync::OnceLock::new(),
            audit_trail: std::sync::OnceLock::new(),
            key_unconfirmed: std::sync::Mutex::new(None),
        }
    }

    /// Opens and unlocks a repository with `password`.
    pub fn open(
        backend: impl Backend + 'static,
        password: &[u8],
        opts: OpenOptions,
    ) -> Result<Self> {
        let wired = Wired::new(backend);
        let backend = Arc::clone(&wired.backend);
        let (key, key_id, config, keys, from_copy) =
            Self::unlock_config(&*backend, password, &opts)?;
        let repo_id = config.repo_id;
        let warnings = Arc::new(Warnings::new(opts.on_warning));
        let index = Index::new(cache_for(&opts.cache_dir, &repo_id)?, Arc::clone(&warnings));
        let repo = Self::assemble(wired, key, key_id, config, keys, index, warnings);
        if from_copy {
            *repo
                .key_unconfirmed
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some((key_id, opts.cache_dir.clone()));
        }
        if !opts.defer_index {
            repo.refresh_index()?;
        }
        Ok(repo)
    }

    /// Reads the config, finds the key `password` opens, and decrypts the
    /// config with it: what every open does before it reads anything else
    /// (a WAL store needs no more, SPEC §28).
    pub(crate) fn unlock_config(
        backend: &dyn Backend,
        password: &[u8],
        opts: &OpenOptions,
    ) -> Result<(MasterKey, KeyId, Config, EpochKeys, bool)> {
        let cbytes = match &opts.config {
            Some(b) => b.clone(),
            None => match backend.read(ObjectKind::Config, "config") {
                Ok(b) => b,
                Err(e) if e.is_not_found() => {
                    return Err(Error::NotARepository(backend.location()));
                }
                Err(e) => return Err(e.into()),
            },
        };
        let corrupt_config = |source: blob::BlobError| Error::CorruptObject {
            kind: ObjectKind::Config,
            name: "config".into(),
            source,
        };
        let repo_id = match crate::config::Config::peek_id(&cbytes) {
            Ok(id) => id,
            // Not ours at all (another tool's `config`, or not a config).
            Err(crate::format::FormatError::BadMagic { .. }) => {
                return Err(Error::NotARepository(backend.location()));
            }
            Err(e @ crate::format::FormatError::UnsupportedVersion { .. }) => return Err(e.into()),
            Err(e) => return Err(corrupt_config(e.into())),
        };
        // A version-4 config is opened through grants, which only key
        // files with a public key hold (SPEC §29.3).
        let epochs = crate::format::read_u32_le(&cbytes, crate::format::MAGIC_LEN, "config")
            .is_ok_and(|v| v >= crate::format::EPOCH_VERSION);
        // The key file that opened it last time here, read directly (no
        // listing of `keys/`); if it fails in any way, the ordinary search.
        // With `key_from_cache`, the cache's copy of that key file, or of
        // the one `opts.key` names in full (an unattended key's).
        let cache_dir = opts.cache_dir.as_deref();
        use crate::key_hint::Source;
        let named = opts
            .key
            .as_deref()
            .filter(|k| k.len() == 64)
            .map(str::to_ascii_lowercase);
        let hinted = match (&opts.key, named) {
            (None, _) => crate::key_hint::read(cache_dir, &repo_id).map(|name| {
                let source = if opts.key_from_cache {
                    Source::CopyFirst
                } else {
                    Source::Storage
                };
                (name, source)
            }),
            (Some(_), Some(name)) if opts.key_from_cache => Some((name, Source::CopyOnly)),
            _ => None,
        }
        .and_then(|(name, source)| {
            crate::key_hint::unlock(
                backend,
                cache_dir,
                source,
                &repo_id,
                &name,
                password,
                &opts.kdf_budget,
                epochs,
            )
        });
        if let Some((unlocked, key_id, from_copy)) = hinted
            && let Ok((config, keys)) =
                crate::keyring::open_config(backend, &repo_id, &unlocked, &key_id, &cbytes)
        {
            return Ok((unlocked.master, key_id, config, keys, from_copy));
        }
        let (unlocked, key_id, bytes) = Self::unlock(backend, &repo_id, password, opts, epochs)?;
        let (config, keys) =
            crate::keyring::open_config(backend, &repo_id, &unlocked, &key_id, &cbytes)?;
        crate::key_hint::remember(cache_dir, &repo_id, &key_id);
        if opts.key_from_cache {
            crate::key_hint::keep_copy(cache_dir, &repo_id, &key_id, &bytes);
        }
        Ok((unlocked.master, key_id, config, keys, false))
    }

    /// Finds the key file that `password` opens (SPEC §14): cheapest KDF
    /// parameters first, within `opts.kdf_budget` unless `opts.key` names
    /// the file.
    fn unlock(
        backend: &dyn Backend,
        repo_id: &RepoId,
        password: &[u8],
        opts: &OpenOptions,
        epochs: bool,
    ) -> Result<(Unlocked, KeyId, Vec<u8>)> {
        let named = opts.key.as_deref().map(str::to_ascii_lowercase);
        let mut candidates = Vec::new();
        let decoded = {
            let mut decoded = 0usize;
            for info in backend.list(ObjectKind::Key)? {
                if let Some(prefix) = &named
                    && !info.name.starts_with(prefix.as_str())
                {
                    continue;
                }
                let bytes = backend.read(ObjectKind::Key, &info.name)?;
                // A damaged key file must not lock out the others. Names
                // are not checked: a renamed or swapped key file still
                // opens (`check` reports it, docs/check.md §1).
                let Ok(kf) = KeyFile::decode(&bytes) else {
                    continue;
                };
                decoded += 1;
                if kf.header.repo_id == *repo_id {
                    candidates.push((kf, KeyId::hash_of(&bytes), info.name, bytes));
                }
            }
            decoded
        };
        if let Some(prefix) = &named {
            match candidates.len() {
                0 => return Err(Error::KeyNotFound(prefix.clone())),
                1 => {}
                _ => return Err(Error::AmbiguousKey(prefix.clone())),
            }
        }
        if decoded > 0 && candidates.is_empty() {
            // Key files exist but none is of the repository the config
            // names: the config's id is what is damaged (or replaced).
            return Err(Error::CorruptObject {
                kind: ObjectKind::Config,
                name: "config".into(),
                source: crate::format::FormatError::Malformed {
                    what: "config",
                    reason: "its repository id matches no key file".into(),
                }
                .into(),
            });
        }
        // Cheapest first, so a costly planted file is reached (if at all)
        // only after every ordinary key failed.
        // In a version-4 repository, key files without a public key last:
        // one left behind by an interrupted re-wrap (SPEC §29.4) has the
        // same password as its successor but holds no grant.
        let rank = |kf: &KeyFile| epochs && kf.public.is_none();
        candidates.sort_by(|a, b| {
            (rank(&a.0), a.0.header.kdf.cost(), &a.2).cmp(&(
                rank(&b.0),
                b.0.header.kdf.cost(),
                &b.2,
            ))
        });
        let budget = &opts.kdf_budget;
        let (mut spent, mut tried) = (0u64, 0usize);
        let mut not_tried = Vec::new();
        let mut last = Error::WrongPassword;
        for (kf, id, _, bytes) in candidates {
            let kdf = &kf.header.kdf;
            if named.is_none()
                && (kdf.memory_kib > budget.max_memory_kib
                    || spent.saturating_add(kdf.cost()) > budget.max_total_cost
                    || tried >= budget.max_keys)
            {
                not_tried.push(id);
                continue;
            }
            spent = spent.saturating_add(kdf.cost());
            tried += 1;
            match kf.unlock_full(password) {
                Ok(k) => return Ok((k, id, bytes)),
                Err(CryptoError::WrongPassword) => {}
                Err(e) => last = e.into(),
            }
        }
        if !not_tried.is_empty() {
            return Err(Error::KeysNotTried(not_tried));
        }
        Err(last)
    }

    /// Pack transfers a new repository handle runs at once: enough
    /// requests in flight to hide a network's round trips, few enough that
    /// a backup's packs in flight (16 MiB each by default) keep its memory
    /// small.
    pub const DEFAULT_CONNECTIONS: usize = 4;

    /// The storage backend, as this repository uses it: its requests are
    /// counted ([`Repository::request_stats`]) and its pack transfers
    /// limited ([`Repository::set_connections`]).
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// Lets up to `n` (at least 1) pack transfers run at once: a backup's
    /// uploads, and the pack reads of restore, check and drill. Requests
    /// for other files are small and not limited.
    pub fn set_connections(&mut self, n: usize) {
        self.slots.set_max(n);
    }

    /// How many pack transfers may run at once.
    pub fn connections(&self) -> usize {
        self.slots.max()
    }

    /// Requests this handle made to the storage since it was opened (or
    /// created), by kind, and the bytes sent and received. On a backend
    /// that counts its own HTTP requests (S3), those since the backend was
    /// opened.
    pub fn request_stats(&self) -> RequestStats {
        self.requests.report(&*self.backend)
    }

    /// Runs `f`, whose parallel work reads packs, on enough threads to keep
    /// [`Repository::connections`] reads in flight: on remote storage
    /// behind fewer cores, on a pool of that size; otherwise on the current
    /// pool, so local storage works as before (more threads than cores
    /// cost CPU time and a pack buffer each, and gain nothing there).
    pub(crate) fn with_read_pool<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let want = self.connections();
        if !self.backend.is_remote() || want <= rayon::current_num_threads() {
            return f();
        }
        match rayon::ThreadPoolBuilder::new()
            .num_threads(want)
            .thread_name(|i| format!("cairn-read-{i}"))
            .build()
        {
            Ok(pool) => pool.install(f),
            // No threads to be had: fewer requests in flight, same result.
            Err(_) => f(),
        }
    }
    /// The repository's random id, chosen at [`Repository::init`].
    pub fn id(&self) -> RepoId {
        self.config.repo_id
    }
    /// The format version the repository was created with (SPEC §2).
    pub fn format_version(&self) -> u32 {
        self.config.version
    }
    /// The decrypted config.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }
    /// The id of the key file that unlocked this session (after
    /// [`Repository::change_password`], the key file that replaced it).
    pub fn key_id(&self) -> KeyId {
        *self.key_id.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that key file `id` now wraps this session's master key in
    /// place of the one that unlocked it (`keys.rs` only).
    pub(crate) fn set_key_id(&self, id: KeyId) {
        *self.key_id.write().unwrap_or_else(|e| e.into_inner()) = id;
    }
    /// The blob hasher.
    pub(crate) fn hasher(&self) -> &ContentHasher {
        &self.hasher
    }
    /// The compression dictionaries (SPEC §6.4), which every blob read
    /// resolves references with.
    pub(crate) fn dictionaries(&self) -> &Dictionaries {
        &self.dicts
    }
    /// The live sealing keys (SPEC §29): seal under the newest epoch, open
    /// under any live one. The only way objects are sealed and opened.
    pub fn data_keys(&self) -> &DataKeys {
        &self.data_keys
    }
    /// The secrets of the live epochs n >= 1 (`keys.rs`, `epochs.rs`).
    pub(crate) fn epoch_secrets(&self) -> &[EpochSecret] {
        &self.epoch_secrets
    }

    /// Takes on a rotated or retired set of epochs and the config that
    /// lists them, once that config is durable (`epochs.rs` only).
    pub(crate) fn set_epochs(&mut self, config: Config, keys: EpochKeys) {
        self.dicts = Dictionaries::new(
            Arc::clone(&self.backend),
            keys.data_keys.clone(),
            self.hasher.clone(),
            config.dictionaries(),
        );
        self.config = config;
        self.data_keys = keys.data_keys;
        self.epoch_secrets = keys.secrets;
    }

    /// Re-reads index files written since open (or since the last call);
    /// rebuilds the cache if some were removed by a prune or repair.
    pub(crate) fn refresh_index(&self) -> Result<()> {
        if !self.key_unconfirmed() {
            return self.index.sync(&*self.backend, self.data_keys());
        }
        // The key came from the cache's copy: `keys/` is listed with the
        // index files (on S3 one walk, SPEC §11.2) to confirm it.
        let mut l = self.list_kinds(&[ObjectKind::Index, ObjectKind::Key])?;
        let (index, keys) = (l.next().unwrap_or_default(), l.next().unwrap_or_default());
        self.confirm_key(&keys)?;
        self.index
            .sync_listed(&*self.backend, self.data_keys(), Some(index))
    }

    /// [`Repository::refresh_index`] with the index files as `listed`.
    /// A key still to be confirmed must have been by then
    /// ([`Repository::confirm_key`]): `keys/` is listed for it if not.
    pub(crate) fn refresh_index_listed(&self, listed: Vec<ObjectInfo>) -> Result<()> {
        if self.key_unconfirmed() {
            self.confirm_key(&self.backend.list(ObjectKind::Key)?)?;
        }
        self.index
            .sync_listed(&*self.backend, self.data_keys(), Some(listed))
    }

    /// [`Backend::list_many`], one listing per kind asked, or an error: a
    /// missing one must not pass for an empty kind (no index files would
    /// clear the index cache).
    pub(crate) fn list_kinds(
        &self,
        kinds: &[ObjectKind],
    ) -> Result<std::vec::IntoIter<Vec<ObjectInfo>>> {
        let lists = self.backend.list_many(kinds)?;
        if lists.len() != kinds.len() {
            return Err(crate::backend::BackendError {
                error_kind: crate::backend::BackendErrorKind::Permanent,
                op: "list",
                kind: kinds[0],
                name: String::new(),
                source: std::io::Error::other(format!(
                    "the storage answered {} listings for {} kinds",
                    lists.len(),
                    kinds.len()
                )),
            }
            .into());
        }
        Ok(lists.into_iter())
    }

    /// Whether the key file came from the cache's copy and no listing has
    /// shown it in the repository yet (SPEC §14).
    pub(crate) fn key_unconfirmed(&self) -> bool {
        self.key_unconfirmed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Confirms, from `keys` (a listing of `keys/`), that the key file this
    /// handle was opened with from the cache's copy is still in the
    /// repository; if not, drops the copy and fails: the key was removed.
    pub(crate) fn confirm_key(&self, keys: &[ObjectInfo]) -> Result<()> {
        let mut g = self
            .key_unconfirmed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some((id, cache_dir)) = g.as_ref() else {
            return Ok(());
        };
        let name = id.to_hex();
        if keys.iter().any(|k| k.name == name) {
            *g = None;
            return Ok(());
        }
        crate::key_hint::forget(cache_dir.as_deref(), &self.config.repo_id, id);
        Err(Error::CachedKeyGone(*id))
    }

    /// The counted backend, shared (a WAL store keeps it, SPEC §28).
    /// Sets the audit trail's heads that every snapshot written from now on
    /// records as its anchor ([`crate::ANCHOR_KEY`]); the first call wins.
    pub fn set_audit_anchor(&self, heads: String) {
        let _ = self.audit_anchor.set(heads);
    }

    /// The anchor set by [`Repository::set_audit_anchor`].
    pub(crate) fn audit_anchor_set(&self) -> Option<&str> {
        self.audit_anchor.get().map(String::as_str)
    }

    pub(crate) fn shared_backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.backend)
    }

    /// The master key, for key management (`keys.rs`) and the WAL store's
    /// sub-keys (`wal`) only.
    pub(crate) fn master_key(&self) -> &MasterKey {
        &self.key
    }
    /// The merged index.
    pub(crate) fn index(&self) -> &Index {
        &self.index
    }

    /// A chunker for the config's profile number `profile`.
    pub(crate) fn chunker(&self, profile: u8) -> Result<Chunker> {
        let p = self
            .config
            .chunker_profiles
            .get(profile as usize)
            .ok_or_else(|| Error::InvalidArgument(format!("no chunker profile #{profile}")))?;
        Ok(Chunker::new(p.params, self.content_keys().chunker_seed)?)
    }

    /// The keys this repository names and cuts content with (SPEC §5).
    pub(crate) fn content_keys(&self) -> ContentKeys {
        self.config
            .content_keys
            .clone()
            .unwrap_or_else(|| ContentKeys::of(&self.key))
    }

    /// This repository's chunker profiles and content keys, to create
    /// another that cuts and names content alike ([`InitOptions::content`]).
    pub fn content_params(&self) -> ContentParams {
        ContentParams {
            profiles: self.config.chunker_profiles.clone(),
            keys: self.content_keys(),
        }
    }

    /// Warnings of this session so far: damaged files skipped (SPEC §13).
    pub fn warnings(&self) -> Vec<Warning> {
        self.warnings.list()
    }

    /// Records a warning of this session.
    pub(crate) fn warn(&self, msg: Warning) {
        self.warnings.warn(msg);
    }

    /// Every readable snapshot, oldest first. A damaged snapshot file is
    /// skipped with a warning naming it, so one bad file does not hide every
    /// other backup (SPEC §13); operations that delete data use
    /// [`Repository::snapshots_and_damaged`] and refuse instead. A file
    /// deleted between the listing and its reading was forgotten
    /// meanwhile, and is left out.
    pub fn snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        self.warn_damaged(self.snapshots_and_damaged()?)
    }

    /// Every readable snapshot, oldest first, and the damaged snapshot
    /// files (name, error). A failed storage read is an error, not damage.
    pub fn snapshots_and_damaged(&self) -> Result<(Vec<SnapshotEntry>, DamagedFiles)> {
        self.snapshots_loaded_by(None, |name| self.load_snapshot_named(name))
    }

    /// The snapshots `load` opens, by the storage's listing, oldest first,
    /// and the damaged files apart.
    /// `listed`: the storage's listing if the caller has it.
    fn snapshots_loaded_by(
        &self,
        listed: Option<Vec<ObjectInfo>>,
        load: impl Fn(&str) -> Result<SnapshotEntry>,
    ) -> Result<(Vec<SnapshotEntry>, DamagedFiles)> {
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        let listed = match listed {
            Some(l) => l,
            None => self.backend.list(ObjectKind::Snapshot)?,
        };
        for info in listed {
            match load(&info.name) {
                Ok(s) => out.push(s),
                Err(Error::Backend(e)) if e.is_not_found() => {}
                Err(e @ Error::CorruptObject { .. }) => damaged.push((info.name, e)),
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| {
            a.snapshot
                .time_ns
                .cmp(&b.snapshot.time_ns)
                .then(a.id.cmp(&b.id))
        });
        Ok((out, damaged))
    }

    /// Fails with [`Error::Damaged`] if the last sync skipped a damaged
    /// index file: `op` deletes or rewrites data, and blobs only that file
    /// names would look unused or lost to it (SPEC §13).
    pub(crate) fn require_whole_index(&self, op: &'static str) -> Result<()> {
        match self.index.damaged().into_keys().next() {
            Some(name) => Err(Error::Damaged {
                op,
                kind: ObjectKind::Index,
                name,
            }),
            None => Ok(()),
        }
    }

    /// Every snapshot, or [`Error::Damaged`] naming a damaged one: for `op`,
    /// which deletes data that only the damaged snapshot might reference.
    pub(crate) fn snapshots_or_refuse(&self, op: &'static str) -> Result<Vec<SnapshotEntry>> {
        let (out, damaged) = self.snapshots_and_damaged()?;
        if let Some((name, _)) = damaged.into_iter().next() {
            return Err(Error::Damaged {
                op,
                kind: ObjectKind::Snapshot,
                name,
            });
        }
        Ok(out)
    }

    fn load_snapshot_named(&self, name: &str) -> Result<SnapshotEntry> {
        let bytes = self.backend.read(ObjectKind::Snapshot, name)?;
        self.open_snapshot_file(name, &bytes)
    }

    /// [`Repository::snapshots`] for a backup looking for its parent, and
    /// for a copy's selection in both repositories: the
    /// storage lists the snapshots, and their files come from the local
    /// cache where it holds them (checked against their names, which are
    /// the hashes of their bytes), else from the storage, and are cached
    /// then (SPEC §12). A nothing-changed backup so reads no snapshot file
    /// it read before.
    pub(crate) fn snapshots_cached(&self) -> Result<Vec<SnapshotEntry>> {
        self.snapshots_cached_listed(None)
    }

    /// [`Repository::snapshots_cached`] with the snapshot files as `listed`
    /// when the caller has listed them (a backup's walk, SPEC §15).
    pub(crate) fn snapshots_cached_listed(
        &self,
        listed: Option<Vec<ObjectInfo>>,
    ) -> Result<Vec<SnapshotEntry>> {
        let cache = self.index.cache();
        let found = self.snapshots_loaded_by(listed, |name| {
            let cached = name.parse::<SnapshotId>().ok().and_then(|id| {
                let bytes = cache.snapshot_file(&id).ok().flatten()?;
                (SnapshotId::hash_of(&bytes) == id).then_some(bytes)
            });
            match cached {
                Some(bytes) => self.open_snapshot_file(name, &bytes),
                None => {
                    let bytes = self.backend.read(ObjectKind::Snapshot, name)?;
                    self.open_snapshot_file(name, &bytes).inspect(|s| {
                        let _ = cache.put_snapshot_file(&s.id, &bytes);
                    })
                }
            }
        })?;
        self.warn_damaged(found)
    }

    /// Warns of each damaged snapshot file and returns the readable ones.
    fn warn_damaged(
        &self,
        (out, damaged): (Vec<SnapshotEntry>, DamagedFiles),
    ) -> Result<Vec<SnapshotEntry>> {
        for (name, e) in damaged {
            self.warn(Warning::DamagedSnapshot {
                name,
                reason: e.to_string(),
            });
        }
        Ok(out)
    }

    fn open_snapshot_file(&self, name: &str, bytes: &[u8]) -> Result<SnapshotEntry> {
        let corrupt = |source| Error::CorruptObject {
            kind: ObjectKind::Snapshot,
            name: name.to_string(),
            source,
        };
        let id: SnapshotId = name.parse().map_err(|_| {
            corrupt(blob::BlobError::Format(
                crate::format::FormatError::Malformed {
                    what: "snapshot",
                    reason: "file name is not an id".into(),
                },
            ))
        })?;
        if SnapshotId::hash_of(bytes) != id {
            return Err(corrupt(blob::BlobError::HashMismatch));
        }
        let snapshot = Snapshot::from_file(self.data_keys(), bytes).map_err(corrupt)?;
        Ok(SnapshotEntry { id, snapshot })
    }

    /// Loads one snapshot by id.
    pub fn snapshot(&self, id: &SnapshotId) -> Result<SnapshotEntry> {
        match self.load_snapshot_named(&id.to_hex()) {
            Err(Error::Backend(e)) if e.is_not_found() => Err(Error::SnapshotNotFound(id.to_hex())),
            r => r,
        }
    }

    /// Resolves `latest`, a full id or a unique id prefix, among snapshots
    /// passing `filter`.
    pub fn find_snapshot(&self, spec: &str, filter: &SnapshotFilter) -> Result<SnapshotEntry> {
        // A full id reads only that snapshot: damage elsewhere is no concern.
        if let Ok(id) = spec.parse::<SnapshotId>() {
            // A rewritten snapshot (rekey, SPEC §30) is found by its old id.
            let s = match self.snapshot(&id) {
                Err(Error::SnapshotNotFound(_)) => self
                    .snapshots()?
                    .into_iter()
                    .find(|s| s.snapshot.original == Some(id))
                    .ok_or_else(|| Error::SnapshotNotFound(spec.into()))?,
                r => r?,
            };
            return if filter.matches(&s.snapshot) {
                Ok(s)
            } else {
                Err(Error::SnapshotNotFound(spec.into()))
            };
        }
        let all: Vec<_> = self
            .snapshots()?
            .into_iter()
            .filter(|s| filter.matches(&s.snapshot))
            .collect();
        if spec == "latest" {
            return all
                .into_iter()
                .last()
                .ok_or_else(|| Error::SnapshotNotFound(spec.into()));
        }
        let spec_l = spec.to_ascii_lowercase();
        if spec_l.is_empty() || !spec_l.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::SnapshotNotFound(spec.into()));
        }
        let mut m = all
            .into_iter()
            .filter(|s| s.id.to_hex().starts_with(&spec_l));
        match (m.next(), m.next()) {
            (Some(s), None) => Ok(s),
            (Some(_), Some(_)) => Err(Error::AmbiguousSnapshot(spec.into())),
            _ => Err(Error::SnapshotNotFound(spec.into())),
        }
    }

    /// Writes a snapshot file. SPEC §13: only after its packs and index.
    pub(crate) fn save_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        let bytes = snap.to_file(self.data_keys());
        let id = SnapshotId::hash_of(&bytes);
        self.backend
            .write(ObjectKind::Snapshot, &id.to_hex(), &bytes)?;
        // The next backup looks for its parent among the snapshots: it
        // need not read this one back (SPEC §12).
        let _ = self.index.cache().put_snapshot_file(&id, &bytes);
        Ok(id)
    }

    /// Test door (feature `fault-injection`): stores `blobs` as given, with
    /// no check of what a tree blob holds, and returns their ids; then
    /// [`Repository::forge_snapshot`] can point a snapshot at them. For
    /// tests of damaged or hostile repository content only.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn forge_blobs(&self, blobs: &[(BlobKind, &[u8])]) -> Result<Vec<BlobId>> {
        let packer = self.packer();
        let mut ids = Vec::with_capacity(blobs.len());
        for (kind, plain) in blobs {
            let id = match kind {
                BlobKind::Data => self.hasher.chunk_id(plain),
                BlobKind::Tree => self.hasher.tree_id(plain).as_blob(),
            };
            packer.save(*kind, id, plain)?;
            ids.push(id);
        }
        packer.finish()?;
        Ok(ids)
    }

    /// Test door (feature `fault-injection`): writes a snapshot of tree
    /// `root` without looking at it.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn forge_snapshot(&self, root: TreeId, time_ns: i64) -> Result<SnapshotEntry> {
        let snapshot = Snapshot {
            time_ns,
            host: "forged".into(),
            username: String::new(),
            paths: vec![b"/".to_vec()],
            tags: Vec::new(),
            parent: None,
            tree: root,
            program_version: String::new(),
            summary: Default::default(),
            metadata: Vec::new(),
            original: None,
        };
        let id = self.save_snapshot(&snapshot)?;
        Ok(SnapshotEntry { id, snapshot })
    }

    /// Reads, decrypts and verifies a blob.
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let loc = self.locate(id)?;
        self.read_blob_at(&loc)
    }

    /// Where blob `id` is. A blob the index does not know may belong to a
    /// snapshot written by another process since this one last read the
    /// index files (its index files were written before it, SPEC §13): the
    /// index is brought up to date once before the blob is called missing.
    pub(crate) fn locate(&self, id: &BlobId) -> Result<BlobLocation> {
        if let Some(loc) = self.index.lookup(id)? {
            return Ok(loc);
        }
        self.refresh_index()?;
        self.index.lookup(id)?.ok_or(Error::BlobNotFound(*id))
    }

    /// Where data blob `id`, named in a file's content, is: like
    /// [`Repository::locate`], but a tree blob is refused, so a forged
    /// content list cannot restore a directory listing as file data.
    pub(crate) fn locate_data(&self, id: &BlobId) -> Result<BlobLocation> {
        let loc = self.locate(id)?;
        if loc.entry.kind != BlobKind::Data {
            return Err(Error::TreeAsContent(*id));
        }
        Ok(loc)
    }

    /// Reads a blob at a known location and verifies it.
    pub(crate) fn read_blob_at(&self, loc: &BlobLocation) -> Result<Vec<u8>> {
        self.with_blob_at(loc, <[u8]>::to_vec)
    }

    /// Reads a blob at a known location, verifies it and hands it to `f`
    /// without copying: the sealed and the plain bytes live in this
    /// thread's reused buffers. `f` must not read blobs itself (it would get
    /// fresh buffers, correct but slower).
    pub(crate) fn with_blob_at<R>(
        &self,
        loc: &BlobLocation,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        thread_local! {
            static BUFS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
                const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
        }
        BUFS.with(|b| match b.try_borrow_mut() {
            Ok(mut b) => {
                let (sealed, plain) = &mut *b;
                let r = self.open_blob_at(loc, sealed, plain).map(|()| f(plain));
                // Keep at most one large chunk's worth per thread.
                for v in [sealed, plain] {
                    if v.capacity() > MAX_KEPT_BUFFER {
                        *v = Vec::new();
                    }
                }
                r
            }
            Err(_) => {
                let (mut sealed, mut plain) = (Vec::new(), Vec::new());
                self.open_blob_at(loc, &mut sealed, &mut plain)?;
                Ok(f(&plain))
            }
        })
    }

    fn open_blob_at(
        &self,
        loc: &BlobLocation,
        sealed: &mut Vec<u8>,
        plain: &mut Vec<u8>,
    ) -> Result<()> {
        let e = &loc.entry;
        self.backend
            .read_range_into(
                ObjectKind::Pack,
                &loc.pack.to_hex(),
                u64::from(e.offset),
                e.length,
                sealed,
            )
            .map_err(|err| match err.error_kind {
                crate::backend::BackendErrorKind::NotFound => Error::Backend(err),
                _ => Error::CorruptPack {
                    pack: loc.pack,
                    reason: format!("blob {}: {err}", e.id.short()),
                },
            })?;
        self.open_sealed(loc.pack, e, sealed, plain)
    }

    /// Opens blob `e` of `pack` from its sealed bytes (decrypted in place)
    /// into `plain`, verified against its id.
    pub(crate) fn open_sealed(
        &self,
        pack: crate::id::PackId,
        e: &crate::pack::PackEntry,
        sealed: &mut [u8],
        plain: &mut Vec<u8>,
    ) -> Result<()> {
        blob::open_blob_into_with(
            self.data_keys(),
            &self.hasher,
            e.kind,
            &e.id,
            sealed,
            e.raw_length,
            plain,
            &self.blob_sources(),
        )
        .map_err(|err| self.blob_error(pack, &e.id, err))
    }

    /// The error for blob `id` of `pack` that failed to open: a missing or
    /// damaged dictionary is named as such, not blamed on the pack.
    pub(crate) fn blob_error(
        &self,
        pack: crate::id::PackId,
        id: &BlobId,
        err: blob::BlobError,
    ) -> Error {
        match err {
            blob::BlobError::Format(crate::format::FormatError::Dictionary { dict, reason }) => {
                Error::DictionaryUnavailable {
                    dict,
                    blob: *id,
                    reason,
                }
            }
            err => Error::CorruptPack {
                pack,
                reason: format!("blob {}: {err}", id.short()),
            },
        }
    }

    /// Blob `id` decrypted but not decompressed: its compression marker
    /// and payload (SPEC §6.2, §6.4). For inspection and tests; nothing is
    /// verified beyond the AEAD tag.
    pub(crate) fn stored_payload(&self, id: &BlobId) -> Result<Vec<u8>> {
        let loc = self.locate(id)?;
        let e = &loc.entry;
        let sealed = self.backend.read_range(
            ObjectKind::Pack,
            &loc.pack.to_hex(),
            u64::from(e.offset),
            e.length,
        )?;
        let ad = blob::blob_ad(e.kind, &e.id);
        self.data_keys()
            .open(&ad, &sealed)
            .map(|(p, _)| p)
            .map_err(|err| Error::CorruptPack {
                pack: loc.pack,
                reason: format!("blob {}: {err}", e.id.short()),
            })
    }

    /// Loads and decodes a tree.
    pub fn load_tree(&self, id: &TreeId) -> Result<Tree> {
        let bytes = self.read_blob(&id.as_blob())?;
        Tree::decode(&bytes).map_err(|e| Error::CorruptPack {
            pack: self
                .index
                .lookup(&id.as_blob())
                .ok()
                .flatten()
                .map(|l| l.pack)
                .unwrap_or(crate::id::PackId::from_bytes([0; 32])),
            reason: format!("tree {}: {e}", id.short()),
        })
    }

    /// [`Repository::load_tree`] for a backup comparing with its parent:
    /// the sealed tree comes from the local cache when it holds it (opened
    /// and verified as if read from the pack), else from the storage, and
    /// is cached then (SPEC §12). A nothing-changed backup so makes no
    /// request per directory. `check`, restore and drill read the storage.
    pub(crate) fn load_parent_tree(&self, id: &TreeId) -> Result<Tree> {
        let loc = self.locate(&id.as_blob())?;
        let e = &loc.entry;
        let cache = self.index.cache();
        let cached = cache.tree(&e.id).ok().flatten();
        let from_cache = cached.is_some();
        let mut sealed = match cached {
            Some(s) => s,
            None => self.backend.read_range(
                ObjectKind::Pack,
                &loc.pack.to_hex(),
                u64::from(e.offset),
                e.length,
            )?,
        };
        let copy = (!from_cache).then(|| sealed.clone());
        let mut plain = Vec::new();
        let opened = blob::open_blob_into_with(
            self.data_keys(),
            &self.hasher,
            e.kind,
            &e.id,
            &mut sealed,
            e.raw_length,
            &mut plain,
            &self.blob_sources(),
        );
        let tree = opened.ok().and_then(|()| Tree::decode(&plain).ok());
        match (tree, copy) {
            (Some(t), Some(copy)) => {
                // The cache is disposable: failing to fill it costs a read.
                let _ = cache.put_tree(&e.id, &copy);
                Ok(t)
            }
            (Some(t), None) => Ok(t),
            // A damaged cached copy, or a damaged tree in the pack: the
            // storage's copy decides, with load_tree's errors.
            (None, _) => self.load_tree(id),
        }
    }

    /// The prefix and the sealed header and trailer of a pack holding
    /// `entries`, under this repository's key: what a pack's first and
    /// last bytes are. For the scale benchmark's placeholder packs, whose
    /// blob region is a sparse hole.
    #[doc(hidden)]
    pub(crate) fn pack_ends(&self, entries: &[crate::pack::PackEntry]) -> (Vec<u8>, Vec<u8>) {
        let header = PackHeader {
            entries: entries.to_vec(),
            references: Vec::new(),
        };
        let mut prefix = Vec::new();
        crate::format::write_prefix(&mut prefix, &crate::format::PACK_MAGIC, header.version());
        (prefix, crate::pack::seal_header(self.data_keys(), &header))
    }

    /// Reads a pack's header from its tail (two reads at most).
    pub(crate) fn read_pack_header(&self, pack: &crate::id::PackId) -> Result<PackHeader> {
        let name = pack.to_hex();
        let size = self.backend.size(ObjectKind::Pack, &name)?;
        let corrupt = |reason: String| Error::CorruptPack {
            pack: *pack,
            reason,
        };
        let guess = size.min(64 * 1024) as u32;
        let tail =
            self.backend
                .read_range(ObjectKind::Pack, &name, size - u64::from(guess), guess)?;
        let r = PackHeader::from_tail(self.data_keys(), &tail, size)
            .map_err(|e| corrupt(e.to_string()))?;
        match r {
            Ok(h) => Ok(h),
            Err(need) => {
                let tail =
                    self.backend
                        .read_range(ObjectKind::Pack, &name, size - need, need as u32)?;
                match PackHeader::from_tail(self.data_keys(), &tail, size)
                    .map_err(|e| corrupt(e.to_string()))?
                {
                    Ok(h) => Ok(h),
                    Err(_) => Err(corrupt("header length inconsistent".into())),
                }
            }
        }
    }

    /// Finds the node at `path` (components separated by `/`, raw bytes,
    /// so non-UTF-8 names are reachable) in a snapshot.
    pub fn find_node(&self, root: &TreeId, path: impl AsRef<[u8]>) -> Result<Node> {
        let path = path.as_ref();
        let not_found = || Error::PathNotFound(String::from_utf8_lossy(path).into_owned());
        let mut node = Node::new(Vec::new(), NodeKind::Dir);
        node.subtree = Some(*root);
        for comp in path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
        {
            let Some(sub) = node.subtree.filter(|_| node.kind == NodeKind::Dir) else {
                return Err(not_found());
            };
            let tree = self.load_tree(&sub)?;
            node = tree.get(comp).cloned().ok_or_else(not_found)?;
        }
        Ok(node)
    }

    /// Reads and decrypts one index file (checks its name, too).
    pub(crate) fn load_index(&self, id: &crate::id::IndexId) -> Result<crate::index::IndexFile> {
        crate::index::load_index_file(&*self.backend, self.data_keys(), &id.to_hex())
    }

    /// Writes index files (of at most `MAX_INDEX_ENTRIES` entries each)
    /// describing `packs`, and merges them into the cache. For tools that
    /// index packs themselves; the packs must exist first (SPEC §13).
    pub(crate) fn write_index(
        &self,
        packs: &[crate::index::IndexPack],
    ) -> Result<Vec<crate::id::IndexId>> {
        let ids = crate::index::write_index_files(
            &*self.backend,
            self.data_keys(),
            packs,
            &Default::default(),
            &[],
        )?;
        self.refresh_index()?;
        Ok(ids)
    }

    /// Visits every node below `root` depth-first, in name order, with its
    /// path (components joined by `/`, raw bytes); `visit` returns whether
    /// to descend into a directory. An explicit stack of open directories,
    /// not recursion, so no nesting depth can overflow the thread's stack.
    pub fn walk(
        &self,
        root: &TreeId,
        visit: &mut dyn FnMut(&[u8], &Node) -> Result<bool>,
    ) -> Result<()> {
        // Each frame: a directory's tree, the next entry, and the length of
        // the directory's own path in `prefix`.
        let mut stack = vec![(self.load_tree(root)?, 0usize, 0usize)];
        let mut prefix = Vec::new();
        while let Some((tree, i, len)) = stack.last_mut() {
            let Some(n) = tree.nodes.get(*i) else {
                stack.pop();
                continue;
            };
            *i += 1;
            prefix.truncate(*len);
            prefix.push(b'/');
            prefix.extend_from_slice(&n.name);
            let descend = visit(&prefix, n)?;
            if descend && let Some(sub) = n.subtree {
                let sub_tree = self.load_tree(&sub)?;
                stack.push((sub_tree, 0, prefix.len()));
            }
        }
        Ok(())
    }

    /// Writes a file node's content to `out`, verifying every chunk.
    pub fn dump_node(&self, node: &Node, out: &mut dyn std::io::Write) -> Result<u64> {
        let mut n = 0u64;
        for id in &node.content {
            let data = self.read_blob_at(&self.locate_data(id)?)?;
            out.write_all(&data).map_err(|source| Error::Target {
                path: "<output>".into(),
                source,
            })?;
            n += data.len() as u64;
        }
        Ok(n)
    }

    /// An empty pack; data packs get room for a full pack plus one blob.
    fn new_pack(&self, kind: BlobKind) -> PackWriter {
        match kind {
            BlobKind::Data => PackWriter::with_capacity(self.config.pack_size as usize + (1 << 20)),
            BlobKind::Tree => PackWriter::new(),
        }
    }

    /// A packer for a backup session.
    pub(crate) fn packer(&self) -> Packer<'_> {
        Packer {
            repo: self,
            writers: [
                Mutex::new(self.new_pack(BlobKind::Data)),
                Mutex::new(self.new_pack(BlobKind::Tree)),
            ],
            inflight: Mutex::new(VecDeque::new()),
            dict: Mutex::new(DictState::Unknown),
            packed_adjust: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// The dictionary state a backup starts in: the first stored dictionary
    /// that loads, else collecting samples to train one (SPEC §6.4).
    fn initial_dict_state(&self) -> Result<DictState> {
        if !self.config.dictionaries() || self.config.compression_level == 0 {
            return Ok(DictState::Off);
        }
        for id in self.dicts.list()? {
            // A damaged dictionary is left to `check`; new blobs use another.
            if let Ok(d) = self.dicts.load(&id) {
                return Ok(DictState::Use(d));
            }
        }
        Ok(DictState::Collect {
            blobs: Vec::new(),
            bytes: 0,
        })
    }
}

/// Selects snapshots by host, tags and paths.
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    /// Only snapshots of this host.
    pub host: Option<String>,
    /// Only snapshots carrying all these tags.
    pub tags: Vec<String>,
    /// Only snapshots whose paths are exactly these (in any order).
    pub paths: Vec<Vec<u8>>,
}

impl SnapshotFilter {
    /// True if `s` passes.
    pub fn matches(&self, s: &Snapshot) -> bool {
        if let Some(h) = &self.host
            && &s.host != h
        {
            return false;
        }
        if !self.tags.iter().all(|t| s.tags.contains(t)) {
            return false;
        }
        if !self.paths.is_empty() {
            let mut a = self.paths.clone();
            let mut b = s.paths.clone();
            a.sort();
            b.sort();
            if a != b {
                return false;
            }
        }
        true
    }
}

/// Seals blobs into packs during one backup; two open packs, data and tree.
///
/// A full pack is written by a background thread while the workers go on
/// sealing: a local write ends in an fsync (tens of milliseconds for 16 MiB)
/// and a network write in round trips, either of which would otherwise
/// stall a core. Up to [`Repository::connections`] packs are in flight, in
/// the order they filled; each one's index entries are recorded only after
/// its write succeeded (SPEC §13).
pub(crate) struct Packer<'a> {
    repo: &'a Repository,
    writers: [Mutex<PackWriter>; 2],
    inflight: Mutex<VecDeque<Inflight>>,
    dict: Mutex<DictState>,
    /// Sealed size minus what [`Packer::save`] reported, for blobs held back
    /// to train a dictionary (their size was not known yet).
    packed_adjust: std::sync::atomic::AtomicI64,
}

/// Whether small data blobs are compressed with a dictionary (SPEC §6.4).
enum DictState {
    /// Not looked at yet (trees-only packers never do).
    Unknown,
    /// Version-1 repository, compression off, or training failed.
    Off,
    /// Small blobs use this dictionary.
    Use(Arc<Dictionary>),
    /// No dictionary yet: small blobs are held back as training samples,
    /// claimed but not sealed, until [`dict::TRAIN_BYTES`] are collected
    /// or the packer flushes.
    Collect {
        blobs: Vec<(BlobId, Vec<u8>)>,
        bytes: usize,
    },
}

/// A pack being written in the background, and the entries to index once
/// it is durable.
struct Inflight {
    write: std::thread::JoinHandle<std::result::Result<(), crate::backend::BackendError>>,
    id: crate::id::PackId,
    header: PackHeader,
}

impl Packer<'_> {
    /// Stores `plaintext` as blob `id` unless already stored; returns the
    /// sealed size added (0 when deduplicated).
    pub fn save(&self, kind: BlobKind, id: BlobId, plaintext: &[u8]) -> Result<u64> {
        if !self.repo.index.claim(&id)? {
            return Ok(0);
        }
        let mut dict = None;
        if kind == BlobKind::Data && plaintext.len() <= dict::SMALL_BLOB_MAX {
            let mut st = self.dict.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(*st, DictState::Unknown) {
                *st = self.repo.initial_dict_state()?;
            }
            match &mut *st {
                DictState::Use(d) => dict = Some(Arc::clone(d)),
                DictState::Collect { blobs, bytes } => {
                    blobs.push((id, plaintext.to_vec()));
                    *bytes += plaintext.len();
                    if *bytes >= dict::TRAIN_BYTES {
                        self.train(st)?;
                    }
                    // Reported now, corrected once sealed.
                    return Ok((plaintext.len() + crate::format::SEAL_OVERHEAD) as u64);
                }
                DictState::Unknown | DictState::Off => {}
            }
        }
        Ok(self.store(kind, id, plaintext, dict.as_deref(), &[])?.0)
    }

    /// [`Packer::save`] for a data blob, delta-compressed against `refs`
    /// when that is shorter (SPEC §6.6). Not held back for training. Also
    /// says whether it was stored as a delta.
    pub fn save_with_references(
        &self,
        id: BlobId,
        plaintext: &[u8],
        refs: &[(BlobId, &[u8])],
    ) -> Result<(u64, bool)> {
        // Marker 3 needs a version-2 repository, as dictionaries do.
        if refs.is_empty() || !self.repo.config.dictionaries() {
            return Ok((self.save(BlobKind::Data, id, plaintext)?, false));
        }
        if !self.repo.index.claim(&id)? {
            return Ok((0, false));
        }
        let dict = if plaintext.len() <= dict::SMALL_BLOB_MAX {
            let mut st = self.dict.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(*st, DictState::Unknown) {
                *st = self.repo.initial_dict_state()?;
            }
            match &*st {
                DictState::Use(d) => Some(Arc::clone(d)),
                _ => None,
            }
        } else {
            None
        };
        self.store(BlobKind::Data, id, plaintext, dict.as_deref(), refs)
    }

    /// Trains a dictionary on the blobs collected in `st` and seals them
    /// with it; with fewer than [`dict::MIN_SAMPLES`] they are sealed
    /// without one. Holding `st` meanwhile makes other workers wait with
    /// their small blobs: once per repository.
    fn train(&self, mut st: std::sync::MutexGuard<'_, DictState>) -> Result<()> {
        let DictState::Collect { blobs, bytes } = &mut *st else {
            return Ok(());
        };
        *bytes = 0;
        let blobs = std::mem::take(blobs);
        let samples: Vec<&[u8]> = blobs.iter().map(|(_, b)| b.as_slice()).collect();
        let trained = if samples.len() >= dict::MIN_SAMPLES {
            dict::train_and_store(
                &*self.repo.backend,
                self.repo.data_keys(),
                &self.repo.hasher,
                &samples,
            )?
        } else {
            None
        };
        match &trained {
            Some(d) => *st = DictState::Use(Arc::clone(d)),
            // Too few samples: keep collecting (a later flush or backup
            // may have enough). Nothing to learn from them: stop.
            None if samples.len() < dict::MIN_SAMPLES => {}
            None => *st = DictState::Off,
        }
        drop(st);
        for (id, plain) in &blobs {
            let (n, _) = self.store(BlobKind::Data, *id, plain, trained.as_deref(), &[])?;
            let reported = (plain.len() + crate::format::SEAL_OVERHEAD) as i64;
            self.packed_adjust
                .fetch_add(n as i64 - reported, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Seals and adds one claimed blob; returns its sealed size.
    fn store(
        &self,
        kind: BlobKind,
        id: BlobId,
        plaintext: &[u8],
        dict: Option<&Dictionary>,
        refs: &[(BlobId, &[u8])],
    ) -> Result<(u64, bool)> {
        thread_local! {
            // Compression and encryption happen in this buffer, reused per
            // thread: a fresh megabyte per chunk costs page faults.
            static SEALED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let level = match kind {
            BlobKind::Data => self.repo.config.compression_level,
            BlobKind::Tree => self.repo.config.compression_level.max(1),
        };
        let (n, full, delta) = SEALED.with(|b| {
            let mut sealed = b.borrow_mut();
            let mut delta = false;
            if refs.is_empty() {
                blob::seal_blob_into_with(
                    self.repo.data_keys(),
                    kind,
                    &id,
                    plaintext,
                    level,
                    dict,
                    &mut sealed,
                );
            } else {
                delta = blob::seal_blob_into_delta(
                    self.repo.data_keys(),
                    &id,
                    plaintext,
                    level,
                    dict,
                    refs,
                    &mut sealed,
                );
            }
            if kind == BlobKind::Tree {
                // For the next backup's comparison with this one; only a
                // tree the index names is ever looked up (SPEC §12).
                let _ = self.repo.index.cache().put_tree(&id, &sealed);
            }
            let n = sealed.len() as u64;
            let mut w = self.writers[kind as usize]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            w.add(kind, id, &sealed, plaintext.len() as u32);
            if delta {
                // The pack and its index entry name what it needs (SPEC §6.6).
                w.add_references(id, refs.iter().map(|(r, _)| *r).collect());
            }
            let full = (w.len() >= self.repo.config.pack_size as usize)
                .then(|| std::mem::replace(&mut *w, self.repo.new_pack(kind)));
            if sealed.capacity() > MAX_KEPT_BUFFER {
                *sealed = Vec::new();
            }
            (n, full, delta)
        });
        if let Some(w) = full {
            self.upload(w)?;
        }
        Ok((n, delta))
    }

    /// Finishes `w` and starts writing it in the background, once fewer
    /// than [`Repository::connections`] writes are in flight: finished ones
    /// are indexed first, and if none has finished, the oldest is waited for.
    fn upload(&self, w: PackWriter) -> Result<()> {
        let (id, bytes, header) = w.finish(self.repo.data_keys());
        let mut queue = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        while queue.front().is_some_and(|f| f.write.is_finished()) {
            self.settle(&mut queue)?;
        }
        while queue.len() >= self.repo.connections() {
            self.settle(&mut queue)?;
        }
        let backend = Arc::clone(&self.repo.backend);
        let name = id.to_hex();
        // The bytes go to the thread once it exists, given away (no copy
        // on S3), and stay here if it cannot be started.
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let spawned = std::thread::Builder::new()
            .name("cairn-pack-write".into())
            .spawn(move || match rx.recv() {
                Ok(bytes) => backend.write_owned(ObjectKind::Pack, &name, bytes),
                Err(_) => Err(crate::backend::BackendError::io(
                    "write",
                    ObjectKind::Pack,
                    &name,
                    std::io::Error::other("the pack's bytes never arrived"),
                )),
            });
        match spawned {
            Ok(write) => {
                // The receiver lives until it has received.
                let _ = tx.send(bytes);
                queue.push_back(Inflight { write, id, header })
            }
            // No thread to be had: write here instead.
            Err(_) => {
                self.repo
                    .backend
                    .write(ObjectKind::Pack, &id.to_hex(), &bytes)?;
                self.repo
                    .index
                    .add_pack(&*self.repo.backend, self.repo.data_keys(), id, header)?;
            }
        }
        Ok(())
    }

    /// Waits for the oldest background write in `queue`, then indexes its
    /// pack. A failed write fails the backup; the writes still in flight are
    /// waited for by [`Packer`]'s `Drop` and stay unindexed.
    fn settle(&self, queue: &mut VecDeque<Inflight>) -> Result<()> {
        let Some(f) = queue.pop_front() else {
            return Ok(());
        };
        match f.write.join() {
            Ok(r) => r?,
            Err(panic) => std::panic::resume_unwind(panic),
        }
        self.repo
            .index
            .add_pack(&*self.repo.backend, self.repo.data_keys(), f.id, f.header)
    }

    /// Uploads the open packs and writes the index, keeping the packer
    /// usable (for callers that write snapshots as they go).
    pub fn flush_all(&self) -> Result<()> {
        // Held-back small blobs are claimed: they must be in these packs.
        self.train(self.dict.lock().unwrap_or_else(|e| e.into_inner()))?;
        for (i, m) in self.writers.iter().enumerate() {
            let kind = if i == BlobKind::Data as usize {
                BlobKind::Data
            } else {
                BlobKind::Tree
            };
            let w = std::mem::replace(
                &mut *m.lock().unwrap_or_else(|e| e.into_inner()),
                self.repo.new_pack(kind),
            );
            if !w.is_empty() {
                self.upload(w)?;
            }
        }
        let mut queue = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        while !queue.is_empty() {
            self.settle(&mut queue)?;
        }
        drop(queue);
        self.repo
            .index
            .flush(&*self.repo.backend, self.repo.data_keys())?;
        Ok(())
    }

    /// Uploads the open packs and writes the index. SPEC §13: after this
    /// returns, every saved blob is durable and indexed. Returns how far
    /// the sizes [`Packer::save`] reported were off (blobs held back for
    /// training are reported before they are sealed).
    pub fn finish(self) -> Result<i64> {
        self.flush_all()?;
        Ok(self
            .packed_adjust
            .load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl Drop for Packer<'_> {
    /// A backup that fails still waits for its background writes, so
    /// nothing touches the repository after the call that owned the packer
    /// returned. Their packs stay unindexed, as after a crash; the next
    /// backup adopts them.
    fn drop(&mut self) {
        let queue = self.inflight.get_mut().unwrap_or_else(|e| e.into_inner());
        for f in queue.drain(..) {
            let _ = f.write.join();
        }
    }
}
