//! Which database dump `pg restore` and `pg verify` take. After `pg backup
//! --all` the repository holds one snapshot per database, and `latest`
//! alone would be whichever database was dumped last: `latest` then names
//! the newest dump of the database asked for (`--database`, or `--path
//! postgres/NAME.dump`), and is refused while it could mean several.

use std::collections::BTreeSet;
use std::ffi::OsStr;

use anyhow::{Context, Result, bail};
use repo_core::{Node, Repository, SnapshotEntry};

use super::{filter, find_node};
use crate::cli::FilterArgs;
use crate::exporters::pg_target::DbLocale;
use crate::exporters::postgres as pg;

/// What `--database` means to the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DatabaseArg {
    /// `pg verify`: it only picks the dump.
    Picks,
    /// `pg restore`: the target, which also picks the dump when the
    /// repository holds dumps of a database of that name.
    Target,
}

/// A database snapshot, its dump node and the dumped database.
pub(super) struct Dump {
    pub(super) snap: SnapshotEntry,
    pub(super) node: Node,
    pub(super) database: String,
}

impl Dump {
    /// The dumped database's encoding and locale, as recorded.
    pub(super) fn locale(&self) -> DbLocale {
        let m = |k| pg::meta(&self.snap, k).map(String::from);
        DbLocale {
            encoding: m("pg.encoding"),
            collate: m("pg.lc_collate"),
            ctype: m("pg.lc_ctype"),
        }
    }
}

/// Resolves `spec` (`latest`, an id or a prefix) among the snapshots tagged
/// `postgres`, narrowed by `f` and by `database` as `role` says.
pub(super) fn dump(
    repo: &Repository,
    spec: &str,
    f: &FilterArgs,
    database: Option<&str>,
    role: DatabaseArg,
) -> Result<Dump> {
    let mut sf = filter(f)?;
    sf.tags.push(pg::TAG.into());
    if spec == "latest" && sf.paths.is_empty() {
        let dbs: BTreeSet<String> = repo
            .snapshots()?
            .iter()
            .filter(|s| sf.matches(&s.snapshot))
            .filter_map(|s| pg::meta(s, "pg.database").map(String::from))
            .collect();
        match database {
            Some(db) if dbs.contains(db) => {
                sf.paths = vec![pg::dump_path(db).into_bytes()];
            }
            Some(db) if role == DatabaseArg::Picks => bail!(
                "no snapshot of database {db:?} (tag {}){}",
                pg::TAG,
                listed(&dbs)
            ),
            _ if dbs.len() > 1 => bail!(
                "`latest` could be any of {} databases{}: name one with --database NAME{} or \
                 --path postgres/NAME.dump",
                dbs.len(),
                listed(&dbs),
                if role == DatabaseArg::Target {
                    " (the database restored into)"
                } else {
                    ""
                }
            ),
            _ => {}
        }
    }
    let snap = repo.find_snapshot(spec, &sf)?;
    let db = pg::meta(&snap, "pg.database")
        .with_context(|| {
            format!(
                "snapshot {} is not a PostgreSQL database backup (no pg.database)",
                snap.id.short()
            )
        })?
        .to_string();
    if role == DatabaseArg::Picks
        && let Some(want) = database
        && want != db
    {
        bail!(
            "snapshot {} is a dump of database {db:?}, not {want:?}",
            snap.id.short()
        );
    }
    let node = find_node(repo, &snap, OsStr::new(&pg::dump_path(&db)))?;
    Ok(Dump {
        snap,
        node,
        database: db,
    })
}

fn listed(dbs: &BTreeSet<String>) -> String {
    if dbs.is_empty() {
        return String::new();
    }
    let names: Vec<String> = dbs.iter().map(|d| format!("{d:?}")).collect();
    format!(" (dumps of {})", names.join(", "))
}
