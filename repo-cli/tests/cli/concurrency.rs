//! Several `cairn backup` processes and a `cairn prune` (after a forget)
//! against one repository at once, in rounds (issue 6): every backup that
//! exits 0 has its snapshot and it restores exactly, every snapshot kept
//! before still restores, and `check --read-data` passes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Stdio};

use cairn_testkit::rng::{XorShift, random_bytes};

use super::harness::{Env, only_snapshot, stderr, write};
use super::trees::{assert_restores, check_read_data, init_small_packs, read_tree, snapshot_ids};

type Tree = std::collections::BTreeMap<PathBuf, Option<Vec<u8>>>;

const ROUNDS: u64 = 3;
const BACKUPS: u64 = 3;

fn spawn(env: &Env, args: &[&str]) -> Child {
    env.cmd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn")
}

#[test]
fn backups_and_a_prune_at_once_lose_no_snapshot_and_no_chunk() {
    let env = init_small_packs();
    let mut rng = XorShift::seeded("concurrency");
    let srcs: Vec<PathBuf> = (0..BACKUPS).map(|i| env.path(&format!("src{i}"))).collect();
    // Shared content (the same bytes in every tree) dedups across backups
    // and across generations, so the prune condemns and repacks packs the
    // backups are deduplicating against.
    let mut generation = |round: u64| {
        let shared = random_bytes(300_000, rng.next_u64());
        for (i, src) in srcs.iter().enumerate() {
            write(&src.join("shared-old"), &random_bytes(200_000, round / 2));
            write(&src.join("shared-new"), &shared);
            write(
                &src.join("own"),
                &random_bytes(300_000, rng.next_u64() + i as u64),
            );
        }
    };
    let mut known: HashMap<String, (usize, Tree)> = HashMap::new();
    generation(0);
    for (i, src) in srcs.iter().enumerate() {
        let v = only_snapshot(&env.json(["backup", src.to_str().expect("utf8")]));
        known.insert(
            v["snapshot_id"].as_str().expect("id").into(),
            (i, read_tree(src)),
        );
    }
    for round in 1..=ROUNDS {
        generation(round);
        let states: Vec<Tree> = srcs.iter().map(|s| read_tree(s)).collect();
        // Keep the latest of each tree: the older ones' data is garbage.
        env.ok(["forget", "--keep-last", "1", "-q"]);
        let ids = snapshot_ids(&env);
        known.retain(|id, _| ids.contains(id));
        let prune = spawn(&env, &["prune", "--grace", "0", "--max-unused", "0", "-q"]);
        let backups: Vec<Child> = srcs
            .iter()
            .map(|s| spawn(&env, &["--json", "backup", s.to_str().expect("utf8")]))
            .collect();
        for (i, b) in backups.into_iter().enumerate() {
            let out = b.wait_with_output().expect("backup");
            assert!(
                out.status.success(),
                "round {round}: backup {i} failed: {}",
                stderr(&out)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            let v = only_snapshot(&v);
            known.insert(
                v["snapshot_id"].as_str().expect("id").into(),
                (i, states[i].clone()),
            );
        }
        let p = prune.wait_with_output().expect("prune");
        assert!(
            p.status.success(),
            "round {round}: prune failed: {}",
            stderr(&p)
        );
        check_read_data(&env);
        let ids = snapshot_ids(&env);
        for (id, (i, tree)) in &known {
            assert!(ids.contains(id), "round {round}: snapshot {id} is lost");
            assert_restores(&env, id, &srcs[*i], tree);
        }
    }
    // Nothing runs now: a last prune frees what the rounds left and loses
    // nothing either.
    env.ok(["prune", "--grace", "0", "--max-unused", "0", "-q"]);
    check_read_data(&env);
    for (id, (i, tree)) in &known {
        assert_restores(&env, id, &srcs[*i], tree);
    }
    eprintln!(
        "concurrency: {ROUNDS} rounds of {BACKUPS} backups and a prune, {} snapshots restored",
        known.len()
    );
}

/// Two prunes at once (the second started at a random moment of the
/// first): both succeed, and the kept snapshot restores (SPEC §22: "at
/// worst they repack the same data twice").
#[test]
fn two_prunes_at_once_both_succeed_and_lose_nothing() {
    let env = init_small_packs();
    let mut rng = XorShift::seeded("two prunes");
    let src = env.path("src");
    for g in 0..4u64 {
        for i in 0..4u64 {
            if g == 0 || i % 2 == g % 2 {
                write(
                    &src.join(format!("f{i}")),
                    &random_bytes(400_000, g * 10 + i),
                );
            }
        }
        env.ok(["backup", "-q", src.to_str().expect("utf8")]);
    }
    for round in 0..ROUNDS {
        write(&src.join("f0"), &random_bytes(400_000, rng.next_u64()));
        let v = only_snapshot(&env.json(["backup", src.to_str().expect("utf8")]));
        let last = v["snapshot_id"].as_str().expect("id").to_string();
        let tree = read_tree(&src);
        env.ok(["forget", "--keep-last", "1", "-q"]);
        let a = spawn(&env, &["prune", "--grace", "0", "--max-unused", "0", "-q"]);
        // The moment the second one joins in; nothing waits on it.
        std::thread::sleep(std::time::Duration::from_millis(rng.below(300)));
        let b = spawn(&env, &["prune", "--grace", "0", "--max-unused", "0", "-q"]);
        for (n, p) in [a, b].into_iter().enumerate() {
            let out = p.wait_with_output().expect("prune");
            assert!(
                out.status.success(),
                "round {round}: prune {n} failed: {}",
                stderr(&out)
            );
        }
        check_read_data(&env);
        assert_restores(&env, &last, &src, &tree);
    }
}
