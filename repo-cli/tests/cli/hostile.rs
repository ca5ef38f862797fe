//! Hostile repository content (issue 12, items 11-13), as the user sees
//! it: planted key files, damaged ones, names that would drive the
//! terminal, forged trees, and a repository path that is a file.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use repo_core::blob::BlobKind;
use repo_core::crypto::KeyFile;
use repo_core::id::KeyId;
use repo_core::{KdfParams, LocalBackend, Node, NodeKind, OpenOptions, Repository, Tree};

use super::harness::{Env, PASSWORD, stderr, write};

/// The test repository, opened through the library.
fn library(env: &Env) -> Repository {
    Repository::open(
        LocalBackend::open(env.repo()),
        PASSWORD.as_bytes(),
        OpenOptions::default(),
    )
    .expect("open")
}

fn key_path(env: &Env, id: &KeyId) -> std::path::PathBuf {
    env.repo().join("keys").join(id.to_hex())
}

/// Plants a copy of the repository's key file with KDF parameters over what
/// an open spends on a key it is not told to use (2 GiB); its id.
fn plant_costly_key(env: &Env) -> KeyId {
    let keys = std::fs::read_dir(env.repo().join("keys")).expect("keys");
    let first = keys.flatten().next().expect("a key file").path();
    let mut kf = KeyFile::decode(&std::fs::read(first).expect("read")).expect("decode");
    kf.header.kdf = KdfParams {
        memory_kib: 2 * 1024 * 1024,
        iterations: 1,
        parallelism: 1,
    };
    let bytes = kf.encode();
    let id = KeyId::hash_of(&bytes);
    std::fs::write(key_path(env, &id), bytes).expect("plant");
    id
}

#[test]
fn a_costly_planted_key_is_not_tried_and_the_warning_names_it() {
    let env = Env::init();
    let planted = plant_costly_key(&env);
    // The right password opens through the cheap key, planted file or not.
    env.ok(["snapshots"]);
    // A wrong one fails without stretching it through 2 GiB; the message
    // names the file that was not tried and how to try it.
    let out = env
        .cmd()
        .env("CAIRN_PASSWORD", "not the password")
        .arg("snapshots")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&planted.short()) && err.contains("--key"),
        "{err}"
    );
    // --key (or CAIRN_KEY) restricts the open to the named file.
    let good = std::fs::read_dir(env.repo().join("keys"))
        .expect("keys")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| *n != planted.to_hex())
        .expect("the real key");
    env.ok(["--key", &good[..8], "snapshots"]);
    let out = env
        .cmd()
        .env("CAIRN_KEY", "ffffffffffff")
        .arg("snapshots")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no key matches"), "{}", stderr(&out));
}

#[test]
fn init_and_key_add_warn_about_weak_and_extreme_kdf_parameters() {
    let env = Env::empty();
    let out = env.run(["init", "--kdf-memory", "64", "--kdf-iterations", "1"]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("weaker than RFC 9106"),
        "{}",
        stderr(&out)
    );
    let out = env
        .cmd()
        .env("CAIRN_NEW_PASSWORD", "another")
        .args([
            "key",
            "add",
            "--kdf-memory",
            "65536",
            "--kdf-iterations",
            "3",
        ])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[test]
fn key_list_marks_a_key_file_changed_after_writing_as_damaged() {
    let env = Env::init();
    env.cmd()
        .env("CAIRN_NEW_PASSWORD", "second")
        .args(["key", "add", "--kdf-memory", "64", "--kdf-iterations", "1"])
        .output()
        .expect("run");
    let listed = env.json(["key", "list"]);
    let second = listed
        .as_array()
        .expect("array")
        .iter()
        .find(|k| k["current"] == false)
        .expect("second key")["id"]
        .as_str()
        .expect("id")
        .to_string();
    // One bit of the sealed master key: the file still decodes.
    let path = env.repo().join("keys").join(&second);
    let mut bytes = std::fs::read(&path).expect("read");
    *bytes.last_mut().expect("byte") ^= 1;
    std::fs::write(&path, &bytes).expect("write");

    let listed = env.json(["key", "list"]);
    let k = listed
        .as_array()
        .expect("array")
        .iter()
        .find(|k| k["id"] == second.as_str())
        .expect("still listed")
        .clone();
    assert_eq!(k["status"], "damaged", "{k}");
    let text = String::from_utf8_lossy(&env.ok(["key", "list"]).stdout).into_owned();
    assert!(
        text.contains("damaged: its content does not match its name"),
        "{text}"
    );
}

#[test]
fn a_regular_file_as_repository_exits_10() {
    let env = Env::empty();
    let file = env.path("file");
    write(&file, b"not a repository");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .env_remove("CAIRN_REPOSITORY")
        .env("CAIRN_PASSWORD", PASSWORD)
        .arg("-r")
        .arg(&file)
        .arg("snapshots")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no cairn repository"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn ls_and_find_escape_control_characters_in_names() {
    let env = Env::init();
    let src = env.path("src");
    let name: &[u8] = b"red\x1b[31m\x07bell\xff";
    write(&src.join(OsStr::from_bytes(name)), b"x");
    env.ok([OsStr::new("backup"), src.as_os_str()]);

    for args in [vec!["ls", "latest"], vec!["find", "red*"]] {
        let out = env.ok(&args);
        assert!(
            !out.stdout.contains(&0x1b) && !out.stdout.contains(&0x07),
            "{args:?} printed a control character"
        );
        let escaped: &[u8] = b"red\\x1b[31m\\x07bell\xff";
        assert!(
            out.stdout.windows(escaped.len()).any(|w| w == escaped),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // JSON keeps the control characters (as JSON escapes).
    let js = env
        .cmd()
        .args(["--json", "ls", "latest"])
        .output()
        .expect("run");
    let found = js
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice::<serde_json::Value>(l).expect("ndjson"))
        .any(|v| {
            v["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/red\u{1b}[31m\u{7}bell\u{fffd}"))
        });
    assert!(found, "{}", String::from_utf8_lossy(&js.stdout));
}

fn file(name: &[u8], size: u64) -> Node {
    let mut n = Node::new(name.to_vec(), NodeKind::File);
    n.size = size;
    n
}

#[test]
fn find_warns_about_a_malformed_tree_and_searches_the_rest() {
    let env = Env::init();
    let src = env.path("src");
    write(&src.join("a.txt"), b"a");
    env.ok([OsStr::new("backup"), src.as_os_str()]);
    let repo = library(&env);
    let bad = Tree {
        nodes: vec![file(b"b", 0), file(b"a.txt", 0)], // out of order
    };
    let ids = repo
        .forge_blobs(&[(BlobKind::Tree, &bad.encode())])
        .expect("forge");
    let forged = repo.forge_snapshot(ids[0], 1).expect("forge");

    let out = env.run(["find", "a.txt"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&forged.id.short()) && err.contains("not searched"),
        "{err}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/a.txt") && text.contains("1 match"),
        "{text}"
    );
}

#[test]
fn stats_warns_when_recorded_sizes_overflow() {
    let env = Env::init();
    let repo = library(&env);
    let half = u64::MAX / 2 + 1;
    let t = Tree {
        nodes: vec![file(b"a", half), file(b"b", half)],
    };
    let ids = repo
        .forge_blobs(&[(BlobKind::Tree, &t.encode())])
        .expect("forge");
    repo.forge_snapshot(ids[0], 1).expect("forge");
    let out = env.ok(["stats"]);
    assert!(stderr(&out).contains("lower bound"), "{}", stderr(&out));
    let st = env.json(["stats"]);
    assert_eq!(st["restore"]["bytes"], u64::MAX);
}
