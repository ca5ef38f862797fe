//! `key rotate`, `key retire`, `key epochs`: data-key epochs from the
//! command line (issue 16, SPEC §29).

use std::fs;
use std::path::Path;
use std::process::Output;

use super::harness::{Env, assert_success, stderr, write};

fn with_key_file(env: &Env, key_file: &Path, args: &[&str]) -> Output {
    let mut c = env.cmd();
    c.env_remove("CAIRN_PASSWORD")
        .arg("--key-file")
        .arg(key_file)
        .args(args)
        .output()
        .expect("run cairn")
}

fn backup(env: &Env, name: &str, content: &[u8]) {
    let src = env.path("src");
    write(&src.join(name), content);
    env.ok(["backup", src.to_str().unwrap()]);
}

#[test]
fn rotate_back_up_restore_and_retire_from_the_command_line() {
    let env = Env::init();
    backup(&env, "old.txt", b"written under epoch 0\n");

    let r = env.json(["key", "rotate"]);
    assert_eq!(r["epoch"], 1);
    assert_eq!(r["live"], serde_json::json!([0, 1]));
    assert!(r["rewrapped"].is_string(), "{r}");
    backup(&env, "new.txt", b"written under epoch 1\n");

    // cat config shows the version and the live epochs.
    let cfg = env.json(["cat", "config"]);
    assert_eq!(cfg["version"], 4, "{cfg}");
    assert_eq!(cfg["epochs"], serde_json::json!([0, 1]));
    assert_eq!(cfg["cipher"], "xchacha20-poly1305");
    // report shows the cipher and the epochs.
    let rep = env.json(["report", "latest"]);
    assert_eq!(
        rep["encryption"]["live_epochs"],
        serde_json::json!([0, 1]),
        "{rep}"
    );
    assert_eq!(rep["encryption"]["newest_epoch"], 1);

    // key list: the session's key holds both epochs and has a public key.
    let keys = env.json(["key", "list"]);
    assert_eq!(keys[0]["epochs"], serde_json::json!([0, 1]), "{keys}");
    assert_eq!(keys[0]["public_key"], true);

    // The census counts both epochs; epoch 0 cannot go while used, and
    // the message names the count; the newest cannot go at all.
    let e = env.json(["key", "epochs"]);
    assert_eq!(e["newest"], 1);
    let in_zero = e["per_epoch"]["0"].as_u64().expect("epoch 0 count");
    assert!(
        in_zero >= 3 && e["per_epoch"]["1"].as_u64() >= Some(3),
        "{e}"
    );
    let out = env.run(["key", "retire", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("{in_zero} objects are still sealed under it")),
        "{}",
        stderr(&out)
    );
    let out = env.run(["key", "retire", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("newest"), "{}", stderr(&out));

    // Every snapshot restores; check is clean.
    let target = env.path("restore");
    env.ok(["restore", "latest", "--target", target.to_str().unwrap()]);
    let src = env.path("src");
    let root = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read(root.join("old.txt")).unwrap(),
        b"written under epoch 0\n"
    );
    assert_eq!(
        fs::read(root.join("new.txt")).unwrap(),
        b"written under epoch 1\n"
    );
    env.ok(["check", "--read-data"]);
}

#[test]
fn rotate_refuses_old_key_files_and_rewraps_an_unattended_key_with_output() {
    let env = Env::init();
    let token = env.path("svc.key");
    let added = env.json([
        "key",
        "add",
        "--unattended",
        "--output",
        token.to_str().unwrap(),
    ]);
    let svc = added["id"].as_str().unwrap().to_string();

    // The service's key file has no public key: a rotation from the
    // password session refuses, naming it.
    let out = env.run(["key", "rotate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&svc[..8]), "{}", stderr(&out));

    // From the service's own session it is re-wrapped, but only with a
    // place for the new token; the password key then blocks.
    let out = with_key_file(&env, &token, &["key", "rotate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--output"), "{}", stderr(&out));
    let list = env.json(["key", "list"]);
    let password_key = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["unattended"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let new_token = env.path("svc2.key");
    let out = with_key_file(
        &env,
        &token,
        &["key", "rotate", "--output", new_token.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&password_key[..8]),
        "{}",
        stderr(&out)
    );
    assert!(
        !new_token.exists(),
        "a refused rotation leaves no token file"
    );

    // Remove the password key; the service rotates and gets a new token.
    let out = with_key_file(&env, &token, &["key", "remove", &password_key]);
    assert_success(&out);
    let out = with_key_file(
        &env,
        &token,
        &[
            "--json",
            "key",
            "rotate",
            "--output",
            new_token.to_str().unwrap(),
        ],
    );
    assert_success(&out);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["epoch"], 1);
    // The old token names a key file that is gone; the new one opens.
    assert_eq!(
        with_key_file(&env, &token, &["snapshots"]).status.code(),
        Some(12)
    );
    assert_success(&with_key_file(&env, &new_token, &["snapshots"]));
}

#[test]
fn init_with_the_compliance_cipher() {
    let env = Env::empty();
    env.ok([
        "init",
        "--kdf-memory",
        "64",
        "--kdf-iterations",
        "1",
        "--cipher",
        "xaes-256-gcm",
    ]);
    backup(&env, "f.txt", b"sealed with AES-256\n");
    let cfg = env.json(["cat", "config"]);
    assert_eq!(cfg["cipher"], "xaes-256-gcm", "{cfg}");
    assert_eq!(cfg["version"], 4);
    let e = env.json(["key", "epochs"]);
    assert_eq!(e["cipher"], "xaes-256-gcm");
    let target = env.path("restore");
    env.ok(["restore", "latest", "--target", target.to_str().unwrap()]);
    let root = target.join(env.path("src").strip_prefix("/").unwrap());
    assert_eq!(
        fs::read(root.join("f.txt")).unwrap(),
        b"sealed with AES-256\n"
    );
    env.ok(["check", "--read-data"]);
    let out = Env::empty().run(["init", "--cipher", "rot13"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("xaes-256-gcm"), "{}", stderr(&out));
}
