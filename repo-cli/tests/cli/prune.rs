//! `cairn prune` and `forget --prune` as separate processes: space comes
//! back, `check` passes, a killed prune harms nothing, and backups run while
//! prunes do (issue 3).

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::harness::{Env, assert_success, stderr};
use cairn_testkit::rng::random_bytes;

use super::trees::init_small_packs;

fn data_bytes(repo: &Path) -> u64 {
    let mut total = 0;
    for d in fs::read_dir(repo.join("data")).expect("data") {
        for f in fs::read_dir(d.expect("dir").path()).expect("subdir") {
            total += f.expect("file").metadata().expect("md").len();
        }
    }
    total
}

/// A repository with 1 MiB packs and `generations` backups of `src`, each
/// rewriting three of its six 700 KB files.
fn generations(env: &Env, generations: u64) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(&src).expect("src");
    for g in 0..generations {
        for i in 0..6u64 {
            if g == 0 || i < 3 {
                fs::write(
                    src.join(format!("f{i}")),
                    random_bytes(700_000, g * 100 + i),
                )
                .expect("write");
            }
        }
        env.ok(["backup", "-q", src.to_str().expect("utf8")]);
    }
    src
}

fn restores_identically(env: &Env, src: &Path, target: &str) {
    let out = env.path(target);
    let _ = fs::remove_dir_all(&out);
    env.ok(["restore", "latest", "--target", out.to_str().expect("utf8")]);
    let root = out.join(src.strip_prefix("/").expect("absolute"));
    for i in 0..6 {
        let name = format!("f{i}");
        assert_eq!(
            fs::read(root.join(&name)).expect("restored"),
            fs::read(src.join(&name)).expect("source"),
            "{name}"
        );
    }
}

#[test]
fn forget_with_prune_returns_the_space_and_check_passes() {
    let env = init_small_packs();
    let src = generations(&env, 4);
    let before = data_bytes(&env.repo());
    let v = env.json([
        "forget",
        "--keep-last",
        "1",
        "--prune",
        "--grace",
        "0",
        "--max-unused",
        "0",
    ]);
    assert_eq!(v["removed"].as_array().expect("removed").len(), 3, "{v}");
    let after = data_bytes(&env.repo());
    // One generation: six 700 KB files of noise, ~4.2 MB.
    assert!(after < before / 2, "{before} -> {after}");
    assert!(
        (4_100_000..4_700_000).contains(&after),
        "{after} bytes left for 4.2 MB of live data"
    );
    env.ok(["check", "--read-data"]);
    restores_identically(&env, &src, "out");
}

#[test]
fn a_prune_killed_at_random_moments_leaves_a_checkable_repository() {
    let env = init_small_packs();
    let src = generations(&env, 4);
    env.ok(["forget", "--keep-last", "1"]);
    let mut kills = 0;
    for delay_ms in [1u64, 3, 8, 15, 30, 60, 120] {
        let mut child = env
            .cmd()
            .args(["prune", "--grace", "0", "--max-unused", "0", "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn prune");
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        child.wait().expect("reap");
        // After every kill: the structure checks out and the kept snapshot restores.
        let check = env.run(["check"]);
        assert!(
            check.status.success(),
            "check after a kill at {delay_ms} ms: {}",
            stderr(&check)
        );
        restores_identically(&env, &src, "out");
    }
    assert!(
        kills >= 2,
        "only {kills} prunes were still running when killed"
    );
    env.ok(["prune", "--grace", "0", "--max-unused", "0"]);
    env.ok(["check", "--read-data"]);
    restores_identically(&env, &src, "out");
}

#[test]
fn a_backup_started_during_a_prune_completes_and_restores() {
    let env = init_small_packs();
    let src = generations(&env, 3);
    env.ok(["forget", "--keep-last", "1"]);
    for round in 0..3u64 {
        // New data sharing half its files with what the prune handles.
        for i in 3..6u64 {
            fs::write(
                src.join(format!("f{i}")),
                random_bytes(700_000, 1000 + round * 10 + i),
            )
            .expect("write");
        }
        let prune = env
            .cmd()
            .args(["prune", "--grace", "0", "--max-unused", "0", "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn prune");
        let backup = env
            .cmd()
            .args(["backup", "-q", src.to_str().expect("utf8")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn backup");
        let b = backup.wait_with_output().expect("backup");
        let p = prune.wait_with_output().expect("prune");
        assert_success(&b);
        assert_success(&p);
        restores_identically(&env, &src, "out");
    }
    env.ok(["prune", "--grace", "0"]);
    env.ok(["check", "--read-data"]);
    restores_identically(&env, &src, "out");
}

#[test]
fn prune_dry_run_changes_nothing_and_repair_index_restores_a_lost_index() {
    let env = init_small_packs();
    let src = generations(&env, 2);
    env.ok(["forget", "--keep-last", "1"]);
    let before = data_bytes(&env.repo());
    let v = env.json(["prune", "--dry-run", "--grace", "0"]);
    assert!(
        !v["plan"]["condemn"].as_array().expect("condemn").is_empty(),
        "{v}"
    );
    assert_eq!(data_bytes(&env.repo()), before);
    for f in fs::read_dir(env.repo().join("index")).expect("index") {
        fs::remove_file(f.expect("entry").path()).expect("rm");
    }
    env.ok(["repair", "index"]);
    restores_identically(&env, &src, "out");
    let r = env.json(["repair", "snapshots"]);
    assert_eq!(
        r["rewritten"].as_array().expect("rewritten").len(),
        0,
        "{r}"
    );
}

#[test]
fn check_reports_a_damaged_index_file_even_with_a_fresh_cache() {
    let env = init_small_packs();
    generations(&env, 1);
    let idx = fs::read_dir(env.repo().join("index"))
        .expect("index")
        .next()
        .expect("an index file")
        .expect("entry")
        .path();
    let bytes = fs::read(&idx).expect("read");
    fs::write(&idx, &bytes[..bytes.len() - 7]).expect("truncate");
    let _ = fs::remove_dir_all(env.path("cache"));
    let name = idx
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let out = env.cmd().args(["--json", "check"]).output().expect("check");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("a JSON report, not an open failure");
    assert!(report.to_string().contains(&name), "{report}");
    // Other commands work on the rest, naming the file (issue 12).
    let ls = env.run(["snapshots"]);
    assert!(
        ls.status.success() && stderr(&ls).contains(&name),
        "{}",
        stderr(&ls)
    );
}
