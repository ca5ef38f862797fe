//! `cairn pg archive-wal`, `restore-wal` and `wal-verify` as PostgreSQL's
//! `archive_command` and `restore_command`, against a real server under
//! pgbench (issue 15).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use repo_core::{LocalBackend, OpenOptions, Repository};

use super::harness::{Env, PASSWORD, assert_success, stderr};
use super::pgserver::{PgServer, is_root};

/// A server archiving into a test repository through a script that first
/// keeps a copy of each file PostgreSQL hands over (in `side/`), so the
/// test can compare what comes back with what was archived.
pub(super) struct Archiving {
    pub(super) env: Env,
    pub(super) pg: PgServer,
    pub(super) side: PathBuf,
}

fn cairn() -> &'static str {
    env!("CARGO_BIN_EXE_cairn")
}

impl Archiving {
    /// `kill_first`: the first attempt at each file is killed (SIGKILL)
    /// after 0 to 200 ms, mid-write or not, and reported as failed;
    /// PostgreSQL retries it.
    pub(super) fn start(kill_first: bool) -> Self {
        let env = Env::init();
        let side = env.path("side");
        std::fs::create_dir(&side).unwrap();
        std::fs::write(env.path("pw"), PASSWORD).unwrap();
        let run = format!(
            "env -i CAIRN_PASSWORD_FILE={pw} CAIRN_REPOSITORY={repo} {bin} pg archive-wal \"$1\"",
            pw = env.path("pw").display(),
            repo = env.repo().display(),
            bin = cairn(),
        );
        let kill = if kill_first {
            format!(
                "if [ ! -e \"{side}/$f.killed\" ]; then\n  touch \"{side}/$f.killed\"\n  \
                 {run} &\n  pid=$!\n  sleep 0.$(( $(date +%N) % 3 ))\n  kill -9 $pid\n  exit 1\nfi\n",
                side = side.display()
            )
        } else {
            String::new()
        };
        let script = format!(
            "#!/bin/sh\nf=$(basename \"$1\")\ncp \"$1\" \"{side}/$f.tmp\" && mv \"{side}/$f.tmp\" \"{side}/$f\" || exit 1\n{kill}exec {run}\n",
            side = side.display()
        );
        let path = env.path("archive.sh");
        std::fs::write(&path, script).unwrap();
        let st = Command::new("chmod")
            .arg("755")
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success());
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(env.dir.path())
                .status()
                .unwrap();
            assert!(st.success(), "chown");
        }
        let command = format!("archive_command='{} %p'", path.display());
        let pg = PgServer::start_with(&["wal_level=replica", "archive_mode=on", &command]);
        Self { env, pg, side }
    }

    fn pgbench(&self, args: &[&str]) {
        let out = Command::new(self.pg.bindir.join("pgbench"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.pg.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(args)
            .arg("postgres")
            .output()
            .expect("run pgbench");
        super::pgserver::check(&out, "pgbench");
    }

    /// Initialises pgbench at `scale`, runs it for `seconds`, and gets
    /// every segment written so far archived: two switches, with a write
    /// between them because a switch needs something written since the last.
    pub(super) fn workload(&self, scale: &str, seconds: &str) {
        self.pgbench(&["-i", "-s", scale]);
        self.pgbench(&["-T", seconds, "-c", "2"]);
        self.switch_and_wait();
        self.pg.sql(
            "postgres",
            "CREATE TABLE t (x int); INSERT INTO t VALUES (1)",
        );
        self.switch_and_wait();
    }

    /// Switches to a new segment and waits until the old one is archived.
    fn switch_and_wait(&self) -> String {
        let name = self
            .pg
            .sql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
        self.pg.sql("postgres", "SELECT pg_switch_wal()");
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let done = self.pg.sql(
                "postgres",
                "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
            );
            if done.len() == 24 && done >= name {
                return name;
            }
            assert!(
                Instant::now() < deadline,
                "{name} not archived in time (last {done:?}): {}",
                std::fs::read_to_string(self.pg.dir().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The files PostgreSQL handed over, by name.
    pub(super) fn archived(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.side)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.ends_with(".tmp") && !n.ends_with(".killed"))
            .collect();
        v.sort();
        v
    }

    pub(super) fn cairn(&self, args: &[&str]) -> Output {
        self.env
            .cmd()
            .args(args)
            .current_dir(self.pg.data_dir())
            .output()
            .expect("run cairn")
    }

    fn restore(&self, name: &str, dest: &Path) -> Output {
        self.cairn(&["pg", "restore-wal", name, dest.to_str().unwrap()])
    }

    /// Objects in the repository's `wal/`.
    fn objects(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.env.repo().join("wal"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    }

    fn system_identifier(&self) -> u64 {
        let b = std::fs::read(self.pg.data_dir().join("global/pg_control")).unwrap();
        u64::from_le_bytes(b[..8].try_into().unwrap())
    }

    /// A base backup snapshot as `pg basebackup` records one (the
    /// contract), starting at `start_wal`.
    fn forge_base_backup(&self, start_wal: &str) {
        let repo = Repository::open(
            LocalBackend::open(self.env.repo()),
            PASSWORD.as_bytes(),
            OpenOptions::default(),
        )
        .unwrap();
        repo.backup()
            .stream("postgres/base.tar", &b"tar"[..])
            .tag("postgres-base")
            .metadata("pg.system_identifier", self.system_identifier().to_string())
            .metadata("pg.timeline", "1")
            .metadata("pg.start_wal", start_wal)
            .metadata("pg.stop_wal", start_wal)
            .metadata("pg.wal_segment_size", (16u64 << 20).to_string())
            .run()
            .unwrap();
    }

    /// Every file handed over comes back byte for byte, and each is stored
    /// once.
    fn assert_all_restore(&self) -> Vec<String> {
        let names = self.archived();
        assert!(names.len() >= 3, "{names:?}");
        let dest = self.env.path("restored");
        for n in &names {
            let out = self.restore(n, &dest);
            assert_success(&out);
            assert!(
                out.stdout.is_empty(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert_eq!(
                std::fs::read(&dest).unwrap(),
                std::fs::read(self.side.join(n)).unwrap(),
                "{n}"
            );
        }
        assert_eq!(self.objects().len(), names.len(), "{:?}", self.objects());
        names
    }
}

fn segments(names: &[String]) -> Vec<&String> {
    names.iter().filter(|n| n.len() == 24).collect()
}

#[test]
fn archives_under_pgbench_and_restores_every_file() {
    let a = Archiving::start(false);
    a.workload("2", "5");
    let names = a.assert_all_restore();
    let segs = segments(&names);

    // PostgreSQL retries a file it is not sure about: same content, exit 0.
    let first = a.side.join(segs[0]);
    let out = a.cairn(&["pg", "archive-wal", first.to_str().unwrap()]);
    assert_success(&out);
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{}",
        stderr(&out)
    );
    // Other content under an archived name: exit 1, the stored file stays.
    let other_dir = a.env.path("other");
    std::fs::create_dir(&other_dir).unwrap();
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[100_000] ^= 0xff;
    std::fs::write(other_dir.join(segs[0]), &bytes).unwrap();
    let out = a.cairn(&[
        "pg",
        "archive-wal",
        other_dir.join(segs[0]).to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("different content"),
        "{}",
        stderr(&out)
    );
    let dest = a.env.path("restored");
    assert_success(&a.restore(segs[0], &dest));
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(&first).unwrap()
    );

    // PostgreSQL asks for files that do not exist: exit 1, quietly.
    for missing in ["00000002.history", "0000000100000000000000F0"] {
        let out = a.restore(missing, &a.env.path("missing"));
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{}",
            stderr(&out)
        );
        assert!(!a.env.path("missing").exists());
    }

    // A timeline history file is filed under the cluster of the data
    // directory's pg_control (the current directory, as for PostgreSQL).
    let history = other_dir.join("00000002.history");
    std::fs::write(&history, "1\t0/5000000\tno recovery target specified\n").unwrap();
    assert_success(&a.cairn(&["pg", "archive-wal", history.to_str().unwrap()]));
    assert_success(&a.restore("00000002.history", &dest));
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(&history).unwrap()
    );
    std::fs::remove_file(
        a.env
            .repo()
            .join("wal")
            .join(format!("{}-00000002_history", &a.objects()[0][..16])),
    )
    .unwrap();

    // check reads every archived file; snapshots do not list WAL.
    let out = a
        .env
        .cmd()
        .args(["--json", "check", "--read-data"])
        .output()
        .unwrap();
    assert_success(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["wal_files"], names.len() as u64, "{report}");
    assert_eq!(report["wal_files_read"], names.len() as u64, "{report}");
    assert!(a.env.snapshots().is_empty());
    let stats = a.env.json(["stats"]);
    assert_eq!(
        stats["repository"]["wal_files"],
        names.len() as u64,
        "{stats}"
    );
    assert_eq!(stats["snapshots"], 0, "{stats}");
}

#[test]
fn killed_archive_commands_are_retried_and_nothing_is_damaged() {
    let a = Archiving::start(true);
    a.workload("1", "3");
    let names = a.assert_all_restore();
    // Every file was killed once, then archived by PostgreSQL's retry.
    for n in &names {
        assert!(a.side.join(format!("{n}.killed")).exists(), "{n}");
    }
    let out = a
        .env
        .cmd()
        .args(["--json", "check", "--read-data"])
        .output()
        .unwrap();
    assert_success(&out);
}

#[test]
fn wal_verify_names_gaps_the_newest_base_backup_needs() {
    let a = Archiving::start(false);
    a.pgbench(&["-i", "-s", "1"]);
    for _ in 0..5 {
        a.pg.sql(
            "postgres",
            "CREATE TABLE IF NOT EXISTS t (x int); INSERT INTO t VALUES (1)",
        );
        a.switch_and_wait();
    }
    let names = a.archived();
    let segs = segments(&names);
    assert!(segs.len() >= 5, "{segs:?}");
    // A base backup starting at the third segment.
    a.forge_base_backup(segs[2]);
    let v = a.env.json(["pg", "wal-verify"]);
    assert_eq!(v["ok"], true, "{v}");
    let tl = &v["clusters"][0]["timelines"][0];
    assert_eq!(tl["segments"], segs.len() as u64, "{v}");
    assert_eq!(tl["first"], segs[0].as_str(), "{v}");
    assert_eq!(tl["last"], segs[segs.len() - 1].as_str(), "{v}");

    // A gap before the base backup's start is reported, not an error.
    let object = |seg: &str| a.objects().into_iter().find(|o| o.ends_with(seg)).unwrap();
    std::fs::remove_file(a.env.repo().join("wal").join(object(segs[1]))).unwrap();
    let v = a.env.json(["pg", "wal-verify"]);
    assert_eq!(v["ok"], true, "{v}");
    let gap = &v["clusters"][0]["timelines"][0]["gaps"][0];
    assert_eq!(
        (gap["from"].as_str(), gap["required"].as_bool()),
        (Some(segs[1].as_str()), Some(false)),
        "{v}"
    );

    // One after it is: exit 1, named.
    std::fs::remove_file(a.env.repo().join("wal").join(object(segs[3]))).unwrap();
    let out = a
        .env
        .cmd()
        .args(["--json", "pg", "wal-verify"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let errors = v["clusters"][0]["errors"].to_string();
    assert!(errors.contains(segs[3].as_str()), "{v}");
    let out = a.env.cmd().args(["pg", "wal-verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains(segs[3].as_str()));

    // prune releases what no base backup needs: the segments before the
    // base backup's start, nothing else.
    let before = a.objects();
    let report = a.env.json(["prune", "--grace", "0"]);
    assert_eq!(report["summary"]["wal_deleted"], 1, "{report}");
    let after = a.objects();
    assert_eq!(after.len(), before.len() - 1);
    assert!(
        !after.iter().any(|o| o.ends_with(segs[0].as_str())),
        "{after:?}"
    );
    assert!(
        after.iter().any(|o| o.ends_with(segs[2].as_str())),
        "{after:?}"
    );
}

/// A server started on a restored data directory; stopped on drop.
struct Restored {
    bindir: PathBuf,
    data: PathBuf,
}

impl Drop for Restored {
    fn drop(&mut self) {
        let _ = super::pgserver::as_pg_user(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

#[test]
fn restore_command_replays_archived_wal_onto_a_base_backup() {
    use super::pgserver::as_pg_user;
    let a = Archiving::start(false);
    a.pg.sql(
        "postgres",
        "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 1000)",
    );
    // A base backup without WAL of its own: recovery must fetch it all.
    let base = a.env.path("base");
    let out = as_pg_user(&a.pg.bindir.join("pg_basebackup"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &a.pg.port.to_string(),
            "-U",
            "postgres",
        ])
        .args(["-X", "none", "-c", "fast", "-D"])
        .arg(&base)
        .output()
        .unwrap();
    super::pgserver::check(&out, "pg_basebackup");
    // Written after the backup: only archived WAL holds it.
    a.pg.sql(
        "postgres",
        "INSERT INTO t SELECT generate_series(1001, 2500)",
    );
    a.switch_and_wait();

    let script = a.env.path("restore.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec env -i CAIRN_PASSWORD_FILE={} CAIRN_REPOSITORY={} {} pg restore-wal \"$1\" \"$2\"\n",
            a.env.path("pw").display(),
            a.env.repo().display(),
            cairn()
        ),
    )
    .unwrap();
    assert!(
        Command::new("chmod")
            .arg("755")
            .arg(&script)
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(base.join("recovery.signal"), "").unwrap();
    let mut conf = std::fs::read_to_string(base.join("postgresql.auto.conf")).unwrap_or_default();
    conf.push_str(&format!(
        "restore_command = '{} %f %p'\narchive_mode = off\n",
        script.display()
    ));
    std::fs::write(base.join("postgresql.auto.conf"), conf).unwrap();
    if is_root() {
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&base)
            .arg(&script)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let restored = Restored {
        bindir: a.pg.bindir.clone(),
        data: base.clone(),
    };
    let log = a.env.path("restored.log");
    let out = as_pg_user(&a.pg.bindir.join("pg_ctl"))
        .arg("-D")
        .arg(&base)
        .arg("-l")
        .arg(&log)
        .args(["-t", "300", "-w", "-o"])
        .arg(format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            a.env.dir.path().display()
        ))
        .arg("start")
        .output()
        .unwrap();
    let server_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.status.success(),
        "restored server did not start: {server_log}"
    );
    let psql = |sql: &str| {
        let out = Command::new(a.pg.bindir.join("psql"))
            .args(["-X", "-A", "-t", "-q", "-d"])
            .arg(format!("postgresql://postgres@127.0.0.1:{port}/postgres"))
            .args(["-c", sql])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // It accepts read-only connections before recovery ends.
    let deadline = Instant::now() + Duration::from_secs(300);
    while psql("SELECT pg_is_in_recovery()") != "f" {
        assert!(
            Instant::now() < deadline,
            "recovery did not end: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(psql("SELECT count(*) FROM t"), "2500", "{server_log}");
    // PostgreSQL asked for files that were not there (the next timeline's
    // history, the segment after the last): restore-wal said nothing.
    let server_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        server_log.contains("archive recovery complete"),
        "{server_log}"
    );
    assert!(!server_log.contains("cairn"), "{server_log}");
    drop(restored);
}
