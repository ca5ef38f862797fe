//! Child `cairn` processes: run with a timeout, their output collected.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::commands::describe_status;
use crate::contract::ErrorReport;
use crate::credentials::redact_url;

/// Exit code of a child whose snapshot was saved with unreadable files.
pub(super) const CHILD_INCOMPLETE: i32 = 3;
/// How much of a child's stderr the report keeps (its end).
pub(super) const STDERR_KEEP: usize = 8 * 1024;

/// A finished child process.
pub(super) struct Child {
    pub(super) code: Option<i32>,
    pub(super) status_text: String,
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: String,
    pub(super) duration: Duration,
}

impl Child {
    /// The child's error object (children run with `--json`), else its
    /// error line(s) (`cairn: error: …`), else the end of its stderr, else
    /// how it exited.
    pub(super) fn error(&self) -> String {
        if let Some(e) = ErrorReport::find(&self.stderr) {
            return e.error.message;
        }
        let errs: Vec<&str> = self
            .stderr
            .lines()
            .filter_map(|l| l.strip_prefix("cairn: error: "))
            .collect();
        if !errs.is_empty() {
            return errs.join("; ");
        }
        match self.stderr.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(l) => format!("{} ({})", l.trim(), self.status_text),
            None => self.status_text.clone(),
        }
    }
}

/// Runs a prepared child and collects everything it said. After
/// `timeout`, the child's whole process group (it and whatever it started,
/// such as pg_dump) is killed.
pub(super) fn spawn(mut c: Command, timeout: Option<Duration>) -> Result<Child> {
    let t = Instant::now();
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    if timeout.is_some() {
        // Its own group, to kill what it started too. Only then: a group of
        // its own would also keep Ctrl-C on a terminal from reaching it.
        c.process_group(0);
    }
    let mut child = c.spawn().context("cannot start the cairn child process")?;
    // Both pipes drained at once, so a chatty child never blocks on one.
    let mut so = child.stdout.take().expect("piped");
    let mut se = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let mut timed_out = false;
    let status = match timeout {
        None => child.wait()?,
        Some(limit) => loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if t.elapsed() >= limit {
                timed_out = true;
                let pg = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGKILL);
                break child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(50));
        },
    };
    let stdout = out.join().unwrap_or_default();
    let stderr_bytes = err.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr_bytes);
    let cut = stderr.len().saturating_sub(STDERR_KEEP);
    let cut = (cut..=stderr.len())
        .find(|&i| stderr.is_char_boundary(i))
        .unwrap_or(stderr.len());
    let mut status_text = describe_status(status);
    if timed_out {
        status_text = format!(
            "timed out after {}s and was killed",
            timeout.unwrap_or_default().as_secs()
        );
    }
    Ok(Child {
        code: if timed_out { None } else { status.code() },
        status_text,
        stdout,
        stderr: stderr[cut..].to_string(),
        duration: t.elapsed(),
    })
}

/// A command for display, with credentials in URLs hidden.
pub(super) fn show(c: &Command) -> String {
    let mut parts: Vec<String> = c
        .get_envs()
        .filter(|(k, _)| {
            *k == "CAIRN_PG_DSN" || *k == "CAIRN_PG_SCRATCH_DSN" || *k == "CAIRN_REDIS_URL"
        })
        .filter_map(|(k, v)| {
            Some(format!(
                "{}={}",
                k.to_string_lossy(),
                redact_url(&v?.to_string_lossy())
            ))
        })
        .collect();
    parts.push(c.get_program().to_string_lossy().into_owned());
    parts.extend(c.get_args().map(|a| redact_url(&a.to_string_lossy())));
    parts.join(" ")
}
