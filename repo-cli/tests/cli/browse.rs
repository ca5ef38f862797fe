//! Reading a repository back: ls, dump, restore, cat.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use filetime::FileTime;

use super::harness::{Env, assert_success, stderr, write};

#[test]
fn restore_round_trip_is_byte_identical_with_times() {
    let env = Env::init();
    let src = env.path("src");
    let files: [(&str, Vec<u8>); 4] = [
        ("a.txt", b"alpha\n".to_vec()),
        ("empty", Vec::new()),
        (
            "sub/big.bin",
            (0..1_500_000u32).map(|i| (i % 253) as u8).collect(),
        ),
        ("sub/deeper/zeros", vec![0u8; 70_000]),
    ];
    for (i, (rel, content)) in files.iter().enumerate() {
        let p = src.join(rel);
        write(&p, content);
        filetime::set_file_mtime(
            &p,
            FileTime::from_unix_time(1_600_000_000 + i as i64, 123_456_789),
        )
        .expect("mtime");
    }
    fs::set_permissions(src.join("a.txt"), fs::Permissions::from_mode(0o640)).expect("chmod");
    filetime::set_file_mtime(
        src.join("sub/deeper"),
        FileTime::from_unix_time(1_500_000_000, 5),
    )
    .expect("mtime");
    env.ok([OsStr::new("backup"), src.as_os_str()]);

    let target = env.path("restored");
    let out = env.json([
        OsStr::new("restore"),
        "latest".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ]);
    assert_eq!(out["files"], 4, "{out}");
    assert_eq!(
        out["bytes_restored"],
        6 + 1_500_000 + 70_000,
        "apparent size, zero chunks (holes on disk) included: {out}"
    );
    assert_eq!(out["skipped"], 0, "{out}");

    // Paths are restored below the target as they are in the snapshot.
    let back = target.join(src.strip_prefix("/").expect("absolute"));
    for (rel, content) in &files {
        let (a, b) = (src.join(rel), back.join(rel));
        assert!(
            fs::read(&b).expect("restored file") == *content,
            "{rel} differs"
        );
        let (ma, mb) = (
            fs::metadata(&a).expect("meta"),
            fs::metadata(&b).expect("meta"),
        );
        assert_eq!(
            FileTime::from_last_modification_time(&ma),
            FileTime::from_last_modification_time(&mb),
            "{rel}"
        );
        assert_eq!(ma.permissions().mode(), mb.permissions().mode(), "{rel}");
    }
    let dir_mtime =
        |p: &Path| FileTime::from_last_modification_time(&fs::metadata(p).expect("meta"));
    assert_eq!(
        dir_mtime(&back.join("sub/deeper")),
        FileTime::from_unix_time(1_500_000_000, 5)
    );

    // --include restores only what matches.
    let partial = env.path("partial");
    env.ok([
        OsStr::new("restore"),
        "latest".as_ref(),
        "--target".as_ref(),
        partial.as_os_str(),
        "--include".as_ref(),
        "a.txt".as_ref(),
    ]);
    let pback = partial.join(src.strip_prefix("/").expect("absolute"));
    assert!(pback.join("a.txt").exists());
    assert!(!pback.join("sub").exists());

    // Again into the full target: --overwrite never keeps what is there,
    // if-changed keeps files whose size and mtime match.
    write(&back.join("a.txt"), b"ALPHA\n");
    let restore = |mode: &str| {
        env.json([
            OsStr::new("restore"),
            "latest".as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
            "--overwrite".as_ref(),
            mode.as_ref(),
        ])
    };
    let out = restore("never");
    assert_eq!(
        (&out["files"], &out["skipped"]),
        (&0.into(), &4.into()),
        "{out}"
    );
    assert_eq!(fs::read(back.join("a.txt")).expect("read"), b"ALPHA\n");
    let out = restore("if-changed");
    assert_eq!(
        (&out["files"], &out["skipped"]),
        (&1.into(), &3.into()),
        "{out}"
    );
    assert_eq!(out["bytes_restored"], 6, "{out}");
    assert_eq!(fs::read(back.join("a.txt")).expect("read"), b"alpha\n");
    let help = env.ok(["restore", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for word in ["--overwrite", "if-changed", "never", "--all-xattrs"] {
        assert!(help.contains(word), "{word} missing from restore --help");
    }
}

#[test]
fn dump_writes_one_file_and_refuses_directories() {
    let env = Env::init();
    let src = env.path("src");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 199) as u8).collect();
    write(&src.join("f.bin"), &content);
    env.ok([OsStr::new("backup"), src.as_os_str()]);
    let out = env.ok([
        OsStr::new("dump"),
        "latest".as_ref(),
        src.join("f.bin").as_os_str(),
    ]);
    assert!(out.stdout == content);

    let dir = env.run([OsStr::new("dump"), "latest".as_ref(), src.as_os_str()]);
    assert_eq!(dir.status.code(), Some(1));
    assert!(
        stderr(&dir).contains("is a directory; use restore"),
        "{}",
        stderr(&dir)
    );

    let missing = env.run([
        OsStr::new("dump"),
        "latest".as_ref(),
        src.join("nope").as_os_str(),
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("not found"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn ls_prints_raw_name_bytes_and_json_lines() {
    let env = Env::init();
    let src = env.path("src");
    let name: &[u8] = b"caf\xe9 \xff.txt";
    write(&src.join(OsStr::from_bytes(name)), b"x");
    write(&src.join("dir/inner"), b"yy");
    env.ok([OsStr::new("backup"), src.as_os_str()]);

    let out = env.ok(["ls", "latest"]);
    let mut expected = src.as_os_str().as_bytes().to_vec();
    expected.push(b'/');
    expected.extend_from_slice(name);
    expected.push(b'\n');
    assert!(
        out.stdout.windows(expected.len()).any(|w| w == expected),
        "raw name missing from ls output"
    );

    // A non-UTF-8 path argument finds the file, too.
    let one = env.ok([
        OsStr::new("ls"),
        "latest".as_ref(),
        OsStr::from_bytes(&expected[..expected.len() - 1]),
    ]);
    assert_eq!(one.stdout, expected);

    // PATH narrows; --recursive=false stays at one level; -l adds the mode.
    let sub = env.ok([
        OsStr::new("ls"),
        "latest".as_ref(),
        src.as_os_str(),
        "--recursive=false".as_ref(),
    ]);
    let text = String::from_utf8_lossy(&sub.stdout);
    assert!(text.contains("/dir\n") && !text.contains("inner"), "{text}");
    let long = env.ok([
        OsStr::new("ls"),
        "-l".as_ref(),
        "latest".as_ref(),
        src.join("dir").as_os_str(),
    ]);
    let text = String::from_utf8_lossy(&long.stdout);
    assert!(
        text.starts_with("-rw") && text.trim_end().ends_with("/dir/inner"),
        "{text}"
    );

    let js = env
        .cmd()
        .args(["--json", "ls", "latest"])
        .arg(src.join("dir"))
        .output()
        .expect("run");
    let lines: Vec<serde_json::Value> = js
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("ndjson"))
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["type"], "file");
    assert_eq!(lines[0]["size"], 2);
    for k in ["path", "mode", "mtime", "uid", "gid"] {
        assert!(lines[0].get(k).is_some(), "ls --json lacks {k}");
    }
}

#[test]
fn snapshot_selection_by_prefix_and_filters() {
    let env = Env::init();
    let src = env.path("src");
    write(&src.join("f"), b"1");
    env.ok([
        OsStr::new("backup"),
        src.as_os_str(),
        "--host".as_ref(),
        "alpha".as_ref(),
    ]);
    write(&src.join("f"), b"22");
    env.ok([
        OsStr::new("backup"),
        src.as_os_str(),
        "--host".as_ref(),
        "beta".as_ref(),
    ]);
    let snaps = env.snapshots();
    let first = snaps[0]["id"].as_str().expect("id");

    let f = src.join("f");
    let by_prefix = env.ok([OsStr::new("dump"), first[..8].as_ref(), f.as_os_str()]);
    assert_eq!(by_prefix.stdout, b"1");
    let by_host = env.ok([
        OsStr::new("dump"),
        "latest".as_ref(),
        "--host".as_ref(),
        "alpha".as_ref(),
        f.as_os_str(),
    ]);
    assert_eq!(by_host.stdout, b"1");
    let latest = env.ok([OsStr::new("dump"), "latest".as_ref(), f.as_os_str()]);
    assert_eq!(latest.stdout, b"22");

    let cat = env.json(["cat", "snapshot", &first[..10]]);
    assert_eq!(
        cat, snaps[0],
        "cat snapshot prints what snapshots --json prints"
    );
    let none = env.run(["dump", "latest", "--host", "gamma", "f"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(
        stderr(&none).contains("no snapshot matches"),
        "{}",
        stderr(&none)
    );
}

#[test]
fn cat_key_shows_the_header_but_no_secret() {
    let env = Env::init();
    let key = fs::read_dir(env.repo().join("keys"))
        .expect("keys")
        .next()
        .expect("a key")
        .expect("entry");
    let name = key.file_name().to_string_lossy().into_owned();
    let v = env.json(["cat", "key", &name[..6]]);
    assert_eq!(v["id"], name);
    assert_eq!(v["kdf"]["memory_kib"], 64);
    assert_eq!(v["kdf"]["iterations"], 1);
    assert!(v.get("sealed_master").is_none());
}

#[test]
fn cat_index_lists_the_packs_and_blobs_of_a_backup() {
    let env = Env::init();
    let out = env.run_with_stdin(
        ["backup", "--stdin", "--stdin-filename", "s.txt"],
        b"indexed content",
    );
    assert_success(&out);
    let idx = fs::read_dir(env.repo().join("index"))
        .expect("index dir")
        .next()
        .expect("an index file")
        .expect("entry");
    let name = idx.file_name().to_string_lossy().into_owned();
    let v = env.json(["cat", "index", &name[..8]]);
    let packs = v["packs"].as_array().expect("packs");
    let kinds: Vec<&str> = packs
        .iter()
        .flat_map(|p| p["entries"].as_array().expect("entries"))
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect();
    assert!(
        kinds.contains(&"data") && kinds.contains(&"tree"),
        "{kinds:?}"
    );
    let missing = env.run(["cat", "index", "ffffffffffff"]);
    assert!(
        stderr(&missing).contains("no index file matches"),
        "{}",
        stderr(&missing)
    );
}
