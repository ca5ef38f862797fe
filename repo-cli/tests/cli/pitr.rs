//! Point-in-time recovery against real PostgreSQL servers: `pg basebackup`
//! streams a physical base backup into the repository, `pg restore-cluster`
//! extracts it with recovery settings, and a server started on it replays
//! archived WAL (`cairn pg archive-wal`, `restore-wal`) to the moment
//! asked for.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::harness::{Env, PASSWORD, assert_success, stderr};
use super::pgserver::{PgServer, as_pg_user, check, is_root};

fn json(out: &Output) -> serde_json::Value {
    assert_success(out);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn meta<'a>(snap: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    snap["metadata"][key].as_str().or_else(|| {
        snap["metadata"]
            .as_array()?
            .iter()
            .find(|kv| kv[0] == key)
            .and_then(|kv| kv[1].as_str())
    })
}

/// A directory the `postgres` user owns (when we are root), inside `parent`.
fn pg_dir(parent: &Path, name: &str) -> PathBuf {
    let d = parent.join(name);
    std::fs::create_dir_all(&d).expect("mkdir");
    if is_root() {
        let st = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&d)
            .status()
            .expect("chown");
        assert!(st.success());
    }
    d
}

/// The repository's password in a file the server's user can read.
fn password_file(env: &Env) -> PathBuf {
    let p = env.path("password");
    std::fs::write(&p, PASSWORD).expect("write password");
    p
}

/// A server whose `archive_command` is `cairn pg archive-wal %p` into
/// `env`'s repository (which the server's user then owns).
fn archiving_server(env: &Env) -> PgServer {
    let pw = password_file(env);
    if is_root() {
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(env.dir.path())
            .status()
            .expect("chown");
        assert!(st.success());
    }
    let command = format!(
        "archive_command='{} -r {} --password-file {} pg archive-wal %p'",
        env!("CARGO_BIN_EXE_cairn"),
        env.repo().display(),
        pw.display()
    );
    PgServer::start_with(&["wal_level=replica", "archive_mode=on", &command])
}

/// `cairn --json pg ARGS` with the password in a file (as restore_command needs).
fn cairn_pg(env: &Env, args: &[&str]) -> Output {
    env.cmd()
        .arg("--json")
        .arg("--password-file")
        .arg(password_file(env))
        .arg("pg")
        .args(args)
        .output()
        .expect("run cairn")
}

/// `pg restore-cluster SNAPSHOT` into `work/name`, owned by `postgres`;
/// the data directory.
fn restore_cluster(env: &Env, work: &Path, snapshot: &str, name: &str) -> PathBuf {
    let pgdata = work.join(name);
    json(&cairn_pg(
        env,
        &[
            "restore-cluster",
            snapshot,
            "--pgdata",
            pgdata.to_str().unwrap(),
            "--owner",
            "postgres",
        ],
    ));
    pgdata
}

/// A server started on a restored data directory; stopped on drop.
struct Restored {
    bindir: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    port: u16,
}

impl Restored {
    /// Starts the server (it replays WAL) and waits until recovery ended.
    fn start(bindir: &Path, data: &Path, sock: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            sock.display()
        );
        let out = as_pg_user(&bindir.join("pg_ctl"))
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(sock.join("log"))
            .args(["-w", "-t", "300", "-o", &opts, "start"])
            .output()
            .expect("run pg_ctl");
        let s = Self {
            bindir: bindir.to_path_buf(),
            data: data.to_path_buf(),
            sock: sock.to_path_buf(),
            port,
        };
        if !out.status.success() {
            panic!(
                "restored server did not start: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(sock.join("log")).unwrap_or_default()
            );
        }
        let t = Instant::now();
        while s.sql("SELECT pg_is_in_recovery()") != "f" {
            assert!(
                t.elapsed() < Duration::from_secs(600),
                "recovery did not end:\n{}",
                std::fs::read_to_string(sock.join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        s
    }

    fn sql(&self, sql: &str) -> String {
        let out = Command::new(self.bindir.join("psql"))
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(format!(
                "postgresql://postgres@127.0.0.1:{}/postgres",
                self.port
            ))
            .arg("-c")
            .arg(sql)
            .output()
            .expect("run psql");
        check(&out, &format!("psql {sql}"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        let _ = as_pg_user(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = &self.sock;
    }
}

/// pgbench's state: history rows and the balance sums, one line.
const NUMBERS: &str = "SELECT (SELECT count(*) FROM pgbench_history) || ' ' || \
    (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || \
    (SELECT sum(tbalance) FROM pgbench_tellers) || ' ' || \
    (SELECT sum(bbalance) FROM pgbench_branches)";

/// `restore-cluster SNAPSHOT --pgdata PGDATA TARGET` fails with exit 1,
/// says `says`, and writes nothing (the data directory is not created).
fn assert_refused(env: &Env, snapshot: &str, pgdata: &Path, target: [&str; 2], says: &str) {
    let out = cairn_pg(
        env,
        &[
            "restore-cluster",
            snapshot,
            "--pgdata",
            pgdata.to_str().unwrap(),
            target[0],
            target[1],
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{target:?}");
    assert!(stderr(&out).contains(says), "{target:?}: {}", stderr(&out));
    assert!(!pgdata.exists(), "{target:?} created the data directory");
}

/// The numbers and the moment they hold: pgbench's writers are locked out
/// while the time is taken and the numbers read, so every commit up to
/// that time is in them and every later commit is later.
fn numbers_at_a_moment(pg: &PgServer) -> (String, String) {
    let line = pg.sql(
        "postgres",
        &format!(
            "BEGIN; LOCK TABLE pgbench_accounts, pgbench_tellers, pgbench_branches, pgbench_history \
             IN SHARE MODE; SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') || '|' || ({NUMBERS}); COMMIT;"
        ),
    );
    let (t, n) = line.split_once('|').expect("time|numbers");
    (t.to_string(), n.to_string())
}

fn pgbench(pg: &PgServer, args: &[&str]) -> Command {
    let mut c = Command::new(pg.bindir.join("pgbench"));
    c.args(args).arg(pg.dsn("postgres"));
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// Waits until the server archived the segment it is writing now.
fn switch_and_wait_archived(pg: &PgServer) {
    let seg = pg.sql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    let t = Instant::now();
    loop {
        let last = pg.sql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        );
        if !last.is_empty() && last.as_str() >= seg.as_str() {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "segment {seg} not archived (last: {last:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn basebackup_is_a_verifiable_snapshot_and_restore_cluster_writes_recovery() {
    let env = Env::init();
    let pg = archiving_server(&env);
    pg.sql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, body text);
         INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g;",
    );
    let dsn = pg.dsn("postgres");
    let saved = json(&cairn_pg(&env, &["basebackup", "--dsn", &dsn, "--fast"]));
    let snap = &saved["snapshots"][0];
    assert_eq!(
        snap["paths"],
        serde_json::json!(["postgres/base.tar"]),
        "{saved}"
    );
    let first_read = snap["bytes_read"].as_u64().unwrap();
    assert!(first_read > 4 << 20, "a whole cluster was read: {saved}");

    // The contract's metadata, checked against the server's own answers.
    let listed = env.json(["snapshots", "--tag", "postgres-base"]);
    let s = &listed.as_array().unwrap()[0];
    let sysid = pg.sql(
        "postgres",
        "SELECT system_identifier FROM pg_control_system()",
    );
    assert_eq!(meta(s, "pg.system_identifier"), Some(sysid.as_str()), "{s}");
    assert_eq!(meta(s, "pg.timeline"), Some("1"));
    assert_eq!(meta(s, "pg.wal_segment_size"), Some("16777216"));
    let start = meta(s, "pg.start_lsn").unwrap();
    let stop = meta(s, "pg.stop_lsn").unwrap();
    assert_eq!(
        meta(s, "pg.start_wal").unwrap(),
        pg.sql("postgres", &format!("SELECT pg_walfile_name('{start}')"))
    );
    assert_eq!(
        meta(s, "pg.stop_wal").unwrap(),
        pg.sql(
            "postgres",
            &format!("SELECT pg_walfile_name('{stop}'::pg_lsn - 1)")
        )
    );
    assert_eq!(
        pg.sql(
            "postgres",
            &format!("SELECT '{stop}'::pg_lsn > '{start}'::pg_lsn")
        ),
        "t"
    );
    assert_eq!(snap["type"], "postgres-base", "{saved}");
    assert_eq!(snap["stop_lsn"], stop);
    assert_eq!(snap["system_identifier"], sysid.as_str());
    // Monitoring facts: the archive holds the backup's WAL, the server
    // archived without failures.
    assert!(saved["wal"]["files"].as_u64().unwrap() >= 1, "{saved}");
    assert!(
        saved["wal"]["newest_segment"].as_str().unwrap() >= meta(s, "pg.stop_wal").unwrap(),
        "{saved}"
    );
    assert!(
        saved["wal"]["newest_segment_unix"].as_f64().unwrap() > 1.7e9,
        "{saved}"
    );
    assert_eq!(saved["archiver"]["failed_count"], 0, "{saved}");
    assert!(
        saved["archiver"]["archived_count"].as_u64().unwrap() >= 1,
        "{saved}"
    );
    assert!(
        meta(s, "pg.stop_time").is_some_and(|t| t.contains('T')),
        "{s}"
    );
    assert_eq!(
        meta(s, "pg.server_version_num"),
        Some(pg.sql("postgres", "SHOW server_version_num").as_str())
    );

    // A second base backup stores little beyond what changed.
    pg.sql("postgres", "UPDATE t SET body = 'changed' WHERE id <= 100");
    let again = json(&cairn_pg(&env, &["basebackup", "--dsn", &dsn, "--fast"]));
    let again = &again["snapshots"][0];
    let (read, added) = (
        again["bytes_read"].as_u64().unwrap(),
        again["bytes_added"].as_u64().unwrap(),
    );
    assert!(
        added < read / 4,
        "second base backup added {added} of {read} bytes"
    );

    // Restore: files, verification, recovery settings.
    let work = pg_dir(env.dir.path(), "restores");
    let pgdata = work.join("one");
    let out = cairn_pg(
        &env,
        &[
            "restore-cluster",
            "latest",
            "--pgdata",
            pgdata.to_str().unwrap(),
            "--owner",
            "postgres",
            "--target-lsn",
            stop,
        ],
    );
    // The newest base backup ends after that target: `latest` picks the first.
    let r = json(&out);
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["stop_lsn"], stop, "{r}");
    assert!(pgdata.join("backup_manifest").is_file());
    assert!(pgdata.join("recovery.signal").is_file());
    assert!(pgdata.join("base").is_dir());
    assert_eq!(
        std::fs::read(pgdata.join("PG_VERSION")).unwrap(),
        std::fs::read(pg.data_dir().join("PG_VERSION")).unwrap()
    );
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let m = std::fs::metadata(&pgdata).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
        if is_root() {
            let pg_uid = Command::new("id")
                .args(["-u", "postgres"])
                .output()
                .unwrap();
            let pg_uid: u32 = String::from_utf8_lossy(&pg_uid.stdout)
                .trim()
                .parse()
                .unwrap();
            assert_eq!(m.uid(), pg_uid);
            assert_eq!(
                std::fs::metadata(pgdata.join("PG_VERSION")).unwrap().uid(),
                pg_uid
            );
        }
    }
    let auto = std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains(&format!("recovery_target_lsn = '{stop}'")),
        "{auto}"
    );
    assert!(
        auto.contains("recovery_target_action = 'promote'"),
        "{auto}"
    );
    let rc = auto
        .lines()
        .find(|l| l.starts_with("restore_command = "))
        .unwrap_or_else(|| panic!("no restore_command: {auto}"));
    // A local repository: no read-ahead unless asked (SPEC §28.4.1).
    assert!(rc.contains(" pg restore-wal %f %p'"), "{rc}");
    assert!(!auto.contains("recovery_end_command"), "{auto}");
    assert!(rc.contains("--password-file"), "{rc}");
    assert!(rc.contains(env.repo().to_str().unwrap()), "{rc}");

    // Refusals, each before anything is written.
    let out = cairn_pg(
        &env,
        &[
            "restore-cluster",
            "latest",
            "--pgdata",
            pgdata.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "non-empty pgdata");
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap(),
        auto,
        "a refused restore changed the data directory"
    );
    let early = work.join("early");
    for target in [
        ["--target-lsn", "0/1"],
        ["--target-time", "2001-01-01 00:00:00+00"],
    ] {
        assert_refused(
            &env,
            "latest",
            &early,
            target,
            "before the end of every base backup",
        );
    }
    let newest = again["snapshot_id"].as_str().unwrap();
    assert_refused(
        &env,
        newest,
        &early,
        ["--target-lsn", stop],
        "use an older base backup",
    );
    // Beyond the archived WAL: an hour from now, a position far ahead.
    let later = pg.sql(
        "postgres",
        "SELECT to_char((now() + interval '1 hour') AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS+00')",
    );
    let far_lsn = pg.sql("postgres", "SELECT pg_current_wal_lsn() + 1000000000");
    for target in [
        ["--target-time", later.as_str()],
        ["--target-lsn", far_lsn.as_str()],
    ] {
        assert_refused(&env, "latest", &early, target, "beyond the archived WAL");
    }
}

/// pgbench writes while the server archives WAL; the numbers recorded at
/// a moment T come back exactly from a restore to T, and the final ones
/// from a restore to the end of the archive.
#[test]
fn restore_to_a_moment_gets_exactly_that_moments_numbers() {
    let env = Env::init();
    let pg = archiving_server(&env);
    let out = pgbench(&pg, &["-i", "-q", "-s", "2"])
        .output()
        .expect("pgbench -i");
    check(&out, "pgbench -i");
    let dsn = pg.dsn("postgres");
    json(&cairn_pg(&env, &["basebackup", "--dsn", &dsn, "--fast"]));

    let mut writer: Child = pgbench(&pg, &["-c", "2", "-T", "30", "-n"])
        .spawn()
        .expect("pgbench");
    std::thread::sleep(Duration::from_secs(8));
    let (t, at_t) = numbers_at_a_moment(&pg);
    std::thread::sleep(Duration::from_secs(2));
    let out = writer.wait_with_output().expect("pgbench");
    writer = pgbench(&pg, &["-c", "1", "-t", "200", "-n"])
        .spawn()
        .unwrap();
    let out2 = writer.wait_with_output().expect("pgbench");
    check(&out, "pgbench");
    check(&out2, "pgbench");
    let final_numbers = pg.sql("postgres", NUMBERS);
    assert_ne!(at_t, final_numbers, "pgbench wrote after T");
    switch_and_wait_archived(&pg);

    let work = pg_dir(env.dir.path(), "restores");
    for (name, target, expect) in [
        ("at-t", Some(t.as_str()), &at_t),
        ("at-end", None, &final_numbers),
    ] {
        let pgdata = work.join(name);
        let mut args = vec![
            "restore-cluster",
            "latest",
            "--pgdata",
            pgdata.to_str().unwrap(),
            "--owner",
            "postgres",
        ];
        if let Some(t) = target {
            // With read-ahead (SPEC §28.4.1); to the end without.
            args.extend(["--target-time", t, "--prefetch", "8"]);
        }
        let v = json(&cairn_pg(&env, &args));
        let rc = v["restore_command"].as_str().unwrap();
        assert_eq!(rc.contains(" --prefetch 8 %f %p"), target.is_some(), "{rc}");
        let auto = std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap();
        assert_eq!(
            auto.contains(" pg restore-wal --clean-spool'\n"),
            target.is_some(),
            "{auto}"
        );
        let sock = pg_dir(&work, &format!("{name}-sock"));
        let server = Restored::start(&pg.bindir, &pgdata, &sock);
        assert_eq!(&server.sql(NUMBERS), expect, "{name} (T = {t})");
        // The recovery_end_command removed the spool once recovery ended
        // (without read-ahead there never was one).
        let log = std::fs::read_to_string(sock.join("log")).unwrap();
        assert!(log.contains("restored log file"), "{log}");
        assert!(
            !pgdata.join("pg_wal/cairn-prefetch").exists(),
            "{name}: spool left after recovery:\n{log}"
        );
    }

    // pitr-verify does the same on its own scratch cluster, and removes it.
    let history = |numbers: &str| numbers.split(' ').next().unwrap().parse::<u64>().unwrap();
    let scratch = pg_dir(env.dir.path(), "scratch");
    for (target, expect) in [(Some(t.as_str()), &at_t), (None, &final_numbers)] {
        let mut args = vec!["pitr-verify", "--scratch", scratch.to_str().unwrap()];
        if let Some(t) = target {
            args.extend(["--target-time", t]);
        }
        let v = json(&cairn_pg(&env, &args));
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(
            v["databases"]["postgres"]["public.pgbench_history"].as_u64(),
            Some(history(expect)),
            "{target:?}: {v}"
        );
        assert_eq!(
            v["databases"]["postgres"]["public.pgbench_branches"], 2,
            "{v}"
        );
        assert!(v["rto_s"].as_f64().unwrap() > 0.0, "{v}");
        assert!(v["newest_recoverable_time"].is_string(), "{v}");
        assert!(
            std::fs::read_dir(&scratch).unwrap().next().is_none(),
            "scratch directory left behind"
        );
    }
    // WAL that cannot be fetched: the server cannot even find the base
    // backup's checkpoint; pitr-verify fails with its log, still cleaning up.
    let out = cairn_pg(
        &env,
        &[
            "pitr-verify",
            "--scratch",
            scratch.to_str().unwrap(),
            "--restore-command",
            "false",
            "--target-time",
            &t,
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("during recovery")
            && stderr(&out).contains("could not locate required checkpoint record")
            && !stderr(&out).contains("starting up"),
        "{}",
        stderr(&out)
    );
    assert!(
        std::fs::read_dir(&scratch).unwrap().next().is_none(),
        "scratch directory left behind after a failure"
    );
}

/// After a day of pgbench most pages, so most chunks, changed; each is
/// stored as a delta against the previous base backup's (SPEC §6.6), so the
/// second costs a fraction of the first. Forgetting the first and pruning
/// keeps what the second needs: check reads everything, and the cluster
/// restores to the end of the WAL with the server's exact numbers.
#[test]
fn a_second_base_backup_is_stored_as_deltas_that_outlive_the_first() {
    let env = Env::init();
    let pg = archiving_server(&env);
    let out = pgbench(&pg, &["-i", "-q", "-s", "2"])
        .output()
        .expect("pgbench -i");
    check(&out, "pgbench -i");
    let dsn = pg.dsn("postgres");
    let stored = |v: &serde_json::Value| v["snapshots"][0]["bytes_added_packed"].as_u64().unwrap();
    let first = json(&cairn_pg(&env, &["basebackup", "--dsn", &dsn, "--fast"]));
    let out = pgbench(&pg, &["-c", "2", "-t", "1000", "-n"])
        .output()
        .expect("pgbench");
    check(&out, "pgbench");
    // Run by the server's user, as a plan would: WAL recompression (SPEC
    // §28.6) replaces only objects of its own user.
    let first_r = &first["wal_recompressed"];
    if is_root() {
        assert_eq!(first_r["files"], 0, "{first}");
        assert!(
            first_r["skipped_other_owner"].as_u64().unwrap() >= 1,
            "{first}"
        );
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(env.dir.path())
            .status()
            .expect("chown");
        assert!(st.success());
    }
    let second = json(
        &as_pg_user(Path::new(env!("CARGO_BIN_EXE_cairn")))
            .arg("-r")
            .arg(env.repo())
            .arg("--cache-dir")
            .arg(env.path("pg-cache"))
            .arg("--password-file")
            .arg(password_file(&env))
            .args(["--json", "pg", "basebackup", "--dsn", &dsn, "--fast"])
            .stdin(Stdio::null())
            .output()
            .expect("run cairn"),
    );
    // Without deltas the second stores most of what the first did.
    assert!(
        stored(&second) * 4 < stored(&first),
        "second base backup stored {} bytes, the first {}",
        stored(&second),
        stored(&first)
    );
    let listed = env.json(["snapshots", "--tag", "postgres-base"]);
    let newest = &listed.as_array().unwrap()[1];
    assert_eq!(meta(newest, "pg.delta_depth"), Some("1"), "{newest}");
    let ls = env.run(["ls", "latest"]);
    assert_success(&ls);
    assert!(
        String::from_utf8_lossy(&ls.stdout).contains("postgres/base.tar.references"),
        "{}",
        String::from_utf8_lossy(&ls.stdout)
    );
    // The day's WAL, archived at level 1, was compressed again (SPEC §28.6).
    let r = &second["wal_recompressed"];
    assert!(r["files"].as_u64().unwrap() >= 1, "{second}");
    assert!(
        r["bytes_after"].as_u64().unwrap() < r["bytes_before"].as_u64().unwrap(),
        "{second}"
    );
    let final_numbers = pg.sql("postgres", NUMBERS);
    switch_and_wait_archived(&pg);

    // The first base backup recovers through the recompressed segments.
    let work = pg_dir(env.dir.path(), "restores");
    let first_id = first["snapshots"][0]["snapshot_id"].as_str().unwrap();
    let pgdata = restore_cluster(&env, &work, first_id, "first");
    let sock = pg_dir(&work, "first-sock");
    let server = Restored::start(&pg.bindir, &pgdata, &sock);
    assert_eq!(server.sql(NUMBERS), final_numbers);
    drop(server);

    assert_success(&env.run(["forget", "--keep-last", "1", "--tag", "postgres-base"]));
    assert_success(&env.run(["prune", "--grace", "0s"]));
    assert_eq!(
        env.json(["snapshots", "--tag", "postgres-base"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_success(&env.run(["check", "--read-data"]));

    let pgdata = restore_cluster(&env, &work, "latest", "delta");
    assert!(!pgdata.join("base.tar.references").exists());
    let sock = pg_dir(&work, "delta-sock");
    let server = Restored::start(&pg.bindir, &pgdata, &sock);
    assert_eq!(server.sql(NUMBERS), final_numbers);
}

/// A plan's postgres-pitr source takes a base backup tagged with the plan
/// and source, reports it in the metrics, and `cairn plan show` prints the
/// archive_command for the plan's repository.
#[test]
fn plan_source_postgres_pitr_backs_up_and_shows_its_settings() {
    let env = Env::init();
    let pg = archiving_server(&env);
    let pw = password_file(&env);
    let metrics = env.path("metrics.prom");
    let plan = env.path("pitr.toml");
    std::fs::write(
        &plan,
        format!(
            "version = 1\nstate_dir = {:?}\n[report]\nmetrics = {metrics:?}\n\
             [[repository]]\nname = \"main\"\npath = {:?}\npassword_file = {pw:?}\n\
             [[source]]\nname = \"db\"\ntype = \"postgres-pitr\"\ndsn = {:?}\nfast_checkpoint = true\nverify = true\n",
            env.path("state"),
            env.repo(),
            pg.dsn("postgres"),
        ),
    )
    .unwrap();
    let cairn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .env_remove("CAIRN_PASSWORD")
            .env_remove("CAIRN_REPOSITORY")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run cairn")
    };
    let out = cairn(&["run", plan.to_str().unwrap()]);
    assert_success(&out);
    let listed = env.json(["snapshots", "--tag", "postgres-base,plan:pitr,source:db"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(meta(&listed[0], "pg.stop_lsn").is_some(), "{:?}", listed[0]);
    // verify = true ran pitr-verify on the new base backup.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("state/last-report.json")).unwrap())
            .unwrap();
    assert_eq!(report["sources"][0]["verified"], true, "{report}");
    assert!(
        report["sources"][0]["pitr"]["wal"]["files"]
            .as_u64()
            .unwrap()
            >= 1,
        "{report}"
    );
    let m = std::fs::read_to_string(&metrics).unwrap();
    let labels = "{plan=\"pitr\",source=\"db\",repository=\"main\"}";
    for line in [
        format!("cairn_source_success{labels} 1"),
        format!("cairn_source_verified{labels} 1"),
        format!("cairn_pitr_archive_failed_count{labels} 0"),
        format!("cairn_pitr_archive_last_failed_timestamp_seconds{labels} 0"),
    ] {
        assert!(m.lines().any(|l| l == line), "{line} not in:\n{m}");
    }
    let value = |name: &str| -> f64 {
        let prefix = format!("{name}{labels} ");
        m.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name} in:\n{m}"))
            .parse()
            .unwrap()
    };
    assert!(value("cairn_pitr_wal_files") >= 1.0);
    assert!(value("cairn_pitr_wal_bytes") > 0.0);
    assert!(value("cairn_pitr_wal_newest_segment_timestamp_seconds") > 1.7e9);
    assert!(value("cairn_source_verify_duration_seconds") > 0.0);

    // A repository that holds a base backup but none of its WAL: no
    // restore can become consistent.
    let other = Env::init();
    json(&cairn_pg(
        &other,
        &["basebackup", "--dsn", &pg.dsn("postgres"), "--fast"],
    ));
    let nowal = other.path("nowal");
    let out = cairn_pg(
        &other,
        &[
            "restore-cluster",
            "latest",
            "--pgdata",
            nowal.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("lacks segment"), "{}", stderr(&out));
    assert!(!nowal.exists());

    let out = cairn(&["plan", "show", plan.to_str().unwrap()]);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("archive_command = '"))
        .unwrap_or_else(|| panic!("no archive_command: {text}"));
    assert!(line.ends_with(" pg archive-wal %p'"), "{line}");
    assert!(
        line.contains(&format!("-r {} ", env.repo().display())),
        "{line}"
    );
    assert!(
        line.contains(&format!("--password-file {} ", pw.display())),
        "{line}"
    );
    assert!(text.contains("archive_mode = on"), "{text}");
    assert!(text.contains("pg restore-wal %f %p'"), "{text}");
    let out = cairn(&["plan", "show", plan.to_str().unwrap(), "--source", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no source named \"nope\""),
        "{}",
        stderr(&out)
    );
}

/// A chain of deltas is bounded (SPEC §26.1): after three base backups
/// stored as deltas the next is compressed alone, and the one after that
/// starts a new chain; the newest still restores exactly.
#[test]
fn base_backup_chains_restart_after_three_deltas() {
    let env = Env::init();
    let pg = archiving_server(&env);
    check(
        &pgbench(&pg, &["-i", "-q", "-s", "1"])
            .output()
            .expect("pgbench -i"),
        "pgbench -i",
    );
    let dsn = pg.dsn("postgres");
    let mut depths = Vec::new();
    for day in 0..6 {
        if day > 0 {
            check(
                &pgbench(&pg, &["-c", "1", "-t", "200", "-n"])
                    .output()
                    .expect("pgbench"),
                "pgbench",
            );
        }
        json(&cairn_pg(&env, &["basebackup", "--dsn", &dsn, "--fast"]));
        let listed = env.json(["snapshots", "--tag", "postgres-base"]);
        let newest = listed.as_array().unwrap().last().unwrap().clone();
        depths.push(meta(&newest, "pg.delta_depth").map(str::to_string));
    }
    let want: Vec<Option<String>> = ["0", "1", "2", "3", "0", "1"]
        .iter()
        .map(|d| Some(d.to_string()))
        .collect();
    assert_eq!(depths, want);
    let final_numbers = pg.sql("postgres", NUMBERS);
    switch_and_wait_archived(&pg);
    assert_success(&env.run(["check", "--read-data"]));

    let work = pg_dir(env.dir.path(), "restores");
    let pgdata = restore_cluster(&env, &work, "latest", "newest");
    let sock = pg_dir(&work, "newest-sock");
    let server = Restored::start(&pg.bindir, &pgdata, &sock);
    assert_eq!(server.sql(NUMBERS), final_numbers);
}
