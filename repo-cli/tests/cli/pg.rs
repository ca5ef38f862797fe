//! `cairn pg`: backup, restore and verify against a real, throw-away
//! PostgreSQL server (initdb + pg_ctl as the unprivileged `postgres` user,
//! on a free loopback port, socket in its own directory).

use std::process::Output;

use super::harness::{Env, PASSWORD, assert_success, stderr};
pub(super) use super::pgserver::PgServer;

const TABLES: [&str; 3] = ["items", "orders", "notes"];

/// A database `shop` with several tables (one of 50k rows), a sequence, a
/// view, an index, bytea and jsonb columns, and a role with a grant.
fn make_shop(pg: &PgServer) {
    pg.sql("postgres", "CREATE DATABASE shop");
    pg.sql("postgres", "CREATE ROLE app_reader LOGIN");
    pg.sql(
        "shop",
        "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, payload bytea, doc jsonb);
         INSERT INTO items SELECT g, 'item ' || g, decode(md5(g::text), 'hex'),
             jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g % 7))
           FROM generate_series(1, 50000) g;
         CREATE TABLE orders (id bigint PRIMARY KEY, item_id bigint REFERENCES items(id), qty int);
         INSERT INTO orders SELECT g, (g * 7919) % 50000 + 1, g % 13 FROM generate_series(1, 2000) g;
         CREATE INDEX orders_item_idx ON orders(item_id);
         CREATE TABLE notes (id bigint PRIMARY KEY, body text);
         INSERT INTO notes VALUES (1, 'line one'), (2, E'tab\\there, quote '' and newline\\n');
         CREATE SEQUENCE ticket_seq;
         SELECT setval('ticket_seq', 42);
         CREATE VIEW big_orders AS SELECT o.id, i.name FROM orders o JOIN items i ON i.id = o.item_id WHERE o.qty > 10;
         GRANT SELECT ON items, big_orders TO app_reader;",
    );
}

/// Row count and content checksum of each table.
fn fingerprint(pg: &PgServer, db: &str) -> Vec<(String, String)> {
    TABLES
        .iter()
        .map(|t| {
            let v = pg.sql(
                db,
                &format!(
                    "SELECT count(*) || ' ' || md5(string_agg(t::text, ',' ORDER BY id)) FROM {t} t"
                ),
            );
            (t.to_string(), v)
        })
        .collect()
}

fn cairn_pg(env: &Env, args: &[&str]) -> Output {
    env.cmd()
        .arg("--json")
        .arg("pg")
        .args(args)
        .output()
        .expect("run cairn")
}

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

#[test]
fn pg_backup_restore_verify_round_trip() {
    let pg = PgServer::start();
    make_shop(&pg);
    let before = fingerprint(&pg, "shop");
    let env = Env::init();
    let admin = pg.dsn("postgres");

    let saved = json(&cairn_pg(
        &env,
        &[
            "backup",
            "--dsn",
            &admin,
            "--database",
            "shop",
            "--host",
            "db-primary",
        ],
    ));
    assert_eq!(saved["failed"], serde_json::json!([]), "{saved}");
    let saved = saved["snapshots"].as_array().expect("array");
    assert_eq!(saved.len(), 2, "globals + shop: {saved:?}");
    assert_eq!(saved[0]["database"], serde_json::Value::Null);
    assert_eq!(
        saved[0]["paths"],
        serde_json::json!(["postgres/globals.sql"])
    );
    assert_eq!(saved[1]["database"], "shop");
    assert_eq!(saved[1]["tables"], 3);
    let first_dump = saved[1]["bytes_read"].as_u64().unwrap();
    let db_snap_id = saved[1]["snapshot_id"].as_str().unwrap().to_string();

    // Metadata recorded in the snapshot.
    let snaps = env.snapshots();
    let db_snap = snaps
        .iter()
        .find(|s| {
            s["id"]
                .as_str()
                .is_some_and(|i| db_snap_id.starts_with(i) || i.starts_with(&db_snap_id))
        })
        .unwrap_or_else(|| panic!("snapshot {db_snap_id} not listed: {snaps:?}"));
    assert_eq!(meta(db_snap, "pg.database"), Some("shop"), "{db_snap}");
    // --host is recorded in the database and the globals snapshots.
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert!(snaps.iter().all(|s| s["host"] == "db-primary"), "{snaps:?}");
    assert_eq!(meta(db_snap, "pg.rowcount.public.items"), Some("50000"));
    assert_eq!(meta(db_snap, "pg.rowcount.public.orders"), Some("2000"));
    assert_eq!(meta(db_snap, "pg.rowcount.public.notes"), Some("2"));
    assert!(
        meta(db_snap, "pg.server_version").is_some_and(|v| v.starts_with("15") || !v.is_empty())
    );
    assert!(meta(db_snap, "pg.pg_dump_version").is_some());
    assert!(
        meta(db_snap, "pg.database_size")
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|n| n > 1_000_000)
    );
    assert!(
        db_snap["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "postgres")
    );

    // Drop everything, restore with roles, compare.
    pg.sql("postgres", "DROP DATABASE shop");
    pg.sql("postgres", "DROP ROLE app_reader");
    let restored = json(&cairn_pg(
        &env,
        &[
            "restore",
            "latest",
            "--dsn",
            &admin,
            "--create",
            "--globals",
        ],
    ));
    assert_eq!(restored["database"], "shop");
    assert_eq!(fingerprint(&pg, "shop"), before);
    assert_eq!(pg.sql("shop", "SELECT last_value FROM ticket_seq"), "42");
    assert_eq!(pg.sql("shop", "SELECT count(*) > 0 FROM big_orders"), "t");
    assert_eq!(
        pg.sql(
            "shop",
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_item_idx'"
        ),
        "1"
    );
    assert_eq!(
        pg.sql(
            "shop",
            "SELECT has_table_privilege('app_reader', 'items', 'SELECT')"
        ),
        "t"
    );
    assert_eq!(
        pg.sql("shop", "SELECT doc->>'n' FROM items WHERE id = 777"),
        "777"
    );

    // Parallel restore (--jobs 2) into another database: pg_restore -j
    // reads a private temporary file under --temp-dir, which is gone after
    // success and after failure. A wrapper records how pg_restore ran.
    let fake = env.path("jobsbin");
    std::fs::create_dir(&fake).unwrap();
    for p in ["psql", "pg_dump", "pg_dumpall"] {
        std::os::unix::fs::symlink(pg.bindir.join(p), fake.join(p)).unwrap();
    }
    let log = env.path("pg_restore.log");
    std::fs::write(
        fake.join("pg_restore"),
        format!(
            "#!/bin/sh\nfor a; do last=$a; done\n\
             {{ echo \"args: $*\"; [ -f \"$last\" ] && stat -c 'mode %a' \"$last\" && \
             stat -c 'dir mode %a' \"$(dirname \"$last\")\"; }} >> {log:?}\n\
             exec {:?} \"$@\"\n",
            pg.bindir.join("pg_restore")
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        fake.join("pg_restore"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let tmp = env.path("pgtmp");
    std::fs::create_dir(&tmp).unwrap();
    pg.sql("postgres", "CREATE DATABASE shop_par");
    let parallel = |db: &str| {
        env.cmd()
            .env("CAIRN_PG_BINDIR", &fake)
            .args(["--json", "pg", "restore", &db_snap_id, "--dsn", &admin])
            .args(["--database", db, "--jobs", "2", "--temp-dir"])
            .arg(&tmp)
            .output()
            .expect("run cairn")
    };
    let restored = json(&parallel("shop_par"));
    assert_eq!(restored["database"], "shop_par");
    assert_eq!(fingerprint(&pg, "shop_par"), before);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains(" -j 2 "), "{logged}");
    assert!(
        logged.contains(&format!("{}/cairn-pg-restore-", tmp.display())),
        "{logged}"
    );
    assert!(logged.contains("mode 600"), "{logged}");
    // Issue 12 item 10: the directory holding the dump is private too.
    assert!(logged.contains("dir mode 700"), "{logged}");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "temp left");
    let out = parallel("no_such_db");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("pg_restore"), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "temp left");
    pg.sql("postgres", "DROP DATABASE shop_par");

    // Verify passes and leaves no scratch database behind.
    let v = json(&cairn_pg(&env, &["verify", &db_snap_id, "--dsn", &admin]));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["tables_checked"], 3);
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'cairn_verify%'"
        ),
        "0"
    );

    // A snapshot of the same dump whose recorded count is wrong fails verify.
    let tampered = {
        let repo = repo_core::Repository::open(
            repo_core::LocalBackend::open(env.repo()),
            PASSWORD.as_bytes(),
            repo_core::OpenOptions::default(),
        )
        .expect("open repository");
        let snap = repo
            .find_snapshot(&db_snap_id, &repo_core::SnapshotFilter::default())
            .expect("snapshot");
        let dir = repo.load_tree(&snap.snapshot.tree).expect("root");
        let sub = dir
            .get(b"postgres")
            .and_then(|n| n.subtree)
            .expect("postgres dir");
        let node = repo
            .load_tree(&sub)
            .expect("tree")
            .get(b"shop.dump")
            .cloned()
            .expect("dump");
        let mut bytes = Vec::new();
        repo.dump_node(&node, &mut bytes).expect("dump");
        let mut b = repo
            .backup()
            .stream("postgres/shop.dump", std::io::Cursor::new(bytes))
            .tag("postgres");
        for (k, v) in &snap.snapshot.metadata {
            let v = if k == "pg.rowcount.public.orders" {
                "1999".to_string()
            } else {
                v.clone()
            };
            b = b.metadata(k, v);
        }
        b.run().expect("tampered backup").snapshot.id.to_hex()
    };
    let out = cairn_pg(&env, &["verify", &tampered, "--dsn", &admin]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ok"], false);
    assert_eq!(v["mismatches"][0]["table"], "public.orders");
    assert_eq!(v["mismatches"][0]["recorded"], 1999);
    assert_eq!(v["mismatches"][0]["restored"], 2000);

    // Dedup: append 1% rows of the same shape (smaller rows would fill the
    // free space left in every page, which scatters them through the dump),
    // back up again, measure what was added.
    pg.sql(
        "shop",
        "INSERT INTO items SELECT g, 'item ' || g, decode(md5(g::text), 'hex'),
             jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g % 7))
           FROM generate_series(50001, 50500) g",
    );
    let again = json(&cairn_pg(
        &env,
        &["backup", "--dsn", &admin, "--database", "shop"],
    ));
    let second = &again["snapshots"][1];
    let added = second["bytes_added"].as_u64().unwrap();
    let dump = second["bytes_read"].as_u64().unwrap();
    assert!(dump > first_dump);
    let frac = added as f64 / dump as f64;
    println!(
        "pg dedup: first dump {first_dump} B, second dump {dump} B after +1% rows, added {added} B = {:.1}% of the dump",
        frac * 100.0
    );
    assert!(frac < 0.15, "second backup added {added} of {dump} bytes");

    // In a plan with `verify = true`: the database snapshot (not the
    // globals one, which `pg verify` would refuse) is verified after the
    // backup, and the plan's host is recorded.
    std::fs::write(env.path("pw"), PASSWORD).unwrap();
    let plan = env.path("plan.toml");
    std::fs::write(
        &plan,
        format!(
            "version = 1\nhost = \"pg-host\"\nstate_dir = {:?}\n\
             [[repository]]\nname = \"r\"\npath = {:?}\npassword_file = {:?}\n\
             [[source]]\nname = \"db\"\ntype = \"postgres\"\ndsn = {admin:?}\ndatabases = [\"shop\"]\nverify = true\n",
            env.path("state"),
            env.repo(),
            env.path("pw")
        ),
    )
    .unwrap();
    let out = env
        .cmd()
        .env_remove("CAIRN_PASSWORD")
        .arg("--json")
        .arg("run")
        .arg(&plan)
        .output()
        .expect("run cairn");
    let report = json(&out);
    let x = &report["sources"][0];
    assert_eq!(
        (&x["status"], &x["verified"]),
        (&"ok".into(), &true.into()),
        "{x}"
    );
    assert_eq!(x["snapshot_ids"].as_array().unwrap().len(), 2, "{x}");
    let tagged: Vec<_> = env
        .snapshots()
        .into_iter()
        .filter(|s| {
            s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "source:db")
        })
        .collect();
    assert_eq!(tagged.len(), 2, "{tagged:?}");
    assert!(tagged.iter().all(|s| s["host"] == "pg-host"), "{tagged:?}");
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'cairn_verify%'"
        ),
        "0"
    );
}

#[test]
fn pg_backup_fails_without_snapshot_when_pg_dump_fails() {
    let pg = PgServer::start();
    pg.sql("postgres", "CREATE DATABASE shop");
    pg.sql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)",
    );
    let env = Env::init();
    let admin = pg.dsn("postgres");

    // A database that does not exist: refused before anything is written.
    let out = cairn_pg(&env, &["backup", "--dsn", &admin, "--database", "nosuchdb"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuchdb"));
    assert!(env.snapshots().is_empty());

    // A pg_dump that writes part of a dump and then fails: no database
    // snapshot (the separate globals snapshot is saved before).
    let fake = env.path("fakebin");
    std::fs::create_dir(&fake).unwrap();
    for p in ["psql", "pg_dumpall", "pg_restore"] {
        std::os::unix::fs::symlink(pg.bindir.join(p), fake.join(p)).unwrap();
    }
    let real = pg.bindir.join("pg_dump");
    std::fs::write(
        fake.join("pg_dump"),
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && exec {0} --version\n{0} \"$@\" | head -c 3000\nexit 1\n",
            real.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(fake.join("pg_dump"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = env
        .cmd()
        .env("CAIRN_PG_BINDIR", &fake)
        .args(["pg", "backup", "--dsn", &admin, "--database", "shop"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pg_dump") && err.contains("no snapshot"),
        "{err}"
    );
    let snaps = env.snapshots();
    assert!(
        snaps.iter().all(|s| !s["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "postgres")),
        "{snaps:?}"
    );
}

/// Issue 12.9: a password in CAIRN_PG_DSN, --dsn-file or --dsn reaches
/// psql, pg_dump, pg_dumpall and pg_restore only as PGPASSWORD in their
/// environment, never in their arguments (wrappers record every argv);
/// scram authentication proves it arrives. --dsn with a password warns.
#[test]
fn pg_passwords_stay_out_of_command_lines() {
    const SECRET: &str = "pw-Xq7-never-in-argv";
    let pg = PgServer::start();
    pg.sql(
        "postgres",
        &format!("CREATE ROLE vault LOGIN SUPERUSER PASSWORD '{SECRET}'"),
    );
    pg.sql("postgres", "CREATE DATABASE small");
    pg.sql("postgres", "CREATE DATABASE small_copy");
    pg.sql(
        "small",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)",
    );
    let hba = pg.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all vault 127.0.0.1/32 scram-sha-256\n{old}"),
    )
    .unwrap();
    pg.sql("postgres", "SELECT pg_reload_conf()");

    let env = Env::init();
    let log = env.path("argv.log");
    let bin = env.path("bin");
    std::fs::create_dir(&bin).unwrap();
    for p in ["psql", "pg_dump", "pg_dumpall", "pg_restore"] {
        std::fs::write(
            bin.join(p),
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$0 $*\" >> {log}\n\
                 [ -n \"$PGPASSWORD\" ] && echo \"$0 has PGPASSWORD\" >> {log}\n\
                 exec {real} \"$@\"\n",
                log = log.display(),
                real = pg.bindir.join(p).display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join(p), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let url = |pw: &str| format!("postgresql://vault:{pw}@127.0.0.1:{}/postgres", pg.port);
    let run = |dsn_env: Option<&str>, args: &[&str]| {
        let mut c = env.cmd();
        c.env("CAIRN_PG_BINDIR", &bin)
            .arg("--json")
            .arg("pg")
            .args(args);
        if let Some(d) = dsn_env {
            c.env("CAIRN_PG_DSN", d);
        }
        c.output().unwrap()
    };

    // The role really needs its password.
    let out = run(Some(&url("wrong")), &["backup", "--database", "small"]);
    assert!(!out.status.success(), "scram must reject a wrong password");

    let out = run(Some(&url(SECRET)), &["backup", "--database", "small"]);
    assert_success(&out);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));

    let dsn_file = env.path("dsn");
    std::fs::write(
        &dsn_file,
        format!(
            "host=127.0.0.1 port={} user=vault password='{SECRET}' dbname=postgres\n",
            pg.port
        ),
    )
    .unwrap();
    let out = run(
        None,
        &[
            "restore",
            "latest",
            "--dsn-file",
            dsn_file.to_str().unwrap(),
            "--database",
            "small_copy",
        ],
    );
    assert_success(&out);
    assert_eq!(pg.sql("small_copy", "SELECT count(*) FROM t"), "10");

    // On the command line it works, and warns.
    let out = run(None, &["verify", "latest", "--dsn", &url(SECRET)]);
    assert_success(&out);
    assert!(
        stderr(&out).contains("visible to other local users"),
        "{}",
        stderr(&out)
    );

    let log = std::fs::read_to_string(&log).unwrap();
    for p in ["psql", "pg_dump", "pg_dumpall", "pg_restore"] {
        assert!(
            log.contains(&format!("bin/{p} has PGPASSWORD")),
            "{p} did not run with PGPASSWORD:\n{log}"
        );
    }
    assert!(!log.contains(SECRET), "password in a command line:\n{log}");
}
