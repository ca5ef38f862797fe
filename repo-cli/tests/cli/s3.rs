//! `cairn` on S3-compatible storage, end to end on a real 3-node Garage
//! cluster (replication factor 3): the whole life of a repository, and the
//! bad input an operator meets first. The secret key never appears in any
//! output, and no location is ever mistaken for a local directory.

use std::ffi::OsStr;
use std::fs;
use std::process::Output;

use cairn_testkit::garage::Garage;
use cairn_testkit::tree::{assert_identical, build_every_kind};

use super::harness::{Env, assert_success, only_snapshot, stderr, write};

const WEAK: [&str; 4] = ["--kdf-memory", "64", "--kdf-iterations", "1"];

/// A scratch directory and a location on the shared cluster; commands run
/// there with the cluster's credentials in the environment.
struct S3 {
    env: Env,
    garage: &'static Garage,
    location: String,
    /// Every output so far, to look for the secret at the end.
    seen: std::cell::RefCell<Vec<u8>>,
}

impl S3 {
    fn new(prefix: &str) -> Self {
        let garage = Garage::shared();
        Self {
            env: Env::empty(),
            garage,
            location: garage.location(prefix),
            seen: Default::default(),
        }
    }

    /// `cairn -r LOCATION ARGS` with AWS credentials and region from the
    /// environment, as users have them, in the scratch directory.
    fn run_at<I, S>(&self, location: &str, envs: &[(&str, &str)], args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.env.cmd_at(OsStr::new(location));
        for v in [
            "AWS_CA_BUNDLE",
            "AWS_ENDPOINT_URL",
            "AWS_PROFILE",
            "AWS_REGION",
            "AWS_SESSION_TOKEN",
        ] {
            c.env_remove(v);
        }
        c.envs(self.garage.env())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(envs.iter().copied())
            .current_dir(self.env.dir.path());
        let out = c.args(args).output().expect("run cairn");
        let mut seen = self.seen.borrow_mut();
        seen.extend_from_slice(&out.stdout);
        seen.extend_from_slice(&out.stderr);
        out
    }

    fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_at(&self.location, &[], args)
    }

    fn ok<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.run(args);
        assert_success(&out);
        out
    }

    fn json<I, S>(&self, args: I) -> serde_json::Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.run(
            std::iter::once(OsStr::new("--json").to_owned())
                .chain(args.into_iter().map(|a| a.as_ref().to_owned())),
        );
        assert_success(&out);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Restores `id` into a fresh directory; the restored copy of `src`.
    fn restore(&self, id: &str, src: &std::path::Path) -> std::path::PathBuf {
        let target = self.env.path(&format!("restore-{id}"));
        let _ = fs::remove_dir_all(&target);
        self.ok([
            OsStr::new("restore"),
            id.as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
        ]);
        target.join(src.strip_prefix("/").expect("absolute"))
    }

    /// No output contained the secret key, and nothing in the scratch
    /// directory is named like a location (a URL taken for a path).
    fn assert_clean(&self) {
        let seen = String::from_utf8_lossy(&self.seen.borrow()).into_owned();
        assert!(
            !seen.contains(self.garage.secret_key()),
            "the secret key appeared in the output"
        );
        for e in fs::read_dir(self.env.dir.path()).expect("read_dir") {
            let name = e.expect("entry").file_name();
            let name = name.to_string_lossy();
            assert!(!name.contains(':'), "a local directory {name:?} was made");
        }
    }
}

#[test]
fn a_repository_lives_its_whole_life_on_s3() {
    let s = S3::new("cli/life");
    let init = s.json(["init"].into_iter().chain(WEAK));
    assert_eq!(init["repository"], s.location, "{init}");
    // A second init refuses: there is a repository there.
    let again = s.run(["init"].into_iter().chain(WEAK));
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(stderr(&again).contains(&s.location), "{}", stderr(&again));

    // The round-trip tree, every kind of entry.
    let src = s.env.path("src");
    fs::create_dir(&src).expect("mkdir");
    let xattrs = build_every_kind(&src);
    let first = only_snapshot(&s.json([OsStr::new("backup"), src.as_os_str()]));
    let first = first["snapshot_id"]
        .as_str()
        .expect("snapshot id")
        .to_string();
    assert_identical(&src, &s.restore(&first, &src), xattrs);
    s.ok(["check", "--read-data"]);

    // Change: drop the large file, add one; the new snapshot restores
    // identical too.
    fs::remove_file(src.join("large_random.bin")).expect("rm");
    write(&src.join("added.txt"), b"new in the second snapshot\n");
    let second = only_snapshot(&s.json([OsStr::new("backup"), src.as_os_str()]));
    let second = second["snapshot_id"]
        .as_str()
        .expect("snapshot id")
        .to_string();
    assert_eq!(s.json(["snapshots"]).as_array().expect("array").len(), 2);

    // Forget the first, prune (no grace: the storage's clock decides).
    s.ok(["forget", "--keep-last", "1"]);
    let mut deleted = 0;
    for _ in 0..2 {
        let p = s.json(["prune", "--grace", "0", "--max-unused", "0"]);
        deleted += p["summary"]["packs_deleted"]
            .as_u64()
            .expect("packs_deleted");
    }
    assert!(deleted >= 1, "prune deleted no pack on S3");
    let snaps = s.json(["snapshots"]);
    let ids: Vec<&str> = snaps
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [second.as_str()]);
    s.ok(["check", "--read-data"]);
    assert_identical(&src, &s.restore(&second, &src), xattrs);

    // Keys: add, list, change, remove; each password opens what it should.
    let pw_file = |name: &str, pw: &str| {
        let p = s.env.path(name);
        write(&p, format!("{pw}\n").as_bytes());
        p
    };
    let bob = pw_file("bob", "bob's password");
    let added = s.json(
        [
            OsStr::new("key"),
            "add".as_ref(),
            "--new-password-file".as_ref(),
            bob.as_os_str(),
        ]
        .into_iter()
        .chain(WEAK.map(OsStr::new)),
    );
    let bob_id = added["id"].as_str().expect("id").to_string();
    assert_eq!(s.json(["key", "list"]).as_array().expect("array").len(), 2);
    let as_bob =
        |args: &[&str]| s.run_at(&s.location, &[("CAIRN_PASSWORD", "bob's password")], args);
    assert_success(&as_bob(&["snapshots"]));
    let carol = pw_file("carol", "carol's password");
    let passwd = as_bob(&[
        "key",
        "passwd",
        "--new-password-file",
        carol.to_str().expect("utf8"),
        "--kdf-memory",
        "64",
        "--kdf-iterations",
        "1",
    ]);
    assert_success(&passwd);
    assert_eq!(
        as_bob(&["snapshots"]).status.code(),
        Some(12),
        "old password still opens"
    );
    let keys = s.json(["key", "list"]);
    let keys = keys.as_array().expect("array");
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| k["id"] != bob_id.as_str()), "{keys:?}");
    let carol_id = keys
        .iter()
        .find(|k| k["current"] == false)
        .and_then(|k| k["id"].as_str())
        .expect("carol's key")
        .to_string();
    s.ok(["key", "remove", &carol_id]);
    assert_eq!(s.json(["key", "list"]).as_array().expect("array").len(), 1);
    let as_carol = s.run_at(
        &s.location,
        &[("CAIRN_PASSWORD", "carol's password")],
        ["snapshots"],
    );
    assert_eq!(as_carol.status.code(), Some(12), "{}", stderr(&as_carol));

    // The key header is readable without a password, from S3 too.
    let header = s.json(["cat", "key", &keys[0]["id"].as_str().expect("id")[..8]]);
    assert!(header["kdf"].is_object(), "{header}");
    s.assert_clean();
}

/// `s3://BUCKET/PREFIX` with the endpoint from `--s3-endpoint` or
/// `AWS_ENDPOINT_URL` names the same repository as the `s3:http…` form.
#[test]
fn the_endpoint_may_come_from_an_option_or_the_environment() {
    let s = S3::new("cli/endpoint");
    s.ok(["init"].into_iter().chain(WEAK));
    let bare = format!("s3://{}/cli/endpoint", s.garage.bucket());
    let endpoint = s.garage.endpoint();
    let by_option = s.run_at(
        &bare,
        &[],
        ["--s3-endpoint", &endpoint, "--json", "snapshots"],
    );
    assert_success(&by_option);
    let by_env = s.run_at(
        &bare,
        &[("AWS_ENDPOINT_URL", &endpoint)],
        ["--json", "snapshots"],
    );
    assert_success(&by_env);
    // Path style is automatic for an IP endpoint; the flag is accepted.
    let flagged = s.run_at(
        &bare,
        &[("AWS_ENDPOINT_URL", &endpoint)],
        ["--s3-path-style", "snapshots"],
    );
    assert_success(&flagged);
    s.assert_clean();
}

/// Credentials and region from a named profile in the shared files, as an
/// operator with `~/.aws/credentials` has them; no AWS_* key in the
/// environment. A profile that does not exist is an access error.
#[test]
fn credentials_may_come_from_an_aws_profile() {
    let s = S3::new("cli/profile");
    let g = s.garage;
    let dir = s.env.dir.path();
    write(
        &dir.join("aws-credentials"),
        format!(
            "[default]\naws_access_key_id = GKwrong\naws_secret_access_key = wrong\n\n\
             [backup]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            g.key_id(),
            g.secret_key()
        )
        .as_bytes(),
    );
    write(
        &dir.join("aws-config"),
        b"[profile backup]\nregion = garage\n\n[profile nobody]\nregion = garage\n",
    );
    let run = |profile: &str, args: &[&str]| {
        let mut c = s.env.cmd_at(OsStr::new(&s.location));
        for (k, _) in g.env() {
            c.env_remove(k);
        }
        for v in ["AWS_ENDPOINT_URL", "AWS_REGION", "AWS_SESSION_TOKEN"] {
            c.env_remove(v);
        }
        let out = c
            .env("AWS_PROFILE", profile)
            .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("aws-credentials"))
            .env("AWS_CONFIG_FILE", dir.join("aws-config"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("run cairn");
        s.seen.borrow_mut().extend_from_slice(&out.stderr);
        out
    };
    let mut init = vec!["init"];
    init.extend(WEAK);
    assert_success(&run("backup", &init));
    assert_success(&run("backup", &["--json", "snapshots"]));
    let denied = run("nobody", &["snapshots"]);
    assert_ne!(denied.status.code(), Some(0), "{}", stderr(&denied));
    assert!(!stderr(&denied).contains("panicked"), "{}", stderr(&denied));
    s.assert_clean();
}

/// Asserts a clean failure: exit `code`, `what` on stderr, no panic.
fn assert_fails(out: &Output, code: i32, what: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains(what), "expected {what:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_s3_input_fails_clearly_without_leaking_the_secret() {
    let s = S3::new("cli/bad");
    let g = s.garage;
    s.ok(["init"].into_iter().chain(WEAK));

    // Wrong secret key, unknown key id.
    let wrong = "0".repeat(64);
    let out = s.run_at(
        &s.location,
        &[("AWS_SECRET_ACCESS_KEY", &wrong)],
        ["snapshots"],
    );
    assert_fails(&out, 1, "access denied");
    assert!(!stderr(&out).contains(&wrong));
    let out = s.run_at(
        &s.location,
        &[("AWS_ACCESS_KEY_ID", "GK0000000000000000000000")],
        ["snapshots"],
    );
    assert_fails(&out, 1, "access denied");

    // A missing bucket: neither "no repository" nor a new one.
    let missing = g.location_in(&g.endpoint(), "no-such-bucket", "x");
    let out = s.run_at(&missing, &[], ["init"].into_iter().chain(WEAK));
    assert_fails(&out, 1, "bucket does not exist");
    let out = s.run_at(&missing, &[], ["snapshots"]);
    assert_fails(&out, 1, "bucket does not exist");

    // Nothing listening; TLS to a plain-HTTP server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let closed = format!("s3:http://127.0.0.1:{port}/{}/x", g.bucket());
    assert_fails(
        &s.run_at(&closed, &[], ["snapshots"]),
        1,
        "Connection refused",
    );
    let https = g.location_in(
        &g.endpoint().replace("http://", "https://"),
        g.bucket(),
        "x",
    );
    assert_fails(
        &s.run_at(&https, &[], ["snapshots"]),
        1,
        "cannot reach the storage",
    );

    // An empty prefix is no repository (exit 10), and says where.
    let empty = g.location("cli/nothing-here");
    let out = s.run_at(&empty, &[], ["snapshots"]);
    assert_fails(&out, 10, "cli/nothing-here");

    // Unknown schemes and lookalikes: an error listing the forms, never a
    // local directory (assert_clean checks), for init too.
    for bad in [
        "s3:/x",
        "s3:bucket",
        "s3:ftp://h/b",
        "sftp:host:/x",
        "gs://bucket",
        "b2:bucket:path",
        "http://127.0.0.1/b",
        "S3://bucket",
    ] {
        for args in [
            vec!["snapshots"],
            vec!["init", "--kdf-memory", "64", "--kdf-iterations", "1"],
        ] {
            let out = s.run_at(bad, &[], &args);
            assert_fails(&out, 1, "s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]");
        }
    }
    // Credentials inside the location are refused and not echoed.
    let with_secret = format!(
        "s3:http://{}:{}@127.0.0.1:1/b/p",
        g.key_id(),
        g.secret_key()
    );
    assert_fails(
        &s.run_at(&with_secret, &[], ["snapshots"]),
        1,
        "credentials in the location",
    );
    s.assert_clean();
}

/// Runs `openssl ARGS` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (Debian package openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
}

/// A TLS front for a plain-HTTP port: `socat` with a certificate and key;
/// killed when dropped.
struct TlsFront(std::process::Child);

impl TlsFront {
    fn start(port: u16, cert: &std::path::Path, key: &std::path::Path, to: u16) -> Self {
        let child = std::process::Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                cert.display(),
                key.display()
            ))
            .arg(format!("TCP:127.0.0.1:{to}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run socat (Debian package socat)");
        let front = Self(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return front;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("socat did not listen on {port}"); // the drop stops it
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A self-hosted store behind a private certificate authority (SPEC
/// §11.1): Garage behind a TLS front whose certificate our own CA signed.
/// Unnamed, the CA is not trusted and the error says why; named by
/// `--s3-ca-cert` or `AWS_CA_BUNDLE`, a repository lives there; a file
/// without a certificate is refused by name.
#[test]
fn a_private_certificate_authority_is_trusted_when_named() {
    let s = S3::new("cli/tls");
    let g = s.garage;
    let dir = s.env.path("tls");
    fs::create_dir_all(&dir).unwrap();
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=cairn test CA",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    write(&dir.join("san.ext"), b"subjectAltName=IP:127.0.0.1\n");
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
    let port = cairn_testkit::garage::free_port();
    let _front = TlsFront::start(
        port,
        &dir.join("server.pem"),
        &dir.join("server.key"),
        g.s3_port(0),
    );
    let location = g.location_in(&format!("https://127.0.0.1:{port}"), g.bucket(), "cli/tls");
    let ca = dir.join("ca.pem");
    let ca_arg = ["--s3-ca-cert", ca.to_str().unwrap()];

    // Not trusted: a clear error, and no repository.
    let out = s.run_at(&location, &[], ["init"].into_iter().chain(WEAK));
    assert_fails(&out, 1, "invalid peer certificate");
    assert!(
        stderr(&out).contains("hint: if the storage's certificate"),
        "{}",
        stderr(&out)
    );
    let out = s.run_at(&location, &[], ca_arg.into_iter().chain(["snapshots"]));
    assert_fails(&out, 10, "cli/tls");

    // Trusted by the option: the whole round trip.
    let src = s.env.path("src");
    write(&src.join("a.txt"), b"behind a private CA\n");
    assert_success(&s.run_at(
        &location,
        &[],
        ca_arg.into_iter().chain(["init"]).chain(WEAK),
    ));
    assert_success(&s.run_at(
        &location,
        &[],
        ca_arg.into_iter().chain(["backup", src.to_str().unwrap()]),
    ));
    // Trusted through AWS_CA_BUNDLE, as the AWS tools read it.
    let bundle = [("AWS_CA_BUNDLE", ca.to_str().unwrap())];
    let out = s.run_at(&location, &bundle, ["--json", "snapshots"]);
    assert_success(&out);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let target = s.env.path("restored");
    assert_success(&s.run_at(
        &location,
        &bundle,
        ["restore", "latest", "--target", target.to_str().unwrap()],
    ));
    let restored = target.join(src.strip_prefix("/").unwrap()).join("a.txt");
    assert_eq!(fs::read(restored).unwrap(), b"behind a private CA\n");
    assert_success(&s.run_at(&location, &bundle, ["check", "--read-data"]));

    // A file that holds no certificate: refused, naming it.
    let not_pem = dir.join("server.csr");
    let out = s.run_at(
        &location,
        &[],
        ["--s3-ca-cert", not_pem.to_str().unwrap(), "snapshots"],
    );
    assert_fails(&out, 1, "server.csr");
    s.assert_clean();
}

/// Verification records name an S3 location with the endpoint the client
/// resolved (SPEC §32.1): a check through `s3://BUCKET` and
/// `--s3-endpoint`, and one through `s3:http…` on a new machine, are at one
/// location, so the second finds nothing due.
#[test]
fn verification_records_name_the_resolved_endpoint() {
    let s = S3::new("cli/vhistory");
    s.ok(["init"].into_iter().chain(WEAK));
    write(&s.env.path("src/a"), &[7u8; 100_000]);
    s.ok([OsStr::new("backup"), s.env.path("src").as_os_str()]);
    let bare = format!("s3://{}/cli/vhistory", s.garage.bucket());
    let endpoint = s.garage.endpoint();
    let out = s.run_at(
        &bare,
        &[],
        ["--s3-endpoint", &endpoint, "--json", "check", "--read-data"],
    );
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["location"], s.location.as_str(), "{v}");
    assert!(v["packs_checked"].as_u64().unwrap() >= 1, "{v}");
    fs::remove_dir_all(s.env.path("cache")).unwrap();
    let again = s.json(["check", "--read-data", "--max-age", "30d"]);
    assert_eq!(again["nothing_due"], true, "{again}");
    s.assert_clean();
}
