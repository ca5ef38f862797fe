//! `cairn redis`: backup over the replication protocol from a real
//! throw-away redis-server, restore into it with DUMP/RESTORE, verify, and
//! rejection of a truncated transfer.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::harness::{Env, stderr};

/// A RESP2 reply, as far as the tests need it.
#[derive(Debug, Clone, PartialEq)]
enum R {
    S(String),
    E(String),
    I(i64),
    B(Option<Vec<u8>>),
    A(Vec<R>),
}

fn read_reply(r: &mut impl BufRead) -> R {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).expect("read");
    assert!(line.ends_with(b"\r\n"), "bad RESP line {line:?}");
    let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    match line[0] {
        b'+' => R::S(text),
        b'-' => R::E(text),
        b':' => R::I(text.parse().unwrap()),
        b'$' => {
            let n: i64 = text.parse().unwrap();
            if n < 0 {
                return R::B(None);
            }
            let mut b = vec![0; n as usize + 2];
            r.read_exact(&mut b).unwrap();
            b.truncate(n as usize);
            R::B(Some(b))
        }
        b'*' => {
            let n: i64 = text.parse().unwrap();
            R::A((0..n.max(0)).map(|_| read_reply(r)).collect())
        }
        c => panic!("unknown RESP type {c}"),
    }
}

struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    fn new(port: u16) -> Self {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect redis");
        Self {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }

    fn cmd(&mut self, args: &[&[u8]]) -> R {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.w.write_all(&out).unwrap();
        read_reply(&mut self.r)
    }

    fn ok(&mut self, args: &[&str]) -> R {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        let r = self.cmd(&a);
        assert!(!matches!(r, R::E(_)), "{args:?} failed: {r:?}");
        r
    }
}

/// A redis-server on a free port in its own directory, killed on drop
/// (also used by the plan tests).
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) port: u16,
}

impl Server {
    pub(crate) fn start(dir: &Path) -> Self {
        let found = Command::new("redis-server").arg("--version").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "redis-server is not installed: these tests need it (apt-get install redis-server; .ci/run installs it)"
        );
        std::fs::create_dir_all(dir).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir)
            // Diskless transfers wait 5 s by default before sending.
            .args(["--repl-diskless-sync-delay", "0", "--logfile", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                drop(s);
                break;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn fill(c: &mut Client) {
    for db in ["0", "3"] {
        c.ok(&["SELECT", db]);
        let p = format!("d{db}:");
        c.ok(&["SET", &format!("{p}str"), "hello world"]);
        c.ok(&["SET", &format!("{p}ttl"), "short-lived", "EX", "1000"]);
        c.ok(&["HSET", &format!("{p}hash"), "a", "1", "b", "2"]);
        c.ok(&["RPUSH", &format!("{p}list"), "x", "y", "z"]);
        c.ok(&["SADD", &format!("{p}set"), "m1", "m2"]);
        c.ok(&["ZADD", &format!("{p}zset"), "1.5", "one", "2", "two"]);
        c.ok(&["XADD", &format!("{p}stream"), "1-1", "f", "v"]);
        // A consumer group with a pending entry: the RDB key count walks it.
        c.ok(&["XGROUP", "CREATE", &format!("{p}stream"), "g", "0"]);
        c.ok(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "COUNT",
            "1",
            "STREAMS",
            &format!("{p}stream"),
            ">",
        ]);
        c.ok(&["HSET", &format!("{p}hashttl"), "k", "v"]);
        c.ok(&["PEXPIRE", &format!("{p}hashttl"), "500000"]);
        // A larger value so the RDB spans several reads.
        c.ok(&["SET", &format!("{p}big"), &"0123456789".repeat(20_000)]);
    }
}

/// Flattens a reply into its bulk strings, in order.
fn flatten(r: R, out: &mut Vec<Vec<u8>>) {
    match r {
        R::B(Some(b)) => out.push(b),
        R::S(s) => out.push(s.into_bytes()),
        R::I(i) => out.push(i.to_string().into_bytes()),
        R::A(items) => items.into_iter().for_each(|i| flatten(i, out)),
        R::B(None) | R::E(_) => out.push(Vec::new()),
    }
}

/// A key's value in a form that does not depend on the server's internal
/// encoding (DUMP payloads of sets and hashes may order members differently
/// after a restore, though the values are equal).
fn canonical_value(c: &mut Client, k: &[u8], t: &str) -> Vec<u8> {
    let reply = match t {
        "string" => c.cmd(&[b"GET", k]),
        "list" => c.cmd(&[b"LRANGE", k, b"0", b"-1"]),
        "set" => c.cmd(&[b"SMEMBERS", k]),
        "hash" => c.cmd(&[b"HGETALL", k]),
        "zset" => c.cmd(&[b"ZRANGE", k, b"0", b"-1", b"WITHSCORES"]),
        "stream" => c.cmd(&[b"XRANGE", k, b"-", b"+"]),
        other => panic!("unexpected type {other}"),
    };
    let mut parts = Vec::new();
    flatten(reply, &mut parts);
    match t {
        "set" => parts.sort(),
        "hash" => {
            let mut pairs: Vec<Vec<u8>> = parts.chunks(2).map(|p| p.join(&b"\x01"[..])).collect();
            pairs.sort();
            parts = pairs;
        }
        _ => {}
    }
    parts.join(&b"\x00"[..])
}

/// Per database: key → (type, canonical value, absolute expiry ms or -1).
type State = Vec<(String, Vec<(Vec<u8>, String, Vec<u8>, i64)>)>;

fn state(c: &mut Client) -> State {
    let mut all = Vec::new();
    for db in ["0", "3"] {
        c.ok(&["SELECT", db]);
        let R::A(keys) = c.ok(&["KEYS", "*"]) else {
            panic!("KEYS")
        };
        let mut entries = Vec::new();
        for k in keys {
            let R::B(Some(k)) = k else { panic!("key") };
            let R::S(t) = c.cmd(&[b"TYPE", &k]) else {
                panic!("TYPE")
            };
            let d = canonical_value(c, &k, &t);
            let R::I(at) = c.cmd(&[b"PEXPIRETIME", &k]) else {
                panic!("PEXPIRETIME")
            };
            entries.push((k, t, d, at));
        }
        entries.sort();
        all.push((db.to_string(), entries));
    }
    all
}

#[test]
fn redis_backup_restore_url_and_verify_roundtrip() {
    let env = Env::init();
    let server = Server::start(&env.path("redis-data"));
    let mut c = Client::new(server.port);
    fill(&mut c);
    let before = state(&mut c);
    assert_eq!(before[0].1.len(), 9);
    assert_eq!(before[1].1.len(), 9);
    let ttl_key = before[0].1.iter().find(|e| e.0 == b"d0:ttl").unwrap();
    assert!(ttl_key.3 > now_ms() + 900_000, "TTL was set");

    // Diskless ($EOF:) transfer.
    let b = env.json(["redis", "backup", "--url", &server.url()]);
    let b = &b["snapshots"][0];
    assert_eq!(b["type"], "redis");
    assert_eq!(b["keys"]["db0"], 9);
    assert_eq!(b["keys"]["db3"], 9);
    assert!(b["rdb_version"].as_u64().unwrap() >= 9);
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1);
    let meta = &snaps[0]["metadata"];
    assert_eq!(meta["redis.keys.db0"], "9");
    assert_eq!(meta["redis.keys.db3"], "9");
    assert_eq!(meta["redis.keys_total"], "18");
    assert!(
        meta["redis.version"]
            .as_str()
            .unwrap()
            .starts_with(char::is_numeric)
    );
    assert_eq!(snaps[0]["tags"], serde_json::json!(["redis"]));

    // The stored file is exactly an RDB: magic first, CRC trailer last,
    // and no diskless marker after it.
    let rdb = env.path("out.rdb");
    env.ok([
        "redis",
        "restore",
        "latest",
        "--to-file",
        rdb.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&rdb).unwrap();
    assert!(bytes.starts_with(b"REDIS00"));
    assert_eq!(
        bytes[bytes.len() - 9],
        0xff,
        "EOF opcode right before the trailer"
    );
    assert_eq!(
        bytes.len() as u64,
        snaps[0]["summary"]["total_bytes"].as_u64().unwrap()
    );

    // Disk-based ($<len>) transfer as well.
    c.ok(&["CONFIG", "SET", "repl-diskless-sync", "no"]);
    env.ok(["redis", "backup", "--url", &server.url()]);
    assert_eq!(env.snapshots().len(), 2);

    c.ok(&["FLUSHALL"]);
    c.ok(&["SELECT", "0"]);
    c.ok(&["SET", "d0:str", "overwritten"]);
    let r = env.json(["redis", "restore", "latest", "--url", &server.url()]);
    assert_eq!(r["keys"]["db0"], 9);
    let after = state(&mut c);
    assert_eq!(after.len(), before.len());
    for ((db_a, a), (db_b, b)) in before.iter().zip(&after) {
        assert_eq!(db_a, db_b);
        assert_eq!(a.len(), b.len(), "db{db_a} key count");
        for (x, y) in a.iter().zip(b) {
            assert_eq!((&x.0, &x.1, &x.2), (&y.0, &y.1, &y.2), "key {:?}", x.0);
            assert!(
                (x.3 - y.3).abs() <= 5000,
                "TTL of {:?}: {} vs {}",
                x.0,
                x.3,
                y.3
            );
        }
    }
    c.ok(&["SELECT", "0"]);
    assert_eq!(
        c.ok(&["GET", "d0:str"]),
        R::B(Some(b"hello world".to_vec()))
    );
    assert_eq!(
        c.ok(&["ZRANGE", "d0:zset", "0", "-1", "WITHSCORES"]),
        R::A(vec![
            R::B(Some(b"one".to_vec())),
            R::B(Some(b"1.5".to_vec())),
            R::B(Some(b"two".to_vec())),
            R::B(Some(b"2".to_vec())),
        ])
    );

    let v = env.json(["redis", "verify", "latest"]);
    assert_eq!(v["ok"], true);
    assert_eq!(v["databases"].as_array().unwrap().len(), 2);
    let human = env.ok(["redis", "verify", "latest"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("verified"));
}

/// Speaks just enough of the protocol to get to SYNC, then sends a bulk
/// header promising more bytes than follow and hangs up.
fn fake_server(payload: Vec<u8>, promised: usize) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end();
                if line == "SYNC" {
                    let _ = w.write_all(format!("\n\n${promised}\r\n").as_bytes());
                    let _ = w.write_all(&payload);
                    break;
                }
                let Some(n) = line.strip_prefix('*') else {
                    continue;
                };
                let mut args = Vec::new();
                for _ in 0..n.parse::<usize>().unwrap() {
                    let mut len = String::new();
                    r.read_line(&mut len).unwrap();
                    let mut a = String::new();
                    r.read_line(&mut a).unwrap();
                    args.push(a.trim_end().to_uppercase());
                }
                let reply = match (args[0].as_str(), args.get(1).map(String::as_str)) {
                    ("INFO", Some("SERVER")) => bulk("# Server\r\nredis_version:7.0.15\r\n"),
                    ("INFO", _) => bulk("# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n"),
                    _ => "+OK\r\n".to_string(),
                };
                let _ = w.write_all(reply.as_bytes());
            }
        }
    });
    port
}

fn bulk(s: &str) -> String {
    format!("${}\r\n{s}\r\n", s.len())
}

#[test]
fn redis_truncated_or_corrupt_rdb_writes_no_snapshot() {
    let env = Env::init();
    let mut rdb = b"REDIS0010".to_vec();
    rdb.extend_from_slice(&[0xfe, 0x00, 0xfb, 0x01, 0x00, 0x00, 0x01, b'k', 0x01, b'v']);
    rdb.extend_from_slice(&vec![b'x'; 100_000]);
    // Short bulk: the header promises more than is sent.
    let port = fake_server(rdb.clone(), rdb.len() + 1000);
    let out = env.run([
        "redis",
        "backup",
        "--url",
        &format!("redis://127.0.0.1:{port}"),
    ]);
    assert!(!out.status.success(), "a short transfer must fail");
    assert!(
        stderr(&out).contains("no snapshot written"),
        "{}",
        stderr(&out)
    );
    // Complete length, but no EOF opcode / CRC trailer.
    let port = fake_server(rdb.clone(), rdb.len());
    let out = env.run([
        "redis",
        "backup",
        "--url",
        &format!("redis://127.0.0.1:{port}"),
    ]);
    assert!(!out.status.success(), "an RDB without trailer must fail");
    assert!(stderr(&out).contains("RDB"), "{}", stderr(&out));
    // Trailer present but wrong.
    let mut bad = rdb.clone();
    bad.push(0xff);
    bad.extend_from_slice(&0x1234_5678u64.to_le_bytes());
    let port = fake_server(bad.clone(), bad.len());
    let out = env.run([
        "redis",
        "backup",
        "--url",
        &format!("redis://127.0.0.1:{port}"),
    ]);
    assert!(!out.status.success(), "a bad checksum must fail");
    assert!(stderr(&out).contains("checksum"), "{}", stderr(&out));
    assert!(env.snapshots().is_empty(), "no snapshot may be written");
}

/// The pids whose parent is `pid`, with their command names.
fn children(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid = stat[close + 1..].split_whitespace().nth(1);
        if ppid == Some(&pid.to_string()) {
            out.push((p, stat[open + 1..close].to_string()));
        }
    }
    out
}

/// Inodes of the TCP sockets in LISTEN state, from /proc/<pid>/net/tcp{,6}.
fn tcp_listen_inodes(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for f in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(3) == Some(&"0A") {
                out.push(cols[9].to_string());
            }
        }
    }
    out
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Copies bytes both ways between two sockets until either side closes.
fn splice(a: TcpStream, b: TcpStream) {
    let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Both);
        })
    };
    pipe(a, b2);
    pipe(b, a2);
}

/// SPEC §17.3: the scratch server of `restore --url` listens on no TCP port,
/// only on a socket in a 0700 directory, asks a password that is in no
/// command line, keeps its files 0600; and a key added to it behind cairn's
/// back (here by the test, which can read the config as the same user) makes
/// the restore fail instead of being copied silently.
#[test]
fn redis_restore_scratch_server_is_private_and_foreign_keys_fail() {
    use std::os::unix::net::UnixStream;
    let env = Env::init();
    let server = Server::start(&env.path("redis-data"));
    let mut c = Client::new(server.port);
    fill(&mut c);
    env.ok(["redis", "backup", "--url", &server.url()]);
    c.ok(&["FLUSHALL"]);

    // cairn reaches the target through us; while we hold its first command
    // the scratch server is up with the RDB loaded.
    let gate = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://127.0.0.1:{}", gate.local_addr().unwrap().port());
    let cairn = env
        .cmd()
        .args(["redis", "restore", "latest", "--url", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (held, _) = gate.accept().unwrap();

    let scratch = children(cairn.id())
        .into_iter()
        .find(|(_, name)| name.starts_with("redis-server"))
        .expect("cairn runs a scratch redis-server")
        .0;
    // redis-server works in its `dir`: the private directory.
    let dir = std::fs::read_link(format!("/proc/{scratch}/cwd")).unwrap();
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    for f in ["dump.rdb", "redis.conf"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    let conf = std::fs::read_to_string(dir.join("redis.conf")).unwrap();
    assert!(conf.lines().any(|l| l == "port 0"), "{conf}");
    let password = conf
        .lines()
        .find_map(|l| l.strip_prefix("requirepass "))
        .expect("a requirepass")
        .to_string();
    assert!(password.len() >= 32, "a random password");
    for pid in [scratch, cairn.id()] {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&password),
            "password in the command line of {pid}"
        );
    }
    // No TCP listener among the server's sockets.
    let listening = tcp_listen_inodes(scratch);
    for fd in std::fs::read_dir(format!("/proc/{scratch}/fd"))
        .unwrap()
        .flatten()
    {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        let t = target.to_string_lossy();
        if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
            assert!(
                !listening.iter().any(|l| l == inode),
                "scratch server listens on TCP"
            );
        }
    }
    // Without the password the socket answers nothing but NOAUTH.
    let sock = UnixStream::connect(dir.join("redis.sock")).unwrap();
    let mut w = sock.try_clone().unwrap();
    let mut r = BufReader::new(sock);
    w.write_all(b"*2\r\n$4\r\nKEYS\r\n$1\r\n*\r\n").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("-NOAUTH"), "{line}");

    // With it (the test is the same user), a key the RDB does not hold.
    let mut auth = |args: &[&str]| {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        w.write_all(out.as_bytes()).unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with('+'), "{args:?}: {line}");
    };
    auth(&["AUTH", &password]);
    auth(&["SET", "d0:injected", "evil"]);

    splice(
        held,
        TcpStream::connect(("127.0.0.1", server.port)).unwrap(),
    );
    let out = cairn.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "a restore copying foreign keys must fail"
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("more keys were copied") && stderr(&out).contains("db0: 10 keys"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.exists(), "the scratch directory is removed");
}

/// Issue 11.3: keys whose TTL runs out between backup and verify are not a
/// mismatch (the RDB knows their expiry); a key the RDB holds that does not
/// load still is.
#[test]
fn redis_verify_allows_expired_keys_but_not_lost_ones() {
    let env = Env::init();
    let server = Server::start(&env.path("redis-data"));
    let mut c = Client::new(server.port);
    c.ok(&["SET", "keep", "v"]);
    c.ok(&["SET", "long", "v", "EX", "100000"]);
    for i in 0..5 {
        c.ok(&["SET", &format!("session:{i}"), "v", "PX", "300"]);
    }
    let R::I(expires) = c.ok(&["PEXPIRETIME", "session:4"]) else {
        panic!("PEXPIRETIME")
    };
    // The URL from the environment.
    let out = env
        .cmd()
        .env("CAIRN_REDIS_URL", server.url())
        .args(["redis", "backup"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // Wait out the sessions' TTL (their own deadline, not a guess).
    while now_ms() <= expires {
        std::thread::sleep(Duration::from_millis(20));
    }
    let v = env.json(["redis", "verify", "latest"]);
    assert_eq!(v["ok"], true, "{v}");
    let db = &v["databases"][0];
    assert_eq!(
        (&db["rdb_keys"], &db["rdb_expiring"], &db["expired"]),
        (
            &serde_json::json!(7),
            &serde_json::json!(6),
            &serde_json::json!(5)
        ),
        "{v}"
    );
    assert_eq!(
        (&db["loaded"], &db["loaded_expiring"]),
        (&serde_json::json!(2), &serde_json::json!(1))
    );

    // An RDB holding a key that Redis drops when loading (an empty set):
    // recorded count (1) and loaded count agree, the RDB's own does not.
    let mut rdb = b"REDIS0010\xfe\x00\x00\x01a\x01v\x02\x01e\x00\xff".to_vec();
    rdb.extend_from_slice(&[0; 8]); // checksum disabled
    let port = fake_server(rdb.clone(), rdb.len());
    env.ok([
        "redis",
        "backup",
        "--url",
        &format!("redis://127.0.0.1:{port}"),
    ]);
    let out = env.run(["--json", "redis", "verify", "latest"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(
        (&v["databases"][0]["rdb_keys"], &v["databases"][0]["loaded"]),
        (&serde_json::json!(2), &serde_json::json!(1))
    );
}

/// The check before copying: a scratch server that loaded more keys than
/// the snapshot's RDB holds (here a wrapper swaps the RDB file before the
/// real redis-server starts) stops the restore before anything is copied.
#[test]
fn redis_restore_refuses_a_scratch_server_with_foreign_keys() {
    let env = Env::init();
    let rdb = |keys: &[&[u8]]| {
        let mut v = b"REDIS0010\xfe\x00".to_vec();
        for k in keys {
            v.push(0);
            v.push(k.len() as u8);
            v.extend_from_slice(k);
            v.extend_from_slice(b"\x01v");
        }
        v.push(0xff);
        v.extend_from_slice(&[0; 8]); // checksum disabled
        v
    };
    let port = fake_server(rdb(&[b"a"]), rdb(&[b"a"]).len());
    let url_file = env.path("url");
    std::fs::write(&url_file, format!("redis://127.0.0.1:{port}\n")).unwrap();
    env.ok(["redis", "backup", "--url-file", url_file.to_str().unwrap()]);

    let other = env.path("other.rdb");
    std::fs::write(&other, rdb(&[b"a", b"foreign"])).unwrap();
    let wrapper = env.path("redis-server");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncp {} \"$(dirname \"$1\")/dump.rdb\"\nexec redis-server \"$@\"\n",
            other.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

    let target = Server::start(&env.path("target"));
    let out = env.run([
        "redis",
        "restore",
        "latest",
        "--url",
        &target.url(),
        "--redis-server",
        wrapper.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing was copied") && stderr(&out).contains("db0: 2 keys"),
        "{}",
        stderr(&out)
    );
    let mut c = Client::new(target.port);
    assert_eq!(c.ok(&["DBSIZE"]), R::I(0), "nothing reached the target");
}
