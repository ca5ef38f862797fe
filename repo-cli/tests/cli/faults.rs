//! The real binary killed with SIGKILL at random moments (issue 6): during
//! `backup`, `prune` and key changes, in a bounded loop
//! (`CAIRN_KILL_ITERATIONS`, default 8; `CAIRN_TEST_SEED` repeats a run).
//! After every kill `check --read-data` passes, every committed snapshot
//! restores byte for byte, the passwords still open the repository, and a
//! re-run backup takes over the packs the killed one had uploaded.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_testkit::rng::{XorShift, random_bytes};

use super::harness::{Env, PASSWORD, assert_success, only_snapshot, stderr, write};
use super::trees::{
    assert_restores, check_read_data, init_small_packs, read_tree, snapshot_ids, unreferenced_packs,
};

type Tree = BTreeMap<PathBuf, Option<Vec<u8>>>;

fn iterations() -> u64 {
    std::env::var("CAIRN_KILL_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

/// Runs `cmd`, sends SIGKILL after `delay` unless it has exited; true if
/// it was killed (false: it finished first, and succeeded).
fn kill_after(mut cmd: Command, delay: Duration) -> bool {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cairn");
    // The sleep picks the moment of the crash; nothing waits on it.
    std::thread::sleep(delay);
    let killed = match child.try_wait().expect("try_wait") {
        Some(status) => {
            assert!(status.success(), "finished before the kill, but {status}");
            false
        }
        None => {
            child.kill().expect("SIGKILL");
            true
        }
    };
    child.wait().expect("reap");
    killed
}

/// Every snapshot restores as recorded; one not yet known (a backup killed
/// after it wrote its snapshot) must equal `current`, the source as that
/// backup read it, and is recorded.
fn all_snapshots_restore(env: &Env, src: &Path, known: &mut HashMap<String, Tree>, current: &Tree) {
    let ids = snapshot_ids(env);
    for id in known.keys() {
        assert!(ids.contains(id), "committed snapshot {id} is gone");
    }
    for id in ids {
        let expected = known.entry(id.clone()).or_insert_with(|| current.clone());
        assert_restores(env, &id, src, expected);
    }
}

fn backup_json(env: &Env, src: &Path) -> serde_json::Value {
    only_snapshot(&env.json(["backup", src.to_str().expect("utf8")]))
}

#[test]
fn backup_killed_at_random_moments_loses_nothing_and_is_resumed() {
    let env = init_small_packs();
    let mut rng = XorShift::seeded("backup kills");
    let src = env.path("src");
    // Each round rewrites 3 MB: three 1 MiB packs, the first uploaded a
    // third of the way in, so most kills leave packs behind.
    let files = 6u64;
    let size = 600_000;
    for i in 0..files {
        write(&src.join(format!("f{i}")), &random_bytes(size, i));
    }
    let mut known: HashMap<String, Tree> = HashMap::new();
    let started = Instant::now();
    let first = backup_json(&env, &src);
    // How long a whole backup takes here, to aim the kills inside one.
    let full_ms = started.elapsed().as_millis().max(20) as u64;
    known.insert(
        first["snapshot_id"].as_str().expect("id").into(),
        read_tree(&src),
    );
    let (mut kills, mut resumed_packs, mut resumed_bytes) = (0, 0, 0u64);
    for round in 0..iterations() {
        // Most files change: new data for the killed backup to upload,
        // more than one pack.
        let mut new_bytes = 0u64;
        for i in 0..files - 1 {
            let f = (i + round) % files;
            write(
                &src.join(format!("f{f}")),
                &random_bytes(size, rng.next_u64()),
            );
            new_bytes += size as u64;
        }
        let current = read_tree(&src);
        let mut cmd = env.cmd();
        cmd.args(["backup", "-q", src.to_str().expect("utf8")]);
        let delay = Duration::from_millis(1 + rng.below(full_ms));
        if kill_after(cmd, delay) {
            kills += 1;
        }
        let report = check_read_data(&env);
        all_snapshots_restore(&env, &src, &mut known, &current);
        // The re-run reuses what the killed backup uploaded.
        let left = unreferenced_packs(&env, &report);
        let left_bytes: u64 = left.iter().map(|(_, s)| s).sum();
        let rerun = backup_json(&env, &src);
        assert_eq!(
            rerun["packs_resumed"].as_u64(),
            Some(left.len() as u64),
            "round {round}: {rerun}"
        );
        let added = rerun["bytes_added_packed"].as_u64().expect("added");
        // A full data pack left behind (a tree pack is a few KB) must cut
        // the upload: without resuming the re-run stores every new byte.
        if left_bytes >= 1 << 20 {
            assert!(
                added < new_bytes,
                "round {round}: {left_bytes} bytes left by the killed backup, yet the re-run stored {added} of {new_bytes} new bytes"
            );
        }
        resumed_packs += left.len();
        resumed_bytes += left_bytes;
        known.insert(rerun["snapshot_id"].as_str().expect("id").into(), current);
        // Bound the restores of the next round: forgotten snapshots are no
        // longer expected (their data stays; nothing is pruned here).
        env.ok(["forget", "--keep-last", "2", "-q"]);
        let ids = snapshot_ids(&env);
        known.retain(|id, _| ids.contains(id));
    }
    let after = check_read_data(&env);
    assert!(
        unreferenced_packs(&env, &after).is_empty(),
        "the re-runs left packs unindexed: {after}"
    );
    eprintln!(
        "backup: survived {kills} kills in {} rounds; re-runs resumed {resumed_packs} packs ({resumed_bytes} bytes)",
        iterations()
    );
    assert!(kills > 0, "no backup was still running when killed");
    assert!(resumed_packs > 0, "no killed backup left a pack to resume");
    all_snapshots_restore(&env, &src, &mut known, &Tree::new());
    // A killed backup's heartbeat stays until it expires (SPEC §22), and
    // holds back the deletion of what a prune condemns after it began; the
    // prune says so, and nothing is lost meanwhile.
    let stale = fs::read_dir(env.repo().join("locks"))
        .expect("locks")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("backup-"))
        })
        .count();
    env.ok(["forget", "--keep-last", "1", "-q"]);
    let out = env.ok(["prune", "--grace", "0", "--max-unused", "0"]);
    let said = String::from_utf8_lossy(&out.stdout);
    if stale > 0 {
        assert!(
            said.contains("wait for their grace period or a running backup"),
            "{stale} heartbeats of killed backups, yet: {said}"
        );
    }
    check_read_data(&env);
    let ids = snapshot_ids(&env);
    known.retain(|id, _| ids.contains(id));
    assert_eq!(known.len(), 1);
    all_snapshots_restore(&env, &src, &mut known, &Tree::new());
}

#[test]
fn prune_killed_at_random_moments_loses_nothing() {
    let env = init_small_packs();
    let mut rng = XorShift::seeded("prune kills");
    let src = env.path("src");
    let mut known: HashMap<String, Tree> = HashMap::new();
    let generation = |g: u64, known: &mut HashMap<String, Tree>| {
        for i in 0..6u64 {
            if g == 0 || i % 2 == g % 2 {
                write(
                    &src.join(format!("f{i}")),
                    &random_bytes(200_000, g * 100 + i),
                );
            }
        }
        let v = backup_json(&env, &src);
        known.insert(
            v["snapshot_id"].as_str().expect("id").into(),
            read_tree(&src),
        );
    };
    for g in 0..3 {
        generation(g, &mut known);
    }
    // Aim the kills inside a prune of about this much work.
    let started = Instant::now();
    env.ok([
        "prune",
        "--grace",
        "0",
        "--max-unused",
        "0",
        "--dry-run",
        "-q",
    ]);
    let plan_ms = started.elapsed().as_millis().max(20) as u64;
    let mut kills = 0;
    // The window the kill is drawn from halves after each prune that
    // finished first: the dry run's time, taken under another load, can
    // be far above a real prune's, and every kill would come too late.
    let mut window = 3 * plan_ms;
    for round in 0..iterations() {
        generation(3 + round, &mut known);
        env.ok(["forget", "--keep-last", "2", "-q"]);
        let ids = snapshot_ids(&env);
        known.retain(|id, _| ids.contains(id));
        let mut cmd = env.cmd();
        cmd.args(["prune", "--grace", "0", "--max-unused", "0", "-q"]);
        if kill_after(cmd, Duration::from_millis(1 + rng.below(window))) {
            kills += 1;
        } else {
            window = (window / 2).max(2);
        }
        check_read_data(&env);
        all_snapshots_restore(&env, &src, &mut known, &Tree::new());
    }
    eprintln!("prune: survived {kills} kills in {} rounds", iterations());
    assert!(kills > 0, "no prune was still running when killed");
    // What a killed prune left (condemned packs, unindexed repacks) goes
    // with the next prune.
    env.ok(["prune", "--grace", "0", "--max-unused", "0"]);
    let report = check_read_data(&env);
    assert!(
        report["warnings"].as_array().expect("warnings").is_empty(),
        "{report}"
    );
    all_snapshots_restore(&env, &src, &mut known, &Tree::new());
}

/// `cairn ARGS` opened with `password`, `new` as the new password.
fn key_cmd(env: &Env, password: &str, new: Option<&str>, args: &[&str]) -> Command {
    let mut c = env.cmd();
    c.env("CAIRN_PASSWORD", password);
    match new {
        Some(n) => c.env("CAIRN_NEW_PASSWORD", n),
        None => c.env_remove("CAIRN_NEW_PASSWORD"),
    };
    c.args(args);
    c
}

fn opens(env: &Env, password: &str) -> bool {
    let out = key_cmd(env, password, None, &["snapshots", "-q"])
        .output()
        .expect("run");
    if !out.status.success() {
        assert!(
            stderr(&out).contains("wrong password"),
            "not a password failure: {}",
            stderr(&out)
        );
    }
    out.status.success()
}

/// Key files as `key list --json` shows them, opened with `password`: (id,
/// current); asserts none is damaged.
fn key_list(env: &Env, password: &str) -> Vec<(String, bool)> {
    let out = key_cmd(env, password, None, &["--json", "key", "list"])
        .output()
        .expect("run");
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|k| {
            assert_eq!(k["status"], "ok", "a killed key change left {k}");
            (
                k["id"].as_str().expect("id").to_string(),
                k["current"] == true,
            )
        })
        .collect()
}

#[test]
fn key_changes_killed_at_random_moments_keep_a_password_working() {
    let env = Env::init();
    let mut rng = XorShift::seeded("key kills");
    let src = env.path("src");
    write(&src.join("a"), &random_bytes(100_000, 1));
    let id = backup_json(&env, &src)["snapshot_id"]
        .as_str()
        .expect("id")
        .to_string();
    let expected = read_tree(&src);
    let weak = ["--kdf-memory", "64", "--kdf-iterations", "1"];
    let started = Instant::now();
    key_list(&env, PASSWORD);
    let open_ms = started.elapsed().as_millis().max(5) as u64;
    // Passwords that open the repository.
    let mut working: Vec<String> = vec![PASSWORD.to_string()];
    let (mut kills, mut ops) = (HashMap::<&str, u32>::new(), 0);
    for round in 0..iterations() {
        let current = working[rng.below(working.len() as u64) as usize].clone();
        let new = format!("pw-{round}");
        let (op, mut args): (&str, Vec<&str>) = match round % 3 {
            0 => ("add", vec!["key", "add"]),
            1 => ("passwd", vec!["key", "passwd"]),
            _ => ("remove", vec!["key", "remove"]),
        };
        let victim;
        if op == "remove" {
            // Any key but the current one; add one first if there is none.
            if key_list(&env, &current).len() < 2 {
                let mut a = vec!["key", "add"];
                a.extend(weak);
                assert_success(
                    &key_cmd(&env, &current, Some(&new), &a)
                        .output()
                        .expect("add"),
                );
                working.push(new.clone());
            }
            victim = key_list(&env, &current)
                .into_iter()
                .find(|(_, cur)| !cur)
                .expect("a second key")
                .0;
            args.push(&victim);
        } else {
            args.extend(weak);
        }
        let cmd = key_cmd(&env, &current, Some(&new), &args);
        ops += 1;
        if kill_after(cmd, Duration::from_millis(rng.below(2 * open_ms + 2))) {
            *kills.entry(op).or_default() += 1;
        }
        // The password it was opened with still works unless passwd
        // finished; then the new one does: never neither.
        let old_ok = opens(&env, &current);
        let new_ok = opens(&env, &new);
        match op {
            "add" => assert!(
                old_ok,
                "round {round}: a killed add locked out the old password"
            ),
            "passwd" => assert!(
                old_ok || new_ok,
                "round {round}: after a killed passwd neither password opens"
            ),
            _ => assert!(
                old_ok,
                "round {round}: a killed remove locked out the current password"
            ),
        }
        let mut candidates = working.clone();
        candidates.push(new.clone());
        candidates.sort();
        candidates.dedup();
        working = candidates.into_iter().filter(|p| opens(&env, p)).collect();
        assert!(!working.is_empty(), "round {round}: no password opens");
        let env_pw = &working[0];
        key_list(&env, env_pw);
        // The data is untouched.
        let out = key_cmd(&env, env_pw, None, &["--json", "check", "--read-data"])
            .output()
            .expect("check");
        assert_success(&out);
        if env_pw != PASSWORD {
            // assert_restores uses the harness password: make sure it opens.
            if !opens(&env, PASSWORD) {
                let mut a = vec!["key", "add"];
                a.extend(weak);
                assert_success(
                    &key_cmd(&env, env_pw, Some(PASSWORD), &a)
                        .output()
                        .expect("add"),
                );
                working.push(PASSWORD.to_string());
            }
        }
        assert_restores(&env, &id, &src, &expected);
    }
    let total: u32 = kills.values().sum();
    eprintln!("key changes: survived {total} kills in {ops} operations ({kills:?})");
    assert!(total > 0, "no key change was still running when killed");
    let _ = fs::remove_dir_all(env.path("restore"));
}
