//! `cairn completions`: shell completion scripts.

use anyhow::Result;
use clap::CommandFactory;

use super::Status;
use crate::cli::{Cli, CompletionsArgs};

/// Prints the completion script for the chosen shell on stdout.
pub fn run(a: &CompletionsArgs) -> Result<Status> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "cairn", &mut buf);
    // Written in one call so a closed pipe surfaces as an error, not a panic.
    std::io::Write::write_all(&mut std::io::stdout().lock(), &buf)?;
    Ok(Status::Ok)
}
