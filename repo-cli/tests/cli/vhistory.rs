//! Verification history that travels with the repository (issue 16, SPEC
//! §32): `check --max-age` trusts only what was verified at the same
//! location, on any machine; `report` on a new machine shows the recorded
//! check, drill and exporter verify results.

use std::path::Path;

use super::harness::{Env, assert_success, stderr, write};

/// A repository with a snapshot of a few files.
fn setup() -> Env {
    let env = Env::init();
    for i in 0..3u8 {
        let data: Vec<u8> = (0..200_000u32)
            .map(|n| (n.wrapping_mul(2_654_435_761) >> (8 + i)) as u8)
            .collect();
        write(&env.path(&format!("src/f{i}")), &data);
    }
    env.ok(["backup".as_ref(), env.path("src").as_os_str()]);
    env
}

/// A new machine: the cache directory is gone.
fn new_machine(env: &Env) {
    std::fs::remove_dir_all(env.path("cache")).unwrap();
}

fn flip_a_pack_byte(repo: &Path) {
    let data = repo.join("data");
    for sub in std::fs::read_dir(&data).unwrap() {
        if let Some(f) = std::fs::read_dir(sub.unwrap().path()).unwrap().next() {
            let p = f.unwrap().path();
            let mut b = std::fs::read(&p).unwrap();
            let mid = b.len() / 2;
            b[mid] ^= 0x10;
            std::fs::write(&p, b).unwrap();
            return;
        }
    }
    panic!("no pack in {}", data.display());
}

/// The scenario: check A; copy its bytes to B; flip a byte in a
/// pack of B; `check --read-data --max-age 30d` on B (same machine, same
/// cache) reads B's packs and reports the damage with exit 1.
#[test]
fn check_max_age_on_a_byte_copy_reads_its_packs_and_finds_damage() {
    let env = setup();
    env.ok(["check", "--read-data"]);
    let b = env.path("repo-b");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(env.repo())
        .arg(&b)
        .status()
        .unwrap();
    assert!(st.success());
    flip_a_pack_byte(&b);

    let out = env
        .cmd_at(b.as_os_str())
        .args(["--json", "check", "--read-data", "--max-age", "30d"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["packs"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["packs_checked"], v["packs"], "{v}");
    assert_eq!(v["nothing_due"], false, "{v}");
    let errors = v["errors"].as_array().unwrap();
    assert!(errors.iter().any(|e| e["pack"].is_string()), "{v}");

    // Text, too, names the damage; A itself stays clean and not due.
    let out = env
        .cmd_at(b.as_os_str())
        .args(["check", "--read-data", "--max-age", "30d"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("error:"), "{text}");
    let a = env.json(["check", "--read-data", "--max-age", "30d"]);
    assert_eq!(a["nothing_due"], true, "{a}");
}

/// A second cache directory (a new machine) checking the same location
/// with `--max-age` reads nothing, and says so in text and JSON.
#[test]
fn a_new_machine_reads_nothing_that_was_verified_here_and_says_so() {
    let env = setup();
    env.ok(["check", "--read-data"]);
    new_machine(&env);
    let out = env.ok(["check", "--read-data", "--max-age", "30d"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("nothing due, no packs read"), "{text}");
    new_machine(&env);
    let v = env.json(["check", "--read-data", "--max-age", "30d"]);
    assert_eq!(v["nothing_due"], true, "{v}");
    assert_eq!(v["packs_checked"], 0, "{v}");
    assert_eq!(v["packs_recent"], v["packs"], "{v}");
    assert!(
        v["location"].as_str().unwrap().starts_with("file://"),
        "{v}"
    );
}

/// `report` with a fresh cache shows the check and the drill from the
/// repository's records.
#[test]
fn report_on_a_new_machine_shows_the_check_and_the_drill() {
    let env = setup();
    env.ok(["check", "--read-data"]);
    env.ok(["drill", "latest"]);
    new_machine(&env);
    let out = env.ok(["report", "latest"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("data check (all)"), "{text}");
    assert!(text.contains("restore drill of snapshot"), "{text}");
    let v = env.json(["report", "latest"]);
    let l = &v["verification"][0];
    assert_eq!(l["location"], v["location"], "{v}");
    assert_eq!(l["last_data_check"]["kind"], "check", "{v}");
    assert_eq!(l["last_data_check"]["ok"], true, "{v}");
    assert_eq!(l["last_drill"]["ok"], true, "{v}");
    assert_eq!(v["last_drill"], serde_json::Value::Null, "cache is empty");
}

/// An exporter's verify result (redis, the cheapest test server) appears
/// in `report` on a new machine.
#[test]
fn a_redis_verify_result_appears_in_report() {
    let env = Env::init();
    let server = super::redis::Server::start(&env.path("redis-data"));
    let out = env
        .cmd()
        .env("CAIRN_REDIS_URL", server.url())
        .args(["redis", "backup"])
        .output()
        .unwrap();
    assert_success(&out);
    let v = env.json(["redis", "verify", "latest"]);
    assert_eq!(v["ok"], true, "{v}");
    new_machine(&env);
    let r = env.json(["report", "latest"]);
    let e = &r["verification"][0]["last_exporter_verify"][0];
    assert_eq!(e["command"], "redis verify", "{r}");
    assert_eq!(e["ok"], true, "{r}");
    let text = String::from_utf8_lossy(&env.ok(["report", "latest"]).stdout).into_owned();
    assert!(text.contains("redis verify of snapshot"), "{text}");
}
