//! The scripting contract (docs/scripting.md): one JSON envelope for every
//! backup-like command, one error object on stderr, exit codes.

use serde_json::{Value, json};

use super::harness::{Env, stderr, write};
use super::pg::PgServer;
use super::qdrant::Api;
use super::qdrant_fake::{FakeQdrant, Knobs};
use super::redis::Server as RedisServer;

/// Fields every saved snapshot has, whatever made it.
const SNAPSHOT_FIELDS: [&str; 18] = [
    "snapshot_id",
    "parent",
    "paths",
    "files_new",
    "files_changed",
    "files_unmodified",
    "dirs_new",
    "dirs_changed",
    "dirs_unmodified",
    "bytes_read",
    "bytes_added",
    "bytes_added_packed",
    "total_files",
    "total_bytes",
    "duration_s",
    "warnings",
    "packs_resumed",
    "type",
];

/// `report` is `{"snapshots": [...], "failed": []}` and every snapshot has
/// every common field, with the contract's units.
fn assert_envelope(what: &str, report: &Value, kind: &str) {
    let obj = report
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {report}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["failed", "repository_warnings", "requests", "snapshots"],
        "{what}: {report}"
    );
    assert_eq!(report["failed"], json!([]), "{what}");
    assert_eq!(report["repository_warnings"], json!([]), "{what}");
    let snaps = report["snapshots"].as_array().expect("snapshots");
    assert!(!snaps.is_empty(), "{what}: no snapshot: {report}");
    for s in snaps {
        for f in SNAPSHOT_FIELDS {
            assert!(s.get(f).is_some(), "{what}: snapshot lacks {f}: {s}");
        }
        assert_eq!(s["type"], kind, "{what}");
        assert_eq!(s["snapshot_id"].as_str().map(str::len), Some(64), "{what}");
        assert!(
            s["paths"].as_array().is_some_and(|p| !p.is_empty()),
            "{what}"
        );
        for n in ["bytes_read", "bytes_added", "total_bytes", "total_files"] {
            assert!(s[n].is_u64(), "{what}: {n} is not an integer: {s}");
        }
        assert!(
            s["duration_s"].is_f64(),
            "{what}: duration_s is not seconds: {s}"
        );
        assert!(s.get("duration_ns").is_none(), "{what}");
    }
}

fn json_ok(env: &Env, args: &[&str], stdin: Option<&[u8]>) -> Value {
    let out = match stdin {
        Some(input) => env.run_with_stdin([&["--json"][..], args].concat(), input),
        None => env.cmd().arg("--json").args(args).output().expect("run"),
    };
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn every_backup_like_command_prints_the_same_envelope() {
    let env = Env::init();
    let src = env.path("src");
    write(&src.join("a.txt"), b"hello");

    let files = json_ok(&env, &["backup", src.to_str().unwrap()], None);
    assert_envelope("backup", &files, "files");
    // The same unit in the snapshot list: seconds, not the library's nanoseconds.
    let listed = env.snapshots();
    assert!(listed[0]["summary"]["duration_s"].is_f64(), "{}", listed[0]);
    assert!(
        listed[0]["summary"].get("duration_ns").is_none(),
        "{}",
        listed[0]
    );
    let stdin = json_ok(
        &env,
        &["backup", "--stdin", "--stdin-filename", "x.sql"],
        Some(b"data"),
    );
    assert_envelope("backup --stdin", &stdin, "stream");
    assert_eq!(stdin["snapshots"][0]["paths"], json!(["x.sql"]));
    let cmd = json_ok(
        &env,
        &["backup", "--stdin-from-command", "--", "echo", "hi"],
        None,
    );
    assert_envelope("backup --stdin-from-command", &cmd, "stream");

    let pg = PgServer::start();
    pg.sql("postgres", "CREATE DATABASE shop");
    let dsn = pg.dsn("postgres");
    let p = json_ok(
        &env,
        &["pg", "backup", "--dsn", &dsn, "--database", "shop"],
        None,
    );
    assert_envelope("pg backup", &p, "postgres");
    assert_eq!(p["snapshots"][1]["database"], "shop");
    drop(pg);

    let redis = RedisServer::start(&env.path("redis"));
    let r = json_ok(&env, &["redis", "backup", "--url", &redis.url()], None);
    assert_envelope("redis backup", &r, "redis");
    drop(redis);

    let fake = FakeQdrant::start(Knobs::default());
    let api = Api::new(&fake.url, None);
    api.create_collection("docs", 4);
    api.upsert("docs", 0..10, 4);
    let q = json_ok(
        &env,
        &["qdrant", "backup", "--url", &fake.url, "--all"],
        None,
    );
    assert_envelope("qdrant backup", &q, "qdrant");
    assert_eq!(q["snapshots"][0]["collection"], "docs");
}

/// Under `--json` a failure is one JSON object on stderr, with the exit
/// code the process returns.
#[test]
fn errors_are_json_objects_under_json() {
    let env = Env::init();
    let out = env
        .cmd()
        .env("CAIRN_PASSWORD", "wrong")
        .args(["--json", "snapshots"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(12));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    let line = err.lines().last().expect("a line on stderr");
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {err}"));
    assert_eq!(v["error"]["exit_code"], 12, "{v}");
    assert_eq!(v["error"]["kind"], "wrong_password", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("wrong password"),
        "{v}"
    );

    let missing = Env::empty();
    let out = missing
        .cmd()
        .args(["--json", "snapshots"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(10));
    let v: Value = serde_json::from_str(stderr(&out).trim()).expect("json");
    assert_eq!(v["error"]["kind"], "no_repository", "{v}");

    // Without --json the text line stays.
    let out = env
        .cmd()
        .env("CAIRN_PASSWORD", "wrong")
        .arg("snapshots")
        .output()
        .expect("run");
    assert!(
        stderr(&out).starts_with("cairn: error: "),
        "{}",
        stderr(&out)
    );
}

/// One unit for durations: `check` and `drill` print `duration_s` seconds,
/// not the library's nanoseconds next to them.
#[test]
fn check_and_drill_durations_are_seconds() {
    let env = Env::init();
    let src = env.path("src");
    write(&src.join("a.txt"), b"hello");
    env.ok(["backup", src.to_str().unwrap()]);
    for args in [&["check", "--read-data"][..], &["drill", "latest"]] {
        let v = json_ok(&env, args, None);
        assert!(v["duration_s"].is_f64(), "{args:?}: {v}");
        let text = v.to_string();
        assert!(
            !text.contains("duration_ns") && !text.contains("restore_ns"),
            "{args:?}: {v}"
        );
    }
}
