//! Test repositories: created with [`WEAK_KDF`] and [`PASSWORD`], in a
//! directory or in memory, and checked with every byte read.

use std::path::Path;

use repo_core::{
    Backend, CheckOptions, CheckReport, Error, InitOptions, LocalBackend, MemoryBackend,
    ObjectKind, OpenOptions, ReadData, Repository,
};

use crate::{PASSWORD, WEAK_KDF};

/// Options for a test repository: [`WEAK_KDF`] and 1 MiB packs, so a few
/// megabytes of data spread over several packs.
pub fn init_options() -> InitOptions {
    InitOptions {
        kdf: WEAK_KDF,
        pack_size: 1 << 20,
        ..Default::default()
    }
}

/// A fresh local repository at `dir/repo`, password [`PASSWORD`].
pub fn init_repo(dir: &Path) -> Repository {
    let b = LocalBackend::create(dir.join("repo")).expect("create the repository directory");
    Repository::init(b, PASSWORD, init_options()).expect("init a test repository")
}

/// Opens `dir/repo` again: a new session with an empty in-memory cache.
pub fn open_repo(dir: &Path, pw: &[u8]) -> repo_core::Result<Repository> {
    Repository::open(
        LocalBackend::open(dir.join("repo")),
        pw,
        OpenOptions::default(),
    )
}

/// A new repository in memory, password [`PASSWORD`]; clones of the
/// returned backend share its storage.
pub fn init_memory() -> (MemoryBackend, Repository) {
    let b = MemoryBackend::new();
    let repo = Repository::init(b.clone(), PASSWORD, init_options()).expect("init in memory");
    (b, repo)
}

/// A deep copy of a memory backend (clones share storage; this does not).
pub fn fork(b: &MemoryBackend) -> MemoryBackend {
    let out = MemoryBackend::new();
    for kind in ObjectKind::ALL {
        for o in b.list(kind).unwrap() {
            out.write(kind, &o.name, &b.read(kind, &o.name).unwrap())
                .unwrap();
        }
    }
    out
}

/// Opens `b` (sharing its storage) with the first of `passwords` that
/// works; panics if none does.
pub fn open_any(b: &MemoryBackend, passwords: &[&[u8]]) -> Repository {
    for pw in passwords {
        match Repository::open(b.clone(), pw, OpenOptions::default()) {
            Ok(r) => return r,
            Err(Error::WrongPassword) => continue,
            Err(e) => panic!("reopen failed: {e}"),
        }
    }
    panic!("no password opens the repository any more")
}

/// `check` reading every pack (`--read-data`); panics if it cannot run.
pub fn check_all(repo: &Repository) -> CheckReport {
    let opts = CheckOptions {
        read_data: ReadData::All,
        ..Default::default()
    };
    repo.check(&opts)
        .run()
        .unwrap_or_else(|e| panic!("check could not run: {e}"))
}

/// `check --read-data` runs and finds no error; otherwise the report (or
/// why it could not run) as text. Warnings do not count.
pub fn check_clean(repo: &Repository) -> Result<(), String> {
    let opts = CheckOptions {
        read_data: ReadData::All,
        ..Default::default()
    };
    let r = repo
        .check(&opts)
        .run()
        .map_err(|e| format!("check failed to run: {e}"))?;
    if r.is_ok() {
        Ok(())
    } else {
        Err(r.to_string())
    }
}
