//! What `cairn run PLAN --dry-run` checks beyond the plan's syntax, so a
//! plan that would fail says so when it is written rather than the night
//! it first runs: each repository exists, is a cairn repository and opens
//! with its password; each source's programs and files are there; the
//! state and report directories can be written.
//!
//! Database servers are not contacted: one that is down at noon may well
//! be up at night, but a missing pg_dump or password file will not appear.
//! A repository on object storage is: its config is looked up once.

use std::path::{Path, PathBuf};

use repo_core::{Location, ObjectKind, OpenOptions, Repository};
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::credentials::{self, Purpose};
use crate::exporters::postgres::Clients;
use crate::plan::{Loaded, RepositorySpec, Source};

/// Something that would make the run fail.
#[derive(Debug, Serialize)]
pub struct Problem {
    /// `plan NAME`, `repository NAME` or `source NAME`.
    pub object: String,
    /// What is wrong.
    pub problem: String,
}

/// Every problem of the plan's own files, its repositories and `sources`.
pub fn problems(g: &GlobalArgs, loaded: &Loaded, sources: &[&Source]) -> Vec<Problem> {
    let mut v = Vec::new();
    for p in plan_files(loaded) {
        v.push(Problem {
            object: format!("plan {}", loaded.name),
            problem: p,
        });
    }
    for r in &loaded.plan.repositories {
        for p in repository(g, r) {
            v.push(Problem {
                object: format!("repository {}", r.name),
                problem: p,
            });
        }
    }
    for s in sources {
        for p in source(s) {
            v.push(Problem {
                object: format!("source {}", s.name()),
                problem: p,
            });
        }
    }
    v
}

/// The state directory and the report files' directories can be created
/// (the run stops before any backup if the state directory cannot).
fn plan_files(loaded: &Loaded) -> Vec<String> {
    let mut dirs = Vec::new();
    match loaded.state_dir() {
        Ok(d) => dirs.push(("state_dir", d)),
        Err(e) => return vec![format!("{e:#}")],
    }
    let report = &loaded.plan.report;
    for (what, f) in [
        ("report json", &report.json),
        ("report metrics", &report.metrics),
    ] {
        if let Some(parent) = f.as_deref().and_then(Path::parent) {
            dirs.push((what, parent.to_path_buf()));
        }
    }
    dirs.into_iter()
        .filter_map(|(what, d)| creatable(&d).err().map(|why| format!("{what}: {why}")))
        .collect()
}

/// `dir` exists as a writable directory, or its nearest existing ancestor
/// is one (so it can be created).
fn creatable(dir: &Path) -> Result<(), String> {
    use nix::unistd::{AccessFlags, access};
    let mut d = dir;
    loop {
        match std::fs::metadata(d) {
            Ok(m) if m.is_dir() => {
                return access(d, AccessFlags::W_OK | AccessFlags::X_OK)
                    .map_err(|e| format!("{} is not writable ({})", d.display(), e.desc()));
            }
            Ok(_) => return Err(format!("{} is not a directory", d.display())),
            Err(_) => match d.parent() {
                Some(p) => d = p,
                None => return Ok(()),
            },
        }
    }
}

/// What opens a plan's repository.
enum Credential {
    Password(credentials::Password),
    Token(repo_core::ServiceToken),
}

/// The password resolves, the location (`path` or `url`) holds a cairn
/// repository, and the password opens it (with the cache the run would
/// use).
fn repository(g: &GlobalArgs, r: &RepositorySpec) -> Vec<String> {
    let mut v = Vec::new();
    // The options the run's children get (run.rs, base_command).
    let cache_dir = r.cache_dir.clone().or_else(|| g.cache_dir.clone());
    let rg = GlobalArgs {
        repo: Some(PathBuf::from(r.location())),
        password_file: r.password_file.clone(),
        password_command: r.password_command.clone(),
        key_file: r.key_file.clone(),
        key: g.key.clone(),
        no_cache: g.no_cache && cache_dir.is_none(),
        cache_dir,
        json: g.json,
        verbose: 0,
        quiet: true,
        s3_endpoint: g.s3_endpoint.clone(),
        s3_path_style: g.s3_path_style,
        s3_ca_cert: g.s3_ca_cert.clone(),
        connections: g.connections,
    };
    let password = match &rg.key_file {
        Some(f) => credentials::service_token(f).map(Credential::Token),
        None => credentials::password(&rg, Purpose::Open).map(Credential::Password),
    };
    let password = match password {
        Ok(p) => Some(p),
        Err(e) => {
            v.push(format!("{e:#}"));
            None
        }
    };
    let location = match Location::parse_os(&r.location()) {
        Ok(l) => l,
        Err(e) => {
            v.push(e.to_string());
            return v;
        }
    };
    if let Location::Local(path) = &location {
        match std::fs::metadata(path) {
            Err(e) => {
                v.push(format!("{}: {}", path.display(), io_reason(&e)));
                return v;
            }
            Ok(m) if !m.is_dir() => {
                v.push(format!("{} is not a directory", path.display()));
                return v;
            }
            Ok(_) => {}
        }
    }
    // An object store is asked once: an unreachable endpoint, a missing
    // bucket or refused credentials show here.
    let backend = match super::backend_for(&rg, &location) {
        Ok(b) => b,
        Err(e) => {
            v.push(format!("{e:#}"));
            return v;
        }
    };
    match backend.list(ObjectKind::Config) {
        Ok(c) if c.is_empty() => {
            v.push(format!(
                "{location} is not a cairn repository (no config; create one with `cairn -r {location} init`)"
            ));
            return v;
        }
        Ok(_) => {}
        Err(e) => {
            v.push(format!("{location}: {e}"));
            return v;
        }
    }
    if let Some(pw) = password {
        let opts = OpenOptions {
            cache_dir: super::cache_dir(&rg),
            key: rg.key.clone(),
            ..Default::default()
        };
        let opened = match pw {
            Credential::Token(t) => Repository::open_unattended(backend, &t, opts),
            Credential::Password(pw) => Repository::open(backend, &pw, opts),
        };
        if let Err(e) = opened {
            v.push(format!("cannot open {location}: {e}"));
        }
    }
    v
}

/// The programs and files the source's backup (and verify) would need.
fn source(s: &Source) -> Vec<String> {
    let mut v = Vec::new();
    match s {
        Source::Paths(p) => {
            for path in &p.paths {
                if let Err(e) = std::fs::symlink_metadata(path) {
                    v.push(format!("path {}: {}", path.display(), io_reason(&e)));
                }
            }
            for f in &p.exclude_file {
                if let Err(e) = std::fs::File::open(f) {
                    v.push(format!("exclude_file {}: {}", f.display(), io_reason(&e)));
                }
            }
        }
        Source::Command(c) => {
            if let Err(why) = program(Path::new(&c.command[0])) {
                v.push(format!("command {:?}: {why}", c.command[0]));
            }
        }
        Source::Postgres(p) => match Clients::newest() {
            Err(e) => v.push(format!("{e:#}")),
            Ok(c) => {
                let mut progs = vec!["psql", "pg_dump", "pg_dumpall"];
                if p.verify {
                    progs.push("pg_restore");
                }
                for prog in progs {
                    if let Err(why) = program(&c.bindir.join(prog)) {
                        v.push(format!("{prog}: {why}"));
                    }
                }
            }
        },
        Source::PostgresPitr(p) => match Clients::newest() {
            Err(e) => v.push(format!("{e:#}")),
            Ok(c) => {
                let mut progs = vec!["psql", "pg_basebackup"];
                if p.verify {
                    progs.extend(["postgres", "pg_verifybackup"]);
                }
                for prog in progs {
                    if let Err(why) = program(&c.bindir.join(prog)) {
                        v.push(format!("{prog}: {why}"));
                    }
                }
            }
        },
        Source::Redis(r) => {
            if r.verify
                && let Err(why) = program(Path::new("redis-server"))
            {
                v.push(format!("redis-server (for verify = true): {why}"));
            }
        }
        Source::Qdrant(q) => {
            if let Some(f) = &q.api_key_file
                && let Err(e) = std::fs::File::open(f)
            {
                v.push(format!("api_key_file {}: {}", f.display(), io_reason(&e)));
            }
        }
    }
    v
}

/// Where `prog` would be run from: a path with a `/` as is, else the
/// first match on PATH; it must be an executable file.
fn program(prog: &Path) -> Result<PathBuf, String> {
    if prog.as_os_str().as_encoded_bytes().contains(&b'/') {
        return if is_executable(prog) {
            Ok(prog.to_path_buf())
        } else if prog.exists() {
            Err(format!("{} is not an executable file", prog.display()))
        } else {
            Err(format!("{} does not exist", prog.display()))
        };
    }
    super::plan::which(&prog.to_string_lossy()).ok_or_else(|| "not found on PATH".into())
}

pub(super) fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// An I/O error's reason without the `(os error N)` tail.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}
