//! A real distributed object store for the tests: a 3-node Garage cluster
//! on loopback with replication factor 3, one zone per node, so every
//! object is stored on all three nodes and writes need two of them.
//!
//! [`Garage::start`] gives a test its own cluster (for tests that kill or
//! stop nodes); [`Garage::shared`] one cluster per test binary for tests that
//! only read and write (give each its own bucket with
//! [`Garage::new_bucket`] or its own prefix). Garage is a test tool, never a
//! dependency of the product: the binary is found through `CAIRN_GARAGE`,
//! `PATH` or `~/.cargo/bin/garage` (`.ci/test` installs it there).
//!
//! Each node runs under a small `sh` watchdog that holds the read end of a
//! pipe from the test process: when the test process dies, however it dies,
//! the pipe closes and the watchdog SIGKILLs its node, so no server outlives
//! the tests.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The S3 region the cluster answers to.
pub const REGION: &str = "garage";

/// How many nodes a cluster has.
pub const NODES: usize = 3;

/// How long a node gets to come up before the harness gives up (a guard
/// against hangs, not a measurement: start-up takes about a second).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

const POLL: Duration = Duration::from_millis(25);

/// The watchdog: starts the node, SIGKILLs it when its stdin (our pipe)
/// closes, and exits with the node. `$0` is the binary, `$1` the config,
/// `$2` the log. Background jobs of a non-interactive shell get /dev/null
/// as stdin, hence the copy of the pipe on fd 3.
const WATCHDOG: &str = r#"exec 3<&0
"$0" -c "$1" server </dev/null >>"$2" 2>&1 &
p=$!
(read _ <&3; kill -9 $p 2>/dev/null) &
wait $p"#;

/// Removes the shared cluster's directory once the test process is gone
/// (a `static` is never dropped); the nodes die at the same moment.
const JANITOR: &str = r#"read _
for i in 1 2 3 4 5; do sleep 0.2; rm -rf "$0" 2>/dev/null && exit 0; done"#;

/// A running (or partly stopped) 3-node Garage cluster with one bucket and
/// one key allowed on it. Dropping it kills the nodes and removes their
/// data.
pub struct Garage {
    bin: PathBuf,
    nodes: Mutex<Vec<Node>>,
    bucket: String,
    key_id: String,
    secret_key: String,
    buckets: Mutex<u32>,
    // Dropped last: the nodes are killed before their files go.
    dir: TempDir,
}

struct Node {
    config: PathBuf,
    log: PathBuf,
    rpc: u16,
    s3: u16,
    admin: u16,
    id: String,
    process: Option<Watched>,
}

/// A node's watchdog shell and our end of its pipe.
struct Watched {
    child: Child,
    pipe: Option<ChildStdin>,
}

impl Watched {
    /// SIGKILLs the node (through its watchdog) and waits until it is gone.
    fn kill(mut self) {
        drop(self.pipe.take());
        let _ = self.child.wait();
    }
}

impl Garage {
    /// Starts a fresh cluster in a temporary directory on free loopback
    /// ports, creates bucket `cairn` and a key allowed on it, and returns
    /// once every node reports the cluster healthy and the S3 API answers.
    ///
    /// Panics (with the nodes' logs) when Garage is missing or does not
    /// come up.
    pub fn start() -> Self {
        let bin = binary();
        // A port picked free may be taken by another process before Garage
        // binds it: start again on other ports.
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(&bin) {
                Ok(g) => return g,
                Err(e) => last = e,
            }
        }
        panic!("Garage cluster did not start:\n{last}");
    }

    /// One cluster for the whole test binary, started on first use, for
    /// tests that do not stop nodes. Its nodes die and its directory is
    /// removed when the test process exits.
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<Garage> = OnceLock::new();
        // Holds our end of the janitor's pipe until the process exits.
        static JANITOR_CHILD: OnceLock<Mutex<Child>> = OnceLock::new();
        SHARED.get_or_init(|| {
            let g = Self::start();
            let janitor = Command::new("sh")
                .args(["-c", JANITOR])
                .arg(g.dir.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn sh for the shared cluster's clean-up");
            let _ = JANITOR_CHILD.set(Mutex::new(janitor));
            g
        })
    }

    fn try_start(bin: &Path) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("cairn-garage-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let secret = rpc_secret();
        let mut nodes = Vec::with_capacity(NODES);
        for i in 0..NODES {
            let root = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
            let node = Node {
                config: root.join("garage.toml"),
                log: root.join("log"),
                rpc: free_port(),
                s3: free_port(),
                admin: free_port(),
                id: String::new(),
                process: None,
            };
            std::fs::write(&node.config, node.toml(&root, &secret))
                .map_err(|e| format!("{}: {e}", node.config.display()))?;
            nodes.push(node);
        }
        let g = Garage {
            bin: bin.to_owned(),
            nodes: Mutex::new(nodes),
            bucket: "cairn".into(),
            key_id: String::new(),
            secret_key: String::new(),
            buckets: Mutex::new(0),
            dir,
        };
        let mut g = g;
        (g.key_id, g.secret_key) = g.set_up()?;
        Ok(g)
    }

    /// Starts the nodes, joins them, applies the layout, creates the
    /// bucket and key; returns the key id and secret.
    fn set_up(&self) -> Result<(String, String), String> {
        {
            let mut nodes = self.lock();
            for i in 0..NODES {
                let p = self.spawn(&nodes[i]);
                nodes[i].process = Some(p);
            }
            for i in 0..NODES {
                let config = nodes[i].config.clone();
                let out = self.wait_for(&mut nodes, i, || {
                    let o = self.run_on(&config, &["node", "id", "-q"]);
                    o.status.success().then_some(o)
                })?;
                let full = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                nodes[i].id = full;
            }
            // `node id` may answer from the key file before the RPC port
            // listens: connecting is what proves a node up.
            let config = nodes[0].config.clone();
            for i in 1..NODES {
                let peer = nodes[i].id.clone();
                self.wait_for(&mut nodes, i, || {
                    let o = self.run_on(&config, &["node", "connect", &peer]);
                    o.status.success().then_some(())
                })?;
            }
            for (i, n) in nodes.iter().enumerate() {
                let id = n.id.split('@').next().unwrap_or_default().to_owned();
                let zone = format!("dc{}", i + 1);
                self.cli_on(
                    &nodes[0],
                    &["layout", "assign", "-z", &zone, "-c", "1G", &id],
                )?;
            }
            self.cli_on(&nodes[0], &["layout", "apply", "--version", "1"])?;
            for i in 0..NODES {
                self.wait_healthy(&mut nodes, i)?;
            }
        }
        self.cli(&["bucket", "create", &self.bucket]);
        let out = self.cli(&["key", "create", "cairn-test"]);
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .ok_or_else(|| format!("no {name:?} in `garage key create` output:\n{out}"))
        };
        let (key_id, secret) = (field("Key ID:")?, field("Secret key:")?);
        self.allow(&self.bucket, &key_id);
        Ok((key_id, secret))
    }

    /// `http://127.0.0.1:PORT` of node 0's S3 API: the node tests talk to.
    pub fn endpoint(&self) -> String {
        self.endpoint_of(0)
    }

    /// `http://127.0.0.1:PORT` of node `node`'s S3 API.
    pub fn endpoint_of(&self, node: usize) -> String {
        format!("http://127.0.0.1:{}", self.s3_port(node))
    }

    /// The S3 API port of node `node`.
    pub fn s3_port(&self, node: usize) -> u16 {
        self.lock()[node].s3
    }

    /// The bucket created at start.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The access key id allowed on every bucket of this cluster.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The secret of [`Garage::key_id`].
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// A cairn location on node 0: `s3:http://127.0.0.1:PORT/BUCKET/PREFIX`.
    pub fn location(&self, prefix: &str) -> String {
        self.location_in(&self.endpoint(), &self.bucket, prefix)
    }

    /// A cairn location for `bucket` and `prefix` behind `endpoint` (for
    /// example a fault proxy's address).
    pub fn location_in(&self, endpoint: &str, bucket: &str, prefix: &str) -> String {
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            format!("s3:{endpoint}/{bucket}")
        } else {
            format!("s3:{endpoint}/{bucket}/{prefix}")
        }
    }

    /// The environment an S3 client needs: credentials and region.
    pub fn env(&self) -> [(&'static str, String); 3] {
        [
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_DEFAULT_REGION", REGION.to_owned()),
        ]
    }

    /// Creates a new bucket (`cairn-N`), allows the key on it and returns
    /// its name: tests sharing a cluster keep apart this way.
    pub fn new_bucket(&self) -> String {
        let name = {
            let mut n = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            format!("cairn-{n}")
        };
        self.cli(&["bucket", "create", &name]);
        self.allow(&name, &self.key_id.clone());
        name
    }

    fn allow(&self, bucket: &str, key: &str) {
        self.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", bucket, "--key", key,
        ]);
    }

    /// Runs Garage's CLI against the first running node; panics when it
    /// fails. Returns its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let nodes = self.lock();
        let node = nodes
            .iter()
            .find(|n| n.process.is_some())
            .expect("a running Garage node for the CLI");
        self.cli_on(node, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// SIGKILLs node `node` and waits until it is gone. Its data stays for
    /// [`Garage::restart_node`].
    pub fn kill_node(&self, node: usize) {
        if let Some(p) = self.lock()[node].process.take() {
            p.kill();
        }
    }

    /// SIGKILLs every node.
    pub fn stop_all(&self) {
        for i in 0..NODES {
            self.kill_node(i);
        }
    }

    /// Whether node `node` runs (it was not killed).
    pub fn is_running(&self, node: usize) -> bool {
        self.lock()[node].process.is_some()
    }

    /// Starts node `node` again on its data and ports (after
    /// [`Garage::kill_node`] or [`Garage::stop_all`]), reconnects it to the
    /// running nodes and waits until it reports the cluster usable.
    pub fn restart_node(&self, node: usize) {
        self.restart(&[node]);
    }

    /// Restarts every stopped node and waits until each reports the cluster
    /// healthy.
    pub fn restart_all(&self) {
        self.restart(&(0..NODES).collect::<Vec<_>>());
    }

    fn restart(&self, which: &[usize]) {
        let mut nodes = self.lock();
        for &i in which {
            if nodes[i].process.is_none() {
                let p = self.spawn(&nodes[i]);
                nodes[i].process = Some(p);
            }
        }
        for &node in which {
            let config = nodes[node].config.clone();
            let mut r = Ok(());
            for i in 0..NODES {
                if r.is_ok() && i != node && nodes[i].process.is_some() {
                    let peer = nodes[i].id.clone();
                    r = self.wait_for(&mut nodes, node, || {
                        let o = self.run_on(&config, &["node", "connect", &peer]);
                        o.status.success().then_some(())
                    });
                }
            }
            if let Err(e) = r.and_then(|()| self.wait_healthy(&mut nodes, node)) {
                panic!("restarting Garage node {node}: {e}");
            }
        }
    }

    /// The S3 requests node `node` received so far for objects under
    /// `prefix` in `bucket`, and listings of it, oldest first, each as
    /// `METHOD URI`: a node logs every request as it arrives, before it
    /// answers. For tests that pin what a command costs on the wire,
    /// whatever the client counts itself.
    pub fn requests_under(&self, node: usize, bucket: &str, prefix: &str) -> Vec<String> {
        let log = self.lock()[node].log.clone();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let object = format!("/{bucket}/{prefix}/");
        let listing = format!("/{bucket}?");
        let listed = format!("prefix={}%2F", prefix.replace('/', "%2F"));
        let mut out = Vec::new();
        for line in text.lines() {
            // Failed requests are logged again with their answer.
            if line.contains("in response to") {
                continue;
            }
            let Some(at) = line.find("(key ") else {
                continue;
            };
            let Some((_, request)) = line[at..].split_once(") ") else {
                continue;
            };
            let Some((method, uri)) = request.trim().split_once(' ') else {
                continue;
            };
            let ours = uri.starts_with(&object)
                || (uri.starts_with(&listing)
                    && uri.split(['?', '&']).any(|p| p.starts_with(&listed)));
            if ours {
                out.push(format!("{method} {uri}"));
            }
        }
        out
    }

    /// The last lines of node `node`'s log, for failure messages.
    pub fn log_tail(&self, node: usize) -> String {
        tail(&self.lock()[node].log)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Node>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn(&self, node: &Node) -> Watched {
        let mut child = Command::new("sh")
            .args(["-c", WATCHDOG])
            .arg(&self.bin)
            .arg(&node.config)
            .arg(&node.log)
            // Each S3 request as it arrives, for `requests_under`.
            .env(
                "RUST_LOG",
                "garage=warn,garage_api_common::generic_server=info",
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sh for a Garage node");
        let pipe = child.stdin.take();
        Watched { child, pipe }
    }

    fn run_on(&self, config: &Path, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("-c")
            .arg(config)
            .args(args)
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()))
    }

    fn cli_on(&self, node: &Node, args: &[&str]) -> Result<String, String> {
        let o = self.run_on(&node.config, args);
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(format!(
                "garage {} failed ({}):\n{}{}",
                args.join(" "),
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ))
        }
    }

    /// Polls `probe` until it gives a value; fails early when node `i`
    /// exits (a port taken, a bad config) and after [`READY_TIMEOUT`].
    fn wait_for<T>(
        &self,
        nodes: &mut [Node],
        i: usize,
        mut probe: impl FnMut() -> Option<T>,
    ) -> Result<T, String> {
        let start = Instant::now();
        loop {
            if let Some(v) = probe() {
                return Ok(v);
            }
            if let Some(p) = nodes[i].process.as_mut()
                && let Ok(Some(status)) = p.child.try_wait()
            {
                nodes[i].process = None;
                return Err(format!(
                    "Garage node {i} exited ({status}); log:\n{}",
                    tail(&nodes[i].log)
                ));
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(format!(
                    "Garage node {i} not ready after {READY_TIMEOUT:?}; log:\n{}",
                    tail(&nodes[i].log)
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until node `i`'s admin API reports the cluster able to serve
    /// (fully operational when every node runs) and its S3 API answers.
    fn wait_healthy(&self, nodes: &mut [Node], i: usize) -> Result<(), String> {
        let all_up = nodes.iter().all(|n| n.process.is_some());
        let (admin, s3) = (nodes[i].admin, nodes[i].s3);
        self.wait_for(nodes, i, || {
            let (status, body) = http_get(admin, "/health")?;
            (status == 200 && (!all_up || body.contains("fully operational"))).then_some(())
        })?;
        // Any HTTP answer will do: an unsigned request is refused.
        self.wait_for(nodes, i, || http_get(s3, "/").map(|_| ()))
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for n in self.nodes.get_mut().unwrap_or_else(|e| e.into_inner()) {
            if let Some(p) = n.process.take() {
                p.kill();
            }
        }
    }
}

impl Node {
    fn toml(&self, root: &Path, secret: &str) -> String {
        let meta = root.join("meta");
        let data = root.join("data");
        format!(
            r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{secret}"
"#,
            meta = meta.display(),
            data = data.display(),
            rpc = self.rpc,
            s3 = self.s3,
            admin = self.admin,
        )
    }
}

/// The Garage binary: `CAIRN_GARAGE`, else `garage` on `PATH`, else
/// `~/.cargo/bin/garage`. Panics with how to install it: tests that need
/// Garage must fail, not skip, when it is missing.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_GARAGE") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "CAIRN_GARAGE={} is not a file", p.display());
        return p;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("garage"));
    let cargo = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin/garage"));
    on_path
        .chain(cargo)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the S3 tests need Garage (a test tool, not a dependency): install it with \
                 `cargo install --locked garage` (about 15 minutes on 2 cores; `bash .ci/test` \
                 does it), or point CAIRN_GARAGE at the binary"
            )
        })
}

/// A loopback port nobody listens on, never the same twice in this
/// process (tests start clusters in parallel).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("bind a loopback port")
            .port();
        if given.insert(port) {
            return port;
        }
    }
}

/// 32 random bytes in hex: the cluster's shared RPC secret.
fn rpc_secret() -> String {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .expect("read /dev/urandom");
    seed.iter().map(|b| format!("{b:02x}")).collect()
}

/// A minimal `GET` on loopback: the status code and body, or `None` when
/// nothing answers yet.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    let status = reply.split_whitespace().nth(1)?.parse().ok()?;
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    Some((status, body.unwrap_or_default()))
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain S3 client (OpenDAL, no retries) on one node and bucket.
    struct Client {
        rt: tokio::runtime::Runtime,
        op: opendal::Operator,
    }

    impl Client {
        fn new(g: &Garage, node: usize, bucket: &str) -> Self {
            let s3 = opendal::services::S3::default()
                .endpoint(&g.endpoint_of(node))
                .bucket(bucket)
                .region(REGION)
                .access_key_id(g.key_id())
                .secret_access_key(g.secret_key())
                .disable_config_load();
            Self {
                rt: tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .unwrap(),
                op: opendal::Operator::new(s3).unwrap().finish(),
            }
        }

        fn put(&self, name: &str, data: &[u8]) -> opendal::Result<()> {
            self.rt
                .block_on(self.op.write(name, data.to_vec()))
                .map(drop)
        }

        fn get(&self, name: &str) -> Vec<u8> {
            self.rt.block_on(self.op.read(name)).unwrap().to_vec()
        }
    }

    #[test]
    fn cluster_serves_s3_survives_a_killed_node_and_restarts() {
        let g = Garage::start();
        assert!(g.key_id().starts_with("GK"), "{}", g.key_id());
        let c = Client::new(&g, 0, g.bucket());
        c.put("a/one", b"first").unwrap();
        assert_eq!(c.get("a/one"), b"first");

        // Replication factor 3: two nodes are a write quorum.
        g.kill_node(2);
        assert!(!g.is_running(2));
        c.put("a/two", b"second").unwrap();
        assert_eq!(c.get("a/one"), b"first");
        g.restart_node(2);
        let c2 = Client::new(&g, 2, g.bucket());
        assert_eq!(c2.get("a/two"), b"second");

        // Nothing answers when every node is down; all comes back.
        g.stop_all();
        assert!(c.put("a/three", b"third").is_err());
        g.restart_all();
        assert_eq!(c.get("a/two"), b"second");

        // Another bucket, allowed for the same key.
        let b = g.new_bucket();
        let cb = Client::new(&g, 1, &b);
        cb.put("x", b"in another bucket").unwrap();
        assert_eq!(cb.get("x"), b"in another bucket");
        assert_eq!(g.location("p/q/"), format!("s3:{}/cairn/p/q", g.endpoint()));

        let dir = g.dir.path().to_owned();
        drop(g);
        assert!(!dir.exists(), "dropping the cluster removes its data");
    }

    #[test]
    fn shared_cluster_is_started_once() {
        let (a, b) = (Garage::shared(), Garage::shared());
        assert!(std::ptr::eq(a, b));
        let bucket = a.new_bucket();
        let c = Client::new(a, 0, &bucket);
        c.put("k", b"v").unwrap();
        assert_eq!(c.get("k"), b"v");
    }
}
