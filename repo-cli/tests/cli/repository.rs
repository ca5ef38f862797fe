//! init, passwords and the exit codes scripts rely on.

use super::harness::{Env, PASSWORD, stderr, write};

#[test]
fn init_prints_json_and_refuses_an_existing_repository() {
    let env = Env::empty();
    let v = env.json(["init", "--kdf-memory", "64", "--kdf-iterations", "1"]);
    assert_eq!(v["repository"], env.repo().display().to_string());
    let id = v["id"].as_str().expect("id");
    assert_eq!(id.len(), 64);
    // The id is the one the config holds.
    let config = env.json(["cat", "config"]);
    assert_eq!(config["repo_id"], id);
    // zstd 3 for data: levels 1 and 2 cost 7 % and 4 % more repository on
    // the benchmark corpus, above both anchors' (benches/README.md).
    assert_eq!(config["compression_level"], 3);

    let again = env.run(["init", "--kdf-memory", "64", "--kdf-iterations", "1"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already"), "{}", stderr(&again));
}

#[test]
fn wrong_password_exits_12() {
    let env = Env::init();
    let out = env
        .cmd()
        .env("CAIRN_PASSWORD", "not it")
        .arg("snapshots")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));
}

#[test]
fn missing_repository_exits_10() {
    let env = Env::empty();
    let out = env.run(["snapshots"]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("cairn: error: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn password_file_and_command_are_used_before_the_environment() {
    let env = Env::init();
    let file = env.path("pw");
    write(
        &file,
        format!("{PASSWORD}\nignored second line\n").as_bytes(),
    );
    // A wrong CAIRN_PASSWORD proves the file (and then the command) won.
    let out = env
        .cmd()
        .env("CAIRN_PASSWORD", "wrong")
        .arg("--password-file")
        .arg(&file)
        .arg("snapshots")
        .output();
    assert!(out.expect("run").status.success());
    let out = env
        .cmd()
        .env("CAIRN_PASSWORD", "wrong")
        .env(
            "CAIRN_PASSWORD_COMMAND",
            format!("printf '%s\\n' '{PASSWORD}'"),
        )
        .arg("snapshots")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));

    let failing = env
        .cmd()
        .arg("--password-command")
        .arg("exit 7")
        .arg("snapshots")
        .output()
        .expect("run");
    assert_eq!(failing.status.code(), Some(1));
    assert!(
        stderr(&failing).contains("exited with status 7"),
        "{}",
        stderr(&failing)
    );
}

#[test]
fn no_password_source_is_a_clear_error() {
    let env = Env::init();
    let out = env
        .cmd()
        .env_remove("CAIRN_PASSWORD")
        .arg("snapshots")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("no password given") && err.contains("CAIRN_PASSWORD_FILE"),
        "{err}"
    );
}
