//! The behaviour every [`Backend`] must show (SPEC §11), as one runnable
//! suite (feature `conformance`).
//!
//! A backend proves itself by calling [`run`] on a fresh, empty instance
//! from its tests; repo-core does so for [`LocalBackend`](super::LocalBackend),
//! [`MemoryBackend`](super::MemoryBackend) and the fault injector with no
//! faults planned (`repo-core/tests/suite/conformance.rs`). A backend in
//! another crate enables the feature in its dev-dependencies:
//!
//! ```toml
//! [dev-dependencies]
//! repo-core = { version = "0.1", features = ["conformance"] }
//! ```
//!
//! and calls the suite from a test on a fresh, empty instance:
//!
//! ```
//! use repo_core::{MemoryBackend, conformance};
//!
//! conformance::run(&MemoryBackend::new());
//! ```
//!
//! Each check panics with a message naming the backend's location and the
//! promise it broke; [`run`] calls them in order, and each may also be
//! called on its own (each leaves the backend as empty as it found it).
//! Object names are valid hex ids, so backends that shard by prefix (the
//! local one's `data/ab/…`) are exercised as in a repository.

use std::collections::BTreeSet;

use super::{Backend, BackendErrorKind, ObjectKind};

/// Runs every check on `b`, which must be empty: no object of any kind.
/// Leaves `b` empty again.
pub fn run(b: &dyn Backend) {
    starts_empty(b);
    write_then_read(b);
    ranges(b);
    never_overwrites(b);
    owned_writes(b);
    kinds_are_namespaces(b);
    list_and_stat(b);
    missing_objects_are_not_found(b);
    empty_objects(b);
    concurrent_writes(b);
    delete(b);
    wal_names(b);
    replace(b);
    list_many(b);
    starts_empty(b);
}

/// `replace` overwrites an object of a fixed name (the config), creates
/// a missing one, and leaves nothing else behind: one object listed,
/// holding the newest bytes (SPEC §11, §29.4).
pub fn replace(b: &dyn Backend) {
    let loc = b.location();
    b.replace(ObjectKind::Config, "config", b"first").unwrap();
    assert_eq!(
        b.read(ObjectKind::Config, "config").unwrap(),
        b"first",
        "{loc}: replace creates"
    );
    b.write(ObjectKind::Config, "config", b"write never overwrites")
        .unwrap();
    b.replace(ObjectKind::Config, "config", b"second, longer")
        .unwrap();
    assert_eq!(
        b.read(ObjectKind::Config, "config").unwrap(),
        b"second, longer",
        "{loc}: replace overwrites"
    );
    b.replace(ObjectKind::Config, "config", b"3").unwrap();
    assert_eq!(
        b.read(ObjectKind::Config, "config").unwrap(),
        b"3",
        "{loc}: no stale tail"
    );
    let listed = b.list(ObjectKind::Config).unwrap();
    assert_eq!(listed.len(), 1, "{loc}: {listed:?}");
    assert_eq!(listed[0].size, 1, "{loc}");
    let n = format!("{}-00000001", name(0x5e));
    b.replace(ObjectKind::Keyring, &n, &payload()).unwrap();
    b.replace(ObjectKind::Keyring, &n, b"grant").unwrap();
    assert_eq!(b.read(ObjectKind::Keyring, &n).unwrap(), b"grant", "{loc}");
    assert_eq!(b.list(ObjectKind::Keyring).unwrap().len(), 1, "{loc}");
    assert!(
        b.replace(ObjectKind::Keyring, "../x", b"no").is_err(),
        "{loc}: bad name"
    );
    clean(b);
}

/// Archived WAL names (SPEC §28): not hex ids, with `_`, in their own
/// namespace; a ranged read of the first bytes works on them.
pub fn wal_names(b: &dyn Backend) {
    let loc = b.location();
    let names = [
        "32df67b1cf257f10-000000010000000000000003",
        "32df67b1cf257f10-00000002_history",
        "32df67b1cf257f10-000000010000000000000003_partial",
        "32df67b1cf257f10-000000010000000000000002_00000028_backup",
    ];
    for n in names {
        b.write(ObjectKind::Wal, n, &payload()).unwrap();
    }
    let mut listed: Vec<String> = b
        .list(ObjectKind::Wal)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    listed.sort();
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want.sort();
    assert_eq!(listed, want, "{loc}");
    assert_eq!(
        b.read_range(ObjectKind::Wal, names[1], 0, 44).unwrap(),
        payload()[..44],
        "{loc}"
    );
    assert!(b.list(ObjectKind::Snapshot).unwrap().is_empty(), "{loc}");
    clean(b);
}

/// A hex name, like the content addresses a repository stores.
fn name(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

/// 5000 bytes with a pattern, so a misplaced range shows.
fn payload() -> Vec<u8> {
    (0..5000u32).map(|i| (i % 251) as u8).collect()
}

/// Clears what the checks wrote.
fn clean(b: &dyn Backend) {
    for kind in ObjectKind::ALL {
        for o in b.list(kind).unwrap() {
            b.delete(kind, &o.name).unwrap();
        }
    }
}

/// No kind lists any object.
pub fn starts_empty(b: &dyn Backend) {
    for kind in ObjectKind::ALL {
        let l = b.list(kind).unwrap();
        assert!(l.is_empty(), "{}: {kind} not empty: {l:?}", b.location());
    }
}

/// A written object reads back whole, into a fresh or a reused buffer, and
/// has its size.
pub fn write_then_read(b: &dyn Backend) {
    let loc = b.location();
    let (n, data) = (name(0xab), payload());
    b.write(ObjectKind::Pack, &n, &data).unwrap();
    assert_eq!(b.read(ObjectKind::Pack, &n).unwrap(), data, "{loc}: read");
    assert_eq!(b.size(ObjectKind::Pack, &n).unwrap(), 5000, "{loc}: size");
    // A reused buffer holds exactly the object afterwards, longer or shorter.
    let mut whole = vec![0xEE; 9000];
    b.read_into(ObjectKind::Pack, &n, &mut whole).unwrap();
    assert_eq!(whole, data, "{loc}: read_into a longer buffer");
    let mut short = vec![0xEE; 10];
    b.read_into(ObjectKind::Pack, &n, &mut short).unwrap();
    assert_eq!(short, data, "{loc}: read_into a shorter buffer");
    clean(b);
}

/// `read_range` returns exactly the range, or fails when the object is
/// shorter; so does `read_range_into`, whatever the buffer held.
pub fn ranges(b: &dyn Backend) {
    let loc = b.location();
    let (n, data) = (name(0xab), payload());
    b.write(ObjectKind::Pack, &n, &data).unwrap();
    assert_eq!(
        b.read_range(ObjectKind::Pack, &n, 10, 20).unwrap(),
        &data[10..30],
        "{loc}: read_range"
    );
    assert_eq!(
        b.read_range(ObjectKind::Pack, &n, 4980, 20).unwrap(),
        &data[4980..],
        "{loc}: read_range up to the end"
    );
    assert!(
        b.read_range(ObjectKind::Pack, &n, 4990, 20).is_err(),
        "{loc}: a range past the end must fail, not come back short"
    );
    let mut buf = vec![0xEE; 100];
    b.read_range_into(ObjectKind::Pack, &n, 10, 20, &mut buf)
        .unwrap();
    assert_eq!(buf, &data[10..30], "{loc}: read_range_into, shorter");
    b.read_range_into(ObjectKind::Pack, &n, 100, 300, &mut buf)
        .unwrap();
    assert_eq!(buf, &data[100..400], "{loc}: read_range_into, longer");
    assert!(
        b.read_range_into(ObjectKind::Pack, &n, 4990, 20, &mut buf)
            .is_err(),
        "{loc}: read_range_into past the end must fail"
    );
    clean(b);
}

/// Bytes given away with `write_owned` are stored as `write` stores them.
pub fn owned_writes(b: &dyn Backend) {
    let loc = b.location();
    let (n, data) = (name(0xae), payload());
    b.write_owned(ObjectKind::Pack, &n, data.clone()).unwrap();
    assert_eq!(
        b.read(ObjectKind::Pack, &n).unwrap(),
        data,
        "{loc}: write_owned"
    );
    assert_eq!(
        b.size(ObjectKind::Pack, &n).unwrap(),
        data.len() as u64,
        "{loc}"
    );
    clean(b);
}

/// Writing a name that exists returns `Ok`. Config, key and WAL files
/// (not named by their content) keep their first bytes; a content-addressed
/// object (a pack) written again with its own bytes stays whole (SPEC §11.3:
/// a backend may rewrite those, and locks, whose names are random, instead
/// of looking first).
pub fn never_overwrites(b: &dyn Backend) {
    let loc = b.location();
    let data = payload();
    for (kind, n) in [
        (ObjectKind::Config, "config".to_string()),
        (ObjectKind::Key, name(0xab)),
        (ObjectKind::Wal, name(0xac)),
    ] {
        b.write(kind, &n, &data).unwrap();
        b.write(kind, &n, b"other")
            .unwrap_or_else(|e| panic!("{loc}: writing an existing {kind} must succeed: {e}"));
        assert_eq!(
            b.read(kind, &n).unwrap(),
            data,
            "{loc}: an existing {kind} was replaced"
        );
    }
    let n = name(0xad);
    b.write(ObjectKind::Pack, &n, &data).unwrap();
    b.write(ObjectKind::Pack, &n, &data)
        .unwrap_or_else(|e| panic!("{loc}: writing an existing pack must succeed: {e}"));
    assert_eq!(b.read(ObjectKind::Pack, &n).unwrap(), data, "{loc}: pack");
    clean(b);
}

/// The same name under two kinds is two objects.
pub fn kinds_are_namespaces(b: &dyn Backend) {
    let loc = b.location();
    let n = name(0xab);
    b.write(ObjectKind::Pack, &n, b"pack").unwrap();
    let e = b.read(ObjectKind::Index, &n).unwrap_err();
    assert!(e.is_not_found(), "{loc}: index {n} visible as a pack: {e}");
    b.write(ObjectKind::Index, &n, b"index").unwrap();
    assert_eq!(b.read(ObjectKind::Pack, &n).unwrap(), b"pack", "{loc}");
    assert_eq!(b.read(ObjectKind::Index, &n).unwrap(), b"index", "{loc}");
    for kind in ObjectKind::ALL {
        let want = usize::from(matches!(kind, ObjectKind::Pack | ObjectKind::Index));
        assert_eq!(b.list(kind).unwrap().len(), want, "{loc}: list {kind}");
    }
    clean(b);
}

/// `list` names every object of its kind with its size and a modification
/// time by the storage's clock; `stat` agrees with it; the `config` name
/// works.
pub fn list_and_stat(b: &dyn Backend) {
    let loc = b.location();
    let (n, data) = (name(0xab), payload());
    b.write(ObjectKind::Pack, &n, &data).unwrap();
    b.write(ObjectKind::Pack, &name(0x01), b"small").unwrap();
    b.write(ObjectKind::Config, "config", b"c").unwrap();
    b.write(ObjectKind::Snapshot, &name(0x01), b"s").unwrap();
    let mut l = b.list(ObjectKind::Pack).unwrap();
    l.sort_by(|x, y| x.name.cmp(&y.name));
    let got: Vec<(&str, u64)> = l.iter().map(|o| (o.name.as_str(), o.size)).collect();
    assert_eq!(got, [(name(0x01).as_str(), 5), (n.as_str(), 5000)], "{loc}");
    assert_eq!(b.stat(ObjectKind::Pack, &n).unwrap(), l[1], "{loc}: stat");
    for o in &l {
        assert!(
            o.modified_ns > 1_600_000_000_000_000_000,
            "{loc}: modification time {} is not a recent time",
            o.modified_ns
        );
    }
    assert_eq!(b.read(ObjectKind::Config, "config").unwrap(), b"c");
    assert_eq!(b.list(ObjectKind::Config).unwrap()[0].name, "config");
    assert_eq!(b.list(ObjectKind::Snapshot).unwrap().len(), 1, "{loc}");
    clean(b);
}

/// Reading, sizing, stating or deleting a missing object fails with
/// [`BackendErrorKind::NotFound`].
pub fn missing_objects_are_not_found(b: &dyn Backend) {
    let loc = b.location();
    let n = name(0xcd);
    let mut buf = vec![1, 2, 3];
    let errors = [
        ("read", b.read(ObjectKind::Pack, &n).err()),
        (
            "read_into",
            b.read_into(ObjectKind::Pack, &n, &mut buf).err(),
        ),
        ("read_range", b.read_range(ObjectKind::Pack, &n, 0, 1).err()),
        ("size", b.size(ObjectKind::Pack, &n).err()),
        ("stat", b.stat(ObjectKind::Pack, &n).err()),
        ("delete", b.delete(ObjectKind::Pack, &n).err()),
    ];
    for (op, e) in errors {
        let e = e.unwrap_or_else(|| panic!("{loc}: {op} of a missing object succeeded"));
        assert_eq!(e.error_kind, BackendErrorKind::NotFound, "{loc}: {op}: {e}");
    }
}

/// An empty object is an object: listed with size 0, read as empty.
pub fn empty_objects(b: &dyn Backend) {
    let loc = b.location();
    let n = name(0xee);
    b.write(ObjectKind::Lock, &n, b"").unwrap();
    assert_eq!(b.read(ObjectKind::Lock, &n).unwrap(), b"", "{loc}");
    assert_eq!(b.size(ObjectKind::Lock, &n).unwrap(), 0, "{loc}");
    let l = b.list(ObjectKind::Lock).unwrap();
    assert_eq!((l.len(), l[0].size), (1, 0), "{loc}: {l:?}");
    clean(b);
}

/// Several threads share the backend (it is `Sync`): distinct writes all
/// land, and racing writes of one name all succeed and leave one whole
/// object.
pub fn concurrent_writes(b: &dyn Backend) {
    let loc = b.location();
    let data = payload();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let data = &data;
            s.spawn(move || {
                for i in 0..8u8 {
                    b.write(ObjectKind::Pack, &name(t * 16 + i), &[t, i])
                        .unwrap();
                    b.write(ObjectKind::Index, &name(0xaa), data).unwrap();
                }
            });
        }
    });
    let names: BTreeSet<String> = b
        .list(ObjectKind::Pack)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    let want: BTreeSet<String> = (0..4u8)
        .flat_map(|t| (0..8u8).map(move |i| name(t * 16 + i)))
        .collect();
    assert_eq!(names, want, "{loc}: concurrent writes lost or invented");
    assert_eq!(b.read(ObjectKind::Pack, &name(0x37)).unwrap(), [3, 7]);
    assert_eq!(
        b.read(ObjectKind::Index, &name(0xaa)).unwrap(),
        data,
        "{loc}: racing writes of one name tore it"
    );
    assert_eq!(b.list(ObjectKind::Index).unwrap().len(), 1, "{loc}");
    clean(b);
}

/// A deleted object is gone from reads and listings; deleting it again is
/// `NotFound`; other objects stay.
pub fn delete(b: &dyn Backend) {
    let loc = b.location();
    let (n, keep) = (name(0xab), name(0xac));
    b.write(ObjectKind::Pack, &n, b"gone").unwrap();
    b.write(ObjectKind::Pack, &keep, b"stays").unwrap();
    b.delete(ObjectKind::Pack, &n).unwrap();
    assert!(b.read(ObjectKind::Pack, &n).unwrap_err().is_not_found());
    assert!(
        b.delete(ObjectKind::Pack, &n).unwrap_err().is_not_found(),
        "{loc}: deleting twice"
    );
    let l = b.list(ObjectKind::Pack).unwrap();
    assert_eq!(l.len(), 1, "{loc}: {l:?}");
    assert_eq!(l[0].name, keep, "{loc}");
    assert_eq!(b.read(ObjectKind::Pack, &keep).unwrap(), b"stays");
    clean(b);
}

/// `list_many` answers, for each kind asked and in the order asked, what
/// `list` does: objects of kinds in between that were not asked for (keys,
/// locks, the config) and of other kinds stay out (SPEC §11.2).
pub fn list_many(b: &dyn Backend) {
    let loc = b.location();
    for (i, kind) in ObjectKind::ALL.into_iter().enumerate() {
        let n = if kind == ObjectKind::Config {
            "config".to_string()
        } else {
            name(0x10 + i as u8)
        };
        b.write(kind, &n, b"x").unwrap();
    }
    for p in [0x01, 0xab, 0xff] {
        b.write(ObjectKind::Pack, &name(p), b"pack").unwrap();
    }
    b.write(ObjectKind::Index, &name(0x02), b"index").unwrap();
    use ObjectKind::*;
    for kinds in [
        &[Index, Mark, Snapshot][..],
        &[Audit, Pack],
        &[Snapshot, Index],
        &[Index, Snapshot, Wal],
        &[Pack],
        &[Key, Lock],
        &[],
    ] {
        let got = b.list_many(kinds).unwrap();
        assert_eq!(got.len(), kinds.len(), "{loc}: {kinds:?}");
        for (k, mut l) in kinds.iter().zip(got) {
            let mut want = b.list(*k).unwrap();
            want.sort_by(|x, y| x.name.cmp(&y.name));
            l.sort_by(|x, y| x.name.cmp(&y.name));
            assert_eq!(l, want, "{loc}: list_many {kinds:?}, kind {k}");
        }
    }
    clean(b);
}
