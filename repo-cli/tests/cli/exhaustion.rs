//! Resource exhaustion (issue 6): a directory of 100,000 empty files, a
//! huge sparse file, a tree 1,000 directories deep, files that grow, shrink
//! or vanish while a backup reads them, and unreadable files. Each backs up
//! and restores (or warns and exits 3 as documented), and the peak RSS of
//! every `cairn` process stays under [`RSS_LIMIT_KIB`]. `CAIRN_BIG_TESTS=1`
//! runs the large sizes (1,000,000 files, 50 GiB).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cairn_testkit::rng::random_bytes;

use super::harness::{Env, only_snapshot, write};
use super::trees::{assert_restores, read_tree};

/// The bound on any one process's peak resident set.
const RSS_LIMIT_KIB: u64 = 200 * 1024;

fn big() -> bool {
    std::env::var("CAIRN_BIG_TESTS").is_ok_and(|v| v == "1")
}

/// What a measured run did.
struct Measured {
    code: Option<i32>,
    max_rss_kib: u64,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to the end, sampling its peak RSS (`VmHWM` in
/// /proc/PID/status, a high-water mark, so a sample taken after the peak
/// sees it) every millisecond. wait4's `ru_maxrss` would be simpler but is
/// wrong here: exec carries the spawning process's high-water mark (this
/// test binary's, with every other test's buffers) into the child's.
fn run_measured(mut cmd: Command, dir: &Path) -> Measured {
    let out_path = dir.join("measured.stdout");
    let err_path = dir.join("measured.stderr");
    let mut child = cmd
        .stdout(fs::File::create(&out_path).expect("stdout file"))
        .stderr(fs::File::create(&err_path).expect("stderr file"))
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn cairn");
    let status_file = format!("/proc/{}/status", child.id());
    let mut max_rss_kib = 0;
    let status = loop {
        if let Ok(st) = fs::read_to_string(&status_file)
            && let Some(kib) = st
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            max_rss_kib = max_rss_kib.max(kib);
        }
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    assert!(max_rss_kib > 0, "no RSS sample of {cmd:?}");
    Measured {
        code: status.code(),
        max_rss_kib,
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// Runs `cairn ARGS`, asserts the exit code and the memory bound, and
/// returns the measurement.
fn measured(env: &Env, what: &str, args: &[&str], code: i32) -> Measured {
    let mut c = env.cmd();
    c.args(args);
    let m = run_measured(c, env.dir.path());
    assert_eq!(m.code, Some(code), "{what}: {}", m.stderr);
    assert!(
        m.max_rss_kib < RSS_LIMIT_KIB,
        "{what}: peak RSS {} KiB over {RSS_LIMIT_KIB} KiB",
        m.max_rss_kib
    );
    eprintln!("{what}: peak RSS {} MiB", m.max_rss_kib / 1024);
    m
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

#[test]
fn a_hundred_thousand_empty_files_back_up_and_restore_in_bounded_memory() {
    let env = Env::init();
    let n = if big() { 1_000_000 } else { 100_000 };
    let src = env.path("many");
    fs::create_dir_all(&src).expect("mkdir");
    for i in 0..n {
        fs::File::create(src.join(format!("{i:07}"))).expect("create");
    }
    let m = measured(
        &env,
        &format!("backup of {n} empty files"),
        &["--json", "backup", s(&src)],
        0,
    );
    let v: serde_json::Value = serde_json::from_str(&m.stdout).expect("json");
    let v = only_snapshot(&v);
    assert_eq!(v["total_files"], n, "{v}");
    let target = env.path("out");
    measured(
        &env,
        &format!("restore of {n} empty files"),
        &["restore", "latest", "--target", s(&target)],
        0,
    );
    let root = target.join(src.strip_prefix("/").expect("absolute"));
    let mut count = 0;
    for e in fs::read_dir(&root).expect("restored") {
        let e = e.expect("entry");
        assert_eq!(e.metadata().expect("md").len(), 0);
        count += 1;
    }
    assert_eq!(count, n);
}

#[test]
fn a_huge_sparse_file_backs_up_by_dedup_and_restores_sparse() {
    let env = Env::init();
    let size: u64 = if big() { 50 << 30 } else { 2 << 30 };
    let src = env.path("sparse");
    fs::create_dir_all(&src).expect("mkdir");
    let file = src.join("disk.img");
    let f = fs::File::create(&file).expect("create");
    f.set_len(size).expect("truncate");
    // A little data in the middle, so the file is not all one chunk.
    drop(f);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .expect("open");
        f.seek(SeekFrom::Start(size / 2)).expect("seek");
        f.write_all(&random_bytes(100_000, 7)).expect("write");
    }
    let m = measured(
        &env,
        &format!("backup of a {} GiB sparse file", size >> 30),
        &["--json", "backup", s(&src)],
        0,
    );
    let v: serde_json::Value = serde_json::from_str(&m.stdout).expect("json");
    let v = only_snapshot(&v);
    assert_eq!(v["total_bytes"], size, "{v}");
    // The zeros are stored once: a few MiB at most, not gigabytes.
    let stored = v["bytes_added_packed"].as_u64().expect("stored");
    assert!(
        stored < 4 << 20,
        "{stored} bytes stored for {size} mostly zero"
    );
    let target = env.path("out");
    measured(
        &env,
        "restore of the sparse file",
        &["restore", "latest", "--target", s(&target)],
        0,
    );
    let restored = target
        .join(src.strip_prefix("/").expect("absolute"))
        .join("disk.img");
    let md = fs::metadata(&restored).expect("restored");
    assert_eq!(md.len(), size);
    // st_blocks counts 512-byte units actually allocated: the holes stay holes.
    assert!(
        md.blocks() * 512 < 16 << 20,
        "restored file allocates {} bytes",
        md.blocks() * 512
    );
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::File::open(&restored).expect("open");
    f.seek(SeekFrom::Start(size / 2 - 4096)).expect("seek");
    let mut buf = vec![0u8; 4096 + 100_000 + 4096];
    f.read_exact(&mut buf).expect("read");
    assert!(buf[..4096].iter().all(|&b| b == 0));
    assert_eq!(&buf[4096..4096 + 100_000], &random_bytes(100_000, 7)[..]);
    assert!(buf[4096 + 100_000..].iter().all(|&b| b == 0));
}

#[test]
fn a_tree_a_thousand_directories_deep_backs_up_restores_and_lists() {
    let env = Env::init();
    let src = env.path("deep");
    // Two deep branches: the walk splits at the top, so both the thread
    // that starts it and a worker thread go all the way down.
    let mut bottoms = Vec::new();
    for branch in ["a", "b"] {
        let mut p = src.join(branch);
        for _ in 0..1000 {
            p.push("d");
        }
        fs::create_dir_all(&p).expect("mkdir -p");
        write(&p.join("bottom"), branch.as_bytes());
        bottoms.push(p.join("bottom"));
    }
    measured(
        &env,
        "backup of a 1000-deep tree",
        &["backup", "-q", s(&src)],
        0,
    );
    let id = env.snapshots()[0]["id"].as_str().expect("id").to_string();
    assert_restores(&env, &id, &src, &read_tree(&src));
    let m = measured(
        &env,
        "ls of a 1000-deep tree",
        &["ls", "latest", s(&src)],
        0,
    );
    for b in &bottoms {
        let b = b.display().to_string();
        assert!(m.stdout.lines().any(|l| l == b), "ls does not list {b}");
    }
    assert_eq!(m.stdout.lines().filter(|l| l.ends_with("/d")).count(), 2000);
    measured(
        &env,
        "check of a 1000-deep tree",
        &["check", "--read-data", "-q"],
        0,
    );
}

/// True once the backup announced itself (its heartbeat in `locks/`): from
/// then on it syncs the index and walks the source.
fn backup_started(env: &Env) -> bool {
    fs::read_dir(env.repo().join("locks")).is_ok_and(|mut d| {
        d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("backup-")))
    })
}

/// Backs up `src` while `meddle` changes it from another thread (it starts
/// once the backup has begun and stops when `done` says the backup ended).
/// Returns the exit code and standard error.
fn backup_while(
    env: &Env,
    src: &Path,
    meddle: impl FnOnce(&dyn Fn() -> bool) + Send,
) -> (Option<i32>, String) {
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut child = env
        .cmd()
        .args(["backup", s(src)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    std::thread::scope(|sc| {
        let reader = sc.spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
        let done = &done;
        let m = sc.spawn(move || {
            while !backup_started(env) && !done.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::yield_now();
            }
            meddle(&|| done.load(std::sync::atomic::Ordering::SeqCst));
        });
        let status = child.wait().expect("wait");
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        m.join().expect("meddler");
        (status.code(), reader.join().expect("stderr"))
    })
}

/// The node `path` of the latest snapshot, as `ls --json` prints it.
fn ls_node(env: &Env, path: &Path) -> serde_json::Value {
    let out = env.ok(["--json", "ls", "latest", s(path)]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
        .find(|v| v["path"] == s(path))
        .expect("the file is in the snapshot")
}

/// A file that grows, then one that shrinks, while the backup reads it: the
/// snapshot holds exactly the bytes read with the size read (a prefix of
/// the file, whatever the timing; for a shrinking file, past its final size
/// the kernel may hand out zeros), and a backup that overlapped the change
/// warns, naming the file, and exits 3.
#[test]
fn a_file_that_grows_or_shrinks_while_read_is_recorded_consistently_and_warned() {
    for grow in [true, false] {
        let mut observed = false;
        // Attempts only until a backup overlapped the change; each attempt
        // checks consistency whether or not it did.
        for attempt in 0..10 {
            let env = Env::init();
            let src = env.path("src");
            let file = src.join("log");
            let initial = random_bytes(if grow { 2 << 20 } else { 16 << 20 }, attempt);
            write(&file, &initial);
            let appended = random_bytes(if grow { 16 << 20 } else { 0 }, 99 + attempt);
            let (code, err) = backup_while(&env, &src, |done| {
                use std::io::Write;
                let f = fs::OpenOptions::new()
                    .append(true)
                    .open(&file)
                    .expect("open");
                let mut len = initial.len();
                if grow {
                    let mut f = f;
                    for block in appended.chunks(64 << 10) {
                        if done() {
                            break;
                        }
                        f.write_all(block).expect("append");
                    }
                } else {
                    while !done() && len > 1 << 20 {
                        len -= 1 << 20;
                        f.set_len(len as u64).expect("truncate");
                        // Paced: fifteen truncations in a row end before a
                        // quiet machine's backup has opened the file.
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                }
            });
            let full: Vec<u8> = if grow {
                let mut v = initial.clone();
                v.extend_from_slice(&appended);
                v
            } else {
                initial.clone()
            };
            let node = ls_node(&env, &file);
            let id = env.snapshots()[0]["id"].as_str().expect("id").to_string();
            let restored =
                fs::read(super::trees::restore(&env, &id, &src).join("log")).expect("restored");
            let n = restored.len();
            assert_eq!(node["size"], n as u64, "recorded size vs content");
            if grow {
                assert!(
                    restored[..] == full[..n],
                    "the snapshot is not a prefix of what was written ({n} bytes)"
                );
            } else {
                // Linux zeroes pages as it truncates them, and a read racing
                // with the truncation may copy those zeros: past the size the
                // file ended at, a byte read is the original or zero. Before
                // it, nothing was ever cut, so the bytes are exact.
                let last = fs::metadata(&file).expect("stat").len() as usize;
                assert!(
                    restored[..last.min(n)] == full[..last.min(n)],
                    "the snapshot differs from the file within its final {last} bytes"
                );
                let bad = (last.min(n)..n).find(|&i| restored[i] != full[i] && restored[i] != 0);
                assert_eq!(
                    bad, None,
                    "a byte past the final size is neither original nor zero"
                );
            }
            // A change during the read is warned about (as a size change,
            // or by the modification time when the size read matches).
            assert!(matches!(code, Some(0) | Some(3)), "{err}");
            if code == Some(3) {
                assert!(
                    err.lines().any(|l| l.contains("log")
                        && (l.contains("size changed while reading")
                            || l.contains("modified while reading"))),
                    "{err}"
                );
                observed = true;
                break;
            }
        }
        assert!(
            observed,
            "no backup overlapped the {} in 10 attempts",
            if grow { "growth" } else { "truncation" }
        );
    }
}

/// Files deleted while the backup walks the directory: each is either
/// recorded whole or skipped with a warning naming it; the backup never
/// fails (exit 0, or 3 when something was skipped).
#[test]
fn files_deleted_mid_backup_are_skipped_with_a_warning_never_a_failure() {
    let env = Env::init();
    let src = env.path("src");
    let n = 3000u64;
    for i in 0..n {
        write(
            &src.join(format!("f{i:04}")),
            format!("file {i}\n").as_bytes(),
        );
    }
    let (code, err) = backup_while(&env, &src, |done| {
        // From the end, so the walk (in name order) meets deleted names.
        for i in (0..n).rev() {
            if done() {
                break;
            }
            let _ = fs::remove_file(src.join(format!("f{i:04}")));
        }
    });
    assert!(matches!(code, Some(0) | Some(3)), "{code:?}: {err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(code == Some(3), !warnings.is_empty(), "{err}");
    let id = env.snapshots()[0]["id"].as_str().expect("id").to_string();
    let root = super::trees::restore(&env, &id, &src);
    let mut recorded = 0;
    for e in fs::read_dir(&root).expect("restored") {
        let e = e.expect("entry");
        let i: u64 = e.file_name().to_string_lossy()[1..].parse().expect("name");
        assert_eq!(
            fs::read(e.path()).expect("read"),
            format!("file {i}\n").into_bytes()
        );
        recorded += 1;
    }
    let skipped = warnings
        .iter()
        .filter(|w| w.contains("No such file"))
        .count();
    eprintln!(
        "deleted mid-backup: {recorded} of {n} files recorded, {skipped} skipped with a warning, exit {code:?}"
    );
}

/// `cairn` as an unprivileged user: `setpriv` to nobody when we are root
/// (root reads files whatever their mode), else as ourselves. `None` when
/// root cannot drop privileges here.
fn unprivileged(env: &Env) -> Option<impl Fn(&[&str]) -> Command> {
    let root = is_root();
    if root
        && !Command::new("setpriv")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        return None;
    }
    let repo: PathBuf = env.repo();
    let cache = env.path("cache");
    Some(move |args: &[&str]| {
        let mut c = if root {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                env!("CARGO_BIN_EXE_cairn"),
            ]);
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_cairn"))
        };
        for v in [
            "CAIRN_REPOSITORY",
            "CAIRN_PASSWORD_FILE",
            "CAIRN_PASSWORD_COMMAND",
            "CAIRN_CACHE_DIR",
        ] {
            c.env_remove(v);
        }
        c.env("CAIRN_PASSWORD", super::harness::PASSWORD)
            .arg("-r")
            .arg(&repo)
            .arg("--cache-dir")
            .arg(&cache)
            .args(args)
            .stdin(Stdio::null());
        c
    })
}

fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Unreadable files and directories (mode 000): warned, skipped, exit 3;
/// everything else is in the snapshot.
#[test]
fn unreadable_files_are_warned_skipped_and_exit_3() {
    let env = Env::empty();
    let Some(cairn) = unprivileged(&env) else {
        eprintln!("unreadable files: skipped, root cannot drop privileges here (no setpriv)");
        return;
    };
    // The unprivileged user owns the test directory (it writes the repository).
    if is_root() {
        std::os::unix::fs::chown(env.dir.path(), Some(65534), Some(65534)).expect("chown");
    }
    let run = |args: &[&str]| cairn(args).output().expect("run cairn");
    let init = run(&["init", "--kdf-memory", "64", "--kdf-iterations", "1"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let src = env.path("src");
    write(&src.join("readable"), b"fine\n");
    write(&src.join("locked"), b"secret\n");
    write(&src.join("closed/inner"), b"hidden\n");
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o000)).expect("chmod");
    fs::set_permissions(src.join("closed"), fs::Permissions::from_mode(0o000)).expect("chmod");
    for p in [env.dir.path(), src.as_path()] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let out = run(&["backup", s(&src)]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{err}");
    for name in ["locked", "closed"] {
        assert!(
            err.lines()
                .any(|l| l.contains(name) && l.contains("Permission denied")),
            "no warning names {name}: {err}"
        );
    }
    let ls = run(&["ls", "latest", s(&src)]);
    let listed = String::from_utf8_lossy(&ls.stdout).into_owned();
    assert!(listed.contains("/readable"), "{listed}");
    assert!(!listed.contains("/locked"), "{listed}");
    assert!(!listed.contains("/inner"), "{listed}");
    // Put the modes back so the temporary directory can be removed.
    fs::set_permissions(src.join("closed"), fs::Permissions::from_mode(0o755)).expect("chmod");
}
