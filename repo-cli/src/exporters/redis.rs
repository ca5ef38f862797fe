//! Redis: an RDB fetched over the replication protocol, the way
//! `redis-cli --rdb` does, but natively so the diskless EOF marker is
//! stripped and the RDB is checked (magic, version, CRC64) while it streams.
//!
//! Also a small RESP client (INFO, DUMP/RESTORE, SCAN) and a throw-away
//! `redis-server` used by restore-to-url and verify.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::rdb::RdbReader;
use crate::credentials::redact_url;

/// Length of the random marker framing a diskless transfer.
const EOF_MARK_LEN: usize = 40;
/// How long a read may stall; the server sends `\n` keepalives while it
/// prepares the RDB, so this only trips on a dead peer.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Where a Redis server is, from `redis://[user:pass@]host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port (default 6379).
    pub port: u16,
    /// ACL user, if given.
    pub user: Option<String>,
    /// Password, if given.
    pub password: Option<String>,
    /// A unix socket to connect to instead of `host:port` (the scratch
    /// server's; URLs never set it).
    pub socket: Option<PathBuf>,
}

impl RedisUrl {
    /// Parses `redis://[[user]:pass@]host[:port][/]` with the `url` crate:
    /// user and password are percent-decoded (`p%40ss` is `p@ss`), and an
    /// IPv6 host is written in brackets (`redis://[::1]:6379`).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| anyhow!("invalid Redis URL {:?}: {why}", redact_url(s));
        let u = url::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
        if u.scheme() != "redis" {
            return Err(bad("must start with redis://"));
        }
        if !matches!(u.path(), "" | "/") || u.query().is_some() || u.fragment().is_some() {
            return Err(bad("a database number, query or fragment is not supported"));
        }
        let host = match u.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            _ => return Err(bad("no host")),
        };
        let decode = |part: &str| {
            percent_encoding::percent_decode_str(part)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| bad("user or password is not UTF-8 once decoded"))
        };
        let user = match u.username() {
            "" => None,
            name => Some(decode(name)?),
        };
        let password = u.password().map(decode).transpose()?;
        Ok(Self {
            host,
            port: u.port().unwrap_or(6379),
            user,
            password,
            socket: None,
        })
    }

    /// `host:port` (or the socket), for messages and metadata (never the
    /// password).
    pub fn address(&self) -> String {
        match &self.socket {
            Some(p) => p.display().to_string(),
            None if self.host.contains(':') => format!("[{}]:{}", self.host, self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR …`.
    Error(String),
    /// `:42`.
    Int(i64),
    /// `$n` bulk string; `None` for `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*n` array; `None` for `*-1`.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as an error when the server answered `-…`.
    pub fn ok(self) -> Result<Reply> {
        match self {
            Reply::Error(e) => Err(anyhow!("Redis error: {e}")),
            r => Ok(r),
        }
    }

    /// A bulk or simple string's bytes.
    pub fn bytes(self) -> Result<Vec<u8>> {
        match self.ok()? {
            Reply::Bulk(Some(b)) => Ok(b),
            Reply::Simple(s) => Ok(s.into_bytes()),
            r => Err(anyhow!("unexpected Redis reply {r:?}")),
        }
    }

    /// An integer reply.
    pub fn int(self) -> Result<i64> {
        match self.ok()? {
            Reply::Int(i) => Ok(i),
            r => Err(anyhow!("unexpected Redis reply {r:?}")),
        }
    }
}

fn bad_data(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads one line ending in `\n`, without the `\r\n`.
fn read_line(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed by the Redis server",
        ));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(line)
}

fn parse_int(b: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad_data(format!("bad RESP number {:?}", String::from_utf8_lossy(b))))
}

/// Reads one RESP2 reply.
pub fn read_reply(r: &mut impl BufRead) -> io::Result<Reply> {
    let line = read_line(r)?;
    let (&kind, rest) = line
        .split_first()
        .ok_or_else(|| bad_data("empty RESP line"))?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    Ok(match kind {
        b'+' => Reply::Simple(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Int(parse_int(rest)?),
        b'$' => {
            let n = parse_int(rest)?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let mut buf = vec![0; n as usize + 2];
                r.read_exact(&mut buf)?;
                if !buf.ends_with(b"\r\n") {
                    return Err(bad_data("RESP bulk string not followed by CRLF"));
                }
                buf.truncate(n as usize);
                Reply::Bulk(Some(buf))
            }
        }
        b'*' => {
            let n = parse_int(rest)?;
            if n < 0 {
                Reply::Array(None)
            } else {
                let mut items = Vec::with_capacity(n.min(1024) as usize);
                for _ in 0..n {
                    items.push(read_reply(r)?);
                }
                Reply::Array(Some(items))
            }
        }
        _ => return Err(bad_data(format!("unknown RESP type {:?}", kind as char))),
    })
}

/// A command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A TCP or unix socket connection.
pub enum Stream {
    /// `host:port`.
    Tcp(TcpStream),
    /// The scratch server's socket.
    Unix(UnixStream),
}

impl Stream {
    fn connect(url: &RedisUrl) -> io::Result<Self> {
        let s = match &url.socket {
            Some(p) => Self::Unix(UnixStream::connect(p)?),
            None => Self::Tcp(TcpStream::connect((url.host.as_str(), url.port))?),
        };
        match &s {
            Self::Tcp(t) => t.set_read_timeout(Some(READ_TIMEOUT))?,
            Self::Unix(u) => u.set_read_timeout(Some(READ_TIMEOUT))?,
        }
        Ok(s)
    }

    fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            Self::Tcp(t) => Self::Tcp(t.try_clone()?),
            Self::Unix(u) => Self::Unix(u.try_clone()?),
        })
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(t) => t.read(buf),
            Self::Unix(u) => u.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(t) => t.write(buf),
            Self::Unix(u) => u.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Tcp(t) => t.flush(),
            Self::Unix(u) => u.flush(),
        }
    }
}

/// One connection to a Redis server.
pub struct Conn {
    reader: BufReader<Stream>,
    writer: Stream,
}

impl Conn {
    /// Connects and authenticates with the URL's credentials.
    pub fn connect(url: &RedisUrl) -> Result<Self> {
        let stream = Stream::connect(url)
            .with_context(|| format!("cannot connect to Redis at {}", url.address()))?;
        let writer = stream.try_clone()?;
        let mut c = Self {
            reader: BufReader::with_capacity(256 * 1024, stream),
            writer,
        };
        if let Some(pw) = &url.password {
            let reply = match &url.user {
                Some(u) => c.command(&[b"AUTH", u.as_bytes(), pw.as_bytes()])?,
                None => c.command(&[b"AUTH", pw.as_bytes()])?,
            };
            reply.ok().context("Redis authentication failed")?;
        }
        Ok(c)
    }

    /// Sends one command and reads its reply (which may be an error reply).
    pub fn command(&mut self, args: &[&[u8]]) -> Result<Reply> {
        self.writer.write_all(&encode(args))?;
        Ok(read_reply(&mut self.reader)?)
    }

    /// `INFO section` as `field → value`.
    pub fn info(&mut self, section: &str) -> Result<BTreeMap<String, String>> {
        let text = self.command(&[b"INFO", section.as_bytes()])?.bytes()?;
        Ok(parse_info(&String::from_utf8_lossy(&text)))
    }

    /// Keys per database from `INFO keyspace`.
    pub fn keyspace(&mut self) -> Result<BTreeMap<u32, u64>> {
        Ok(keyspace(&self.info("keyspace")?))
    }

    /// Keys and keys with expiry per database from `INFO keyspace`.
    pub fn keyspace_expires(&mut self) -> Result<BTreeMap<u32, (u64, u64)>> {
        Ok(keyspace_expires(&self.info("keyspace")?))
    }

    /// Starts a full sync asking for the RDB only, and returns a reader of
    /// the validated RDB (see [`RdbReader`]).
    pub fn sync_rdb(mut self) -> Result<RdbReader<Payload>> {
        self.command(&[b"REPLCONF", b"capa", b"eof"])?
            .ok()
            .context("REPLCONF capa eof refused (needs the +replconf permission)")?;
        // Servers before 7.0 do not know rdb-only: they send the RDB and then
        // the replication stream, which the payload framing stops at.
        let _ = self.command(&[b"REPLCONF", b"rdb-only", b"1"])?;
        // Plain SYNC (not PSYNC): the server expects no ACKs from us.
        self.writer.write_all(b"SYNC\r\n")?;
        let header = loop {
            let line = read_line(&mut self.reader)?;
            // Keepalives while the server forks and prepares the RDB.
            if line.is_empty() {
                continue;
            }
            break line;
        };
        let framing = parse_sync_header(&header)?;
        let payload = Payload {
            inner: self.reader,
            framing,
            tail: Vec::new(),
            done: false,
            _writer: self.writer,
        };
        Ok(RdbReader::new(payload)?)
    }
}

/// `field:value` lines of an INFO reply.
pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// `db0:keys=3,expires=1,avg_ttl=0` → `0 → 3`.
pub fn keyspace(info: &BTreeMap<String, String>) -> BTreeMap<u32, u64> {
    keyspace_expires(info)
        .into_iter()
        .map(|(db, (keys, _))| (db, keys))
        .collect()
}

/// `db0:keys=3,expires=1,avg_ttl=0` → `0 → (3, 1)`.
pub fn keyspace_expires(info: &BTreeMap<String, String>) -> BTreeMap<u32, (u64, u64)> {
    let field = |v: &str, name: &str| -> Option<u64> {
        v.split(',')
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    info.iter()
        .filter_map(|(k, v)| {
            let db = k.strip_prefix("db")?.parse().ok()?;
            Some((db, (field(v, "keys")?, field(v, "expires").unwrap_or(0))))
        })
        .collect()
}

/// How the RDB follows the SYNC reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// `$<len>`: exactly this many bytes remain.
    Bulk(u64),
    /// `$EOF:<mark>`: read until the stream ends with the marker.
    Eof([u8; EOF_MARK_LEN]),
}

/// Parses the line after SYNC: `$123`, `$EOF:<40 bytes>` or an error.
pub fn parse_sync_header(line: &[u8]) -> Result<Framing> {
    if let Some(e) = line.strip_prefix(b"-") {
        bail!(
            "Redis refused SYNC: {} (the user needs +sync and +replconf)",
            String::from_utf8_lossy(e)
        );
    }
    if let Some(mark) = line.strip_prefix(b"$EOF:") {
        let mark: [u8; EOF_MARK_LEN] = mark
            .try_into()
            .map_err(|_| anyhow!("bad diskless EOF marker of {} bytes", mark.len()))?;
        return Ok(Framing::Eof(mark));
    }
    if let Some(n) = line.strip_prefix(b"$") {
        let n = parse_int(n)?;
        if n < 0 {
            bail!("negative RDB length {n}");
        }
        return Ok(Framing::Bulk(n as u64));
    }
    bail!(
        "unexpected reply to SYNC: {:?}",
        String::from_utf8_lossy(line)
    )
}

/// The raw RDB bytes of a SYNC reply: a bulk of known length, or a
/// diskless transfer with its trailing EOF marker removed. A connection
/// that ends early is an error.
pub struct Payload<R = BufReader<Stream>> {
    inner: R,
    framing: Framing,
    /// Diskless only: the last bytes read, held back until we know they are
    /// not the marker.
    tail: Vec<u8>,
    done: bool,
    /// Keeps the socket's write half open until the transfer ends.
    _writer: Stream,
}

impl<R: Read> Payload<R> {
    fn read_eof_framed(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Framing::Eof(mark) = self.framing else {
            unreachable!()
        };
        loop {
            if self.done {
                return Ok(0);
            }
            let mut chunk = vec![0; buf.len().max(1)];
            let n = self.inner.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "Redis connection closed before the end of the RDB (no EOF marker)",
                ));
            }
            self.tail.extend_from_slice(&chunk[..n]);
            // The marker ends the RDB; whatever follows it (the replication
            // stream of a server that ignored rdb-only) is not ours.
            let release = match self
                .tail
                .windows(EOF_MARK_LEN)
                .position(|w| w == mark.as_slice())
            {
                Some(p) => {
                    self.done = true;
                    p
                }
                None => self.tail.len().saturating_sub(EOF_MARK_LEN),
            };
            // The tail held at most EOF_MARK_LEN bytes before this read, so
            // `release <= n <= buf.len()`.
            let release = release.min(buf.len());
            buf[..release].copy_from_slice(&self.tail[..release]);
            self.tail.drain(..release);
            if self.done {
                self.tail.clear();
            }
            if release > 0 || self.done {
                return Ok(release);
            }
        }
    }
}

impl<R: Read> Read for Payload<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.framing {
            Framing::Bulk(0) => Ok(0),
            Framing::Bulk(left) => {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("Redis connection closed with {left} bytes of the RDB missing"),
                    ));
                }
                self.framing = Framing::Bulk(left - n as u64);
                Ok(n)
            }
            Framing::Eof(_) => self.read_eof_framed(buf),
        }
    }
}

/// A `redis-server` on an RDB in a private directory, with persistence off;
/// killed when dropped. It listens on no TCP port, only on a unix socket in
/// that directory (mode 0700) with a random `requirepass`, both set in a
/// config file (0600) so that neither shows in `ps`: another local user can
/// neither read the restored data nor add keys that a restore would copy
/// into the target (SPEC §17.3).
pub struct ScratchServer {
    child: Child,
    /// How to reach it: its socket and password.
    pub url: RedisUrl,
}

/// Writes `path` readable by us only; it must not exist yet.
pub fn create_private(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// A config-file string: double-quoted, `\` and `"` escaped.
fn conf_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// 32 random bytes from the kernel, in hex.
fn random_password() -> Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("cannot read /dev/urandom")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl ScratchServer {
    /// Starts `binary` on `dir/dump.rdb` and waits until the RDB is loaded.
    /// `dir` must be private to us (0700); the config goes there too.
    pub fn start(binary: &Path, dir: &Path) -> Result<Self> {
        let dir_str = dir
            .to_str()
            .with_context(|| format!("scratch directory {} is not UTF-8", dir.display()))?;
        let socket = dir.join("redis.sock");
        let password = random_password()?;
        let conf = dir.join("redis.conf");
        let text = format!(
            "port 0\nunixsocket {}\nunixsocketperm 700\nrequirepass {}\ndir {}\n\
             dbfilename dump.rdb\nsave \"\"\nappendonly no\ndaemonize no\nlogfile \"\"\n\
             databases 16\n",
            conf_quote(&format!("{dir_str}/redis.sock")),
            password,
            conf_quote(dir_str),
        );
        let mut f = create_private(&conf)?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write {}", conf.display()))?;
        drop(f);
        let child = Command::new(binary)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut server = Self {
            child,
            url: RedisUrl {
                host: "localhost".into(),
                port: 0,
                user: None,
                password: Some(password),
                socket: Some(socket),
            },
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                bail!(
                    "scratch redis-server {} before it was ready{}{}",
                    crate::commands::describe_status(status),
                    if err.is_empty() { "" } else { ": " },
                    err.trim()
                );
            }
            // -LOADING while the RDB is read; +PONG once it is in memory.
            if let Ok(mut c) = Conn::connect(&self.url)
                && let Ok(Reply::Simple(s)) = c.command(&[b"PING"])
                && s == "PONG"
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("scratch redis-server did not become ready within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ScratchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies every key of every database from `from` to `to` with DUMP and
/// `RESTORE key abs-ttl payload ABSTTL REPLACE`, keeping absolute expiry
/// times. Returns the keys copied per database.
pub fn copy_keys(from: &RedisUrl, to: &RedisUrl) -> Result<BTreeMap<u32, u64>> {
    let mut src = Conn::connect(from)?;
    let mut dst = Conn::connect(to)?;
    let mut copied = BTreeMap::new();
    for db in src.keyspace()?.into_keys() {
        let dbs = db.to_string();
        src.command(&[b"SELECT", dbs.as_bytes()])?.ok()?;
        dst.command(&[b"SELECT", dbs.as_bytes()])?
            .ok()
            .with_context(|| format!("target cannot select database {db}"))?;
        let mut n = 0u64;
        let mut cursor = b"0".to_vec();
        loop {
            let reply = src.command(&[b"SCAN", &cursor, b"COUNT", b"1000"])?.ok()?;
            let Reply::Array(Some(mut parts)) = reply else {
                bail!("unexpected SCAN reply");
            };
            if parts.len() != 2 {
                bail!("unexpected SCAN reply");
            }
            let keys = parts.pop().expect("2");
            cursor = parts.pop().expect("2").bytes()?;
            let Reply::Array(Some(keys)) = keys else {
                bail!("unexpected SCAN reply");
            };
            for k in keys {
                let key = k.bytes()?;
                let Reply::Bulk(Some(payload)) = src.command(&[b"DUMP", &key])?.ok()? else {
                    continue; // expired or deleted since SCAN saw it
                };
                // Absolute expiry in Unix ms; -1 = none, which RESTORE takes as 0.
                let at = src.command(&[b"PEXPIRETIME", &key])?.int()?;
                if at == -2 {
                    continue;
                }
                let ttl = at.max(0).to_string();
                dst.command(&[
                    b"RESTORE",
                    &key,
                    ttl.as_bytes(),
                    &payload,
                    b"ABSTTL",
                    b"REPLACE",
                ])?
                .ok()
                .with_context(|| {
                    format!(
                        "RESTORE of key {:?} in database {db} failed",
                        String::from_utf8_lossy(&key)
                    )
                })?;
                n += 1;
            }
            if cursor == b"0" {
                break;
            }
        }
        copied.insert(db, n);
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporters::rdb::test_support::{rdb, read_all};
    use std::io::Cursor;
    use std::net::TcpListener;

    fn payload(data: Vec<u8>, framing: Framing) -> Payload<Cursor<Vec<u8>>> {
        // A connected socket pair is not needed: a throw-away listener gives
        // us a TcpStream to satisfy the writer field.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let w = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        Payload {
            inner: Cursor::new(data),
            framing,
            tail: Vec::new(),
            done: false,
            _writer: Stream::Tcp(w),
        }
    }

    #[test]
    fn resp_replies_parse() {
        let mut r = Cursor::new(
            b"+OK\r\n-ERR no\r\n:42\r\n$3\r\na\r\n\r\n$-1\r\n*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n"
                .to_vec(),
        );
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Simple("OK".into()));
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Error("ERR no".into()));
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Int(42));
        assert_eq!(
            read_reply(&mut r).unwrap(),
            Reply::Bulk(Some(b"a\r\n".to_vec()))
        );
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Bulk(None));
        assert_eq!(
            read_reply(&mut r).unwrap(),
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"0".to_vec())),
                Reply::Array(Some(vec![Reply::Bulk(Some(b"k".to_vec()))])),
            ]))
        );
        assert!(read_reply(&mut r).is_err(), "end of input is an error");
        assert!(read_reply(&mut Cursor::new(b"?x\r\n".to_vec())).is_err());
        assert!(read_reply(&mut Cursor::new(b"$5\r\nab\r\n".to_vec())).is_err());
        assert_eq!(encode(&[b"GET", b"k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }

    #[test]
    fn sync_header_and_url_parse() {
        assert_eq!(parse_sync_header(b"$123").unwrap(), Framing::Bulk(123));
        let mark = [b'a'; 40];
        let mut line = b"$EOF:".to_vec();
        line.extend_from_slice(&mark);
        assert_eq!(parse_sync_header(&line).unwrap(), Framing::Eof(mark));
        assert!(parse_sync_header(b"$EOF:short").is_err());
        assert!(parse_sync_header(b"-NOPERM no").is_err());
        let u = RedisUrl::parse("redis://bob:s3cr:t@db.local:6380/").unwrap();
        assert_eq!(
            (
                u.user.as_deref(),
                u.password.as_deref(),
                u.host.as_str(),
                u.port
            ),
            (Some("bob"), Some("s3cr:t"), "db.local", 6380)
        );
        let u = RedisUrl::parse("redis://:pw@h").unwrap();
        assert_eq!(
            (u.user, u.password.as_deref(), u.port),
            (None, Some("pw"), 6379)
        );
        assert!(RedisUrl::parse("http://h:1").is_err());
        // Percent-encoded user info is decoded; IPv6 hosts come in brackets.
        let u = RedisUrl::parse("redis://al%20ice:p%40ss@[::1]:6390").unwrap();
        assert_eq!(
            (
                u.user.as_deref(),
                u.password.as_deref(),
                u.host.as_str(),
                u.port
            ),
            (Some("al ice"), Some("p@ss"), "::1", 6390)
        );
        assert_eq!(u.address(), "[::1]:6390");
        let u = RedisUrl::parse("redis://[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 6379));
        let u = RedisUrl::parse("redis://10.0.0.1:7000").unwrap();
        assert_eq!(u.address(), "10.0.0.1:7000");
        for bad in [
            "redis://",
            "redis://h:99999",
            "redis://h/2",
            "redis://h:x",
            "redis://:pw@",
        ] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad:?}");
        }
        // Errors never show the password.
        let e = RedisUrl::parse("redis://:s3cret@h/2")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
        let info =
            parse_info("# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\ndb2:keys=7,expires=0\r\n");
        assert_eq!(keyspace(&info), BTreeMap::from([(0, 3), (2, 7)]));
        assert_eq!(
            keyspace_expires(&info),
            BTreeMap::from([(0, (3, 1)), (2, (7, 0))])
        );
    }

    #[test]
    fn eof_marker_is_stripped() {
        let body = rdb(b"some keys and values, long enough to cross reads");
        let mark = *b"0123456789012345678901234567890123456789";
        let mut wire = body.clone();
        wire.extend_from_slice(&mark);
        // Anything after the marker (a replication stream) is not ours.
        wire.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        let got = read_all(payload(wire, Framing::Eof(mark))).unwrap();
        assert_eq!(got, body);
        // Through the validator as well.
        let mut wire = body.clone();
        wire.extend_from_slice(&mark);
        let r = RdbReader::new(payload(wire, Framing::Eof(mark))).unwrap();
        assert_eq!(r.version(), 10);
        assert_eq!(read_all(r).unwrap(), body);
    }

    #[test]
    fn missing_marker_or_short_bulk_fails() {
        let body = rdb(b"abc");
        let mark = [b'z'; 40];
        let err = read_all(payload(body.clone(), Framing::Eof(mark))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err =
            read_all(payload(body.clone(), Framing::Bulk(body.len() as u64 + 5))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let ok = read_all(payload(body.clone(), Framing::Bulk(body.len() as u64))).unwrap();
        assert_eq!(ok, body);
    }
}
