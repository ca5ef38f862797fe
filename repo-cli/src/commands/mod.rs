//! One module per subcommand: arguments in, one library call, output out.
//! Helpers shared by several commands (opening the repository, snapshot
//! selection, paths in a snapshot) live here.

mod audit;
mod backup;
mod cat;
mod check;
mod completions;
mod copy;
mod diff;
mod discover;
mod drill;
mod dump;
mod epochs;
mod find;
mod forget;
mod init;
mod key;
mod ls;
mod pg;
mod pg_select;
mod pitr;
mod plan;
mod plan_pitr;
mod preflight;
mod prune;
mod qdrant;
mod redis;
mod rekey;
mod repair;
mod report;
mod restore;
mod run;
mod snapshots;
mod stats;
mod verify_record;
mod wal;
mod wal_prefetch;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use anyhow::{Context, Result, anyhow};
use repo_core::{
    Backend, Location, Node, OpenOptions, Repository, S3Options, SnapshotEntry, SnapshotFilter,
};

use crate::cli::{Cli, Command, FilterArgs, GlobalArgs};
use crate::credentials::{self, Purpose};
use crate::output::Output;

/// How a command that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Everything worked.
    Ok,
    /// A backup was saved, but some source files could not be read.
    Incomplete,
    /// What was asked for is not there, which the caller expects to
    /// happen (`pg restore-wal`): exit 1, nothing printed.
    Missing,
}

/// Runs the parsed command line.
pub fn run(cli: &Cli) -> Result<Status> {
    // One audit record per audited command, whatever its outcome (SPEC §31).
    audit::begin(cli);
    audit::finish(dispatch(cli))
}

fn dispatch(cli: &Cli) -> Result<Status> {
    let g = &cli.global;
    let out = Output {
        json: g.json,
        quiet: g.quiet,
        verbose: g.verbose,
    };
    match &cli.command {
        Command::Init(a) => init::run(g, out, a),
        Command::Backup(a) => backup::run(g, out, a),
        Command::Snapshots(a) => snapshots::run(g, out, a),
        Command::Copy(a) => copy::run(g, out, a),
        Command::Ls(a) => ls::run(g, out, a),
        Command::Restore(a) => restore::run(g, out, a),
        Command::Dump(a) => dump::run(g, out, a),
        Command::Cat(a) => cat::run(g, out, a),
        Command::Forget(a) => forget::run(g, out, a),
        Command::Prune(a) => prune::run(g, out, a),
        Command::Rekey(a) => rekey::run(g, out, a),
        Command::Repair(a) => repair::run(g, out, a),
        Command::Key(a) => key::run(g, out, a),
        Command::Diff(a) => diff::run(g, out, a),
        Command::Find(a) => find::run(g, out, a),
        Command::Stats(a) => stats::run(g, out, a),
        Command::Check(a) => check::run(g, out, a),
        Command::Drill(a) => drill::run(g, out, a),
        Command::Report(a) => report::run(g, out, a),
        Command::Redis(a) => redis::run(g, out, a),
        Command::Pg(a) => pg::run(g, out, a),
        Command::Qdrant(a) => qdrant::run(g, out, a),
        Command::Completions(a) => completions::run(a),
        Command::Run(a) => run::run(g, out, a),
        Command::Plan(a) => plan::run(a),
        Command::Discover(a) => discover::run(out, a),
        Command::Audit(a) => audit::run(g, out, a),
    }
}

/// The repository location, required by every command but `completions`.
fn repo_path(g: &GlobalArgs) -> Result<&Path> {
    g.repo
        .as_deref()
        .ok_or_else(|| anyhow!("no repository given: use -r/--repo or set CAIRN_REPOSITORY"))
}

/// The current repository's location (`-r`), parsed (SPEC §11.1).
fn repo_location(g: &GlobalArgs) -> Result<Location> {
    Ok(Location::parse_os(repo_path(g)?.as_os_str())?)
}

/// How S3 locations are reached: `--s3-endpoint`, `--s3-path-style`,
/// `--s3-ca-cert`; credentials and region come from the AWS environment.
fn s3_options(g: &GlobalArgs) -> S3Options {
    S3Options {
        endpoint: g.s3_endpoint.clone().filter(|e| !e.is_empty()),
        path_style: g.s3_path_style,
        ca_cert: g.s3_ca_cert.clone().filter(|p| !p.as_os_str().is_empty()),
        ..Default::default()
    }
}

/// The storage of an existing repository at `location` (a path or an
/// `s3:` URL): the current one (`-r`) or a second one (`copy --from-repo`).
/// Nothing is read yet.
// The second repository's caller (`copy --from-repo`) is on its way.
#[allow(dead_code)]
pub fn backend_at(g: &GlobalArgs, location: &str) -> Result<Box<dyn Backend>> {
    backend_for(g, &Location::parse(location)?)
}

fn backend_for(g: &GlobalArgs, location: &Location) -> Result<Box<dyn Backend>> {
    location
        .open(&s3_options(g))
        .with_context(|| format!("cannot reach repository location {location}"))
}

/// The cache directory: `--cache-dir`, else `$XDG_CACHE_HOME/cairn`, else
/// `~/.cache/cairn`; `None` (in memory) with `--no-cache` or when no home
/// directory is known.
fn cache_dir(g: &GlobalArgs) -> Option<PathBuf> {
    if g.no_cache {
        return None;
    }
    if let Some(d) = &g.cache_dir {
        return Some(d.clone());
    }
    let nonempty = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    nonempty("XDG_CACHE_HOME")
        .filter(|p| p.is_absolute())
        .map(|p| p.join("cairn"))
        .or_else(|| nonempty("HOME").map(|h| h.join(".cache").join("cairn")))
}

/// Opens and unlocks the repository. A location without a config fails
/// before the password is asked for. Damaged files the library skips
/// (SPEC §13) are named on stderr as it meets them.
fn open(g: &GlobalArgs, out: Output) -> Result<Repository> {
    open_with(g, out, None)
}

/// [`open`] with the password already read (`key rotate` needs it again).
fn open_with(g: &GlobalArgs, out: Output, password: Option<&[u8]>) -> Result<Repository> {
    let (location, backend, config) = locate(g)?;
    unlock(g, out, &location, backend, config, password, false)
}

/// [`open`] for a handle whose first use is a backup: the index is read
/// by the backup, after its heartbeat, not by the open as well.
fn open_for_backup(g: &GlobalArgs, out: Output) -> Result<Repository> {
    let (location, backend, config) = locate(g)?;
    unlock(g, out, &location, backend, config, None, true)
}

/// Reads the `config` of `backend`: `Ok(None)` when the location holds no
/// repository. A failed read is told apart the way a listing tells it (a
/// missing bucket is an error, an empty prefix is no repository), so the
/// errors are those of a look before the read; only the failure path pays
/// the extra request. The bytes go to the open ([`OpenOptions::config`]):
/// one GET answers both "is this a repository?" and the open's read.
fn read_config(backend: &dyn Backend) -> Result<Option<Vec<u8>>, repo_core::BackendError> {
    use repo_core::ObjectKind;
    match backend.read(ObjectKind::Config, "config") {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) => match backend.list(ObjectKind::Config)? {
            found if found.is_empty() => Ok(None),
            _ => Err(e),
        },
    }
}

/// The storage of the current repository and its config: a location
/// without one fails (exit 10) before any password is asked for.
fn locate(g: &GlobalArgs) -> Result<(Location, Box<dyn Backend>, Vec<u8>)> {
    let location = repo_location(g)?;
    let backend = backend_for(g, &location)?;
    let Some(config) = read_config(&*backend)? else {
        return Err(repo_core::Error::NotARepository(backend.location()).into());
    };
    Ok((location, audit::observe(backend), config))
}

/// Unlocks the repository [`locate`] found (its `config` bytes), with
/// `password` or the one the options name (an unattended key's token
/// beats both); `defer_index` as [`OpenOptions::defer_index`].
fn unlock(
    g: &GlobalArgs,
    out: Output,
    location: &Location,
    backend: Box<dyn Backend>,
    config: Vec<u8>,
    password: Option<&[u8]>,
    defer_index: bool,
) -> Result<Repository> {
    let opts = OpenOptions {
        cache_dir: cache_dir(g),
        key: g.key.clone(),
        on_warning: Some(std::sync::Arc::new(move |w: &repo_core::Warning| {
            out.warn(w.to_string())
        })),
        defer_index,
        config: Some(config),
        // A backup's or copy's first walk confirms the key (SPEC §14).
        key_from_cache: defer_index,
        ..Default::default()
    };
    // An unattended key's token beats any password source: a service
    // given one must not fall back to prompting.
    let opened = match &g.key_file {
        Some(f) => Repository::open_unattended(backend, &credentials::service_token(f)?, opts),
        None => match password {
            Some(pw) => Repository::open(backend, pw, opts),
            None => Repository::open(backend, &credentials::password(g, Purpose::Open)?, opts),
        },
    };
    let mut repo = opened.inspect_err(|e| {
        if let repo_core::Error::KeysNotTried(ids) = e {
            out.warn(format!(
                "to try key file {} with this password, name it: --key {0}",
                ids[0].short()
            ));
        }
    })?;
    repo.set_connections(g.connections as usize);
    audit::opened(g, &repo)?;
    out.verbose(
        1,
        format!("opened repository {} at {location}", repo.id().short()),
    );
    Ok(repo)
}

/// The library filter for `--host`, `--tag`, `--path`. Absolute paths and
/// relative paths naming something that exists here are matched the way
/// backup records them (absolute); other relative paths are matched as
/// given, which is how stream names (`db.sql`) are recorded.
fn filter(f: &FilterArgs) -> Result<SnapshotFilter> {
    let mut paths = Vec::new();
    for p in &f.paths {
        let path = Path::new(p);
        let recorded = if path.is_absolute() || path.symlink_metadata().is_ok() {
            let abs = std::path::absolute(path)
                .with_context(|| format!("invalid path {}", path.display()))?;
            repo_core::normalize_path(&abs).into_os_string()
        } else {
            p.clone()
        };
        paths.push(recorded.as_bytes().to_vec());
    }
    Ok(SnapshotFilter {
        host: f.host.clone(),
        tags: f.tags.clone(),
        paths,
    })
}

/// Resolves `latest`, an id or a unique prefix, narrowed by the filters.
fn select(repo: &Repository, spec: &str, f: &FilterArgs) -> Result<SnapshotEntry> {
    Ok(repo.find_snapshot(spec, &filter(f)?)?)
}

/// The node at `path` in the snapshot (the library's
/// [`Repository::find_node`]); the root itself is a directory node.
fn find_node(repo: &Repository, snap: &SnapshotEntry, path: &OsStr) -> Result<Node> {
    Ok(repo.find_node(&snap.snapshot.tree, path.as_bytes())?)
}

/// `exited with status 3` / `killed by signal 9`, for messages.
pub fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}
