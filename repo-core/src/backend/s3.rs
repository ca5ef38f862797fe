//! A repository in an S3-compatible bucket (SPEC §11.2), through Apache
//! OpenDAL's S3 service and its blocking operator.
//!
//! OpenDAL is async; S3 backends share one small tokio runtime per process
//! (OpenDAL pools connections in one process-wide HTTP client, and a pooled
//! connection must stay on a reactor that runs) and drive each
//! call to completion on it, so the synchronous [`Backend`] trait and the
//! engine's threads stay as they are. Credentials and region come from the
//! usual AWS sources (environment, `AWS_PROFILE` with the shared config and
//! credentials files) unless [`S3Options`] names them.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opendal::layers::{HttpClientLayer, RetryLayer, TimeoutLayer};
use opendal::options::{ListOptions, ReadOptions, WriteOptions};
use opendal::raw::BytesRange;
use opendal::raw::HttpClient;
use opendal::{ErrorKind as OdKind, Operator, services};

#[cfg(test)]
use super::location::S3Credentials;
use super::location::{S3Location, S3Options, parse_endpoint};
use super::{
    Backend, BackendError, BackendErrorKind, Counters, ObjectInfo, ObjectKind, Request,
    RequestStats, valid_name,
};

/// Attempts per request before the error is returned (transient errors only).
const RETRIES: usize = 4;
/// Region when none is configured and the server names none.
const FALLBACK_REGION: &str = "us-east-1";

/// A bucket and prefix on an S3-compatible object store.
pub struct S3Backend {
    op: opendal::blocking::Operator,
    location: String,
    readahead: ReadAhead,
    runtime: &'static tokio::runtime::Runtime,
    /// HTTP requests sent (retries of one request not included).
    wire: Counters,
}

/// The runtime every S3 backend of the process runs its requests on. One
/// for all: OpenDAL keeps idle connections in a process-wide pool, and a
/// connection opened on a runtime that has shut down (a backend dropped
/// before another is opened, as in `copy` or a plan) would fail on reuse.
fn shared_runtime() -> io::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cairn-s3")
        .enable_all()
        .build()?;
    // A racing thread's runtime wins; ours is dropped unused.
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Bytes one ranged `GET` of a pack fetches when less is asked for.
const WINDOW: u64 = 4 << 20;
/// Windows kept: at most 32 MiB.
const WINDOWS: usize = 8;

/// Read-ahead for pack ranges. Restore, `ls`, a backup's parent trees read
/// a pack blob by blob, mostly in order; on a local disk each read is cheap,
/// on S3 each is a round trip. One `GET` of a window serves the blobs that
/// follow. Packs never change (their name is their hash), so a window is
/// never stale; deleting a pack drops its windows.
#[derive(Default)]
struct ReadAhead {
    /// Least recently used first.
    windows: Mutex<VecDeque<Window>>,
    /// Sizes of the packs read so far: a window must not reach past the
    /// end (OpenDAL refuses a short answer).
    sizes: Mutex<HashMap<String, u64>>,
}

struct Window {
    name: String,
    start: u64,
    data: Vec<u8>,
}

impl ReadAhead {
    /// Copies `offset..offset + len` of pack `name` into `buf` if a window
    /// holds all of it.
    fn copy(&self, name: &str, offset: u64, len: u32, buf: &mut Vec<u8>) -> bool {
        let mut ws = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let end = offset + u64::from(len);
        let Some(i) = ws.iter().position(|w| {
            w.name == name && w.start <= offset && end <= w.start + w.data.len() as u64
        }) else {
            return false;
        };
        let w = ws.remove(i).expect("index in range");
        let from = (offset - w.start) as usize;
        buf.extend_from_slice(&w.data[from..from + len as usize]);
        ws.push_back(w);
        true
    }

    fn insert(&self, w: Window) {
        let mut ws = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if ws.len() == WINDOWS {
            ws.pop_front();
        }
        ws.push_back(w);
    }

    fn forget(&self, name: &str) {
        let mut ws = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        ws.retain(|w| w.name != name);
        drop(ws);
        let mut sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
        sizes.remove(name);
    }

    fn size(&self, name: &str) -> Option<u64> {
        let sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
        sizes.get(name).copied()
    }

    fn set_size(&self, name: &str, size: u64) {
        let mut sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
        sizes.insert(name.to_string(), size);
    }
}

impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the credentials.
        f.debug_struct("S3Backend")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

fn config_error(loc: &S3Location, why: String) -> BackendError {
    BackendError {
        error_kind: BackendErrorKind::Permanent,
        op: "open",
        kind: ObjectKind::Config,
        name: loc.to_string(),
        source: io::Error::new(io::ErrorKind::InvalidInput, why),
    }
}

/// An HTTP client that also trusts the certificate authorities of
/// `opts.ca_cert`, else of `AWS_CA_BUNDLE` (SPEC §11.1); `None` when
/// neither names a file: OpenDAL's shared client, built-in roots only.
fn trusted_client(loc: &S3Location, opts: &S3Options) -> Result<Option<HttpClient>, BackendError> {
    let path = opts.ca_cert.clone().or_else(|| {
        std::env::var_os("AWS_CA_BUNDLE")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
    });
    let Some(path) = path else {
        return Ok(None);
    };
    let bad = |why: String| config_error(loc, format!("CA certificates {}: {why}", path.display()));
    let pem = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
        ));
    }
    let builder = certs
        .into_iter()
        .fold(reqwest::Client::builder(), |b, c| b.add_root_certificate(c));
    let client = builder.build().map_err(|e| bad(e.to_string()))?;
    Ok(Some(HttpClient::with(client)))
}

/// True for AWS's own endpoints (or none, which means AWS).
fn is_aws(endpoint: Option<&str>) -> bool {
    endpoint.is_none_or(|e| {
        let host = e.split_once("://").map_or(e, |(_, h)| h);
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        host.ends_with(".amazonaws.com")
    })
}

/// Whether requests go to `BUCKET.HOST/KEY` rather than `HOST/BUCKET/KEY`:
/// only on AWS (where path style is deprecated), for names that are valid
/// host labels, and not when path style is asked for.
fn virtual_host_style(endpoint: Option<&str>, bucket: &str, path_style: bool) -> bool {
    !path_style && is_aws(endpoint) && !bucket.contains('.')
}

impl S3Backend {
    /// Connects to the bucket of `loc` (no request is made yet, unless the
    /// region must be asked for). Endpoint: the location's, else
    /// `opts.endpoint`, else `AWS_ENDPOINT_URL`, else AWS.
    pub fn open(loc: &S3Location, opts: &S3Options) -> Result<Self, BackendError> {
        let env_endpoint = std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|s| !s.is_empty());
        let endpoint = match (&loc.endpoint, opts.endpoint.clone().or(env_endpoint)) {
            (Some(e), _) => Some(e.clone()),
            (None, Some(e)) => {
                Some(parse_endpoint(&e).map_err(|e| config_error(loc, e.to_string()))?)
            }
            (None, None) => None,
        };
        let runtime = shared_runtime()
            .map_err(|e| BackendError::io("open", ObjectKind::Config, &loc.to_string(), e))?;

        // AWS_REGION is read by OpenDAL; AWS_DEFAULT_REGION is not.
        let region = opts.region.clone().or_else(|| {
            std::env::var("AWS_REGION")
                .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                .ok()
                .filter(|r| !r.is_empty())
        });
        let client = trusted_client(loc, opts)?;
        let build = |region: Option<&str>| {
            let mut b = services::S3::default()
                .bucket(&loc.bucket)
                .root(&format!("/{}", loc.prefix));
            if let Some(e) = &endpoint {
                b = b.endpoint(e);
            }
            // Virtual-host style only where it is AWS's default; IP
            // addresses, localhost and other servers get path style
            // (SPEC §11.2).
            if virtual_host_style(endpoint.as_deref(), &loc.bucket, opts.path_style) {
                b = b.enable_virtual_host_style();
            }
            if let Some(r) = region {
                b = b.region(r);
            }
            if let Some(c) = &opts.credentials {
                b = b
                    .access_key_id(&c.access_key_id)
                    .secret_access_key(&c.secret_access_key);
                if let Some(t) = &c.session_token {
                    b = b.session_token(t);
                }
            }
            Operator::new(b).map(|o| {
                let o = o.finish();
                let o = match &client {
                    Some(c) => o.layer(HttpClientLayer::new(c.clone())),
                    None => o,
                };
                o.layer(
                    TimeoutLayer::new()
                        .with_timeout(Duration::from_secs(60))
                        .with_io_timeout(Duration::from_secs(30)),
                )
                .layer(
                    RetryLayer::new()
                        .with_jitter()
                        .with_factor(2.0)
                        .with_min_delay(Duration::from_millis(200))
                        .with_max_delay(Duration::from_secs(5))
                        .with_max_times(RETRIES),
                )
            })
        };
        let op = match build(region.as_deref()) {
            Ok(op) => op,
            // No region anywhere (nor in the profile): ask the server,
            // else the conventional default.
            Err(e) if e.kind() == OdKind::ConfigInvalid && region.is_none() => {
                let probe = endpoint
                    .clone()
                    .unwrap_or_else(|| "https://s3.amazonaws.com".to_string());
                let r = runtime
                    .block_on(services::S3::detect_region(&probe, &loc.bucket))
                    .unwrap_or_else(|| FALLBACK_REGION.to_string());
                build(Some(&r)).map_err(|e| config_error(loc, describe(&e)))?
            }
            Err(e) => return Err(config_error(loc, describe(&e))),
        };
        let op = {
            let _guard = runtime.enter();
            opendal::blocking::Operator::new(op).map_err(|e| config_error(loc, describe(&e)))?
        };
        // With the endpoint it resolved to: verification records name
        // where a check ran (SPEC §32), and one `s3://BUCKET` name may
        // reach buckets on different stores.
        let resolved = S3Location {
            endpoint: endpoint.clone(),
            ..loc.clone()
        };
        Ok(Self {
            op,
            location: resolved.to_string(),
            readahead: ReadAhead::default(),
            runtime,
            wire: Counters::default(),
        })
    }

    /// Checks that the bucket exists and the credentials may list it (one
    /// request), for a new repository.
    pub fn check_bucket(&self) -> Result<(), BackendError> {
        let opts = ListOptions {
            limit: Some(1),
            ..Default::default()
        };
        self.wire.record(Request::List, 0, 0);
        self.op
            .list_options("", opts)
            .map(drop)
            .map_err(|e| self.error("list", ObjectKind::Config, &self.location, e))
    }

    /// The runtime that drives requests, shared by all S3 backends (for
    /// callers that add their own concurrency on top).
    /// concurrency on top).
    pub fn runtime(&self) -> &'static tokio::runtime::Runtime {
        self.runtime
    }

    /// A ranged read that cannot be satisfied: the object is shorter than
    /// the index says (damage, not a network fault: not retried).
    fn short_read(&self, kind: ObjectKind, name: &str, what: String) -> BackendError {
        BackendError {
            error_kind: BackendErrorKind::Permanent,
            op: "read",
            kind,
            name: name.to_string(),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{what} ({})", self.location),
            ),
        }
    }

    fn error(
        &self,
        op: &'static str,
        kind: ObjectKind,
        name: &str,
        e: opendal::Error,
    ) -> BackendError {
        BackendError {
            error_kind: classify(&e),
            op,
            kind,
            name: name.to_string(),
            source: io::Error::other(format!("{} ({})", describe(&e), self.location)),
        }
    }

    fn check_name(op: &'static str, kind: ObjectKind, name: &str) -> Result<(), BackendError> {
        if valid_name(name) {
            Ok(())
        } else {
            Err(BackendError::io(
                op,
                kind,
                name,
                io::Error::new(io::ErrorKind::InvalidInput, "invalid object name"),
            ))
        }
    }
}

/// The object's key below the prefix: the local layout's relative path.
/// Why a walk of the keys stopped.
enum Walk {
    Storage(opendal::Error),
    Ours(BackendError),
}

impl From<opendal::Error> for Walk {
    fn from(e: opendal::Error) -> Self {
        Walk::Storage(e)
    }
}

/// The first and last of `kinds` in key order, when one walk between their
/// prefixes is worth it: two kinds or more, no `config` (not under a
/// prefix), and nothing in between but small kinds the caller did not ask
/// for (keys, grants, locks, marks, the config). Packs, archived WAL,
/// dictionaries, index files, snapshots, audit and verification records
/// grow with the repository's age: walking over them could cost more
/// requests than listing each kind.
fn walk_range(kinds: &[ObjectKind]) -> Option<(ObjectKind, ObjectKind)> {
    if kinds.len() < 2 || kinds.contains(&ObjectKind::Config) {
        return None;
    }
    let mut all = ObjectKind::ALL;
    all.sort_by_key(|&k| match k {
        ObjectKind::Config => "config",
        k => k.dir(),
    });
    let pos = |k: &ObjectKind| all.iter().position(|a| a == k);
    let lo = kinds.iter().filter_map(pos).min()?;
    let hi = kinds.iter().filter_map(pos).max()?;
    let small = |k: &ObjectKind| {
        matches!(
            k,
            ObjectKind::Config
                | ObjectKind::Key
                | ObjectKind::Keyring
                | ObjectKind::Lock
                | ObjectKind::Mark
        )
    };
    all[lo..=hi]
        .iter()
        .all(|k| kinds.contains(k) || small(k))
        .then(|| (all[lo], all[hi]))
}

fn key(kind: ObjectKind, name: &str) -> String {
    match kind {
        ObjectKind::Config => name.to_string(),
        ObjectKind::Pack => format!("{}/{}/{name}", kind.dir(), name.get(..2).unwrap_or("00")),
        _ => format!("{}/{name}", kind.dir()),
    }
}

/// Whether a write of `kind` needs a look (`HEAD`) first, so that it never
/// replaces an object on a server that ignores `If-None-Match` (SPEC
/// §11.3): only for `config` (a fixed name), key files (written rarely,
/// and they guard access) and WAL files (named by cluster and file, not
/// by content). Packs, index files, snapshots, dictionaries and
/// marks are named by their content, so two writers of one name write the
/// same bytes; locks carry 64 random bits, so no two writers pick one name.
fn looks_before_writing(kind: ObjectKind) -> bool {
    match kind {
        ObjectKind::Config | ObjectKind::Key | ObjectKind::Wal | ObjectKind::Keyring => true,
        ObjectKind::Pack
        | ObjectKind::Index
        | ObjectKind::Snapshot
        | ObjectKind::Dict
        | ObjectKind::Mark
        | ObjectKind::Lock
        | ObjectKind::Verify
        // Records are named by their content; the signing key is read back
        // after its first write, so a lost race only costs a re-read.
        | ObjectKind::Audit => false,
    }
}

/// How the engine should treat an OpenDAL error. OpenDAL's retry layer
/// marks every error it returns "persistent", so what was retried cannot
/// be told from the status: the HTTP status (in the error's context) or its
/// absence (no response: network, TLS, timeout) decides.
fn classify(e: &opendal::Error) -> BackendErrorKind {
    match e.kind() {
        OdKind::NotFound => BackendErrorKind::NotFound,
        OdKind::AlreadyExists => BackendErrorKind::AlreadyExists,
        OdKind::RateLimited => BackendErrorKind::Transient,
        OdKind::Unexpected => match http_status(e) {
            // 5xx; no response at all: timeouts, resets, refused
            // connections. The storage may come back.
            Some(s) if s >= 500 => BackendErrorKind::Transient,
            None => BackendErrorKind::Transient,
            // Other 4xx: the request itself is wrong.
            Some(_) => BackendErrorKind::Permanent,
        },
        // 403, a missing bucket, bad configuration, 412/416.
        _ => BackendErrorKind::Permanent,
    }
}

/// The HTTP status of the response OpenDAL attached, if any.
fn http_status(e: &opendal::Error) -> Option<u16> {
    const AT: &str = "response: Parts { status: ";
    let s = e.to_string();
    let at = s.find(AT)? + AT.len();
    s.get(at..at + 3)?.parse().ok()
}

/// One line about an OpenDAL error with its causes (a refused connection,
/// a TLS failure), without the response dump OpenDAL attaches (headers are
/// noise here). No credential is ever part of it: requests are signed in
/// headers, and OpenDAL prints none of the request's.
fn describe(e: &opendal::Error) -> String {
    let mut s = e.to_string();
    if let Some(start) = s.find(", response: ") {
        // The context value runs to the brace that closes the context list.
        let mut depth = 0i32;
        let mut end = s.len();
        for (i, b) in s.bytes().enumerate().skip(start + 12) {
            match b {
                b'{' => depth += 1,
                b'}' if depth == 0 => {
                    end = i;
                    break;
                }
                b'}' => depth -= 1,
                _ => {}
            }
        }
        s.replace_range(start..end, " ");
    }
    // OpenDAL's line shows its direct source only; the root cause is deeper.
    let mut cause = std::error::Error::source(e).and_then(|c| c.source());
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    let hint = match (e.kind(), http_status(e)) {
        (OdKind::PermissionDenied, _) => "access denied (credentials or bucket permissions): ",
        (OdKind::ConfigInvalid, _) if s.contains("NoSuchBucket") => "the bucket does not exist: ",
        (OdKind::Unexpected, None) => "cannot reach the storage: ",
        // HEAD answers have no body to explain them; a signing region the
        // server does not answer to is the usual cause.
        (_, Some(400)) => "the server refused the request (HTTP 400; is the region right?): ",
        _ => "",
    };
    let status = match http_status(e) {
        Some(code) if code != 400 => format!("HTTP {code}: "),
        _ => String::new(),
    };
    format!("{hint}{status}{s}")
}

/// Whole seconds since the epoch, in nanoseconds: `HEAD` reports
/// Last-Modified in seconds and `LIST` in milliseconds, and `stat` and
/// `list` must agree (SPEC §11.2).
fn modified_ns(m: &opendal::Metadata) -> Option<i64> {
    let t = SystemTime::from(m.last_modified()?);
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()?.checked_mul(1_000_000_000)
}

impl S3Backend {
    fn info(
        &self,
        op: &'static str,
        kind: ObjectKind,
        name: &str,
        m: &opendal::Metadata,
    ) -> Result<ObjectInfo, BackendError> {
        let modified_ns = modified_ns(m).ok_or_else(|| BackendError {
            error_kind: BackendErrorKind::Permanent,
            op,
            kind,
            name: name.to_string(),
            source: io::Error::other(format!(
                "the storage reported no Last-Modified time ({})",
                self.location
            )),
        })?;
        Ok(ObjectInfo {
            name: name.to_string(),
            size: m.content_length(),
            modified_ns,
        })
    }
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.clone()
    }
    /// Round trips dominate: restore and check read with `--connections`
    /// requests in flight rather than one per core.
    fn is_remote(&self) -> bool {
        true
    }
    /// Read-ahead answers many ranged reads with one `GET`, and some
    /// writes and deletes are preceded by a `HEAD`: what went over the
    /// wire is counted here.
    fn wire_requests(&self) -> Option<RequestStats> {
        Some(self.wire.snapshot())
    }

    fn read(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>, BackendError> {
        let mut buf = Vec::new();
        self.read_into(kind, name, &mut buf)?;
        Ok(buf)
    }

    fn read_into(
        &self,
        kind: ObjectKind,
        name: &str,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        Self::check_name("read", kind, name)?;
        let data = self.op.read(&key(kind, name));
        self.wire.record(
            Request::Read,
            0,
            data.as_ref().map_or(0, opendal::Buffer::len),
        );
        let data = data.map_err(|e| self.error("read", kind, name, e))?;
        buf.clear();
        buf.reserve(data.len());
        for chunk in data {
            buf.extend_from_slice(&chunk);
        }
        Ok(())
    }

    fn read_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, BackendError> {
        let mut buf = Vec::new();
        self.read_range_into(kind, name, offset, len, &mut buf)?;
        Ok(buf)
    }

    fn read_range_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        Self::check_name("read", kind, name)?;
        buf.clear();
        if len == 0 {
            return Ok(());
        }
        let ahead = kind == ObjectKind::Pack && u64::from(len) < WINDOW;
        if ahead && self.readahead.copy(name, offset, len, buf) {
            return Ok(());
        }
        let end = offset + u64::from(len);
        let (start, fetch) = if ahead {
            // One HEAD per pack, so the window stops at its end.
            let size = match self.readahead.size(name) {
                Some(size) => size,
                None => {
                    let size = self.stat(kind, name)?.size;
                    self.readahead.set_size(name, size);
                    size
                }
            };
            if end > size {
                return Err(self.short_read(
                    kind,
                    name,
                    format!("range {offset}+{len} is past the end ({size} bytes)"),
                ));
            }
            // A window near the end reaches back instead: trees are
            // written children first, so a walk from the root reads a tree
            // pack backwards, and a pack smaller than a window is read whole.
            let start = offset.min(size.saturating_sub(WINDOW));
            (start, WINDOW.min(size - start))
        } else {
            (offset, u64::from(len))
        };
        let opts = ReadOptions {
            range: BytesRange::new(start, Some(fetch)),
            ..Default::default()
        };
        let data = self.op.read_options(&key(kind, name), opts);
        self.wire.record(
            Request::ReadRange,
            0,
            data.as_ref().map_or(0, opendal::Buffer::len),
        );
        let data = data.map_err(|e| self.error("read", kind, name, e))?;
        let got = data.len();
        let skip = (offset - start) as usize;
        if got < skip + len as usize {
            return Err(self.short_read(
                kind,
                name,
                format!("range {offset}+{len} returned {got} bytes"),
            ));
        }
        if ahead {
            let window = data.to_vec();
            buf.extend_from_slice(&window[skip..skip + len as usize]);
            self.readahead.insert(Window {
                name: name.to_string(),
                start,
                data: window,
            });
        } else {
            buf.reserve(len as usize);
            for chunk in data {
                buf.extend_from_slice(&chunk);
            }
            buf.truncate(len as usize);
        }
        Ok(())
    }

    /// One ranged `GET` of exactly the span: the caller planned it, so no
    /// window and no `HEAD` for the pack's size. The body is streamed into
    /// `buf`, not collected first: a span may be a whole pack, and a
    /// restore reads several at once.
    fn read_span_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        Self::check_name("read", kind, name)?;
        buf.clear();
        if len == 0 {
            return Ok(());
        }
        let reader = self
            .op
            .reader(&key(kind, name))
            .map_err(|e| self.error("read", kind, name, e))?;
        buf.reserve_exact(len as usize);
        let got = reader.read_into(buf, offset..offset + u64::from(len));
        self.wire
            .record(Request::ReadRange, 0, got.as_ref().map_or(0, |n| *n));
        let got = got.map_err(|e| self.error("read", kind, name, e))?;
        if got < len as usize {
            return Err(self.short_read(
                kind,
                name,
                format!("range {offset}+{len} returned {got} bytes"),
            ));
        }
        buf.truncate(len as usize);
        Ok(())
    }

    fn size(&self, kind: ObjectKind, name: &str) -> Result<u64, BackendError> {
        Ok(self.stat(kind, name)?.size)
    }

    fn stat(&self, kind: ObjectKind, name: &str) -> Result<ObjectInfo, BackendError> {
        Self::check_name("stat", kind, name)?;
        self.wire.record(Request::Stat, 0, 0);
        let m = self
            .op
            .stat(&key(kind, name))
            .map_err(|e| self.error("stat", kind, name, e))?;
        self.info("stat", kind, name, &m)
    }

    fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        self.write_owned(kind, name, data.to_vec())
    }

    /// The bytes become the request's body as they are: no copy.
    fn write_owned(&self, kind: ObjectKind, name: &str, data: Vec<u8>) -> Result<(), BackendError> {
        Self::check_name("write", kind, name)?;
        let path = key(kind, name);
        // Servers that ignore If-None-Match (Garage 2.5) would replace an
        // existing object: look first where that could lose anything.
        if looks_before_writing(kind) {
            self.wire.record(Request::Stat, 0, 0);
            match self.op.stat(&path) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == OdKind::NotFound => {}
                Err(e) => return Err(self.error("write", kind, name, e)),
            }
        }
        let opts = WriteOptions {
            if_not_exists: true,
            ..Default::default()
        };
        // Packs are at most 1 GiB (SPEC §5), below S3's 5 GiB single-PUT
        // limit: one PUT, atomic on every S3 server.
        self.wire.record(Request::Write, data.len(), 0);
        match self.op.write_options(&path, data, opts) {
            Ok(_) => Ok(()),
            // 412: someone wrote the name first; names are content
            // addresses, so that is our object.
            Err(e) if e.kind() == OdKind::ConditionNotMatch => Ok(()),
            Err(e) => Err(self.error("write", kind, name, e)),
        }
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>, BackendError> {
        if kind == ObjectKind::Config {
            return match self.stat(kind, "config") {
                Ok(i) => Ok(vec![i]),
                // No config: tell a missing bucket (HEAD cannot) from an
                // empty prefix.
                Err(e) if e.is_not_found() => self.check_bucket().map(|()| Vec::new()),
                Err(e) => Err(BackendError { op: "list", ..e }),
            };
        }
        let dir = format!("{}/", kind.dir());
        // Packs: one flat, paginated listing of `data/` instead of 256.
        let opts = ListOptions {
            recursive: kind == ObjectKind::Pack,
            ..Default::default()
        };
        let entries = self.op.list_options(&dir, opts);
        // One request per page of (at most) 1000 keys.
        let pages = entries
            .as_ref()
            .map_or(1, |e| e.len().div_ceil(1000).max(1));
        for _ in 0..pages {
            self.wire.record(Request::List, 0, 0);
        }
        let entries = entries.map_err(|e| self.error("list", kind, "", e))?;
        let mut out = Vec::new();
        for e in entries {
            let Some(rel) = e.path().strip_prefix(&dir) else {
                continue;
            };
            let name = match (kind, rel.split_once('/')) {
                (ObjectKind::Pack, Some((fan, n))) if fan.len() == 2 && !n.contains('/') => n,
                (ObjectKind::Pack, _) | (_, Some(_)) => continue,
                (_, None) => rel,
            };
            if !e.metadata().is_file() || !valid_name(name) {
                continue;
            }
            out.push(self.info("list", kind, name, e.metadata())?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One walk of the sorted keys from the first kind's prefix to the end
    /// of the last one's (ListObjectsV2 without a delimiter, `start-after`),
    /// when no kind in between can be large (SPEC §11.2); else a listing
    /// per kind.
    fn list_many(&self, kinds: &[ObjectKind]) -> Result<Vec<Vec<ObjectInfo>>, BackendError> {
        let Some((first, last)) = walk_range(kinds) else {
            return kinds.iter().map(|&k| self.list(k)).collect();
        };
        // Every key of `first/` sorts after `first`, and every key of
        // `last/` before `last0` ('0' follows '/').
        let end = format!("{}0", last.dir());
        let opts = ListOptions {
            recursive: true,
            start_after: Some(first.dir().to_string()),
            ..Default::default()
        };
        let mut out: Vec<Vec<ObjectInfo>> = vec![Vec::new(); kinds.len()];
        let mut seen = 0usize;
        let walked = (|| -> Result<(), Walk> {
            // Pages are fetched as the walk reaches them: stopping at the
            // first key past the range fetches no further page.
            for e in self.op.lister_options("/", opts)? {
                let e = e?;
                seen += 1;
                if e.path() >= end.as_str() {
                    break;
                }
                let Some((dir, rel)) = e.path().split_once('/') else {
                    continue;
                };
                let Some(i) = kinds.iter().position(|k| k.dir() == dir) else {
                    continue;
                };
                let name = match (kinds[i], rel.split_once('/')) {
                    (ObjectKind::Pack, Some((fan, n))) if fan.len() == 2 && !n.contains('/') => n,
                    (ObjectKind::Pack, _) | (_, Some(_)) => continue,
                    (_, None) => rel,
                };
                if !e.metadata().is_file() || !valid_name(name) {
                    continue;
                }
                out[i].push(
                    self.info("list", kinds[i], name, e.metadata())
                        .map_err(Walk::Ours)?,
                );
            }
            Ok(())
        })();
        // One request per page of (at most) 1000 keys.
        for _ in 0..seen.div_ceil(1000).max(1) {
            self.wire.record(Request::List, 0, 0);
        }
        match walked {
            Ok(()) => {}
            Err(Walk::Ours(e)) => return Err(e),
            Err(Walk::Storage(e)) => return Err(self.error("list", first, "", e)),
        }
        for l in &mut out {
            l.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(out)
    }

    /// A plain PUT: S3 replaces an object atomically (readers see the old
    /// or the new one whole) and durably once it answers.
    fn replace(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        Self::check_name("replace", kind, name)?;
        self.wire.record(Request::Write, data.len(), 0);
        self.op
            .write(&key(kind, name), data.to_vec())
            .map(|_| ())
            .map_err(|e| self.error("replace", kind, name, e))
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<(), BackendError> {
        Self::check_name("delete", kind, name)?;
        let path = key(kind, name);
        self.readahead.forget(name);
        // S3 deletes a missing key without complaint; the contract wants
        // NotFound, except for a lock: its owner deletes it and nobody
        // needs to know it was gone already (one request, not two).
        if kind != ObjectKind::Lock {
            self.wire.record(Request::Stat, 0, 0);
            self.op
                .stat(&path)
                .map_err(|e| self.error("delete", kind, name, e))?;
        }
        self.wire.record(Request::Delete, 0, 0);
        self.op
            .delete(&path)
            .map_err(|e| self.error("delete", kind, name, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_span_only_small_kinds_they_were_not_asked_for() {
        use ObjectKind::*;
        // A backup's two walks (SPEC §15).
        assert_eq!(
            walk_range(&[Index, Mark, Snapshot]),
            Some((Index, Snapshot))
        );
        assert_eq!(walk_range(&[Index, Mark]), Some((Index, Mark)));
        assert_eq!(walk_range(&[Audit, Pack]), Some((Audit, Pack)));
        assert_eq!(walk_range(&[Pack, Audit]), Some((Audit, Pack)));
        // One kind is a plain listing; the config is not under a prefix.
        assert_eq!(walk_range(&[Pack]), None);
        assert_eq!(walk_range(&[Config, Audit]), None);
        // Never over packs, dictionaries or WAL not asked for.
        assert_eq!(walk_range(&[Audit, Index]), None);
        assert_eq!(walk_range(&[Snapshot, Audit]), None);
        assert_eq!(walk_range(&[Snapshot, Keyring]), Some((Keyring, Snapshot)));
        assert_eq!(walk_range(&[Index, Wal]), None);
        assert_eq!(walk_range(&[Snapshot, Wal]), None);
    }

    #[test]
    fn keys_follow_the_local_layout() {
        let n = "ab".repeat(32);
        assert_eq!(key(ObjectKind::Config, "config"), "config");
        assert_eq!(key(ObjectKind::Pack, &n), format!("data/ab/{n}"));
        assert_eq!(key(ObjectKind::Key, &n), format!("keys/{n}"));
        assert_eq!(key(ObjectKind::Snapshot, &n), format!("snapshots/{n}"));
        assert_eq!(key(ObjectKind::Index, &n), format!("index/{n}"));
        assert_eq!(key(ObjectKind::Lock, "backup-1-0"), "locks/backup-1-0");
        assert_eq!(key(ObjectKind::Mark, &n), format!("marks/{n}"));
        assert_eq!(key(ObjectKind::Dict, &n), format!("dicts/{n}"));
        assert_eq!(
            key(ObjectKind::Wal, "c-00000002_history"),
            "wal/c-00000002_history"
        );
    }

    #[test]
    fn errors_are_classified() {
        let e = |k| opendal::Error::new(k, "x");
        assert_eq!(classify(&e(OdKind::NotFound)), BackendErrorKind::NotFound);
        assert_eq!(
            classify(&e(OdKind::PermissionDenied)),
            BackendErrorKind::Permanent
        );
        // NoSuchBucket comes back as ConfigInvalid.
        assert_eq!(
            classify(&e(OdKind::ConfigInvalid)),
            BackendErrorKind::Permanent
        );
        assert_eq!(
            classify(&e(OdKind::RateLimited)),
            BackendErrorKind::Transient
        );
        let status = |code: u16| {
            e(OdKind::Unexpected)
                .with_context(
                    "response",
                    format!("Parts {{ status: {code}, headers: {{}} }}"),
                )
                .set_persistent()
        };
        // 5xx (after the retries), and no response at all (refused,
        // reset, timed out).
        assert_eq!(classify(&status(503)), BackendErrorKind::Transient);
        assert_eq!(classify(&status(500)), BackendErrorKind::Transient);
        assert_eq!(
            classify(&e(OdKind::Unexpected).set_persistent()),
            BackendErrorKind::Transient
        );
        // A request the server will never accept.
        assert_eq!(classify(&status(400)), BackendErrorKind::Permanent);
        assert_eq!(
            classify(&e(OdKind::PermissionDenied).set_persistent()),
            BackendErrorKind::Permanent
        );
    }

    #[test]
    fn descriptions_drop_the_response_dump() {
        let e = opendal::Error::new(
            OdKind::PermissionDenied,
            "S3Error { code: \"AccessDenied\" }",
        )
        .with_context("uri", "http://h/b/config")
        .with_context("response", "Parts { status: 403, headers: {\"a\": \"b\"} }");
        let d = describe(&e);
        assert!(d.starts_with("access denied"), "{d}");
        assert!(
            d.contains("AccessDenied") && d.contains("http://h/b/config"),
            "{d}"
        );
        assert!(!d.contains("Parts") && !d.contains("headers"), "{d}");
    }

    #[test]
    fn path_style_unless_aws() {
        let aws = Some("https://s3.eu-west-1.amazonaws.com");
        assert!(virtual_host_style(None, "b", false));
        assert!(virtual_host_style(aws, "b", false));
        assert!(!virtual_host_style(aws, "b", true), "the flag");
        assert!(!virtual_host_style(aws, "b.with.dots", false));
        for other in [
            "http://127.0.0.1:3900",
            "http://localhost:9000",
            "https://minio.example",
        ] {
            assert!(!virtual_host_style(Some(other), "b", false), "{other}");
        }
    }

    #[test]
    fn aws_endpoints_are_recognised() {
        assert!(is_aws(None));
        assert!(is_aws(Some("https://s3.eu-west-1.amazonaws.com")));
        assert!(!is_aws(Some("http://127.0.0.1:3900")));
        assert!(!is_aws(Some("https://garage.example.com")));
    }

    #[test]
    fn debug_shows_no_secret() {
        let c = S3Credentials {
            access_key_id: "GKid".into(),
            secret_access_key: "s3cr3t".into(),
            session_token: Some("t0k3n".into()),
        };
        let d = format!(
            "{:?}",
            S3Options {
                credentials: Some(c),
                ..Default::default()
            }
        );
        assert!(
            d.contains("GKid") && !d.contains("s3cr3t") && !d.contains("t0k3n"),
            "{d}"
        );
    }
}
