//! `cairn` against a real Garage cluster (3 nodes, replication factor 3)
//! under faults (issue 14): a node killed during a backup, every node
//! stopped mid-backup, a proxy adding latency, throttling and cutting
//! connections, and two hosts backing up while a prune runs. Whatever
//! happens, a command succeeds or fails with a clean error, and afterwards
//! `check --read-data` passes and every snapshot restores exactly.
//!
//! Tests that kill nodes start their own cluster; the others share one and
//! keep apart in their own buckets. Data is small (a few MiB, 1 MiB packs);
//! most of the module's time (under a minute, tests in parallel) is spent
//! throttled on purpose and in the backend's retries before it gives up.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cairn_testkit::garage::{Garage, REGION};
use cairn_testkit::proxy::{FaultProxy, Faults};
use cairn_testkit::rng::{XorShift, random_bytes};
use repo_core::{Backend, Location, ObjectKind, S3Credentials, S3Options};
use tempfile::TempDir;

use super::harness::{PASSWORD, assert_success, stderr, write};
use super::trees::read_tree;

type Tree = BTreeMap<PathBuf, Option<Vec<u8>>>;

const MIB: usize = 1 << 20;

/// A temporary directory (sources, caches, restores) and a repository
/// location on Garage, usually through a fault proxy.
struct S3Env {
    dir: TempDir,
    location: String,
    aws: [(&'static str, String); 3],
    secret: String,
}

impl S3Env {
    fn new(g: &Garage, location: String) -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            location,
            aws: g.env(),
            secret: g.secret_key().to_owned(),
        }
    }

    /// A repository under `prefix` in `bucket`, reached through `proxy`.
    fn behind(g: &Garage, proxy: &FaultProxy, bucket: &str, prefix: &str) -> Self {
        Self::new(g, g.location_in(&proxy.endpoint(), bucket, prefix))
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `cairn -r LOCATION --cache-dir CACHE` with Garage's credentials and
    /// nothing else from the caller's environment. Each "host" has its own
    /// cache.
    fn cmd_in(&self, cache: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CAIRN_") || k.starts_with("AWS_") {
                c.env_remove(&*k);
            }
        }
        c.envs(self.aws.iter().map(|(k, v)| (k, v)))
            .env("CAIRN_PASSWORD", PASSWORD)
            .arg("-r")
            .arg(&self.location)
            .arg("--cache-dir")
            .arg(self.path(cache))
            .stdin(Stdio::null());
        c
    }

    fn cmd(&self) -> Command {
        self.cmd_in("cache")
    }

    fn run<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&self, args: I) -> Output {
        self.cmd().args(args).output().expect("run cairn")
    }

    fn ok<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&self, args: I) -> Output {
        let out = self.run(args);
        assert_success(&out);
        out
    }

    fn spawn(&self, cache: &str, args: &[&str]) -> Child {
        self.cmd_in(cache)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn")
    }

    fn init(&self) {
        self.ok([
            "init",
            "--kdf-memory",
            "64",
            "--kdf-iterations",
            "1",
            "--pack-size",
            "1",
        ]);
    }

    /// `snapshots --json`.
    fn snapshots(&self) -> Vec<serde_json::Value> {
        let out = self.ok(["--json", "snapshots"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v.as_array().expect("array").clone()
    }

    /// `check --read-data` passes.
    fn check_read_data(&self) {
        let out = self.run(["check", "--read-data"]);
        assert!(
            out.status.success(),
            "check --read-data failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    }

    /// Restores snapshot `id` and asserts it equals `expected` (the tree at
    /// `src` when it was backed up).
    fn assert_restores(&self, id: &str, src: &Path, expected: &Tree) {
        let target = self.path(&format!("restore-{}", &id[..12]));
        let _ = std::fs::remove_dir_all(&target);
        self.ok(["restore", id, "--target", target.to_str().expect("utf8")]);
        let got = read_tree(&target.join(src.strip_prefix("/").expect("absolute")));
        let _ = std::fs::remove_dir_all(&target);
        assert!(
            got == *expected,
            "snapshot {id} restores differently: paths {:?} vs {:?}",
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>()
        );
    }

    /// A command either succeeded or failed cleanly: exit 1 with an error
    /// message, no panic, no secret in the output.
    fn assert_ok_or_clean(&self, what: &str, out: &Output) -> bool {
        let err = stderr(out);
        let all = format!("{}{err}", String::from_utf8_lossy(&out.stdout));
        assert!(
            !all.contains("panicked") && !all.contains(&self.secret),
            "{what}: a panic or the secret key in the output:\n{all}"
        );
        if out.status.success() {
            return true;
        }
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(
            err.contains("cairn: error:") || err.contains("\"exit_code\":1"),
            "{what}: no error message: {err}"
        );
        false
    }
}

/// `files` incompressible files of `size` bytes under `dir/src`.
fn source(env: &S3Env, files: usize, size: usize, seed: u64) -> PathBuf {
    let src = env.path("src");
    for i in 0..files {
        write(
            &src.join(format!("f{i}")),
            &random_bytes(size, seed + i as u64),
        );
    }
    src
}

/// Polls until the proxy has forwarded `bytes` towards Garage; panics
/// when `child` exits first (it would have finished without the fault).
fn wait_uploaded(proxy: &FaultProxy, bytes: u64, child: &mut Child) {
    let start = Instant::now();
    while proxy.stats().bytes_up < bytes {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the backup ended ({status}) before {bytes} bytes were uploaded: {:?}",
                proxy.stats()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no upload progress"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The pack names under `prefix` in `bucket`, listed straight from
/// Garage (not through any proxy).
fn packs(g: &Garage, bucket: &str, prefix: &str) -> Vec<String> {
    let location =
        Location::parse(&g.location_in(&g.endpoint(), bucket, prefix)).expect("location");
    let opts = S3Options {
        region: Some(REGION.into()),
        credentials: Some(S3Credentials {
            access_key_id: g.key_id().into(),
            secret_access_key: g.secret_key().into(),
            session_token: None,
        }),
        ..S3Options::default()
    };
    let backend: Box<dyn Backend> = location.open(&opts).expect("open the bucket");
    let mut names: Vec<String> = backend
        .list(ObjectKind::Pack)
        .expect("list packs")
        .into_iter()
        .map(|o| o.name)
        .collect();
    names.sort();
    names
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The one snapshot of a backup's `--json` report.
fn saved(out: &Output) -> serde_json::Value {
    let v = json(out);
    let snaps = v["snapshots"].as_array().expect("snapshots");
    assert_eq!(snaps.len(), 1, "{v}");
    snaps[0].clone()
}

/// Throttled so that a backup of a few MiB takes a few seconds: the fault
/// lands in its middle, not after it.
fn throttled() -> Faults {
    Faults {
        bandwidth: 3 * MIB as u64,
        ..Faults::default()
    }
}

#[test]
fn one_node_killed_during_a_backup_the_backup_completes_and_check_passes() {
    let g = Garage::start();
    // cairn talks to node 0; node 2 dies.
    let proxy = FaultProxy::to_port(g.s3_port(0), 1);
    let env = S3Env::behind(&g, &proxy, g.bucket(), "repo");
    env.init();
    let src = source(&env, 6, MIB, 10);
    let tree = read_tree(&src);

    proxy.set_faults(Some(throttled()));
    let before = proxy.stats().bytes_up;
    let mut backup = env.spawn("cache", &["--json", "backup", src.to_str().expect("utf8")]);
    wait_uploaded(&proxy, before + 2 * MIB as u64, &mut backup);
    g.kill_node(2);
    let at_kill = proxy.stats().bytes_up;
    let out = backup.wait_with_output().expect("backup");
    assert_success(&out);
    let id = saved(&out)["snapshot_id"].as_str().expect("id").to_owned();
    // The kill came in the middle: most of the data went up after it.
    assert!(
        proxy.stats().bytes_up > at_kill + 2 * MIB as u64,
        "{:?}",
        proxy.stats()
    );

    proxy.set_faults(None);
    assert!(!g.is_running(2));
    env.check_read_data();
    env.assert_restores(&id, &src, &tree);
}

#[test]
fn all_nodes_stopped_mid_backup_a_clean_error_then_the_rerun_resumes() {
    let g = Garage::start();
    let proxy = FaultProxy::to_port(g.s3_port(0), 2);
    let env = S3Env::behind(&g, &proxy, g.bucket(), "repo");
    env.init();
    // Enough data, slowly enough, that the stop lands mid-backup even with
    // parallel uploads (each connection gets the bandwidth).
    const FILES: u64 = 12;
    let src = source(&env, FILES as usize, MIB, 20);
    let tree = read_tree(&src);

    proxy.set_faults(Some(Faults {
        bandwidth: MIB as u64,
        ..Faults::default()
    }));
    let before = proxy.stats().bytes_up;
    let mut backup = env.spawn("cache", &["--json", "backup", src.to_str().expect("utf8")]);
    // Stop once a pack is stored (and at least 3 MiB went up): it
    // must survive the stop, and the rerun must take it over.
    wait_uploaded(&proxy, before + 3 * MIB as u64, &mut backup);
    let start = Instant::now();
    while packs(&g, g.bucket(), "repo").is_empty() {
        assert!(
            backup.try_wait().expect("wait").is_none(),
            "the backup ended"
        );
        assert!(start.elapsed() < Duration::from_secs(120), "no pack stored");
        std::thread::sleep(Duration::from_millis(20));
    }
    g.stop_all();
    // Unthrottled, the failing retries are quicker.
    proxy.set_faults(None);
    let out = backup.wait_with_output().expect("backup");
    assert!(
        !out.status.success(),
        "the backup cannot succeed with no node"
    );
    env.assert_ok_or_clean("backup with every node down", &out);

    g.restart_all();
    proxy.set_faults(None);
    assert!(
        env.snapshots().is_empty(),
        "no snapshot from the failed backup"
    );
    // Nothing damaged: the uploaded packs are only not yet indexed.
    env.ok(["check"]);
    let stored = packs(&g, g.bucket(), "repo");
    assert!(!stored.is_empty());
    let out = env.ok(["--json", "backup", src.to_str().expect("utf8")]);
    let snap = saved(&out);
    let resumed = snap["packs_resumed"].as_u64().expect("packs_resumed");
    assert_eq!(
        resumed,
        stored.len() as u64,
        "the rerun takes over every uploaded pack: {snap}"
    );
    let after = packs(&g, g.bucket(), "repo");
    assert!(
        stored.iter().all(|p| after.contains(p)),
        "resumed packs stay"
    );
    // The taken-over packs' data is not uploaded again.
    // Full packs hold at least their 1 MiB target; trees are small.
    let added = snap["bytes_added"].as_u64().expect("bytes_added");
    assert!(
        added + resumed * MIB as u64 <= FILES * MIB as u64 + 64 * 1024,
        "{added} bytes added with {resumed} packs resumed: {snap}"
    );
    env.check_read_data();
    let id = snap["snapshot_id"].as_str().expect("id");
    env.assert_restores(id, &src, &tree);
    eprintln!("s3 all stopped: {resumed} packs resumed, {added} of {FILES} MiB added by the rerun");
}

#[test]
fn through_latency_throttling_and_cut_connections_every_command_is_clean() {
    let g = Garage::shared();
    let bucket = g.new_bucket();
    let mut rng = XorShift::seeded("s3 proxy faults");
    let proxy = FaultProxy::to_port(g.s3_port(0), rng.next_u64());
    let env = S3Env::behind(g, &proxy, &bucket, "faults");
    env.init();
    let src = env.path("src");
    let faults = Faults {
        latency_up: Duration::from_millis(2),
        latency_down: Duration::from_millis(2),
        bandwidth: 16 * MIB as u64,
        cut_per_mille: 300,
        cut_within: 512 * 1024,
    };
    // The last round: most connections cut, so commands fail part-way,
    // a prune among them.
    let harsh = Faults {
        cut_per_mille: 700,
        cut_within: 128 * 1024,
        ..faults.clone()
    };
    let mut states: HashMap<String, Tree> = HashMap::new();
    let mut outcomes: Vec<String> = Vec::new();
    for round in 0..5u64 {
        // A changed file, a new one, one gone.
        write(&src.join("changing"), &random_bytes(MIB, rng.next_u64()));
        write(
            &src.join(format!("new{round}")),
            &random_bytes(MIB / 2, rng.next_u64()),
        );
        if round > 0 {
            let _ = std::fs::remove_file(src.join(format!("new{}", round - 1)));
        }
        let tag = format!("v{round}");
        states.insert(tag.clone(), read_tree(&src));

        proxy.set_faults(Some(if round == 4 { &harsh } else { &faults }.clone()));
        let mut run = |what: &str, args: &[&str]| {
            let ok = env.assert_ok_or_clean(&format!("round {round}: {what}"), &env.run(args));
            outcomes.push(format!("{what} {}", if ok { "ok" } else { "failed" }));
        };
        run(
            "backup",
            &["backup", "--tag", &tag, src.to_str().expect("utf8")],
        );
        if round % 2 == 1 || round == 4 {
            run("forget", &["forget", "--keep-last", "2"]);
            run("prune", &["prune", "--grace", "0", "--max-unused", "0"]);
        }
        run("check", &["check"]);
    }
    // A prune cut off part-way: throttled so it is still working when,
    // after 256 KiB of traffic, every connection is cut and no new one
    // gets through.
    write(&src.join("changing"), &random_bytes(MIB, rng.next_u64()));
    states.insert("v5".into(), read_tree(&src));
    proxy.set_faults(None);
    env.ok(["backup", "--tag", "v5", src.to_str().expect("utf8")]);
    env.ok(["forget", "--keep-last", "1"]);
    proxy.set_faults(Some(Faults {
        bandwidth: MIB as u64,
        ..Faults::default()
    }));
    let traffic = |p: &FaultProxy| p.stats().bytes_up + p.stats().bytes_down;
    let start = traffic(&proxy);
    let mut prune = env.spawn("cache", &["prune", "--grace", "0", "--max-unused", "0"]);
    let t = Instant::now();
    while traffic(&proxy) < start + 256 * 1024 && prune.try_wait().expect("wait").is_none() {
        assert!(t.elapsed() < Duration::from_secs(120), "the prune hangs");
        std::thread::sleep(Duration::from_millis(5));
    }
    proxy.set_faults(Some(Faults {
        cut_per_mille: 1000,
        cut_within: 0,
        ..Faults::default()
    }));
    proxy.cut_all();
    let out = prune.wait_with_output().expect("prune");
    let ok = env.assert_ok_or_clean("prune cut off part-way", &out);
    outcomes.push(format!(
        "prune cut part-way {}",
        if ok { "ok" } else { "failed" }
    ));

    // Every connection cut early: the backup fails, cleanly.
    proxy.set_faults(Some(Faults {
        cut_per_mille: 1000,
        cut_within: 64 * 1024,
        ..Faults::default()
    }));
    write(&src.join("doomed"), &random_bytes(2 * MIB, rng.next_u64()));
    let out = env.run(["backup", "--tag", "doomed", src.to_str().expect("utf8")]);
    assert!(!env.assert_ok_or_clean("backup, every connection cut", &out));

    proxy.set_faults(None);
    let stats = proxy.stats();
    assert!(stats.cuts > 0 && stats.delayed_chunks > 0, "{stats:?}");
    env.check_read_data();
    let snaps = env.snapshots();
    for s in &snaps {
        let tag = s["tags"][0].as_str().expect("a tag");
        assert_ne!(tag, "doomed", "the failed backup left a snapshot");
        env.assert_restores(s["id"].as_str().expect("id"), &src, &states[tag]);
    }
    // After the faults, the repository takes backups as before.
    let tree = read_tree(&src);
    let out = env.ok(["--json", "backup", src.to_str().expect("utf8")]);
    env.assert_restores(
        saved(&out)["snapshot_id"].as_str().expect("id"),
        &src,
        &tree,
    );
    env.check_read_data();
    eprintln!(
        "s3 faults: {outcomes:?}, {} snapshots restored, {stats:?}",
        snaps.len()
    );
}

#[test]
fn two_hosts_back_up_into_one_bucket_while_a_prune_runs_and_lose_nothing() {
    let g = Garage::shared();
    let bucket = g.new_bucket();
    // Straight to Garage: no faults here, only concurrency.
    let env = S3Env::new(g, g.location_in(&g.endpoint(), &bucket, "shared/repo"));
    env.init();
    let mut rng = XorShift::seeded("s3 two hosts");
    let hosts = ["alpha", "beta"];
    let srcs: Vec<PathBuf> = hosts
        .iter()
        .map(|h| env.path(&format!("src-{h}")))
        .collect();
    // Content shared by both hosts and across rounds, so the prune repacks
    // packs the backups deduplicate against.
    let mut generation = |round: u64| {
        let shared = random_bytes(400_000, rng.next_u64());
        for (i, src) in srcs.iter().enumerate() {
            write(&src.join("old"), &random_bytes(300_000, round / 2));
            write(&src.join("shared"), &shared);
            write(
                &src.join("own"),
                &random_bytes(400_000, rng.next_u64() + i as u64),
            );
        }
    };
    let backup_args = |i: usize| -> Vec<String> {
        vec![
            "--json".into(),
            "backup".into(),
            "--host".into(),
            hosts[i].into(),
            srcs[i].to_str().expect("utf8").into(),
        ]
    };
    let mut known: HashMap<String, (usize, Tree)> = HashMap::new();
    generation(0);
    for i in 0..hosts.len() {
        let args = backup_args(i);
        let out = env
            .cmd_in(&format!("cache-{}", hosts[i]))
            .args(&args)
            .output()
            .expect("backup");
        assert_success(&out);
        let id = saved(&out)["snapshot_id"].as_str().expect("id").to_owned();
        known.insert(id, (i, read_tree(&srcs[i])));
    }
    for round in 1..=2 {
        generation(round);
        let states: Vec<Tree> = srcs.iter().map(|s| read_tree(s)).collect();
        env.ok(["forget", "--keep-last", "1", "-q"]);
        let ids: Vec<String> = env
            .snapshots()
            .iter()
            .map(|s| s["id"].as_str().expect("id").to_owned())
            .collect();
        known.retain(|id, _| ids.contains(id));
        let prune = env.spawn(
            "cache-pruner",
            &["prune", "--grace", "0", "--max-unused", "0", "-q"],
        );
        let backups: Vec<Child> = (0..hosts.len())
            .map(|i| {
                let args = backup_args(i);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                env.spawn(&format!("cache-{}", hosts[i]), &args)
            })
            .collect();
        for (i, b) in backups.into_iter().enumerate() {
            let out = b.wait_with_output().expect("backup");
            assert_success(&out);
            let id = saved(&out)["snapshot_id"].as_str().expect("id").to_owned();
            known.insert(id, (i, states[i].clone()));
        }
        let p = prune.wait_with_output().expect("prune");
        assert_success(&p);
        env.check_read_data();
        let ids: Vec<String> = env
            .snapshots()
            .iter()
            .map(|s| s["id"].as_str().expect("id").to_owned())
            .collect();
        for (id, (i, tree)) in &known {
            assert!(ids.contains(id), "round {round}: snapshot {id} is lost");
            env.assert_restores(id, &srcs[*i], tree);
        }
    }
}
