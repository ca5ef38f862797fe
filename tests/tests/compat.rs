//! Old format versions stay readable (SPEC §19): a tarred repository of each
//! earlier format version, `tests/fixtures/repo-v<N>.tar`, is opened by the
//! current code, checked reading every byte, and every snapshot restored
//! and compared with the manifest next to it (`repo-v<N>.manifest`: file
//! kinds, sizes and BLAKE3 hashes, symlink targets).
//!
//! The fixtures are made once, by the build that writes that version, and
//! then never regenerated: a new build must read what the old one wrote.
//! `CAIRN_WRITE_FIXTURES=1 cargo test -p cairn-tests --test compat -- --ignored`
//! writes them; run it only when adding a new version's fixture (then commit
//! the files and add the version to [`VERSIONS`]). Version 1 was written by
//! the version-2 build with `InitOptions { dictionary: false }`, which
//! writes the version-1 format byte for byte (SPEC §19).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use cairn_testkit::WEAK_KDF;
use cairn_testkit::repo::check_all;
use cairn_testkit::rng::{random_bytes, text_lines};
use repo_core::unstable::RepositoryInternals;
use repo_core::{InitOptions, LocalBackend, ObjectKind, OpenOptions, Repository};

/// Format versions with a fixture. Every version a build can read has one.
const VERSIONS: &[u32] = &[1, 2, 3, 4, 5];

/// The fixtures' password (their keys use [`WEAK_KDF`]).
const PASSWORD: &[u8] = b"cairn fixture";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// What a restored tree holds, by path relative to the backed-up root.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    File { size: u64, blake3: String },
    Symlink(String),
}

/// Every entry below `root`, sorted by path.
fn scan(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_str().unwrap();
        let entry = if e.file_type().is_symlink() {
            let target = fs::read_link(e.path()).unwrap();
            Entry::Symlink(target.to_str().unwrap().to_string())
        } else if e.file_type().is_dir() {
            Entry::Dir
        } else {
            let data = fs::read(e.path()).unwrap();
            Entry::File {
                size: data.len() as u64,
                blake3: blake3::hash(&data).to_hex().to_string(),
            }
        };
        out.insert(rel.to_string(), entry);
    }
    out
}

/// Snapshot id (hex) → its restored entries.
type Manifest = BTreeMap<String, BTreeMap<String, Entry>>;

/// One line per snapshot (`snapshot <id>`), then one per entry:
/// `dir <path>`, `file <size> <blake3> <path>`, `symlink <target> <path>`.
fn render(m: &Manifest) -> String {
    let mut s = String::new();
    for (id, entries) in m {
        writeln!(s, "snapshot {id}").unwrap();
        for (path, e) in entries {
            match e {
                Entry::Dir => writeln!(s, "dir {path}"),
                Entry::File { size, blake3 } => writeln!(s, "file {size} {blake3} {path}"),
                Entry::Symlink(t) => writeln!(s, "symlink {t} {path}"),
            }
            .unwrap();
        }
    }
    s
}

fn parse(text: &str) -> Manifest {
    let mut m = Manifest::new();
    let mut current = None;
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let mut w = line.splitn(2, ' ');
        let (kind, rest) = (w.next().unwrap(), w.next().unwrap_or(""));
        if kind == "snapshot" {
            current = Some(rest.to_string());
            m.insert(rest.to_string(), BTreeMap::new());
            continue;
        }
        let entries = m
            .get_mut(current.as_ref().expect("entry before snapshot"))
            .unwrap();
        let (path, entry) = match kind {
            "dir" => (rest.to_string(), Entry::Dir),
            "file" => {
                let f: Vec<&str> = rest.splitn(3, ' ').collect();
                let e = Entry::File {
                    size: f[0].parse().unwrap(),
                    blake3: f[1].to_string(),
                };
                (f[2].to_string(), e)
            }
            "symlink" => {
                let (t, p) = rest.split_once(' ').unwrap();
                (p.to_string(), Entry::Symlink(t.to_string()))
            }
            other => panic!("unknown manifest line kind {other:?}"),
        };
        entries.insert(path, entry);
    }
    m
}

/// Restores every snapshot of `repo` below `scratch` and describes them.
fn restore_all(repo: &Repository, scratch: &Path) -> Manifest {
    let mut m = Manifest::new();
    for snap in repo.snapshots().unwrap() {
        let out = scratch.join(snap.id.to_hex());
        repo.restore(&snap).to(&out).run().unwrap();
        let src = std::str::from_utf8(&snap.snapshot.paths[0]).unwrap();
        let root = out.join(src.trim_start_matches('/'));
        m.insert(snap.id.to_hex(), scan(&root));
    }
    m
}

fn unpack(version: u32, into: &Path) -> PathBuf {
    let tar = fixtures().join(format!("repo-v{version}.tar"));
    let file = fs::File::open(&tar).unwrap_or_else(|e| panic!("{}: {e}", tar.display()));
    tar::Archive::new(file).unpack(into).unwrap();
    into.join("repo")
}

fn opens_checks_and_restores(version: u32) {
    let d = tempfile::tempdir().unwrap();
    let root = unpack(version, d.path());
    let repo = Repository::open(LocalBackend::open(&root), PASSWORD, OpenOptions::default())
        .unwrap_or_else(|e| panic!("version {version} fixture does not open: {e}"));
    assert_eq!(
        RepositoryInternals::config(&repo).version,
        repo_version(version)
    );

    let report = check_all(&repo);
    assert!(
        report.is_ok() && report.warnings.is_empty(),
        "version {version} fixture: check found problems:\n{report}"
    );
    // What the fixture is meant to cover is still in it.
    let dicts = repo.backend().list(ObjectKind::Dict).unwrap().len();
    assert_eq!(dicts > 0, version >= 2, "{dicts} dictionaries");
    let mut most_chunks = 0;
    for snap in repo.snapshots().unwrap() {
        repo.walk(&snap.snapshot.tree, &mut |_, node| {
            most_chunks = most_chunks.max(node.content.len());
            Ok(true)
        })
        .unwrap();
    }
    assert!(most_chunks >= 3, "no file of several chunks: {most_chunks}");
    // Version 3: shared content keys, and a copied snapshot naming its original.
    let copies = repo
        .snapshots()
        .unwrap()
        .iter()
        .filter(|s| s.snapshot.original.is_some())
        .count();
    assert_eq!(copies > 0, version >= 3, "{copies} copied snapshots");
    assert_eq!(
        RepositoryInternals::config(&repo).content_keys.is_some(),
        version >= 3
    );

    // Version 5: packs and index files recording delta references.
    let v5_packs = repo
        .backend()
        .list(ObjectKind::Pack)
        .unwrap()
        .iter()
        .filter(|o| {
            let head = repo
                .backend()
                .read_range(ObjectKind::Pack, &o.name, 8, 4)
                .unwrap();
            head == 5u32.to_le_bytes()
        })
        .count();
    assert_eq!(v5_packs > 0, version >= 5, "{v5_packs} version-5 packs");

    let text = fs::read_to_string(fixtures().join(format!("repo-v{version}.manifest"))).unwrap();
    let want = parse(&text);
    assert!(want.len() >= 2, "the manifest lists too few snapshots");
    let got = restore_all(&repo, &d.path().join("restore"));
    assert_eq!(got, want, "version {version} fixture restores differently");

    // The current build keeps writing to it without changing its version.
    let src = d.path().join("new");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), random_bytes(10_000, 9)).unwrap();
    repo.backup().path(&src).run().unwrap();
    drop(repo);
    let repo =
        Repository::open(LocalBackend::open(&root), PASSWORD, OpenOptions::default()).unwrap();
    assert_eq!(
        RepositoryInternals::config(&repo).version,
        repo_version(version)
    );
    let report = check_all(&repo);
    assert!(report.is_ok(), "after a new backup:\n{report}");
}

#[test]
fn a_version_1_repository_opens_checks_and_restores() {
    opens_checks_and_restores(1);
}

#[test]
fn a_version_2_repository_opens_checks_and_restores() {
    opens_checks_and_restores(2);
}

#[test]
fn a_version_3_repository_opens_checks_and_restores() {
    opens_checks_and_restores(3);
}

#[test]
fn a_version_4_repository_opens_checks_and_restores() {
    opens_checks_and_restores(4);
}

#[test]
fn a_version_5_repository_opens_checks_and_restores() {
    opens_checks_and_restores(5);
}

/// The config version of the fixture of file version `version`: version 5
/// is a file version only (SPEC §1).
fn repo_version(version: u32) -> u32 {
    version.min(repo_core::unstable::format::REPOSITORY_VERSION)
}

/// References for a stream's chunks: the previous generation's chunk at
/// the same position (SPEC §6.6), as `pg basebackup` finds them.
struct SamePosition(
    Vec<(repo_core::BlobId, std::sync::Arc<Vec<u8>>)>,
    std::sync::Mutex<usize>,
);

impl repo_core::DeltaSource for SamePosition {
    fn references(&self, _: u64, _: &[u8]) -> Vec<(repo_core::BlobId, std::sync::Arc<Vec<u8>>)> {
        let mut i = self.1.lock().unwrap();
        let r = self.0.get(*i).cloned().into_iter().collect();
        *i += 1;
        r
    }
}

#[test]
fn every_readable_version_has_a_fixture() {
    let min = repo_core::unstable::format::MIN_READ_VERSION;
    let max = repo_core::unstable::format::FORMAT_VERSION;
    let want: Vec<u32> = (min..=max).collect();
    assert_eq!(VERSIONS, want, "add a fixture for each readable version");
    for v in VERSIONS {
        assert!(fixtures().join(format!("repo-v{v}.tar")).is_file());
        assert!(fixtures().join(format!("repo-v{v}.manifest")).is_file());
    }
}

/// Small configuration-like files, similar to each other, so that a
/// version-2 repository trains a compression dictionary on them.
fn config_files(dir: &Path, n: usize) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let mut s = String::new();
        for j in 0..(2 + i % 5) {
            writeln!(
                s,
                "[section_{j}]\nlisten = 10.{}.{}.1\nmax_connections = {}\nlog = /var/log/svc-{}/{j}.log",
                i % 256,
                (i * 7 + j) % 256,
                100 + (i * j) % 900,
                i % 13
            )
            .unwrap();
        }
        fs::write(dir.join(format!("svc-{i:03}.conf")), s).unwrap();
    }
}

/// Writes the fixture of the build's format version: two snapshots of a
/// small tree (an empty file, a symlink, a file of several chunks, a
/// subdirectory; from version 2 enough small files to train a dictionary;
/// in version 3 content keys shared with another repository, from which
/// the first snapshot is copied; version 4 is version 3 with a key rotation
/// between the snapshots, so objects of epochs 0 and 1).
fn write_fixture(version: u32) {
    let d = tempfile::tempdir().unwrap();
    let repo_dir = d.path().join("repo");
    let opts = InitOptions {
        kdf: WEAK_KDF,
        pack_size: 1 << 20,
        dictionary: version >= 2,
        ..Default::default()
    };
    // Version 3: the first snapshot is made in this one and copied.
    let origin = (version >= 3).then(|| {
        let b = LocalBackend::create(d.path().join("origin")).unwrap();
        Repository::init(b, PASSWORD, opts.clone()).unwrap()
    });
    let opts = InitOptions {
        content: origin.as_ref().map(Repository::content_params),
        ..opts
    };
    let mut repo =
        Repository::init(LocalBackend::create(&repo_dir).unwrap(), PASSWORD, opts).unwrap();
    // Version 4 is a version-3 repository rotated between its snapshots;
    // version 5 one that also holds a delta-compressed stream.
    assert_eq!(RepositoryInternals::config(&repo).version, version.min(3));

    let src = d.path().join("src");
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    fs::write(src.join("hello.txt"), b"hello, old format\n").unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    symlink("hello.txt", src.join("link")).unwrap();
    // Tiny chunks (4/16/128 KiB): about five chunks, compressible.
    fs::write(src.join("sub/lines.sql"), text_lines(1200)).unwrap();
    fs::write(src.join("sub/deeper/random.bin"), random_bytes(3000, 1)).unwrap();
    let time = 1_700_000_000_000_000_000;
    origin
        .as_ref()
        .unwrap_or(&repo)
        .backup()
        .path(&src)
        .profile("tiny")
        .host("fixture")
        .tag("first")
        .time_ns(time)
        .run()
        .unwrap();
    if let Some(o) = &origin {
        assert_eq!(repo.copy_from(o).run().unwrap().copied.len(), 1);
    }
    if version >= 4 {
        assert_eq!(repo.rotate_key(PASSWORD).unwrap().epoch, 1);
        assert_eq!(RepositoryInternals::config(&repo).version, 4);
    }

    fs::write(src.join("hello.txt"), b"hello again\n").unwrap();
    fs::remove_file(src.join("sub/deeper/random.bin")).unwrap();
    config_files(&src.join("etc"), if version >= 2 { 80 } else { 5 });
    repo.backup()
        .path(&src)
        .profile("tiny")
        .host("fixture")
        .tag("second")
        .time_ns(time + 86_400_000_000_000)
        .run()
        .unwrap();
    if version >= 5 {
        // Two generations of a stream, the second delta-compressed against
        // the first: its packs and index file record the references.
        let first = text_lines(3000);
        let mut second = first.clone();
        for i in (0..second.len()).step_by(997) {
            second[i] = b'#';
        }
        let s1 = repo
            .backup()
            .stream("db/base.tar", &first[..])
            .profile("tiny")
            .host("fixture")
            .time_ns(time + 2 * 86_400_000_000_000)
            .run()
            .unwrap();
        let node = repo
            .find_node(&s1.snapshot.snapshot.tree, "db/base.tar")
            .unwrap();
        let chunks = node
            .content
            .iter()
            .map(|id| (*id, std::sync::Arc::new(repo.read_blob(id).unwrap())))
            .collect();
        let src = SamePosition(chunks, std::sync::Mutex::new(0));
        repo.backup()
            .stream("db/base.tar", &second[..])
            .profile("tiny")
            .delta_source(&src)
            .host("fixture")
            .time_ns(time + 3 * 86_400_000_000_000)
            .run()
            .unwrap();
    }
    let report = check_all(&repo);
    assert!(report.is_ok() && report.warnings.is_empty(), "{report}");
    let manifest = restore_all(&repo, &d.path().join("restore"));
    drop(repo);

    // Files only, in name order, with fixed metadata: the empty fan-out
    // directories of `data/` are left out (an older layout every build
    // must accept) and the archive is reproducible from the same files.
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(&repo_dir)
        .sort_by_file_name()
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_path_buf())
        .collect();
    files.sort();
    let tar_path = fixtures().join(format!("repo-v{version}.tar"));
    fs::create_dir_all(fixtures()).unwrap();
    let mut b = tar::Builder::new(fs::File::create(&tar_path).unwrap());
    b.mode(tar::HeaderMode::Deterministic);
    for f in files {
        let name = Path::new("repo").join(f.strip_prefix(&repo_dir).unwrap());
        b.append_path_with_name(&f, name).unwrap();
    }
    b.finish().unwrap();
    let header = format!(
        "# cairn format version {version} fixture: repo-v{version}.tar, password \"cairn fixture\".\n\
         # Each snapshot's restored tree, relative to its backed-up path; written by\n\
         # CAIRN_WRITE_FIXTURES=1 cargo test -p cairn-tests --test compat -- --ignored\n"
    );
    fs::write(
        fixtures().join(format!("repo-v{version}.manifest")),
        header + &render(&manifest),
    )
    .unwrap();
}

/// Writes the fixture of the format version this build writes (and, for
/// version 2, the version-1 fixture too). Never overwrites one that exists.
#[test]
#[ignore = "writes tests/fixtures/ with CAIRN_WRITE_FIXTURES=1"]
fn write_fixtures() {
    if std::env::var_os("CAIRN_WRITE_FIXTURES").is_none_or(|v| v != "1") {
        return;
    }
    for &v in VERSIONS {
        if !fixtures().join(format!("repo-v{v}.tar")).exists() {
            write_fixture(v);
        }
    }
}

#[test]
fn the_manifest_format_round_trips() {
    let text = "snapshot ab\ndir d\nfile 3 cafe d/f x\nsymlink t l\n";
    let m = parse(text);
    assert_eq!(render(&m), text);
}
