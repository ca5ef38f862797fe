//! `cairn discover`: look at this machine for what should be backed up and
//! propose a plan (docs/plans.md) with a comment on every entry.
//!
//! Servers are found by their listening sockets, not by port alone:
//! `/proc/net/tcp{,6}` lists LISTEN sockets with their inodes, and
//! `/proc/PID/fd/*` links (`socket:[INODE]`) tie an inode to a process,
//! whose `comm` names the server. So a Redis on port 7000 is found too.
//! Without permission to read other users' fds (not root), the well-known
//! ports stand in.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::Status;
use crate::cli::DiscoverArgs;
use crate::output::Output;

/// One thing found.
#[derive(Debug, Clone, Serialize)]
struct Finding {
    /// `postgres`, `redis`, `qdrant`, `etc`, `tls`, `app-data`, `docker`,
    /// `logs`, `home`, `git`, or `note` for something found but not proposed.
    kind: &'static str,
    /// The file or directory, for file findings and unix sockets.
    path: Option<String>,
    /// `host:port` for servers.
    address: Option<String>,
    /// The process listening, when it could be mapped.
    process: Option<String>,
    /// Its pid.
    pid: Option<u32>,
    /// Why it matters.
    why: String,
    /// The proposed source covering it, if any.
    source: Option<String>,
}

impl Finding {
    fn file(kind: &'static str, path: &Path, why: impl Into<String>, source: &str) -> Self {
        Finding {
            kind,
            path: Some(path.display().to_string()),
            address: None,
            process: None,
            pid: None,
            why: why.into(),
            source: (!source.is_empty()).then(|| source.to_string()),
        }
    }
}

/// A LISTEN socket from `/proc/net/tcp{,6}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listener {
    addr: IpAddr,
    port: u16,
    inode: u64,
}

/// A server: its process (pid, comm) when mapped, and its listeners.
type Server = (Option<(u32, String)>, Vec<Listener>);

/// A proposed source.
struct Proposal {
    name: String,
    comment: Vec<String>,
    body: Vec<String>,
}

/// Directories of /var/lib that belong to the OS or its package manager:
/// reinstalled, not restored.
const SYSTEM_VAR_LIB: &[&str] = &[
    "AccountsService",
    "NetworkManager",
    "PackageKit",
    "apport",
    "apt",
    "aptitude",
    "boltd",
    "cloud",
    "command-not-found",
    "containerd",
    "dbus",
    "dhcp",
    "dictionaries-common",
    "docker",
    "dpkg",
    "emacsen-common",
    "fwupd",
    "initramfs-tools",
    "ispell",
    "landscape",
    "logrotate",
    "lxcfs",
    "man-db",
    "misc",
    "os-prober",
    "pam",
    "plymouth",
    "polkit-1",
    "private",
    "python",
    "sgml-base",
    "shells.state",
    "snapd",
    "sudo",
    "systemd",
    "tpm",
    "ubuntu-advantage",
    "ucf",
    "update-manager",
    "update-notifier",
    "usbutils",
    "vim",
    "xml-core",
];

/// Database directories in /var/lib, with the kind of server (as
/// [`kind_of_process`] names it) whose source backs them up: copying live
/// database files gives a torn copy, so a logical dump is used instead.
const DATABASE_VAR_LIB: &[(&str, Option<&str>, &str)] = &[
    (
        "postgresql",
        Some("postgres"),
        "PostgreSQL data files: backed up with pg_dump by the postgres source instead",
    ),
    (
        "redis",
        Some("redis"),
        "Redis data files: backed up over the replication protocol by the redis source instead",
    ),
    (
        "qdrant",
        Some("qdrant"),
        "Qdrant storage: backed up with collection snapshots by the qdrant source instead",
    ),
    (
        "mysql",
        None,
        "MySQL data files: a live copy is torn; add a command source running mysqldump",
    ),
];

/// Why a database directory of /var/lib is not proposed, given the kinds
/// of server found running.
fn database_note(server: Option<&str>, why: &str, running: &BTreeSet<&str>) -> String {
    match server {
        Some(k) if !running.contains(k) => format!(
            "{why} (no running server was found: add the source by hand, see `cairn plan init`)"
        ),
        _ => why.to_string(),
    }
}

/// Runs the discovery and prints or writes the plan.
pub fn run(out: Output, a: &DiscoverArgs) -> Result<Status> {
    let (findings, text) = discover(a);
    if let Some(p) = &a.write {
        super::plan::write_new(p, &text)?;
        eprintln!(
            "wrote {}; review it (the repository is a placeholder), then `cairn run {} --dry-run`",
            p.display(),
            p.display()
        );
    }
    if out.json {
        out.json_value(&findings)?;
    } else if a.write.is_none() {
        use std::io::Write;
        let mut o = std::io::stdout().lock();
        o.write_all(text.as_bytes())?;
        o.flush()?;
    }
    Ok(Status::Ok)
}

fn discover(a: &DiscoverArgs) -> (Vec<Finding>, String) {
    let root = &a.root;
    let mut findings = Vec::new();
    let mut proposals = Vec::new();

    let running = services(&a.proc, root, &mut findings, &mut proposals);

    // /etc and the TLS material in it.
    let etc = root.join("etc");
    if etc.is_dir() {
        let mut comment = vec![format!(
            "found {}: system and service configuration",
            etc.display()
        )];
        findings.push(Finding::file(
            "etc",
            &etc,
            "system and service configuration",
            "etc",
        ));
        for (rel, why) in [
            (
                "letsencrypt",
                "TLS certificates and account keys (Let's Encrypt)",
            ),
            ("ssl/private", "TLS private keys"),
        ] {
            let p = etc.join(rel);
            if p.is_dir() {
                comment.push(format!("includes {}: {why}", p.display()));
                findings.push(Finding::file("tls", &p, why, "etc"));
            }
        }
        proposals.push(Proposal {
            name: "etc".into(),
            comment,
            body: vec![
                "type = \"paths\"".into(),
                format!("paths = [{}]", q(&etc.to_string_lossy())),
                "exclude_caches = true".into(),
            ],
        });
    }

    // Application data.
    let mut app = Vec::new();
    let mut app_comment = Vec::new();
    let var_lib = root.join("var/lib");
    for d in subdirs(&var_lib) {
        let name = d
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if SYSTEM_VAR_LIB.contains(&name.as_str()) {
            continue;
        }
        if let Some((_, server, why)) = DATABASE_VAR_LIB.iter().find(|(n, ..)| *n == name) {
            let why = database_note(*server, why, &running);
            findings.push(Finding::file("note", &d, why, ""));
            continue;
        }
        if is_empty_dir(&d) {
            continue;
        }
        let why = "application state under /var/lib";
        findings.push(Finding::file("app-data", &d, why, "app-data"));
        app_comment.push(format!("found {}: {why}", d.display()));
        app.push(d);
    }
    for top in ["srv", "opt"] {
        for d in subdirs(&root.join(top)) {
            if is_empty_dir(&d) {
                continue;
            }
            let why = format!("application data and installs under /{top}");
            findings.push(Finding::file("app-data", &d, why.clone(), "app-data"));
            app_comment.push(format!("found {}: {why}", d.display()));
            app.push(d);
        }
    }
    if !app.is_empty() {
        proposals.push(Proposal {
            name: "app-data".into(),
            comment: app_comment,
            body: vec![
                "type = \"paths\"".into(),
                format!("paths = [{}]", qlist(&app)),
                "exclude_caches = true".into(),
            ],
        });
    }

    // Docker: the rest of /var/lib/docker is images, containers and build
    // cache, recreated by pulling and starting again; volumes hold data.
    let docker = var_lib.join("docker");
    if docker.is_dir() {
        let volumes_dir = docker.join("volumes");
        let volumes: Vec<PathBuf> = subdirs(&volumes_dir)
            .into_iter()
            .filter(|d| !is_empty_dir(d))
            .collect();
        let rest =
            "everything but volumes/ (images, containers, build cache): recreated from the images";
        findings.push(Finding::file("note", &docker, rest, ""));
        if volumes.is_empty() {
            findings.push(Finding::file(
                "note",
                &volumes_dir,
                "no Docker volumes with data",
                "",
            ));
        } else {
            let why = format!(
                "{} Docker volume(s); a database running in a container would be copied \
                 live (torn): dump it with a command source too (docker exec … pg_dump)",
                volumes.len()
            );
            findings.push(Finding::file(
                "docker",
                &volumes_dir,
                why.clone(),
                "docker-volumes",
            ));
            proposals.push(Proposal {
                name: "docker-volumes".into(),
                comment: vec![format!("found {}: {why}", volumes_dir.display())],
                body: vec![
                    "type = \"paths\"".into(),
                    format!("paths = [{}]", q(&volumes_dir.to_string_lossy())),
                    "exclude_caches = true".into(),
                ],
            });
        }
    }

    // Home directories, root's included.
    let home = root.join("home");
    let homes: Vec<PathBuf> = subdirs(&home)
        .into_iter()
        .filter(|d| !is_empty_dir(d))
        .collect();
    let root_home = root.join("root");
    let root_home_used = root_home.is_dir() && !is_empty_dir(&root_home);
    let mut home_paths = Vec::new();
    let mut home_comment = Vec::new();
    if !homes.is_empty() {
        let why = format!("{} user home director(ies) with files", homes.len());
        findings.push(Finding::file("home", &home, why.clone(), "home"));
        home_comment.push(format!("found {}: {why}", home.display()));
        home_paths.push(home.clone());
    }
    if root_home_used {
        let why = "root's home directory";
        findings.push(Finding::file("home", &root_home, why, "home"));
        home_comment.push(format!("found {}: {why}", root_home.display()));
        home_paths.push(root_home.clone());
    }
    if !home_paths.is_empty() {
        proposals.push(Proposal {
            name: "home".into(),
            comment: home_comment,
            body: vec![
                "type = \"paths\"".into(),
                format!("paths = [{}]", qlist(&home_paths)),
                "exclude = [\".cache\", \"*.tmp\"]".into(),
                "exclude_caches = true".into(),
            ],
        });
    }

    let logs = root.join("var/log");
    if logs.is_dir() && !is_empty_dir(&logs) {
        findings.push(Finding::file(
            "logs",
            &logs,
            "system and application logs",
            "logs",
        ));
        proposals.push(Proposal {
            name: "logs".into(),
            comment: vec![format!(
                "found {}: system and application logs (rotated, compressed files skipped)",
                logs.display()
            )],
            body: vec![
                "type = \"paths\"".into(),
                format!("paths = [{}]", q(&logs.to_string_lossy())),
                "exclude = [\"*.gz\", \"*.xz\", \"journal\"]".into(),
            ],
        });
    }

    // Git repositories: working trees with uncommitted work are data too.
    let covered: Vec<(PathBuf, String)> = proposals
        .iter()
        .flat_map(|p| paths_of(p).into_iter().map(move |x| (x, p.name.clone())))
        .collect();
    let mut loose = Vec::new();
    for top in ["srv", "opt", "home", "root", "var/lib"] {
        let mut budget = 50_000usize;
        for g in git_repos(&root.join(top), a.git_depth, &mut budget) {
            let by = covered
                .iter()
                .find(|(p, _)| g.starts_with(p))
                .map(|(_, n)| n.clone());
            let why = "git repository (uncommitted and unpushed work lives only here)";
            findings.push(Finding::file(
                "git",
                &g,
                why,
                by.as_deref().unwrap_or("git"),
            ));
            if by.is_none() {
                loose.push(g);
            }
        }
    }
    if !loose.is_empty() {
        proposals.push(Proposal {
            name: "git".into(),
            comment: vec!["git repositories outside the sources above".into()],
            body: vec![
                "type = \"paths\"".into(),
                format!("paths = [{}]", qlist(&loose)),
            ],
        });
    }
    for f in findings.iter().filter(|f| f.kind == "git") {
        if let (Some(path), Some(src)) = (&f.path, &f.source)
            && let Some(p) = proposals.iter_mut().find(|p| &p.name == src)
            && src != "git"
        {
            p.comment.push(format!("includes git repository {path}"));
        }
    }

    let notes: Vec<&Finding> = findings.iter().filter(|f| f.kind == "note").collect();
    let text = render(&proposals, &notes);
    (findings, text)
}

/// The `paths` a proposal lists (parsed back from its body).
fn paths_of(p: &Proposal) -> Vec<PathBuf> {
    p.body
        .iter()
        .find_map(|l| l.strip_prefix("paths = "))
        .and_then(|v| toml::from_str::<BTreeMap<String, Vec<String>>>(&format!("p = {v}")).ok())
        .and_then(|mut m| m.remove("p"))
        .unwrap_or_default()
        .into_iter()
        .map(PathBuf::from)
        .collect()
}

/// The plan text: the proposals, after what was found but not proposed
/// and why (so a skipped directory is a decision the reader sees).
fn render(proposals: &[Proposal], notes: &[&Finding]) -> String {
    let mut t = String::from(
        "# Proposed by `cairn discover`. Review every entry, set the repository, then\n\
         # try it with `cairn run THIS_FILE --dry-run`. Format: docs/plans.md.\n\
         version = 1\n\n\
         # CHANGE ME: a repository on another disk or machine (`cairn init` it first).\n\
         # Add a second [[repository]] and a [[copy]] step to keep a copy off-site.\n\
         [[repository]]\n\
         name = \"main\"\n\
         path = \"/backup/cairn\"\n\
         password_file = \"/etc/cairn/password\"\n\n\
         [retention]\n\
         keep_daily = 30\n\
         keep_monthly = 12\n\
         prune = true\n\n\
         [check]\n\
         every = \"7d\"\n\
         read_data_subset = \"5%\"\n\n\
         [drill]\n\
         every = \"30d\"\n\
         sample = \"5%\"\n\n\
         [hooks]\n\
         on_failure = \"logger -t cairn \\\"plan $CAIRN_PLAN failed: $CAIRN_PLAN_FAILED\\\"\"\n",
    );
    if !notes.is_empty() {
        t.push_str("\n# Found but not proposed:\n");
        for n in notes {
            let what = n.path.as_deref().or(n.address.as_deref()).unwrap_or("?");
            t.push_str(&format!("# - {what}: {}\n", n.why));
        }
    }
    if proposals.is_empty() {
        t.push_str(
            "\n# Nothing was found to back up: add [[source]] entries (see `cairn plan init`).\n",
        );
    }
    for p in proposals {
        t.push('\n');
        for c in &p.comment {
            t.push_str(&format!("# {c}\n"));
        }
        t.push_str("[[source]]\n");
        t.push_str(&format!("name = {}\n", q(&p.name)));
        for l in &p.body {
            t.push_str(l);
            t.push('\n');
        }
    }
    t
}

/// A TOML basic string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn qlist(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| q(&p.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Subdirectories (not symlinks), sorted.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

fn is_empty_dir(d: &Path) -> bool {
    std::fs::read_dir(d).map_or(true, |mut r| r.next().is_none())
}

/// Directories holding `.git` below `dir`, at most `depth` levels down,
/// visiting at most `budget` directories; a repository is not descended into.
fn git_repos(dir: &Path, depth: usize, budget: &mut usize) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, level)) = stack.pop() {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        if d.join(".git").exists() {
            found.push(d);
            continue;
        }
        if level >= depth {
            continue;
        }
        for s in subdirs(&d).into_iter().rev() {
            let name = s.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with('.') || name == "node_modules" || name == "target" {
                continue;
            }
            stack.push((s, level + 1));
        }
    }
    found.sort();
    found
}

/// Servers found by sockets and processes; returns the kinds found
/// (`postgres`, `redis`, `qdrant`).
fn services(
    proc: &Path,
    root: &Path,
    findings: &mut Vec<Finding>,
    proposals: &mut Vec<Proposal>,
) -> BTreeSet<&'static str> {
    let mut listeners = Vec::new();
    for (file, v6) in [("net/tcp", false), ("net/tcp6", true)] {
        if let Ok(text) = std::fs::read_to_string(proc.join(file)) {
            listeners.extend(parse_tcp(&text, v6));
        }
    }
    let inodes: BTreeSet<u64> = listeners.iter().map(|l| l.inode).collect();
    let owners = socket_owners(proc, &inodes);

    // kind → (pid or port when unmapped) → listeners.
    let mut servers: BTreeMap<(&'static str, String), Server> = BTreeMap::new();
    for l in listeners {
        let owner = owners.get(&l.inode).cloned();
        let kind = match &owner {
            Some((_, comm)) => kind_of_process(comm),
            None => kind_of_port(l.port),
        };
        let Some(kind) = kind else { continue };
        let key = match &owner {
            Some((pid, _)) => format!("pid {pid}"),
            None => format!("port {}", l.port),
        };
        servers
            .entry((kind, key))
            .or_insert_with(|| (owner.clone(), Vec::new()))
            .1
            .push(l);
    }

    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (kind, _) in servers.keys() {
        *count.entry(kind).or_default() += 1;
    }
    let pg_sockets = pg_sockets(root);
    let mut pg_ports_done = BTreeSet::new();
    for ((kind, _), (owner, ls)) in &servers {
        let Some(l) = pick(kind, ls) else { continue };
        let host = connect_host(l.addr, ls);
        let address = format!("{host}:{}", l.port);
        let name = if count[kind] > 1 {
            format!("{kind}-{}", l.port)
        } else {
            kind.to_string()
        };
        let how = match owner {
            Some((pid, comm)) => format!("{comm} (pid {pid}) listening on {address}"),
            None => format!("a server listening on {address}, the usual {kind} port"),
        };
        findings.push(Finding {
            kind,
            path: None,
            address: Some(address.clone()),
            process: owner.as_ref().map(|o| o.1.clone()),
            pid: owner.as_ref().map(|o| o.0),
            why: how.clone(),
            source: Some(name.clone()),
        });
        let (comment, body) = match *kind {
            "postgres" => {
                pg_ports_done.insert(l.port);
                let dsn = match pg_sockets.iter().find(|(_, port)| *port == l.port) {
                    // The socket allows peer authentication as postgres.
                    Some((dir, _)) => format!(
                        "host={} port={} user=postgres dbname=postgres",
                        dir.display(),
                        l.port
                    ),
                    None => format!("postgresql://postgres@{address}/postgres"),
                };
                (
                    format!("found PostgreSQL: {how}; every database and the roles"),
                    vec![
                        "type = \"postgres\"".into(),
                        format!("dsn = {}", q(&dsn)),
                        "all = true".into(),
                    ],
                )
            }
            "redis" => (
                format!("found Redis: {how}; add the password to the URL if it has one"),
                vec![
                    "type = \"redis\"".into(),
                    format!("url = {}", q(&format!("redis://{address}"))),
                ],
            ),
            _ => (
                format!("found Qdrant: {how}; set api_key_file if it needs one"),
                vec![
                    "type = \"qdrant\"".into(),
                    format!("url = {}", q(&format!("http://{address}"))),
                    "all = true".into(),
                ],
            ),
        };
        proposals.push(Proposal {
            name,
            comment: vec![comment],
            body,
        });
    }
    // PostgreSQL reachable only over its unix socket.
    for (dir, port) in &pg_sockets {
        if pg_ports_done.contains(port) {
            continue;
        }
        let name = if pg_sockets.len() > 1 {
            format!("postgres-{port}")
        } else {
            "postgres".into()
        };
        let sock = dir.join(format!(".s.PGSQL.{port}"));
        findings.push(Finding::file(
            "postgres",
            &sock,
            "PostgreSQL unix socket",
            &name,
        ));
        proposals.push(Proposal {
            name,
            comment: vec![format!(
                "found the PostgreSQL socket {}; every database and the roles",
                sock.display()
            )],
            body: vec![
                "type = \"postgres\"".into(),
                format!(
                    "dsn = {}",
                    q(&format!(
                        "host={} port={port} user=postgres dbname=postgres",
                        dir.display()
                    ))
                ),
                "all = true".into(),
            ],
        });
    }
    let mut running: BTreeSet<&'static str> = servers.keys().map(|(k, _)| *k).collect();
    if !pg_sockets.is_empty() {
        running.insert("postgres");
    }
    if !count.contains_key("redis") {
        for d in ["run/redis", "var/run/redis"] {
            for f in std::fs::read_dir(root.join(d))
                .into_iter()
                .flatten()
                .flatten()
            {
                if f.file_name().to_string_lossy().ends_with(".sock") {
                    findings.push(Finding::file(
                        "note",
                        &f.path(),
                        "a Redis unix socket: cairn redis needs TCP; let the server listen on 127.0.0.1 too",
                        "",
                    ));
                }
            }
        }
    }
    running
}

/// PostgreSQL socket directories and ports (`.s.PGSQL.PORT`).
fn pg_sockets(root: &Path) -> Vec<(PathBuf, u16)> {
    let mut v = Vec::new();
    for d in ["var/run/postgresql", "run/postgresql", "tmp"] {
        let dir = root.join(d);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(port) = n.strip_prefix(".s.PGSQL.").and_then(|p| p.parse().ok()) {
                // /var/run is usually a link to /run: report each socket once.
                let canon = dir.canonicalize().unwrap_or(dir.clone());
                if !v.iter().any(|(d, p): &(PathBuf, u16)| {
                    d.canonicalize().unwrap_or(d.clone()) == canon && *p == port
                }) {
                    v.push((PathBuf::from("/").join(d), port));
                }
            }
        }
    }
    // The DSN names the socket as the server sees it: without --root.
    if root != Path::new("/") {
        for (d, _) in &mut v {
            *d = root.join(d.strip_prefix("/").unwrap_or(d));
        }
    }
    v
}

fn kind_of_process(comm: &str) -> Option<&'static str> {
    if comm == "postgres" || comm == "postmaster" {
        Some("postgres")
    } else if comm.starts_with("redis-server") {
        Some("redis")
    } else if comm == "qdrant" {
        Some("qdrant")
    } else {
        None
    }
}

fn kind_of_port(port: u16) -> Option<&'static str> {
    match port {
        5432 => Some("postgres"),
        6379 => Some("redis"),
        6333 => Some("qdrant"),
        _ => None,
    }
}

/// The listener to connect to: Qdrant's HTTP port (6333, else its lowest
/// port, as gRPC is the next one), else the lowest port.
fn pick<'a>(kind: &str, ls: &'a [Listener]) -> Option<&'a Listener> {
    if kind == "qdrant"
        && let Some(l) = ls.iter().find(|l| l.port == 6333)
    {
        return Some(l);
    }
    ls.iter().min_by_key(|l| l.port)
}

/// Where to connect for a listener: loopback for a wildcard address.
fn connect_host(addr: IpAddr, all: &[Listener]) -> String {
    match addr {
        IpAddr::V4(a) if a.is_unspecified() => "127.0.0.1".into(),
        IpAddr::V6(a) if a.is_unspecified() => {
            if all.iter().any(|l| l.addr.is_ipv4()) {
                "127.0.0.1".into()
            } else {
                "[::1]".into()
            }
        }
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("[{a}]"),
        },
    }
}

/// LISTEN sockets of a `/proc/net/tcp` or `tcp6` table.
fn parse_tcp(text: &str, v6: bool) -> Vec<Listener> {
    let mut v = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[3] != "0A" {
            continue;
        }
        let Some((addr, port)) = f[1].split_once(':') else {
            continue;
        };
        let (Some(addr), Ok(port), Ok(inode)) = (
            parse_addr(addr, v6),
            u16::from_str_radix(port, 16),
            f[9].parse::<u64>(),
        ) else {
            continue;
        };
        v.push(Listener { addr, port, inode });
    }
    v
}

/// The kernel prints each 32-bit word of the address as the hex of its
/// in-memory value, so on little-endian machines each word's bytes come
/// out reversed.
fn parse_addr(hex: &str, v6: bool) -> Option<IpAddr> {
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    let mut b = bytes;
    if cfg!(target_endian = "little") {
        for w in b.chunks_mut(4) {
            w.reverse();
        }
    }
    match (v6, b.len()) {
        (false, 4) => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        (true, 16) => {
            let a: [u8; 16] = b.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

/// socket inode → (pid, comm) for the inodes asked about, from the
/// `socket:[N]` links in `/proc/PID/fd` (only readable for our own
/// processes unless root).
fn socket_owners(proc: &Path, inodes: &BTreeSet<u64>) -> BTreeMap<u64, (u32, String)> {
    let mut m = BTreeMap::new();
    if inodes.is_empty() {
        return m;
    }
    for e in std::fs::read_dir(proc).into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        let mut comm = None;
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            let Some(inode) = t
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            if !inodes.contains(&inode) {
                continue;
            }
            let c = comm.get_or_insert_with(|| {
                std::fs::read_to_string(e.path().join("comm"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default()
            });
            m.entry(inode).or_insert((pid, c.clone()));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tcp() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0 100 0 0 10 0\n\
   1: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1 0 100 0 0 10 0\n";
        let l = parse_tcp(v4, false);
        if cfg!(target_endian = "little") {
            assert_eq!(
                l,
                vec![Listener {
                    addr: "127.0.0.1".parse().unwrap(),
                    port: 8080,
                    inode: 4242
                }]
            );
        }
        let v6 = "  sl  local_address                         remote_address                        st\n\
   0: 00000000000000000000000001000000:18EB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1\n";
        let l = parse_tcp(v6, true);
        if cfg!(target_endian = "little") {
            assert_eq!(l[0].addr, "::1".parse::<IpAddr>().unwrap());
            assert_eq!(l[0].port, 6379);
        }
    }

    #[test]
    fn wildcard_connects_to_loopback() {
        let l = |a: &str| Listener {
            addr: a.parse().unwrap(),
            port: 1,
            inode: 1,
        };
        assert_eq!(connect_host("0.0.0.0".parse().unwrap(), &[]), "127.0.0.1");
        assert_eq!(connect_host("::".parse().unwrap(), &[l("::")]), "[::1]");
        assert_eq!(
            connect_host("::".parse().unwrap(), &[l("::"), l("0.0.0.0")]),
            "127.0.0.1"
        );
    }
}
