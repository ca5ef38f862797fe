//! key list|add|remove|passwd: several passwords, the removal rules, and a
//! password change that leaves the data alone.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use super::harness::{Env, PASSWORD, assert_success, stderr, write};

const WEAK: [&str; 4] = ["--kdf-memory", "64", "--kdf-iterations", "1"];

const KEY_KEYS: [&str; 10] = [
    "id",
    "short_id",
    "current",
    "status",
    "created",
    "host",
    "username",
    "kdf",
    "unattended",
    "error",
];

/// Runs `cairn [--json] ARGS` opened with `password`, with no new password
/// in the environment unless `new_env` is given.
fn run_as(env: &Env, password: &str, new_env: Option<&str>, args: &[&str]) -> Output {
    let mut c = env.cmd();
    c.env("CAIRN_PASSWORD", password);
    match new_env {
        Some(v) => c.env("CAIRN_NEW_PASSWORD", v),
        None => c.env_remove("CAIRN_NEW_PASSWORD"),
    };
    c.args(args).output().expect("run cairn")
}

fn json_of(out: &Output) -> serde_json::Value {
    assert_success(out);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// `key list --json` as seen with `password`.
fn keys_as(env: &Env, password: &str) -> Vec<serde_json::Value> {
    json_of(&run_as(env, password, None, &["--json", "key", "list"]))
        .as_array()
        .expect("array")
        .clone()
}

/// `key add` of `new` (through `--new-password-file`), opened with the
/// test password; returns the new key's full id.
fn add_key(env: &Env, new: &str) -> String {
    let file = env.path(&format!("newpw-{new}"));
    write(&file, format!("{new}\n").as_bytes());
    let file = file.display().to_string();
    let mut args = vec!["--json", "key", "add", "--new-password-file", &file];
    args.extend(WEAK);
    let v = json_of(&run_as(env, PASSWORD, None, &args));
    assert_eq!(v["kdf"]["memory_kib"], 64);
    v["id"].as_str().expect("id").to_string()
}

/// Every file below `repo/{data,index,snapshots}` with its content.
fn data_files(env: &Env) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                let rel = p.strip_prefix(root).expect("below root").to_path_buf();
                out.insert(rel, fs::read(&p).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    for d in ["data", "index", "snapshots"] {
        walk(&env.repo().join(d), &env.repo(), &mut out);
    }
    out
}

#[test]
fn added_password_opens_until_removed() {
    let env = Env::init();
    let keys = keys_as(&env, PASSWORD);
    assert_eq!(keys.len(), 1);
    for k in KEY_KEYS {
        assert!(keys[0].get(k).is_some(), "key list --json lacks {k}");
    }
    assert_eq!(keys[0]["current"], true);
    assert_eq!(keys[0]["status"], "ok");
    let first = keys[0]["id"].as_str().expect("id").to_string();

    let second = add_key(&env, "second");
    assert_ne!(second, first);
    // Each password marks its own key as current.
    let as_second = keys_as(&env, "second");
    assert_eq!(as_second.len(), 2);
    let current: Vec<_> = as_second.iter().filter(|k| k["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], second.as_str());
    assert_success(&run_as(&env, "second", None, &["snapshots"]));

    // Human listing: the current key is starred, both ids shown.
    let text = String::from_utf8_lossy(&env.ok(["key", "list"]).stdout).into_owned();
    assert!(text.contains(&format!("*  {}", &first[..8])), "{text}");
    assert!(
        text.contains(&second[..8]) && text.contains("2 keys"),
        "{text}"
    );

    // Removed by a unique prefix: the second password stops working.
    let v = json_of(&run_as(
        &env,
        PASSWORD,
        None,
        &["--json", "key", "remove", &second[..10]],
    ));
    assert_eq!(v["removed"], second.as_str());
    let out = run_as(&env, "second", None, &["snapshots"]);
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    assert_eq!(keys_as(&env, PASSWORD).len(), 1);
}

#[test]
fn removal_rules_are_enforced_and_explained() {
    let env = Env::init();
    let first = keys_as(&env, PASSWORD)[0]["id"]
        .as_str()
        .expect("id")
        .to_string();

    let out = env.run(["key", "remove", &first[..8]]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("last key"), "{}", stderr(&out));

    let second = add_key(&env, "second");
    let out = env.run(["key", "remove", &first]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("this session was opened with"),
        "{}",
        stderr(&out)
    );
    let out = env.run(["key", "remove", "ffffzzzz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no key matches"), "{}", stderr(&out));
    assert_eq!(keys_as(&env, PASSWORD).len(), 2);

    // From a session of the second key, the first can go; then the second
    // is the last one.
    assert_success(&run_as(&env, "second", None, &["key", "remove", &first]));
    let out = run_as(&env, "second", None, &["key", "remove", &second]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("last key"), "{}", stderr(&out));
    assert_eq!(env.run(["snapshots"]).status.code(), Some(12));
}

#[test]
fn damaged_key_files_are_listed_and_removable() {
    let env = Env::init();
    let junk = "ab".repeat(32);
    write(&env.repo().join("keys").join(&junk), b"not a key file");
    let keys = keys_as(&env, PASSWORD);
    assert_eq!(keys.len(), 2);
    let bad = keys
        .iter()
        .find(|k| k["id"] == junk.as_str())
        .expect("listed");
    assert_eq!(bad["status"], "damaged");
    assert!(
        bad["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{bad}"
    );
    assert!(bad["created"].is_null());
    let text = String::from_utf8_lossy(&env.ok(["key", "list"]).stdout).into_owned();
    assert!(text.contains("abababab  damaged: "), "{text}");
    assert!(text.contains("2 keys (1 damaged)"), "{text}");
    env.ok(["key", "remove", "abab"]);
    assert_eq!(keys_as(&env, PASSWORD).len(), 1);
}

#[test]
fn passwd_changes_the_password_and_leaves_data_alone() {
    let env = Env::init();
    let src = env.path("src");
    write(&src.join("a.txt"), b"alpha\n");
    write(&src.join("sub/b.bin"), &[7u8; 100_000]);
    env.ok([Path::new("backup"), &src]);
    write(&src.join("c.txt"), b"later\n");
    env.ok([Path::new("backup"), &src]);
    let before = data_files(&env);
    assert!(before.keys().any(|p| p.starts_with("data")), "{before:?}");
    let old = keys_as(&env, PASSWORD)[0]["id"]
        .as_str()
        .expect("id")
        .to_string();

    // The environment variable is used when no file is given.
    let v = json_of(&run_as(
        &env,
        PASSWORD,
        Some("changed pw"),
        &["--json", "key", "passwd"],
    ));
    assert_eq!(v["replaced"], old.as_str());
    let new = v["id"].as_str().expect("id").to_string();
    // Without --kdf-*, the old key's (weak) cost is kept.
    assert_eq!(v["kdf"]["memory_kib"], 64);
    assert_eq!(v["kdf"]["iterations"], 1);

    let out = env.run(["snapshots"]);
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    let keys = keys_as(&env, "changed pw");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["id"], new.as_str());
    assert_eq!(keys[0]["current"], true);

    // Not one pack, index or snapshot file changed, and both snapshots restore.
    assert_eq!(data_files(&env), before);
    let snaps = json_of(&run_as(&env, "changed pw", None, &["--json", "snapshots"]));
    let snaps = snaps.as_array().expect("array");
    assert_eq!(snaps.len(), 2);
    for (i, s) in snaps.iter().enumerate() {
        let target = env.path(&format!("restore{i}"));
        let target_s = target.display().to_string();
        let id = s["id"].as_str().expect("id");
        assert_success(&run_as(
            &env,
            "changed pw",
            None,
            &["restore", id, "--target", &target_s],
        ));
        let root = target.join(src.strip_prefix("/").expect("absolute"));
        assert_eq!(fs::read(root.join("a.txt")).expect("a"), b"alpha\n");
        assert_eq!(fs::read(root.join("sub/b.bin")).expect("b"), [7u8; 100_000]);
        assert_eq!(root.join("c.txt").exists(), i == 1);
    }
}

#[test]
fn new_password_sources_and_failures() {
    let env = Env::init();
    // The file wins over the environment.
    let file = env.path("newpw");
    write(&file, b"from file\r\nignored\n");
    let file_s = file.display().to_string();
    let mut args = vec!["key", "add", "--new-password-file", &file_s];
    args.extend(WEAK);
    let out = run_as(&env, PASSWORD, Some("from env"), &args);
    assert_success(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("added key "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_success(&run_as(&env, "from file", None, &["snapshots"]));
    assert_eq!(
        run_as(&env, "from env", None, &["snapshots"]).status.code(),
        Some(12)
    );

    // No new password and no terminal: a clear error, nothing written.
    let mut args = vec!["key", "add"];
    args.extend(WEAK);
    let out = run_as(&env, PASSWORD, None, &args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("CAIRN_NEW_PASSWORD"),
        "{}",
        stderr(&out)
    );
    let out = run_as(&env, PASSWORD, None, &["key", "passwd"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(keys_as(&env, PASSWORD).len(), 2);

    // The old password is checked before anything is written.
    let out = run_as(&env, "wrong", Some("x"), &["key", "passwd"]);
    assert_eq!(out.status.code(), Some(12));
    assert_eq!(keys_as(&env, PASSWORD).len(), 2);
}

#[test]
fn key_help_has_examples() {
    let env = Env::empty();
    for sub in [
        &["key"][..],
        &["key", "list"],
        &["key", "add"],
        &["key", "remove"],
        &["key", "passwd"],
    ] {
        let mut args = sub.to_vec();
        args.push("--help");
        let text = String::from_utf8_lossy(&env.ok(&args).stdout).into_owned();
        let name = sub.join(" ");
        assert!(text.contains("Examples:"), "{name} --help has no examples");
        assert!(
            text.contains(&format!("cairn {name}")),
            "{name} --help has no example of itself"
        );
    }
}
