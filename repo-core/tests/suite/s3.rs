//! The S3 backend on a real 3-node Garage cluster (replication factor 3):
//! the conformance suite, and the errors an operator meets first (wrong
//! credentials, a missing bucket, nothing listening, TLS to a plain-HTTP
//! server), each classified, naming the object, and free of the secret.

use cairn_testkit::garage::{Garage, REGION};
use repo_core::{
    Backend, BackendErrorKind, Location, ObjectKind, OpenOptions, Repository, RequestStats,
    S3Backend, S3Credentials, S3Options, conformance,
};

/// Options reaching `g` with its key (not through the environment: tests
/// share one process).
fn options(g: &Garage) -> S3Options {
    S3Options {
        region: Some(REGION.into()),
        credentials: Some(S3Credentials {
            access_key_id: g.key_id().into(),
            secret_access_key: g.secret_key().into(),
            session_token: None,
        }),
        ..Default::default()
    }
}

fn backend(location: &str, opts: &S3Options) -> Box<dyn Backend> {
    Location::parse(location).unwrap().open(opts).unwrap()
}

#[test]
fn the_s3_backend_conforms_on_a_garage_cluster() {
    let g = Garage::shared();
    let loc = Location::parse(&g.location("conformance/run")).unwrap();
    let b = loc.create(&options(g)).unwrap();
    assert_eq!(b.location(), g.location("conformance/run"));
    conformance::run(&b);
    // The bucket's root, without a prefix, conforms too.
    let bucket = g.new_bucket();
    let b = Location::parse(&g.location_in(&g.endpoint(), &bucket, ""))
        .unwrap()
        .create(&options(g))
        .unwrap();
    conformance::run(&b);
}

/// Prefixes are separate repositories: nothing written under one is seen
/// under another, or under the bucket's root.
#[test]
fn prefixes_keep_repositories_apart() {
    let g = Garage::shared();
    let opts = options(g);
    let a = backend(&g.location("apart/a"), &opts);
    let b = backend(&g.location("apart/b"), &opts);
    let root = backend(&g.location(""), &opts);
    let name = "ab".repeat(32);
    a.write(ObjectKind::Pack, &name, b"in a").unwrap();
    a.write(ObjectKind::Config, "config", b"c").unwrap();
    assert!(b.list(ObjectKind::Pack).unwrap().is_empty());
    assert!(b.list(ObjectKind::Config).unwrap().is_empty());
    assert!(
        root.read(ObjectKind::Pack, &name)
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(a.read(ObjectKind::Pack, &name).unwrap(), b"in a");
    a.delete(ObjectKind::Pack, &name).unwrap();
    a.delete(ObjectKind::Config, "config").unwrap();
}

/// Asserts `e` is of kind `want`, says `what`, names the object and the
/// location, and does not contain `secret`.
fn assert_error(e: &repo_core::BackendError, want: BackendErrorKind, what: &str, secret: &str) {
    let msg = e.to_string();
    assert_eq!(e.error_kind, want, "{msg}");
    assert!(msg.contains(what), "expected {what:?} in: {msg}");
    assert!(msg.contains("config"), "the object is not named: {msg}");
    assert!(!msg.contains(secret), "the secret key leaked: {msg}");
    assert!(
        !format!("{e:?}").contains(secret),
        "the secret key leaked: {e:?}"
    );
}

#[test]
fn wrong_credentials_are_a_permanent_access_error() {
    let g = Garage::shared();
    let mut opts = options(g);
    let wrong = "0".repeat(64);
    opts.credentials.as_mut().unwrap().secret_access_key = wrong.clone();
    let b = backend(&g.location("wrong-credentials"), &opts);
    assert!(!format!("{b:?}").contains(&wrong));
    let e = b.read(ObjectKind::Config, "config").unwrap_err();
    assert_error(&e, BackendErrorKind::Permanent, "access denied", &wrong);
    let e = b.list(ObjectKind::Config).unwrap_err();
    assert_error(&e, BackendErrorKind::Permanent, "access denied", &wrong);
    // An unknown key id too.
    let mut opts = options(g);
    opts.credentials.as_mut().unwrap().access_key_id = "GK0000000000000000000000".into();
    let e = backend(&g.location("wrong-credentials"), &opts)
        .read(ObjectKind::Config, "config")
        .unwrap_err();
    assert_error(
        &e,
        BackendErrorKind::Permanent,
        "access denied",
        g.secret_key(),
    );
}

#[test]
fn a_missing_bucket_is_named_and_not_an_empty_repository() {
    let g = Garage::shared();
    let opts = options(g);
    let loc = Location::parse(&g.location_in(&g.endpoint(), "no-such-bucket", "p")).unwrap();
    // Creating a repository there fails before anything is written.
    let e = loc.create(&opts).map(drop).unwrap_err();
    assert_error(
        &e,
        BackendErrorKind::Permanent,
        "bucket does not exist",
        g.secret_key(),
    );
    // Opening one: looking for the config does not report "no config"
    // (which would read as an empty location), but the missing bucket.
    let e = loc
        .open(&opts)
        .unwrap()
        .list(ObjectKind::Config)
        .unwrap_err();
    assert_error(
        &e,
        BackendErrorKind::Permanent,
        "bucket does not exist",
        g.secret_key(),
    );
}

#[test]
fn an_unreachable_endpoint_is_transient_after_the_retries() {
    let g = Garage::shared();
    let opts = options(g);
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b = backend(&format!("s3:http://127.0.0.1:{port}/cairn/x"), &opts);
    let e = b.read(ObjectKind::Config, "config").unwrap_err();
    assert_error(
        &e,
        BackendErrorKind::Transient,
        "Connection refused",
        g.secret_key(),
    );
    // TLS to a plain-HTTP server: the handshake fails, clearly.
    let https = g.endpoint().replace("http://", "https://");
    let b = backend(&g.location_in(&https, g.bucket(), "x"), &opts);
    let e = b.read(ObjectKind::Config, "config").unwrap_err();
    assert_error(
        &e,
        BackendErrorKind::Transient,
        "cannot reach the storage",
        g.secret_key(),
    );
}

/// Reading a pack blob by blob costs one request per window, not one per
/// blob: after the first range, the following ones are served even when the
/// object has gone behind the backend's back (packs never change). A delete
/// through the backend itself forgets the window.
#[test]
fn pack_ranges_are_read_ahead() {
    let g = Garage::shared();
    let opts = options(g);
    let loc = g.location("read-ahead");
    let (reader, other) = (backend(&loc, &opts), backend(&loc, &opts));
    let name = "cd".repeat(32);
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
    reader.write(ObjectKind::Pack, &name, &data).unwrap();
    assert_eq!(
        reader.read_range(ObjectKind::Pack, &name, 0, 100).unwrap(),
        &data[..100]
    );
    other.delete(ObjectKind::Pack, &name).unwrap();
    for (offset, len) in [(100, 1000), (500_000, 10), (999_990, 10)] {
        let got = reader
            .read_range(ObjectKind::Pack, &name, offset, len)
            .unwrap();
        assert_eq!(
            got,
            &data[offset as usize..][..len as usize],
            "{offset}+{len}"
        );
    }
    // Past the end is still an error.
    assert!(
        reader
            .read_range(ObjectKind::Pack, &name, 999_990, 20)
            .is_err()
    );
    // Other kinds are not read ahead: gone is gone.
    reader.write(ObjectKind::Index, &name, &data).unwrap();
    reader.read_range(ObjectKind::Index, &name, 0, 100).unwrap();
    other.delete(ObjectKind::Index, &name).unwrap();
    assert!(
        reader
            .read_range(ObjectKind::Index, &name, 100, 100)
            .unwrap_err()
            .is_not_found()
    );
    // Deleting through the reader drops its window.
    reader.write(ObjectKind::Pack, &name, &data).unwrap();
    reader.read_range(ObjectKind::Pack, &name, 0, 100).unwrap();
    reader.delete(ObjectKind::Pack, &name).unwrap();
    let e = reader
        .read_range(ObjectKind::Pack, &name, 100, 100)
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

/// Trees are written children first, so a restore or `ls` walking from the
/// root reads a tree pack from its end backwards: a window near the end
/// reaches back, and a pack smaller than a window is fetched whole. Before,
/// each step back was a `GET` (one per directory level above the data).
#[test]
fn a_walk_backwards_through_a_pack_is_one_window() {
    let g = Garage::shared();
    let b = backend(&g.location("read-back"), &options(g));
    let count = |f: &dyn Fn()| -> RequestStats {
        let before = b.wire_requests().expect("S3 counts its own requests");
        f();
        b.wire_requests().unwrap().since(&before)
    };
    for (size, first_byte_fetched) in [(1_000_000u64, 0u64), (6 << 20, 2 << 20)] {
        let name = format!("{:064x}", size);
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        b.write(ObjectKind::Pack, &name, &data).unwrap();
        // From the last 1000 bytes back to the window's first byte.
        let s = count(&|| {
            let mut end = size;
            while end >= first_byte_fetched + 1000 {
                let got = b
                    .read_range(ObjectKind::Pack, &name, end - 1000, 1000)
                    .unwrap();
                assert_eq!(got, &data[(end - 1000) as usize..end as usize], "{size}");
                end -= 100_000;
            }
        });
        assert_eq!(
            (s.read_range, s.stat, s.total()),
            (1, 1, 2),
            "{size}: {s:?}"
        );
        assert_eq!(s.bytes_received, size - first_byte_fetched, "{size}: {s:?}");
    }
}

/// SPEC §11.3 says Garage 2.5 ignores `If-None-Match: *` on PUT, which is
/// why the backend looks before it writes a name not derived from the
/// bytes (config, key files, locks). This pins the fact with a raw
/// conditional PUT through OpenDAL: if a Garage release starts honouring
/// the header, this fails and SPEC §11.3 (and the HEAD before those
/// writes) should be revisited. The backend itself never replaces them
/// (conformance).
#[test]
fn garage_ignores_if_none_match_so_the_backend_looks_first() {
    let g = Garage::shared();
    let Location::S3(loc) = Location::parse(&g.location("if-none-match")).unwrap() else {
        unreachable!()
    };
    let b = S3Backend::open(&loc, &options(g)).unwrap();
    // Through the backend the first bytes of a key file stay.
    let name = "ef".repeat(32);
    b.write(ObjectKind::Key, &name, b"first").unwrap();
    b.write(ObjectKind::Key, &name, b"second").unwrap();
    assert_eq!(b.read(ObjectKind::Key, &name).unwrap(), b"first");
    b.delete(ObjectKind::Key, &name).unwrap();
    // A raw conditional PUT replaces. On the backends' runtime: OpenDAL's
    // connection pool is process-wide, and other tests run beside this one.
    let op = opendal::Operator::new(
        opendal::services::S3::default()
            .endpoint(&g.endpoint())
            .bucket(g.bucket())
            .region(REGION)
            .access_key_id(g.key_id())
            .secret_access_key(g.secret_key())
            .root("/if-none-match"),
    )
    .unwrap()
    .finish();
    let replaced = b.runtime().block_on(async {
        let put = |data: &'static [u8]| op.write_with("object", data).if_not_exists(true);
        put(b"first").await.unwrap();
        let second = put(b"second").await;
        let now = op.read("object").await.unwrap().to_vec();
        op.delete("object").await.unwrap();
        second.is_ok() && now == b"second"
    });
    assert!(
        replaced,
        "Garage honours If-None-Match now: update SPEC §11.3"
    );
}

/// Listings span pages: S3 answers at most 1,000 names per request, so a
/// repository with more index files or packs than that must be listed page
/// by page (and packs across their fan-out directories), with nothing lost
/// or repeated.
#[test]
fn listings_span_pages() {
    let g = Garage::shared();
    let b = backend(&g.location("pages"), &options(g));
    let names = |n: usize, tag: u8| -> Vec<String> {
        (0..n)
            .map(|i| {
                let mut id = [tag; 32];
                id[..8].copy_from_slice(&(i as u64).to_le_bytes());
                // Spread over the fan-out: the first byte varies.
                id[0] = (i % 256) as u8;
                hex::encode(id)
            })
            .collect()
    };
    let index = names(1_050, 0x11);
    let packs = names(1_030, 0x22);
    std::thread::scope(|s| {
        for (kind, all) in [(ObjectKind::Index, &index), (ObjectKind::Pack, &packs)] {
            for part in all.chunks(130) {
                let b = &b;
                s.spawn(move || {
                    for name in part {
                        b.write(kind, name, name.as_bytes()).unwrap();
                    }
                });
            }
        }
    });
    for (kind, all) in [(ObjectKind::Index, &index), (ObjectKind::Pack, &packs)] {
        let mut listed: Vec<String> = b.list(kind).unwrap().into_iter().map(|o| o.name).collect();
        listed.sort();
        let mut want = all.clone();
        want.sort();
        assert_eq!(listed.len(), want.len(), "{kind}");
        assert_eq!(listed, want, "{kind}");
    }
}

/// `requests` are HTTP requests (SPEC §11.2): a read-ahead hit costs none,
/// a content-addressed object or a lock is one `PUT` (no `HEAD` before
/// it), a key file a `HEAD` and a `PUT`, a planned span one ranged `GET`
/// and no `HEAD`, a delete a `HEAD` and a `DELETE` (a lock's a `DELETE`).
#[test]
fn requests_are_counted_as_they_go_over_the_wire() {
    let g = Garage::shared();
    let b = backend(&g.location("wire-count"), &options(g));
    let count = |f: &dyn Fn()| -> RequestStats {
        let before = b.wire_requests().expect("S3 counts its own requests");
        f();
        b.wire_requests().unwrap().since(&before)
    };
    let name = "ab".repeat(32);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 239) as u8).collect();

    let s = count(&|| b.write(ObjectKind::Pack, &name, &data).unwrap());
    assert_eq!((s.write, s.stat, s.total()), (1, 0, 1), "{s:?}");
    assert_eq!(s.bytes_sent, data.len() as u64, "{s:?}");
    // Rewriting a content-addressed name is harmless and costs one PUT.
    let s = count(&|| b.write(ObjectKind::Pack, &name, &data).unwrap());
    assert_eq!(s.total(), 1, "{s:?}");
    let s = count(&|| b.write(ObjectKind::Key, &name, b"key").unwrap());
    assert_eq!((s.write, s.stat, s.total()), (1, 1, 2), "{s:?}");
    // A lock's name is random: one PUT, and its deletion one DELETE (a
    // missing lock is not an error).
    let lock = "backup-0123456789abcdef-1";
    let s = count(&|| {
        b.write(ObjectKind::Lock, lock, b"hb").unwrap();
        b.delete(ObjectKind::Lock, lock).unwrap();
        b.delete(ObjectKind::Lock, lock).unwrap();
    });
    assert_eq!((s.write, s.delete, s.total()), (1, 2, 3), "{s:?}");
    assert!(b.list(ObjectKind::Lock).unwrap().is_empty());

    // Ten blob reads through one window: a HEAD for the size, one GET.
    let s = count(&|| {
        for i in 0..10u64 {
            let got = b
                .read_range(ObjectKind::Pack, &name, i * 1000, 1000)
                .unwrap();
            assert_eq!(got, &data[i as usize * 1000..][..1000]);
        }
    });
    assert_eq!((s.read_range, s.stat, s.total()), (1, 1, 2), "{s:?}");
    assert_eq!(s.bytes_received, data.len() as u64, "{s:?}");
    // A planned span: exactly its bytes, one GET.
    let s = count(&|| {
        let mut buf = Vec::new();
        b.read_span_into(ObjectKind::Pack, &name, 5000, 70_000, &mut buf)
            .unwrap();
        assert_eq!(buf, &data[5000..75_000]);
    });
    assert_eq!((s.read_range, s.total()), (1, 1), "{s:?}");
    assert_eq!(s.bytes_received, 70_000, "{s:?}");
    let s = count(&|| {
        b.delete(ObjectKind::Pack, &name).unwrap();
        b.delete(ObjectKind::Key, &name).unwrap();
    });
    assert_eq!((s.stat, s.delete, s.total()), (2, 2, 4), "{s:?}");
}

/// A repository on S3 reports those HTTP requests, not its calls on the
/// backend: walking a snapshot of 30 directories loads 31 trees, which one
/// window of their pack serves.
#[test]
fn a_repository_on_s3_reports_http_requests() {
    let g = Garage::shared();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    for i in 0..30 {
        let dir = src.join(format!("d{i:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), format!("file {i}")).unwrap();
    }
    let loc = Location::parse(&g.location("wire-repo")).unwrap();
    let opts = options(g);
    let repo = Repository::init(
        loc.create(&opts).unwrap(),
        cairn_testkit::PASSWORD,
        cairn_testkit::repo::init_options(),
    )
    .unwrap();
    repo.backup().path(&src).run().unwrap();
    drop(repo);

    let repo = Repository::open(
        loc.open(&opts).unwrap(),
        cairn_testkit::PASSWORD,
        OpenOptions::default(),
    )
    .unwrap();
    let snap = repo.snapshots().unwrap().pop().unwrap();
    let before = repo.request_stats();
    let mut dirs = 0;
    repo.walk(&snap.snapshot.tree, &mut |_, n| {
        dirs += usize::from(n.kind == repo_core::NodeKind::Dir);
        Ok(true)
    })
    .unwrap();
    assert!(dirs >= 30, "{dirs}");
    let s = repo.request_stats().since(&before);
    // The walk reads parents before children, which were stored first:
    // a few windows, not one GET per tree (31 backend calls).
    assert!(
        s.read_range * 3 <= dirs as u64 && s.stat <= 2,
        "the trees' windows, not one request per tree: {s:?}"
    );
}

/// A walk over more than one page (SPEC §11.2): every key of the kinds
/// asked, none of the others, in the pages the range needs (two for 1,107
/// keys here, where listing each kind costs four), by Garage's log and by
/// the backend's own count.
#[test]
fn a_walk_lists_kinds_across_pages_in_as_few_requests_as_the_range_needs() {
    let g = Garage::shared();
    let prefix = "walks/pages";
    let b = backend(&g.location(prefix), &options(g));
    let name = |i: usize| format!("{i:064x}");
    std::thread::scope(|s| {
        for t in 0..8 {
            let b = &b;
            s.spawn(move || {
                for i in (t..1100).step_by(8) {
                    b.write(ObjectKind::Index, &name(i), b"i").unwrap();
                }
            });
        }
    });
    for i in 0..3 {
        b.write(ObjectKind::Mark, &name(i), b"m").unwrap();
        b.write(ObjectKind::Wal, &name(i), b"w").unwrap();
    }
    for i in 0..2 {
        b.write(ObjectKind::Snapshot, &name(i), b"s").unwrap();
        b.write(ObjectKind::Lock, &name(i), b"").unwrap();
        b.write(ObjectKind::Pack, &name(i), b"p").unwrap();
    }
    b.write(ObjectKind::Key, &name(7), b"k").unwrap();
    b.write(ObjectKind::Verify, &name(7), b"v").unwrap();

    let kinds = [ObjectKind::Index, ObjectKind::Mark, ObjectKind::Snapshot];
    let listing = format!("GET /{}?", g.bucket());
    let listings = || {
        g.requests_under(0, g.bucket(), prefix)
            .iter()
            .filter(|r| r.starts_with(&listing))
            .count()
    };
    let (before, counted) = (listings(), b.wire_requests().unwrap().list);
    let got = b.list_many(&kinds).unwrap();
    assert_eq!(listings() - before, 2, "Garage's count of the walk's pages");
    assert_eq!(
        b.wire_requests().unwrap().list - counted,
        2,
        "the backend's"
    );
    let lens: Vec<usize> = got.iter().map(Vec::len).collect();
    assert_eq!(lens, [1100, 3, 2]);
    for (k, l) in kinds.iter().zip(&got) {
        assert_eq!(*l, b.list(*k).unwrap(), "{k}");
    }
    let before = listings();
    for k in kinds {
        b.list(k).unwrap();
    }
    assert_eq!(listings() - before, 4, "listing each kind alone");
}
