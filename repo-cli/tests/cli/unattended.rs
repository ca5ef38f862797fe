//! `key add --unattended` and `--key-file`: a service's credential that
//! opens the repository without a password (SPEC §4.2).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;

use super::harness::{Env, assert_success, stderr, write};

/// `cairn ARGS` opened with the token in `key_file` and no password at all.
fn with_key_file(env: &Env, key_file: &Path, args: &[&str]) -> Output {
    let mut c = env.cmd();
    c.env_remove("CAIRN_PASSWORD")
        .arg("--key-file")
        .arg(key_file)
        .args(args)
        .output()
        .expect("run cairn")
}

/// Adds an unattended key writing its token to `file`; returns its id.
fn add_unattended(env: &Env, file: &Path) -> String {
    let out = env.json([
        "key",
        "add",
        "--unattended",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out["unattended"], true);
    out["id"].as_str().expect("id").to_string()
}

fn assert_wrong_key(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(12), "{}", stderr(out));
    assert!(stderr(out).contains(needle), "{}", stderr(out));
}

#[test]
fn unattended_key_opens_without_password_until_removed() {
    let env = Env::init();
    let file = env.path("pg.key");
    let id = add_unattended(&env, &file);

    // The token file is the owner's only, one line, naming the key.
    let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = fs::read_to_string(&file).unwrap();
    assert_eq!(token.lines().count(), 1);
    assert!(
        token.starts_with(&format!("cairn-unattended-1:{id}:")),
        "{token}"
    );

    // It opens the repository for a backup, with no password anywhere;
    // through CAIRN_KEY_FILE as well as --key-file.
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("a"), b"hello");
    assert_success(&with_key_file(
        &env,
        &file,
        &["backup", src.to_str().unwrap()],
    ));
    let out = env
        .cmd()
        .env_remove("CAIRN_PASSWORD")
        .env("CAIRN_KEY_FILE", &file)
        .args(["--json", "snapshots"])
        .output()
        .unwrap();
    assert_success(&out);
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1);

    // `key list` tells it from the password, and marks it current.
    let keys = with_key_file(&env, &file, &["--json", "key", "list"]);
    assert_success(&keys);
    let keys: serde_json::Value = serde_json::from_slice(&keys.stdout).unwrap();
    let kinds: Vec<_> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["unattended"].as_bool().unwrap(),
                k["current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(kinds, vec![(false, false), (true, true)]);
    let table = with_key_file(&env, &file, &["key", "list"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("unattended"));

    // A service's key has no password to change.
    let out = with_key_file(&env, &file, &["key", "passwd"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("unattended key"), "{}", stderr(&out));

    // Removed (from a password session), it stops working; the password
    // keeps working.
    env.ok(["key", "remove", &id[..12]]);
    assert_wrong_key(
        &with_key_file(&env, &file, &["snapshots"]),
        "not in this repository",
    );
    env.ok(["snapshots"]);
}

#[test]
fn bad_tokens_are_refused_as_wrong_keys() {
    let env = Env::init();
    let file = env.path("svc.key");
    add_unattended(&env, &file);
    let token = fs::read_to_string(&file).unwrap();

    // An existing file is never overwritten, and no key is added.
    let before = env.json(["key", "list"]).as_array().unwrap().len();
    let out = env.run([
        "key",
        "add",
        "--unattended",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot create key file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), token);
    assert_eq!(env.json(["key", "list"]).as_array().unwrap().len(), before);

    // --owner hands the token to the service's user (here: nobody).
    let owned = env.path("nobody.key");
    let out = env.run([
        "key",
        "add",
        "--unattended",
        "--output",
        owned.to_str().unwrap(),
        "--owner",
        "nobody",
    ]);
    if nix::unistd::geteuid().is_root() {
        assert_success(&out);
        let uid = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid;
        assert_eq!(fs::metadata(&owned).unwrap().uid(), uid.as_raw());
    } else {
        // Only root gives files away; nothing is left behind.
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(!owned.exists());
    }
    let out = env.run([
        "key",
        "add",
        "--unattended",
        "--output",
        env.path("x.key").to_str().unwrap(),
        "--owner",
        "no-such-user-here",
    ]);
    assert!(
        stderr(&out).contains("no user no-such-user-here"),
        "{}",
        stderr(&out)
    );
    assert!(!env.path("x.key").exists());

    // A changed secret: exit 12 like a wrong password.
    let wrong = env.path("wrong.key");
    let t = token.trim_end();
    let flip = if t.ends_with('0') { '1' } else { '0' };
    write(&wrong, format!("{}{flip}\n", &t[..t.len() - 1]).as_bytes());
    fs::set_permissions(&wrong, fs::Permissions::from_mode(0o600)).unwrap();
    assert_wrong_key(
        &with_key_file(&env, &wrong, &["snapshots"]),
        "wrong password",
    );

    // Truncated, or a password where a token belongs: named as such.
    let short = env.path("short.key");
    write(&short, &t.as_bytes()[..t.len() - 10]);
    assert_wrong_key(
        &with_key_file(&env, &short, &["snapshots"]),
        "not an unattended key token",
    );
    write(&short, b"correct horse battery staple\n");
    assert_wrong_key(
        &with_key_file(&env, &short, &["snapshots"]),
        "not an unattended key token",
    );

    // A token of another repository opens nothing here.
    let other = Env::init();
    let foreign = other.path("foreign.key");
    add_unattended(&other, &foreign);
    assert_wrong_key(
        &with_key_file(&env, &foreign, &["snapshots"]),
        "not in this repository",
    );
}

/// `archive_command` and `restore_command` with the token: a timeline
/// history file (filed under `--system-identifier`, so no server is needed)
/// goes in and comes back byte for byte; once the key is removed, both
/// fail with exit 12 and the server would retry.
#[test]
fn wal_commands_use_the_key_file() {
    let env = Env::init();
    let file = env.path("pg.key");
    let id = add_unattended(&env, &file);
    let history = env.path("00000002.history");
    write(&history, b"1\t0/3000000\tno recovery target specified\n");
    let h = history.to_str().unwrap();
    let archive = [
        "pg",
        "archive-wal",
        h,
        "--system-identifier",
        "7000000000000000001",
    ];
    assert_success(&with_key_file(&env, &file, &archive));
    let back = env.path("back");
    let restore = [
        "pg",
        "restore-wal",
        "00000002.history",
        back.to_str().unwrap(),
        "--system-identifier",
        "7000000000000000001",
    ];
    assert_success(&with_key_file(&env, &file, &restore));
    assert_eq!(fs::read(&back).unwrap(), fs::read(&history).unwrap());

    env.ok(["key", "remove", &id]);
    fs::remove_file(&back).unwrap();
    assert_wrong_key(
        &with_key_file(&env, &file, &archive),
        "not in this repository",
    );
    assert_wrong_key(
        &with_key_file(&env, &file, &restore),
        "not in this repository",
    );
    assert!(!back.exists());
}

/// A plan's repository opened with `key_file` (relative to the plan): the
/// dry run's check and the run itself need no password anywhere.
#[test]
fn plan_runs_with_a_key_file() {
    let env = Env::init();
    add_unattended(&env, &env.path("plan.key"));
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("a"), b"planned");
    let plan = env.path("plan.toml");
    write(
        &plan,
        format!(
            "version = 1\nname = \"svc\"\nstate_dir = \"state\"\n\
             [[repository]]\nname = \"r\"\npath = \"{}\"\nkey_file = \"plan.key\"\n\
             cache_dir = \"cache\"\n\
             [[source]]\nname = \"files\"\ntype = \"paths\"\npaths = [\"{}\"]\n",
            env.repo().display(),
            src.display()
        )
        .as_bytes(),
    );
    let run = |extra: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
        for v in [
            "CAIRN_REPOSITORY",
            "CAIRN_PASSWORD",
            "CAIRN_PASSWORD_FILE",
            "CAIRN_PASSWORD_COMMAND",
            "CAIRN_KEY_FILE",
            "CAIRN_CACHE_DIR",
        ] {
            c.env_remove(v);
        }
        c.arg("run")
            .arg(&plan)
            .args(extra)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run cairn")
    };
    assert_success(&run(&["--dry-run"]));
    assert_success(&run(&[]));
    assert_eq!(env.snapshots().len(), 1);
    // Revoked, the plan's check names the key.
    let id = env.json(["key", "list"]).as_array().unwrap()[1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.ok(["key", "remove", &id]);
    let out = run(&["--dry-run"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not in this repository")
            || stderr(&out).contains("not in this repository"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}
