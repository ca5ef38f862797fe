//! `cairn copy` and `init --copy-chunker-params` (SPEC §24): flags and
//! environment, the `--json` report, metadata kept, idempotence, errors
//! and their exit codes.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use super::harness::{Env, PASSWORD, assert_success, stderr, write};

/// `cairn -r DST copy` with the source's password in a file.
fn copy_cmd(dst: &Env, src: &Env) -> Command {
    let pw = dst.path("from.pw");
    if !pw.exists() {
        write(&pw, format!("{PASSWORD}\n").as_bytes());
    }
    let mut c = dst.cmd();
    for v in [
        "CAIRN_FROM_REPOSITORY",
        "CAIRN_FROM_PASSWORD_FILE",
        "CAIRN_FROM_PASSWORD_COMMAND",
        "CAIRN_FROM_PASSWORD",
        "CAIRN_FROM_KEY",
    ] {
        c.env_remove(v);
    }
    c.arg("copy")
        .arg("--from-repo")
        .arg(src.repo())
        .arg("--from-password-file")
        .arg(pw);
    c
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert_success(out);
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// A source repository with two snapshots of `src/` (tags `one`, `two`;
/// hosts `h1`, `h2`).
fn source() -> Env {
    let src = Env::init();
    write(&src.path("src/a.bin"), &pseudo_random(2 << 20, 1));
    write(&src.path("src/sub/b.txt"), b"hello copy\n");
    let p = src.path("src");
    src.ok([
        "backup".as_ref(),
        p.as_os_str(),
        "--tag".as_ref(),
        "one".as_ref(),
        "--host".as_ref(),
        "h1".as_ref(),
    ]);
    write(&src.path("src/c.bin"), &pseudo_random(1 << 20, 2));
    src.ok([
        "backup".as_ref(),
        p.as_os_str(),
        "--tag".as_ref(),
        "two".as_ref(),
        "--host".as_ref(),
        "h2".as_ref(),
    ]);
    src
}

fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn restored_equals(env: &Env, snapshot: &str, src: &Path) {
    let out = env.path("restored");
    let _ = std::fs::remove_dir_all(&out);
    env.ok([
        "restore".as_ref(),
        snapshot.as_ref(),
        "--target".as_ref(),
        out.as_os_str(),
    ]);
    let root = out.join(src.strip_prefix("/").unwrap());
    for f in ["a.bin", "sub/b.txt", "c.bin"] {
        assert_eq!(
            std::fs::read(root.join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "{f} restores differently"
        );
    }
}

#[test]
fn copy_between_related_repositories_reports_json_and_copies_nothing_again() {
    let src = source();
    let dst = Env::empty();
    write(&dst.path("from.pw"), format!("{PASSWORD}\n").as_bytes());
    let init = dst.json([
        "init".as_ref(),
        "--kdf-memory".as_ref(),
        "64".as_ref(),
        "--kdf-iterations".as_ref(),
        "1".as_ref(),
        "--copy-chunker-params".as_ref(),
        "--from-repo".as_ref(),
        src.repo().as_os_str(),
        "--from-password-file".as_ref(),
        dst.path("from.pw").as_os_str(),
    ]);
    assert_eq!(init["version"], 3, "{init}");
    let config = dst.json(["cat", "config"]);
    assert_eq!(config["version"], 3);
    // The shared keys show only as their fingerprint, the same on both.
    let fp = config["content_keys"].as_str().expect("fingerprint");
    assert_eq!(fp.len(), 16);
    assert_eq!(
        src.json(["cat", "config"])["content_keys"],
        serde_json::Value::Null
    );

    let report = json_of(&copy_cmd(&dst, &src).arg("--json").output().unwrap());
    assert_eq!(
        keys(&report),
        set(&[
            "copied",
            "skipped",
            "blobs_copied",
            "bytes_copied",
            "duration_s",
            "requests",
            "source_requests"
        ])
    );
    // Packs go to the destination and come from the source, counted apart.
    assert!(
        report["requests"]["write"].as_u64().unwrap() >= 2,
        "{report}"
    );
    assert!(report["requests"]["bytes_sent"].as_u64().unwrap() >= 3 << 20);
    assert_eq!(report["source_requests"]["write"], 0, "{report}");
    assert!(
        report["source_requests"]["bytes_received"]
            .as_u64()
            .unwrap()
            >= 3 << 20
    );
    let copied = report["copied"].as_array().unwrap();
    assert_eq!(copied.len(), 2, "{report}");
    assert_eq!(report["skipped"], serde_json::json!([]));
    assert!(report["blobs_copied"].as_u64().unwrap() >= 4);
    assert!(report["bytes_copied"].as_u64().unwrap() >= 3 << 20);
    assert!(report["duration_s"].as_f64().unwrap() >= 0.0);
    let c = &copied[0];
    assert_eq!(
        keys(c),
        set(&["source", "snapshot", "time", "host", "paths", "tags"])
    );

    // Metadata kept, the original recorded, visible in `snapshots --json`.
    let originals = src.snapshots();
    let copies = dst.snapshots();
    assert_eq!(copies.len(), 2);
    for (o, c) in originals.iter().zip(&copies) {
        assert_eq!(c["original"], o["id"]);
        for k in ["time", "host", "username", "paths", "tags", "metadata"] {
            assert_eq!(c[k], o[k], "{k}");
        }
        assert_ne!(c["id"], o["id"]);
        // Same content keys: the very same trees.
        assert_eq!(c["tree"], o["tree"]);
    }
    assert_eq!(originals[0]["original"], serde_json::Value::Null);
    // The table names the original too; the source's has no such column.
    let table = String::from_utf8_lossy(&dst.ok(["snapshots"]).stdout).into_owned();
    assert!(table.contains("Copy of"), "{table}");
    let short = &originals[1]["id"].as_str().unwrap()[..8];
    assert!(
        table.lines().any(|l| l.trim_end().ends_with(short)),
        "{table}"
    );
    let table = String::from_utf8_lossy(&src.ok(["snapshots"]).stdout).into_owned();
    assert!(!table.contains("Copy of"), "{table}");
    assert_eq!(c["source"], originals[0]["id"]);
    assert_eq!(c["snapshot"], copies[0]["id"]);
    assert_eq!(c["time"], originals[0]["time"]);
    assert_eq!(c["host"], "h1");
    assert_eq!(c["tags"], serde_json::json!(["one"]));

    // Again: nothing copied, both reported as skipped.
    let again = json_of(&copy_cmd(&dst, &src).arg("--json").output().unwrap());
    assert_eq!(again["copied"], serde_json::json!([]));
    assert_eq!(again["skipped"].as_array().unwrap().len(), 2);
    assert_eq!(again["blobs_copied"], 0);
    // Copying nothing writes no pack and reads none.
    assert_eq!(again["source_requests"]["read_range"], 0, "{again}");
    assert!(again["requests"]["bytes_sent"].as_u64().unwrap() < 1 << 20);
    assert_eq!(again["skipped"][1]["snapshot"], copies[1]["id"]);

    // A backup of the same data directly into the destination, reading
    // every file (--force), stores (almost) nothing: the chunks are already
    // there under the same ids.
    let direct = dst.json([
        "backup".as_ref(),
        src.path("src").as_os_str(),
        "--force".as_ref(),
    ]);
    let s = &direct["snapshots"][0];
    assert!(s["bytes_read"].as_u64().unwrap() >= 3 << 20, "{s}");
    let added = s["bytes_added"].as_u64().unwrap();
    assert!(added < 64 << 10, "a direct backup added {added} bytes");

    let check = dst.json(["check", "--read-data"]);
    assert_eq!(check["ok"], true, "{check}");
    restored_equals(&dst, copies[1]["id"].as_str().unwrap(), &src.path("src"));
    // The text output names what it did.
    let text = copy_cmd(&dst, &src).output().unwrap();
    assert_success(&text);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("0 snapshots copied, 2 already present")
    );
}

#[test]
fn copy_selects_by_id_and_filter_and_reads_the_environment() {
    let src = source();
    let dst = Env::init();
    let snaps = src.snapshots();
    let first = snaps[0]["id"].as_str().unwrap();
    // By id prefix, into an unrelated repository.
    let r = json_of(
        &copy_cmd(&dst, &src)
            .args(["--json", &first[..10]])
            .output()
            .unwrap(),
    );
    assert_eq!(r["copied"].as_array().unwrap().len(), 1);
    assert_eq!(r["copied"][0]["source"], first);
    // By filter, with the source and its password from the environment.
    let out = dst
        .cmd()
        .env("CAIRN_FROM_REPOSITORY", src.repo())
        .env("CAIRN_FROM_PASSWORD_COMMAND", format!("echo '{PASSWORD}'"))
        .env_remove("CAIRN_FROM_PASSWORD_FILE")
        .args(["--json", "copy", "--tag", "two", "--host", "h2"])
        .output()
        .unwrap();
    let r = json_of(&out);
    assert_eq!(r["copied"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["copied"][0]["source"], snaps[1]["id"]);
    assert_eq!(r["skipped"], serde_json::json!([]));
    // Unrelated repositories: new trees, same files.
    let copies = dst.snapshots();
    assert_ne!(copies[1]["tree"], snaps[1]["tree"]);
    assert_eq!(dst.json(["check", "--read-data"])["ok"], true);
    restored_equals(&dst, copies[1]["id"].as_str().unwrap(), &src.path("src"));
}

#[test]
fn copy_errors_are_clear_and_keep_their_exit_codes() {
    let src = source();
    let dst = Env::init();
    let code = |out: &std::process::Output| out.status.code().unwrap();

    let out = copy_cmd(&dst, &src)
        .args(["--host", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("matches the selection"),
        "{}",
        stderr(&out)
    );

    let out = copy_cmd(&dst, &src).arg("ffffffff").output().unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("ffffffff"), "{}", stderr(&out));

    // Into itself.
    let out = copy_cmd(&src, &src).output().unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("into itself"), "{}", stderr(&out));

    // Source or destination not a repository: 10.
    let nothing = Env::empty();
    let out = copy_cmd(&dst, &nothing).output().unwrap();
    assert_eq!(code(&out), 10, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("source repository"),
        "{}",
        stderr(&out)
    );
    let out = copy_cmd(&nothing, &src).output().unwrap();
    assert_eq!(code(&out), 10, "{}", stderr(&out));

    // Wrong source password: 12, and the JSON error object says so.
    let bad = dst.path("bad.pw");
    write(&bad, b"wrong\n");
    let out = dst
        .cmd()
        .args(["--json", "copy", "--from-repo"])
        .arg(src.repo())
        .arg("--from-password-file")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(code(&out), 12, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("source repository"),
        "{}",
        stderr(&out)
    );

    // No source given at all.
    let out = dst
        .cmd()
        .env_remove("CAIRN_FROM_REPOSITORY")
        .arg("copy")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("--from-repo"), "{}", stderr(&out));
    // `init --copy-chunker-params` needs the source.
    let fresh = Env::empty();
    let out = fresh.run(["init", "--copy-chunker-params"]);
    assert_ne!(code(&out), 0);
    assert!(!fresh.repo().join("config").exists());
    // Nothing was written into the destination by any of these.
    assert!(dst.snapshots().is_empty());
}

/// `cairn -r LOCATION` with the Garage cluster's credentials.
fn on_garage(env: &Env, garage: &cairn_testkit::garage::Garage, location: &str) -> Command {
    let mut c = env.cmd_at(std::ffi::OsStr::new(location));
    for v in [
        "AWS_ENDPOINT_URL",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_SESSION_TOKEN",
    ] {
        c.env_remove(v);
    }
    c.envs(garage.env())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("CAIRN_FROM_PASSWORD", PASSWORD)
        .env_remove("CAIRN_FROM_PASSWORD_FILE")
        .env_remove("CAIRN_FROM_PASSWORD_COMMAND");
    c
}

/// Local → S3 on a real 3-node Garage cluster, into a repository that
/// shares the local one's chunker parameters, then S3 → local.
#[test]
fn copy_local_to_s3_and_back_on_garage() {
    let garage = cairn_testkit::garage::Garage::shared();
    let src = source();
    let s3 = garage.location("cli/copy");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = on_garage(&src, garage, &s3).args(args).output().unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains(garage.secret_key()),
            "the secret key appeared in the output"
        );
        out
    };
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let from = src.repo();
    let init = json_of(&run(&[
        os("--json"),
        os("init"),
        os("--kdf-memory"),
        os("64"),
        os("--kdf-iterations"),
        os("1"),
        os("--copy-chunker-params"),
        os("--from-repo"),
        from.as_os_str(),
    ]));
    assert_eq!(init["version"], 3, "{init}");
    let report = json_of(&run(&[
        os("--json"),
        os("copy"),
        os("--from-repo"),
        from.as_os_str(),
    ]));
    assert_eq!(report["copied"].as_array().unwrap().len(), 2, "{report}");
    let again = json_of(&run(&[
        os("--json"),
        os("copy"),
        os("--from-repo"),
        from.as_os_str(),
    ]));
    assert_eq!(again["copied"], serde_json::json!([]));
    assert_eq!(again["blobs_copied"], 0);
    let snaps = json_of(&run(&[os("--json"), os("snapshots")]));
    let originals = src.snapshots();
    assert_eq!(snaps[1]["original"], originals[1]["id"]);
    let check = json_of(&run(&[os("--json"), os("check"), os("--read-data")]));
    assert_eq!(check["ok"], true, "{check}");

    // S3 → a fresh, unrelated local repository: restores identical.
    let back = Env::init();
    let out = on_garage(&back, garage, back.repo().to_str().unwrap())
        .args(["--json", "copy", "--from-repo", &s3])
        .output()
        .unwrap();
    let r = json_of(&out);
    assert_eq!(r["copied"].as_array().unwrap().len(), 2, "{r}");
    // Their origin is the local source's snapshot, not the S3 copy.
    assert_eq!(back.snapshots()[1]["original"], originals[1]["id"]);
    restored_equals(
        &back,
        back.snapshots()[1]["id"].as_str().unwrap(),
        &src.path("src"),
    );
}

/// `init --from-repo` without `--copy-chunker-params` does not read the
/// source: it says so, and the repository gets content keys of its own.
#[test]
fn init_from_repo_without_the_flag_warns_and_shares_nothing() {
    let src = source();
    let dst = Env::empty();
    let out = dst
        .cmd()
        .args([
            "init",
            "--kdf-memory",
            "64",
            "--kdf-iterations",
            "1",
            "--from-repo",
        ])
        .arg(src.repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--from-repo") && stderr(&out).contains("ignored"),
        "{}",
        stderr(&out)
    );
    let config = dst.json(["cat", "config"]);
    assert_eq!(config["version"], 2, "{config}");
    assert_eq!(config["content_keys"], serde_json::Value::Null, "{config}");
}
