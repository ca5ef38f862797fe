//! `cairn pg` as managed services run it (issue 15): a role without
//! SUPERUSER that owns its database, globals without passwords, databases
//! it may not read, restore and verify on a second server, a new name for
//! `--create`, a damaged repository named as such, and a plan's drill of
//! every database.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

use super::harness::{Env, PASSWORD, assert_success, stderr};
use super::pgserver::{PgServer, check};

/// `postgresql://ROLE@127.0.0.1:PORT/DB` (trust authentication).
fn dsn_as(pg: &PgServer, role: &str, db: &str) -> String {
    format!("postgresql://{role}@127.0.0.1:{}/{db}", pg.port)
}

/// Runs SQL as `role`.
fn sql_as(pg: &PgServer, role: &str, db: &str, sql: &str) -> String {
    let out = Command::new(pg.bindir.join("psql"))
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(dsn_as(pg, role, db))
        .arg("-c")
        .arg(sql)
        .output()
        .expect("run psql");
    check(&out, &format!("psql as {role}: {sql}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn cairn_pg(env: &Env, args: &[&str]) -> Output {
    env.cmd()
        .arg("--json")
        .arg("pg")
        .args(args)
        .output()
        .expect("run cairn")
}

/// The JSON on stdout, whatever the exit code.
fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

fn meta<'a>(snap: &'a Value, key: &str) -> Option<&'a str> {
    snap["metadata"][key].as_str().or_else(|| {
        snap["metadata"]
            .as_array()?
            .iter()
            .find(|kv| kv[0] == key)
            .and_then(|kv| kv[1].as_str())
    })
}

fn snapshot<'a>(env_snaps: &'a [Value], id: &str) -> &'a Value {
    env_snaps
        .iter()
        .find(|s| s["id"].as_str().is_some_and(|i| id.starts_with(i)))
        .unwrap_or_else(|| panic!("snapshot {id} not listed"))
}

fn has_db(pg: &PgServer, db: &str) -> bool {
    pg.sql(
        "postgres",
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{db}'"),
    ) == "1"
}

/// Row count and checksum of shop's tables.
fn fingerprint(pg: &PgServer, db: &str) -> Vec<String> {
    ["items", "notes"]
        .iter()
        .map(|t| {
            pg.sql(
                db,
                &format!(
                    "SELECT count(*) || ' ' || md5(string_agg(t::text, ',' ORDER BY id)) FROM {t} t"
                ),
            )
        })
        .collect()
}

/// `app`: LOGIN with a password, no SUPERUSER, no CREATEDB, owns `shop`.
/// `locked`: app may connect but not read its table. `secret`: no CONNECT
/// for app.
fn managed_server() -> PgServer {
    let pg = PgServer::start();
    pg.sql(
        "postgres",
        "CREATE ROLE app LOGIN PASSWORD 'app-secret-pw' NOSUPERUSER NOCREATEDB",
    );
    pg.sql("postgres", "CREATE DATABASE shop OWNER app");
    sql_as(
        &pg,
        "app",
        "shop",
        "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, doc jsonb);
         INSERT INTO items SELECT g, 'item ' || g, jsonb_build_object('n', g)
           FROM generate_series(1, 5000) g;
         CREATE TABLE notes (id bigint PRIMARY KEY, body text);
         INSERT INTO notes VALUES (1, 'one'), (2, 'two');",
    );
    pg.sql("postgres", "CREATE DATABASE locked");
    pg.sql(
        "locked",
        "CREATE TABLE hidden (id int); INSERT INTO hidden VALUES (1)",
    );
    pg.sql("postgres", "CREATE DATABASE secret");
    pg.sql("postgres", "REVOKE CONNECT ON DATABASE secret FROM PUBLIC");
    pg
}

/// Issue 15's proof "Non-superuser backup and restore round trip; restore
/// on a second server", with the globals modes, per-database failures,
/// `--database`/`--path` picking a dump, `--create` under a new name and
/// the drop of a database whose `--create` restore failed.
#[test]
fn pg_non_superuser_round_trip_and_second_server() {
    let pg = managed_server();
    let before = fingerprint(&pg, "shop");
    let env = Env::init();
    let app = dsn_as(&pg, "app", "postgres");

    // --globals auto: pg_authid is out of reach, the roles are saved
    // without passwords, with a warning; a database the role cannot read
    // is a failure of its own, the other is saved; exit 1.
    let out = cairn_pg(
        &env,
        &[
            "backup",
            "--dsn",
            &app,
            "--database",
            "shop",
            "--database",
            "locked",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("pg_authid") && err.contains("without their passwords"),
        "{err}"
    );
    let v = stdout_json(&out);
    let saved = v["snapshots"].as_array().expect("snapshots");
    assert_eq!(saved.len(), 2, "{v}");
    assert_eq!(saved[0]["database"], Value::Null, "{v}");
    assert_eq!(saved[1]["database"], "shop", "{v}");
    assert_eq!(v["failed"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["failed"][0]["source"], "locked", "{v}");
    let why = v["failed"][0]["error"].as_str().unwrap();
    assert!(why.contains("permission denied"), "{why}");
    assert!(
        err.contains("incomplete") && err.contains("locked"),
        "{err}"
    );
    let snaps = env.snapshots();
    let globals = snapshot(&snaps, saved[0]["snapshot_id"].as_str().unwrap());
    assert_eq!(
        meta(globals, "pg.globals"),
        Some("no-passwords"),
        "{globals}"
    );
    let shop = snapshot(&snaps, saved[1]["snapshot_id"].as_str().unwrap());
    // Debian's `15.18 (Debian 15.18-0+deb12u1)` is recorded as `15.18`.
    let v_dump = meta(shop, "pg.pg_dump_version").expect("pg_dump_version");
    assert!(
        !v_dump.is_empty() && v_dump.chars().all(|c| c.is_ascii_digit() || c == '.'),
        "{v_dump}"
    );
    assert_eq!(meta(shop, "pg.encoding"), Some("UTF8"), "{shop}");
    let sql = env.ok([
        "dump",
        saved[0]["snapshot_id"].as_str().unwrap(),
        "postgres/globals.sql",
    ]);
    let sql = String::from_utf8_lossy(&sql.stdout);
    assert!(sql.contains("CREATE ROLE app"), "{sql}");
    assert!(!sql.contains("SCRAM-SHA-256"), "{sql}");

    // A second server without the role `app`: a --create restore fails
    // on `OWNER TO app` and the database it created is dropped again,
    // under the dumped name (pg_restore --create) and under a new one.
    let pg2 = PgServer::start();
    let admin2 = pg2.dsn("postgres");
    for extra in [&[][..], &["--database", "shop_new"][..]] {
        let mut args = vec!["restore", "latest", "--dsn", &admin2, "--create"];
        args.extend_from_slice(extra);
        let out = cairn_pg(&env, &args);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("dropped again"), "{err}");
        assert!(!has_db(&pg2, "shop"), "half-made shop left: {err}");
        assert!(!has_db(&pg2, "shop_new"), "half-made shop_new left: {err}");
    }
    // Both failed midway, on the missing owner, after creating the database.
    let log = std::fs::read_to_string(pg2.dir().join("log")).unwrap();
    assert_eq!(
        log.matches("role \"app\" does not exist").count(),
        2,
        "{log}"
    );
    // With the roles (saved without passwords) first, it restores there.
    let out = cairn_pg(
        &env,
        &[
            "restore",
            "latest",
            "--dsn",
            &admin2,
            "--create",
            "--globals",
            "--database",
            "shop",
        ],
    );
    assert_success(&out);
    assert!(
        stderr(&out).contains("without their passwords"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fingerprint(&pg2, "shop"), before);
    assert_eq!(
        pg2.sql(
            "postgres",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shop'"
        ),
        "app"
    );
    assert_eq!(
        pg2.sql(
            "postgres",
            "SELECT rolsuper::text || ' ' || (rolpassword IS NULL)::text FROM pg_authid WHERE rolname = 'app'"
        ),
        "false true"
    );

    // Verify on the second server: app may not create databases on the
    // first, so only --scratch-dsn can make this pass.
    let out = cairn_pg(
        &env,
        &["verify", "latest", "--dsn", &app, "--scratch-dsn", &admin2],
    );
    let v = stdout_json(&out);
    assert_success(&out);
    assert_eq!(
        (v["ok"].clone(), v["database"].clone()),
        (true.into(), "shop".into())
    );
    let out = cairn_pg(&env, &["verify", "latest", "--dsn", &app]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("scratch database"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        pg2.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'cairn_verify%'"
        ),
        "0"
    );

    // The same from a plan: `scratch_dsn` verifies on the second server,
    // `globals` is passed on (no warning: no-passwords was asked for).
    std::fs::write(env.path("pw"), PASSWORD).unwrap();
    let plan = env.path("plan.toml");
    std::fs::write(
        &plan,
        format!(
            "version = 1\nstate_dir = {:?}\n\
             [[repository]]\nname = \"r\"\npath = {:?}\npassword_file = {:?}\n\
             [[source]]\nname = \"db\"\ntype = \"postgres\"\ndsn = {app:?}\n\
             databases = [\"shop\"]\nverify = true\nscratch_dsn = {admin2:?}\n\
             globals = \"no-passwords\"\n",
            env.path("state"),
            env.repo(),
            env.path("pw")
        ),
    )
    .unwrap();
    let out = env
        .cmd()
        .env_remove("CAIRN_PASSWORD")
        .args(["run", "--dry-run"])
        .arg(&plan)
        .output()
        .expect("run cairn");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("CAIRN_PG_SCRATCH_DSN={admin2}"))
                && l.contains("pg verify")),
        "{text}"
    );
    assert!(text.contains("--globals no-passwords"), "{text}");
    let out = env
        .cmd()
        .env_remove("CAIRN_PASSWORD")
        .args(["--json", "run"])
        .arg(&plan)
        .output()
        .expect("run cairn");
    let r = stdout_json(&out);
    assert_success(&out);
    let x = &r["sources"][0];
    assert_eq!(
        (&x["status"], &x["verified"]),
        (&"ok".into(), &true.into()),
        "{x}"
    );
    assert!(
        !x["stderr"].as_str().unwrap_or("").contains("warning"),
        "{x}"
    );
    let snaps = env.snapshots();
    let g = snapshot(&snaps, x["snapshot_ids"][0].as_str().unwrap());
    assert_eq!(meta(g, "pg.globals"), Some("no-passwords"), "{g}");

    // The non-superuser restores on its own server under a new name.
    pg.sql("postgres", "ALTER ROLE app CREATEDB");
    let out = cairn_pg(
        &env,
        &[
            "restore",
            "latest",
            "--dsn",
            &app,
            "--create",
            "--database",
            "shop_copy",
        ],
    );
    let v = stdout_json(&out);
    assert_success(&out);
    assert_eq!(v["database"], "shop_copy", "{v}");
    assert_eq!(v["dumped_database"], "shop", "{v}");
    assert_eq!(fingerprint(&pg, "shop_copy"), before);
    // --create refuses an existing database rather than mixing into it.
    let out = cairn_pg(
        &env,
        &[
            "restore",
            "latest",
            "--dsn",
            &app,
            "--create",
            "--database",
            "shop_copy",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("exists already"), "{}", stderr(&out));
    assert_eq!(fingerprint(&pg, "shop_copy"), before);

    // --globals full insists: the globals fail, the database is saved.
    let out = cairn_pg(
        &env,
        &[
            "backup",
            "--dsn",
            &app,
            "--database",
            "shop",
            "--globals",
            "full",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v = stdout_json(&out);
    assert_eq!(v["failed"][0]["source"], "globals", "{v}");
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["snapshots"][0]["database"], "shop", "{v}");
    // --globals skip: no globals snapshot, no failure.
    let out = cairn_pg(
        &env,
        &[
            "backup",
            "--dsn",
            &app,
            "--database",
            "shop",
            "--globals",
            "skip",
        ],
    );
    assert_success(&out);
    let v = stdout_json(&out);
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["failed"], serde_json::json!([]), "{v}");

    // --all as app: `secret` (no CONNECT) is skipped with a warning,
    // `locked` fails, `postgres` and `shop` are saved.
    let out = cairn_pg(&env, &["backup", "--dsn", &app, "--all"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("\"secret\" skipped") && err.contains("CONNECT"),
        "{err}"
    );
    let v = stdout_json(&out);
    let dbs: Vec<&str> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["database"].as_str())
        .collect();
    assert_eq!(dbs, ["postgres", "shop", "shop_copy"], "{v}");
    let failed: Vec<&str> = v["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["source"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["locked"], "{v}");

    // `latest` now means three databases: refused without a pick.
    let out = cairn_pg(&env, &["verify", "latest", "--dsn", &app]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("--database") && err.contains("shop_copy"),
        "{err}"
    );
    let out = cairn_pg(
        &env,
        &[
            "restore",
            "latest",
            "--dsn",
            &app,
            "--create",
            "--database",
            "fresh",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(!has_db(&pg, "fresh"));
    // Picked by --database (verify) and by --path (restore into a new name).
    let v = stdout_json(&cairn_pg(
        &env,
        &["verify", "latest", "--dsn", &app, "--database", "shop"],
    ));
    assert_eq!(
        (v["ok"].clone(), v["database"].clone()),
        (true.into(), "shop".into())
    );
    let out = cairn_pg(
        &env,
        &[
            "restore",
            "latest",
            "--dsn",
            &app,
            "--path",
            "postgres/shop.dump",
            "--create",
            "--database",
            "fresh",
        ],
    );
    assert_success(&out);
    assert_eq!(stdout_json(&out)["dumped_database"], "shop");
    assert_eq!(fingerprint(&pg, "fresh"), before);
    // `--database` of restore picks that database's dump when there is one.
    pg.sql("shop_copy", "DELETE FROM notes");
    let out = cairn_pg(
        &env,
        &[
            "restore",
            "latest",
            "--dsn",
            &app,
            "--database",
            "shop_copy",
            "--clean",
        ],
    );
    assert_success(&out);
    assert_eq!(stdout_json(&out)["dumped_database"], "shop_copy");
    assert_eq!(fingerprint(&pg, "shop_copy"), before);
}

/// Every data pack file of the repository, largest first.
fn packs(env: &Env) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = Vec::new();
    for sub in std::fs::read_dir(env.repo().join("data")).expect("data dir") {
        for f in std::fs::read_dir(sub.expect("entry").path()).expect("subdir") {
            v.push(f.expect("entry").path());
        }
    }
    v.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).expect("meta").len()));
    v
}

/// A damaged pack is what `pg restore` and `pg verify` report (the pack
/// named), not pg_restore's complaint about the stream cut short; the
/// database a failed `--create` made is dropped.
#[test]
fn pg_restore_names_the_damaged_pack() {
    let pg = PgServer::start();
    pg.sql("postgres", "CREATE DATABASE big");
    pg.sql(
        "big",
        "CREATE TABLE t (id bigint PRIMARY KEY, body text);
         INSERT INTO t SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 60000) g",
    );
    let env = Env::init();
    let admin = pg.dsn("postgres");
    assert_success(&cairn_pg(
        &env,
        &["backup", "--dsn", &admin, "--database", "big"],
    ));
    let victim = packs(&env).remove(0);
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&victim, &bytes).unwrap();

    for (args, what) in [
        (
            &["restore", "latest", "--create", "--database", "big_copy"][..],
            "restore",
        ),
        (
            &[
                "restore",
                "latest",
                "--create",
                "--database",
                "big_par",
                "--jobs",
                "2",
            ][..],
            "restore -j",
        ),
        (&["verify", "latest"][..], "verify"),
    ] {
        let out = env
            .cmd()
            .args(["pg"])
            .args(args)
            .args(["--dsn", &admin])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        let err = stderr(&out);
        let first = err
            .lines()
            .find(|l| l.starts_with("cairn: error"))
            .unwrap_or("");
        assert!(
            first.contains("repository") && first.contains(&name[..8]),
            "{what}: the error must name the pack {name}:\n{err}"
        );
        assert!(
            !first.contains("too short") && !first.starts_with("cairn: error: pg_restore"),
            "{what}: {err}"
        );
    }
    assert!(!has_db(&pg, "big_copy"));
    assert!(!has_db(&pg, "big_par"));
    // A missing pack likewise.
    std::fs::remove_file(&victim).unwrap();
    let out = env
        .cmd()
        .args([
            "pg",
            "restore",
            "latest",
            "--create",
            "--database",
            "big_copy",
        ])
        .args(["--dsn", &admin])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let first = err
        .lines()
        .find(|l| l.starts_with("cairn: error"))
        .unwrap_or("");
    assert!(
        first.contains("repository") && first.contains(&name[..8]),
        "missing pack {name} not named:\n{err}"
    );
    assert!(!has_db(&pg, "big_copy"));
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'cairn_verify%'"
        ),
        "0"
    );
}

/// A plan's drill of a postgres source with `all = true` drills the
/// snapshot of every database, not only the newest one: the dump of
/// `alpha` references chunks of a pack damaged before the run (saved by an
/// earlier backup, deduplicated), so only a drill of `alpha` fails.
#[test]
fn plan_drill_covers_every_database() {
    let pg = PgServer::start();
    for db in ["alpha", "zeta"] {
        pg.sql("postgres", &format!("CREATE DATABASE {db}"));
    }
    pg.sql(
        "alpha",
        "CREATE TABLE t (id bigint PRIMARY KEY, body text);
         INSERT INTO t SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 40000) g",
    );
    pg.sql(
        "zeta",
        "CREATE TABLE z (id int PRIMARY KEY); INSERT INTO z SELECT generate_series(1, 10)",
    );
    let env = Env::init();
    let admin = pg.dsn("postgres");
    std::fs::write(env.path("pw"), PASSWORD).unwrap();
    let plan = env.path("plan.toml");
    std::fs::write(
        &plan,
        format!(
            "version = 1\nstate_dir = {:?}\n\
             [[repository]]\nname = \"r\"\npath = {:?}\npassword_file = {:?}\n\
             [drill]\nevery = \"1s\"\n\
             [[source]]\nname = \"db\"\ntype = \"postgres\"\ndsn = {admin:?}\nall = true\n",
            env.path("state"),
            env.repo(),
            env.path("pw")
        ),
    )
    .unwrap();
    let run = || {
        env.cmd()
            .env_remove("CAIRN_PASSWORD")
            .args(["--json", "run"])
            .arg(&plan)
            .output()
            .expect("run cairn")
    };
    let out = run();
    assert_success(&out);
    let r = stdout_json(&out);
    let drill = &r["repositories"][0]["drill"];
    assert_eq!(drill["status"], "ok", "{r}");
    assert_eq!(drill["detail"], "drilled db", "{r}");

    // Damage the pack holding alpha's rows (the largest), then run again:
    // alpha's new dump shares those chunks.
    let victim = packs(&env).remove(0);
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&victim, &bytes).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = run();
    let r = stdout_json(&out);
    let drill = &r["repositories"][0]["drill"];
    assert_eq!(drill["status"], "failed", "{r}");
    let snaps = env.snapshots();
    let alpha_ids: Vec<&str> = snaps
        .iter()
        .filter(|s| meta(s, "pg.database") == Some("alpha"))
        .filter_map(|s| s["id"].as_str())
        .collect();
    let error = drill["error"].as_str().unwrap_or("");
    assert!(
        alpha_ids.iter().any(|id| error.contains(&id[..8])),
        "the drill must name alpha's snapshot ({alpha_ids:?}): {error}"
    );
}
