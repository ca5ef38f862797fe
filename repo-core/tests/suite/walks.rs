//! Issue 14: a nothing-changed backup lists the storage in two walks
//! (SPEC §15): the index files, marks and snapshots after its heartbeat,
//! then the audit trail and the packs; nothing is listed alone. Counted
//! by the test kit's `Hooked` on local disk, which lists each kind of a
//! walk itself.

use std::fs;
use std::sync::{Arc, Mutex};

use cairn_testkit::PASSWORD;
use cairn_testkit::backend::{Call, Hooked};
use cairn_testkit::repo::init_options;
use repo_core::{AuditRecord, LocalBackend, ObjectKind, OpenOptions, ParentChoice, Repository};

use super::random_bytes;

/// A local repository whose writes (`write KIND`), listings (`list KIND`)
/// and walks (`walk KIND,KIND`) are logged; a kind's listing inside a
/// walk is part of the walk, not a listing alone.
fn logged(repo_dir: &std::path::Path, log: &Arc<Mutex<Vec<String>>>) -> Hooked<LocalBackend> {
    let log = Arc::clone(log);
    let walking: Mutex<Vec<ObjectKind>> = Mutex::new(Vec::new());
    Hooked::new(LocalBackend::open(repo_dir)).before(move |c| {
        let line = match *c {
            Call::Walk(kinds) => {
                *walking.lock().unwrap() = kinds.to_vec();
                let names: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
                format!("walk {}", names.join(","))
            }
            Call::List(k) => {
                let mut w = walking.lock().unwrap();
                match w.iter().position(|&x| x == k) {
                    Some(i) => {
                        w.remove(i);
                        return Ok(());
                    }
                    None => format!("list {k}"),
                }
            }
            Call::Write(k, ..) => format!("write {k}"),
            _ => return Ok(()),
        };
        log.lock().unwrap().push(line);
        Ok(())
    })
}

#[test]
fn a_nothing_changed_backup_lists_in_two_walks_and_anchors_from_the_second() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), random_bytes(100_000, 3)).unwrap();
    let repo_dir = d.path().join("repo");
    let cache = d.path().join("cache");
    let repo = Repository::init(
        LocalBackend::create(&repo_dir).unwrap(),
        PASSWORD,
        init_options(),
    )
    .unwrap();
    repo.backup().path(&src).run().unwrap();
    let log = repo.audit_log(None);
    let first = log
        .append(&log.heads().unwrap(), &AuditRecord::new("test"))
        .unwrap();

    let calls = Arc::new(Mutex::new(Vec::new()));
    let repo = Repository::open(
        logged(&repo_dir, &calls),
        PASSWORD,
        OpenOptions {
            cache_dir: Some(cache),
            defer_index: true,
            ..Default::default()
        },
    )
    .unwrap();
    let trail = repo.audit_log(None);
    repo.anchor_to(&trail);
    calls.lock().unwrap().clear();
    let out = repo.backup().path(&src).run().unwrap().snapshot;
    assert_eq!(out.snapshot.summary.files_unmodified, 1);
    assert_eq!(
        *calls.lock().unwrap(),
        [
            "write lock",
            "walk index,mark,snapshot",
            "walk audit record,pack",
            "write snapshot",
        ],
        "a listing alone, or a walk out of order"
    );
    // The heads came from the second walk: the snapshot anchors them, and
    // the command's record follows them without listing again.
    let anchor = out
        .snapshot
        .metadata
        .iter()
        .find(|(k, _)| k == repo_core::ANCHOR_KEY)
        .map(|(_, v)| v.clone());
    assert_eq!(anchor, Some(first.clone()));
    calls.lock().unwrap().clear();
    assert_eq!(trail.heads_once().unwrap().names(), [first]);
    assert!(
        calls.lock().unwrap().is_empty(),
        "{:?}",
        calls.lock().unwrap()
    );

    // Without a parent to find, the first walk leaves the snapshots out;
    // without a trail to anchor, the second is the packs alone.
    let repo = Repository::open(
        logged(&repo_dir, &calls),
        PASSWORD,
        OpenOptions {
            defer_index: true,
            ..Default::default()
        },
    )
    .unwrap();
    calls.lock().unwrap().clear();
    repo.backup()
        .parent(ParentChoice::None)
        .path(&src)
        .run()
        .unwrap();
    let got = calls.lock().unwrap().clone();
    let walks: Vec<&String> = got.iter().filter(|c| !c.starts_with("write")).collect();
    assert_eq!(walks, ["walk index,mark", "walk pack"]);
}
