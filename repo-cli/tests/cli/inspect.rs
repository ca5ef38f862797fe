//! Inspecting snapshots: diff, find, stats.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::harness::{Env, stderr, write};

/// Backs up `src` (with extra arguments) and returns the new snapshot's id.
fn backup(env: &Env, src: &Path, extra: &[&str]) -> String {
    let mut args = vec![OsStr::new("backup"), src.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    env.ok(args);
    let snaps = env.snapshots();
    snaps.last().expect("a snapshot")["id"]
        .as_str()
        .expect("id")
        .to_string()
}

#[test]
fn diff_lists_changes_with_markers_and_totals() {
    let env = Env::init();
    let src = env.path("src");
    write(&src.join("keep.txt"), b"unchanged");
    write(&src.join("change.txt"), b"old content");
    write(&src.join("perm.txt"), b"permissions only");
    fs::set_permissions(src.join("perm.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    write(&src.join("gone.txt"), b"to be removed");
    write(&src.join("dir/x"), b"inside a directory");
    let a = backup(&env, &src, &[]);

    write(&src.join("change.txt"), b"new content, longer");
    fs::set_permissions(src.join("perm.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(src.join("gone.txt")).unwrap();
    write(&src.join("new.txt"), b"brand new");
    fs::remove_dir_all(src.join("dir")).unwrap();
    write(&src.join("dir"), b"now a file");
    let b = backup(&env, &src, &[]);

    let out = env.ok(["diff", &a[..8], &b[..8]]);
    let text = String::from_utf8_lossy(&out.stdout);
    let s = src.display();
    let below: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!("{s}/")))
        .collect();
    assert_eq!(
        below,
        [
            // `src` itself: entries were added and removed, so its mtime moved.
            format!("U    {s}/"),
            format!("M    {s}/change.txt"),
            format!("T    {s}/dir"),
            format!("-    {s}/dir/x"),
            format!("-    {s}/gone.txt"),
            format!("+    {s}/new.txt"),
            format!("U    {s}/perm.txt"),
        ],
        "{text}"
    );
    assert!(text.starts_with(&format!("comparing snapshot {} to {}", &a[..8], &b[..8])));
    assert!(
        text.contains("Files:          1 new, 2 removed, 1 changed"),
        "{text}"
    );
    assert!(!text.contains("keep.txt"), "{text}");

    let v = env.json(["diff", &a, &b]);
    let t = &v["totals"];
    assert_eq!(
        (
            &t["files_added"],
            &t["files_removed"],
            &t["files_modified"],
            &t["type_changed"]
        ),
        (&1.into(), &2.into(), &1.into(), &1.into()),
        "{v}"
    );
    assert_eq!(
        t["bytes_added"],
        "new content, longer".len() + "brand new".len() + "now a file".len()
    );
    let changes = v["changes"].as_array().unwrap();
    let perm = changes
        .iter()
        .find(|c| c["path"] == format!("{s}/perm.txt"))
        .expect("perm.txt listed");
    assert_eq!(perm["change"], "metadata_only");
    assert_eq!(perm["fields"], serde_json::json!(["mode"]));
    let dir = changes
        .iter()
        .find(|c| c["path"] == format!("{s}/dir"))
        .unwrap();
    assert_eq!(
        (&dir["old_kind"], &dir["new_kind"]),
        (&"dir".into(), &"file".into())
    );
    assert_eq!(v["a"], a.as_str());

    let out = env.run(["diff", &a[..8], "ffffffff"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("ffffffff"), "{}", stderr(&out));
}

#[test]
fn find_by_name_and_path_with_snapshot_selection() {
    let env = Env::init();
    let src = env.path("src");
    write(&src.join("a.log"), b"aaaa");
    write(&src.join("sub/b.log"), b"bb");
    write(&src.join("sub/c.txt"), b"c");
    let one = backup(&env, &src, &["--host", "h1"]);
    write(&src.join("sub/d.log"), b"ddd");
    let two = backup(&env, &src, &["--host", "h2"]);
    let s = src.display().to_string();

    let paths = |v: serde_json::Value| -> Vec<(String, String)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["snapshot"].as_str().unwrap()[..8].to_string(),
                    m["path"]
                        .as_str()
                        .unwrap()
                        .strip_prefix(&s)
                        .unwrap()
                        .to_string(),
                )
            })
            .collect()
    };
    let p = |id: &str, path: &str| (id[..8].to_string(), path.to_string());
    assert_eq!(
        paths(env.json(["find", "*.log"])),
        [
            p(&one, "/a.log"),
            p(&one, "/sub/b.log"),
            p(&two, "/a.log"),
            p(&two, "/sub/b.log"),
            p(&two, "/sub/d.log"),
        ]
    );
    assert_eq!(
        paths(env.json(["find", "*.log", "--host", "h1"])),
        [p(&one, "/a.log"), p(&one, "/sub/b.log")]
    );
    assert_eq!(
        paths(env.json(["find", "sub/*.log", "--snapshot", &two[..8]])),
        [p(&two, "/sub/b.log"), p(&two, "/sub/d.log")]
    );
    let abs = format!("{s}/sub/*.txt");
    assert_eq!(
        paths(env.json(["find", &abs, "--snapshot", "latest", "-s", &one])),
        [p(&one, "/sub/c.txt"), p(&two, "/sub/c.txt")]
    );
    let v = env.json(["find", "d.log"]);
    assert_eq!(v[0]["type"], "file");
    assert_eq!(v[0]["size"], 3);
    assert!(v[0]["mtime"].as_str().unwrap().ends_with('Z'));

    let out = env.ok(["find", "*.log"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("Found matching entries in snapshot {}", &one[..8])),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("file") && l.ends_with(&format!("{s}/sub/d.log"))),
        "{text}"
    );
    assert!(text.contains("5 matches in 2 of 2 snapshots"), "{text}");

    let out = env.run(["find", "["]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("pattern"), "{}", stderr(&out));
}

#[test]
fn stats_modes_count_exactly() {
    let env = Env::init();
    let src = env.path("src");
    let a: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
    let c = b"a different, smaller file\n".to_vec();
    write(&src.join("a"), &a);
    write(&src.join("b"), &a); // deduplicated against `a`
    write(&src.join("c"), &c);
    backup(&env, &src, &[]);
    backup(&env, &src, &[]);
    let logical = (2 * a.len() + c.len()) as u64;

    let v = env.json(["stats"]);
    assert_eq!(v["mode"], "restore-size");
    assert_eq!(v["snapshots"], 2);
    assert_eq!(v["restore"]["files"], 6);
    assert_eq!(v["restore"]["bytes"], 2 * logical);
    assert!(v["data_blobs"].is_null());

    let v = env.json(["stats", "latest", "--mode", "raw"]);
    assert_eq!(v["snapshots"], 1);
    assert_eq!(v["restore"]["bytes"], logical);
    assert_eq!(v["data_blobs"]["count"], 2);
    assert_eq!(v["data_blobs"]["raw_bytes"], a.len() + c.len());
    assert_eq!(v["data_blobs"]["missing"], 0);
    assert!(v["compression_ratio"].as_f64().unwrap() > 0.0);
    assert!(v["dedup_ratio"].is_null());

    let v = env.json(["stats", "--mode", "dedup"]);
    assert_eq!(
        v["data_blobs"]["count"], 2,
        "unique data is the same for both"
    );
    let want = (2 * logical) as f64 / (a.len() + c.len()) as f64;
    assert!(
        (v["dedup_ratio"].as_f64().unwrap() - want).abs() < 1e-9,
        "{v}"
    );
    let mut on_disk = 0u64;
    let mut stack = vec![env.repo().join("data")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                on_disk += e.metadata().unwrap().len();
            }
        }
    }
    assert_eq!(v["repository"]["bytes"], on_disk);

    let out = env.ok(["stats", "--mode", "dedup"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "Stats for 2 snapshots (mode dedup)",
        "Restore size:",
        "Unique data:      2 chunks",
        "Dedup ratio:",
        "Repository size:",
    ] {
        assert!(text.contains(want), "{want:?} missing in {text}");
    }
    let out = env.run(["stats", "--mode", "bogus"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn inspect_commands_have_help_with_examples() {
    let env = Env::empty();
    for cmd in ["diff", "find", "stats"] {
        let out = env.ok([cmd, "--help"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Examples:"), "{cmd} --help has no examples");
        assert!(text.contains(&format!("cairn {cmd}")), "{cmd}: {text}");
    }
}
