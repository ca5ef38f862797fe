//! Help and completions: what a new user sees first.

use super::harness::Env;

#[test]
fn every_command_help_has_examples() {
    let env = Env::empty();
    for cmd in [
        "init",
        "backup",
        "snapshots",
        "ls",
        "restore",
        "dump",
        "cat",
        "copy",
        "completions",
    ] {
        let out = env.ok([cmd, "--help"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Examples:"), "{cmd} --help has no examples");
        assert!(
            text.contains(&format!("cairn {cmd}")),
            "{cmd} --help has no example of itself"
        );
    }
    let backup = String::from_utf8_lossy(&env.ok(["backup", "--help"]).stdout).into_owned();
    assert!(
        backup.contains("--stdin-from-command -- pg_dump"),
        "{backup}"
    );
}

#[test]
fn completions_for_each_shell() {
    let env = Env::empty();
    for shell in ["bash", "zsh", "fish"] {
        let out = env.ok(["completions", shell]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("cairn") && text.contains("snapshots"),
            "{shell}: {text}"
        );
    }
}

#[test]
fn usage_errors_exit_1() {
    let env = Env::empty();
    let out = env.run(["backup"]);
    assert_eq!(out.status.code(), Some(1));
    let out = env.run(["backup", "--stdin", "some/path"]);
    assert_eq!(out.status.code(), Some(1));
}
