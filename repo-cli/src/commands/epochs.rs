//! `cairn key rotate`, `key retire` and `key epochs`: data-key epochs
//! (SPEC §29).

use std::io::Write;

use anyhow::{Context, Result};
use repo_core::{EpochCensus, KeyStatus, Repository};
use serde::Serialize;

use super::{Status, open, open_with};
use crate::cli::{GlobalArgs, KeyRetireArgs, KeyRotateArgs};
use crate::credentials::{self, Purpose};
use crate::output::Output;

#[derive(Serialize)]
struct RotateJson {
    epoch: u32,
    live: Vec<u32>,
    granted: Vec<String>,
    /// The session's key file, re-wrapped with a public key: its new id.
    rewrapped: Option<String>,
    /// Where the re-wrapped unattended key's new token was written.
    token: Option<String>,
}

/// `key rotate`. The password is read once and kept: a key file without
/// a public key is re-wrapped under it.
pub fn rotate(g: &GlobalArgs, out: Output, a: &KeyRotateArgs) -> Result<Status> {
    let (r, token) = match &g.key_file {
        Some(f) => {
            let token = credentials::service_token(f)?;
            let mut repo = open(g, out)?;
            // A re-wrap changes the key's id, so its token: have a place
            // for the new one before anything changes.
            let mut file = if needs_rewrap(&repo)? {
                let path = a.output.as_deref().context(
                    "this session's unattended key has no public key and must be re-wrapped, \
                     which gives it a new token: pass --output FILE to receive it",
                )?;
                Some((
                    path,
                    credentials::create_token_file(path, a.owner.as_deref())?,
                ))
            } else {
                None
            };
            let (r, new) = match repo.rotate_key_unattended(&token) {
                Ok(x) => x,
                Err(e) => {
                    if let Some((path, _)) = &file {
                        let _ = std::fs::remove_file(path);
                    }
                    return Err(e.into());
                }
            };
            let written = match (new, file.as_mut()) {
                (Some(t), Some((path, f))) => {
                    f.write_all(format!("{}\n", t.to_line().as_str()).as_bytes())
                        .and_then(|()| f.sync_all())
                        .with_context(|| {
                            format!("cannot write the new token to {}", path.display())
                        })?;
                    Some(path.display().to_string())
                }
                (_, Some((path, _))) => {
                    let _ = std::fs::remove_file(path);
                    None
                }
                _ => None,
            };
            (r, written)
        }
        None => {
            let pw = credentials::password(g, Purpose::Open)?;
            let mut repo = open_with(g, out, Some(&pw))?;
            (repo.rotate_key(&pw)?, None)
        }
    };
    if out.json {
        out.json_value(&RotateJson {
            epoch: r.epoch,
            live: r.live.clone(),
            granted: r.granted.iter().map(|k| k.to_hex()).collect(),
            rewrapped: r.rewrapped.map(|c| c.new_key.to_hex()),
            token,
        })?;
    } else {
        if let Some(c) = &r.rewrapped {
            out.line(format!(
                "re-wrapped this session's key {} as key {} (with a public key)",
                c.old_key.short(),
                c.new_key.short()
            ))?;
        }
        if let Some(t) = &token {
            out.line(format!("its new token is in {t}; give it to the service"))?;
        }
        out.line(format!(
            "rotated to epoch {}: new data is sealed under it; granted to {} key file{}; live epochs {}",
            r.epoch,
            r.granted.len(),
            if r.granted.len() == 1 { "" } else { "s" },
            list(&r.live)
        ))?;
    }
    Ok(Status::Ok)
}

/// Whether the session's key file has no public key yet.
fn needs_rewrap(repo: &Repository) -> Result<bool> {
    Ok(repo
        .keys()?
        .into_iter()
        .any(|k| k.current && matches!(&k.status, KeyStatus::Usable(d) if !d.public_key)))
}

fn list(epochs: &[u32]) -> String {
    epochs
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Serialize)]
struct EpochsJson<'a> {
    live: Vec<u32>,
    newest: u32,
    cipher: &'static str,
    #[serde(flatten)]
    census: &'a EpochCensus,
}

/// `key retire EPOCH`.
pub fn retire(g: &GlobalArgs, out: Output, a: &KeyRetireArgs) -> Result<Status> {
    let mut repo = open(g, out)?;
    let census = repo.retire_epoch(a.epoch)?;
    if out.json {
        out.json_value(&EpochsJson {
            live: repo.data_keys().live_epochs(),
            newest: repo.data_keys().newest_epoch(),
            cipher: repo.data_keys().cipher().name(),
            census: &census,
        })?;
    } else {
        out.line(format!(
            "retired epoch {}: its key opens nothing in this repository any more; live epochs {}",
            a.epoch,
            list(&repo.data_keys().live_epochs())
        ))?;
    }
    Ok(Status::Ok)
}

/// `key epochs`: live epochs and the census.
pub fn epochs(repo: &Repository, out: Output) -> Result<Status> {
    let census = repo.epoch_census()?;
    let live = repo.data_keys().live_epochs();
    let newest = repo.data_keys().newest_epoch();
    if out.json {
        out.json_value(&EpochsJson {
            live,
            newest,
            cipher: repo.data_keys().cipher().name(),
            census: &census,
        })?;
    } else {
        out.line(format!(
            "live epochs {} (newest {newest} seals new objects); cipher {}",
            list(&live),
            repo.data_keys().cipher().name()
        ))?;
        for (e, n) in &census.per_epoch {
            out.line(format!(
                "epoch {e}: {n} object{}{}",
                if *n == 1 { "" } else { "s" },
                if live.contains(e) { "" } else { " (not live!)" }
            ))?;
        }
        for u in &census.unreadable {
            out.line(format!("unreadable under every live epoch: {u}"))?;
        }
    }
    if !census.unreadable.is_empty() {
        anyhow::bail!(
            "{} objects open under no live epoch",
            census.unreadable.len()
        );
    }
    Ok(Status::Ok)
}
