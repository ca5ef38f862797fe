//! A FAKE Qdrant server: no Qdrant can be installed from the package
//! registries, so the exporter is tested against this in-process HTTP/1.1
//! server that follows the documented REST API (as observed on Qdrant
//! v1.18.3, docs/exporters.md) as faithfully as the tests
//! need. It is a fake: it stores no vectors in segments and searches nothing.
//!
//! What it reproduces:
//! - the envelopes `{"result": …, "status": "ok", "time": <float>}` and
//!   `{"status": {"error": "…"}, "time": …}`; `GET /` answers
//!   `{"title", "version"}` without an envelope;
//! - `api-key` / `Authorization: Bearer` checks when a key is configured:
//!   401 with a plain-text body (`Must provide an API key or an
//!   Authorization bearer token`, `Invalid API key or JWT`), with `/`,
//!   `/healthz`, `/readyz` and `/livez` exempt (Qdrant's whitelist);
//! - 404 for unknown collections (JSON envelope) and snapshots (plain text
//!   `Not found: Snapshot X not found`), 409 for an existing collection,
//!   400 for a bad upload, an unknown `priority`, or a `checksum` mismatch
//!   (`Checksum mismatch: expected …, actual …`);
//! - collection snapshots named `<collection>-<peer>-<YYYY-MM-DD-HH-MM-SS>.snapshot`
//!   from the (optionally frozen) clock, so two in the same second share a
//!   name and the second overwrites the first;
//! - `wait=false` on create answers 202 `{"status":"accepted"}`;
//! - downloads with `Transfer-Encoding: chunked` and a
//!   `content-disposition: attachment` header;
//! - the upload as `multipart/form-data` with the file in field `snapshot`,
//!   `priority` and `checksum` in the query; recovering onto a missing
//!   collection creates it.
//!
//! Snapshot contents: a real tar (GNU headers, checked by `tar -t` in the
//! tests) shaped like Qdrant's: `version.info`, `config.json` (the
//! collection config), `0/segments/<id>.tar` (binary bytes derived from the
//! points), `0/wal/open-1` as a GNU sparse member (type `S`, old-GNU sparse
//! map in the header), and — the fake's own, invented encoding of the data —
//! `0/fake_points.json`, a JSON array of `[id, [vector…]]`. An uploaded tar
//! is parsed back: its `config.json` and `0/fake_points.json` become the
//! recovered collection.
//!
//! Fault knobs ([`Knobs`]): corrupt or cut the download, corrupt an upload
//! in transit, lose a point on recovery, freeze the clock.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The peer id in snapshot names (any u64; a single-node server has one).
const PEER_ID: u64 = 4477237362749214;
/// What `GET /` reports.
pub const VERSION: &str = "1.18.3-fake";
/// The invented member holding the points.
const POINTS_MEMBER: &str = "0/fake_points.json";
/// Size of each download chunk.
const CHUNK: usize = 64 * 1024;

/// Faults and settings the tests switch.
#[derive(Debug, Default, Clone)]
pub struct Knobs {
    /// Require this API key.
    pub api_key: Option<String>,
    /// Flip one byte in the middle of every download (the reported checksum
    /// stays that of the stored file).
    pub corrupt_download: bool,
    /// Close the connection after half of a download, without the final
    /// zero-length chunk.
    pub drop_download: bool,
    /// Flip one byte of an uploaded file before checking it, as a
    /// transmission error would.
    pub corrupt_upload: bool,
    /// A recovered collection loses its last point (a broken snapshot).
    pub lose_point_on_recover: bool,
    /// Use this Unix time instead of the clock for snapshot names.
    pub frozen_time: Option<i64>,
}

/// One collection.
#[derive(Debug, Clone)]
pub struct Collection {
    /// The config, as `GET /collections/{name}` reports it.
    pub config: Value,
    /// Point id → vector.
    pub points: BTreeMap<u64, Vec<f32>>,
}

/// A recorded upload.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Target collection.
    pub collection: String,
    /// The `priority` query parameter.
    pub priority: Option<String>,
    /// The `checksum` query parameter.
    pub checksum: Option<String>,
    /// The file as received.
    pub bytes: Vec<u8>,
}

/// Everything the server holds.
#[derive(Debug, Default)]
pub struct State {
    /// Collections by name.
    pub collections: BTreeMap<String, Collection>,
    /// Snapshot files per collection: name → bytes.
    pub snapshots: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Every snapshot file ever created: (name, bytes).
    pub created: Vec<(String, Vec<u8>)>,
    /// Every successful upload.
    pub uploads: Vec<Upload>,
    /// The knobs.
    pub knobs: Knobs,
    /// Every request line with the `api-key` header value seen (for the
    /// "key is sent" assertions).
    pub requests: Vec<(String, Option<String>)>,
}

/// The fake server; stopped on drop.
pub struct FakeQdrant {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    port: u16,
    thread: Option<JoinHandle<()>>,
}

impl FakeQdrant {
    /// Starts a server on a free loopback port.
    pub fn start(knobs: Knobs) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            knobs,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(conn, &st));
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            state,
            stop,
            port,
            thread: Some(thread),
        }
    }

    /// Locks the state, for setup and assertions.
    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Changes the knobs.
    pub fn knobs(&self, f: impl FnOnce(&mut Knobs)) {
        f(&mut self.state().knobs);
    }

    /// Names of the snapshot files kept for `collection`.
    pub fn snapshot_names(&self, collection: &str) -> Vec<String> {
        self.state()
            .snapshots
            .get(collection)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for FakeQdrant {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A parsed request.
struct Request {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_line(r: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_string()),
    }
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let line = read_line(r)?;
    let mut parts = line.split(' ');
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let h = read_line(r)?;
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = Vec::new();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size = read_line(r)?;
            let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                // Trailers, then the blank line.
                while !read_line(r)?.is_empty() {}
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).ok()?;
            read_line(r)?;
        }
    } else if let Some(n) = headers.get("content-length") {
        let n: usize = n.parse().ok()?;
        body.resize(n, 0);
        r.read_exact(&mut body).ok()?;
    }
    let (path, q) = target.split_once('?').unwrap_or((&target, ""));
    let query = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Some(Request {
        method,
        path: path.to_string(),
        query,
        headers,
        body,
    })
}

/// A response to write.
struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

fn status_text(s: u16) -> &'static str {
    match s {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Internal Server Error",
    }
}

fn ok(result: Value, started: Instant) -> Response {
    Response {
        status: 200,
        content_type: "application/json",
        body: json!({"result": result, "status": "ok", "time": started.elapsed().as_secs_f64()})
            .to_string()
            .into_bytes(),
    }
}

fn err(status: u16, msg: &str, started: Instant) -> Response {
    Response {
        status,
        content_type: "application/json",
        body: json!({"status": {"error": msg}, "time": started.elapsed().as_secs_f64()})
            .to_string()
            .into_bytes(),
    }
}

fn text(status: u16, msg: &str) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: msg.as_bytes().to_vec(),
    }
}

fn write_response(w: &mut TcpStream, r: &Response) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\n\r\n",
        r.status,
        status_text(r.status),
        r.content_type,
        r.body.len()
    );
    w.write_all(head.as_bytes())?;
    w.write_all(&r.body)?;
    w.flush()
}

fn serve(conn: TcpStream, state: &Mutex<State>) {
    let mut w = conn.try_clone().expect("clone");
    let mut r = BufReader::new(conn);
    while let Some(req) = read_request(&mut r) {
        let close = req
            .headers
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let keep = match handle(&req, state, &mut w) {
            Some(resp) => write_response(&mut w, &resp).is_ok(),
            // A download wrote (or cut) the response itself.
            None => !state.lock().unwrap().knobs.drop_download,
        };
        if close || !keep {
            let _ = w.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn collection_404(name: &str, started: Instant) -> Response {
    err(
        404,
        &format!("Not found: Collection `{name}` doesn't exist!"),
        started,
    )
}

/// Routes one request. `None` when the response was written directly.
fn handle(req: &Request, state: &Mutex<State>, w: &mut TcpStream) -> Option<Response> {
    let started = Instant::now();
    let segs: Vec<String> = req
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let mut st = state.lock().unwrap();
    let key = req.headers.get("api-key").cloned().or_else(|| {
        req.headers
            .get("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::to_string)
    });
    st.requests
        .push((format!("{} {}", req.method, req.path), key.clone()));
    // Qdrant's whitelist: `/` exactly, `/healthz`, and `/readyz`, `/livez` as prefixes.
    let whitelisted = segs.is_empty() || matches!(segs[0], "healthz" | "readyz" | "livez");
    if let Some(want) = st.knobs.api_key.clone()
        && !whitelisted
    {
        match key {
            None => {
                return Some(text(
                    401,
                    "Must provide an API key or an Authorization bearer token",
                ));
            }
            Some(k) if k != want => return Some(text(401, "Invalid API key or JWT")),
            Some(_) => {}
        }
    }
    let m = req.method.as_str();
    match (m, segs.as_slice()) {
        ("GET", []) => Some(Response {
            status: 200,
            content_type: "application/json",
            body: json!({"title": "qdrant - vector search engine", "version": VERSION})
                .to_string()
                .into_bytes(),
        }),
        ("GET", ["healthz" | "readyz" | "livez"]) => Some(text(200, "healthz check passed")),
        ("GET", ["collections"]) => {
            let list: Vec<Value> = st
                .collections
                .keys()
                .map(|n| json!({ "name": n }))
                .collect();
            Some(ok(json!({ "collections": list }), started))
        }
        ("GET", ["collections", c]) => Some(match st.collections.get(*c) {
            None => collection_404(c, started),
            Some(col) => ok(
                json!({
                    "status": "green",
                    "optimizer_status": "ok",
                    "indexed_vectors_count": 0,
                    "points_count": col.points.len(),
                    "segments_count": 1,
                    "config": col.config,
                    "payload_schema": {},
                }),
                started,
            ),
        }),
        ("PUT", ["collections", c]) => {
            if st.collections.contains_key(*c) {
                return Some(err(
                    409,
                    &format!("Wrong input: Collection `{c}` already exists!"),
                    started,
                ));
            }
            let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
                return Some(err(400, "Json deserialize error: bad body", started));
            };
            st.collections.insert(
                c.to_string(),
                Collection {
                    config: collection_config(&body),
                    points: BTreeMap::new(),
                },
            );
            Some(ok(json!(true), started))
        }
        ("DELETE", ["collections", c]) => {
            let existed = st.collections.remove(*c).is_some();
            Some(ok(json!(existed), started))
        }
        ("PUT", ["collections", c, "points"]) => {
            let Some(col) = st.collections.get_mut(*c) else {
                return Some(collection_404(c, started));
            };
            let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
                return Some(err(400, "Json deserialize error: bad body", started));
            };
            for p in body["points"].as_array().into_iter().flatten() {
                let (Some(id), Some(v)) = (p["id"].as_u64(), p["vector"].as_array()) else {
                    return Some(err(400, "Bad request: point needs id and vector", started));
                };
                let v = v.iter().map(|x| x.as_f64().unwrap_or(0.0) as f32).collect();
                col.points.insert(id, v);
            }
            Some(ok(
                json!({"operation_id": 0, "status": "completed"}),
                started,
            ))
        }
        ("POST", ["collections", c, "points", "count"]) => Some(match st.collections.get(*c) {
            None => collection_404(c, started),
            Some(col) => ok(json!({ "count": col.points.len() }), started),
        }),
        ("POST", ["collections", c, "snapshots"]) => {
            let Some(col) = st.collections.get(*c).cloned() else {
                return Some(collection_404(c, started));
            };
            let now = st.knobs.frozen_time.unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64
            });
            let (stamp, iso) = timestamps(now);
            let name = format!("{c}-{PEER_ID}-{stamp}.snapshot");
            let bytes = snapshot_tar(&col, now);
            let desc = describe(&name, &iso, &bytes);
            st.created.push((name.clone(), bytes.clone()));
            // Same second, same name: the new file replaces the old.
            st.snapshots
                .entry(c.to_string())
                .or_default()
                .insert(name, bytes);
            if req.query.get("wait").is_some_and(|v| v == "false") {
                return Some(Response {
                    status: 202,
                    content_type: "application/json",
                    body: json!({"status": "accepted", "time": started.elapsed().as_secs_f64()})
                        .to_string()
                        .into_bytes(),
                });
            }
            Some(ok(desc, started))
        }
        ("GET", ["collections", c, "snapshots"]) => {
            if !st.collections.contains_key(*c) {
                return Some(collection_404(c, started));
            }
            let list: Vec<Value> = st
                .snapshots
                .get(*c)
                .into_iter()
                .flatten()
                .map(|(n, b)| describe(n, &iso_of_name(n), b))
                .collect();
            Some(ok(json!(list), started))
        }
        ("GET", ["collections", c, "snapshots", name]) => {
            let Some(bytes) = st.snapshots.get(*c).and_then(|m| m.get(*name)).cloned() else {
                return Some(text(404, &format!("Not found: Snapshot {name} not found")));
            };
            let knobs = st.knobs.clone();
            drop(st);
            let _ = download(w, name, bytes, &knobs);
            None
        }
        ("DELETE", ["collections", c, "snapshots", name]) => {
            let removed = st.snapshots.get_mut(*c).and_then(|m| m.remove(*name));
            Some(match removed {
                Some(_) => ok(json!(true), started),
                None => err(
                    404,
                    &format!("Not found: Snapshot {name} not found"),
                    started,
                ),
            })
        }
        ("POST", ["collections", c, "snapshots", "upload"]) => {
            Some(upload(req, &mut st, c, started))
        }
        _ => Some(text(404, "")),
    }
}

/// The config a create-collection body implies, shaped like Qdrant's.
fn collection_config(body: &Value) -> Value {
    json!({
        "params": {
            "vectors": body.get("vectors").cloned().unwrap_or(json!({})),
            "shard_number": 1,
            "replication_factor": 1,
            "write_consistency_factor": 1,
            "on_disk_payload": true,
        },
        "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000},
        "optimizer_config": {"deleted_threshold": 0.2, "indexing_threshold": 10000},
        "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
    })
}

fn describe(name: &str, iso: &str, bytes: &[u8]) -> Value {
    json!({
        "name": name,
        "creation_time": iso,
        "size": bytes.len(),
        "checksum": hex(&Sha256::digest(bytes)),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `YYYY-MM-DD-HH-MM-SS` (names) and `YYYY-MM-DDTHH:MM:SS` (descriptions).
fn timestamps(unix: i64) -> (String, String) {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).unwrap();
    let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
    let (h, mi, s) = (t.hour(), t.minute(), t.second());
    (
        format!("{y:04}-{mo:02}-{d:02}-{h:02}-{mi:02}-{s:02}"),
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}"),
    )
}

/// The creation time back from a name's stamp.
fn iso_of_name(name: &str) -> String {
    let stem = name.trim_end_matches(".snapshot");
    let stamp = &stem[stem.len().saturating_sub(19)..];
    let p: Vec<&str> = stamp.split('-').collect();
    if p.len() == 6 {
        format!("{}-{}-{}T{}:{}:{}", p[0], p[1], p[2], p[3], p[4], p[5])
    } else {
        String::new()
    }
}

/// Writes a chunked download, faults included.
fn download(w: &mut TcpStream, name: &str, mut bytes: Vec<u8>, k: &Knobs) -> std::io::Result<()> {
    if k.corrupt_download && !bytes.is_empty() {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\
         content-disposition: attachment; filename=\"{name}\"\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    w.write_all(head.as_bytes())?;
    let cut = if k.drop_download {
        bytes.len() / 2
    } else {
        bytes.len()
    };
    for c in bytes[..cut].chunks(CHUNK) {
        w.write_all(format!("{:x}\r\n", c.len()).as_bytes())?;
        w.write_all(c)?;
        w.write_all(b"\r\n")?;
    }
    if k.drop_download {
        w.flush()?;
        return w.shutdown(Shutdown::Both);
    }
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

/// `POST /collections/{c}/snapshots/upload`.
fn upload(req: &Request, st: &mut State, c: &str, started: Instant) -> Response {
    let priority = req.query.get("priority").cloned();
    if let Some(p) = &priority
        && !matches!(p.as_str(), "no_sync" | "snapshot" | "replica")
    {
        return err(
            400,
            &format!("Query deserialize error: unknown variant `{p}`"),
            started,
        );
    }
    let Some(boundary) = req
        .headers
        .get("content-type")
        .filter(|ct| ct.starts_with("multipart/form-data"))
        .and_then(|ct| ct.split("boundary=").nth(1))
        .map(|b| b.trim_matches('"').to_string())
    else {
        return err(400, "Bad request: expected multipart/form-data", started);
    };
    let Some(mut file) = multipart_field(&req.body, &boundary, "snapshot") else {
        return err(
            400,
            "Bad request: no file in multipart field `snapshot`",
            started,
        );
    };
    if st.knobs.corrupt_upload && !file.is_empty() {
        let mid = file.len() / 2;
        file[mid] ^= 0x55;
    }
    let actual = hex(&Sha256::digest(&file));
    let checksum = req.query.get("checksum").cloned();
    if let Some(expected) = &checksum
        && !expected.eq_ignore_ascii_case(&actual)
    {
        return err(
            400,
            &format!("Checksum mismatch: expected {expected}, actual {actual}"),
            started,
        );
    }
    let col = match parse_snapshot(&file) {
        Ok(col) => col,
        Err(e) => {
            return err(
                400,
                &format!("Bad request: invalid snapshot file: {e}"),
                started,
            );
        }
    };
    let mut col = col;
    if st.knobs.lose_point_on_recover {
        col.points.pop_last();
    }
    st.collections.insert(c.to_string(), col);
    st.uploads.push(Upload {
        collection: c.to_string(),
        priority,
        checksum,
        bytes: file,
    });
    ok(json!(true), started)
}

/// The content of the named part of a multipart body.
fn multipart_field(body: &[u8], boundary: &str, field: &str) -> Option<Vec<u8>> {
    let delim = format!("--{boundary}").into_bytes();
    let find = |hay: &[u8], from: usize, needle: &[u8]| {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let mut pos = find(body, 0, &delim)?;
    loop {
        let after = pos + delim.len();
        if body.get(after..after + 2) == Some(b"--") {
            return None;
        }
        let headers_end = find(body, after, b"\r\n\r\n")?;
        let headers = String::from_utf8_lossy(&body[after..headers_end]).to_ascii_lowercase();
        let content_start = headers_end + 4;
        let mut next_delim = b"\r\n".to_vec();
        next_delim.extend_from_slice(&delim);
        let content_end = find(body, content_start, &next_delim)?;
        if headers.contains(&format!("name=\"{field}\"")) {
            return Some(body[content_start..content_end].to_vec());
        }
        pos = content_end + 2;
    }
}

// ---- tar ----------------------------------------------------------------

const BLOCK: usize = 512;

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}\0", v, width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

/// A GNU header (magic `ustar  \0`), checksum filled in.
fn header(name: &str, size: u64, kind: u8, mtime: i64) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime.max(0) as u64);
    h[156] = kind;
    h[257..265].copy_from_slice(b"ustar  \0");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    h
}

fn seal(h: &mut [u8; BLOCK]) {
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

fn push_data(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
    out.extend(std::iter::repeat_n(0u8, pad));
}

fn member(out: &mut Vec<u8>, name: &str, data: &[u8], mtime: i64) {
    let mut h = header(name, data.len() as u64, b'0', mtime);
    seal(&mut h);
    out.extend_from_slice(&h);
    push_data(out, data);
}

/// An old-GNU sparse member (type `S`): the map of (offset, length) pairs
/// sits in the header, the stored size is the sum of the lengths, the real
/// size at offset 483.
fn sparse_member(out: &mut Vec<u8>, name: &str, real_size: u64, parts: &[(u64, Vec<u8>)]) {
    assert!(parts.len() <= 4, "one header holds four map entries");
    let stored: u64 = parts.iter().map(|(_, d)| d.len() as u64).sum();
    let mut h = header(name, stored, b'S', 0);
    for (i, (off, d)) in parts.iter().enumerate() {
        let at = 386 + i * 24;
        octal(&mut h[at..at + 12], *off);
        octal(&mut h[at + 12..at + 24], d.len() as u64);
    }
    h[482] = 0; // no extension headers
    octal(&mut h[483..495], real_size);
    seal(&mut h);
    out.extend_from_slice(&h);
    let all: Vec<u8> = parts.iter().flat_map(|(_, d)| d.iter().copied()).collect();
    push_data(out, &all);
}

/// Deterministic bytes for a point: its id mixed through SHA-256.
fn point_bytes(id: u64, v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    let mut block = Sha256::digest(id.to_le_bytes()).to_vec();
    while out.len() < 1024 - v.len() * 4 {
        out.extend_from_slice(&block);
        block = Sha256::digest(&block).to_vec();
    }
    out.truncate(1024 - v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// A collection snapshot tar (see the module comment).
pub fn snapshot_tar(col: &Collection, now: i64) -> Vec<u8> {
    let mut out = Vec::new();
    member(&mut out, "version.info", VERSION.as_bytes(), now);
    member(
        &mut out,
        "config.json",
        col.config.to_string().as_bytes(),
        now,
    );
    let segment: Vec<u8> = col
        .points
        .iter()
        .flat_map(|(id, v)| point_bytes(*id, v))
        .collect();
    // Segment tars carry mtime 0 in real snapshots.
    member(
        &mut out,
        "0/segments/8d0c53b1-fake-4a4b-9c1e-segment.tar",
        &segment,
        0,
    );
    let wal_head: Vec<u8> = (0..BLOCK).map(|i| (i % 251) as u8).collect();
    let wal_mid = format!("{} points\n", col.points.len()).into_bytes();
    sparse_member(
        &mut out,
        "0/wal/open-1",
        1024 * 1024,
        &[(0, wal_head), (512 * 1024, wal_mid)],
    );
    let points: Vec<Value> = col.points.iter().map(|(id, v)| json!([id, v])).collect();
    member(
        &mut out,
        POINTS_MEMBER,
        Value::Array(points).to_string().as_bytes(),
        now,
    );
    out.extend(std::iter::repeat_n(0u8, 2 * BLOCK));
    out
}

fn parse_octal(f: &[u8]) -> Option<u64> {
    let s: String = f
        .iter()
        .take_while(|&&b| b != 0 && b != b' ')
        .map(|&b| b as char)
        .collect();
    u64::from_str_radix(s.trim(), 8).ok()
}

/// The collection a snapshot tar describes.
fn parse_snapshot(tar: &[u8]) -> Result<Collection, String> {
    let mut pos = 0;
    let mut config = None;
    let mut points = None;
    loop {
        let h = tar
            .get(pos..pos + BLOCK)
            .ok_or("tar ends without end-of-archive blocks")?;
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let want = parse_octal(&h[148..156]).ok_or("bad header checksum field")?;
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        if sum != want {
            return Err(format!("header checksum mismatch at offset {pos}"));
        }
        let name_len = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&h[..name_len]).into_owned();
        let size = parse_octal(&h[124..136]).ok_or("bad size field")? as usize;
        let data = tar
            .get(pos + BLOCK..pos + BLOCK + size)
            .ok_or("member data truncated")?;
        match name.as_str() {
            "config.json" => {
                config = Some(serde_json::from_slice::<Value>(data).map_err(|e| e.to_string())?)
            }
            POINTS_MEMBER => {
                let v: Vec<(u64, Vec<f32>)> =
                    serde_json::from_slice(data).map_err(|e| e.to_string())?;
                points = Some(v.into_iter().collect());
            }
            _ => {}
        }
        pos += BLOCK + size.div_ceil(BLOCK) * BLOCK;
    }
    Ok(Collection {
        config: config.ok_or("no config.json")?,
        points: points.ok_or("no points")?,
    })
}
