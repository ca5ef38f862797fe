//! Issue 14, "Speed on a network": `--connections` and the `requests` that
//! backup, restore, check and drill report under `--json`
//! (docs/scripting.md, Requests).

use serde_json::Value;

use super::harness::{Env, stderr, write};

/// The fields of `requests`, the same in every report.
const FIELDS: [&str; 8] = [
    "bytes_received",
    "bytes_sent",
    "delete",
    "list",
    "read",
    "read_range",
    "stat",
    "write",
];

/// `report["requests"]` with exactly [`FIELDS`], each an integer.
fn requests<'a>(what: &str, report: &'a Value) -> &'a Value {
    let r = &report["requests"];
    let obj = r
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no requests object: {report}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, FIELDS, "{what}: {r}");
    for f in FIELDS {
        assert!(r[f].is_u64(), "{what}: {f} is not an integer: {r}");
    }
    r
}

fn n(r: &Value, f: &str) -> u64 {
    r[f].as_u64().unwrap()
}

/// Each command reports what it asked of the storage: a first backup
/// sends what it stores, a nothing-changed one sends and receives little,
/// restore and check read what they need and write nothing.
#[test]
fn json_reports_requests_by_kind() {
    let env = Env::init();
    let src = env.path("src");
    for i in 0..30u32 {
        let data: Vec<u8> = (0..50_000u32)
            .map(|j| (j * 7 + i) as u8 ^ (j >> 9) as u8)
            .collect();
        write(&src.join(format!("d{}/f{i}", i % 3)), &data);
    }
    let src_s = src.to_str().unwrap();

    let first = env.json(["backup", src_s]);
    let r = requests("first backup", &first);
    let stored = first["snapshots"][0]["bytes_added_packed"]
        .as_u64()
        .unwrap();
    assert!(
        n(r, "write") >= 3,
        "a pack, an index file and the snapshot: {r}"
    );
    assert!(n(r, "bytes_sent") >= stored, "{r}");

    let again = env.json(["backup", src_s]);
    let r = requests("nothing-changed backup", &again);
    assert_eq!(again["snapshots"][0]["files_unmodified"], 30);
    // The heartbeat and the snapshot (and a pack and an index file of new
    // trees, if other tests changed `/tmp` meanwhile); the parent's trees
    // come from the cache.
    assert!(n(r, "write") <= 4, "{r}");
    assert_eq!(n(r, "read_range"), 0, "{r}");
    assert!(n(r, "bytes_sent") < 16 * 1024, "{r}");
    assert!(n(r, "bytes_received") < stored / 4, "it re-read data: {r}");

    let restored = env.json([
        "restore",
        "latest",
        "--target",
        env.path("out").to_str().unwrap(),
    ]);
    let r = requests("restore", &restored);
    assert_eq!((n(r, "write"), n(r, "delete")), (0, 0), "{r}");
    // Pack-ordered: the 30 files' chunks (1.5 MB, few packs) come in a
    // few spans, plus the four trees; never one read per chunk.
    assert!(
        (1..30).contains(&n(r, "read_range")),
        "a few spans and the trees, not a read per chunk: {r}"
    );
    assert!(n(r, "bytes_received") >= stored, "{r}");

    let checked = env.json(["check", "--read-data"]);
    let r = requests("check", &checked);
    assert!(n(r, "bytes_received") >= stored, "{r}");
    // Its one write is its verification record (SPEC §32).
    assert_eq!(n(r, "write"), 1, "{r}");

    let drilled = env.json(["drill", "latest", "--sample", "100%"]);
    let r = requests("drill", &drilled);
    assert!(n(r, "read_range") >= 1, "{r}");
}

/// `--connections` and `CAIRN_CONNECTIONS` take 1 to 64; anything else is
/// refused before the repository is touched.
#[test]
fn connections_flag_and_environment() {
    let env = Env::init();
    let src = env.path("src");
    write(&src.join("a"), b"hello");
    let src_s = src.to_str().unwrap();
    for bad in ["0", "65", "many"] {
        let out = env.run(["--connections", bad, "backup", src_s]);
        assert_eq!(out.status.code(), Some(1), "--connections {bad}");
        assert!(stderr(&out).contains("--connections"), "{}", stderr(&out));
    }
    assert!(env.snapshots().is_empty());
    env.ok(["--connections", "1", "backup", src_s]);
    let out = env
        .cmd()
        .env("CAIRN_CONNECTIONS", "8")
        .args(["restore", "latest", "--target"])
        .arg(env.path("out"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env
        .cmd()
        .env("CAIRN_CONNECTIONS", "0")
        .args(["check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}
