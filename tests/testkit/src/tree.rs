//! Source trees as maps from relative path to contents: written before a
//! backup, read back after a restore, compared as values.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use repo_core::{Repository, SnapshotId};

/// Relative path → contents: a source tree, or what a snapshot restores.
pub type Files = BTreeMap<String, Vec<u8>>;

/// Replaces `dir` with exactly `files` (parents created as needed).
pub fn write_tree(dir: &Path, files: &Files) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    for (rel, data) in files {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
}

/// Every regular file below `dir`, by relative path (empty if `dir` is
/// missing, as after a restore that failed before creating it).
pub fn read_tree(dir: &Path) -> Files {
    if !dir.exists() {
        return Files::new();
    }
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap();
            (
                rel.to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Restores snapshot `id` (backed up from the absolute path `src`) into
/// `scratch/restore` and returns the files found below `src`'s place there.
pub fn restored(repo: &Repository, id: &SnapshotId, src: &Path, scratch: &Path) -> Files {
    let out = scratch.join("restore");
    let _ = fs::remove_dir_all(&out);
    let snap = repo.snapshot(id).unwrap();
    repo.restore(&snap).to(&out).run().unwrap();
    read_tree(&out.join(src.strip_prefix("/").unwrap()))
}
