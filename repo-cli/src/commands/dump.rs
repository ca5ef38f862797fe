//! `cairn dump`: one file's content to stdout.

use std::io::{self, Write};

use anyhow::{Result, bail};
use repo_core::NodeKind;

use super::{Status, find_node, open, select};
use crate::cli::{DumpArgs, GlobalArgs};
use crate::output::Output;

/// Writes the file at the path to stdout, verifying every chunk.
pub fn run(g: &GlobalArgs, out: Output, a: &DumpArgs) -> Result<Status> {
    let repo = open(g, out)?;
    let snap = select(&repo, &a.snapshot, &a.filter)?;
    let node = find_node(&repo, &snap, &a.path)?;
    let shown = a.path.to_string_lossy();
    match node.kind {
        NodeKind::File => {}
        NodeKind::Dir => bail!("{shown} is a directory; use restore"),
        _ => bail!("{shown} is not a regular file"),
    }
    let mut stdout = io::stdout().lock();
    repo.dump_node(&node, &mut stdout)?;
    stdout.flush()?;
    Ok(Status::Ok)
}
