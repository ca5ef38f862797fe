//! The database a `pg restore` goes into: with `--create`, made under the
//! dumped name (by `pg_restore --create`) or under a new one (by us), and
//! dropped again when the restore fails, so no half-restored database is
//! left that looks like a good one.

use std::ffi::OsString;

use anyhow::{Context, Result, bail};

use super::postgres::{Server, with_database};

/// `"name"` as an SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'text'` as an SQL string literal (standard_conforming_strings, the
/// default since PostgreSQL 9.1).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Encoding and locale of the dumped database, recorded at backup
/// (`pg.encoding`, `pg.lc_collate`, `pg.lc_ctype`), for a database
/// created under a new name.
#[derive(Debug, Default, Clone)]
pub struct DbLocale {
    /// `UTF8`, ...
    pub encoding: Option<String>,
    /// `datcollate`.
    pub collate: Option<String>,
    /// `datctype`.
    pub ctype: Option<String>,
}

/// Where pg_restore connects, and the database to drop if it fails.
pub struct Target {
    /// The database restored into.
    pub name: String,
    /// pg_restore's `--create` (if any) and `-d`.
    pub args: Vec<OsString>,
    /// Set when this restore creates the database: dropped unless
    /// [`Target::keep`] is called.
    created: Option<String>,
}

impl Target {
    /// Prepares a restore of the dump of `dumped` into `database` (default:
    /// `dumped`). With `create`, the database must not exist (unless
    /// `clean`); a new name is created here from template0 with the dump's
    /// encoding and locale, the dumped name by `pg_restore --create`.
    pub fn prepare(
        server: &Server,
        dumped: &str,
        database: Option<&str>,
        create: bool,
        clean: bool,
        locale: &DbLocale,
    ) -> Result<Self> {
        let name = database.unwrap_or(dumped).to_string();
        if !create {
            return Ok(Self {
                args: vec!["-d".into(), with_database(&server.dsn, &name).into()],
                name,
                created: None,
            });
        }
        let existed = exists(server, &name)?;
        if name == dumped {
            // With --clean on an existing database pg_restore drops and
            // recreates it; a failure before the drop must not cost the
            // user that database, so only a database that did not exist is
            // ours to drop.
            if existed && !clean {
                bail!(
                    "database {name:?} exists already: --create makes it anew (add --clean to \
                     replace it, or restore into it without --create)"
                );
            }
            return Ok(Self {
                args: vec!["--create".into(), "-d".into(), server.dsn.clone().into()],
                created: (!existed).then(|| name.clone()),
                name,
            });
        }
        if existed {
            if !clean {
                bail!(
                    "database {name:?} exists already: --create makes it anew (add --clean to \
                     replace it, or restore into it without --create)"
                );
            }
            server
                .clients
                .query(&server.dsn, &drop_sql(server, &name))
                .with_context(|| format!("cannot drop database {name:?} (--clean)"))?;
        }
        let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(&name));
        for (k, v) in [
            ("ENCODING", &locale.encoding),
            ("LC_COLLATE", &locale.collate),
            ("LC_CTYPE", &locale.ctype),
        ] {
            if let Some(v) = v {
                sql.push_str(&format!(" {k} {}", quote_literal(v)));
            }
        }
        server
            .clients
            .query(&server.dsn, &sql)
            .with_context(|| format!("cannot create database {name:?}"))?;
        Ok(Self {
            args: vec!["-d".into(), with_database(&server.dsn, &name).into()],
            created: Some(name.clone()),
            name,
        })
    }

    /// The restore succeeded: the database stays.
    pub fn keep(mut self) {
        self.created = None;
    }

    /// The restore failed: drops the database this restore created (if
    /// any) and says so in the error.
    pub fn discard(mut self, server: &Server, e: anyhow::Error) -> anyhow::Error {
        let Some(name) = self.created.take() else {
            return e;
        };
        match server.clients.query(&server.dsn, &drop_sql(server, &name)) {
            Ok(_) => e.context(format!(
                "restore into the new database {name:?} failed; it was dropped again"
            )),
            Err(d) => e.context(format!(
                "restore into the new database {name:?} failed, and it could not be dropped \
                 ({d:#}): it is incomplete, drop it by hand"
            )),
        }
    }
}

fn exists(server: &Server, name: &str) -> Result<bool> {
    let n = server.clients.query(
        &server.dsn,
        &format!(
            "SELECT count(*) FROM pg_database WHERE datname = {}",
            quote_literal(name)
        ),
    )?;
    Ok(n.trim() != "0")
}

/// `DROP DATABASE`, closing leftover sessions where the server can
/// (`WITH (FORCE)`, PostgreSQL 13).
fn drop_sql(server: &Server, name: &str) -> String {
    let force = if server.version_num >= 130000 {
        " WITH (FORCE)"
    } else {
        ""
    };
    format!("DROP DATABASE IF EXISTS {}{force}", quote_ident(name))
}
