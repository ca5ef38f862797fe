//! `cairn stats`: logical, unique and stored sizes of snapshots.

use anyhow::Result;
use repo_core::BlobTotals;
use repo_core::StatsMode;

use super::{Status, find, open};
use crate::cli::{GlobalArgs, StatsArgs, StatsModeArg};
use crate::output::{self, Output};

/// Prints the statistics of the selected snapshots.
pub fn run(g: &GlobalArgs, out: Output, a: &StatsArgs) -> Result<Status> {
    let repo = open(g, out)?;
    let snaps = find::snapshots(&repo, &a.snapshots, &a.filter)?;
    let mode = match a.mode {
        StatsModeArg::RestoreSize => StatsMode::RestoreSize,
        StatsModeArg::Raw => StatsMode::Raw,
        StatsModeArg::Dedup => StatsMode::Dedup,
    };
    let st = repo.stats(&snaps, mode)?;
    let missing = st.data_blobs.map_or(0, |b| b.missing) + st.tree_blobs.map_or(0, |b| b.missing);
    if missing > 0 {
        out.warn(format!(
            "{missing} referenced blobs are not in the index (lost data?); run `cairn check`"
        ));
    }
    if st.restore.bytes == u64::MAX {
        // The library saturates rather than wraps: recorded file sizes are
        // claims, and a damaged or forged tree can inflate them.
        out.warn(
            "the recorded file sizes add up to 2^64 - 1 bytes or more: the restore size \
             is a lower bound (damaged trees? run `cairn check`)",
        );
    }
    if out.json {
        out.json_value(&st)?;
        return Ok(Status::Ok);
    }
    let mode_name = match mode {
        StatsMode::RestoreSize => "restore-size",
        StatsMode::Raw => "raw",
        StatsMode::Dedup => "dedup",
    };
    let n = st.snapshots;
    out.line(format!(
        "Stats for {n} snapshot{} (mode {mode_name}):",
        if n == 1 { "" } else { "s" }
    ))?;
    let r = &st.restore;
    out.line(format!("  Files:            {}", r.files))?;
    out.line(format!("  Directories:      {}", r.dirs))?;
    if r.others > 0 {
        out.line(format!("  Other entries:    {}", r.others))?;
    }
    let exact = if r.bytes >= 1024 {
        format!(" ({} bytes)", r.bytes)
    } else {
        String::new()
    };
    out.line(format!(
        "  Restore size:     {}{exact}",
        output::bytes(r.bytes)
    ))?;
    let blobs = |what: &str, b: &BlobTotals| {
        format!(
            "{} {what}, {} plaintext, {} stored",
            b.count,
            output::bytes(b.raw_bytes),
            output::bytes(b.stored_bytes)
        )
    };
    if let Some(d) = &st.data_blobs {
        out.line(format!("  Unique data:      {}", blobs("chunks", d)))?;
    }
    if let Some(t) = &st.tree_blobs {
        out.line(format!("  Unique trees:     {}", blobs("trees", t)))?;
    }
    if let Some(c) = st.compression_ratio {
        out.line(format!("  Compression:      {c:.2}x"))?;
    }
    if let Some(d) = st.dedup_ratio {
        out.line(format!("  Dedup ratio:      {d:.2}x"))?;
    }
    out.line(format!(
        "  Repository size:  {} in {} pack{}",
        output::bytes(st.repository.bytes),
        st.repository.packs,
        if st.repository.packs == 1 { "" } else { "s" }
    ))?;
    if st.repository.wal_files > 0 {
        out.line(format!(
            "  Archived WAL:     {} in {} files",
            output::bytes(st.repository.wal_bytes),
            st.repository.wal_files
        ))?;
    }
    Ok(Status::Ok)
}
