//! `cairn key`: list, add, remove and change the repository's passwords.

use anyhow::{Context, Result};
use repo_core::{KdfBudget, KdfParams, KeyInfo, KeyStatus, Repository};
use serde::Serialize;

use super::{Status, open};
use crate::cli::{GlobalArgs, KeyAddArgs, KeyArgs, KeyCommand, NewKeyArgs};
use crate::credentials;
use crate::output::{self, Output, Table};

/// One `key list --json` entry. Every key is always present (null when it
/// does not apply), so scripts can rely on the shape.
#[derive(Serialize)]
struct KeyJson<'a> {
    id: String,
    short_id: String,
    current: bool,
    /// `ok` or `damaged`.
    status: &'static str,
    created: Option<String>,
    host: Option<&'a str>,
    username: Option<&'a str>,
    kdf: Option<KdfParams>,
    /// True for an unattended key (a service's token, SPEC §4.2).
    unattended: bool,
    /// Why a damaged key file cannot be used.
    error: Option<&'a str>,
    /// True for a key file with a public key (format version 4), which
    /// data-key epochs can be granted to (SPEC §29.2).
    public_key: bool,
    /// The data-key epochs it holds: 0 (from the master key) while live,
    /// and every epoch granted to it.
    epochs: Vec<u32>,
}

impl<'a> KeyJson<'a> {
    fn new(k: &'a KeyInfo, epochs: Vec<u32>) -> Self {
        let (status, details, error) = match &k.status {
            KeyStatus::Usable(d) => ("ok", Some(d), None),
            KeyStatus::Damaged(reason) => ("damaged", None, Some(reason.as_str())),
        };
        Self {
            id: k.id.to_hex(),
            short_id: k.id.short(),
            current: k.current,
            status,
            created: details.map(|d| output::rfc3339(d.created_ns)),
            host: details.map(|d| d.host.as_str()),
            username: details.map(|d| d.username.as_str()),
            kdf: details.map(|d| d.kdf),
            unattended: details.is_some_and(|d| d.kdf.is_unattended()),
            error,
            public_key: details.is_some_and(|d| d.public_key),
            epochs,
        }
    }
}

#[derive(Serialize)]
struct AddJson {
    id: String,
    short_id: String,
    kdf: KdfParams,
}

#[derive(Serialize)]
struct RemoveJson {
    removed: String,
}

#[derive(Serialize)]
struct PasswdJson {
    id: String,
    short_id: String,
    replaced: String,
    kdf: KdfParams,
}

/// Runs one `cairn key` subcommand.
pub fn run(g: &GlobalArgs, out: Output, a: &KeyArgs) -> Result<Status> {
    // `rotate` keeps the password it opens with, `retire` changes the
    // session's epochs: both open on their own.
    match &a.command {
        KeyCommand::Rotate(r) => return super::epochs::rotate(g, out, r),
        KeyCommand::Retire(r) => return super::epochs::retire(g, out, r),
        _ => {}
    }
    // Every subcommand needs an unlocked session: `list` to mark the
    // current key, the others to wrap the master key or apply the rules.
    let repo = open(g, out)?;
    match &a.command {
        KeyCommand::Rotate(_) | KeyCommand::Retire(_) => unreachable!("handled above"),
        KeyCommand::Epochs => return super::epochs::epochs(&repo, out),
        KeyCommand::List => list(&repo, out)?,
        KeyCommand::Add(a) if a.unattended => add_unattended(&repo, out, a)?,
        KeyCommand::Add(a) => {
            let kdf = kdf_params(&a.new, KdfParams::default());
            warn_kdf(out, &kdf);
            let pw = credentials::new_password(a.new.new_password_file.as_deref())?;
            let id = repo.add_key(&pw, kdf)?;
            if out.json {
                out.json_value(&AddJson {
                    id: id.to_hex(),
                    short_id: id.short(),
                    kdf,
                })?;
            } else {
                out.line(format!(
                    "added key {}: the new password opens this repository",
                    id.short()
                ))?;
            }
        }
        KeyCommand::Remove(a) => {
            let id = repo.find_key(&a.id)?;
            repo.remove_key(&id)?;
            if out.json {
                out.json_value(&RemoveJson {
                    removed: id.to_hex(),
                })?;
            } else {
                out.line(format!("removed key {}", id.short()))?;
            }
        }
        KeyCommand::Passwd(a) => {
            // Keep the cost the user chose for this key unless told otherwise.
            let current = repo
                .keys()?
                .into_iter()
                .find_map(|k| match k.status {
                    KeyStatus::Usable(d) if k.current => Some(d.kdf),
                    _ => None,
                })
                .unwrap_or_default();
            // Re-wrapping a service's random secret as a person's password
            // would keep its no-stretching parameters: refuse.
            if current.is_unattended() {
                anyhow::bail!(
                    "this session was opened with an unattended key, which has no password to \
                     change: add a new one with `cairn key add --unattended` and remove this one"
                );
            }
            let kdf = kdf_params(&a.new, current);
            warn_kdf(out, &kdf);
            let pw = credentials::new_password(a.new.new_password_file.as_deref())?;
            let change = repo.change_password(&pw, kdf)?;
            if out.json {
                out.json_value(&PasswdJson {
                    id: change.new_key.to_hex(),
                    short_id: change.new_key.short(),
                    replaced: change.old_key.to_hex(),
                    kdf,
                })?;
            } else {
                out.line(format!(
                    "changed password: key {} replaces key {}",
                    change.new_key.short(),
                    change.old_key.short()
                ))?;
            }
        }
    }
    Ok(Status::Ok)
}

#[derive(Serialize)]
struct AddUnattendedJson {
    id: String,
    short_id: String,
    unattended: bool,
    output: String,
}

/// `key add --unattended`: the token file is created first (0600, never
/// over an existing file), so a refusal adds no key; a key whose token
/// could not be written is removed again, since nobody could use it.
fn add_unattended(repo: &Repository, out: Output, a: &KeyAddArgs) -> Result<()> {
    use std::io::Write;
    let path = a
        .output
        .as_deref()
        .context("--unattended needs --output FILE")?;
    let mut file = credentials::create_token_file(path, a.owner.as_deref())?;
    let token = match repo.add_unattended_key() {
        Ok(t) => t,
        Err(e) => {
            let _ = std::fs::remove_file(path);
            return Err(e.into());
        }
    };
    let line = token.to_line();
    let written = file
        .write_all(format!("{}\n", line.as_str()).as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = repo.remove_key(&token.key_id());
        let _ = std::fs::remove_file(path);
        return Err(
            anyhow::Error::from(e).context(format!("cannot write key file {}", path.display()))
        );
    }
    let id = token.key_id();
    if out.json {
        out.json_value(&AddUnattendedJson {
            id: id.to_hex(),
            short_id: id.short(),
            unattended: true,
            output: path.display().to_string(),
        })?;
    } else {
        out.line(format!(
            "added unattended key {}: its token is in {}; open with --key-file {1} \
             (or CAIRN_KEY_FILE); revoke with `cairn key remove {0}`",
            id.short(),
            path.display()
        ))?;
    }
    Ok(())
}

/// `--kdf-memory`, `--kdf-iterations` and `--kdf-parallelism` over `base`.
fn kdf_params(a: &NewKeyArgs, base: KdfParams) -> KdfParams {
    KdfParams {
        memory_kib: a.kdf_memory.unwrap_or(base.memory_kib),
        iterations: a.kdf_iterations.unwrap_or(base.iterations),
        parallelism: a.kdf_parallelism.unwrap_or(base.parallelism),
    }
}

/// Warns about parameters weaker than RFC 9106 recommends, or so costly
/// that an open does not try the key unless named (SPEC §14).
pub(super) fn warn_kdf(out: Output, k: &KdfParams) {
    if k.exceeds(&KdfBudget::default()) {
        out.warn(format!(
            "KDF parameters {} cost more than an open spends on a key file it is not \
             told to use: this password will open the repository only with --key ID",
            kdf_text(k)
        ));
    } else if k.is_weak() {
        out.warn(format!(
            "KDF parameters {} are weaker than RFC 9106 recommends (m=64 MiB, t=3): \
             a copy of the key file is cheaper to attack",
            kdf_text(k)
        ));
    }
}

/// `m=64.0 MiB t=3 p=1`.
fn kdf_text(k: &KdfParams) -> String {
    format!(
        "m={} t={} p={}",
        output::bytes(u64::from(k.memory_kib) * 1024),
        k.iterations,
        k.parallelism
    )
}

fn list(repo: &Repository, out: Output) -> Result<()> {
    let keys = repo.keys()?;
    let granted = repo.granted_epochs()?;
    let live = repo.data_keys().live_epochs();
    // Epoch 0 comes with the master key; the others only by grant.
    let held = |k: &KeyInfo| -> Vec<u32> {
        let mut e: Vec<u32> = live
            .iter()
            .copied()
            .filter(|&n| n == 0 || granted.get(&k.id).is_some_and(|g| g.contains(&n)))
            .collect();
        e.dedup();
        e
    };
    if out.json {
        let v: Vec<_> = keys.iter().map(|k| KeyJson::new(k, held(k))).collect();
        out.json_value(&v)?;
        return Ok(());
    }
    let header = ["", "ID", "Created", "Host", "User", "KDF", "Epochs"];
    let rows: Vec<[String; 7]> = keys
        .iter()
        .filter_map(|k| match &k.status {
            KeyStatus::Usable(d) => Some([
                if k.current { "*" } else { "" }.to_string(),
                k.id.short(),
                output::local_time(d.created_ns),
                d.host.clone(),
                d.username.clone(),
                if d.kdf.is_unattended() {
                    "unattended (no stretching)".to_string()
                } else {
                    kdf_text(&d.kdf)
                },
                held(k)
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ]),
            KeyStatus::Damaged(_) => None,
        })
        .collect();
    let mut table = Table::new(&header);
    for r in rows {
        table.row(r);
    }
    out.line(table.header_line())?;
    for l in table.row_lines() {
        out.line(l)?;
    }
    let width = table.widths();
    // Damaged files do not fit the columns; their reason is the point.
    let damaged: Vec<_> = keys
        .iter()
        .filter_map(|k| match &k.status {
            KeyStatus::Damaged(reason) => Some((k, reason)),
            KeyStatus::Usable(_) => None,
        })
        .collect();
    for (k, reason) in &damaged {
        out.line(format!(
            "{:<w$}  {}  damaged: {reason}",
            "",
            k.id.short(),
            w = width[0]
        ))?;
    }
    let n = keys.len();
    let mut summary = format!("{n} key{}", if n == 1 { "" } else { "s" });
    if !damaged.is_empty() {
        summary.push_str(&format!(" ({} damaged)", damaged.len()));
    }
    out.line(summary)?;
    Ok(())
}
