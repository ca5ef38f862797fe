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
        CatObject::Key { id } => {
            // Key headers are stored in clear, so no password is needed.
            let backend = LocalBackend::open(repo_path(g)?);
            if backend.list(ObjectKind::Config)?.is_empty() {
                return Err(repo_core::Error::NotARepository(backend.location()).into());
            }
            let prefix = id.to_ascii_lowercase();
            let names: Vec<String> = backend
                .list(ObjectKind::Key)?
                .into_iter()
                .map(|o| o.name)
                .filter(|n| !prefix.is_empty() && n.starts_with(&prefix))
                .collect();
            let name = match names.as_slice() {
                [one] => one,
                [] => bail!("no key file matches {id:?}"),
                _ => bail!("key id prefix {id:?} is ambiguous"),
            };
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
