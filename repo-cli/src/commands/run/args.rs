//! The command lines of the children: one per source, verify and retention.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

use super::{plan_tag, source_tag};
use crate::cli::GlobalArgs;
use crate::plan::{self, Loaded, RepositorySpec, Source};
use repo_core::format_duration;

/// `cairn -r REPO --json [cache]` with the repository's password in the
/// environment and nothing inherited that could point elsewhere.
pub(super) fn base_command(g: &GlobalArgs, repo: &RepositorySpec, exe: &Path) -> Command {
    let mut c = Command::new(exe);
    for v in [
        "CAIRN_REPOSITORY",
        "CAIRN_PASSWORD",
        "CAIRN_PASSWORD_FILE",
        "CAIRN_PASSWORD_COMMAND",
        "CAIRN_KEY_FILE",
        "CAIRN_QDRANT_API_KEY",
        "CAIRN_PG_DSN",
        "CAIRN_REDIS_URL",
        "CAIRN_FROM_REPOSITORY",
        "CAIRN_FROM_PASSWORD",
        "CAIRN_FROM_PASSWORD_FILE",
        "CAIRN_FROM_PASSWORD_COMMAND",
        "CAIRN_FROM_KEY",
    ] {
        c.env_remove(v);
    }
    if let Some(f) = &repo.password_file {
        c.env("CAIRN_PASSWORD_FILE", f);
    }
    if let Some(f) = &repo.key_file {
        c.env("CAIRN_KEY_FILE", f);
    }
    if let Some(cmd) = &repo.password_command {
        c.env("CAIRN_PASSWORD_COMMAND", cmd);
    }
    // A url carries no credentials (the plan refuses them): S3 keys reach
    // the child in the AWS_* variables it inherits, never in its arguments.
    c.arg("-r").arg(repo.location()).arg("--json");
    // How S3 is reached, as `cairn run` was told (AWS_ENDPOINT_URL itself
    // is inherited).
    if let Some(e) = &g.s3_endpoint {
        c.arg("--s3-endpoint").arg(e);
    }
    if g.s3_path_style {
        c.arg("--s3-path-style");
    }
    if let Some(ca) = &g.s3_ca_cert {
        c.arg("--s3-ca-cert").arg(ca);
    }
    c.arg("--connections").arg(g.connections.to_string());
    if let Some(d) = repo.cache_dir.as_ref().or(g.cache_dir.as_ref()) {
        c.arg("--cache-dir").arg(d);
    } else if g.no_cache {
        c.arg("--no-cache");
    }
    c.stdin(Stdio::null());
    c
}

/// The connection string of a database source: its children get it in
/// their environment, as in their arguments a password would show in `ps`.
pub(super) fn source_env(src: &Source) -> Option<(&'static str, &str)> {
    match src {
        Source::Postgres(p) => Some(("CAIRN_PG_DSN", &p.dsn)),
        Source::PostgresPitr(p) => Some(("CAIRN_PG_DSN", &p.dsn)),
        Source::Redis(r) => Some(("CAIRN_REDIS_URL", &r.url)),
        Source::Paths(_) | Source::Command(_) | Source::Qdrant(_) => None,
    }
}

/// The separate server a postgres source verifies on (`scratch_dsn`), for
/// its verify children's environment (a password in the arguments would
/// show in `ps`).
pub(super) fn verify_env(src: &Source) -> Option<(&'static str, &str)> {
    match src {
        Source::Postgres(p) => p
            .scratch_dsn
            .as_deref()
            .map(|d| ("CAIRN_PG_SCRATCH_DSN", d)),
        _ => None,
    }
}

/// The subcommand and flags backing up `src` (after the global options).
pub(super) fn source_args(loaded: &Loaded, src: &Source) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut tags = vec![plan_tag(&loaded.name), source_tag(src.name())];
    tags.extend(src.tags().iter().cloned());
    let tag_args = |a: &mut Vec<OsString>| {
        for t in &tags {
            a.push("--tag".into());
            a.push(t.into());
        }
    };
    let host = loaded.plan.host.clone();
    let host_args = |a: &mut Vec<OsString>| {
        if let Some(h) = &host {
            a.push("--host".into());
            a.push(h.into());
        }
    };
    match src {
        Source::Paths(p) => {
            a.push("backup".into());
            tag_args(&mut a);
            host_args(&mut a);
            for e in &p.exclude {
                a.extend(["--exclude".into(), e.into()]);
            }
            for f in &p.exclude_file {
                a.extend(["--exclude-file".into(), f.into()]);
            }
            if p.exclude_caches {
                a.push("--exclude-caches".into());
            }
            if p.one_file_system {
                a.push("--one-file-system".into());
            }
            // Plan paths are absolute (made so on load), so none can be
            // taken for an option; `--` would mean a command here.
            a.extend(p.paths.iter().map(OsString::from));
        }
        Source::Command(c) => {
            a.push("backup".into());
            tag_args(&mut a);
            host_args(&mut a);
            a.extend([
                "--stdin-from-command".into(),
                "--stdin-filename".into(),
                (&c.stdin_filename).into(),
                "--".into(),
            ]);
            a.extend(c.command.iter().map(OsString::from));
        }
        Source::Postgres(pg) => {
            a.extend(["pg".into(), "backup".into()]);
            if pg.all {
                a.push("--all".into());
            }
            for d in &pg.databases {
                a.extend(["--database".into(), d.into()]);
            }
            if let Some(m) = &pg.globals {
                a.extend(["--globals".into(), m.into()]);
            }
            tag_args(&mut a);
            host_args(&mut a);
        }
        Source::PostgresPitr(pg) => {
            a.extend(["pg".into(), "basebackup".into()]);
            if pg.fast_checkpoint {
                a.push("--fast".into());
            }
            tag_args(&mut a);
            host_args(&mut a);
        }
        Source::Redis(_) => {
            a.extend(["redis".into(), "backup".into()]);
            tag_args(&mut a);
            host_args(&mut a);
        }
        Source::Qdrant(q) => {
            a.extend([
                "qdrant".into(),
                "backup".into(),
                "--url".into(),
                (&q.url).into(),
            ]);
            if q.all {
                a.push("--all".into());
            }
            for c in &q.collections {
                a.extend(["--collection".into(), c.into()]);
            }
            tag_args(&mut a);
            host_args(&mut a);
        }
    }
    a
}

/// The `verify` subcommand for snapshot `id` of `src` (after the global
/// options).
pub(super) fn verify_args(src: &Source, id: &str) -> Vec<OsString> {
    match src {
        Source::Postgres(_) => vec!["pg".into(), "verify".into(), id.into()],
        Source::PostgresPitr(_) => vec!["pg".into(), "pitr-verify".into(), id.into()],
        Source::Redis(_) => vec!["redis".into(), "verify".into(), id.into()],
        Source::Qdrant(q) => vec![
            "qdrant".into(),
            "verify".into(),
            id.into(),
            "--url".into(),
            (&q.url).into(),
        ],
        Source::Paths(_) | Source::Command(_) => Vec::new(),
    }
}

/// What a copy step asks for.
pub(super) enum CopySelection<'a> {
    /// These snapshots (full ids in the source).
    Ids(&'a [String]),
    /// Every snapshot carrying this tag (a catch-up: however many there
    /// are, the command line stays short).
    Tag(&'a str),
}

/// The `cairn copy` arguments (after the destination's global options)
/// copying `what` out of `from`; its password goes in the environment
/// ([`copy_env`]), like the destination's.
pub(super) fn copy_args(from: &RepositorySpec, what: CopySelection<'_>) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["copy".into(), "--from-repo".into(), from.location()];
    match what {
        // Ids are full hex: none can be taken for an option.
        CopySelection::Ids(ids) => a.extend(ids.iter().map(OsString::from)),
        CopySelection::Tag(t) => a.extend(["--tag".into(), t.into()]),
    }
    a
}

/// The source repository's password for a `copy` child, as
/// `CAIRN_FROM_PASSWORD_FILE` or `CAIRN_FROM_PASSWORD_COMMAND`.
pub(super) fn copy_env(from: &RepositorySpec) -> Vec<(&'static str, OsString)> {
    let mut v = Vec::new();
    if let Some(f) = &from.password_file {
        v.push(("CAIRN_FROM_PASSWORD_FILE", f.into()));
    }
    if let Some(c) = &from.password_command {
        v.push(("CAIRN_FROM_PASSWORD_COMMAND", c.into()));
    }
    v
}

/// The `cairn forget` arguments for the plan's retention.
pub(super) fn retention_args(loaded: &Loaded, r: &plan::Retention) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["forget".into()];
    let p = &r.policy;
    for (flag, v) in [
        ("--keep-last", p.keep_last),
        ("--keep-hourly", p.keep_hourly),
        ("--keep-daily", p.keep_daily),
        ("--keep-weekly", p.keep_weekly),
        ("--keep-monthly", p.keep_monthly),
        ("--keep-yearly", p.keep_yearly),
    ] {
        if let Some(n) = v {
            a.extend([flag.into(), n.to_string().into()]);
        }
    }
    // The one duration formatter's output reads back through the one parser.
    if let Some(w) = p.keep_within {
        a.extend(["--keep-within".into(), format_duration(w).into()]);
    }
    for t in &p.keep_tags {
        a.extend(["--keep-tag".into(), t.into()]);
    }
    // Only this plan's snapshots, one group per source (its tag), host and paths.
    a.extend([
        "--tag".into(),
        plan_tag(&loaded.name).into(),
        "--group-by".into(),
        "host,paths,tags".into(),
    ]);
    if r.prune {
        a.push("--prune".into());
        if let Some(gr) = r.prune_grace {
            a.extend(["--grace".into(), format_duration(gr).into()]);
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository opened with an unattended key: its children get the
    /// token file (relative to the plan) and no password source; a second
    /// credential is refused.
    #[test]
    fn key_file_reaches_the_children() {
        use clap::Parser;
        let text = "version = 1\n[[repository]]\nname = \"r\"\npath = \"/r\"\n\
                    key_file = \"plan.key\"\n[[source]]\nname = \"s\"\ntype = \"paths\"\n\
                    paths = [\"/etc\"]\n";
        let (plan, _) = crate::plan::parse(text, "x", Path::new("/base")).unwrap();
        let g = crate::cli::Cli::try_parse_from(["cairn", "snapshots"])
            .unwrap()
            .global;
        let c = base_command(&g, &plan.repositories[0], Path::new("/bin/cairn"));
        use std::ffi::OsStr;
        let envs: Vec<_> = c.get_envs().filter_map(|(k, v)| Some((k, v?))).collect();
        assert!(envs.contains(&(OsStr::new("CAIRN_KEY_FILE"), OsStr::new("/base/plan.key"))));
        assert!(!envs.iter().any(|(k, _)| *k == "CAIRN_PASSWORD_FILE"));
        let both = text.replace("key_file", "password_file = \"/pw\"\nkey_file");
        let err = crate::plan::parse(&both, "x", Path::new("/base")).unwrap_err();
        assert!(format!("{err:#}").contains("give one of"), "{err:#}");
    }

    /// Every child command line is one our own parser accepts (qdrant's
    /// is another command's; it is built the same way).
    #[test]
    fn child_command_lines_parse() {
        use clap::Parser;
        let text = r#"
version = 1
host = "h1"
[[repository]]
name = "r"
path = "/r"
password_file = "/pw"
[retention]
keep_last = 3
keep_within = "2d90min"
keep_tags = ["a,b"]
prune = true
prune_grace = "0"
[[source]]
name = "files"
type = "paths"
paths = ["/etc", "rel"]
exclude = ["*.tmp"]
exclude_file = ["ex"]
exclude_caches = true
one_file_system = true
tags = ["t1"]
[[source]]
name = "db"
type = "postgres"
dsn = "postgresql://u:p@h/postgres"
databases = ["a", "b"]
[[source]]
name = "dball"
type = "postgres"
dsn = "host=/run/postgresql"
all = true
[[source]]
name = "cache"
type = "redis"
url = "redis://h:1"
verify = true
[[source]]
name = "vectors"
type = "qdrant"
url = "http://h:6333"
collections = ["docs"]
verify = true
[[source]]
name = "ldap"
type = "command"
command = ["slapcat", "-n", "1"]
stdin_filename = "ldap.ldif"
"#;
        let (plan, name) = crate::plan::parse(text, "x", Path::new("/base")).unwrap();
        let loaded = Loaded {
            plan,
            name,
            path: "/base/x.toml".into(),
        };
        let parse = |rest: Vec<OsString>| {
            let mut argv: Vec<OsString> = vec!["cairn".into(), "-r".into(), "/r".into()];
            argv.extend(rest);
            crate::cli::Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
        };
        for src in &loaded.plan.sources {
            let cli = parse(source_args(&loaded, src));
            match (&cli.command, src) {
                (crate::cli::Command::Backup(b), Source::Paths(_)) => {
                    assert_eq!(b.paths, [Path::new("/etc"), Path::new("/base/rel")]);
                    assert_eq!(b.tags, ["plan:x", "source:files", "t1"]);
                    assert_eq!(b.excludes, ["*.tmp"]);
                    assert_eq!(b.exclude_files, [Path::new("/base/ex")]);
                    assert!(b.exclude_caches && b.one_file_system);
                    assert_eq!(b.host.as_deref(), Some("h1"));
                }
                (crate::cli::Command::Backup(b), Source::Command(_)) => {
                    assert!(b.stdin_from_command && b.paths.is_empty());
                    assert_eq!(b.command, ["slapcat", "-n", "1"]);
                    assert_eq!(b.stdin_filename.as_deref(), Some("ldap.ldif"));
                }
                (crate::cli::Command::Pg(p), Source::Postgres(s)) => {
                    let crate::cli::PgCommand::Backup(b) = &p.command else {
                        panic!("not pg backup")
                    };
                    assert_eq!(b.dsn, None, "the DSN goes in the environment");
                    assert_eq!(source_env(src), Some(("CAIRN_PG_DSN", s.dsn.as_str())));
                    assert_eq!(b.all, s.all);
                    assert_eq!(b.databases, s.databases);
                    assert_eq!(b.tags, ["plan:x", format!("source:{}", s.name).as_str()]);
                    assert_eq!(b.host.as_deref(), Some("h1"));
                }
                (crate::cli::Command::Qdrant(q), Source::Qdrant(_)) => {
                    let crate::cli::QdrantCommand::Backup(b) = &q.command else {
                        panic!("not qdrant backup")
                    };
                    assert_eq!(b.server.url, "http://h:6333");
                    assert_eq!(b.collections, ["docs"]);
                    assert_eq!(b.host.as_deref(), Some("h1"));
                }
                (crate::cli::Command::Redis(r), Source::Redis(_)) => {
                    let crate::cli::RedisCommand::Backup(b) = &r.command else {
                        panic!("not redis backup")
                    };
                    assert_eq!(b.url, None, "the URL goes in the environment");
                    assert_eq!(source_env(src), Some(("CAIRN_REDIS_URL", "redis://h:1")));
                    assert_eq!(b.host.as_deref(), Some("h1"));
                }
                (c, s) => panic!("{} became {c:?}", s.name()),
            }
        }
        // The verify commands, on a snapshot id.
        for src in &loaded.plan.sources {
            let args = verify_args(src, "1a2b3c4d");
            if args.is_empty() {
                continue;
            }
            match (&parse(args).command, src) {
                (crate::cli::Command::Pg(p), Source::Postgres(s)) => {
                    let crate::cli::PgCommand::Verify(v) = &p.command else {
                        panic!("not pg verify")
                    };
                    assert_eq!((v.snapshot.as_str(), v.dsn.as_deref()), ("1a2b3c4d", None));
                    assert_eq!(source_env(src), Some(("CAIRN_PG_DSN", s.dsn.as_str())));
                }
                (crate::cli::Command::Redis(r), Source::Redis(_)) => {
                    let crate::cli::RedisCommand::Verify(v) = &r.command else {
                        panic!("not redis verify")
                    };
                    assert_eq!(v.snapshot, "1a2b3c4d");
                }
                (crate::cli::Command::Qdrant(q), Source::Qdrant(_)) => {
                    let crate::cli::QdrantCommand::Verify(v) = &q.command else {
                        panic!("not qdrant verify")
                    };
                    assert_eq!(v.snapshot, "1a2b3c4d");
                    assert_eq!(v.server.url, "http://h:6333");
                }
                (c, s) => panic!("{} became {c:?}", s.name()),
            }
        }
        let ids = ["ab".repeat(32), "cd".repeat(32)];
        let cli = parse(copy_args(
            &loaded.plan.repositories[0],
            CopySelection::Ids(&ids),
        ));
        let crate::cli::Command::Copy(c) = &cli.command else {
            panic!("not copy")
        };
        assert_eq!(c.from.from_repo.as_deref(), Some(Path::new("/r")));
        assert_eq!(c.snapshots, ids);
        let cli = parse(copy_args(
            &loaded.plan.repositories[0],
            CopySelection::Tag("plan:x"),
        ));
        let crate::cli::Command::Copy(c) = &cli.command else {
            panic!("not copy")
        };
        assert!(c.snapshots.is_empty());
        assert_eq!(c.filter.tags, ["plan:x"]);
        assert_eq!(
            c.from.from_password_file, None,
            "the password goes in the environment"
        );
        assert_eq!(
            copy_env(&loaded.plan.repositories[0]),
            [("CAIRN_FROM_PASSWORD_FILE", OsString::from("/pw"))]
        );
        let r = loaded.plan.retention.as_ref().unwrap();
        let cli = parse(retention_args(&loaded, r));
        let crate::cli::Command::Forget(f) = &cli.command else {
            panic!("not forget")
        };
        assert_eq!(f.keep_last, Some(3));
        assert_eq!(f.keep_within, r.policy.keep_within);
        assert_eq!(
            f.keep_within,
            Some(std::time::Duration::from_secs(2 * 86_400 + 90 * 60))
        );
        assert_eq!(f.keep_tags, ["a,b"]);
        assert_eq!(f.filter.tags, ["plan:x"]);
        assert!(f.prune);
        assert_eq!(f.prune_options.grace, std::time::Duration::ZERO);
    }
}
