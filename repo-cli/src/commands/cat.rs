//! `cairn cat`: repository objects as JSON, for inspection.
//!
//! The one command that shows the format's internals (key files, index and
//! dictionary ids), so it alone goes through `repo_core::unstable`: like
//! `restic cat`, its output follows the format, not a stable API.

use anyhow::{Result, bail};
use repo_core::unstable::RepositoryInternals as _;
use repo_core::unstable::crypto::KeyFile;
use repo_core::{Backend, KdfParams, ObjectKind};
use serde::Serialize;

use super::{Status, backend_for, open, repo_location, select};
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

/// A verified compression dictionary (SPEC §6.4); its content is not printed.
#[derive(Serialize)]
struct DictJson {
    id: String,
    reference: String,
    size: usize,
    stored_size: u64,
    zstd_dict_id: u32,
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
            // The cipher is in the config's clear part (SPEC §29.4), not its body.
            let mut v = serde_json::to_value(repo.config())?;
            v["cipher"] = repo.data_keys().cipher().name().into();
            out.json_value(&v)?;
        }
        CatObject::Snapshot { id, filter } => {
            let repo = open(g, out)?;
            let snap = select(&repo, id, filter)?;
            out.json_value(&SnapshotJson::new(&snap))?;
        }
        CatObject::Index { id } => {
            let repo = open(g, out)?;
            let name = unique(repo.backend(), ObjectKind::Index, id)?;
            let index_id: repo_core::unstable::id::IndexId = name.parse()?;
            out.json_value(&repo.load_index(&index_id)?)?;
        }
        CatObject::Dictionary { id, raw } => {
            let repo = open(g, out)?;
            let mut names: Vec<String> = match id {
                Some(p) => vec![unique(repo.backend(), ObjectKind::Dict, p)?],
                None => repo
                    .backend()
                    .list(ObjectKind::Dict)?
                    .into_iter()
                    .map(|o| o.name)
                    .collect(),
            };
            names.sort();
            let mut all = Vec::new();
            for name in names {
                let dict_id: repo_core::unstable::id::DictId = name
                    .parse()
                    .map_err(|_| anyhow::anyhow!("dictionary {name}: name is not an id"))?;
                let d = repo
                    .dictionaries()
                    .load(&dict_id)
                    .map_err(|e| anyhow::anyhow!("dictionary {name} is corrupt: {e}"))?;
                if *raw {
                    use std::io::Write;
                    std::io::stdout().write_all(d.bytes())?;
                    return Ok(Status::Ok);
                }
                all.push(DictJson {
                    reference: d.reference().to_string(),
                    size: d.bytes().len(),
                    stored_size: repo.backend().size(ObjectKind::Dict, &name)?,
                    zstd_dict_id: repo_core::unstable::dict::zstd_dict_id(d.bytes()),
                    id: name,
                });
            }
            out.json_value(&all)?;
        }
        CatObject::Key { id } => {
            // Key headers are stored in clear, so no password is needed.
            let backend = backend_for(g, &repo_location(g)?)?;
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
