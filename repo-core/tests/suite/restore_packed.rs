//! Issue 14, remote restore: restore reads pack by pack. Files that share
//! chunks (at other offsets, across packs) restore byte for byte, and no
//! byte of a pack is fetched twice: each data pack is read at most once.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use cairn_testkit::PASSWORD;
use cairn_testkit::backend::{Call, Hooked};
use cairn_testkit::repo::init_options;
use repo_core::{Backend, MemoryBackend, ObjectKind, OpenOptions, Repository};

use super::random_bytes;

/// Ranged pack reads, in order: pack, offset, length.
type Log = Arc<Mutex<Vec<(String, u64, u32)>>>;

/// Files whose chunks repeat across files, at other offsets, and within
/// one file; with 1 MiB packs they spread over several packs.
fn source(dir: &Path) -> (std::path::PathBuf, Vec<(&'static str, Vec<u8>)>) {
    let src = dir.join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    let a = random_bytes(3 << 20, 7);
    let mut b = a[(1 << 20) + 12_345..].to_vec();
    b.extend_from_slice(&a);
    let mut twice = a.clone();
    twice.extend_from_slice(&random_bytes(100_000, 8));
    twice.extend_from_slice(&a);
    let mut holes = vec![0u8; 2 << 20];
    holes.extend_from_slice(&a[..500_000]);
    holes.extend_from_slice(&[0u8; 70_000]);
    let files = vec![
        ("a.bin", a.clone()),
        ("sub/b.bin", b),
        ("sub/copy-of-a.bin", a),
        ("twice.bin", twice),
        ("holes.bin", holes),
        ("empty", Vec::new()),
    ];
    for (name, data) in &files {
        fs::write(src.join(name), data).unwrap();
    }
    (src, files)
}

fn logged(mem: &MemoryBackend, log: &Log, remote: bool) -> Hooked<MemoryBackend> {
    let l = Arc::clone(log);
    let h = Hooked::new(mem.clone()).after(move |c| {
        if let Call::ReadRange(ObjectKind::Pack, name, off, len) = *c {
            l.lock().unwrap().push((name.to_string(), off, len));
        }
    });
    if remote { h.remote() } else { h }
}

#[test]
fn restore_reads_each_pack_once_and_writes_shared_chunks_everywhere() {
    let d = tempfile::tempdir().unwrap();
    let (src, files) = source(d.path());
    let mem = MemoryBackend::new();
    Repository::init(mem.clone(), PASSWORD, init_options())
        .unwrap()
        .backup()
        .path(&src)
        .run()
        .unwrap();
    assert!(
        mem.list(ObjectKind::Pack).unwrap().len() >= 4,
        "several packs"
    );

    for remote in [true, false] {
        let log: Log = Arc::default();
        let repo =
            Repository::open(logged(&mem, &log, remote), PASSWORD, OpenOptions::default()).unwrap();
        let snap = repo.snapshots().unwrap().pop().unwrap();
        // The packs that hold trees: read while walking the snapshot.
        repo.walk(&snap.snapshot.tree, &mut |_, _| Ok(true))
            .unwrap();
        let tree_packs: HashSet<String> =
            log.lock().unwrap().drain(..).map(|(p, _, _)| p).collect();

        let out = d.path().join(format!("out-{remote}"));
        repo.restore(&snap).to(&out).run().unwrap();
        let got = out.join(src.strip_prefix("/").unwrap());
        for (name, data) in &files {
            let restored = fs::read(got.join(name)).unwrap();
            assert!(restored == *data, "{name} differs (remote: {remote})");
        }

        let mut per_pack: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
        for (p, off, len) in log.lock().unwrap().iter() {
            per_pack
                .entry(p.clone())
                .or_default()
                .push((*off, off + u64::from(*len)));
        }
        assert!(!per_pack.is_empty());
        for (pack, mut ranges) in per_pack {
            ranges.sort();
            for w in ranges.windows(2) {
                assert!(
                    w[0].1 <= w[1].0,
                    "bytes of pack {pack} read twice: {ranges:?} (remote: {remote})"
                );
            }
            if !tree_packs.contains(&pack) {
                assert_eq!(
                    ranges.len(),
                    1,
                    "data pack {pack} read once (remote: {remote}): {ranges:?}"
                );
            }
        }
    }
}

/// Issue 14, restore on object storage: a pack holding the chunks of more
/// files than the old fixed batch of 512 is still read once, also when the
/// restored snapshot skips blobs of it (deleted and changed files leave
/// gaps).
#[test]
fn a_restore_of_many_small_files_reads_each_data_pack_once() {
    // The batch is three quarters of the soft limit of open files; the CLI
    // raises it to the hard limit, as this test does.
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard.min(4096) {
        setrlimit(Resource::RLIMIT_NOFILE, hard.min(4096), hard).unwrap();
    }
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..900u64 {
        files.push((
            format!("d{:02}/f{i:04}", i % 9),
            random_bytes(2000 + (i as usize * 7) % 3000, i),
        ));
    }
    for (name, data) in &files {
        let p = src.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
    let mem = MemoryBackend::new();
    let repo = Repository::init(mem.clone(), PASSWORD, init_options()).unwrap();
    repo.backup().path(&src).run().unwrap();
    // The next day: every fifth file deleted, every seventh changed.
    for (i, (name, data)) in files.iter_mut().enumerate() {
        if i % 5 == 0 {
            fs::remove_file(src.join(&*name)).unwrap();
        } else if i % 7 == 0 {
            *data = random_bytes(data.len(), 10_000 + i as u64);
            fs::write(src.join(&*name), &*data).unwrap();
        }
    }
    files = files
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 5 != 0)
        .map(|(_, f)| f)
        .collect();
    assert!(files.len() > 512 + 100, "more files than one old batch");
    repo.backup().path(&src).run().unwrap();
    drop(repo);

    let log: Log = Arc::default();
    let repo =
        Repository::open(logged(&mem, &log, true), PASSWORD, OpenOptions::default()).unwrap();
    let snap = repo.snapshots().unwrap().pop().unwrap();
    repo.walk(&snap.snapshot.tree, &mut |_, _| Ok(true))
        .unwrap();
    let tree_packs: HashSet<String> = log.lock().unwrap().drain(..).map(|(p, _, _)| p).collect();
    let out = d.path().join("out");
    repo.restore(&snap).to(&out).run().unwrap();
    let got = out.join(src.strip_prefix("/").unwrap());
    for (name, data) in &files {
        assert!(fs::read(got.join(name)).unwrap() == *data, "{name} differs");
    }
    let mut reads: HashMap<String, u32> = HashMap::new();
    for (p, _, _) in log.lock().unwrap().iter() {
        if !tree_packs.contains(p) {
            *reads.entry(p.clone()).or_default() += 1;
        }
    }
    let data_packs = mem.list(ObjectKind::Pack).unwrap().len() - tree_packs.len();
    assert!(reads.len() >= 2 && reads.len() <= data_packs, "{reads:?}");
    assert!(
        reads.values().all(|&n| n == 1),
        "each data pack read once: {reads:?}"
    );
}
