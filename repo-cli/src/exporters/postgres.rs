//! PostgreSQL exporter: `pg_dump` and `pg_dumpall` streamed into the
//! repository, `pg_restore` fed from it, and restore-based verification.
//!
//! Everything goes through the PostgreSQL client programs (no driver): a
//! `psql` session opens a REPEATABLE READ transaction, exports its snapshot
//! and counts the rows of every user table in it, and stays open while
//! `pg_dump --snapshot` dumps the very same state. The dump is custom format
//! without compression (`-Fc -Z0`): the repository compresses and
//! deduplicates, and a compressed dump would not deduplicate between days.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};
use repo_core::{BackupOutcome, Node, Repository, SnapshotEntry};
use serde::Deserialize;

use super::pg_target::{DbLocale, Target};
use super::process::CommandReader;
use crate::commands::describe_status;

/// Snapshot tag of database dumps.
pub const TAG: &str = "postgres";
/// Snapshot tag of `pg_dumpall --globals-only` streams.
pub const GLOBALS_TAG: &str = "postgres-globals";
/// Metadata key prefix of per-table row counts: `pg.rowcount.<schema>.<table>`.
pub const ROWCOUNT_PREFIX: &str = "pg.rowcount.";

/// The one query run in the exporting transaction: snapshot name, versions,
/// size and exact per-table row counts, as a single JSON line. Counting in
/// the exporting transaction itself means the counts see exactly the state
/// `pg_dump --snapshot` dumps.
const STATE_QUERY: &str = "SELECT json_build_object(\
'snapshot', CASE WHEN $1 THEN pg_export_snapshot() END, \
'server_version', current_setting('server_version'), \
'server_version_num', current_setting('server_version_num')::int, \
'size', pg_database_size(current_database()), \
'encoding', (SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()), \
'collate', (SELECT datcollate FROM pg_database WHERE datname = current_database()), \
'ctype', (SELECT datctype FROM pg_database WHERE datname = current_database()), \
'counts', (SELECT coalesce(json_agg(json_build_array(n.nspname, c.relname, \
(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), \
false, true, '')))[1]::text::bigint) ORDER BY n.nspname, c.relname), '[]'::json) \
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'))::text;";

/// What [`STATE_QUERY`] returns.
#[derive(Debug, Deserialize)]
struct DbState {
    snapshot: Option<String>,
    server_version: String,
    server_version_num: u32,
    size: u64,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    collate: Option<String>,
    #[serde(default)]
    ctype: Option<String>,
    counts: Vec<(String, String, u64)>,
}

impl DbState {
    fn rowcounts(&self) -> BTreeMap<String, u64> {
        self.counts
            .iter()
            .map(|(s, t, n)| (format!("{ROWCOUNT_PREFIX}{s}.{t}"), *n))
            .collect()
    }
}

/// The client programs of one PostgreSQL major version.
#[derive(Debug, Clone)]
pub struct Clients {
    /// Directory holding `psql`, `pg_dump`, `pg_dumpall`, `pg_restore`.
    pub bindir: PathBuf,
    /// The password, given to every program as `PGPASSWORD` in its
    /// environment, never in its arguments (which `ps` shows to all).
    password: Option<Secret>,
}

/// A password that does not print.
#[derive(Clone)]
struct Secret(zeroize::Zeroizing<String>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Clients {
    /// Client programs for a server of major version `server_major`: those
    /// in `$CAIRN_PG_BINDIR` when set, else the newest
    /// `/usr/lib/postgresql/N/bin` (Debian's layout). pg_dump refuses newer
    /// servers, so older clients are an error.
    pub fn for_server(server_major: u32) -> Result<Self> {
        let c = Self::newest()?;
        let major = c.major()?;
        if major < server_major {
            bail!(
                "the PostgreSQL client programs in {} are version {major}, older than the server \
                 (version {server_major}); pg_dump refuses newer servers: install the version \
                 {server_major} client (Debian: postgresql-client-{server_major}) or set CAIRN_PG_BINDIR",
                c.bindir.display()
            );
        }
        Ok(c)
    }

    /// The newest installed client programs, before the server is known.
    pub fn newest() -> Result<Self> {
        if let Some(d) = std::env::var_os("CAIRN_PG_BINDIR").filter(|d| !d.is_empty()) {
            return Ok(Self {
                bindir: PathBuf::from(d),
                password: None,
            });
        }
        let mut best: Option<(u32, PathBuf)> = None;
        if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
            for e in entries.flatten() {
                let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let bin = e.path().join("bin");
                if bin.join("pg_dump").exists() && best.as_ref().is_none_or(|(b, _)| n > *b) {
                    best = Some((n, bin));
                }
            }
        }
        best.map(|(_, bindir)| Self {
            bindir,
            password: None,
        })
        .ok_or_else(|| {
            anyhow!(
                "no PostgreSQL client programs found in /usr/lib/postgresql/*/bin \
                 (install postgresql-client, or set CAIRN_PG_BINDIR)"
            )
        })
    }

    /// These clients, giving `password` to the programs.
    fn with_password(mut self, password: Option<String>) -> Self {
        self.password = password.map(|p| Secret(zeroize::Zeroizing::new(p)));
        self
    }

    /// A command for one of the client programs.
    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(self.bindir.join(prog));
        if let Some(p) = &self.password {
            c.env("PGPASSWORD", p.0.as_str());
        }
        c
    }

    /// `pg_dump --version`'s version string, e.g. `15.18`.
    pub fn pg_dump_version(&self) -> Result<String> {
        let out = self
            .cmd("pg_dump")
            .arg("--version")
            .output()
            .with_context(|| format!("cannot run {}", self.bindir.join("pg_dump").display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_version(&text).ok_or_else(|| anyhow!("unexpected pg_dump --version output {text:?}"))
    }

    /// The major version of these clients.
    pub fn major(&self) -> Result<u32> {
        let v = self.pg_dump_version()?;
        v.split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("unexpected pg_dump version {v:?}"))
    }

    /// Runs one SQL statement with `psql` and returns its unaligned output.
    pub fn query(&self, dsn: &str, sql: &str) -> Result<String> {
        let out = self
            .cmd("psql")
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                dsn,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.bindir.join("psql").display()))?;
        if !out.status.success() {
            bail!(
                "psql {}: {}",
                describe_status(out.status),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }
}

/// The version in a `--version` line: `pg_dump (PostgreSQL) 15.18 (Debian
/// 15.18-0+deb12u1)` gives `15.18`. Distributions append their package
/// version in parentheses; the upstream one is the first word after the
/// program and product names that starts with a digit.
pub fn parse_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    let word = line
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    let v = word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    (!v.is_empty()).then(|| v.to_string())
}

/// `dsn` with its database replaced by `db`. URLs
/// (`postgresql://user@host:port/db?params`) get a new path; key/value
/// strings get a trailing `dbname=` (the last keyword wins in libpq).
pub fn with_database(dsn: &str, db: &str) -> String {
    if let Some(scheme_end) = dsn.find("://") {
        let rest_start = scheme_end + 3;
        let rest = &dsn[rest_start..];
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let after = &rest[auth_end..];
        let query = after.find('?').map(|q| &after[q..]).unwrap_or("");
        format!(
            "{}{}/{}{}",
            &dsn[..rest_start],
            &rest[..auth_end],
            percent_encode(db),
            query
        )
    } else {
        format!(
            "{dsn} dbname='{}'",
            db.replace('\\', "\\\\").replace('\'', "\\'")
        )
    }
}

/// `dsn` without its password, and the password: the URL's `user:password@`
/// or `password=` parameter, or a key/value string's `password` keyword.
/// What remains may go on a command line.
pub fn split_password(dsn: &str) -> (String, Option<String>) {
    if let Some(scheme_end) = dsn.find("://") {
        let rest_start = scheme_end + 3;
        let rest = &dsn[rest_start..];
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, after) = rest.split_at(auth_end);
        let mut password = None;
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => match userinfo.split_once(':') {
                Some((user, pw)) => {
                    password = Some(percent_decode(pw));
                    if user.is_empty() {
                        hosts.to_string()
                    } else {
                        format!("{user}@{hosts}")
                    }
                }
                None => authority.to_string(),
            },
            None => authority.to_string(),
        };
        let (path, query) = after.split_once('?').unwrap_or((after, ""));
        let mut params = Vec::new();
        for p in query.split('&').filter(|p| !p.is_empty()) {
            match p.strip_prefix("password=") {
                Some(pw) => password = Some(percent_decode(pw)),
                None => params.push(p),
            }
        }
        let query = if params.is_empty() {
            String::new()
        } else {
            format!("?{}", params.join("&"))
        };
        (
            format!("{}{authority}{path}{query}", &dsn[..rest_start]),
            password,
        )
    } else {
        let mut password = None;
        let mut kept = Vec::new();
        for (k, v) in conninfo_pairs(dsn) {
            if k == "password" {
                password = Some(v);
            } else {
                kept.push(format!(
                    "{k}='{}'",
                    v.replace('\\', "\\\\").replace('\'', "\\'")
                ));
            }
        }
        if password.is_none() {
            return (dsn.to_string(), None);
        }
        (kept.join(" "), password)
    }
}

/// The `keyword = value` pairs of a libpq key/value string (values bare or
/// single-quoted, `\` escaping the next character).
fn conninfo_pairs(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.peek().is_none() {
            return out;
        }
        let mut key = String::new();
        while let Some(c) = it.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        it.next_if_eq(&'=');
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if it.next_if_eq(&'\'').is_some() {
            while let Some(c) = it.next() {
                match c {
                    '\'' => break,
                    '\\' => value.extend(it.next()),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = it.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(it.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(x)) => {
                out.push(x);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A server and the clients to talk to it.
pub struct Server {
    /// The connection string as given without its password (its database
    /// is the maintenance one); the clients carry the password.
    pub dsn: String,
    /// Client programs of the server's major version or newer.
    pub clients: Clients,
    /// `server_version_num`, e.g. 150018.
    pub version_num: u32,
}

impl Server {
    /// Connects once to learn the server's version and pick clients.
    pub fn connect(dsn: &str) -> Result<Self> {
        let (dsn, password) = split_password(dsn);
        let probe = Clients::newest()?.with_password(password.clone());
        let num: u32 = probe
            .query(&dsn, "SHOW server_version_num")
            .context("cannot connect to the PostgreSQL server")?
            .trim()
            .parse()
            .context("unexpected server_version_num")?;
        let clients = Clients::for_server(num / 10000)?.with_password(password);
        Ok(Self {
            dsn,
            clients,
            version_num: num,
        })
    }

    /// Every database that accepts connections, templates excluded.
    pub fn databases(&self) -> Result<Vec<String>> {
        Ok(self
            .clients
            .query(
                &self.dsn,
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
            )?
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// The databases of [`Server::databases`] the connecting role has no
    /// CONNECT privilege on (a managed service's own, like RDS's `rdsadmin`).
    pub fn databases_denied(&self) -> Result<Vec<String>> {
        Ok(self
            .clients
            .query(
                &self.dsn,
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate \
                 AND NOT has_database_privilege(datname, 'CONNECT') ORDER BY 1",
            )?
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// The state (versions, size, row counts) of `db` right now.
    fn state(&self, db: &str) -> Result<DbState> {
        let sql = STATE_QUERY.replace("$1", "false");
        let line = self.clients.query(&with_database(&self.dsn, db), &sql)?;
        serde_json::from_str(&line).context("unexpected answer from the server")
    }
}

/// A `psql` session holding an open REPEATABLE READ transaction whose
/// snapshot was exported; closing it (drop) ends the transaction.
struct SnapshotSession {
    child: Child,
    stdin: Option<ChildStdin>,
    state: DbState,
}

impl SnapshotSession {
    fn open(server: &Server, db: &str) -> Result<Self> {
        let mut child = server
            .clients
            .cmd("psql")
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(with_database(&server.dsn, db))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run psql")?;
        let mut stdin = child.stdin.take().context("psql has no stdin")?;
        let stdout = child.stdout.take().context("psql has no stdout")?;
        let sql = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n{}\n",
            STATE_QUERY.replace("$1", "true")
        );
        // A failed write means psql already exited; its status says why.
        let _ = stdin.write_all(sql.as_bytes()).and_then(|()| stdin.flush());
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim().is_empty() {
            drop(stdin);
            let status = child.wait()?;
            // psql's own message says why (no CONNECT privilege, a table
            // the role may not read, ...).
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            bail!(
                "cannot read database {db:?}: psql {}: {}",
                describe_status(status),
                err.trim()
            );
        }
        let state: DbState =
            serde_json::from_str(line.trim()).context("unexpected answer from the server")?;
        Ok(Self {
            child,
            stdin: Some(stdin),
            state,
        })
    }
}

impl Drop for SnapshotSession {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"COMMIT;\n");
        }
        let _ = self.child.wait();
    }
}

/// One database's backup.
pub struct DatabaseBackup {
    /// The database.
    pub database: String,
    /// The library's result.
    pub outcome: BackupOutcome,
    /// Row counts recorded, by metadata key.
    pub rowcounts: BTreeMap<String, u64>,
    /// `pg_database_size` at the dump.
    pub database_size: u64,
}

/// Backs up one database: a consistent `pg_dump -Fc -Z0` of the exported
/// snapshot, streamed, with the row counts of that snapshot as metadata.
pub fn backup_database(
    repo: &Repository,
    server: &Server,
    db: &str,
    globals: Option<&str>,
    tags: &[String],
    host: Option<&str>,
) -> Result<DatabaseBackup> {
    let session = SnapshotSession::open(server, db)?;
    let snapshot_name = session
        .state
        .snapshot
        .clone()
        .context("the server exported no snapshot")?;
    let mut cmd = server.clients.cmd("pg_dump");
    cmd.args(["-Fc", "-Z0", "--snapshot"])
        .arg(&snapshot_name)
        .arg("-d")
        .arg(with_database(&server.dsn, db));
    let reader = CommandReader::from_command(cmd)?;
    let path = dump_path(db);
    let rowcounts = session.state.rowcounts();
    let mut b = repo
        .backup()
        .stream(path, reader)
        .tag(TAG)
        .metadata("pg.database", db)
        .metadata("pg.format", "custom")
        .metadata("pg.server_version", &session.state.server_version)
        .metadata(
            "pg.server_version_num",
            session.state.server_version_num.to_string(),
        )
        .metadata("pg.pg_dump_version", server.clients.pg_dump_version()?)
        .metadata("pg.database_size", session.state.size.to_string());
    if let Some(g) = globals {
        b = b.metadata("pg.globals_snapshot", g);
    }
    let st = &session.state;
    for (k, v) in [
        ("pg.encoding", &st.encoding),
        ("pg.lc_collate", &st.collate),
        ("pg.lc_ctype", &st.ctype),
    ] {
        if let Some(v) = v {
            b = b.metadata(k, v);
        }
    }
    for (k, n) in &rowcounts {
        b = b.metadata(k, n.to_string());
    }
    for t in tags {
        b = b.tag(t);
    }
    if let Some(h) = host {
        b = b.host(h);
    }
    let outcome = b
        .run()
        .with_context(|| format!("pg_dump of database {db:?} failed; no snapshot was written"))?;
    let database_size = session.state.size;
    drop(session);
    Ok(DatabaseBackup {
        database: db.to_string(),
        outcome,
        rowcounts,
        database_size,
    })
}

/// A snapshot's metadata value.
pub fn meta<'a>(snap: &'a SnapshotEntry, key: &str) -> Option<&'a str> {
    snap.snapshot
        .metadata
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Streams `node` into a program's standard input and waits for it.
pub fn feed(repo: &Repository, node: &Node, mut cmd: Command, what: &str) -> Result<()> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {what}"))?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let fed = repo.dump_node(node, &mut stdin);
    drop(stdin);
    let status = child.wait()?;
    match fed {
        // A damaged repository cuts the stream short, and the program
        // then complains about its input ("input file is too short"): the
        // repository's error, naming the blob and pack, is the cause.
        Err(e) if !matches!(e, repo_core::Error::Target { .. }) => Err(e).with_context(|| {
            format!(
                "cannot read the dump from the repository ({what} {} on the cut-short stream)",
                describe_status(status)
            )
        }),
        // The program's own failure explains a broken pipe on our side.
        _ if !status.success() => bail!("{what} {}", describe_status(status)),
        Err(e) => Err(e).with_context(|| format!("cannot feed {what}")),
        Ok(_) => Ok(()),
    }
}

/// How to restore.
#[derive(Debug, Default)]
pub struct RestoreOptions {
    /// Target database (default: the one dumped).
    pub database: Option<String>,
    /// Create the target database: `pg_restore --create` under the dumped
    /// name, else `CREATE DATABASE` here (see [`Target::prepare`]).
    pub create: bool,
    /// Encoding and locale for a database created under a new name.
    pub locale: DbLocale,
    /// `pg_restore --clean --if-exists`.
    pub clean: bool,
    /// Restore the globals snapshot (roles) first.
    pub globals: Option<Node>,
    /// Skip ownership and privileges (verification into a scratch database).
    pub no_owner: bool,
    /// `pg_restore -j`: parallel jobs; above 1 the dump goes through a
    /// private temporary file, as pg_restore cannot read stdin in parallel.
    pub jobs: u32,
    /// Where that temporary file goes [default: `$TMPDIR`].
    pub temp_dir: Option<PathBuf>,
}

/// Restores a dump node with `pg_restore` reading its standard input.
/// Returns the database restored into.
pub fn restore(
    repo: &Repository,
    server: &Server,
    dump: &Node,
    dumped_db: &str,
    o: &RestoreOptions,
) -> Result<String> {
    if let Some(g) = &o.globals {
        // Without ON_ERROR_STOP: roles that already exist (at least the
        // connecting one) make harmless errors, as with any pg_dumpall script.
        let mut cmd = server.clients.cmd("psql");
        cmd.args(["-X", "-q", "-d"]).arg(&server.dsn);
        feed(repo, g, cmd, "psql (globals)")?;
    }
    let mut args: Vec<OsString> = vec!["--exit-on-error".into()];
    let target = Target::prepare(
        server,
        dumped_db,
        o.database.as_deref(),
        o.create,
        o.clean,
        &o.locale,
    )?;
    args.extend(target.args.iter().cloned());
    // Into a database made here pg_restore's --clean has nothing to drop.
    if o.clean && !(o.create && target.name != dumped_db) {
        args.push("--clean".into());
        args.push("--if-exists".into());
    }
    if o.no_owner {
        args.push("--no-owner".into());
        args.push("--no-acl".into());
    }
    let mut cmd = server.clients.cmd("pg_restore");
    cmd.args(&args);
    let done = if o.jobs > 1 {
        restore_parallel(repo, dump, cmd, o)
    } else {
        feed(repo, dump, cmd, "pg_restore")
    };
    let name = target.name.clone();
    match done {
        Ok(()) => {
            target.keep();
            Ok(name)
        }
        Err(e) => Err(target.discard(server, e)),
    }
}

/// `pg_restore -j N FILE`: its parallel mode seeks in the archive, so the
/// dump is first written to a file readable by us only, in a fresh
/// directory (0700) that is removed however the restore ends.
fn restore_parallel(
    repo: &Repository,
    dump: &Node,
    mut cmd: Command,
    o: &RestoreOptions,
) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let base = o.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("cairn-pg-restore-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(&base)
        .with_context(|| format!("cannot create a temporary directory in {}", base.display()))?;
    let path = dir.path().join("dump.pgdump");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    repo.dump_node(dump, &mut f).map_err(|e| match e {
        repo_core::Error::Target { source, .. } => {
            anyhow!(source).context(format!("cannot write the dump to {}", path.display()))
        }
        e => anyhow!(e).context("cannot read the dump from the repository"),
    })?;
    drop(f);
    let status = cmd
        .arg("-j")
        .arg(o.jobs.to_string())
        .arg(&path)
        .stdin(Stdio::null())
        .status()
        .context("cannot run pg_restore")?;
    if !status.success() {
        bail!("pg_restore {}", describe_status(status));
    }
    dir.close()
        .with_context(|| format!("cannot remove {}", path.display()))?;
    Ok(())
}

/// One table whose restored count differs from the recorded one.
#[derive(Debug, serde::Serialize)]
pub struct Mismatch {
    /// `schema.table`.
    pub table: String,
    /// Count recorded at backup (`None`: table not recorded).
    pub recorded: Option<u64>,
    /// Count after restore (`None`: table missing).
    pub restored: Option<u64>,
}

/// Restores into a scratch database, counts rows, drops it.
pub fn verify(
    repo: &Repository,
    server: &Server,
    snap: &SnapshotEntry,
    dump: &Node,
) -> Result<(String, usize, Vec<Mismatch>)> {
    let dumped = meta(snap, "pg.database").context("snapshot has no pg.database")?;
    let scratch = format!(
        "cairn_verify_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    server
        .clients
        .query(&server.dsn, &format!("CREATE DATABASE \"{scratch}\""))
        .context("cannot create the scratch database")?;
    let dropper = ScratchDb {
        server,
        name: scratch.clone(),
    };
    restore(
        repo,
        server,
        dump,
        dumped,
        &RestoreOptions {
            database: Some(scratch.clone()),
            no_owner: true,
            ..RestoreOptions::default()
        },
    )?;
    let state = server.state(&scratch)?;
    drop(dropper);
    let restored = state.rowcounts();
    let recorded: BTreeMap<String, u64> = snap
        .snapshot
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with(ROWCOUNT_PREFIX))
        .map(|(k, v)| {
            Ok((
                k.clone(),
                v.parse::<u64>().with_context(|| format!("bad {k}"))?,
            ))
        })
        .collect::<Result<_>>()?;
    let mut mismatches = Vec::new();
    let keys: std::collections::BTreeSet<&String> =
        recorded.keys().chain(restored.keys()).collect();
    for k in &keys {
        let (a, b) = (recorded.get(*k).copied(), restored.get(*k).copied());
        if a != b {
            mismatches.push(Mismatch {
                table: k[ROWCOUNT_PREFIX.len()..].to_string(),
                recorded: a,
                restored: b,
            });
        }
    }
    Ok((scratch, keys.len(), mismatches))
}

/// Drops the scratch database however verification ends.
struct ScratchDb<'a> {
    server: &'a Server,
    name: String,
}

impl Drop for ScratchDb<'_> {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\"", self.name);
        if let Err(e) = self.server.clients.query(&self.server.dsn, &sql) {
            eprintln!(
                "cairn: warning: cannot drop scratch database {}: {e:#}",
                self.name
            );
        }
    }
}

/// The stream path of a database dump in a snapshot.
pub fn dump_path(db: &str) -> String {
    format!("postgres/{db}.dump")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_parsed_from_distribution_strings() {
        let cases = [
            (
                "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n",
                "15.18",
            ),
            (
                "pg_dump (PostgreSQL) 16.4 (Ubuntu 16.4-0ubuntu0.24.04.2)\n",
                "16.4",
            ),
            (
                "pg_dump (PostgreSQL) 17.2 (Debian 17.2-1.pgdg120+1)\n",
                "17.2",
            ),
            ("pg_dump (PostgreSQL) 15.18\n", "15.18"),
            ("pg_dump (PostgreSQL) 9.6.24\n", "9.6.24"),
            ("pg_dump (PostgreSQL) 14.13 (Homebrew)\n", "14.13"),
            ("pg_dump (PostgreSQL) 18beta1\n", "18beta1"),
            (
                "pg_dump (PostgreSQL) 13.16 (Red Hat 13.16-1.el9)\n",
                "13.16",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_version(text).as_deref(), Some(want), "{text}");
        }
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("pg_dump (PostgreSQL)\n"), None);
    }

    #[test]
    fn passwords_are_split_from_connection_strings() {
        let cases = [
            (
                "postgresql://bob:s%40cr%3At@db:5433/shop?sslmode=require",
                "postgresql://bob@db:5433/shop?sslmode=require",
                Some("s@cr:t"),
            ),
            (
                "postgres://:pw@db/x?password=other&application_name=c",
                "postgres://db/x?application_name=c",
                Some("other"),
            ),
            ("postgresql://bob@db/x", "postgresql://bob@db/x", None),
            (
                "host=/run/postgresql user=bob password='it''s \\' x' dbname=shop",
                "host='/run/postgresql' user='bob' dbname='shop'",
                None,
            ),
            (
                "host=db password = 'a b\\'c' user=u",
                "host='db' user='u'",
                Some("a b'c"),
            ),
            ("host=db user=u", "host=db user=u", None),
        ];
        for (dsn, stripped, pw) in cases {
            let (s, p) = split_password(dsn);
            if dsn.contains("it''s") {
                // Not libpq syntax: whatever we make of it, no password
                // fragment may stay in the arguments.
                assert!(!s.contains("password"), "{s}");
                continue;
            }
            assert_eq!((s.as_str(), p.as_deref()), (stripped, pw), "{dsn}");
        }
        assert_eq!(
            with_database(&split_password("host=db password=x").0, "shop"),
            "host='db' dbname='shop'"
        );
    }
}
