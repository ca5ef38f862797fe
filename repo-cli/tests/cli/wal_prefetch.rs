//! `cairn pg restore-wal --prefetch N` (SPEC §28.4.1): after serving a
//! segment, a detached worker fetches the next ones into
//! `pg_wal/cairn-prefetch/`; the next calls serve them from there only
//! after checking them, and `--clean-spool` stops the worker and removes it.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use super::harness::{assert_success, stderr};
use super::wal::Archiving;

/// A data directory as restore_command sees it: `global/pg_control` of the
/// archiving server and an empty `pg_wal/`.
fn data_dir(a: &Archiving) -> PathBuf {
    let d = a.env.path("restoring");
    std::fs::create_dir_all(d.join("global")).unwrap();
    std::fs::create_dir_all(d.join("pg_wal")).unwrap();
    std::fs::copy(
        a.pg.data_dir().join("global/pg_control"),
        d.join("global/pg_control"),
    )
    .unwrap();
    d
}

/// `cairn [--json] pg restore-wal ARGS` run in `dir`, as PostgreSQL does.
fn restore_wal(a: &Archiving, dir: &Path, args: &[&str]) -> Output {
    a.env
        .cmd()
        .arg("--json")
        .args(["pg", "restore-wal"])
        .args(args)
        .current_dir(dir)
        .env_remove("PGDATA")
        .output()
        .expect("run cairn")
}

/// Restores `seg` with `--prefetch 3`; returns where it came from and
/// checks the content is what PostgreSQL archived.
fn serve(a: &Archiving, dir: &Path, seg: &str) -> String {
    let out = restore_wal(a, dir, &["--prefetch", "3", seg, "pg_wal/RECOVERYXLOG"]);
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(v["file"], seg, "{v}");
    assert_eq!(
        std::fs::read(dir.join("pg_wal/RECOVERYXLOG")).unwrap(),
        std::fs::read(a.side.join(seg)).unwrap(),
        "{seg}"
    );
    v["source"].as_str().unwrap().to_string()
}

/// The spooled copy of `seg`, waiting (up to 5 minutes) for the worker.
fn spooled(dir: &Path, seg: &str) -> PathBuf {
    let spool = dir.join("pg_wal/cairn-prefetch");
    let t = Instant::now();
    loop {
        let found = std::fs::read_dir(&spool).ok().and_then(|rd| {
            rd.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
                let n = p.file_name().unwrap().to_str().unwrap();
                n.len() == 24 + 1 + 64 && n.starts_with(seg)
            })
        });
        if let Some(p) = found {
            return p;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "{seg} never reached the spool: {:?}",
            std::fs::read_dir(&spool).map(|rd| rd.count())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn prefetched_segments_are_served_from_the_spool_only_when_intact() {
    let a = Archiving::start(false);
    // pgbench -i at scale 5 alone writes more than 5 segments.
    a.workload("5", "5");
    let segs: Vec<String> = a.archived().into_iter().filter(|n| n.len() == 24).collect();
    assert!(segs.len() >= 5, "{segs:?}");
    let dir = data_dir(&a);
    let spool = dir.join("pg_wal/cairn-prefetch");

    // Without --prefetch: fetched directly, no spool, no worker.
    let out = restore_wal(&a, &dir, &[&segs[0], "pg_wal/RECOVERYXLOG"]);
    assert_success(&out);
    assert!(!spool.exists(), "a spool without --prefetch");

    // The first is fetched; the next three reach the spool before they are
    // asked for (the spool is private to the server's user).
    assert_eq!(serve(&a, &dir, &segs[0]), "repository");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&spool).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for s in &segs[1..4] {
        spooled(&dir, s);
    }
    assert_eq!(serve(&a, &dir, &segs[1]), "spool");

    // A spooled copy whose content changed is not served: it is fetched
    // from the repository, with a warning.
    let p = spooled(&dir, &segs[2]);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[5_000_000] ^= 0x01;
    std::fs::write(&p, &bytes).unwrap();
    let out = restore_wal(
        &a,
        &dir,
        &["--prefetch", "3", &segs[2], "pg_wal/RECOVERYXLOG"],
    );
    assert_success(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"repository\""),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr(&out).contains("does not match its digest"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(dir.join("pg_wal/RECOVERYXLOG")).unwrap(),
        std::fs::read(a.side.join(&segs[2])).unwrap()
    );
    // Nor is a truncated one.
    let p = spooled(&dir, &segs[3]);
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(1 << 20).unwrap();
    drop(f);
    assert_eq!(serve(&a, &dir, &segs[3]), "repository");

    // A segment that is not archived: exit 1 and nothing printed, as
    // without read-ahead.
    let missing = "0000000100000000000000F0";
    let out = restore_wal(
        &a,
        &dir,
        &["--prefetch", "3", missing, "pg_wal/RECOVERYXLOG"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{}",
        stderr(&out)
    );

    // recovery_end_command: the worker stops, the spool is gone.
    let out = restore_wal(&a, &dir, &["--clean-spool"]);
    assert_success(&out);
    assert!(!spool.exists(), "spool left behind");
    // Served again later (a new recovery): a new spool and worker.
    assert_eq!(serve(&a, &dir, &segs[4]), "repository");
    assert_success(&restore_wal(&a, &dir, &["--clean-spool"]));
    assert!(!spool.exists(), "spool left behind");
}
