//! `cairn`: the command-line interface to cairn repositories.
//!
//! A thin layer over the library: parse arguments (`cli`), find the password
//! (`credentials`), call `repo-core` (`commands`), render text or JSON
//! (`output`) and progress (`progress`). Exit codes are chosen in one place,
//! [`exit_code`], from the library's typed errors.

mod cli;
mod commands;
mod contract;
mod credentials;
mod exporters;
mod output;
mod plan;
mod progress;

use std::io;
use std::process::ExitCode;

use clap::Parser;

use crate::commands::Status;

/// Exit codes, numbered like restic's so scripts can tell cases apart.
///
/// One more is part of the contract without code here: 130 is what a shell
/// reports when Ctrl-C ends cairn (we keep the default SIGINT action, which
/// stops the process at once; the repository stays consistent because the
/// snapshot is written last). `docs/scripting.md` lists them all.
mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any error not listed below, including invalid arguments, and a
    /// `check` or `drill` that found a problem.
    pub const FAILURE: u8 = 1;
    /// The backup was saved, but some source files could not be read.
    pub const INCOMPLETE: u8 = 3;
    /// No repository at the given location.
    pub const NO_REPOSITORY: u8 = 10;
    /// Another process holds a lock cairn needs (another `cairn run` of
    /// the same plan). The repository itself is never locked.
    pub const LOCKED: u8 = 11;
    /// The password opens no key of the repository.
    pub const WRONG_PASSWORD: u8 = 12;

    /// The `kind` of an exit code in the `--json` error object.
    pub fn kind(code: u8) -> &'static str {
        match code {
            INCOMPLETE => "incomplete",
            NO_REPOSITORY => "no_repository",
            LOCKED => "locked",
            WRONG_PASSWORD => "wrong_password",
            _ => "error",
        }
    }
}

fn main() -> ExitCode {
    // Before any thread exists: the only time the local offset can be read soundly.
    output::init_local_offset();
    tune_allocator();
    raise_open_files_limit();
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version end up here too, on stdout, with success.
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::from(exit::OK);
            }
            // The parse failed, so `--json` is looked for in the raw
            // arguments: a script asking for JSON gets the error object.
            if json_requested(std::env::args_os().skip(1)) {
                print_json_error(clap_message(&e), exit::FAILURE);
            } else {
                let _ = e.print();
            }
            return ExitCode::from(exit::FAILURE);
        }
    };
    match commands::run(&cli) {
        Ok(Status::Ok) => ExitCode::from(exit::OK),
        Ok(Status::Incomplete) => ExitCode::from(exit::INCOMPLETE),
        Ok(Status::Missing) => ExitCode::from(exit::FAILURE),
        Err(err) if is_broken_pipe(&err) => ExitCode::from(exit::OK),
        Err(err) => {
            let code = exit_code(&err);
            if cli.global.json {
                print_json_error(message(&err), code);
            } else {
                eprintln!("cairn: error: {}", message(&err));
                if let Some(h) = hint(&err) {
                    eprintln!("cairn: hint: {h}");
                }
            }
            ExitCode::from(code)
        }
    }
}

/// The `--json` error object, on one line of stderr so a reader can take
/// its last line.
fn print_json_error(message: String, code: u8) {
    let report = contract::ErrorReport {
        error: contract::ErrorBody {
            message,
            exit_code: code,
            kind: exit::kind(code).into(),
        },
    };
    match serde_json::to_string(&report) {
        Ok(line) => eprintln!("{line}"),
        Err(_) => eprintln!("cairn: error: {}", report.error.message),
    }
}

/// Whether `--json` is among the arguments (before a `--`, after which
/// everything is a command's own argument).
fn json_requested(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    args.take_while(|a| a != "--").any(|a| a == "--json")
}

/// A parse error as one line: clap's message (its first paragraph, which
/// may list the missing arguments on lines of their own) without the
/// `error: ` prefix, the usage and the help pointer.
fn clap_message(e: &clap::Error) -> String {
    // This one renders the command's help, whose first line is no error.
    // The other is what clap reports instead when a global option came
    // from the environment (`CAIRN_REPOSITORY`): one message for both.
    if matches!(
        e.kind(),
        clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            | clap::error::ErrorKind::MissingSubcommand
    ) {
        return "a subcommand is required (see --help for the list)".into();
    }
    let text = e.render().to_string();
    let para: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let line = para.join(" ");
    line.strip_prefix("error: ").unwrap_or(&line).to_string()
}

/// glibc serves a large allocation from its own mapping until one is freed,
/// then raises the threshold to that size (up to 32 MiB): after the first
/// pack buffer is freed, pack, chunker and blob buffers come from the heap
/// arenas, whose freed space is kept and fragments. A fixed threshold keeps
/// every buffer of 1 MiB or more in a mapping returned on free. Measured on
/// the 1 GiB benchmark corpus: initial backup peak RSS 128 → 74 MiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mallopt only changes a malloc tunable; called before any
    // thread exists, with a documented parameter and a valid value.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// Raises the soft limit of open files to the hard one (at most 65,536),
/// as Go programs such as restic do: a restore keeps a batch of files open
/// (three quarters of the limit), and each batch reads the packs it needs once, so on
/// object storage the usual soft limit of 1024 would mean a request per
/// pack for every 512 files. Failure keeps the limit as it was.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(1 << 16);
        if soft < want {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
        }
    }
}

/// Maps an error to an exit code by finding the library's error in its chain.
fn exit_code(err: &anyhow::Error) -> u8 {
    use repo_core::CryptoError;
    use repo_core::Error;
    for cause in err.chain() {
        if cause.downcast_ref::<contract::LockHeld>().is_some() {
            return exit::LOCKED;
        }
        if let Some(e) = cause.downcast_ref::<Error>() {
            match e {
                Error::NotARepository(_) => return exit::NO_REPOSITORY,
                Error::WrongPassword
                | Error::KeysNotTried(_)
                | Error::BadServiceToken(_)
                | Error::ServiceKeyGone(_)
                | Error::CachedKeyGone(_)
                | Error::Crypto(CryptoError::WrongPassword) => {
                    return exit::WRONG_PASSWORD;
                }
                _ => {}
            }
        }
        if let Some(CryptoError::WrongPassword) = cause.downcast_ref::<CryptoError>() {
            return exit::WRONG_PASSWORD;
        }
    }
    exit::FAILURE
}

/// What to do next, for library errors that have an obvious next step. The
/// library's messages state only what happened (a GUI has no `cairn`
/// command); the CLI adds the advice here, in one place.
fn hint(err: &anyhow::Error) -> Option<&'static str> {
    use repo_core::Error;
    err.chain()
        .find_map(|c| c.downcast_ref::<Error>())
        .and_then(|e| match e {
            Error::NotARepository(_) => Some("run `cairn init` to create a repository there"),
            Error::ServiceKeyGone(_) => Some(
                "a removed unattended key stays revoked: add a new one with \
                 `cairn key add --unattended --output FILE`",
            ),
            Error::CachedKeyGone(_) => Some(
                "run the command again: the next open searches the repository's key files \
                 for one the password opens",
            ),
            Error::KeyInUse(_) => Some(
                "open the repository with another key's password, \
                 or use `cairn key passwd` to replace this key",
            ),
            Error::Damaged {
                kind: repo_core::ObjectKind::Index,
                ..
            } => Some("run `cairn repair index` first"),
            Error::Damaged {
                kind: repo_core::ObjectKind::Snapshot,
                ..
            } => Some("remove it with `cairn repair snapshots --forget-damaged` first"),
            Error::LostPack { .. } => {
                Some("run `cairn repair index`, then `cairn repair snapshots`, and back up again")
            }
            Error::BlobNotFound(_)
            | Error::TreeAsContent(_)
            | Error::DictionaryUnavailable { .. } => {
                Some("run `cairn check` to see what is damaged")
            }
            _ => None,
        })
        .or_else(|| {
            // rustls's words for a certificate no trusted authority signed.
            message(err).contains("invalid peer certificate").then_some(
                "if the storage's certificate is signed by your own authority, \
                 name that authority's certificate (PEM) with --s3-ca-cert FILE or AWS_CA_BUNDLE",
            )
        })
}

/// True when stdout was closed by its reader (`cairn ls … | head`): not an
/// error worth a message.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes joined with `": "`. Many library messages
/// already include their source; a cause whose text is already shown is skipped.
pub(crate) fn message(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let m = cause.to_string();
        if m.is_empty() || line.contains(&m) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&m);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_come_from_typed_errors() {
        let e = anyhow::Error::from(repo_core::Error::WrongPassword).context("opening");
        assert_eq!(exit_code(&e), exit::WRONG_PASSWORD);
        let e = anyhow::Error::from(repo_core::Error::NotARepository("/x".into()));
        assert_eq!(exit_code(&e), exit::NO_REPOSITORY);
        assert_eq!(exit_code(&anyhow::anyhow!("other")), exit::FAILURE);
        let e = anyhow::Error::from(contract::LockHeld("plan p is already running".into()))
            .context("run");
        assert_eq!(exit_code(&e), exit::LOCKED);
    }

    #[test]
    fn library_errors_get_their_hint_in_the_cli() {
        let e = anyhow::Error::from(repo_core::Error::NotARepository("/x".into())).context("open");
        assert!(!message(&e).contains("cairn init"));
        assert!(hint(&e).is_some_and(|h| h.contains("cairn init")));
        let e = anyhow::Error::from(repo_core::Error::WrongPassword);
        assert_eq!(hint(&e), None);
    }

    #[test]
    fn message_skips_repeated_causes() {
        let io = io::Error::new(io::ErrorKind::NotFound, "gone");
        let e = anyhow::Error::from(repo_core::Error::Source {
            path: "/a".into(),
            source: io,
        })
        .context("backup");
        assert_eq!(message(&e), "backup: cannot read /a: gone");
    }

    #[test]
    fn json_is_found_before_a_double_dash() {
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(json_requested(args(&["--json", "backup"]).into_iter()));
        assert!(json_requested(args(&["backup", "--json", "x"]).into_iter()));
        assert!(!json_requested(
            args(&["backup", "--stdin-from-command", "--", "x", "--json"]).into_iter()
        ));
        assert!(!json_requested(args(&["backup"]).into_iter()));
    }

    #[test]
    fn broken_pipe_is_found_in_the_chain() {
        let io = io::Error::new(io::ErrorKind::BrokenPipe, "pipe");
        let e = anyhow::Error::from(repo_core::Error::Target {
            path: "<output>".into(),
            source: io,
        });
        assert!(is_broken_pipe(&e));
    }
}
