//! The audit trail (SPEC §31): signed, hash-chained records; tampering is
//! named; forks of concurrent writers verify and merge; snapshots anchor
//! the head; signed reports fail on any changed byte.

use repo_core::unstable::audit::{SIGNER_NAME, parse_public};
use repo_core::{
    ANCHOR_KEY, AuditRecord, Backend, MemoryBackend, ObjectKind, ObservedBackend, OpenOptions,
    Repository, verify_audit_trail, verify_signed_report,
};

use super::{fork, init_memory};

fn record(command: &str) -> AuditRecord {
    AuditRecord {
        outcome: "ok".into(),
        ..AuditRecord::new(command)
    }
}

/// A repository with `n` records appended one after the other.
fn trail(n: usize) -> (MemoryBackend, Repository, Vec<String>) {
    let (b, repo) = init_memory();
    let log = repo.audit_log(None);
    let names = (0..n)
        .map(|i| {
            let heads = log.heads().unwrap();
            log.append(&heads, &record(&format!("cmd{i}"))).unwrap()
        })
        .collect();
    (b, repo, names)
}

fn open(b: &MemoryBackend) -> Repository {
    Repository::open(b.clone(), b"pw", OpenOptions::default()).unwrap()
}

/// The records each problem names, sorted.
fn named(b: &MemoryBackend) -> Vec<String> {
    let v = open(b).audit_verify().unwrap();
    let mut n: Vec<String> = v.problems.iter().map(|p| p.record.clone()).collect();
    n.sort();
    n.dedup();
    n
}

#[test]
fn a_chain_lists_in_order_and_verifies_with_and_without_the_password() {
    let (b, repo, names) = trail(4);
    let (entries, bad) = repo.audit_log(None).entries().unwrap();
    assert!(bad.is_empty());
    let listed: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(listed, names.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(entries[2].record.command, "cmd2");
    assert_eq!(entries[2].parents, vec![names[1].clone()]);
    assert_eq!(entries[0].height, 0);
    assert_eq!(entries[3].height, 3);

    let v = repo.audit_verify().unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!((v.records, v.heads.clone()), (4, vec![names[3].clone()]));

    let key = repo.audit_log(None).public_key().unwrap();
    let v = verify_audit_trail(&b, &key).unwrap();
    assert!(v.problems.is_empty() && !v.bodies_checked, "{:?}", v);
    // Another repository's key verifies none of the signatures.
    let (_, other) = init_memory();
    let wrong = other.audit_log(None).public_key().unwrap();
    let v = verify_audit_trail(&b, &wrong).unwrap();
    assert_eq!(v.problems.len(), 4, "{:?}", v.problems);
    assert!(v.problems.iter().all(|p| p.problem.contains("signature")));
    // The key's text form round-trips.
    assert_eq!(parse_public(&repo_core::public_text(&key)).unwrap(), key);
}

#[test]
fn a_removed_record_is_named_by_the_record_that_follows_it() {
    let (b, _, names) = trail(4);
    b.delete(ObjectKind::Audit, &names[1]).unwrap();
    assert_eq!(named(&b), vec![names[1].clone()]);
    let v = open(&b).audit_verify().unwrap();
    assert!(
        v.problems[0]
            .problem
            .contains(&format!("record {} names it", names[2]))
    );
}

#[test]
fn every_altered_byte_of_a_record_is_named() {
    let (b, repo, names) = trail(3);
    let key = repo.audit_log(None).public_key().unwrap();
    let bytes = b.read(ObjectKind::Audit, &names[1]).unwrap();
    let head_len = bytes.len() - 60; // at least the envelope and signature
    for i in (0..bytes.len()).step_by(7) {
        let f = fork(&b);
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        f.delete(ObjectKind::Audit, &names[1]).unwrap();
        f.write(ObjectKind::Audit, &names[1], &bad).unwrap();
        assert_eq!(named(&f), vec![names[1].clone()], "byte {i}");
        // Without the password, a changed envelope or signature shows.
        let public = verify_audit_trail(&f, &key).unwrap();
        if i < head_len.min(16 + 52 + 32 + 64) {
            assert_eq!(public.problems.len(), 1, "byte {i}");
        }
    }
}

#[test]
fn swapped_records_are_both_named() {
    let (b, _, names) = trail(3);
    let x = b.read(ObjectKind::Audit, &names[0]).unwrap();
    let y = b.read(ObjectKind::Audit, &names[2]).unwrap();
    for (n, bytes) in [(&names[0], &y), (&names[2], &x)] {
        b.delete(ObjectKind::Audit, n).unwrap();
        b.write(ObjectKind::Audit, n, bytes).unwrap();
    }
    let mut want = vec![names[0].clone(), names[2].clone()];
    want.sort();
    assert_eq!(named(&b), want);
}

#[test]
fn concurrent_writers_fork_and_the_next_record_merges() {
    let (b, repo, names) = trail(1);
    let other = open(&b);
    let (la, lb) = (repo.audit_log(None), other.audit_log(None));
    let (ha, hb) = (la.heads().unwrap(), lb.heads().unwrap());
    let a = la.append(&ha, &record("a")).unwrap();
    let c = lb.append(&hb, &record("b")).unwrap();
    let v = repo.audit_verify().unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    let mut fork_heads = vec![a.clone(), c.clone()];
    fork_heads.sort();
    assert_eq!(v.heads, fork_heads);

    let heads = la.heads().unwrap();
    assert_eq!(heads.names(), fork_heads.as_slice());
    let merged = la.append(&heads, &record("merge")).unwrap();
    let v = repo.audit_verify().unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!(v.heads, vec![merged.clone()]);
    let (entries, _) = la.entries().unwrap();
    let m = entries.iter().find(|e| e.name == merged).unwrap();
    assert_eq!((m.height, m.parents.clone()), (2, fork_heads));
    assert_eq!(entries[0].name, names[0]);
}

#[test]
fn the_cached_dag_finds_the_same_heads_as_a_full_read() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("audit-dag.json");
    let (b, repo, _) = trail(2);
    let cached = repo.audit_log(Some(cache.clone()));
    let first = cached.heads().unwrap();
    // Another writer appends; the cache learns it from the one listing.
    let other = open(&b).audit_log(None);
    let h = other.heads().unwrap();
    let n = other.append(&h, &record("elsewhere")).unwrap();
    assert_ne!(first.names(), std::slice::from_ref(&n));
    assert_eq!(cached.heads().unwrap().names(), std::slice::from_ref(&n));
    assert_eq!(repo.audit_log(None).heads().unwrap().names(), [n]);
    assert!(cache.exists());
}

#[test]
fn snapshots_anchor_the_head_so_a_truncated_trail_is_named() {
    let (b, repo, names) = trail(2);
    let heads = repo.audit_log(None).heads().unwrap();
    repo.set_audit_anchor(heads.anchor().unwrap());
    let snap = repo
        .backup()
        .stream("x", &b"data"[..])
        .run()
        .unwrap()
        .snapshot;
    let meta = &snap.snapshot.metadata;
    assert!(meta.contains(&(ANCHOR_KEY.to_string(), names[1].clone())));
    assert!(repo.audit_verify().unwrap().problems.is_empty());

    // Dropping the newest record leaves a consistent chain, but the
    // snapshot still names it.
    b.delete(ObjectKind::Audit, &names[1]).unwrap();
    let v = open(&b).audit_verify().unwrap();
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    assert_eq!(v.problems[0].record, names[1]);
    assert!(v.problems[0].problem.contains("snapshot"));
    // Dropping the whole trail, signing key included, is seen too.
    for o in b.list(ObjectKind::Audit).unwrap() {
        b.delete(ObjectKind::Audit, &o.name).unwrap();
    }
    assert_eq!(named(&b), vec![names[1].clone()]);
}

#[test]
fn a_trail_without_its_signing_key_is_reported() {
    let (b, _, _) = trail(1);
    b.delete(ObjectKind::Audit, SIGNER_NAME).unwrap();
    assert_eq!(named(&b), vec![SIGNER_NAME.to_string()]);
}

#[test]
fn the_observed_backend_counts_what_a_command_creates_and_deletes() {
    let (b, repo) = init_memory();
    drop(repo);
    let (observed, tally) = ObservedBackend::new(b.clone());
    let repo = Repository::open(observed, b"pw", OpenOptions::default()).unwrap();
    let first = repo
        .backup()
        .stream("x", &b"one"[..])
        .run()
        .unwrap()
        .snapshot;
    repo.backup().stream("x", &b"two"[..]).run().unwrap();
    let t = tally.lock().unwrap().clone();
    assert_eq!(t.created.get("snapshot"), Some(&2));
    assert_eq!(t.snapshots_created.len(), 2);
    assert!(t.created.get("pack").is_some_and(|&n| n >= 2));
    assert!(!t.created.contains_key("lock"));
    repo.backend()
        .delete(ObjectKind::Snapshot, &first.id.to_hex())
        .unwrap();
    let t = tally.lock().unwrap().clone();
    assert_eq!(t.deleted.get("snapshot"), Some(&1));
    assert_eq!(t.snapshots_deleted, vec![first.id.to_hex()]);
}

#[test]
fn a_signed_report_fails_on_any_changed_byte_and_with_another_key() {
    let (_, repo) = init_memory();
    let log = repo.audit_log(None);
    let key = log.public_key().unwrap();
    let signed = log.sign_report(b"{\n  \"files\": 3\n}\n").unwrap();
    let ok = verify_signed_report(&signed, Some(&key)).unwrap();
    assert_eq!(ok.report, b"{\n  \"files\": 3\n}\n");
    for i in 0..signed.len() {
        let mut bad = signed.clone();
        bad[i] ^= 0x01;
        assert!(verify_signed_report(&bad, Some(&key)).is_err(), "byte {i}");
    }
    let (_, other) = init_memory();
    let wrong = other.audit_log(None).public_key().unwrap();
    assert!(verify_signed_report(&signed, Some(&wrong)).is_err());
}

#[test]
fn records_and_the_signing_key_leave_check_clean() {
    let (_, repo, _) = trail(2);
    super::check_clean(&repo).unwrap();
}

/// SPEC §31.7: a record head and a report signature from fixed inputs
/// (Ed25519 is deterministic), so another implementation can check itself.
#[test]
fn golden_record_head_and_report_signature() {
    use repo_core::unstable::audit::{Envelope, decode, encode_head, sign_report_with};
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let env = Envelope {
        time_ns: 1_800_000_000_000_000_000,
        height: 1,
        body_commit: *blake3::hash(b"{}").as_bytes(),
        parents: vec![[0xab; 32]],
    };
    let (head, name) = encode_head(&env, &key);
    assert_eq!(hex::encode(key.verifying_key().to_bytes()), GOLDEN_PUBLIC);
    assert_eq!(hex::encode(&head), GOLDEN_HEAD);
    assert_eq!(hex::encode(name), GOLDEN_NAME);
    let parsed = decode(&head).unwrap();
    assert_eq!((parsed.envelope, parsed.name), (env, name));
    let report = sign_report_with(&key, b"{}\n");
    assert_eq!(String::from_utf8(report).unwrap(), GOLDEN_REPORT);
}

const GOLDEN_PUBLIC: &str = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";
const GOLDEN_HEAD: &str = "434149524e41551a01000000540000000000b49376e2fa1801000000000000006e46dd10defc9b56c29a6ec56b508c21f54c08192194e4df25bf36f0c9c3c27901000000ababababababababababababababababababababababababababababababababead4c630e707faeff5255d69a2e94d05eb4ebf47b49a5c0e63770dee72e117ae5babfdc87128b325447789c18351e082ebfec4eca1091caf0420929f9a98d10f";
const GOLDEN_NAME: &str = "aa52b07ae54ca9fbadb79f53ca8ee53f951ce2aad643ecceabf287fe9117beea";
const GOLDEN_REPORT: &str = "{}\ncairn-signature: ed25519 ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c 47c9213b49bc33838e864ba4f611f5cbedb3c10b7ef112c12ab6a9629e2823aed60d7a255ee5cb674fb90a11e1cdd04760f787c7f42a735e3d51f13b4ae2790f\n";

/// The signing key never changes: once this machine has read it, a record
/// costs no request for it (a nothing-changed backup stays at a handful
/// of requests). A cached copy that no longer opens is read again.
#[test]
fn the_signing_key_is_read_once_per_machine() {
    use cairn_testkit::backend::{Call, Hooked};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("audit-dag.json");
    let (b, _repo, _) = trail(1);
    let reads = Arc::new(AtomicUsize::new(0));
    let seen = reads.clone();
    let hooked = Hooked::new(b.clone()).after(move |c| {
        if matches!(c, Call::Read(ObjectKind::Audit, n) if *n == SIGNER_NAME) {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    let repo = Repository::open(hooked, b"pw", OpenOptions::default()).unwrap();
    let log = repo.audit_log(Some(cache.clone()));
    for i in 0..3 {
        let heads = log.heads().unwrap();
        log.append(&heads, &record(&format!("again{i}"))).unwrap();
    }
    assert_eq!(reads.load(Ordering::SeqCst), 1, "read once, then cached");
    // A damaged cached copy is not trusted: the key is read again.
    std::fs::write(cache.with_file_name("audit-signer"), b"garbage").unwrap();
    let heads = log.heads().unwrap();
    log.append(&heads, &record("after damage")).unwrap();
    assert_eq!(reads.load(Ordering::SeqCst), 2);
    assert!(named(&b).is_empty(), "every record verifies");
}
