//! `cairn init`: create a repository.

use anyhow::{Context, Result};
use repo_core::{Backend, InitOptions, KdfParams, ObjectKind, Repository};
use serde::Serialize;

use super::{Status, backend_for, cache_dir, repo_location, s3_options};
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
    let location = repo_location(g)?;
    let existing = backend_for(g, &location)?;
    if !existing.list(ObjectKind::Config)?.is_empty() {
        return Err(repo_core::Error::AlreadyExists(existing.location()).into());
    }
    // The source is opened first: a wrong source password costs nothing.
    let content = if a.copy_chunker_params {
        Some(super::copy::open_source(g, out, &a.from)?.content_params())
    } else {
        if let Some(from) = &a.from.from_repo {
            // Without the flag the source is not read: say so rather than
            // let a user believe the two repositories now deduplicate.
            out.warn(format!(
                "--from-repo {} is ignored: only --copy-chunker-params reads it",
                from.display()
            ));
        }
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
        cipher: a.cipher,
    };
    super::key::warn_kdf(out, &opts.kdf);
    // Local: makes the layout; S3: checks that the bucket exists.
    let backend = location
        .create(&s3_options(g))
        .with_context(|| format!("cannot create a repository at {location}"))?;
    let repo = Repository::init(backend, &pw, opts)?;
    let id = repo.id().to_hex();
    if out.json {
        out.json_value(&InitJson {
            repository: location.to_string(),
            id,
            version: repo.format_version(),
        })?;
    } else {
        out.line(format!(
            "created cairn repository {} at {location}",
            &id[..8]
        ))?;
        out.line("")?;
        out.line(
            "Keep the password safe: without it the data in this repository cannot be read, \
             and it cannot be recovered.",
        )?;
    }
    Ok(Status::Ok)
}
