//! Where a repository lives, as a user writes it (SPEC §11.1): a local
//! path, or an S3-compatible bucket and prefix.
//!
//! The rule that keeps a typo from becoming a local directory: a string that
//! begins with `word:` before any `/` (`word` = a letter, then letters,
//! digits, `+`, `.`, `-`) names a scheme. Only `file:` and `s3:` are known;
//! every other scheme, and every malformed `s3:` form, is an error that lists
//! the supported forms. A local path that contains `:` in its first
//! component is written `./a:b` or `file:a:b`.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::{Backend, BackendError};

/// The forms a location may take, for error messages and help texts.
pub const LOCATION_FORMS: &str = "PATH or file:PATH (a local directory), \
s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX], or s3://BUCKET[/PREFIX] \
(endpoint from --s3-endpoint or AWS_ENDPOINT_URL, else AWS)";

/// A parsed repository location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory.
    Local(PathBuf),
    /// A bucket (and prefix) on an S3-compatible object store.
    S3(S3Location),
}

/// A bucket and prefix on an S3-compatible store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// `http[s]://HOST[:PORT]` from an `s3:http…` location; `None` for
    /// `s3://BUCKET`, whose endpoint comes from [`S3Options`] or the
    /// environment.
    pub endpoint: Option<String>,
    /// The bucket.
    pub bucket: String,
    /// Object-name prefix inside the bucket, without leading or trailing
    /// `/`; empty for the bucket's root.
    pub prefix: String,
}

/// How to reach an S3 location beyond what its string says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// Endpoint for `s3://BUCKET` locations (`http[s]://HOST[:PORT]`);
    /// `None`: `AWS_ENDPOINT_URL`, else AWS's regional endpoint.
    pub endpoint: Option<String>,
    /// Path-style requests (`HOST/BUCKET/KEY`) even where virtual-host
    /// style (`BUCKET.HOST/KEY`) would be the default (SPEC §11.2).
    pub path_style: bool,
    /// Signing region; `None`: `AWS_REGION`, `AWS_DEFAULT_REGION`, the
    /// profile, else asked of the server, else `us-east-1`.
    pub region: Option<String>,
    /// Static credentials; `None`: the AWS environment variables, then
    /// `AWS_PROFILE` with the shared config and credentials files.
    pub credentials: Option<S3Credentials>,
    /// A PEM file of certificate authorities to trust besides the built-in
    /// ones (a self-hosted store behind a private CA); `None`:
    /// `AWS_CA_BUNDLE` when set (SPEC §11.1).
    pub ca_cert: Option<std::path::PathBuf>,
}

/// Static credentials, for callers that do not take them from the
/// environment (tests, plans). `Debug` shows the key id only.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A location string that names no supported location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocationError {
    /// Empty string.
    #[error("empty repository location; use {LOCATION_FORMS}")]
    Empty,
    /// A scheme other than `file:` and `s3:`.
    #[error("unsupported repository location scheme `{0}:`; use {LOCATION_FORMS}")]
    UnknownScheme(String),
    /// A known scheme written wrongly.
    #[error("malformed {scheme}: location ({why}); use {LOCATION_FORMS}")]
    Malformed {
        /// `file` or `s3`.
        scheme: &'static str,
        /// What is wrong (never echoes credentials).
        why: String,
    },
    /// An `s3:` location in a build without the `s3` feature.
    #[error("this build of cairn has no S3 support")]
    NoS3Support,
}

impl Location {
    /// Parses a location string.
    pub fn parse(s: &str) -> Result<Self, LocationError> {
        if s.is_empty() {
            return Err(LocationError::Empty);
        }
        let Some(scheme) = scheme_of(s.as_bytes()) else {
            return Ok(Location::Local(PathBuf::from(s)));
        };
        let rest = &s[scheme.len() + 1..];
        match scheme {
            "file" => parse_file(rest),
            "s3" => parse_s3(rest).map(Location::S3),
            _ => Err(LocationError::UnknownScheme(scheme.to_string())),
        }
    }

    /// [`Location::parse`] for an OS string: a string that is not UTF-8
    /// is a local path unless it starts with a scheme.
    pub fn parse_os(s: &OsStr) -> Result<Self, LocationError> {
        match s.to_str() {
            Some(s) => Self::parse(s),
            None => match scheme_of(s.as_bytes()) {
                Some(scheme) => Err(LocationError::UnknownScheme(scheme.to_string())),
                None => Ok(Location::Local(PathBuf::from(s))),
            },
        }
    }

    /// True for locations on an object store.
    pub fn is_remote(&self) -> bool {
        !matches!(self, Location::Local(_))
    }

    /// Opens the storage of an existing repository. Nothing is read yet:
    /// [`Repository::open`](crate::Repository::open) reads the config.
    pub fn open(&self, opts: &S3Options) -> Result<Box<dyn Backend>, BackendError> {
        match self {
            Location::Local(p) => Ok(Box::new(super::LocalBackend::open(p))),
            Location::S3(s) => open_s3(s, opts, false),
        }
    }

    /// Prepares storage for a new repository, to pass to
    /// [`Repository::init`](crate::Repository::init): makes the local
    /// layout, or checks that the bucket exists and is reachable.
    pub fn create(&self, opts: &S3Options) -> Result<Box<dyn Backend>, BackendError> {
        match self {
            Location::Local(p) => Ok(Box::new(super::LocalBackend::create(p)?)),
            Location::S3(s) => open_s3(s, opts, true),
        }
    }
}

#[cfg(feature = "s3")]
fn open_s3(
    s: &S3Location,
    opts: &S3Options,
    create: bool,
) -> Result<Box<dyn Backend>, BackendError> {
    let b = super::s3::S3Backend::open(s, opts)?;
    if create {
        b.check_bucket()?;
    }
    Ok(Box::new(b))
}

#[cfg(not(feature = "s3"))]
fn open_s3(
    s: &S3Location,
    _opts: &S3Options,
    _create: bool,
) -> Result<Box<dyn Backend>, BackendError> {
    Err(BackendError::io(
        "open",
        super::ObjectKind::Config,
        &s.to_string(),
        std::io::Error::new(std::io::ErrorKind::Unsupported, LocationError::NoS3Support),
    ))
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3(s) => s.fmt(f),
        }
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            Some(e) => write!(f, "s3:{e}/{}", self.bucket)?,
            None => write!(f, "s3://{}", self.bucket)?,
        }
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Location {
    type Err = LocationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The scheme of `s` if it starts with `word:` before any `/`.
fn scheme_of(s: &[u8]) -> Option<&str> {
    let colon = s.iter().position(|&b| b == b':')?;
    let word = &s[..colon];
    let ok = word.first().is_some_and(u8::is_ascii_alphabetic)
        && word
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-'));
    // ASCII only, so the slice is valid UTF-8.
    ok.then(|| std::str::from_utf8(word).ok()).flatten()
}

fn malformed(scheme: &'static str, why: impl Into<String>) -> LocationError {
    LocationError::Malformed {
        scheme,
        why: why.into(),
    }
}

/// `file:PATH`, also `file:///abs/path`.
fn parse_file(rest: &str) -> Result<Location, LocationError> {
    let path = match rest.strip_prefix("//") {
        Some(abs) if abs.starts_with('/') => abs,
        Some(_) => {
            return Err(malformed(
                "file",
                "file:// must be followed by an absolute path",
            ));
        }
        None => rest,
    };
    if path.is_empty() {
        return Err(malformed("file", "no path"));
    }
    Ok(Location::Local(PathBuf::from(path)))
}

/// `s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]` or `s3://BUCKET[/PREFIX]`
/// (`rest` is what follows `s3:`).
fn parse_s3(rest: &str) -> Result<S3Location, LocationError> {
    if let Some(path) = rest.strip_prefix("//") {
        let (bucket, prefix) = bucket_and_prefix(path)?;
        return Ok(S3Location {
            endpoint: None,
            bucket,
            prefix,
        });
    }
    let Some(scheme) = ["http://", "https://"]
        .into_iter()
        .find(|p| rest.starts_with(p))
    else {
        return Err(malformed("s3", "expected s3:http://, s3:https:// or s3://"));
    };
    let after = &rest[scheme.len()..];
    let (host, path) = after.split_once('/').unwrap_or((after, ""));
    let endpoint = format!("{scheme}{}", check_host(host)?);
    let (bucket, prefix) = bucket_and_prefix(path)?;
    Ok(S3Location {
        endpoint: Some(endpoint),
        bucket,
        prefix,
    })
}

/// Checks `HOST[:PORT]`; refuses user info, which could carry a secret
/// (and is not echoed).
fn check_host(host: &str) -> Result<&str, LocationError> {
    if host.contains('@') {
        return Err(malformed(
            "s3",
            "credentials in the location are not accepted; use AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY or a profile",
        ));
    }
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        let (addr, tail) = v6
            .split_once(']')
            .ok_or_else(|| malformed("s3", "unclosed [ in the host"))?;
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(malformed("s3", "bad IPv6 address"));
        }
        match tail {
            "" => (addr, None),
            t => (
                addr,
                Some(
                    t.strip_prefix(':')
                        .ok_or_else(|| malformed("s3", "junk after the IPv6 address"))?,
                ),
            ),
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    if name.is_empty() {
        return Err(malformed("s3", "no host"));
    }
    if !host.starts_with('[')
        && !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(malformed("s3", "bad host name"));
    }
    if let Some(p) = port
        && p.parse::<u16>().ok().filter(|&p| p > 0).is_none()
    {
        return Err(malformed("s3", "bad port"));
    }
    Ok(host)
}

/// `BUCKET[/PREFIX]`: the prefix loses surrounding slashes; empty, `.`
/// and `..` segments are refused (no two spellings of one prefix).
fn bucket_and_prefix(path: &str) -> Result<(String, String), LocationError> {
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    if bucket.is_empty() {
        return Err(malformed("s3", "no bucket"));
    }
    if bucket.len() > 255
        || !bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(malformed(
            "s3",
            "a bucket name consists of letters, digits, '.', '-' and '_'",
        ));
    }
    let prefix = prefix.trim_end_matches('/');
    if !prefix.is_empty()
        && prefix
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(malformed(
            "s3",
            "the prefix has an empty, '.' or '..' segment",
        ));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// Validates an endpoint given as an option (`http[s]://HOST[:PORT]`,
/// an optional trailing `/`).
pub(crate) fn parse_endpoint(e: &str) -> Result<String, LocationError> {
    let bad = || malformed("s3", "the endpoint must be http[s]://HOST[:PORT]");
    let scheme = ["http://", "https://"]
        .into_iter()
        .find(|p| e.starts_with(p))
        .ok_or_else(bad)?;
    let host = e[scheme.len()..].trim_end_matches('/');
    if host.contains('/') {
        return Err(bad());
    }
    Ok(format!("{scheme}{}", check_host(host)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(endpoint: Option<&str>, bucket: &str, prefix: &str) -> Location {
        Location::S3(S3Location {
            endpoint: endpoint.map(str::to_string),
            bucket: bucket.into(),
            prefix: prefix.into(),
        })
    }

    #[test]
    fn local_forms() {
        for (s, p) in [
            ("/srv/backup", "/srv/backup"),
            ("repo", "repo"),
            ("./a:b", "./a:b"),
            ("/x/s3:y", "/x/s3:y"),
            ("../up", "../up"),
            ("file:/srv/backup", "/srv/backup"),
            ("file:rel/dir", "rel/dir"),
            ("file:a:b", "a:b"),
            ("file:///srv/backup", "/srv/backup"),
            ("1abc:x", "1abc:x"),
            (":x", ":x"),
        ] {
            assert_eq!(Location::parse(s), Ok(Location::Local(p.into())), "{s}");
        }
    }

    #[test]
    fn s3_with_endpoint() {
        for (s, want) in [
            (
                "s3:http://127.0.0.1:3900/bucket",
                s3(Some("http://127.0.0.1:3900"), "bucket", ""),
            ),
            (
                "s3:http://127.0.0.1:3900/bucket/",
                s3(Some("http://127.0.0.1:3900"), "bucket", ""),
            ),
            (
                "s3:https://s3.example.com/b/cairn/host1/",
                s3(Some("https://s3.example.com"), "b", "cairn/host1"),
            ),
            (
                "s3:http://localhost/b.x-y/p",
                s3(Some("http://localhost"), "b.x-y", "p"),
            ),
            (
                "s3:http://[::1]:9000/b/p",
                s3(Some("http://[::1]:9000"), "b", "p"),
            ),
        ] {
            assert_eq!(Location::parse(s).as_ref(), Ok(&want), "{s}");
            assert!(want.is_remote());
        }
    }

    #[test]
    fn s3_without_endpoint() {
        assert_eq!(Location::parse("s3://bucket"), Ok(s3(None, "bucket", "")));
        assert_eq!(
            Location::parse("s3://bucket/a/b/"),
            Ok(s3(None, "bucket", "a/b"))
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "s3://bucket",
            "s3://bucket/a/b",
            "s3:http://127.0.0.1:3900/bucket/p",
            "s3:https://h/b",
            "/srv/backup",
        ] {
            let l = Location::parse(s).unwrap();
            assert_eq!(l.to_string(), s);
            assert_eq!(Location::parse(&l.to_string()), Ok(l));
        }
    }

    #[test]
    fn unknown_and_lookalike_schemes_are_errors() {
        for (s, scheme) in [
            ("sftp:host:/x", "sftp"),
            ("gs://b", "gs"),
            ("b2:bucket", "b2"),
            ("http://host/b", "http"),
            ("S3://b", "S3"),
            ("rest:http://h/", "rest"),
            ("azure:c:/", "azure"),
            ("backup:2024", "backup"),
        ] {
            let e = Location::parse(s).unwrap_err();
            assert_eq!(e, LocationError::UnknownScheme(scheme.into()), "{s}");
            let msg = e.to_string();
            assert!(
                msg.contains("s3:http[s]://HOST") && msg.contains("file:PATH"),
                "{msg}"
            );
        }
    }

    #[test]
    fn malformed_s3_is_an_error() {
        for s in [
            "s3:/x",
            "s3:bucket",
            "s3:",
            "s3:ftp://h/b",
            "s3://",
            "s3:///p",
            "s3:http://h",
            "s3:http://h/",
            "s3:http:///b",
            "s3:http://h:0/b",
            "s3:http://h:port/b",
            "s3:http://h:99999/b",
            "s3:http://[::1/b",
            "s3://b/a//c",
            "s3://b/./c",
            "s3://b/../c",
            "s3://bad bucket/p",
            "s3:http://h h/b",
        ] {
            let e = Location::parse(s).unwrap_err();
            assert!(
                matches!(e, LocationError::Malformed { scheme: "s3", .. }),
                "{s}: {e:?}"
            );
            assert!(e.to_string().contains("s3://BUCKET"), "{e}");
        }
    }

    #[test]
    fn credentials_in_the_location_are_refused_and_not_echoed() {
        let e = Location::parse("s3:http://AKID:sEcReT@h:9000/b").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, LocationError::Malformed { .. }));
        assert!(!msg.contains("sEcReT") && !msg.contains("AKID"), "{msg}");
    }

    #[test]
    fn malformed_file_and_empty() {
        assert_eq!(Location::parse(""), Err(LocationError::Empty));
        assert!(matches!(
            Location::parse("file:"),
            Err(LocationError::Malformed { scheme: "file", .. })
        ));
        assert!(matches!(
            Location::parse("file://host/x"),
            Err(LocationError::Malformed { scheme: "file", .. })
        ));
    }

    #[test]
    fn non_utf8_paths_stay_local_unless_they_name_a_scheme() {
        let raw = OsStr::from_bytes(b"/srv/\xff");
        assert_eq!(Location::parse_os(raw), Ok(Location::Local(raw.into())));
        assert_eq!(
            Location::parse_os(OsStr::from_bytes(b"gs://\xff")),
            Err(LocationError::UnknownScheme("gs".into()))
        );
        assert_eq!(
            Location::parse_os(OsStr::new("s3://b/p")),
            Ok(s3(None, "b", "p"))
        );
    }

    #[test]
    fn endpoints_as_options() {
        assert_eq!(
            parse_endpoint("http://127.0.0.1:3900/").as_deref(),
            Ok("http://127.0.0.1:3900")
        );
        for bad in ["127.0.0.1:3900", "http://h/b", "ftp://h", "http://u:p@h"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }
}
