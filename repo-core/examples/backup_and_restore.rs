//! Back up a directory, restore it elsewhere, and compare.
//!
//! Run with `cargo run -p repo-core --example backup_and_restore [DIR]`:
//! backs up `DIR` (default: this crate's `src`) into a repository in a
//! temporary directory, restores it, and checks every file came back.

use std::error::Error;
use std::path::{Path, PathBuf};

use repo_core::{InitOptions, KdfParams, LocalBackend, Repository};

fn main() -> Result<(), Box<dyn Error>> {
    let source = match std::env::args_os().nth(1) {
        Some(dir) => std::path::absolute(dir)?,
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
    };
    let work = tempfile::tempdir()?;

    // A new repository needs `LocalBackend::create`, which lays out its
    // directories. INSECURE_TEST makes opening instant: fine for a
    // throw-away repository, never for real data.
    let options = InitOptions {
        kdf: KdfParams::INSECURE_TEST,
        ..InitOptions::default()
    };
    let repo = Repository::init(
        LocalBackend::create(work.path().join("repo"))?,
        b"correct horse battery staple",
        options,
    )?;

    let outcome = repo.backup().path(&source).tag("example").run()?;
    for w in &outcome.warnings {
        eprintln!("warning: {w}");
    }
    let summary = &outcome.snapshot.snapshot.summary;
    println!(
        "snapshot {}: {} files, {} bytes read, {} bytes added",
        outcome.snapshot.id.short(),
        summary.total_files,
        summary.bytes_read,
        summary.bytes_added
    );

    // The restore recreates the source's absolute path below the target.
    let target = work.path().join("restored");
    let restored = repo.restore(&outcome.snapshot).to(&target).run()?;
    println!("restored {} files", restored.files);

    let copy = target.join(source.strip_prefix("/")?);
    for original in files(&source)? {
        let back = copy.join(original.strip_prefix(&source)?);
        assert_eq!(std::fs::read(&original)?, std::fs::read(&back)?);
    }
    println!("every file matches");
    Ok(())
}

/// The regular files below `dir`.
fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let t = entry.file_type()?;
        if t.is_dir() {
            out.extend(files(&entry.path())?);
        } else if t.is_file() {
            out.push(entry.path());
        }
    }
    Ok(out)
}

#[test]
fn runs() {
    main().unwrap();
}
