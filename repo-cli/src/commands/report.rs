//! `cairn report`: an integrity report on one snapshot.

use anyhow::Result;
use repo_core::IntegrityReport;
use serde::Serialize;

use super::{Status, open, select};
use crate::cli::{GlobalArgs, ReportArgs};
use crate::output::{self, Output};

#[derive(Serialize)]
struct ReportJson<'a> {
    /// The snapshot's time, RFC 3339 UTC.
    time: String,
    /// When the report was made, RFC 3339 UTC.
    generated: String,
    #[serde(flatten)]
    report: &'a IntegrityReport,
}

/// Prints the report as text, Markdown or JSON.
pub fn run(g: &GlobalArgs, out: Output, a: &ReportArgs) -> Result<Status> {
    let repo = open(g, out)?;
    let snap = select(&repo, &a.snapshot, &a.filter)?;
    let r = repo.report(&snap)?;
    if out.json {
        out.json_value(&ReportJson {
            time: output::rfc3339(r.time_ns),
            generated: output::rfc3339(r.generated_ns),
            report: &r,
        })?;
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
    out.line(format!("written by    {}", r.snapshot_program))?;
    Ok(Status::Ok)
}
