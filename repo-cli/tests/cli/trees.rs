//! Helpers of the fault, concurrency and exhaustion tests: comparing a
//! restored snapshot with the tree it was made from. Seeded randomness and
//! incompressible content come from `cairn_testkit::rng`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::harness::Env;

/// Every regular file below `root` (relative path → content); directories
/// appear with an empty marker so empty ones are compared too.
pub fn read_tree(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for e in fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            let rel = p.strip_prefix(root).expect("below root").to_path_buf();
            if p.symlink_metadata().expect("lstat").is_dir() {
                out.insert(rel, None);
                walk(&p, root, out);
            } else {
                out.insert(rel, Some(fs::read(&p).expect("read")));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Restores snapshot `id` into a fresh directory and returns the restored
/// copy of `src` (restore recreates the absolute path below the target).
pub fn restore(env: &Env, id: &str, src: &Path) -> PathBuf {
    let target = env.path(&format!("restore-{}", &id[..12.min(id.len())]));
    let _ = fs::remove_dir_all(&target);
    env.ok(["restore", id, "--target", target.to_str().expect("utf8")]);
    target.join(src.strip_prefix("/").expect("absolute"))
}

/// Restores snapshot `id` and asserts it equals `expected` byte for byte.
pub fn assert_restores(
    env: &Env,
    id: &str,
    src: &Path,
    expected: &BTreeMap<PathBuf, Option<Vec<u8>>>,
) {
    let root = restore(env, id, src);
    let got = read_tree(&root);
    let _ = fs::remove_dir_all(env.path(&format!("restore-{}", &id[..12.min(id.len())])));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "snapshot {id}: restored paths differ"
    );
    for (p, c) in expected {
        assert!(got[p] == *c, "snapshot {id}: {} differs", p.display());
    }
}

/// Ids of every snapshot in the repository.
pub fn snapshot_ids(env: &Env) -> Vec<String> {
    env.snapshots()
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect()
}

/// `check --read-data` must pass; returns the JSON report.
pub fn check_read_data(env: &Env) -> serde_json::Value {
    let out = env
        .cmd()
        .args(["--json", "check", "--read-data"])
        .output()
        .expect("check");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check printed no report ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && report["ok"] == true,
        "check --read-data failed: {report}"
    );
    report
}

/// Packs `check` reports as in no index file, with their sizes.
pub fn unreferenced_packs(env: &Env, report: &serde_json::Value) -> Vec<(String, u64)> {
    report["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter(|w| w["kind"] == "pack_unreferenced")
        .filter_map(|w| w["pack"].as_str())
        .map(|p| {
            let size = fs::metadata(env.repo().join("data").join(&p[..2]).join(p))
                .map(|m| m.len())
                .unwrap_or(0);
            (p.to_string(), size)
        })
        .collect()
}

/// A repository with a fast key and 1 MiB packs, so small trees span
/// several packs (prune and crash tests need packs to condemn and lose).
pub fn init_small_packs() -> Env {
    let env = Env::empty();
    env.ok([
        "init",
        "--kdf-memory",
        "64",
        "--kdf-iterations",
        "1",
        "--pack-size",
        "1",
    ]);
    env
}
