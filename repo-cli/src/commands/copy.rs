//! `cairn copy`: copy snapshots from another repository into this one.

use anyhow::{Result, anyhow};
use repo_core::{Location, ObjectKind, OpenOptions, Repository, SnapshotId};

use super::{Status, backend_for, cache_dir, filter, open};
use crate::cli::{CopyArgs, FromRepoArgs, GlobalArgs};
use crate::contract::CopyReport;
use crate::credentials;
use crate::output::{self, Output};
use crate::progress::TermProgress;

/// Opens and unlocks the source repository of `--from-repo`, the way
/// [`open`] opens `-r`: a location without a config fails (exit 10) before
/// a password is asked for.
pub(super) fn open_source(g: &GlobalArgs, out: Output, from: &FromRepoArgs) -> Result<Repository> {
    let location = from.from_repo.as_deref().ok_or_else(|| {
        anyhow!("no source repository given: use --from-repo or set CAIRN_FROM_REPOSITORY")
    })?;
    // Any location `-r` takes: a path or an `s3:` URL (SPEC §11.1).
    let backend = backend_for(g, &Location::parse_os(location.as_os_str())?)?;
    if backend.list(ObjectKind::Config)?.is_empty() {
        return Err(
            anyhow::Error::from(repo_core::Error::NotARepository(backend.location()))
                .context("source repository"),
        );
    }
    let pw = credentials::source_password(
        from.from_password_file.as_deref(),
        from.from_password_command.as_deref(),
    )?;
    let repo = Repository::open(
        backend,
        &pw,
        OpenOptions {
            cache_dir: cache_dir(g),
            key: from.from_key.clone(),
            on_warning: Some(std::sync::Arc::new(move |w: &repo_core::Warning| {
                out.warn(format!("source repository: {w}"))
            })),
            ..Default::default()
        },
    )
    .map_err(|e| anyhow::Error::from(e).context("cannot open the source repository"))?;
    out.verbose(
        1,
        format!(
            "opened source repository {} at {}",
            repo.id().short(),
            location.display()
        ),
    );
    Ok(repo)
}

/// Copies the selected snapshots; prints what was copied and skipped.
pub fn run(g: &GlobalArgs, out: Output, a: &CopyArgs) -> Result<Status> {
    let src = open_source(g, out, &a.from)?;
    let dst = open(g, out)?;
    let f = filter(&a.filter)?;
    let mut ids: Vec<SnapshotId> = Vec::new();
    for spec in &a.snapshots {
        ids.push(src.find_snapshot(spec, &f)?.id);
    }
    let progress = TermProgress::new(out);
    let stats = dst
        .copy_from(&src)
        .snapshots(ids)
        .filter(f)
        .progress(&progress)
        .run()?;
    progress.finish();
    if out.json {
        out.json_value(&CopyReport::new(&stats))?;
        return Ok(Status::Ok);
    }
    for c in &stats.copied {
        out.line(format!(
            "copied snapshot {} as {} ({} {})",
            c.source.short(),
            c.snapshot.id.short(),
            c.snapshot.snapshot.host,
            output::local_time(c.snapshot.snapshot.time_ns)
        ))?;
    }
    for c in &stats.skipped {
        out.line(format!(
            "skipped snapshot {}: already here as {}",
            c.source.short(),
            c.snapshot.id.short()
        ))?;
    }
    out.line(format!(
        "{} snapshot{} copied, {} already present; {} blobs, {} sent in {}{}",
        stats.copied.len(),
        if stats.copied.len() == 1 { "" } else { "s" },
        stats.skipped.len(),
        stats.blobs_copied,
        output::bytes(stats.bytes_copied),
        output::duration(stats.duration.as_nanos() as u64),
        if stats.same_content_keys || stats.copied.is_empty() {
            ""
        } else {
            " (unrelated repositories: every chunk named again)"
        }
    ))?;
    Ok(Status::Ok)
}
