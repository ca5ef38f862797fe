//! A TCP fault proxy on loopback, between a client (cairn) and a server
//! (Garage): it adds latency to every chunk it forwards, throttles
//! bandwidth, and cuts connections at random byte offsets drawn from a
//! seeded generator, so a failing run can be repeated. Faults switch on and
//! off at runtime ([`FaultProxy::set_faults`]); what the proxy did is
//! counted in [`Stats`], so tests assert on counts, never on wall-clock time.
//!
//! Plain std threads: one accepting, two per connection (one per
//! direction).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::rng::XorShift;

/// The largest chunk forwarded at once.
const CHUNK: usize = 16 * 1024;

/// What the proxy does to traffic while faults are on. The default is
/// nothing: a transparent proxy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Delay before each chunk from client to server is forwarded.
    pub latency_up: Duration,
    /// Delay before each chunk from server to client is forwarded.
    pub latency_down: Duration,
    /// Bytes per second per connection and direction; 0 is unlimited.
    pub bandwidth: u64,
    /// The chance, in per mille, that a new connection is cut.
    pub cut_per_mille: u32,
    /// A cut connection is cut after a number of bytes (both directions
    /// together) drawn uniformly below this; 0 cuts on connect.
    pub cut_within: u64,
}

/// What the proxy has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections the proxy cut.
    pub cuts: u64,
    /// Bytes forwarded from clients to the server.
    pub bytes_up: u64,
    /// Bytes forwarded from the server to clients.
    pub bytes_down: u64,
    /// Chunks held back by latency or throttling.
    pub delayed_chunks: u64,
    /// The byte offsets drawn for the connections chosen to be cut, in
    /// order of connection (the same for the same seed and faults).
    pub cut_points: Vec<u64>,
}

/// A running proxy; dropping it closes the listener and every connection.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    stop: AtomicBool,
    faults: Mutex<Option<Faults>>,
    rng: Mutex<XorShift>,
    stats: Mutex<Stats>,
    // Every open connection's two sockets, to cut them all at once.
    open: Mutex<HashMap<u64, [TcpStream; 2]>>,
}

/// One connection's state shared by its two pumps.
struct Conn {
    id: u64,
    /// Bytes forwarded both ways.
    forwarded: AtomicU64,
    /// Where the connection is cut, if it is.
    cut_at: Option<u64>,
    cut: AtomicBool,
    /// Pumps that have finished (the second removes the connection).
    finished: AtomicU64,
}

impl FaultProxy {
    /// A proxy on a free loopback port forwarding to `target`, faults off;
    /// `seed` drives which connections are cut and where.
    pub fn start(target: SocketAddr, seed: u64) -> Self {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the fault proxy's port");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            target,
            stop: AtomicBool::new(false),
            faults: Mutex::new(None),
            rng: Mutex::new(XorShift::new(seed)),
            stats: Mutex::new(Stats::default()),
            open: Mutex::new(HashMap::new()),
        });
        let s = Arc::clone(&shared);
        let accept = std::thread::spawn(move || accept_loop(&listener, &s));
        Self {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// A proxy in front of a loopback port, e.g. a Garage node's S3 API.
    pub fn to_port(port: u16, seed: u64) -> Self {
        Self::start(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), seed)
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the proxy as an HTTP endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches faults on (`Some`) or off (`None`); open connections see
    /// the change at their next chunk.
    pub fn set_faults(&self, faults: Option<Faults>) {
        *lock(&self.shared.faults) = faults;
    }

    /// What the proxy has done so far.
    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// Cuts every open connection now.
    pub fn cut_all(&self) {
        for [a, b] in lock(&self.shared.open).values() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        self.cut_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut next_id = 0;
    for client in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        next_id += 1;
        lock(&shared.stats).connections += 1;
        let Ok(server) = TcpStream::connect(shared.target) else {
            // As if the server refused: the client sees the connection close.
            continue;
        };
        let _ = (client.set_nodelay(true), server.set_nodelay(true));
        let cut_at = lock(&shared.faults).as_ref().and_then(|f| {
            let mut rng = lock(&shared.rng);
            (rng.next_u64() % 1000 < u64::from(f.cut_per_mille))
                .then(|| rng.next_u64() % f.cut_within.max(1))
        });
        if let Some(at) = cut_at {
            lock(&shared.stats).cut_points.push(at);
        }
        let conn = Arc::new(Conn {
            id: next_id,
            forwarded: AtomicU64::new(0),
            cut_at,
            cut: AtomicBool::new(false),
            finished: AtomicU64::new(0),
        });
        let clones = (client.try_clone(), server.try_clone());
        let (Ok(client2), Ok(server2)) = clones else {
            continue;
        };
        if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
            lock(&shared.open).insert(next_id, [c, s]);
        }
        for (from, to, up) in [(client, server2, true), (server, client2, false)] {
            let (shared, conn) = (Arc::clone(shared), Arc::clone(&conn));
            std::thread::spawn(move || pump(from, to, up, &shared, &conn));
        }
    }
}

/// Forwards one direction until end of stream, an error or a cut.
fn pump(mut from: TcpStream, mut to: TcpStream, up: bool, shared: &Shared, conn: &Conn) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let faults = lock(&shared.faults).clone();
        let limit = match &faults {
            // About 20 chunks a second when throttled.
            Some(f) if f.bandwidth > 0 => ((f.bandwidth / 20).max(1) as usize).min(CHUNK),
            _ => CHUNK,
        };
        if conn.cut_at == Some(0) && faults.is_some() {
            cut(shared, conn, &from, &to);
            return;
        }
        let n = match from.read(&mut buf[..limit]) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                break;
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                break;
            }
        };
        let mut send = n;
        let mut cutting = false;
        if let Some(f) = &faults {
            let latency = if up { f.latency_up } else { f.latency_down };
            let throttle = if f.bandwidth > 0 {
                Duration::from_secs_f64(n as f64 / f.bandwidth as f64)
            } else {
                Duration::ZERO
            };
            if !(latency + throttle).is_zero() {
                lock(&shared.stats).delayed_chunks += 1;
                std::thread::sleep(latency + throttle);
            }
            if let Some(at) = conn.cut_at {
                let before = conn.forwarded.fetch_add(n as u64, Ordering::SeqCst);
                if before + n as u64 >= at {
                    send = at.saturating_sub(before) as usize;
                    cutting = true;
                }
            }
        }
        if to.write_all(&buf[..send]).is_err() {
            let _ = from.shutdown(Shutdown::Both);
            break;
        }
        {
            let mut st = lock(&shared.stats);
            if up {
                st.bytes_up += send as u64;
            } else {
                st.bytes_down += send as u64;
            }
        }
        if cutting {
            cut(shared, conn, &from, &to);
            return;
        }
    }
    // The other pump removes the connection once both directions are done.
    if conn.finished.fetch_add(1, Ordering::SeqCst) == 1 {
        lock(&shared.open).remove(&conn.id);
    }
}

/// Closes both sockets of a connection, once.
fn cut(shared: &Shared, conn: &Conn, a: &TcpStream, b: &TcpStream) {
    // Counted first: the client may look at the stats as soon as it sees
    // the connection close.
    if !conn.cut.swap(true, Ordering::SeqCst) {
        lock(&shared.stats).cuts += 1;
    }
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
    lock(&shared.open).remove(&conn.id);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free loopback port.
    fn echo_server() -> SocketAddr {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut w = s.try_clone().unwrap();
                    let mut r = s;
                    let _ = std::io::copy(&mut r, &mut w);
                    let _ = w.shutdown(Shutdown::Write);
                });
            }
        });
        addr
    }

    /// Sends `data` through `addr` and returns what came back before the
    /// connection ended (cleanly or not).
    fn echo(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
        let s = TcpStream::connect(addr).unwrap();
        let mut w = s.try_clone().unwrap();
        let data = data.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&data);
            let _ = w.shutdown(Shutdown::Write);
        });
        let mut back = Vec::new();
        let mut r = s;
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => back.extend_from_slice(&buf[..n]),
            }
        }
        writer.join().unwrap();
        back
    }

    fn data(len: usize) -> Vec<u8> {
        let mut rng = XorShift::new(7);
        (0..len).map(|_| rng.next_u64() as u8).collect()
    }

    #[test]
    fn forwards_unchanged_and_counts_connections() {
        let p = FaultProxy::start(echo_server(), 1);
        let d = data(300_000);
        assert_eq!(echo(p.addr(), &d), d);
        assert_eq!(echo(p.addr(), b"hello"), b"hello");
        let st = p.stats();
        assert_eq!(st.connections, 2);
        assert_eq!((st.bytes_up, st.bytes_down), (300_005, 300_005));
        assert_eq!((st.cuts, st.delayed_chunks), (0, 0));
        assert!(st.cut_points.is_empty());
    }

    #[test]
    fn latency_and_throttle_delay_chunks_but_keep_bytes() {
        let p = FaultProxy::start(echo_server(), 1);
        p.set_faults(Some(Faults {
            latency_up: Duration::from_millis(1),
            latency_down: Duration::from_millis(1),
            bandwidth: 4 << 20,
            ..Faults::default()
        }));
        let d = data(100_000);
        assert_eq!(echo(p.addr(), &d), d);
        let st = p.stats();
        // Throttled to 4 MiB/s, chunks are at most 4 MiB / 20 bytes.
        let min_chunks = 2 * 100_000 / ((4 << 20) / 20);
        assert!(st.delayed_chunks >= min_chunks, "{st:?}");
        assert_eq!(st.cuts, 0);

        // Off at runtime: nothing delayed any more.
        p.set_faults(None);
        assert_eq!(echo(p.addr(), &d), d);
        assert_eq!(p.stats().delayed_chunks, st.delayed_chunks);
    }

    #[test]
    fn cuts_at_a_seeded_point_and_stops_when_faults_go_off() {
        let cut_faults = Faults {
            cut_per_mille: 1000,
            cut_within: 200_000,
            ..Faults::default()
        };
        let d = data(500_000);
        let mut forwarded = Vec::new();
        for _ in 0..2 {
            let p = FaultProxy::start(echo_server(), 42);
            p.set_faults(Some(cut_faults.clone()));
            let back = echo(p.addr(), &d);
            assert!(back.len() < 200_000, "cut before the end: {}", back.len());
            assert_eq!(back[..], d[..back.len()], "what got through is intact");
            let st = p.stats();
            assert_eq!((st.connections, st.cuts), (1, 1));
            assert_eq!(st.cut_points.len(), 1);
            assert!(st.bytes_up + st.bytes_down <= st.cut_points[0], "{st:?}");
            forwarded.push(st.cut_points[0]);

            p.set_faults(None);
            assert_eq!(echo(p.addr(), &d), d);
            assert_eq!(p.stats().cuts, 1);
        }
        assert_eq!(
            forwarded[0], forwarded[1],
            "the same seed cuts at the same byte"
        );
        assert!(forwarded[0] < 200_000);

        // Another seed, another point.
        let p = FaultProxy::start(echo_server(), 43);
        p.set_faults(Some(cut_faults));
        echo(p.addr(), &d);
        assert_ne!(p.stats().cut_points, [forwarded[0]]);
    }

    #[test]
    fn cut_all_ends_open_connections() {
        let p = FaultProxy::start(echo_server(), 1);
        let mut s = TcpStream::connect(p.addr()).unwrap();
        s.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).unwrap();
        p.cut_all();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty());
        assert_eq!(p.stats().connections, 1);
    }
}
