//! Child processes as backup sources: shared by `backup --stdin-from-command`
//! and the exporters.

use std::ffi::OsString;
use std::io::{self, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::commands::describe_status;

/// A command's standard output as a reader. At end of file it waits for the
/// command and turns a failure into a read error, so the library aborts the
/// backup and writes no snapshot of a partial dump.
pub struct CommandReader {
    /// The command's base name: the default stream name, and the name in errors.
    pub name: String,
    child: Child,
    stdout: ChildStdout,
    done: bool,
}

impl CommandReader {
    /// Runs `argv` (program and arguments) with its standard error inherited.
    pub fn spawn(argv: &[OsString]) -> Result<Self> {
        let Some((prog, args)) = argv.split_first() else {
            bail!("--stdin-from-command needs a command after `--`");
        };
        let mut cmd = Command::new(prog);
        cmd.args(args);
        Self::from_command(cmd)
    }

    /// Runs a prepared command; its standard input and output are replaced
    /// (null and a pipe), its standard error is inherited.
    pub fn from_command(mut cmd: Command) -> Result<Self> {
        let prog = cmd.get_program().to_owned();
        let name = Path::new(&prog)
            .file_name()
            .unwrap_or(&prog)
            .to_string_lossy()
            .into_owned();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot run {}", Path::new(&prog).display()))?;
        let stdout = child
            .stdout
            .take()
            .context("command has no standard output")?;
        Ok(Self {
            name,
            child,
            stdout,
            done: false,
        })
    }
}

impl Read for CommandReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.done {
            self.done = true;
            let status = self.child.wait()?;
            if !status.success() {
                return Err(io::Error::other(format!(
                    "command {} {}",
                    self.name,
                    describe_status(status)
                )));
            }
        }
        Ok(n)
    }
}

impl Drop for CommandReader {
    fn drop(&mut self) {
        if !self.done {
            // The backup failed before the end of the stream: stop the command.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
