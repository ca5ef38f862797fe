//! `cairn qdrant`: backup, restore and verify against the fake server in
//! `qdrant_fake.rs` (a fake: no Qdrant can be installed from the package
//! registries), and the same round trip against a real `qdrant` binary when
//! `CAIRN_TEST_QDRANT_BIN` names one.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::harness::{Env, stderr};
use super::qdrant_fake::{FakeQdrant, Knobs, VERSION};

/// What an operator does over the REST API (works on the fake and on a
/// real server alike).
pub(super) struct Api {
    base: String,
    key: Option<String>,
    agent: ureq::Agent,
}

impl Api {
    pub(super) fn new(base: &str, key: Option<&str>) -> Self {
        Self {
            base: base.to_string(),
            key: key.map(str::to_string),
            agent: ureq::Agent::new_with_defaults(),
        }
    }

    fn with_key<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.key {
            Some(k) => r.header("api-key", k),
            None => r,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let resp = match (method, body) {
            ("GET", _) => self.with_key(self.agent.get(&url)).call(),
            ("DELETE", _) => self.with_key(self.agent.delete(&url)).call(),
            ("PUT", Some(b)) => self
                .with_key(self.agent.put(&url))
                .header("content-type", "application/json")
                .send(b.to_string().as_bytes()),
            ("POST", Some(b)) => self
                .with_key(self.agent.post(&url))
                .header("content-type", "application/json")
                .send(b.to_string().as_bytes()),
            ("POST", None) => self.with_key(self.agent.post(&url)).send_empty(),
            _ => unreachable!(),
        };
        let text = resp
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
            .into_body()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    pub(super) fn create_collection(&self, name: &str, dim: usize) {
        self.call(
            "PUT",
            &format!("/collections/{name}"),
            Some(json!({"vectors": {"size": dim, "distance": "Dot"}})),
        );
    }

    pub(super) fn upsert(&self, name: &str, ids: std::ops::Range<u64>, dim: usize) {
        let points: Vec<Value> = ids
            .map(|id| {
                let v: Vec<f32> = (0..dim)
                    .map(|i| ((id * 7 + i as u64) % 13) as f32)
                    .collect();
                json!({"id": id, "vector": v})
            })
            .collect();
        self.call(
            "PUT",
            &format!("/collections/{name}/points?wait=true"),
            Some(json!({ "points": points })),
        );
    }

    fn count(&self, name: &str) -> u64 {
        self.call(
            "POST",
            &format!("/collections/{name}/points/count"),
            Some(json!({"exact": true})),
        )["result"]["count"]
            .as_u64()
            .unwrap()
    }

    fn delete_collection(&self, name: &str) {
        self.call("DELETE", &format!("/collections/{name}"), None);
    }

    fn collections(&self) -> Vec<String> {
        let mut v: Vec<String> = self.call("GET", "/collections", None)["result"]["collections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    }

    fn snapshots(&self, name: &str) -> Vec<String> {
        self.call("GET", &format!("/collections/{name}/snapshots"), None)["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    }
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// `cairn --json ARGS` that must fail: (exit code, stdout JSON, stderr).
fn json_failure(env: &Env, args: &[&str]) -> (Option<i32>, Value, String) {
    let out = env.cmd().arg("--json").args(args).output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), v, stderr(&out))
}

#[test]
fn qdrant_backup_restore_verify_round_trip() {
    let env = Env::init();
    let fake = FakeQdrant::start(Knobs::default());
    let api = Api::new(&fake.url, None);
    api.create_collection("docs", 8);
    api.upsert("docs", 0..300, 8);

    let b = env.json([
        "qdrant",
        "backup",
        "--url",
        &fake.url,
        "--collection",
        "docs",
    ]);
    assert_eq!(b["failed"], json!([]));
    let s = &b["snapshots"][0];
    assert_eq!(b["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(s["collection"], "docs");
    assert_eq!(s["points_count"], 300);
    let (name, tar) = fake.state().created.last().cloned().unwrap();
    assert_eq!(s["total_bytes"], tar.len() as u64);
    assert_eq!(s["type"], "qdrant");
    assert_eq!(s["server"], fake.url.as_str());
    assert!(s["bytes_added"].as_u64().unwrap() > 0);
    assert_eq!(s["qdrant_snapshot"], name.as_str());
    // The server-side copy is gone.
    assert!(fake.snapshot_names("docs").is_empty());

    // Stored byte for byte, and it is a tar GNU tar can list (sparse member included).
    let dumped = env.ok(["dump", "latest", "qdrant/docs.snapshot"]).stdout;
    assert_eq!(dumped, tar, "the snapshot tar is stored byte for byte");
    let tar_path = env.path("docs.snapshot");
    std::fs::write(&tar_path, &dumped).unwrap();
    if let Ok(list) = Command::new("tar").arg("-tvf").arg(&tar_path).output() {
        let listing = String::from_utf8_lossy(&list.stdout);
        assert!(list.status.success(), "tar -t: {}", stderr(&list));
        assert!(listing.contains("0/wal/open-1"), "{listing}");
        assert!(
            listing.contains("1048576"),
            "sparse member's real size: {listing}"
        );
    }

    // Metadata (SPEC §27).
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["tags"], json!(["qdrant"]));
    assert_eq!(snaps[0]["paths"], json!(["qdrant/docs.snapshot"]));
    let meta = &snaps[0]["metadata"];
    assert_eq!(meta["qdrant.server"], fake.url.as_str());
    assert_eq!(meta["qdrant.version"], VERSION);
    assert_eq!(meta["qdrant.collection"], "docs");
    assert_eq!(meta["qdrant.points_count"], "300");
    assert_eq!(meta["qdrant.snapshot_name"], name.as_str());
    assert_eq!(meta["qdrant.checksum"], sha256_hex(&tar).as_str());
    let config: Value = serde_json::from_str(meta["qdrant.config"].as_str().unwrap()).unwrap();
    assert_eq!(
        config,
        fake.state().collections["docs"].config,
        "the collection config is recorded"
    );

    // Drop the collection, restore it.
    api.delete_collection("docs");
    assert!(api.collections().is_empty());
    let r = env.json(["qdrant", "restore", "latest", "--url", &fake.url]);
    assert_eq!(r["target_collection"], "docs");
    assert_eq!(r["points_count"], 300);
    assert_eq!(api.count("docs"), 300);
    {
        let st = fake.state();
        let up = st.uploads.last().unwrap();
        assert_eq!(up.collection, "docs");
        assert_eq!(up.bytes, tar, "the uploaded tar is the one downloaded");
        assert_eq!(up.priority.as_deref(), Some("snapshot"));
        assert_eq!(up.checksum.as_deref(), Some(sha256_hex(&tar).as_str()));
    }
    // Into another collection, human output.
    let out = env.ok([
        "qdrant",
        "restore",
        "latest",
        "--url",
        &fake.url,
        "--collection",
        "docs-copy",
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("300 points"));
    assert_eq!(api.count("docs-copy"), 300);

    // Verify passes and cleans up its scratch collection.
    let v = env.json(["qdrant", "verify", "latest", "--url", &fake.url]);
    assert_eq!(v["ok"], true);
    assert_eq!(v["recorded_points_count"], 300);
    assert_eq!(v["restored_points_count"], 300);
    assert!(
        v["scratch_collection"]
            .as_str()
            .unwrap()
            .starts_with("docs-cairn-verify-")
    );
    assert_eq!(api.collections(), ["docs", "docs-copy"]);

    // A snapshot that restores with a point missing fails verify.
    fake.knobs(|k| k.lose_point_on_recover = true);
    let (code, v, err) = json_failure(&env, &["qdrant", "verify", "latest", "--url", &fake.url]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(v["ok"], false);
    assert_eq!(v["restored_points_count"], 299);
    assert!(err.contains("299") && err.contains("300"), "{err}");
    let out = env.run(["qdrant", "verify", "latest", "--url", &fake.url]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("MISMATCH"));
    assert_eq!(api.collections(), ["docs", "docs-copy"], "scratch deleted");
    // The failed verify is the newest one the repository records (SPEC §32).
    let r = env.json(["report", "latest"]);
    let e = &r["verification"][0]["last_exporter_verify"][0];
    assert_eq!(
        (e["command"].as_str(), e["ok"].as_bool()),
        (Some("qdrant verify"), Some(false)),
        "{r}"
    );
    assert!(
        e["summary"].as_str().unwrap().contains("299 restored"),
        "{r}"
    );
}

#[test]
fn qdrant_corrupt_or_dropped_download_writes_no_snapshot() {
    let env = Env::init();
    let fake = FakeQdrant::start(Knobs {
        corrupt_download: true,
        ..Knobs::default()
    });
    let api = Api::new(&fake.url, None);
    api.create_collection("docs", 4);
    api.upsert("docs", 0..400, 4);
    let backup = [
        "qdrant",
        "backup",
        "--url",
        &fake.url,
        "--collection",
        "docs",
    ];

    let out = env.run(backup);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(err.contains("no snapshot written"), "{err}");
    assert!(env.snapshots().is_empty(), "no snapshot may be written");
    assert_eq!(fake.state().created.len(), 1, "a snapshot was made");
    assert!(
        fake.snapshot_names("docs").is_empty(),
        "and deleted on the server after the failure"
    );

    // The connection drops halfway through the chunked download.
    fake.knobs(|k| {
        k.corrupt_download = false;
        k.drop_download = true;
    });
    let (code, v, err) = json_failure(&env, &backup);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(v["snapshots"], json!([]));
    assert_eq!(v["failed"][0]["source"], "docs");
    assert!(err.contains("download interrupted"), "{err}");
    assert!(env.snapshots().is_empty(), "no snapshot may be written");
    assert!(fake.snapshot_names("docs").is_empty());

    fake.knobs(|k| k.drop_download = false);
    env.ok(backup);
    assert_eq!(env.snapshots().len(), 1);
}

#[test]
fn qdrant_api_key_and_http_errors_are_clear() {
    let env = Env::init();
    let key = "s3cret-qdrant-key";
    let fake = FakeQdrant::start(Knobs {
        api_key: Some(key.into()),
        ..Knobs::default()
    });
    let api = Api::new(&fake.url, Some(key));
    api.create_collection("docs", 4);
    api.upsert("docs", 0..50, 4);
    let backup = [
        "qdrant",
        "backup",
        "--url",
        &fake.url,
        "--collection",
        "docs",
    ];

    let out = env.run(backup);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("HTTP 401") && err.contains("API key"), "{err}");
    let out = env.run([&backup[..], &["--api-key", "wrong"]].concat());
    let err = stderr(&out);
    assert!(
        err.contains("HTTP 401") && err.contains("Invalid API key"),
        "{err}"
    );
    assert!(env.snapshots().is_empty());

    // From the environment: works, and the key shows up nowhere.
    let out = env
        .cmd()
        .env("CAIRN_QDRANT_API_KEY", key)
        .arg("--json")
        .args(backup)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1);
    for text in [
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr(&out),
        serde_json::to_string(&snaps).unwrap(),
    ] {
        assert!(!text.contains(key), "the API key leaked: {text}");
    }
    // `--help` does not show the environment's value either.
    let help = env
        .cmd()
        .env("CAIRN_QDRANT_API_KEY", key)
        .args(["qdrant", "backup", "--help"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains(key));
    assert!(
        fake.state()
            .requests
            .iter()
            .filter(|(r, _)| r.starts_with("POST /collections/docs/snapshots"))
            .all(|(_, k)| k.as_deref() == Some(key)),
        "every snapshot request carried the key"
    );

    // 404: an unknown collection fails before any snapshot is made.
    let created = fake.state().created.len();
    let out = env
        .cmd()
        .env("CAIRN_QDRANT_API_KEY", key)
        .args(["qdrant", "backup", "--url", &fake.url])
        .args(["--collection", "docs", "--collection", "nope"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("HTTP 404") && err.contains("`nope` doesn't exist"),
        "{err}"
    );
    assert_eq!(fake.state().created.len(), created);
    assert_eq!(env.snapshots().len(), 1);

    // Restore without the key: the 401, not a broken pipe.
    let out = env.run(["qdrant", "restore", "latest", "--url", &fake.url]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(fake.state().uploads.is_empty());

    // 400: the upload arrives damaged and the server's checksum check fails.
    fake.knobs(|k| k.corrupt_upload = true);
    let out = env
        .cmd()
        .env("CAIRN_QDRANT_API_KEY", key)
        .args(["qdrant", "restore", "latest", "--url", &fake.url])
        .args(["--collection", "restored"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("HTTP 400") && err.contains("Checksum mismatch"),
        "{err}"
    );
    assert!(!api.collections().contains(&"restored".to_string()));
    // Unreachable server: a clear message, not a panic.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = env.run([
        "qdrant",
        "backup",
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "--all",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("request failed"), "{}", stderr(&out));
}

#[test]
fn qdrant_all_collections_and_same_second_names() {
    let env = Env::init();
    let fake = FakeQdrant::start(Knobs {
        frozen_time: Some(1_790_000_000),
        ..Knobs::default()
    });
    let api = Api::new(&fake.url, None);
    for (name, n) in [("a", 10), ("b", 25), ("c", 0)] {
        api.create_collection(name, 4);
        api.upsert(name, 0..n, 4);
    }
    // The operator's own snapshot of `a`, made "in the same second".
    api.call("POST", "/collections/a/snapshots?wait=true", None);
    let theirs = api.snapshots("a");
    assert_eq!(theirs.len(), 1);

    let out = env
        .cmd()
        .arg("--json")
        .args([
            "qdrant", "backup", "--url", &fake.url, "--all", "--tag", "nightly",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let b: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<(&str, u64)> = b["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["collection"].as_str().unwrap(),
                s["points_count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [("a", 10), ("b", 25), ("c", 0)]);
    // Same name as the operator's: overwritten (as Qdrant does) but not deleted.
    assert!(stderr(&out).contains("same-second"), "{}", stderr(&out));
    assert_eq!(api.snapshots("a"), theirs);
    assert!(api.snapshots("b").is_empty() && api.snapshots("c").is_empty());
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 3);
    for s in &snaps {
        assert_eq!(s["tags"], json!(["nightly", "qdrant"]));
    }

    // Again in the same second, two collections after one --collection:
    // our own files were deleted, so the names are free.
    let b = env.json([
        "qdrant",
        "backup",
        "--url",
        &fake.url,
        "--collection",
        "b",
        "c",
    ]);
    assert_eq!(b["snapshots"].as_array().unwrap().len(), 2);
    // Unchanged data: only the new snapshot's tree is stored.
    let s = &b["snapshots"][0];
    assert!(
        s["bytes_added"].as_u64().unwrap() * 20 < s["total_bytes"].as_u64().unwrap(),
        "{s}"
    );
    assert_eq!(env.snapshots().len(), 5);
    assert!(api.snapshots("b").is_empty());

    // `latest` narrowed to one collection's stream.
    let r = env.json([
        "qdrant",
        "restore",
        "latest",
        "--url",
        &fake.url,
        "--path",
        "qdrant/b.snapshot",
        "--collection",
        "b2",
    ]);
    assert_eq!(r["collection"], "b");
    assert_eq!(api.count("b2"), 25);
}

/// A real `qdrant` on free ports in a temporary directory; killed on drop.
struct RealQdrant {
    child: Child,
    url: String,
}

impl RealQdrant {
    fn start(bin: &Path, dir: &Path) -> Self {
        let free = || {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (http, grpc) = (free(), free());
        let child = Command::new(bin)
            .current_dir(dir)
            .env("QDRANT__SERVICE__HOST", "127.0.0.1")
            .env("QDRANT__SERVICE__HTTP_PORT", http.to_string())
            .env("QDRANT__SERVICE__GRPC_PORT", grpc.to_string())
            .env("QDRANT__STORAGE__STORAGE_PATH", dir.join("storage"))
            .env("QDRANT__STORAGE__SNAPSHOTS_PATH", dir.join("snapshots"))
            .env("QDRANT__TELEMETRY_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qdrant");
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{http}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while ureq::get(format!("{}/readyz", server.url)).call().is_err() {
            assert!(Instant::now() < deadline, "qdrant did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }
}

impl Drop for RealQdrant {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn qdrant_real_server_round_trip() {
    let Some(bin) = std::env::var_os("CAIRN_TEST_QDRANT_BIN") else {
        eprintln!("note: CAIRN_TEST_QDRANT_BIN is not set; skipping the real-Qdrant test");
        return;
    };
    let env = Env::init();
    let dir = env.path("qdrant");
    std::fs::create_dir_all(&dir).unwrap();
    let server = RealQdrant::start(Path::new(&bin), &dir);
    let api = Api::new(&server.url, None);
    api.create_collection("docs", 16);
    api.upsert("docs", 0..2000, 16);
    assert_eq!(api.count("docs"), 2000);

    let b = env.json(["qdrant", "backup", "--url", &server.url, "--all"]);
    assert_eq!(b["snapshots"][0]["points_count"], 2000);
    assert!(api.snapshots("docs").is_empty(), "server-side copy deleted");
    let meta = &env.snapshots()[0]["metadata"];
    let dumped = env.ok(["dump", "latest", "qdrant/docs.snapshot"]).stdout;
    assert_eq!(meta["qdrant.checksum"], sha256_hex(&dumped).as_str());

    api.delete_collection("docs");
    let r = env.json(["qdrant", "restore", "latest", "--url", &server.url]);
    assert_eq!(r["points_count"], 2000);
    assert_eq!(api.count("docs"), 2000);
    let v = env.json(["qdrant", "verify", "latest", "--url", &server.url]);
    assert_eq!(v["ok"], true);
    assert_eq!(api.collections(), ["docs"]);
}

#[test]
fn qdrant_damaged_repository_data_uploads_nothing() {
    let env = Env::init();
    let fake = FakeQdrant::start(Knobs::default());
    let api = Api::new(&fake.url, None);
    api.create_collection("docs", 8);
    api.upsert("docs", 0..300, 8);
    env.ok(["qdrant", "backup", "--url", &fake.url, "--all"]);

    // Flip a byte inside the first blob of the largest pack (the tar's data).
    let mut packs: Vec<_> = walk(&env.repo().join("data"));
    packs.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    let mut bytes = std::fs::read(&packs[0]).unwrap();
    bytes[12 + 100] ^= 0x10;
    std::fs::write(&packs[0], &bytes).unwrap();

    // The upload is cut short rather than completed with missing bytes.
    let out = env.run([
        "qdrant",
        "restore",
        "latest",
        "--url",
        &fake.url,
        "--collection",
        "docs-copy",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("reading the snapshot"),
        "{}",
        stderr(&out)
    );
    assert!(fake.state().uploads.is_empty());
    assert_eq!(api.collections(), ["docs"]);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
