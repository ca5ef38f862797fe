//! backup: summaries, parent chaining, streams, and exit code 3.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::harness::{Env, assert_success, only_snapshot, stderr, write};

const BACKUP_KEYS: [&str; 15] = [
    "snapshot_id",
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
];

const SNAPSHOT_KEYS: [&str; 11] = [
    "id",
    "short_id",
    "time",
    "host",
    "username",
    "paths",
    "tags",
    "parent",
    "tree",
    "program_version",
    "summary",
];

fn small_tree(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    write(&src.join("a.txt"), b"alpha\n");
    write(&src.join("sub/b.bin"), &[7u8; 10_000]);
    write(&src.join("sub/deeper/c"), b"");
    src
}

#[test]
fn backup_json_and_parent_chaining() {
    let env = Env::init();
    let src = small_tree(&env);

    let first = only_snapshot(&env.json([
        std::ffi::OsStr::new("backup"),
        src.as_os_str(),
        "--tag".as_ref(),
        "t1".as_ref(),
    ]));
    for k in BACKUP_KEYS {
        assert!(first.get(k).is_some(), "backup --json lacks {k}: {first}");
    }
    assert_eq!(first["files_new"], 3);
    assert_eq!(first["total_bytes"], 6 + 10_000);
    assert_eq!(first["warnings"].as_array().map(Vec::len), Some(0));

    let second = only_snapshot(&env.json([std::ffi::OsStr::new("backup"), src.as_os_str()]));
    assert_eq!(second["files_unmodified"], 3, "{second}");
    assert_eq!(second["files_new"], 0);
    // No file content is read or stored again. (Tree bytes may be added:
    // the ancestors of `src`, e.g. /tmp, change whenever a parallel test
    // creates a directory there.)
    assert_eq!(second["bytes_read"], 0, "{second}");

    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 2);
    for s in &snaps {
        for k in SNAPSHOT_KEYS {
            assert!(s.get(k).is_some(), "snapshots --json lacks {k}: {s}");
        }
        let t = s["time"].as_str().expect("time");
        // RFC 3339, UTC, nanoseconds: 2025-01-02T03:04:05.123456789Z
        assert_eq!(t.len(), 30, "{t}");
        assert!(
            t.ends_with('Z') && t.as_bytes()[10] == b'T' && t.as_bytes()[19] == b'.',
            "{t}"
        );
    }
    assert_eq!(snaps[0]["id"], first["snapshot_id"]);
    assert_eq!(snaps[0]["parent"], serde_json::Value::Null);
    assert_eq!(snaps[1]["id"], second["snapshot_id"]);
    assert_eq!(snaps[1]["parent"], snaps[0]["id"]);
    assert_eq!(snaps[0]["tags"], serde_json::json!(["t1"]));
    assert_eq!(
        snaps[0]["paths"],
        serde_json::json!([src.display().to_string()])
    );

    // --force: no parent, every file read again.
    let forced = only_snapshot(&env.json([
        std::ffi::OsStr::new("backup"),
        src.as_os_str(),
        "--force".as_ref(),
    ]));
    assert_eq!(forced["files_new"], 3);
    assert_eq!(env.snapshots()[2]["parent"], serde_json::Value::Null);

    // Filters: by tag, and by the path as given on the command line.
    let tagged = env.json(["snapshots", "--tag", "t1"]);
    assert_eq!(tagged.as_array().map(Vec::len), Some(1));
    let by_path = env.json([
        std::ffi::OsStr::new("snapshots"),
        "--path".as_ref(),
        src.as_os_str(),
    ]);
    assert_eq!(by_path.as_array().map(Vec::len), Some(3));
}

#[test]
fn human_summary_reads_like_restic() {
    let env = Env::init();
    let src = small_tree(&env);
    let out = env.ok([std::ffi::OsStr::new("backup"), src.as_os_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Files: 3 new, 0 changed, 0 unmodified"),
        "{text}"
    );
    assert!(text.contains("Added to the repository:"), "{text}");
    assert!(text.contains("processed 3 files"), "{text}");
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.starts_with("snapshot ") && l.ends_with(" saved")),
        "{text}"
    );
    // -q prints nothing on success.
    let quiet = env.ok([
        std::ffi::OsStr::new("backup"),
        "-q".as_ref(),
        src.as_os_str(),
    ]);
    assert!(quiet.stdout.is_empty() && quiet.stderr.is_empty());
}

#[test]
fn excludes_from_flags_and_files() {
    let env = Env::init();
    let src = small_tree(&env);
    write(&src.join("skip.tmp"), b"x");
    write(&src.join("sub/cache.bin"), b"x");
    let list = env.path("excludes");
    write(&list, b"# comment\n\ncache.bin\n");
    env.ok([
        std::ffi::OsStr::new("backup"),
        src.as_os_str(),
        "--exclude".as_ref(),
        "*.tmp".as_ref(),
        "--exclude-file".as_ref(),
        list.as_os_str(),
    ]);
    let out = env.ok(["ls", "latest"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("a.txt") && !text.contains("skip.tmp") && !text.contains("cache.bin"),
        "{text}"
    );
}

#[test]
fn stdin_round_trip_via_dump() {
    let env = Env::init();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let out = env.run_with_stdin(
        [
            "backup",
            "--stdin",
            "--stdin-filename",
            "db.sql",
            "--tag",
            "pg",
        ],
        &data,
    );
    assert_success(&out);
    let dumped = env.ok(["dump", "latest", "db.sql"]);
    assert_eq!(dumped.stdout.len(), data.len());
    assert!(
        dumped.stdout == data,
        "dump differs from what was backed up"
    );
    let snaps = env.snapshots();
    assert_eq!(snaps[0]["paths"], serde_json::json!(["db.sql"]));
    // A stream name is a valid --path filter as it stands.
    let v = env.json(["snapshots", "--path", "db.sql"]);
    assert_eq!(v.as_array().map(Vec::len), Some(1));
}

#[test]
fn stdin_from_command_saves_its_output() {
    let env = Env::init();
    env.ok([
        "backup",
        "--stdin-from-command",
        "--",
        "printf",
        "%s",
        "from a command",
    ]);
    // The stream is named after the command by default.
    let out = env.ok(["dump", "latest", "printf"]);
    assert_eq!(out.stdout, b"from a command");
}

#[test]
fn failing_command_writes_no_snapshot() {
    let env = Env::init();
    let out = env.run([
        "backup",
        "--stdin-from-command",
        "--",
        "sh",
        "-c",
        "echo partial; exit 3",
    ]);
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("exited with status 3"),
        "{}",
        stderr(&out)
    );
    assert!(
        env.snapshots().is_empty(),
        "a failed stream must not leave a snapshot"
    );
}

/// Exit code 3: the snapshot is saved, an entry is missing. Root reads any
/// file whatever its mode, so as root the unreadable source is
/// `/proc/<pid>/mem` of this test process, whose first page is unmapped:
/// its `read` fails with EIO even for root.
#[test]
fn unreadable_file_gives_exit_3_and_a_snapshot() {
    let env = Env::init();
    let src = small_tree(&env);
    let locked = src.join("locked");
    write(&locked, b"secret");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).expect("chmod");
    let as_root = fs::read(&locked).is_ok();
    let target = if as_root {
        std::path::PathBuf::from(format!("/proc/{}/mem", std::process::id()))
    } else {
        src
    };

    let out = env.run([std::ffi::OsStr::new("backup"), target.as_os_str()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning"), "{}", stderr(&out));
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1, "the snapshot is still written");

    let json = env
        .cmd()
        .args(["--json", "backup"])
        .arg(&target)
        .output()
        .expect("run");
    assert_eq!(json.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    let v = only_snapshot(&v);
    assert_eq!(v["warnings"].as_array().map(Vec::len), Some(1), "{v}");
    // Typed warnings: a kind to match on, the path, and the message.
    let w = &v["warnings"][0];
    assert_eq!(w["kind"], "unreadable", "{v}");
    let path = w["path"].as_str().expect("path");
    assert!(
        w["message"].as_str().expect("message").starts_with(path),
        "{v}"
    );
}
