//! `cairn init`: create a repository.

use anyhow::Result;
use repo_core::{Backend, InitOptions, KdfParams, LocalBackend, ObjectKind, Repository};
use serde::Serialize;

use super::{Status, cache_dir, repo_path};
use crate::cli::{GlobalArgs, InitArgs};
use crate::credentials::{self, Purpose};
use crate::output::Output;

#[derive(Serialize)]
struct InitJson {
    repository: String,
    id: String,
    version: u32,
}

/// Creates the repository; refuses an existing one before asking for a password.
pub fn run(g: &GlobalArgs, out: Output, a: &InitArgs) -> Result<Status> {
    let path = repo_path(g)?;
    let existing = LocalBackend::open(path);
    if !existing.list(ObjectKind::Config)?.is_empty() {
        return Err(repo_core::Error::AlreadyExists(existing.location()).into());
    }
    // The source is opened first: a wrong source password costs nothing.
    let content = if a.copy_chunker_params {
        Some(super::copy::open_source(g, out, &a.from)?.content_params())
    } else {
        None
    };
    let pw = credentials::password(g, Purpose::Init)?;
    let opts = InitOptions {
        kdf: KdfParams {
            memory_kib: a.kdf_memory,
            iterations: a.kdf_iterations,
            parallelism: a.kdf_parallelism,
        },
        compression_level: a.compression,
        pack_size: a.pack_size * 1024 * 1024,
        cache_dir: cache_dir(g),
        dictionary: !a.no_dictionary,
        content,
    };
    super::key::warn_kdf(out, &opts.kdf);
    let repo = Repository::init(LocalBackend::create(path)?, &pw, opts)?;
    let id = repo.id().to_hex();
    if out.json {
        out.json_value(&InitJson {
            repository: path.display().to_string(),
            id,
            version: repo.format_version(),
        })?;
    } else {
        out.line(format!(
            "created cairn repository {} at {}",
            &id[..8],
            path.display()
        ))?;
        out.line("")?;
        out.line(
            "Keep the password safe: without it the data in this repository cannot be read, \
             and it cannot be recovered.",
        )?;
    }
    Ok(Status::Ok)
}
