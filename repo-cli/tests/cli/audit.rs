//! The audit trail (SPEC §31): one record per audited command with the
//! right fields and no secrets; `audit verify` names removed, altered and
//! swapped records, with or without the password; signed reports.

use std::fs;
use std::path::Path;

use serde_json::Value;

use super::harness::{Env, PASSWORD, assert_success, stderr, write};
use super::qdrant::Api;
use super::qdrant_fake::{FakeQdrant, Knobs};

const WEAK: [&str; 4] = ["--kdf-memory", "64", "--kdf-iterations", "1"];
const DSN_SECRET: &str = "dsn-pw-hunter2";
const API_SECRET: &str = "qdrant-api-s3cret";
const REDIS_SECRET: &str = "redis-pw-letmein";
const NEW_PASSWORD: &str = "second key password";

/// The records, oldest first, as `audit --json` prints them.
fn records(env: &Env) -> Vec<Value> {
    env.json(["audit"]).as_array().expect("array").clone()
}

/// Every byte under `dir`, concatenated.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(all_bytes(&e.path()));
        } else if t.is_file() {
            out.extend(fs::read(e.path()).unwrap());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Exit code and all output of `cairn ARGS`.
fn run(env: &Env, args: &[&str]) -> (Option<i32>, String) {
    let out = env.run(args);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    (out.status.code(), text)
}

#[test]
fn every_audited_command_leaves_one_record_and_no_secret() {
    let env = Env::init();
    write(&env.path("src/a.txt"), b"alpha\n");
    write(&env.path("src/b.txt"), b"beta\n");
    let src = env.path("src").display().to_string();
    env.ok(["backup", &src]);
    let first_id = env.snapshots()[0]["id"].as_str().unwrap().to_string();
    write(&env.path("src/c.txt"), b"gamma\n");
    env.ok(["backup", &src, "--tag", "second"]);
    // Not audited: they neither change the repository nor read data out.
    env.ok(["snapshots"]);
    env.ok(["ls", "latest"]);
    env.ok(["stats"]);
    let target = env.path("restored").display().to_string();
    env.ok(["restore", "latest", "--target", &target]);
    env.ok(["dump", "latest", &format!("{src}/a.txt")]);
    env.ok(["check"]);
    env.ok(["drill", "latest"]);
    let pwfile = env.path("newpw");
    write(&pwfile, format!("{NEW_PASSWORD}\n").as_bytes());
    let pwfile = pwfile.display().to_string();
    let added = env.json([&["key", "add", "--new-password-file", &pwfile][..], &WEAK].concat());
    let added_id = added["id"].as_str().unwrap_or_default().to_string();
    env.ok(["key", "remove", &added_id]);
    let oldest = first_id.clone();
    env.ok(["forget", "--keep-last", "1"]);
    env.ok(["prune"]);
    env.ok(["repair", "index"]);
    // Key rotation: a new epoch, everything re-sealed, the old one retired.
    env.ok(["key", "rotate"]);
    env.ok(["rekey", "--grace", "0"]);
    env.ok(["key", "retire", "0"]);

    // A second repository to copy from.
    let other = Env::init();
    write(&other.path("o/x"), b"from elsewhere\n");
    other.ok(["backup", &other.path("o").display().to_string()]);
    let from_pw = env.path("frompw");
    write(&from_pw, format!("{PASSWORD}\n").as_bytes());
    env.ok([
        "copy",
        "--from-repo",
        &other.repo().display().to_string(),
        "--from-password-file",
        &from_pw.display().to_string(),
    ]);

    // Exporters: Qdrant against the fake server, with an API key on the
    // command line; PostgreSQL and Redis restores that fail (no such
    // snapshots) with passwords in their URLs.
    let fake = FakeQdrant::start(Knobs {
        api_key: Some(API_SECRET.into()),
        ..Knobs::default()
    });
    let api = Api::new(&fake.url, Some(API_SECRET));
    api.create_collection("docs", 4);
    api.upsert("docs", 0..20, 4);
    let q = ["--url", fake.url.as_str(), "--api-key", API_SECRET];
    env.ok([&["qdrant", "backup", "--collection", "docs"][..], &q].concat());
    env.ok([&["qdrant", "verify", "latest"][..], &q].concat());
    env.ok([
        &["qdrant", "restore", "latest", "--collection", "docs2"][..],
        &q,
    ]
    .concat());
    let dsn = format!("postgresql://app:{DSN_SECRET}@127.0.0.1:1/app");
    let (code, _) = run(&env, &["pg", "restore", "latest", "--dsn", &dsn]);
    assert_eq!(code, Some(1));
    let url = format!("redis://:{REDIS_SECRET}@127.0.0.1:1");
    let (code, _) = run(&env, &["redis", "restore", "latest", "--url", &url]);
    assert_eq!(code, Some(1));
    // A failure is recorded with its message and exit code.
    let (code, _) = run(&env, &["restore", "ffffffff", "--target", &target]);
    assert_eq!(code, Some(1));

    let recs = records(&env);
    let commands: Vec<&str> = recs
        .iter()
        .map(|r| r["command"].as_str().unwrap())
        .collect();
    assert_eq!(
        commands,
        [
            "init",
            "backup",
            "backup",
            "restore",
            "dump",
            "check",
            "drill",
            "key add",
            "key remove",
            "forget",
            "prune",
            "repair",
            "key rotate",
            "rekey",
            "key retire",
            "copy",
            "qdrant backup",
            "qdrant verify",
            "qdrant restore",
            "pg restore",
            "redis restore",
            "restore",
        ]
    );
    let by = |i: usize| &recs[i];
    for (i, r) in recs.iter().enumerate() {
        let failed = i >= 19;
        assert_eq!(r["outcome"], if failed { "error" } else { "ok" }, "{r}");
        assert_eq!(r["exit_code"], if failed { 1 } else { 0 }, "{r}");
        assert_eq!(r["error"].is_string(), failed, "{r}");
        assert!(r["host"].as_str().is_some_and(|h| !h.is_empty()));
        assert!(r["user"].as_str().is_some_and(|u| !u.is_empty()));
        // Each names the heads before it: a chain of one parent each.
        let parents = r["parents"].as_array().unwrap();
        if i == 0 {
            assert!(parents.is_empty());
        } else {
            assert_eq!(parents, &vec![recs[i - 1]["id"].clone()], "{r}");
        }
    }
    assert_eq!(by(0)["created"]["config"], 1);
    assert_eq!(by(0)["created"]["key"], 1);
    assert_eq!(by(1)["created"]["snapshot"], 1);
    assert!(by(1)["created"]["pack"].as_u64().unwrap() >= 1);
    assert_eq!(by(1)["snapshots_created"], serde_json::json!([first_id]));
    assert_eq!(
        by(3)["created"],
        serde_json::json!({}),
        "restore writes nothing"
    );
    assert_eq!(by(7)["created"]["key"], 1);
    assert_eq!(by(8)["deleted"]["key"], 1);
    assert_eq!(by(9)["deleted"]["snapshot"], 1);
    assert_eq!(by(9)["snapshots_deleted"], serde_json::json!([oldest]));
    assert_eq!(by(12)["created"]["config"], 1, "rotate re-seals the config");
    assert!(by(12)["created"]["epoch grant"].as_u64().unwrap() >= 1);
    assert!(by(13)["created"]["pack"].as_u64().unwrap() >= 1, "rekey");
    assert_eq!(by(14)["created"]["config"], 1, "retire rewrites the config");
    assert_eq!(by(15)["created"]["snapshot"], 1);
    assert_eq!(by(16)["created"]["snapshot"], 1);
    assert!(by(21)["error"].as_str().unwrap().contains("ffffffff"));
    assert!(
        by(1)["args"]
            .as_array()
            .unwrap()
            .contains(&Value::from(src.as_str()))
    );

    // No secret in the records, decrypted, nor anywhere in the repository
    // or the cache.
    let listed = env.run(["--json", "-v", "audit"]).stdout;
    assert!(contains(&listed, "***"), "the redaction marker shows");
    let raw = [all_bytes(&env.repo()), all_bytes(&env.path("cache"))].concat();
    for secret in [DSN_SECRET, API_SECRET, REDIS_SECRET, PASSWORD, NEW_PASSWORD] {
        assert!(!contains(&listed, secret), "{secret} in the records");
        assert!(!contains(&raw, secret), "{secret} in the repository");
    }
    let pg = by(19)["args"].to_string();
    assert!(pg.contains("postgresql://app:***@127.0.0.1:1/app"), "{pg}");
    let verified = env.ok(["audit", "verify"]);
    assert_success(&verified);
}

/// An environment with five records and a snapshot anchoring the fourth.
fn five_records() -> (Env, Vec<String>) {
    let env = Env::init();
    write(&env.path("s/f"), b"x\n");
    let s = env.path("s").display().to_string();
    env.ok(["backup", &s]);
    env.ok(["check"]);
    env.ok(["backup", &s]);
    env.ok(["check"]);
    let ids = records(&env)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    (env, ids)
}

fn record_file(env: &Env, id: &str) -> std::path::PathBuf {
    env.repo().join("audit").join(id)
}

/// `audit verify` (with the password, or with `--public-key`): exit code
/// and output.
fn verify(env: &Env, public_key: Option<&str>) -> (Option<i32>, String) {
    let mut c = env.cmd();
    c.args(["audit", "verify"]);
    if let Some(k) = public_key {
        c.env_remove("CAIRN_PASSWORD").args(["--public-key", k]);
    }
    let out = c.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    (out.status.code(), text)
}

#[test]
fn audit_verify_names_removed_altered_and_swapped_records() {
    let (env, ids) = five_records();
    let key = env.path("audit.pub");
    env.ok([
        "audit",
        "export-key",
        "--output",
        &key.display().to_string(),
    ]);
    let key = key.display().to_string();
    assert_eq!(verify(&env, None).0, Some(0));
    assert_eq!(verify(&env, Some(&key)).0, Some(0));

    // Removed (a middle record): named, with and without the password.
    let f = record_file(&env, &ids[2]);
    let saved = fs::read(&f).unwrap();
    fs::remove_file(&f).unwrap();
    for k in [None, Some(key.as_str())] {
        let (code, text) = verify(&env, k);
        assert_eq!(code, Some(1), "{text}");
        assert!(
            text.contains(&format!("audit record {}: missing", ids[2])),
            "{text}"
        );
    }
    fs::write(&f, &saved).unwrap();
    assert_eq!(verify(&env, None).0, Some(0));

    // Altered: one byte of the envelope, then one of the sealed body.
    for at in [20, saved.len() - 5] {
        let mut bad = saved.clone();
        bad[at] ^= 1;
        fs::write(&f, &bad).unwrap();
        let (code, text) = verify(&env, None);
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains(&format!("audit record {}", ids[2])), "{text}");
    }
    fs::write(&f, &saved).unwrap();

    // Swapped contents of two records: both named.
    let g = record_file(&env, &ids[3]);
    let other = fs::read(&g).unwrap();
    fs::write(&f, &other).unwrap();
    fs::write(&g, &saved).unwrap();
    for k in [None, Some(key.as_str())] {
        let (code, text) = verify(&env, k);
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains(&ids[2]) && text.contains(&ids[3]), "{text}");
    }
    fs::write(&f, &saved).unwrap();
    fs::write(&g, &other).unwrap();

    // Truncated: the newest record goes; the chain left is consistent,
    // but the last backup's snapshot names the record it followed.
    let snaps = env.snapshots();
    let anchor = snaps[1]["metadata"]["audit.head"].as_str().unwrap();
    assert_eq!(anchor, ids[2]);
    fs::remove_file(record_file(&env, &ids[4])).unwrap();
    assert_eq!(
        verify(&env, None).0,
        Some(0),
        "the head is not anchored yet"
    );
    fs::remove_file(record_file(&env, &ids[3])).unwrap();
    fs::remove_file(record_file(&env, &ids[2])).unwrap();
    let (code, text) = verify(&env, None);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("audit record {}: missing: snapshot", ids[2])),
        "{text}"
    );

    // Another repository's key verifies nothing here.
    let stranger = Env::init();
    let wrong = stranger.run(["audit", "export-key"]).stdout;
    let wrong = String::from_utf8(wrong).unwrap();
    let (code, text) = verify(&env, Some(wrong.trim()));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("signature does not verify"), "{text}");
}

#[test]
fn a_signed_report_verifies_without_the_password_and_fails_when_changed() {
    let (env, ids) = five_records();
    let key = String::from_utf8(env.ok(["audit", "export-key"]).stdout).unwrap();
    let key = key.trim().to_string();
    assert!(key.starts_with("cairn-audit-ed25519:"), "{key}");
    let file = env.path("report.signed");
    let f = file.display().to_string();
    env.ok(["report", "latest", "--sign", "--output", &f]);
    let bytes = fs::read(&file).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    // The report anchors the trail: its heads as the report was made.
    assert!(text.contains(&ids[4]), "{text}");

    let check = |k: &str| {
        env.cmd()
            .env_remove("CAIRN_PASSWORD")
            .args(["report", "verify", &f, "--public-key", k])
            .output()
            .unwrap()
    };
    assert_success(&check(&key));
    for at in [0, bytes.len() / 2, bytes.len() - 10] {
        let mut bad = bytes.clone();
        bad[at] ^= 1;
        fs::write(&file, &bad).unwrap();
        let out = check(&key);
        assert_eq!(out.status.code(), Some(1), "byte {at}");
        assert!(stderr(&out).contains("does not verify"), "{}", stderr(&out));
    }
    fs::write(&file, &bytes).unwrap();
    let stranger = Env::init();
    let wrong = String::from_utf8(stranger.ok(["audit", "export-key"]).stdout).unwrap();
    assert_eq!(check(wrong.trim()).status.code(), Some(1));
}

#[test]
fn a_record_that_cannot_be_written_fails_a_writing_command_and_warns_a_reading_one() {
    let env = Env::init();
    write(&env.path("s/f"), b"x\n");
    // Storage that takes no audit record (a file where `audit/` should be).
    let dir = env.repo().join("audit");
    fs::remove_dir_all(&dir).unwrap();
    fs::write(&dir, b"").unwrap();
    let (code, text) = run(&env, &["backup", &env.path("s").display().to_string()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("audit record could not be written"), "{text}");
    // Commands that are not audited are not affected.
    assert_eq!(env.snapshots().len(), 1, "the backup itself ran");
    // A restore got the data back: it warns instead of failing.
    let target = env.path("t");
    let (code, text) = run(
        &env,
        &[
            "restore",
            "latest",
            "--target",
            &target.display().to_string(),
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("audit record could not be written"), "{text}");
    assert!(
        fs::read_dir(&target).unwrap().next().is_some(),
        "the restore wrote its files"
    );
}

/// Record files in `audit/` (the signing key aside).
fn record_count(env: &Env) -> usize {
    fs::read_dir(env.repo().join("audit"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != "signer")
        .count()
}

#[test]
fn redis_exporter_commands_are_recorded_once_each_without_the_url_password() {
    use std::io::{Read, Write};
    let env = Env::init();
    let server = super::redis::Server::start(&env.path("redis-data"));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    // One key, then a password: the URL below must carry it.
    let requests: [&[&str]; 2] = [
        &["SET", "k", "v"],
        &["CONFIG", "SET", "requirepass", REDIS_SECRET],
    ];
    for parts in requests {
        let mut req = format!("*{}\r\n", parts.len());
        for p in parts {
            req.push_str(&format!("${}\r\n{p}\r\n", p.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"+OK"), "{:?}", &buf[..n]);
    }
    let url = format!("redis://:{REDIS_SECRET}@127.0.0.1:{}", server.port);
    let before = record_count(&env);
    env.ok(["redis", "backup", "--url", &url]);
    assert_eq!(record_count(&env), before + 1, "one record per command");
    env.ok(["redis", "verify", "latest"]);
    let rdb = env.path("out.rdb").display().to_string();
    env.ok(["redis", "restore", "latest", "--to-file", &rdb]);
    assert_eq!(record_count(&env), before + 3);

    let recs = records(&env);
    let tail: Vec<&str> = recs[1..]
        .iter()
        .map(|r| r["command"].as_str().unwrap())
        .collect();
    assert_eq!(tail, ["redis backup", "redis verify", "redis restore"]);
    assert!(recs[1..].iter().all(|r| r["outcome"] == "ok"));
    assert_eq!(recs[1]["created"]["snapshot"], 1);
    let args = recs[1]["args"].to_string();
    assert!(args.contains("redis://:***@127.0.0.1"), "{args}");
    let listed = env.run(["--json", "audit"]).stdout;
    let raw = [all_bytes(&env.repo()), all_bytes(&env.path("cache"))].concat();
    assert!(!contains(&listed, REDIS_SECRET) && !contains(&raw, REDIS_SECRET));
}
