//! `cairn pg archive-wal`, `restore-wal`: PostgreSQL's `archive_command`
//! and `restore_command` (SPEC §28). Each call is one short process, so
//! these open only the WAL store (config and key, no index, no lock) and
//! print nothing on success: their output lands in the server log.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use repo_core::{BaseBackupRef, ClusterReport, OpenOptions, WalFileKind, WalFileName, WalStore};
use serde::Serialize;

use super::wal_prefetch::{self, Spool};
use super::{Status, backend_for, repo_location};
use crate::cli::{GlobalArgs, PgArchiveWalArgs, PgRestoreWalArgs};
use crate::credentials::{self, Purpose};
use crate::output::Output;

/// Opens the repository's WAL store: no index, no cache, no lock.
pub(super) fn open_wal(g: &GlobalArgs) -> Result<WalStore> {
    let location = repo_location(g)?;
    let backend = backend_for(g, &location)?;
    // No cache: nothing of the index is read.
    let opts = OpenOptions {
        key: g.key.clone(),
        ..Default::default()
    };
    // An unattended key (SPEC §4.2) costs no argon2 per segment.
    let store = match &g.key_file {
        Some(f) => WalStore::open_unattended(backend, &credentials::service_token(f)?, &opts)?,
        None => WalStore::open(backend, &credentials::password(g, Purpose::Open)?, &opts)?,
    };
    Ok(store)
}

/// The system identifier in `<pgdata>/global/pg_control`.
fn control_system_identifier(pgdata: Option<&Path>) -> Result<u64> {
    let path = pgdata
        .unwrap_or(Path::new("."))
        .join("global")
        .join("pg_control");
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read {} for the cluster's system identifier (give --pgdata or --system-identifier)",
            path.display()
        )
    })?;
    repo_core::control_file_system_identifier(&bytes)
        .ok_or_else(|| anyhow!("{} is too short to be a pg_control file", path.display()))
}

#[derive(Serialize)]
struct ArchiveJson<'a> {
    file: &'a str,
    object: &'a str,
    written: bool,
    bytes: u64,
    stored_bytes: u64,
}

pub(super) fn archive(g: &GlobalArgs, out: Output, a: &PgArchiveWalArgs) -> Result<Status> {
    let file_name = a
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{} names no WAL file", a.path.display()))?;
    let file = WalFileName::parse(file_name)?;
    let content =
        std::fs::read(&a.path).with_context(|| format!("cannot read {}", a.path.display()))?;
    let sysid = match (a.system_identifier, file.kind()) {
        (Some(s), _) => Some(s),
        // A segment names its cluster itself.
        (None, WalFileKind::Segment | WalFileKind::Partial) => None,
        (None, _) => Some(control_system_identifier(a.pgdata.as_deref())?),
    };
    let store = open_wal(g)?;
    let done = store
        .archive(&file, &content, sysid)
        .with_context(|| format!("cannot archive {file}"))?;
    if out.json {
        out.json_value(&ArchiveJson {
            file: file.as_str(),
            object: &done.object,
            written: done.written,
            bytes: done.len,
            stored_bytes: done.stored,
        })?;
    } else if done.written {
        out.verbose(
            1,
            format!(
                "archived {file}: {} bytes stored as wal/{}",
                done.stored, done.object
            ),
        );
    } else {
        out.verbose(1, format!("{file} was archived already (same content)"));
    }
    Ok(Status::Ok)
}

/// `restore-wal --json` of a restored file: where it came from.
#[derive(Serialize)]
struct RestoreJson<'a> {
    file: &'a str,
    /// `spool` (read ahead, `--prefetch`) or `repository`.
    source: &'static str,
}

pub(super) fn restore(g: &GlobalArgs, out: Output, a: &PgRestoreWalArgs) -> Result<Status> {
    let pgdata = a.pgdata.as_deref().unwrap_or(Path::new("."));
    let spool = Spool::of(pgdata);
    if a.clean_spool {
        spool.clean()?;
        return Ok(Status::Ok);
    }
    let (Some(name), Some(dest)) = (&a.name, &a.dest) else {
        bail!("restore-wal needs NAME and DEST");
    };
    if a.prefetch_worker {
        wal_prefetch::detach();
    }
    let file = WalFileName::parse(name)?;
    let sysid = match a.system_identifier {
        Some(s) => s,
        None => control_system_identifier(a.pgdata.as_deref())?,
    };
    if a.prefetch_worker {
        let store = open_wal(g)?;
        spool.work(&store, sysid, a.prefetch)?;
        return Ok(Status::Ok);
    }
    let prefetch = a.prefetch > 0 && file.kind() == WalFileKind::Segment;
    let spooled = prefetch
        && match spool.create() {
            Ok(()) => {
                spool.asked(&file);
                spool.wait_for(&file);
                let taken = spool.take(&file, sysid, dest);
                for r in &taken.rejected {
                    out.warn(format!("not serving a spooled copy: {r}"));
                }
                taken.served
            }
            Err(e) => {
                out.warn(format!("{e:#}: fetching without read-ahead"));
                false
            }
        };
    if !spooled && !fetch(g, &file, sysid, dest)? {
        // Nothing printed, even with --json: PostgreSQL expects this.
        out.verbose(1, format!("{file} is not archived"));
        return Ok(Status::Missing);
    }
    if prefetch && spool.dir().is_dir() {
        let size = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
        if let Err(e) = spool.served(&file, size) {
            out.warn(format!("{e:#}: no read-ahead"));
        }
    }
    let source = if spooled { "spool" } else { "repository" };
    if out.json {
        out.json_value(&RestoreJson {
            file: file.as_str(),
            source,
        })?;
    }
    out.verbose(
        1,
        format!("restored {file} to {} (from the {source})", dest.display()),
    );
    Ok(Status::Ok)
}

/// Fetches `file` into `dest`; false when it is not archived.
fn fetch(g: &GlobalArgs, file: &WalFileName, sysid: u64, dest: &Path) -> Result<bool> {
    let store = open_wal(g)?;
    // Decompressed straight into a temporary file beside DEST, renamed over
    // it only once the content matched its MAC: PostgreSQL never sees a
    // partial or unauthenticated file. It reads the file at once and
    // fetches it again after a crash, so no fsync.
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = dest.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".cairn-{}", std::process::id()));
    let tmp: PathBuf = dir.join(tmp_name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    let fetched = store.fetch_to(sysid, file, &mut f);
    drop(f);
    let renamed = match &fetched {
        Ok(Some(_)) => {
            std::fs::rename(&tmp, dest).with_context(|| format!("cannot write {}", dest.display()))
        }
        _ => Ok(()),
    };
    if !matches!((&fetched, &renamed), (Ok(Some(_)), Ok(()))) {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed?;
    Ok(fetched
        .with_context(|| format!("cannot restore {file}"))?
        .is_some())
}

#[derive(Serialize)]
struct VerifyJson<'a> {
    ok: bool,
    clusters: &'a [ClusterReport],
    /// Base backups whose metadata cannot be read.
    unreadable_base_backups: &'a [String],
    /// Names in `wal/` that are no WAL object's.
    foreign: &'a [String],
}

pub(super) fn verify(g: &GlobalArgs, out: Output) -> Result<Status> {
    let repo = super::open(g, out)?;
    let mut bases = Vec::new();
    let mut unreadable = Vec::new();
    for entry in repo.snapshots()? {
        match BaseBackupRef::from_entry(&entry) {
            Some(Ok(b)) => bases.push(b),
            Some(Err(e)) => unreadable.push(e),
            None => {}
        }
    }
    let store = repo.wal();
    let listing = store.list()?;
    let reports = store.verify(&listing, &bases);
    let errors: usize = reports.iter().map(|r| r.errors.len()).sum();
    if out.json {
        out.json_value(&VerifyJson {
            ok: errors == 0,
            clusters: &reports,
            unreadable_base_backups: &unreadable,
            foreign: &listing.foreign,
        })?;
    } else {
        for u in &unreadable {
            out.warn(u);
        }
        for f in &listing.foreign {
            out.warn(format!("wal/{f} is not named like an archived WAL file"));
        }
        if reports.is_empty() {
            out.line("no archived WAL")?;
        }
        for r in &reports {
            print_cluster(out, r)?;
        }
    }
    if errors > 0 {
        bail!(
            "{errors} problem{} would stop recovery from the newest base backup",
            if errors == 1 { "" } else { "s" }
        );
    }
    Ok(Status::Ok)
}

fn print_cluster(out: Output, r: &ClusterReport) -> Result<()> {
    let sysid = r
        .system_identifier
        .map_or("no base backup".to_string(), |s| {
            format!("system identifier {s}")
        });
    out.line(format!(
        "cluster {} ({sysid}): {} files, {}",
        r.cluster,
        r.files,
        repo_core::format_bytes(r.bytes)
    ))?;
    for t in &r.timelines {
        if t.segments == 0 {
            out.line(format!("  timeline {}: no segments", t.timeline))?;
        } else {
            out.line(format!(
                "  timeline {}: {} .. {}, {} segments{}{}",
                t.timeline,
                t.first,
                t.last,
                t.segments,
                if t.partial > 0 {
                    format!(", {} partial", t.partial)
                } else {
                    String::new()
                },
                if t.history { ", history file" } else { "" }
            ))?;
        }
        for gap in &t.gaps {
            out.line(format!(
                "    gap: {} .. {} ({} segments){}",
                gap.from,
                gap.to,
                gap.segments,
                if gap.required {
                    " NEEDED by the newest base backup"
                } else {
                    ""
                }
            ))?;
        }
    }
    if let Some(b) = &r.base_backup {
        out.line(format!(
            "  newest base backup {} starts at {} (timeline {}); recovery follows timelines {:?}",
            &b.snapshot[..8],
            b.start_wal,
            b.timeline,
            r.path
        ))?;
    }
    for e in &r.errors {
        out.line(format!("  ERROR: {e}"))?;
    }
    Ok(())
}
