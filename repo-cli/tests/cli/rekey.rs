//! `cairn rekey` as a process (SPEC §30): a time-limited run exits 3 and
//! says what remains, a rerun finishes, `--json` maps old snapshot ids to
//! new ones, every snapshot still restores, and after `key retire` the
//! old epoch is gone.

use std::fs;

use super::harness::assert_success;
use super::trees::init_small_packs;
use cairn_testkit::rng::random_bytes;

#[test]
fn a_stopped_rekey_exits_3_and_the_rerun_finishes() {
    let env = init_small_packs();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("src");
    for g in 0..2u64 {
        for i in 0..4u64 {
            fs::write(src.join(format!("f{i}")), random_bytes(600_000, g * 10 + i)).expect("write");
        }
        env.ok(["backup", "-q", src.to_str().expect("utf8")]);
    }
    let before: Vec<String> = env
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect();

    // Nothing to do with a single epoch.
    let out = env.ok(["rekey"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to rekey"),
        "{out:?}"
    );

    env.ok(["key", "rotate"]);
    let stopped = env.run(["rekey", "--max-duration", "0", "--grace", "0"]);
    assert_eq!(stopped.status.code(), Some(3), "{stopped:?}");
    let text = String::from_utf8_lossy(&stopped.stdout);
    assert!(text.contains("incomplete (time limit)"), "{text}");
    env.ok(["check", "--read-data"]);

    let out = env
        .cmd()
        .args(["--json", "rekey", "--grace", "0"])
        .output()
        .expect("run");
    assert_success(&out);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mapped: Vec<(String, String)> = r["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|s| {
            (
                s["old"].as_str().expect("old").to_string(),
                s["new"].as_str().expect("new").to_string(),
            )
        })
        .collect();
    let mut olds: Vec<String> = mapped.iter().map(|(o, _)| o.clone()).collect();
    olds.sort();
    let mut want = before.clone();
    want.sort();
    assert_eq!(olds, want, "{r}");
    assert!(r["packs_rewritten"].as_u64().expect("n") > 0, "{r}");
    assert_eq!(r["remaining"]["packs"], 0, "{r}");

    env.ok(["check", "--read-data"]);
    let after: Vec<String> = env
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(after.len(), 2);
    for (_, new) in &mapped {
        assert!(after.contains(new), "{new} not listed: {after:?}");
    }
    let out_dir = env.path("out");
    env.ok([
        "restore",
        "latest",
        "--target",
        out_dir.to_str().expect("utf8"),
    ]);
    let root = out_dir.join(src.strip_prefix("/").expect("absolute"));
    for i in 0..4 {
        let n = format!("f{i}");
        assert_eq!(
            fs::read(root.join(&n)).expect("restored"),
            fs::read(src.join(&n)).expect("source"),
            "{n}"
        );
    }
    // An old id still names the snapshot.
    let (old, new) = &mapped[0];
    let listed = env.ok(["ls", old.as_str()]);
    let via_new = env.ok(["ls", new.as_str()]);
    assert_eq!(listed.stdout, via_new.stdout);
    // A further run finds nothing stale.
    let again = env.ok(["rekey", "--grace", "0"]);
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(text.contains("rewrote 0 packs"), "{text}");
}

#[test]
fn rotate_rekey_retire_leaves_every_snapshot_restorable() {
    let env = init_small_packs();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("src");
    let mut contents = Vec::new();
    for g in 0..2u64 {
        fs::write(src.join("f"), random_bytes(900_000, 40 + g)).expect("write");
        env.ok(["backup", "-q", src.to_str().expect("utf8")]);
        contents.push(fs::read(src.join("f")).expect("read"));
        if g == 0 {
            // A verification record and audit records under epoch 0 too.
            env.ok(["check"]);
            env.ok(["key", "rotate"]);
        }
    }
    // Epoch 0 still seals the first snapshot and its data: retire refuses.
    let refused = env.run(["key", "retire", "0"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");

    let r = env.json(["rekey", "--grace", "0"]);
    assert_eq!(r["epochs_differ"], true, "{r}");
    assert_eq!(
        r["snapshots"].as_array().expect("snapshots").len(),
        1,
        "{r}"
    );
    assert!(r["packs_rewritten"].as_u64().expect("n") > 0, "{r}");
    assert!(r["audit_objects_rewritten"].as_u64().expect("n") > 0, "{r}");
    assert!(
        r["verification_records_rewritten"].as_u64().expect("n") > 0,
        "{r}"
    );
    env.ok(["key", "retire", "0"]);
    env.ok(["check", "--read-data"]);
    // The trail and the verification history survive the re-sealing.
    env.ok(["audit", "verify"]);
    let report = env.json(["report", "latest"]);
    assert!(
        !report["verification"]
            .as_array()
            .expect("verification")
            .is_empty(),
        "{report}"
    );
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 2);
    for (i, s) in snaps.iter().enumerate() {
        let out = env.path(&format!("out{i}"));
        env.ok([
            "restore",
            s["id"].as_str().expect("id"),
            "--target",
            out.to_str().expect("utf8"),
        ]);
        let got = fs::read(out.join(src.strip_prefix("/").expect("abs")).join("f")).expect("f");
        assert!(contents.contains(&got), "snapshot {i} restores other bytes");
    }
}
