//! The on_success / on_failure hooks.

use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::commands::describe_status;
use crate::plan::Loaded;

/// Runs a hook with `sh -c`; its output goes to our stderr, so `--json`
/// stdout stays parseable.
pub(super) fn run_hook(
    cmd: &str,
    loaded: &Loaded,
    ok: bool,
    report: &Path,
    failed: &[String],
) -> Result<()> {
    let err = std::io::stderr().as_fd().try_clone_to_owned()?;
    let err2 = err.try_clone()?;
    let status = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("CAIRN_PLAN", &loaded.name)
        .env("CAIRN_PLAN_FILE", &loaded.path)
        .env("CAIRN_PLAN_STATUS", if ok { "success" } else { "failure" })
        .env("CAIRN_PLAN_REPORT", report)
        .env("CAIRN_PLAN_FAILED", failed.join(","))
        .stdin(Stdio::null())
        .stdout(Stdio::from(err))
        .stderr(Stdio::from(err2))
        .status()
        .context("cannot run the hook")?;
    if !status.success() {
        bail!("hook {}", describe_status(status));
    }
    Ok(())
}
