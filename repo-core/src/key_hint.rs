//! Which key file opened a repository last time on this machine (SPEC
//! §14): a file in the repository's cache directory naming it, so the
//! next open reads that key file directly instead of listing `keys/`
//! first, one request fewer on object storage. The hint is only a guess:
//! the key file it names is read from the storage, checked (its bytes hash
//! to its name, it belongs to this repository, its KDF is within the
//! budget) and must open with the password; anything else falls back to
//! the listing, as without a hint.
//!
//! A handle opened for a backup or a copy ([`crate::OpenOptions::key_from_cache`])
//! also keeps a copy of that key file there (`key-<id>`) and unlocks the
//! copy the next time, reading nothing: a key file's name is the hash of
//! its bytes, so a copy that hashes to its name is that key file. Whether
//! it is still in the repository (a removed key must stop working) is
//! confirmed by the handle's first listing of the index, which lists
//! `keys/` with it ([`crate::Repository`]; on S3 in the same request).

use std::path::{Path, PathBuf};

use crate::backend::{Backend, ObjectKind};
use crate::crypto::{KdfBudget, KeyFile, Unlocked};
use crate::id::{KeyId, RepoId};

/// The hint's file: beside the repository's index cache.
fn path(cache_dir: Option<&Path>, repo: &RepoId) -> Option<PathBuf> {
    Some(cache_dir?.join(repo.to_hex()).join("last-key"))
}

/// The key file id the hint names, if there is a well-formed one.
pub(crate) fn read(cache_dir: Option<&Path>, repo: &RepoId) -> Option<String> {
    let text = std::fs::read_to_string(path(cache_dir, repo)?).ok()?;
    let name = text.trim();
    (name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())).then(|| name.to_owned())
}

/// Remembers `key` as the one that opened `repo`. A failure only costs the
/// next open its listing.
pub(crate) fn remember(cache_dir: Option<&Path>, repo: &RepoId, key: &KeyId) {
    let Some(p) = path(cache_dir, repo) else {
        return;
    };
    let hex = key.to_hex();
    if read(cache_dir, repo).as_deref() == Some(hex.as_str()) {
        return;
    }
    // Written whole under another name, then renamed: a reader never sees
    // half a name (it would only fall back to the listing anyway).
    // Only into the directory the cache made (with its modes, SPEC §12):
    // the first open of a repository here, before its cache exists, leaves
    // the hint to the next.
    if !p.parent().is_some_and(Path::is_dir) {
        return;
    }
    let tmp = p.with_extension(format!("tmp-{}", std::process::id()));
    if std::fs::write(&tmp, hex).is_err() || std::fs::rename(&tmp, &p).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// The local copy of key file `name`: its path.
fn copy_path(cache_dir: Option<&Path>, repo: &RepoId, name: &str) -> Option<PathBuf> {
    Some(cache_dir?.join(repo.to_hex()).join(format!("key-{name}")))
}

/// The local copy of key file `name`, if there is one whose bytes hash to
/// that name.
pub(crate) fn copy(cache_dir: Option<&Path>, repo: &RepoId, name: &str) -> Option<Vec<u8>> {
    let bytes = std::fs::read(copy_path(cache_dir, repo, name)?).ok()?;
    (KeyId::hash_of(&bytes).to_hex() == name).then_some(bytes)
}

/// Keeps a copy of key file `key` (its `bytes`), written whole under
/// another name and renamed, only into the directory the cache made. A
/// failure only costs the next open its read.
pub(crate) fn keep_copy(cache_dir: Option<&Path>, repo: &RepoId, key: &KeyId, bytes: &[u8]) {
    let Some(p) = copy_path(cache_dir, repo, &key.to_hex()) else {
        return;
    };
    if p.exists() || !p.parent().is_some_and(Path::is_dir) {
        return;
    }
    let tmp = p.with_extension(format!("tmp-{}", std::process::id()));
    if std::fs::write(&tmp, bytes).is_err() || std::fs::rename(&tmp, &p).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Drops the copy of `key` and a hint naming it: the key file is gone from
/// the repository, so the next open searches the key files.
pub(crate) fn forget(cache_dir: Option<&Path>, repo: &RepoId, key: &KeyId) {
    let hex = key.to_hex();
    if let Some(p) = copy_path(cache_dir, repo, &hex) {
        let _ = std::fs::remove_file(p);
    }
    if read(cache_dir, repo).as_deref() == Some(hex.as_str())
        && let Some(p) = path(cache_dir, repo)
    {
        let _ = std::fs::remove_file(p);
    }
}

/// How [`unlock`] may come by the key file's bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Read it from the storage.
    Storage,
    /// The local copy if there is one (then [`unlock`] says so), else the
    /// storage, keeping a copy of what it read.
    CopyFirst,
    /// The local copy only.
    CopyOnly,
}

/// Opens key file `name` with `password` if it is this repository's and
/// the ordinary search could have chosen it: within `budget`, and, in a
/// version-4 repository (`epochs`), one with a public key (SPEC §29.3).
/// The flag is whether the bytes came from the local copy.
#[allow(clippy::too_many_arguments)]
pub(crate) fn unlock(
    backend: &dyn Backend,
    cache_dir: Option<&Path>,
    source: Source,
    repo: &RepoId,
    name: &str,
    password: &[u8],
    budget: &KdfBudget,
    epochs: bool,
) -> Option<(Unlocked, KeyId, bool)> {
    let copied = match source {
        Source::Storage => None,
        Source::CopyFirst | Source::CopyOnly => copy(cache_dir, repo, name),
    };
    let from_copy = copied.is_some();
    let bytes = match copied {
        Some(b) => b,
        None if source == Source::CopyOnly => return None,
        None => backend.read(ObjectKind::Key, name).ok()?,
    };
    let id = KeyId::hash_of(&bytes);
    let kf = KeyFile::decode(&bytes).ok()?;
    let kdf = &kf.header.kdf;
    let usable = id.to_hex() == name
        && kf.header.repo_id == *repo
        && !(epochs && kf.public.is_none())
        && kdf.memory_kib <= budget.max_memory_kib
        && kdf.cost() <= budget.max_total_cost;
    if !usable {
        return None;
    }
    let unlocked = kf.unlock_full(password).ok()?;
    if source == Source::CopyFirst && !from_copy {
        keep_copy(cache_dir, repo, &id, &bytes);
    }
    Some((unlocked, id, from_copy))
}
