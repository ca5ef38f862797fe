//! `cairn copy`: copy snapshots from another repository into this one.

use anyhow::{Result, anyhow};
use repo_core::{Backend, Location, OpenOptions, Repository, SnapshotId};

use super::{Status, backend_for, cache_dir, filter, locate, unlock};
use crate::cli::{CopyArgs, FromRepoArgs, GlobalArgs};
use crate::contract::CopyReport;
use crate::credentials;
use crate::output::{self, Output};
use crate::progress::TermProgress;

/// Opens and unlocks the source repository of `--from-repo`, the way
/// [`super::open`] opens `-r`: a location without a config fails (exit 10) before
/// a password is asked for.
pub(super) fn open_source(g: &GlobalArgs, out: Output, from: &FromRepoArgs) -> Result<Repository> {
    let (backend, config) = locate_source(g, from)?;
    let pw = source_password(from)?;
    unlock_source(g, out, from, backend, config, &pw)
}

/// The source's storage and its config (exit 10 without one).
fn locate_source(g: &GlobalArgs, from: &FromRepoArgs) -> Result<(Box<dyn Backend>, Vec<u8>)> {
    let location = from.from_repo.as_deref().ok_or_else(|| {
        anyhow!("no source repository given: use --from-repo or set CAIRN_FROM_REPOSITORY")
    })?;
    // Any location `-r` takes: a path or an `s3:` URL (SPEC §11.1).
    let backend = backend_for(g, &Location::parse_os(location.as_os_str())?)?;
    let Some(config) = super::read_config(&*backend)? else {
        return Err(
            anyhow::Error::from(repo_core::Error::NotARepository(backend.location()))
                .context("source repository"),
        );
    };
    Ok((backend, config))
}

fn source_password(from: &FromRepoArgs) -> Result<credentials::Password> {
    credentials::source_password(
        from.from_password_file.as_deref(),
        from.from_password_command.as_deref(),
    )
}

fn unlock_source(
    g: &GlobalArgs,
    out: Output,
    from: &FromRepoArgs,
    backend: Box<dyn Backend>,
    config: Vec<u8>,
    pw: &[u8],
) -> Result<Repository> {
    let backend_location = from.from_repo.clone().unwrap_or_default();
    let repo = Repository::open(
        backend,
        pw,
        OpenOptions {
            cache_dir: cache_dir(g),
            key: from.from_key.clone(),
            on_warning: Some(std::sync::Arc::new(move |w: &repo_core::Warning| {
                out.warn(format!("source repository: {w}"))
            })),
            config: Some(config),
            ..Default::default()
        },
    )
    .map_err(|e| anyhow::Error::from(e).context("cannot open the source repository"))?;
    out.verbose(
        1,
        format!(
            "opened source repository {} at {}",
            repo.id().short(),
            backend_location.display()
        ),
    );
    Ok(repo)
}

/// Opens both repositories: first their configs (either missing fails
/// before a password is asked for), then the passwords, one after the
/// other (either may be a prompt), then the two unlocks at once: each
/// runs its key's KDF and reads its key file and index, and neither waits
/// for the other.
fn open_both(g: &GlobalArgs, out: Output, from: &FromRepoArgs) -> Result<(Repository, Repository)> {
    let (src_backend, src_config) = locate_source(g, from)?;
    let (location, dst_backend, dst_config) = locate(g)?;
    let src_pw = source_password(from)?;
    let dst_pw = match g.key_file {
        Some(_) => None,
        None => Some(credentials::password(g, credentials::Purpose::Open)?),
    };
    let (src, dst) = std::thread::scope(|s| {
        let src = s.spawn(|| unlock_source(g, out, from, src_backend, src_config, &src_pw));
        // The copy reads the destination's index after its heartbeat.
        let dst = unlock(
            g,
            out,
            &location,
            dst_backend,
            dst_config,
            dst_pw.as_deref().map(|p| &p[..]),
            true,
        );
        (src.join(), dst)
    });
    let src = src.unwrap_or_else(|p| std::panic::resume_unwind(p))?;
    Ok((src, dst?))
}

/// Copies the selected snapshots; prints what was copied and skipped.
pub fn run(g: &GlobalArgs, out: Output, a: &CopyArgs) -> Result<Status> {
    let (src, dst) = open_both(g, out, &a.from)?;
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
        out.json_value(&CopyReport::new(
            &stats,
            dst.request_stats(),
            src.request_stats(),
        ))?;
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
