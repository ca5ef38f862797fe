//! Which key file opened a repository last time on this machine (SPEC
//! §14): a file in the repository's cache directory naming it, so the
//! next open reads that key file directly instead of listing `keys/`
//! first, one request fewer on object storage. The hint is only a guess:
//! the key file it names is read from the storage, checked (its bytes hash
//! to its name, it belongs to this repository, its KDF is within the
//! budget) and must open with the password; anything else falls back to
//! the listing, as without a hint.

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

/// Opens key file `name` with `password` if it is this repository's and
/// the ordinary search could have chosen it: within `budget`, and, in a
/// version-4 repository (`epochs`), one with a public key (SPEC §29.3).
pub(crate) fn unlock(
    backend: &dyn Backend,
    repo: &RepoId,
    name: &str,
    password: &[u8],
    budget: &KdfBudget,
    epochs: bool,
) -> Option<(Unlocked, KeyId)> {
    let bytes = backend.read(ObjectKind::Key, name).ok()?;
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
    kf.unlock_full(password).ok().map(|k| (k, id))
}
