//! `cairn cat`: repository objects as JSON, for inspection.

use anyhow::{Result, bail};
use repo_core::crypto::KeyFile;
use repo_core::{Backend, KdfParams, LocalBackend, ObjectKind};
use serde::Serialize;

use super::{Status, open, repo_path, select};
use crate::cli::{CatArgs, CatObject, GlobalArgs};
use crate::output::{self, Output, SnapshotJson};

/// A key file's public header. The sealed master key is never printed.
#[derive(Serialize)]
struct KeyJson<'a> {
    id: &'a str,
    repo_id: String,
    created: String,
    host: &'a str,
    username: &'a str,
    kdf: KdfParams,
    salt: String,
}

/// The one object of `kind` whose name starts with `prefix`.
fn unique(backend: &dyn Backend, kind: ObjectKind, prefix: &str) -> Result<String> {
    let p = prefix.to_ascii_lowercase();
    let mut names: Vec<String> = backend
        .list(kind)?
        .into_iter()
        .map(|o| o.name)
        .filter(|n| !p.is_empty() && n.starts_with(&p))
        .collect();
    match names.len() {
        1 => Ok(names.remove(0)),
        0 => bail!("no {kind} file matches {prefix:?}"),
        _ => bail!("{kind} id prefix {prefix:?} is ambiguous"),
    }
}

/// Prints the chosen object as pretty JSON (with or without `--json`).
pub fn run(g: &GlobalArgs, out: Output, a: &CatArgs) -> Result<Status> {
    match &a.object {
        CatObject::Config => {
            let repo = open(g, out)?;
            out.json_value(repo.config())?;
        }
        CatObject::Snapshot { id, filter } => {
            let repo = open(g, out)?;
            let snap = select(&repo, id, filter)?;
            out.json_value(&SnapshotJson::new(&snap))?;
        }
        CatObject::Index { id } => {
            let repo = open(g, out)?;
            let name = unique(repo.backend(), ObjectKind::Index, id)?;
            let index_id: repo_core::id::IndexId = name.parse()?;
            out.json_value(&repo.load_index(&index_id)?)?;
        }
        CatObject::Key { id } => {
            // Key headers are stored in clear, so no password is needed.
            let backend = LocalBackend::open(repo_path(g)?);
            if backend.list(ObjectKind::Config)?.is_empty() {
                return Err(repo_core::Error::NotARepository(backend.location()).into());
            }
            let name = &unique(&backend, ObjectKind::Key, id)?;
            let bytes = backend.read(ObjectKind::Key, name)?;
            let kf = KeyFile::decode(&bytes)
                .map_err(|e| anyhow::anyhow!("key file {name} is corrupt: {e}"))?;
            let h = &kf.header;
            out.json_value(&KeyJson {
                id: name,
                repo_id: h.repo_id.to_hex(),
                created: output::rfc3339(h.created_ns),
                host: &h.host,
                username: &h.username,
                kdf: h.kdf,
                salt: h.salt.iter().map(|b| format!("{b:02x}")).collect(),
            })?;
        }
    }
    Ok(Status::Ok)
}
