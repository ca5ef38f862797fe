//! forget: dry runs change nothing, real runs delete exactly the plan, and a
//! policy without rules is refused.

use std::collections::BTreeSet;

use serde_json::Value;

use super::harness::{Env, assert_success, only_snapshot, stderr};

/// Backs up a small stream as `host`, with `tags`; returns the snapshot id.
fn backup(env: &Env, host: &str, tags: &[&str], content: &[u8]) -> String {
    let mut args = vec![
        "--json",
        "backup",
        "--stdin",
        "--stdin-filename",
        "db.sql",
        "--host",
        host,
    ];
    for t in tags {
        args.extend(["--tag", t]);
    }
    let out = env.run_with_stdin(args, content);
    assert_success(&out);
    let v: Value = serde_json::from_slice(&out.stdout).expect("backup --json");
    only_snapshot(&v)["snapshot_id"]
        .as_str()
        .expect("snapshot_id")
        .to_string()
}

fn ids(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_str().expect("id").to_string())
        .collect()
}

fn snapshot_ids(env: &Env) -> BTreeSet<String> {
    env.snapshots()
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect()
}

/// Ids listed under `keep` or `remove` in every group of a plan.
fn plan_ids(plan: &Value, list: &str) -> BTreeSet<String> {
    plan["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g[list].as_array().expect("list").iter())
        .map(|e| e["id"].as_str().expect("id").to_string())
        .collect()
}

/// Four snapshots of host h1 (oldest first) and one of h2.
fn populated() -> (Env, Vec<String>, String) {
    let env = Env::init();
    let h1: Vec<String> = (0..4)
        .map(|i| {
            let tags: &[&str] = if i == 0 { &["keep"] } else { &[] };
            backup(&env, "h1", tags, format!("dump {i}\n").as_bytes())
        })
        .collect();
    let h2 = backup(&env, "h2", &[], b"other host\n");
    (env, h1, h2)
}

#[test]
fn dry_run_removes_nothing_and_a_real_run_removes_exactly_the_plan() {
    let (env, h1, h2) = populated();
    let all = snapshot_ids(&env);
    assert_eq!(all.len(), 5);

    let dry = env.json(["forget", "--keep-last", "2", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["removed"], Value::Array(vec![]));
    let plan = &dry["plan"];
    // Grouped by host and paths: h1's group and h2's group.
    assert_eq!(plan["groups"].as_array().expect("groups").len(), 2);
    assert_eq!(plan["groups"][0]["key"]["host"], "h1");
    assert_eq!(plan["groups"][0]["key"]["paths"][0], "db.sql");
    assert_eq!(plan["groups"][0]["keep"][0]["id"], h1[3].as_str());
    assert_eq!(plan["groups"][0]["keep"][0]["reasons"][0], "last snapshot");
    let planned_remove = plan_ids(plan, "remove");
    let want: BTreeSet<String> = [h1[0].clone(), h1[1].clone()].into();
    assert_eq!(planned_remove, want);
    assert_eq!(
        plan_ids(plan, "keep"),
        [h1[2].clone(), h1[3].clone(), h2.clone()].into()
    );
    // Nothing was deleted.
    assert_eq!(snapshot_ids(&env), all);

    // The same policy for real deletes exactly what the dry run planned.
    let real = env.json(["forget", "--keep-last", "2"]);
    assert_eq!(real["dry_run"], false);
    assert_eq!(plan_ids(&real["plan"], "remove"), planned_remove);
    assert_eq!(ids(&real["removed"]), planned_remove);
    let left: BTreeSet<String> = all.difference(&planned_remove).cloned().collect();
    assert_eq!(snapshot_ids(&env), left);
    // Run again: nothing more to do.
    let again = env.json(["forget", "--keep-last", "2"]);
    assert_eq!(again["removed"], Value::Array(vec![]));
    assert_eq!(snapshot_ids(&env), left);
}

#[test]
fn human_output_says_what_is_kept_and_why() {
    let (env, h1, _) = populated();
    let out = env.ok([
        "forget",
        "--keep-last",
        "1",
        "--keep-tag",
        "keep",
        "--dry-run",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "applying policy: keep 1 latest snapshots and all snapshots with tags [keep]"
        ),
        "{text}"
    );
    assert!(
        text.contains("snapshots for host h1, paths [db.sql]:"),
        "{text}"
    );
    assert!(text.contains("keep 2 snapshots:"), "{text}");
    // The newest with its reason, the tagged one with its own.
    let short = |id: &str| id[..8].to_string();
    let line_of = |id: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&short(id)))
            .unwrap_or_else(|| panic!("{id} not listed: {text}"))
            .to_string()
    };
    assert!(line_of(&h1[3]).ends_with("last snapshot"), "{text}");
    assert!(line_of(&h1[0]).ends_with("has tags [keep]"), "{text}");
    assert!(text.contains("remove 2 snapshots:"), "{text}");
    assert!(text.contains("dry run: would remove 2 snapshots"), "{text}");
    assert_eq!(env.snapshots().len(), 5);
}

#[test]
fn filters_leave_other_snapshots_alone() {
    let (env, h1, h2) = populated();
    // Only h1 is considered, and only its tagged snapshot is kept.
    let v = env.json(["forget", "--host", "h1", "--keep-tag", "keep"]);
    assert_eq!(v["plan"]["groups"].as_array().expect("groups").len(), 1);
    assert_eq!(
        ids(&v["removed"]),
        [h1[1].clone(), h1[2].clone(), h1[3].clone()].into()
    );
    assert_eq!(snapshot_ids(&env), [h1[0].clone(), h2].into());
}

#[test]
fn group_by_changes_the_groups() {
    let (env, h1, _) = populated();
    // One group for everything: keep-last 1 keeps only h2's (the newest).
    let v = env.json(["forget", "--keep-last", "1", "--group-by", "", "--dry-run"]);
    let groups = v["plan"]["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["key"], serde_json::json!({}));
    assert_eq!(plan_ids(&v["plan"], "remove").len(), 4);
    assert!(plan_ids(&v["plan"], "remove").contains(&h1[3]));
    let bad = env.run(["forget", "--keep-last", "1", "--group-by", "hosts"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("cannot group by \"hosts\""),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn a_policy_without_rules_is_refused() {
    let (env, _, _) = populated();
    for args in [
        vec!["forget"],
        vec!["forget", "--dry-run"],
        vec!["forget", "--keep-daily", "0", "--host", "h1"],
    ] {
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("no keep rule given: refusing to forget every snapshot"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(env.snapshots().len(), 5);
}

#[test]
fn bad_durations_and_counts_are_usage_errors() {
    let env = Env::init();
    let out = env.run(["forget", "--keep-within", "30x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("units are y, m, w, d, h"),
        "{}",
        stderr(&out)
    );
    let out = env.run(["forget", "--keep-daily", "many"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a count"), "{}", stderr(&out));
}

#[test]
fn keep_within_and_unlimited_parse() {
    let (env, _, _) = populated();
    // Every snapshot is within a day of its group's newest.
    let v = env.json(["forget", "--keep-within", "1d", "--dry-run"]);
    assert_eq!(plan_ids(&v["plan"], "remove").len(), 0);
    assert_eq!(v["plan"]["groups"][0]["keep"][0]["reasons"][0], "within 1d");
    assert_eq!(v["policy"], "keep all snapshots within 1d of the newest");
    let v = env.json(["forget", "--keep-hourly", "unlimited", "--dry-run"]);
    assert_eq!(v["policy"], "keep all hourly snapshots");
}

#[test]
fn calendar_periods_use_the_local_time_zone() {
    let (env, _, _) = populated();
    // POSIX TZ: "XXX-2" is two hours east of UTC.
    let out = env
        .cmd()
        .env("TZ", "XXX-2")
        .args(["--json", "forget", "--keep-daily", "1", "--dry-run"])
        .output()
        .expect("run cairn");
    assert_success(&out);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["plan"]["utc_offset"], "+02:00");
}

#[test]
fn prune_runs_after_a_real_forget_only() {
    let (env, h1, h2) = populated();
    // Dry run: nothing forgotten, nothing pruned.
    let v = env.json(["forget", "--keep-last", "1", "--prune", "--dry-run"]);
    assert!(v["prune"].is_null(), "{v}");
    assert_eq!(env.snapshots().len(), 5);
    let out = env.ok(["forget", "--keep-last", "1", "--prune", "--dry-run"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--prune is skipped in a dry run"));
    // Real run: the snapshots go, then the prune reports what it did.
    let v = env.json(["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(v["removed"].as_array().expect("removed").len(), 3);
    assert!(v["prune"]["plan"].is_object(), "{v}");
    assert!(v["prune"]["summary"]["packs_condemned"].is_u64(), "{v}");
    assert_eq!(snapshot_ids(&env), [h1[3].clone(), h2].into());
    // The kept snapshots still restore.
    let out = env.ok(["dump", &h1[3], "db.sql"]);
    assert_eq!(out.stdout, b"dump 3\n");
}
