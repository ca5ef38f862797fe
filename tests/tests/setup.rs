//! The README's set-up commands are a contract (issue 11, item 1): its second
//! command must run every test on a fresh Debian machine by itself, so it is a
//! script that installs what the tests need, and CI runs that same script.

use std::path::Path;

fn read(rel: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// The lines of the README's first fenced `sh` block: its set-up commands.
fn readme_commands() -> Vec<String> {
    let readme = read("README.md");
    let start = readme.find("```sh\n").expect("README has a ```sh block") + 6;
    let end = start + readme[start..].find("```").expect("the block is closed");
    readme[start..end].lines().map(str::to_owned).collect()
}

/// Lines of a shell script that are commands, not comments or echoes.
fn commands(script: &str) -> Vec<&str> {
    script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("echo "))
        .collect()
}

#[test]
fn readme_starts_with_two_commands_the_second_being_the_test_script() {
    let cmds = readme_commands();
    assert_eq!(cmds.len(), 2, "exactly two set-up commands: {cmds:?}");
    assert_eq!(cmds[1], "bash .ci/test");
}

#[test]
fn ci_runs_the_readme_test_command() {
    let run = read(".ci/run");
    let test_cmd = &readme_commands()[1];
    assert!(
        commands(&run).iter().any(|l| l == test_cmd),
        ".ci/run must run `{test_cmd}` itself"
    );
    // CI must not run a different test command beside it.
    assert!(
        !commands(&run).iter().any(|l| l.starts_with("cargo test")),
        ".ci/run runs tests only through the README's command"
    );
}

#[test]
fn test_script_installs_the_servers_the_exporter_tests_start() {
    let script = read(".ci/test");
    let cmds = commands(&script);
    // Each server is installed when its program is missing.
    for (probe, package) in [
        ("command -v redis-server", "redis-server"),
        ("/usr/lib/postgresql/*/bin/initdb", "postgresql"),
        ("command -v cc", "build-essential"),
    ] {
        assert!(
            cmds.iter()
                .any(|l| l.contains(probe) && l.contains(&format!("need_apt+=({package})"))),
            "{probe} missing must add {package}"
        );
    }
    assert!(cmds.iter().any(|l| l.contains("apt-get install")));
    let test = cmds
        .iter()
        .position(|l| l.starts_with("cargo test --workspace --locked"))
        .expect("the script runs the whole workspace's tests");
    let install = cmds
        .iter()
        .position(|l| l.contains("apt-get install"))
        .unwrap();
    assert!(
        install < test,
        "packages are installed before the tests run"
    );
}

#[test]
fn test_script_installs_garage_for_the_s3_tests() {
    let script = read(".ci/test");
    let cmds = commands(&script);
    let pos = |f: &dyn Fn(&str) -> bool| cmds.iter().position(|l| f(l));
    // The tests look in ~/.cargo/bin too, but the script must find what
    // cargo installed there whatever the caller's PATH.
    let path = pos(&|l| l.starts_with("export PATH=") && l.contains(".cargo}/bin"))
        .expect("the script puts cargo's bin directory on PATH");
    let probe = pos(&|l| l.contains("command -v garage")).expect("the script probes for garage");
    let install = pos(&|l| l == "cargo install --locked garage")
        .expect("a missing garage is installed with cargo install --locked");
    let test = pos(&|l| l.starts_with("cargo test --workspace --locked")).unwrap();
    assert!(path < probe && probe < install && install < test);
}
