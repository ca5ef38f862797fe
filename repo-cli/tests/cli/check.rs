//! Verify: `check`, `drill` and `report` from the outside (issue 3).

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::harness::{Env, assert_success, stderr, write};

/// Every pack file of the repository (`data/xx/<id>`), largest first.
fn packs(env: &Env) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = Vec::new();
    for sub in fs::read_dir(env.repo().join("data")).expect("data dir") {
        for f in fs::read_dir(sub.expect("entry").path()).expect("subdir") {
            v.push(f.expect("entry").path());
        }
    }
    v.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).expect("meta").len()));
    v
}

fn name(p: &Path) -> String {
    p.file_name().expect("name").to_string_lossy().into_owned()
}

/// A repository with one snapshot whose only file content is `big.bin`.
fn one_data_file() -> (Env, PathBuf) {
    let env = Env::init();
    let src = env.path("src");
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write(&src.join("big.bin"), &data);
    write(&src.join("sub/empty"), b"");
    env.ok([OsStr::new("backup"), src.as_os_str()]);
    (env, src)
}

#[test]
fn flipped_byte_passes_structure_and_fails_read_data_with_exit_1() {
    let (env, src) = one_data_file();
    let out = env.ok(["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no errors found"), "{text}");

    // The largest pack holds big.bin's data; flip a byte inside its first blob.
    let victim = packs(&env).remove(0);
    let mut bytes = fs::read(&victim).expect("read pack");
    bytes[12 + 100] ^= 0x10;
    fs::write(&victim, &bytes).expect("write pack");

    let structural = env.json(["check"]);
    assert_eq!(structural["ok"], true, "{structural}");
    assert_eq!(structural["errors"], Value::Array(vec![]));

    let out = env.run(["--json", "check", "--read-data"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ok"], false);
    assert_eq!(v["read_data"], "all");
    let errors = v["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{v}");
    assert_eq!(errors[0]["kind"], "blob_damaged");
    assert_eq!(errors[0]["pack"], name(&victim));
    let big = src.join("big.bin").display().to_string();
    assert_eq!(errors[0]["paths"], serde_json::json!([big]));
    assert!(
        stderr(&out).contains("check found 1 error"),
        "{}",
        stderr(&out)
    );

    // Human output names the pack and the file too.
    let out = env.run(["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&name(&victim)) && text.contains(&big),
        "{text}"
    );
}

#[test]
fn missing_pack_and_truncated_index_are_named() {
    let (env, src) = one_data_file();
    let victim = packs(&env).remove(0);
    fs::remove_file(&victim).expect("rm");
    let out = env.run(["check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&name(&victim)), "{text}");
    assert!(
        text.contains(&src.join("big.bin").display().to_string()),
        "{text}"
    );

    let idx = fs::read_dir(env.repo().join("index"))
        .expect("index dir")
        .next()
        .expect("an index file")
        .expect("entry")
        .path();
    let b = fs::read(&idx).expect("read");
    fs::write(&idx, &b[..b.len() - 9]).expect("truncate");
    // The cache merged this file already, so the repository opens and
    // check reads the file itself.
    let out = env.run(["--json", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let e = &v["errors"][0];
    assert_eq!(e["kind"], "index_corrupt", "{v}");
    assert_eq!(e["index"], name(&idx));
}

#[test]
fn subset_runs_rotate_and_report_shows_them() {
    let env = Env::init();
    let src = env.path("src");
    for i in 0..3u32 {
        let data: Vec<u8> = (0..50_000u32).map(|j| (j * 7 + i * 13) as u8).collect();
        write(&src.join(format!("f{i}")), &data);
        env.ok([OsStr::new("backup"), src.as_os_str()]);
    }
    let total = packs(&env).len() as u64;
    assert!(total >= 4, "{total} packs");
    let mut checked = 0;
    for _ in 0..2 {
        let v = env.json(["check", "--read-data-subset", "50%"]);
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["read_data"], "50%");
        checked += v["packs_checked"].as_u64().expect("count");
    }
    assert_eq!(checked, total, "two 50% runs read every pack once");
    let v = env.json(["check", "--read-data", "--max-age", "30d"]);
    assert_eq!(v["packs_selected"], 0, "{v}");

    let r = env.json(["report", "latest"]);
    let snaps = env.snapshots();
    assert_eq!(r["snapshot"], snaps[2]["id"]);
    assert_eq!(r["tree"], snaps[2]["tree"]);
    assert_eq!(r["files"], 3);
    assert_eq!(r["total_size"], 150_000);
    assert_eq!(r["merkle_root"].as_str().map(str::len), Some(64));
    assert_eq!(r["packs_verified"], r["packs"]);
    assert_eq!(r["last_data_check"]["clean"], true);
    assert!(r["time"].as_str().expect("time").ends_with('Z'));

    let md = env.ok(["report", "latest", "--markdown"]);
    let md = String::from_utf8_lossy(&md.stdout);
    assert!(md.starts_with("# Integrity report"), "{md}");
    assert!(
        md.contains(r["merkle_root"].as_str().expect("root")),
        "{md}"
    );
    let text = env.ok(["report", "latest"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("merkle root") && text.contains("last drill"),
        "{text}"
    );
}

#[test]
fn drill_restores_a_sample_and_cleans_up() {
    let env = Env::init();
    let src = env.path("src");
    let alpha: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write(&src.join("a.bin"), &alpha);
    write(&src.join("b/c.txt"), b"gamma\n");
    write(&src.join("b/d [x].txt"), b"delta\n");
    env.ok([OsStr::new("backup"), src.as_os_str()]);
    let scratch = env.path("scratch");
    let v = env.json([
        OsStr::new("drill"),
        "--sample".as_ref(),
        "2".as_ref(),
        "--seed".as_ref(),
        "3".as_ref(),
        "--scratch".as_ref(),
        scratch.as_os_str(),
    ]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        (v["files"].as_u64(), v["files_total"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(v["seed"], 3);
    assert_eq!(
        fs::read_dir(&scratch).expect("scratch").count(),
        0,
        "not cleaned up"
    );

    let out = env.ok([
        OsStr::new("drill"),
        "--scratch".as_ref(),
        scratch.as_os_str(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("3 of 3 files") && text.contains("ok:"),
        "{text}"
    );
    let r = env.json(["report", "latest"]);
    assert_eq!(r["last_drill"]["ok"], true, "{r}");
    assert_eq!(r["last_drill"]["files"], 3);

    // Damage the data (the largest pack holds a.bin): the drill fails with exit 1.
    let victim = packs(&env).remove(0);
    let mut bytes = fs::read(&victim).expect("read");
    bytes[14] ^= 1;
    fs::write(&victim, &bytes).expect("write");
    let out = env.run([
        OsStr::new("drill"),
        "--scratch".as_ref(),
        scratch.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("restore drill failed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn option_errors() {
    let env = Env::init();
    for args in [
        &["check", "--max-age", "30d"][..],
        &["check", "--read-data-subset", "0/4"],
        &["check", "--read-data-subset", "150%"],
        &["check", "--read-data", "--max-duration", "10m"],
        &["drill", "--sample", "0"],
    ] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?} accepted");
    }
    let out = env.run(["check", "--read-data", "--read-data-subset", "1/2"]);
    assert_eq!(out.status.code(), Some(1), "conflicting flags accepted");
    assert_success(&env.run(["check", "--read-data", "--max-duration", "1h30min"]));
}

#[test]
fn help_has_examples() {
    let env = Env::empty();
    for cmd in ["check", "drill", "report"] {
        let out = env.ok([cmd, "--help"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Examples:"), "{cmd} --help has no examples");
        assert!(text.contains(&format!("cairn {cmd}")), "{cmd}: {text}");
    }
}
