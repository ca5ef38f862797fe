//! `init --no-dictionary` and `cat dictionary` (SPEC §6.4).

use super::harness::{Env, stderr, write};

/// `n` small, similar configuration files under `src/`.
fn small_files(env: &Env, n: usize) -> std::path::PathBuf {
    let src = env.path("src");
    for i in 0..n {
        let mut s = String::new();
        for j in 0..(2 + i % 5) {
            s.push_str(&format!(
                "[unit_{j}]\nexec_start = /usr/bin/daemon-{} --port {}\nrestart = on-failure\n\
                 environment = LEVEL={} REGION=eu-{}\n",
                i % 9,
                9000 + i * j % 500,
                j % 4,
                i % 3
            ));
        }
        write(&src.join(format!("unit-{i:04}.conf")), s.as_bytes());
    }
    src
}

#[test]
fn new_repositories_train_a_dictionary_that_cat_shows() {
    let env = Env::empty();
    let v = env.json(["init", "--kdf-memory", "64", "--kdf-iterations", "1"]);
    assert_eq!(v["version"], 2);
    assert_eq!(env.json(["cat", "config"])["version"], 2);
    // No dictionary before the first backup.
    assert_eq!(env.json(["cat", "dictionary"]), serde_json::json!([]));

    let src = small_files(&env, 300);
    env.ok(["backup".as_ref(), src.as_os_str()]);
    let dicts = env.json(["cat", "dictionary"]);
    let list = dicts.as_array().expect("a list");
    assert_eq!(list.len(), 1, "{dicts}");
    let d = &list[0];
    let id = d["id"].as_str().expect("id");
    assert_eq!(id.len(), 64);
    assert_eq!(d["reference"].as_str(), Some(&id[..16]));
    let size = d["size"].as_u64().expect("size");
    assert!((1024..=112 * 1024).contains(&size), "{d}");
    assert_ne!(d["zstd_dict_id"], 0);
    // One by prefix; --raw writes the zstd dictionary itself.
    assert_eq!(env.json(["cat", "dictionary", &id[..6]]), dicts);
    let raw = env.ok(["cat", "dictionary", &id[..6], "--raw"]).stdout;
    assert_eq!(raw.len() as u64, size);
    assert_eq!(raw[..4], [0x37, 0xa4, 0x30, 0xec]);

    let check = env.json(["check", "--read-data"]);
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["dictionaries"], 1, "{check}");
}

#[test]
fn init_no_dictionary_makes_a_version_1_repository_without_one() {
    let env = Env::empty();
    let v = env.json([
        "init",
        "--kdf-memory",
        "64",
        "--kdf-iterations",
        "1",
        "--no-dictionary",
    ]);
    assert_eq!(v["version"], 1);
    assert_eq!(env.json(["cat", "config"])["version"], 1);
    let config = std::fs::read(env.repo().join("config")).expect("config");
    assert_eq!(config[8..12], 1u32.to_le_bytes());

    let src = small_files(&env, 300);
    env.ok(["backup".as_ref(), src.as_os_str()]);
    assert_eq!(env.json(["cat", "dictionary"]), serde_json::json!([]));
    assert!(
        !env.repo()
            .join("dicts")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some())
    );

    let out = env.run(["cat", "dictionary", "ab"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no dictionary file matches"),
        "{}",
        stderr(&out)
    );
}
