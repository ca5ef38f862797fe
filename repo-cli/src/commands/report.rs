//! `cairn report`: an integrity report on one snapshot.

use anyhow::Result;
use repo_core::{CheckSummary, DrillSummary, IntegrityReport};
use serde::Serialize;

use super::{Status, open, select};
use crate::cli::{GlobalArgs, ReportArgs};
use crate::output::{self, Output};

/// `report --json` in the contract's units (docs/scripting.md): times as
/// RFC 3339, durations as `*_s` seconds, instead of the library's
/// nanosecond fields.
#[derive(Serialize)]
struct ReportJson<'a> {
    snapshot: String,
    /// The snapshot's time.
    time: String,
    host: &'a str,
    username: &'a str,
    paths: &'a [String],
    tags: &'a [String],
    parent: Option<String>,
    tree: String,
    merkle_root: &'a repo_core::MerkleRoot,
    files: u64,
    dirs: u64,
    others: u64,
    total_size: u64,
    blobs: u64,
    packs: u64,
    packs_verified: u64,
    /// Oldest verification of those packs, if all are verified.
    oldest_verification: Option<String>,
    summary: output::SummaryJson<'a>,
    snapshot_program: &'a str,
    report_program: &'a str,
    /// When the report was made.
    generated: String,
    metadata: &'a [(String, String)],
    last_check: Option<CheckJson>,
    last_data_check: Option<CheckJson>,
    last_drill: Option<DrillJson>,
    /// The cipher and data-key epochs (SPEC §29); `key epochs` counts
    /// the objects of each.
    encryption: Option<EncryptionJson>,
}

#[derive(Serialize)]
struct EncryptionJson {
    cipher: &'static str,
    live_epochs: Vec<u32>,
    newest_epoch: u32,
}

impl EncryptionJson {
    fn of(repo: &repo_core::Repository) -> Self {
        let k = repo.data_keys();
        Self {
            cipher: k.cipher().name(),
            live_epochs: k.live_epochs(),
            newest_epoch: k.newest_epoch(),
        }
    }
}

#[derive(Serialize)]
struct CheckJson {
    time: String,
    read_data: bool,
    packs: u64,
    packs_verified: u64,
    errors: u64,
    warnings: u64,
    clean: bool,
}

impl From<&CheckSummary> for CheckJson {
    fn from(c: &CheckSummary) -> Self {
        Self {
            time: output::rfc3339(c.time_ns),
            read_data: c.read_data,
            packs: c.packs,
            packs_verified: c.packs_verified,
            errors: c.errors,
            warnings: c.warnings,
            clean: c.clean,
        }
    }
}

#[derive(Serialize)]
struct DrillJson {
    snapshot: String,
    time: String,
    files: u64,
    bytes: u64,
    duration_s: f64,
    ok: bool,
}

impl From<&DrillSummary> for DrillJson {
    fn from(d: &DrillSummary) -> Self {
        Self {
            snapshot: d.snapshot.to_hex(),
            time: output::rfc3339(d.time_ns),
            files: d.files,
            bytes: d.bytes,
            duration_s: output::seconds(d.duration_ns),
            ok: d.ok,
        }
    }
}

impl<'a> ReportJson<'a> {
    fn new(r: &'a IntegrityReport) -> Self {
        Self {
            snapshot: r.snapshot.to_hex(),
            time: output::rfc3339(r.time_ns),
            host: &r.host,
            username: &r.username,
            paths: &r.paths,
            tags: &r.tags,
            parent: r.parent.map(|p| p.to_hex()),
            tree: r.tree.to_hex(),
            merkle_root: &r.merkle_root,
            files: r.files,
            dirs: r.dirs,
            others: r.others,
            total_size: r.total_size,
            blobs: r.blobs,
            packs: r.packs,
            packs_verified: r.packs_verified,
            oldest_verification: r.oldest_verification_ns.map(output::rfc3339),
            summary: output::SummaryJson(&r.summary),
            snapshot_program: &r.snapshot_program,
            report_program: &r.report_program,
            generated: output::rfc3339(r.generated_ns),
            metadata: &r.metadata,
            last_check: r.last_check.as_ref().map(CheckJson::from),
            last_data_check: r.last_data_check.as_ref().map(CheckJson::from),
            last_drill: r.last_drill.as_ref().map(DrillJson::from),
            encryption: None,
        }
    }
}

/// Prints the report as text, Markdown or JSON.
pub fn run(g: &GlobalArgs, out: Output, a: &ReportArgs) -> Result<Status> {
    let repo = open(g, out)?;
    let snap = select(&repo, &a.snapshot, &a.filter)?;
    let r = repo.report(&snap)?;
    if out.json {
        let mut j = ReportJson::new(&r);
        j.encryption = Some(EncryptionJson::of(&repo));
        out.json_value(&j)?;
        return Ok(Status::Ok);
    }
    if a.markdown {
        // Markdown is the requested output itself: print it even with -q.
        use std::io::Write;
        let mut o = std::io::stdout().lock();
        o.write_all(r.to_markdown().as_bytes())?;
        return Ok(Status::Ok);
    }
    let when = |ns: Option<i64>| ns.map_or("never (on this machine)".into(), output::local_time);
    out.line(format!("snapshot      {}", r.snapshot))?;
    out.line(format!("time          {}", output::local_time(r.time_ns)))?;
    out.line(format!("host          {} (user {})", r.host, r.username))?;
    out.line(format!("paths         {}", r.paths.join(", ")))?;
    if !r.tags.is_empty() {
        out.line(format!("tags          {}", r.tags.join(", ")))?;
    }
    out.line(format!("root tree     {}", r.tree))?;
    out.line(format!("merkle root   {}", r.merkle_root))?;
    out.line(format!(
        "contents      {} files, {} directories, {} other, {} ({} bytes)",
        r.files,
        r.dirs,
        r.others,
        output::bytes(r.total_size),
        r.total_size
    ))?;
    out.line(format!(
        "storage       {} blobs in {} packs, {} verified by a data check",
        r.blobs, r.packs, r.packs_verified
    ))?;
    out.line(format!(
        "last check    {}{}",
        when(r.last_check.as_ref().map(|c| c.time_ns)),
        r.last_check.as_ref().map_or(String::new(), |c| format!(
            " ({}, {} errors)",
            if c.read_data { "data" } else { "structure" },
            c.errors
        ))
    ))?;
    out.line(format!(
        "last data     {}{}",
        when(r.last_data_check.as_ref().map(|c| c.time_ns)),
        r.last_data_check
            .as_ref()
            .map_or(String::new(), |c| format!(
                " ({} of {} packs, {} errors)",
                c.packs_verified, c.packs, c.errors
            ))
    ))?;
    out.line(format!(
        "last drill    {}{}",
        when(r.last_drill.as_ref().map(|d| d.time_ns)),
        r.last_drill.as_ref().map_or(String::new(), |d| format!(
            " ({} files, {})",
            d.files,
            if d.ok { "identical" } else { "FAILED" }
        ))
    ))?;
    let e = EncryptionJson::of(&repo);
    out.line(format!(
        "encryption    {}, data-key epochs {} (newest {})",
        e.cipher,
        e.live_epochs
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        e.newest_epoch
    ))?;
    out.line(format!("written by    {}", r.snapshot_program))?;
    Ok(Status::Ok)
}
