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

    fn url(&self) -> String {
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
