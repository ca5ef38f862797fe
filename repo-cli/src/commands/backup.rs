//! `cairn backup`: paths, our standard input, or a command's output.

use std::io;

use anyhow::{Context, Result, bail};
use repo_core::{BackupOutcome, ParentChoice, Repository, SnapshotFilter};

use super::{Status, open_for_backup};
use crate::cli::{BackupArgs, GlobalArgs};
use crate::contract::{BackupReport, SavedSnapshot, SourceDetails};
use crate::exporters::process::CommandReader;
use crate::output::{self, Output};
use crate::progress::TermProgress;

/// Runs the backup and prints its summary; [`Status::Incomplete`] when
/// some files could not be read.
pub fn run(g: &GlobalArgs, out: Output, a: &BackupArgs) -> Result<Status> {
    if a.stdin_filename.is_some() && !a.stdin && !a.stdin_from_command {
        bail!("--stdin-filename needs --stdin or --stdin-from-command");
    }
    if !a.command.is_empty() && !a.stdin_from_command {
        bail!("arguments after `--` are only used with --stdin-from-command");
    }
    let excludes = excludes(a)?;
    let repo = open_for_backup(g, out)?;
    let progress = TermProgress::new(out);

    let mut b = repo
        .backup()
        .progress(&progress)
        .one_file_system(a.one_file_system)
        .exclude_caches(a.exclude_caches);
    for e in excludes {
        b = b.exclude(e);
    }
    for t in &a.tags {
        b = b.tag(t);
    }
    if let Some(h) = &a.host {
        b = b.host(h);
    }
    if let Some(p) = &a.profile {
        b = b.profile(p);
    }
    b = b.parent(parent(&repo, a)?);

    let outcome = if a.stdin {
        let name = a.stdin_filename.clone().unwrap_or_else(|| "stdin".into());
        b.stream(name, io::stdin()).run()?
    } else if a.stdin_from_command {
        let reader = CommandReader::spawn(&a.command)?;
        let name = a
            .stdin_filename
            .clone()
            .unwrap_or_else(|| reader.name.clone());
        b.stream(name, reader).run()?
    } else {
        for p in &a.paths {
            b = b.path(p);
        }
        b.run()?
    };
    progress.finish();
    let source = if a.stdin || a.stdin_from_command {
        SourceDetails::Stream
    } else {
        SourceDetails::Files
    };
    report(out, &outcome, source, &repo)?;
    Ok(if outcome.warnings.is_empty() {
        Status::Ok
    } else {
        Status::Incomplete
    })
}

/// `--exclude` plus the lines of every `--exclude-file`.
fn excludes(a: &BackupArgs) -> Result<Vec<String>> {
    let mut all = a.excludes.clone();
    for f in &a.exclude_files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read exclude file {}", f.display()))?;
        all.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    Ok(all)
}

fn parent(repo: &Repository, a: &BackupArgs) -> Result<ParentChoice> {
    Ok(match (&a.parent, a.force) {
        (_, true) => ParentChoice::None,
        (Some(spec), false) => {
            let e = repo
                .find_snapshot(spec, &SnapshotFilter::default())
                .context("cannot use --parent")?;
            ParentChoice::Id(e.id)
        }
        (None, false) => ParentChoice::Auto,
    })
}

fn report(out: Output, o: &BackupOutcome, source: SourceDetails, repo: &Repository) -> Result<()> {
    let s = &o.snapshot.snapshot.summary;
    if out.json {
        out.json_value(&BackupReport {
            snapshots: vec![SavedSnapshot::new(o, source)],
            failed: Vec::new(),
            repository_warnings: crate::contract::warnings_json(&repo.warnings()),
            requests: repo.request_stats(),
        })?;
        return Ok(());
    }
    if let Some(p) = o.snapshot.snapshot.parent {
        out.verbose(1, format!("compared with parent snapshot {}", p.short()));
    }
    out.line(format!(
        "Files: {} new, {} changed, {} unmodified",
        s.files_new, s.files_changed, s.files_unmodified
    ))?;
    out.line(format!(
        "Dirs:  {} new, {} changed, {} unmodified",
        s.dirs_new, s.dirs_changed, s.dirs_unmodified
    ))?;
    if o.packs_resumed > 0 {
        out.line(format!(
            "Resumed: {} pack(s) left by an interrupted backup reused",
            o.packs_resumed
        ))?;
    }
    out.line(format!(
        "Added to the repository: {} (stored {})",
        output::bytes(s.bytes_added),
        output::bytes(s.bytes_added_packed)
    ))?;
    out.line("")?;
    out.line(format!(
        "processed {} files, {} in {}",
        s.total_files,
        output::bytes(s.total_bytes),
        output::duration(s.duration_ns)
    ))?;
    out.line(format!("snapshot {} saved", o.snapshot.id.short()))?;
    if !o.warnings.is_empty() {
        out.warn(format!(
            "{} warning(s): the snapshot was saved, but entries named above are missing or incomplete",
            o.warnings.len()
        ));
    }
    Ok(())
}
