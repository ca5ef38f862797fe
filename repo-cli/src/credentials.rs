//! Where the repository password comes from. Passwords live in
//! [`Zeroizing`] buffers and are never printed, not even in errors.
//!
//! Order: `--password-file` / `CAIRN_PASSWORD_FILE`, then
//! `--password-command` / `CAIRN_PASSWORD_COMMAND`, then `CAIRN_PASSWORD`,
//! then an interactive prompt when standard input is a terminal. A new
//! password (`key add`, `key passwd`) comes from `--new-password-file`, then
//! `CAIRN_NEW_PASSWORD`, then a prompt asked twice.

use std::io::IsTerminal;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use repo_core::ServiceToken;
use zeroize::Zeroizing;

use crate::cli::GlobalArgs;

/// A password; its buffer is wiped when dropped.
pub type Password = Zeroizing<Vec<u8>>;

/// Environment variable holding the password itself (not a clap argument,
/// so it never shows in `--help`).
pub const PASSWORD_ENV: &str = "CAIRN_PASSWORD";

/// Whether the password is for a new repository (asked twice at a prompt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Unlock an existing repository.
    Open,
    /// Protect a new repository.
    Init,
    /// A new password for an existing repository (`key add`, `key passwd`).
    NewKey,
}

/// Finds the password, in the documented order.
pub fn password(global: &GlobalArgs, purpose: Purpose) -> Result<Password> {
    let pw = if let Some(file) = &global.password_file {
        from_file(file)?
    } else if let Some(cmd) = &global.password_command {
        from_command(cmd)?
    } else if let Some(v) = std::env::var_os(PASSWORD_ENV) {
        Zeroizing::new(v.into_vec())
    } else if std::io::stdin().is_terminal() {
        prompt(purpose)?
    } else {
        bail!(
            "no password given: set CAIRN_PASSWORD_FILE, CAIRN_PASSWORD_COMMAND or CAIRN_PASSWORD, \
             use --password-file or --password-command, or run from a terminal to be asked"
        );
    };
    if pw.is_empty() {
        bail!("empty password");
    }
    Ok(pw)
}

/// Reads an unattended key's token from `path` (`--key-file`,
/// `CAIRN_KEY_FILE`). A token others can read is a password others can
/// read: that earns a warning, as `ssh` does for private keys.
pub fn service_token(path: &Path) -> Result<ServiceToken> {
    use std::os::unix::fs::PermissionsExt;
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read key file {}", path.display()))?,
    );
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "cairn: warning: key file {} is readable by others (mode {:o}); \
             it opens the repository like a password: chmod 600 it",
            path.display(),
            m.permissions().mode() & 0o777
        );
    }
    ServiceToken::parse(&text).with_context(|| format!("key file {}", path.display()))
}

/// Creates `path` for a new token: mode 0600, refused if anything exists
/// there (no overwrite, no following a planted symlink), handed to `owner`
/// (a user name or uid, with that user's group) if given. Nothing is
/// written yet, so a refusal happens before the key is added.
pub fn create_token_file(path: &Path, owner: Option<&str>) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let ids = owner.map(owner_ids).transpose()?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create key file {}", path.display()))?;
    if let Some((uid, gid)) = ids
        && let Err(e) = std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
    {
        let _ = std::fs::remove_file(path);
        return Err(anyhow::Error::from(e).context(format!(
            "cannot give key file {} to {}",
            path.display(),
            owner.unwrap_or("")
        )));
    }
    Ok(file)
}

/// A user name or numeric uid → (uid, that user's primary gid).
fn owner_ids(owner: &str) -> Result<(u32, u32)> {
    use nix::unistd::{Uid, User};
    let user = match owner.parse::<u32>() {
        Ok(n) => User::from_uid(Uid::from_raw(n)),
        Err(_) => User::from_name(owner),
    }
    .with_context(|| format!("cannot look up user {owner}"))?
    .with_context(|| format!("no user {owner}"))?;
    Ok((user.uid.as_raw(), user.gid.as_raw()))
}

/// Environment variable holding the source repository's password itself,
/// for `copy` and `init --copy-chunker-params` (like `CAIRN_PASSWORD`).
pub const FROM_PASSWORD_ENV: &str = "CAIRN_FROM_PASSWORD";

/// The source repository's password: `file` (`--from-password-file`), then
/// `command` (`--from-password-command`), then `CAIRN_FROM_PASSWORD`, then
/// a prompt on a terminal.
pub fn source_password(file: Option<&Path>, command: Option<&str>) -> Result<Password> {
    let pw = if let Some(file) = file {
        from_file(file)?
    } else if let Some(cmd) = command {
        from_command(cmd)?
    } else if let Some(v) = std::env::var_os(FROM_PASSWORD_ENV) {
        Zeroizing::new(v.into_vec())
    } else if std::io::stdin().is_terminal() {
        let s = Zeroizing::new(
            rpassword::prompt_password("enter password for source repository: ")
                .context("cannot read the password")?,
        );
        Zeroizing::new(s.as_bytes().to_vec())
    } else {
        bail!(
            "no password for the source repository given: use --from-password-file or \
             --from-password-command, set CAIRN_FROM_PASSWORD_FILE, CAIRN_FROM_PASSWORD_COMMAND \
             or CAIRN_FROM_PASSWORD, or run from a terminal to be asked"
        );
    };
    if pw.is_empty() {
        bail!("empty password for the source repository");
    }
    Ok(pw)
}

/// Environment variable holding a new password for `key add` and `key
/// passwd`, meant for scripts and tests; like `CAIRN_PASSWORD`, it is not
/// a clap argument, so its value never shows in `--help`.
pub const NEW_PASSWORD_ENV: &str = "CAIRN_NEW_PASSWORD";

/// Finds a new password: `file` (`--new-password-file`), then
/// `CAIRN_NEW_PASSWORD`, then a prompt asked twice on a terminal.
pub fn new_password(file: Option<&Path>) -> Result<Password> {
    let pw = if let Some(file) = file {
        from_file(file)?
    } else if let Some(v) = std::env::var_os(NEW_PASSWORD_ENV) {
        Zeroizing::new(v.into_vec())
    } else if std::io::stdin().is_terminal() {
        prompt(Purpose::NewKey)?
    } else {
        bail!(
            "no new password given: use --new-password-file or set CAIRN_NEW_PASSWORD, \
             or run from a terminal to be asked"
        );
    };
    if pw.is_empty() {
        bail!("empty new password");
    }
    Ok(pw)
}

/// Cuts `buf` at its first newline (dropping a `\r` before it) in place, so
/// the discarded bytes are wiped with the buffer.
fn first_line(mut buf: Password) -> Password {
    if let Some(i) = buf.iter().position(|&b| b == b'\n') {
        buf.truncate(i);
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    buf
}

fn from_file(path: &Path) -> Result<Password> {
    let buf = Zeroizing::new(
        std::fs::read(path)
            .with_context(|| format!("cannot read password file {}", path.display()))?,
    );
    Ok(first_line(buf))
}

fn from_command(cmd: &str) -> Result<Password> {
    // Standard input and error stay ours, so the command may prompt (pass, gpg).
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::inherit())
        .stderr(Stdio::inherit())
        .stdout(Stdio::piped())
        .output()
        .context("cannot run the password command")?;
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        bail!(
            "password command failed: {}",
            crate::commands::describe_status(out.status)
        );
    }
    Ok(first_line(stdout))
}

fn prompt(purpose: Purpose) -> Result<Password> {
    let ask = |text: &str| -> Result<Password> {
        let s =
            Zeroizing::new(rpassword::prompt_password(text).context("cannot read the password")?);
        Ok(Zeroizing::new(s.as_bytes().to_vec()))
    };
    let first = match purpose {
        Purpose::Open => return ask("enter password for repository: "),
        Purpose::Init => "enter password for new repository: ",
        Purpose::NewKey => "enter new password: ",
    };
    let a = ask(first)?;
    let b = ask("enter password again: ")?;
    if a != b {
        bail!("passwords do not match");
    }
    Ok(a)
}

/// An exporter's connection string (`--dsn`, `--url`): the option's value
/// (given on the command line or through `env`, which clap fills in), else
/// the first line of `file`. A password typed on the command line itself is
/// visible to every local user in `ps`, so it earns a warning.
pub fn connection_string(
    value: Option<&str>,
    file: Option<&Path>,
    option: &str,
    env: Option<&str>,
    has_password: impl Fn(&str) -> bool,
) -> Result<String> {
    let file_option = format!("{option}-file");
    let instead = match env {
        Some(e) => format!("set {e} or use {file_option}"),
        None => format!("use {file_option}"),
    };
    let in_argv = |v: &str| {
        std::env::args_os().any(|a| {
            a.to_str().is_some_and(|a| {
                a == v || a.strip_prefix(option).and_then(|r| r.strip_prefix('=')) == Some(v)
            })
        })
    };
    match (value, file) {
        (Some(v), Some(_)) if in_argv(v) => {
            bail!("give {option} or {file_option}, not both")
        }
        // The file given on the command line beats the environment.
        (_, Some(f)) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {file_option} {}", f.display()))?;
            let line = text.lines().next().unwrap_or("").trim();
            if line.is_empty() {
                bail!("{file_option} {} is empty", f.display());
            }
            Ok(line.to_string())
        }
        (Some(v), None) => {
            if in_argv(v) && has_password(v) {
                eprintln!(
                    "cairn: warning: the password in {option} is visible to other local users \
                     (ps, /proc); {instead} instead"
                );
            }
            Ok(v.to_string())
        }
        (None, None) => bail!(
            "give {option} or {file_option}{}",
            env.map(|e| format!(", or set {e}")).unwrap_or_default()
        ),
    }
}

/// `scheme://user:secret@host…` → `scheme://user:***@host…`, for messages
/// and shown command lines; anything else unchanged. Works on text no URL
/// parser accepts, since those still reach error messages.
pub fn redact_url(s: &str) -> String {
    if let Some(i) = s.find("://") {
        let rest = &s[i + 3..];
        // The user info ends at the authority's last `@`; a password may
        // hold `@` and `/` (unencoded, by mistake), so search up to the last `@`.
        if let Some(at) = rest.rfind('@') {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!("{}{}:***{}", &s[..i + 3], &userinfo[..colon], &rest[at..]);
            }
        }
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_url_passwords() {
        assert_eq!(redact_url("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(
            redact_url("postgresql://u:pw@h/db"),
            "postgresql://u:***@h/db"
        );
        assert_eq!(redact_url("redis://:p@ss@h:1"), "redis://:***@h:1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(redact_url("--json"), "--json");
    }

    #[test]
    fn first_line_strips_newline_and_rest() {
        let f = |s: &[u8]| first_line(Zeroizing::new(s.to_vec())).to_vec();
        assert_eq!(f(b"secret\n"), b"secret");
        assert_eq!(f(b"secret\r\nmore\n"), b"secret");
        assert_eq!(f(b"secret"), b"secret");
        assert_eq!(f(b"\n"), b"");
    }
}
