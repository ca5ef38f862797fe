//! `cairn plan show`: the postgresql.conf lines of a plan's
//! `postgres-pitr` sources (archive_command, restore_command).

use std::io::Write;

use anyhow::{Context, Result, bail};

use super::Status;
use crate::cli::PlanShowArgs;
use crate::plan::{self, Loaded, RepositorySpec, Source};

/// Quotes one word for `sh` (PostgreSQL runs both commands with it).
fn sh_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@+,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A postgresql.conf string value.
fn conf_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// `EXE -r REPO [credential] [--cache-dir D] pg SUBCOMMAND ARGS`.
pub fn wal_command(exe: &str, repo: &RepositorySpec, sub: &str, args: &str) -> String {
    let mut w = vec![
        sh_word(exe),
        "-r".into(),
        sh_word(&repo.location().to_string_lossy()),
    ];
    if let Some(f) = &repo.password_file {
        w.extend(["--password-file".into(), sh_word(&f.to_string_lossy())]);
    } else if let Some(c) = &repo.password_command {
        w.extend(["--password-command".into(), sh_word(c)]);
    }
    if let Some(d) = &repo.cache_dir {
        w.extend(["--cache-dir".into(), sh_word(&d.to_string_lossy())]);
    }
    format!("{} pg {sub} {args}", w.join(" "))
}

/// The lines for one source.
pub fn settings(loaded: &Loaded, src: &plan::PostgresPitrSource, exe: &str) -> Result<String> {
    let repo = loaded
        .plan
        .primaries()
        .next()
        .context("the plan has no repository to archive into")?;
    let (dsn, _) = crate::exporters::postgres::split_password(&src.dsn);
    let archive = wal_command(exe, repo, "archive-wal", "%p");
    let restore = wal_command(exe, repo, "restore-wal", "%f %p");
    Ok(format!(
        "# cairn plan {plan}, source {name} ({dsn}): WAL into repository {repo_name}.\n\
         # archive_mode needs a restart, archive_command a reload. The server's user\n\
         # must be able to read the repository and its password.\n\
         wal_level = replica\n\
         archive_mode = on\n\
         archive_command = {archive}\n\
         # For a restore (`cairn pg restore-cluster` writes it into the new cluster):\n\
         # restore_command = {restore}\n",
        plan = loaded.name,
        name = src.name,
        repo_name = repo.name,
        archive = conf_string(&archive),
        restore = conf_string(&restore),
    ))
}

/// `cairn plan show`.
pub fn show(a: &PlanShowArgs) -> Result<Status> {
    let loaded = plan::load(&a.plan)?;
    let exe = std::env::current_exe().context("cannot find the cairn executable")?;
    let exe = exe.to_string_lossy();
    let mut text = String::new();
    let mut named = false;
    for s in &loaded.plan.sources {
        if a.source.as_deref().is_some_and(|n| n != s.name()) {
            continue;
        }
        named = true;
        if let Source::PostgresPitr(p) = s {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&settings(&loaded, p, &exe)?);
        }
    }
    if let Some(n) = &a.source
        && !named
    {
        bail!("the plan has no source named {n:?}");
    }
    if text.is_empty() {
        bail!("the plan has no source of type postgres-pitr: nothing to put into postgresql.conf");
    }
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())?;
    o.flush()?;
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_the_repository_and_its_password_file() {
        let text = r#"
version = 1
[[repository]]
name = "main"
path = "/backups/it's"
password_file = "/etc/cairn/pw"
[[source]]
name = "db"
type = "postgres-pitr"
dsn = "postgresql://replicator:secret@db1/postgres"
fast_checkpoint = true
verify = true
"#;
        let (plan, name) = crate::plan::parse(text, "x", std::path::Path::new("/base")).unwrap();
        let loaded = Loaded {
            plan,
            name,
            path: "/base/x.toml".into(),
        };
        let Source::PostgresPitr(p) = &loaded.plan.sources[0] else {
            panic!("not postgres-pitr")
        };
        let s = settings(&loaded, p, "/usr/bin/cairn").unwrap();
        // sh quoting ('it'\''s'), then postgresql.conf's ('' and \\).
        assert!(
            s.contains(
                r"archive_command = '/usr/bin/cairn -r ''/backups/it''\\''''s'' --password-file /etc/cairn/pw pg archive-wal %p'"
            ),
            "{s}"
        );
        assert!(s.contains("pg restore-wal %f %p'"), "{s}");
        assert!(s.contains("archive_mode = on\n"), "{s}");
        assert!(
            !s.contains("secret"),
            "the DSN's password is not printed: {s}"
        );
    }
}
