//! Issue 12: one damaged index or snapshot file degrades service instead
//! of stopping it. The CLI names the skipped file on stderr, the other
//! snapshots stay usable, commands that would delete data refuse naming
//! the file, and the repair commands restore full service.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use super::harness::{Env, stderr, write};

/// Two snapshots of `src` (one file changed between them); their ids,
/// oldest first.
fn two_snapshots(env: &Env) -> (PathBuf, Vec<String>) {
    let src = env.path("src");
    write(&src.join("keep.txt"), b"kept in both");
    write(&src.join("f.bin"), &vec![1u8; 40_000]);
    env.ok([OsStr::new("backup"), src.as_os_str()]);
    write(&src.join("f.bin"), &vec![2u8; 40_000]);
    env.ok([OsStr::new("backup"), src.as_os_str()]);
    let ids = env
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect();
    (src, ids)
}

fn flip_last_byte(p: &Path) {
    let mut b = fs::read(p).expect("read");
    let n = b.len();
    b[n - 1] ^= 0x10;
    fs::write(p, b).expect("write");
}

#[test]
fn a_damaged_snapshot_is_skipped_named_and_forgotten_by_repair() {
    let env = Env::init();
    let (src, ids) = two_snapshots(&env);
    let (bad, good) = (&ids[1], &ids[0]);
    flip_last_byte(&env.repo().join("snapshots").join(bad));

    // Listing works, names the damaged file on stderr, lists the other.
    let out = env.ok(["snapshots"]);
    assert!(stderr(&out).contains(bad.as_str()), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&good[..8]), "{text}");
    // The other snapshot by full id: ls, dump, restore.
    let out = env.ok(["ls", good.as_str()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("keep.txt"));
    let out = env.ok([
        OsStr::new("dump"),
        OsStr::new(good),
        src.join("f.bin").as_os_str(),
    ]);
    assert!(out.stdout == vec![1u8; 40_000]);
    let target = env.path("out");
    env.ok([
        OsStr::new("restore"),
        OsStr::new(good),
        OsStr::new("--target"),
        target.as_os_str(),
    ]);
    // A new backup works too. With the cache it takes the snapshot files
    // it needs for the parent search from its own copies (SPEC §12);
    // without, it reads the damaged file, names it and goes on.
    env.ok([OsStr::new("backup"), src.as_os_str()]);
    let out = env.ok([
        OsStr::new("--no-cache"),
        OsStr::new("backup"),
        src.as_os_str(),
    ]);
    assert!(stderr(&out).contains(bad.as_str()), "{}", stderr(&out));
    // Prune refuses, naming the file and the remedy.
    let out = env.run(["prune"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(bad.as_str()), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--forget-damaged"),
        "{}",
        stderr(&out)
    );
    // Repair removes it; then everything is clean again.
    let out = env.ok(["repair", "snapshots", "--forget-damaged"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(bad.as_str()),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!env.repo().join("snapshots").join(bad).exists());
    let out = env.ok(["snapshots"]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    env.ok(["prune"]);
    env.ok(["check", "--read-data"]);
}

#[test]
fn a_damaged_index_file_is_skipped_named_and_replaced_by_repair_index() {
    let env = Env::init();
    let (src, ids) = two_snapshots(&env);
    let mut index: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(env.repo().join("index"))
        .expect("index dir")
        .map(|e| {
            let p = e.expect("entry").path();
            (
                fs::metadata(&p).and_then(|m| m.modified()).expect("mtime"),
                p,
            )
        })
        .collect();
    index.sort();
    let newest = &index.last().expect("an index file").1;
    let name = newest
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    flip_last_byte(newest);

    // With and without the cache (which may have merged the file already).
    for no_cache in [false, true] {
        let args: Vec<&str> = if no_cache {
            vec!["--no-cache", "snapshots"]
        } else {
            vec!["snapshots"]
        };
        let out = env.ok(args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&ids[0][..8]) && text.contains(&ids[1][..8]),
            "{text}"
        );
        if no_cache {
            assert!(stderr(&out).contains(&name), "{}", stderr(&out));
        }
    }
    // With the cache that merged the file before the damage, prune
    // still refuses, naming it and the repair.
    let out = env.run(["prune"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&name), "{}", stderr(&out));
    assert!(stderr(&out).contains("repair index"), "{}", stderr(&out));
    // The first snapshot needs only the older index file.
    let target = env.path("out");
    env.ok([
        OsStr::new("--no-cache"),
        OsStr::new("restore"),
        OsStr::new(&ids[0]),
        OsStr::new("--target"),
        target.as_os_str(),
    ]);
    let out = env.ok([
        OsStr::new("--no-cache"),
        OsStr::new("--json"),
        OsStr::new("backup"),
        src.as_os_str(),
    ]);
    assert!(stderr(&out).contains(&name), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["repository_warnings"].to_string().contains(&name), "{v}");
    let out = env.run(["--no-cache", "prune"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&name), "{}", stderr(&out));
    assert!(stderr(&out).contains("repair index"), "{}", stderr(&out));
    // `repair index` works in exactly this state, with and without reading
    // the data.
    env.ok(["--no-cache", "repair", "index", "--read-data"]);
    assert!(!newest.exists());
    let out = env.ok(["--no-cache", "snapshots"]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    env.ok(["prune"]);
    env.ok(["check", "--read-data"]);
}

/// Issue 12 item 4, as a user sees it: garbage in `marks/` fails `check`
/// naming it but not `prune`, which names it and (past the grace period)
/// deletes it; a heartbeat dated a year ahead is a `check` warning and is
/// named by `prune`, which no longer waits for it.
#[test]
fn garbage_marks_and_future_heartbeats_are_named_not_fatal() {
    let env = Env::init();
    let (_src, ids) = two_snapshots(&env);
    let mark = env.repo().join("marks").join("cd".repeat(32));
    write(&mark, b"garbage");
    let beat = env.repo().join("locks").join("backup-0011223344556677-0");
    write(&beat, &0i64.to_le_bytes());
    let year = std::time::SystemTime::now() + std::time::Duration::from_secs(365 * 86_400);
    filetime::set_file_mtime(&beat, filetime::FileTime::from_system_time(year)).expect("mtime");

    let out = env.run(["check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&"cd".repeat(32)), "{text}");
    assert!(text.contains("backup-0011223344556677-0"), "{text}");

    env.ok(["forget", "--keep-last", "1"]);
    assert_eq!(env.snapshots().len(), 1, "{ids:?}");
    let out = env.ok(["prune", "--grace", "0", "--max-unused", "0"]);
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(all.contains(&"cd".repeat(32)), "{all}");
    assert!(all.contains("backup-0011223344556677-0"), "{all}");
    assert!(!mark.exists());
    // Swept despite the heartbeat: nothing is left condemned.
    assert_eq!(
        fs::read_dir(env.repo().join("marks"))
            .expect("marks")
            .count(),
        0
    );
    fs::remove_file(&beat).expect("rm heartbeat");
    env.ok(["check", "--read-data"]);
}
