//! Store a stream (say, a database dump) and read it back through
//! `impl Read`, without restoring it to disk.
//!
//! Run with `cargo run -p repo-core --example read_file`.

use std::error::Error;
use std::io::{self, Read};

use repo_core::{InitOptions, KdfParams, MemoryBackend, Repository, SnapshotFilter};

fn main() -> Result<(), Box<dyn Error>> {
    // Any `Backend` works; this one keeps the repository in memory.
    let options = InitOptions {
        kdf: KdfParams::INSECURE_TEST,
        ..InitOptions::default()
    };
    let repo = Repository::init(MemoryBackend::new(), b"secret", options)?;

    // A stream of several megabytes, stored under a name of our choosing.
    let dump: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("INSERT INTO t VALUES ({i});\n").into_bytes())
        .collect();
    repo.backup()
        .stream("postgres/main.sql", &dump[..])
        .tag("pg")
        .run()?;

    // Find it again: the newest snapshot tagged `pg`.
    let filter = SnapshotFilter {
        tags: vec!["pg".into()],
        ..SnapshotFilter::default()
    };
    let snap = repo.find_snapshot("latest", &filter)?;

    // Stream it: chunks are fetched and verified one at a time, so memory
    // stays bounded however large the file. Here we just count lines.
    let reader = repo.open_file(&snap, "postgres/main.sql")?;
    println!("{} bytes stored", reader.size());
    let lines = count_lines(reader)?;
    println!("{lines} lines read back");
    assert_eq!(lines, 200_000);
    Ok(())
}

fn count_lines(mut r: impl Read) -> io::Result<usize> {
    let mut buf = [0u8; 64 * 1024];
    let mut lines = 0;
    loop {
        match r.read(&mut buf)? {
            0 => return Ok(lines),
            n => lines += buf[..n].iter().filter(|&&b| b == b'\n').count(),
        }
    }
}

#[test]
fn runs() {
    main().unwrap();
}
