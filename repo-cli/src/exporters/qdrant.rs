//! Qdrant: a small client of the REST API's collection and snapshot
//! endpoints (SPEC §27), built on `ureq`.
//!
//! A collection snapshot is a plain tar that Qdrant writes under its
//! `snapshots_path`; we create it (`wait=true`), stream the download into the
//! repository byte for byte (it holds GNU sparse members: never re-tar it),
//! check its SHA-256 against the checksum the server reports while it
//! streams, and delete the server-side copy. Restore is the multipart upload
//! (`POST /collections/{c}/snapshots/upload?priority=snapshot&checksum=…`,
//! field `snapshot`), which recreates the collection.

use std::io::{self, Read};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// How long to wait for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one read may stall. Creating a snapshot with `wait=true` answers
/// only when the snapshot is written, which takes minutes on multi-GB
/// collections (qdrant/qdrant#4802), so this is generous.
const READ_TIMEOUT: Duration = Duration::from_secs(3600);
/// At most this much of an error response is read for the message.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;
/// At most this much of a JSON response is read.
const JSON_BODY_LIMIT: u64 = 64 * 1024 * 1024;

/// A snapshot as the server describes it (`SnapshotDescription`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct SnapshotDescription {
    /// File name, `<collection>-<peer>-<YYYY-MM-DD-HH-MM-SS>.snapshot`.
    pub name: String,
    /// Naive UTC time, `YYYY-MM-DDTHH:MM:SS`.
    #[serde(default)]
    pub creation_time: Option<String>,
    /// Size in bytes.
    #[serde(default)]
    pub size: Option<u64>,
    /// SHA-256 of the file, lowercase hex.
    #[serde(default)]
    pub checksum: Option<String>,
}

/// What `GET /collections/{name}` tells us.
#[derive(Debug, Clone)]
pub struct CollectionInfo {
    /// The collection's configuration (vectors, shards, HNSW, …).
    pub config: serde_json::Value,
}

/// The successful envelope `{"result": …, "status": "ok", "time": …}`.
#[derive(Deserialize)]
struct Envelope<T> {
    result: T,
}

/// A Qdrant server's REST API.
pub struct Client {
    agent: ureq::Agent,
    /// The URL as given, without a trailing `/`.
    base: String,
    api_key: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the api key.
        f.debug_struct("Client")
            .field("url", &display_url(&self.base))
            .finish_non_exhaustive()
    }
}

/// `url` without user info, query or fragment: what messages and metadata
/// show.
pub fn display_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (hostport, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let hostport = hostport.rsplit_once('@').map_or(hostport, |(_, h)| h);
    let path = path.trim_end_matches('/');
    if scheme.is_empty() {
        format!("{hostport}{path}")
    } else {
        format!("{scheme}://{hostport}{path}")
    }
}

/// Percent-encodes one path segment (collection and snapshot names).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A clear message for a non-2xx answer: Qdrant's JSON error envelope
/// `{"status":{"error":"…"},"time":…}` or the plain-text body, with a hint
/// for the usual causes.
pub fn error_message(status: u16, what: &str, body: &str) -> String {
    let detail = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/status/error")
                .and_then(|e| e.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.trim().chars().take(500).collect());
    let hint = match status {
        401 => " (wrong or missing API key: give --api-key or CAIRN_QDRANT_API_KEY)",
        403 => " (the API key may not do this: a read-only key cannot create snapshots)",
        404 => " (no such collection or snapshot)",
        400 => " (the server rejected the request)",
        500..=599 => " (server error)",
        _ => "",
    };
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    };
    format!("{what} failed with HTTP {status}{hint}{detail}")
}

impl Client {
    /// A client of the server at `url` (`http://host:6333`, or https).
    pub fn new(url: &str, api_key: Option<String>) -> Result<Self> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("invalid Qdrant URL {url:?}: must start with http:// or https://");
        }
        let config = ureq::Agent::config_builder()
            // Status codes are mapped to messages here, with the body.
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(READ_TIMEOUT))
            .timeout_per_write(Some(READ_TIMEOUT))
            // Qdrant answers 307 to nothing we use; a redirect would drop the body.
            .max_redirects(0)
            .build();
        Ok(Self {
            agent: config.into(),
            base,
            api_key: api_key.filter(|k| !k.is_empty()),
        })
    }

    /// The server URL without credentials.
    pub fn url(&self) -> String {
        display_url(&self.base)
    }

    fn with_key<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.api_key {
            Some(k) => r.header("api-key", k),
            None => r,
        }
    }

    /// Maps a transport error to a message naming the server.
    fn transport(&self, what: &str, e: ureq::Error) -> anyhow::Error {
        anyhow!(e).context(format!("Qdrant {what} at {}: request failed", self.url()))
    }

    /// Returns the response when it is 2xx, else the mapped error.
    fn check(
        &self,
        what: &str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let resp = r.map_err(|e| self.transport(what, e))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let body = resp
            .into_body()
            .with_config()
            .limit(ERROR_BODY_LIMIT)
            .lossy_utf8(true)
            .read_to_string()
            .unwrap_or_default();
        bail!(
            "Qdrant at {}: {}",
            self.url(),
            error_message(status, what, &body)
        )
    }

    /// The `result` of a JSON envelope.
    fn result<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        resp: ureq::http::Response<ureq::Body>,
    ) -> Result<T> {
        let text = resp
            .into_body()
            .with_config()
            .limit(JSON_BODY_LIMIT)
            .read_to_string()
            .map_err(|e| self.transport(what, e))?;
        let env: Envelope<T> = serde_json::from_str(&text).with_context(|| {
            format!(
                "Qdrant {what} at {}: unexpected answer {:?}",
                self.url(),
                text.chars().take(200).collect::<String>()
            )
        })?;
        Ok(env.result)
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, what: &str, path: &str) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let resp = self.check(what, self.with_key(self.agent.get(&url)).call())?;
        self.result(what, resp)
    }

    fn send_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let data = serde_json::to_vec(body)?;
        let req = match method {
            "POST" => self.agent.post(&url),
            "PUT" => self.agent.put(&url),
            _ => bail!("unsupported method {method}"),
        };
        let resp = self.check(
            what,
            self.with_key(req)
                .header("content-type", "application/json")
                .send(&data[..]),
        )?;
        self.result(what, resp)
    }

    /// The server's version from `GET /` (`{"title", "version"}`, no envelope).
    pub fn version(&self) -> Result<String> {
        let url = format!("{}/", self.base);
        let resp = self.check("version query", self.with_key(self.agent.get(&url)).call())?;
        let text = resp
            .into_body()
            .with_config()
            .limit(ERROR_BODY_LIMIT)
            .read_to_string()
            .map_err(|e| self.transport("version query", e))?;
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        Ok(v["version"].as_str().unwrap_or("unknown").to_string())
    }

    /// Names of every collection, sorted.
    pub fn collections(&self) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Desc {
            name: String,
        }
        #[derive(Deserialize)]
        struct List {
            collections: Vec<Desc>,
        }
        let l: List = self.get_json("collection list", "/collections")?;
        let mut names: Vec<String> = l.collections.into_iter().map(|c| c.name).collect();
        names.sort();
        Ok(names)
    }

    /// The configuration of a collection (its info's `config`).
    pub fn collection_info(&self, name: &str) -> Result<CollectionInfo> {
        let v: serde_json::Value = self.get_json(
            &format!("info of collection {name:?}"),
            &format!("/collections/{}", encode_segment(name)),
        )?;
        Ok(CollectionInfo {
            config: v["config"].clone(),
        })
    }

    /// The exact number of points (`POST /collections/{name}/points/count`
    /// with `exact: true`); the info's `points_count` is approximate.
    pub fn count_points(&self, name: &str) -> Result<u64> {
        #[derive(Deserialize)]
        struct Count {
            count: u64,
        }
        let c: Count = self.send_json(
            &format!("point count of collection {name:?}"),
            "POST",
            &format!("/collections/{}/points/count", encode_segment(name)),
            &serde_json::json!({ "exact": true }),
        )?;
        Ok(c.count)
    }

    /// Creates a snapshot and waits until it is written.
    pub fn create_snapshot(&self, collection: &str) -> Result<SnapshotDescription> {
        let what = format!("snapshot creation for collection {collection:?}");
        let url = format!(
            "{}/collections/{}/snapshots?wait=true",
            self.base,
            encode_segment(collection)
        );
        let resp = self.check(&what, self.with_key(self.agent.post(&url)).send_empty())?;
        self.result(&what, resp)
    }

    /// Snapshots of a collection kept on the server.
    pub fn list_snapshots(&self, collection: &str) -> Result<Vec<SnapshotDescription>> {
        self.get_json(
            &format!("snapshot list of collection {collection:?}"),
            &format!("/collections/{}/snapshots", encode_segment(collection)),
        )
    }

    /// The snapshot file as a stream (the server sends it chunked).
    pub fn download_snapshot(
        &self,
        collection: &str,
        snapshot: &str,
    ) -> Result<impl Read + Send + 'static> {
        let url = format!(
            "{}/collections/{}/snapshots/{}",
            self.base,
            encode_segment(collection),
            encode_segment(snapshot)
        );
        let resp = self.check(
            &format!("download of snapshot {snapshot:?}"),
            self.with_key(self.agent.get(&url)).call(),
        )?;
        Ok(resp.into_body().into_reader())
    }

    /// Deletes a snapshot file on the server.
    pub fn delete_snapshot(&self, collection: &str, snapshot: &str) -> Result<()> {
        let url = format!(
            "{}/collections/{}/snapshots/{}?wait=true",
            self.base,
            encode_segment(collection),
            encode_segment(snapshot)
        );
        self.check(
            &format!("deletion of snapshot {snapshot:?}"),
            self.with_key(self.agent.delete(&url)).call(),
        )?;
        Ok(())
    }

    /// Deletes a collection.
    pub fn delete_collection(&self, name: &str) -> Result<()> {
        let url = format!("{}/collections/{}", self.base, encode_segment(name));
        self.check(
            &format!("deletion of collection {name:?}"),
            self.with_key(self.agent.delete(&url)).call(),
        )?;
        Ok(())
    }

    /// Uploads a snapshot of exactly `len` bytes read from `file` into
    /// `collection` (created if missing, replaced otherwise) as the
    /// multipart field `snapshot`, with `priority=snapshot` (the snapshot's
    /// data wins) and, if known, the SHA-256 the server checks it against.
    /// Returns when the server has recovered the collection (`wait=true`).
    pub fn upload_snapshot(
        &self,
        collection: &str,
        file_name: &str,
        file: impl Read,
        len: u64,
        checksum: Option<&str>,
    ) -> Result<()> {
        let mut url = format!(
            "{}/collections/{}/snapshots/upload?wait=true&priority=snapshot",
            self.base,
            encode_segment(collection)
        );
        if let Some(c) = checksum {
            url.push_str(&format!("&checksum={}", encode_segment(c)));
        }
        let mut body = Multipart::new(file_name, file, len);
        let total = body.len();
        let content_type = format!("multipart/form-data; boundary={}", body.boundary);
        let what = format!("snapshot upload into collection {collection:?}");
        let resp = self.check(
            &what,
            self.with_key(self.agent.post(&url))
                .header("content-type", content_type)
                // Known length: no chunked request body.
                .header("content-length", total.to_string())
                .send(ureq::SendBody::from_reader(&mut body)),
        )?;
        let _: serde_json::Value = self.result(&what, resp)?;
        Ok(())
    }
}

/// A `multipart/form-data` body with one file field, `snapshot`, read from
/// `file`, which must yield exactly `len` bytes: fewer is an error, so a
/// failed read from the repository cannot upload a short snapshot.
struct Multipart<R> {
    boundary: String,
    head: Vec<u8>,
    tail: Vec<u8>,
    file: R,
    len: u64,
    /// Bytes of head + file + tail already produced.
    pos: u64,
}

impl<R: Read> Multipart<R> {
    fn new(file_name: &str, file: R, len: u64) -> Self {
        // The boundary must not occur in the data; 32 random-looking hex
        // digits from the clock and pid make that vanishingly unlikely, and
        // the tar would have to contain CRLF + "--" + it.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let h = Sha256::digest(format!("{seed}-{}-{file_name}", std::process::id()));
        let boundary = format!("cairn-{}", hex(&h[..16]));
        let safe_name: String = file_name
            .chars()
            .map(|c| if c == '"' || c.is_control() { '_' } else { c })
            .collect();
        let head = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"snapshot\"; \
             filename=\"{safe_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        let tail = format!("\r\n--{boundary}--\r\n").into_bytes();
        Self {
            boundary,
            head,
            tail,
            file,
            len,
            pos: 0,
        }
    }

    fn len(&self) -> u64 {
        self.head.len() as u64 + self.len + self.tail.len() as u64
    }
}

impl<R: Read> Read for Multipart<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let head = self.head.len() as u64;
        let file_end = head + self.len;
        if self.pos < head {
            let from = self.pos as usize;
            let n = (self.head.len() - from).min(buf.len());
            buf[..n].copy_from_slice(&self.head[from..from + n]);
            self.pos += n as u64;
            return Ok(n);
        }
        if self.pos < file_end {
            let want = usize::try_from(file_end - self.pos)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = self.file.read(&mut buf[..want])?;
            if n == 0 && want > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "snapshot ended after {} of {} bytes",
                        self.pos - head,
                        self.len
                    ),
                ));
            }
            self.pos += n as u64;
            return Ok(n);
        }
        let from = (self.pos - file_end) as usize;
        let n = (self.tail.len() - from.min(self.tail.len())).min(buf.len());
        buf[..n].copy_from_slice(&self.tail[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Passes a download through while hashing it, and at its end checks the
/// SHA-256 and size the server reported. A mismatch makes the final read an
/// error instead of the end of the stream, so a stream backup fed by this
/// reader fails and writes no snapshot.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    expected_sha256: Option<String>,
    expected_size: Option<u64>,
    checked: bool,
}

impl<R: Read> VerifyingReader<R> {
    /// Checks `inner` against the server's checksum (hex) and size, where known.
    pub fn new(inner: R, expected_sha256: Option<&str>, expected_size: Option<u64>) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            expected_sha256: expected_sha256.map(str::to_ascii_lowercase),
            expected_size,
            checked: false,
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        let bad = |m: String| Err(io::Error::new(io::ErrorKind::InvalidData, m));
        if let Some(size) = self.expected_size
            && size != self.bytes
        {
            return bad(format!(
                "snapshot size mismatch: the server reported {size} bytes, downloaded {}",
                self.bytes
            ));
        }
        let got = hex(&self.hasher.clone().finalize());
        if let Some(want) = &self.expected_sha256
            && *want != got
        {
            return bad(format!(
                "snapshot checksum mismatch: the server reported SHA-256 {want}, downloaded {got}"
            ));
        }
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("download interrupted after {} bytes: {e}", self.bytes),
            )
        })?;
        if n == 0 {
            if !self.checked {
                self.finish()?;
                self.checked = true;
            }
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn read_all(mut r: impl Read) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn verifying_reader_checks_digest_and_size_at_the_end() {
        let data = b"a tar, or anything else, long enough to take several reads".to_vec();
        let sum = hex(&Sha256::digest(&data));
        let ok = VerifyingReader::new(
            Cursor::new(data.clone()),
            Some(&sum),
            Some(data.len() as u64),
        );
        assert_eq!(read_all(ok).unwrap(), data);
        // Upper-case hex from a server is the same digest.
        let up = sum.to_ascii_uppercase();
        assert!(
            read_all(VerifyingReader::new(
                Cursor::new(data.clone()),
                Some(&up),
                None
            ))
            .is_ok()
        );
        let mut bad = data.clone();
        bad[10] ^= 1;
        let e = read_all(VerifyingReader::new(Cursor::new(bad), Some(&sum), None)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
        let e = read_all(VerifyingReader::new(
            Cursor::new(data[..20].to_vec()),
            None,
            Some(data.len() as u64),
        ))
        .unwrap_err();
        assert!(e.to_string().contains("size mismatch"), "{e}");
    }

    #[test]
    fn multipart_frames_exactly_len_bytes() {
        let data = vec![7u8; 1000];
        let m = Multipart::new("c-1-2026.snapshot", Cursor::new(data.clone()), 1000);
        let boundary = m.boundary.clone();
        let total = m.len();
        let body = read_all(m).unwrap();
        assert_eq!(body.len() as u64, total);
        let head = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"snapshot\"");
        assert!(body.starts_with(head.as_bytes()));
        assert!(body.ends_with(format!("\r\n--{boundary}--\r\n").as_bytes()));
        let start = body.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(&body[start..start + 1000], &data[..]);
        // A short file is an error, not a short upload.
        let short = Multipart::new("x", Cursor::new(vec![1u8; 10]), 11);
        assert_eq!(
            read_all(short).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn urls_and_errors() {
        assert_eq!(
            display_url("https://user:pw@q.example:6333/?api-key=x"),
            "https://q.example:6333"
        );
        assert_eq!(display_url("http://h:6333/prefix/"), "http://h:6333/prefix");
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
        let m = error_message(
            404,
            "info",
            r#"{"status":{"error":"Not found: Collection `x` doesn't exist!"},"time":0.1}"#,
        );
        assert!(m.contains("HTTP 404") && m.contains("doesn't exist"), "{m}");
        let m = error_message(
            401,
            "info",
            "Must provide an API key or an Authorization bearer token",
        );
        assert!(
            m.contains("API key") && m.contains("CAIRN_QDRANT_API_KEY"),
            "{m}"
        );
        assert!(Client::new("ftp://h", None).is_err());
    }
}
