//! Model-based test under faults (issue 6): random sequences of backup,
//! forget, prune, check and restore, some with a fault or crash injected,
//! checked after every step against a model of which snapshots exist and
//! what each contains.
//!
//! Rule: a snapshot is committed iff its snapshot file exists. A step that
//! failed changes the model only through what the repository lists: a
//! backup whose snapshot file was written before a later failure has
//! committed it (it must then restore exactly); a failed forget may or may
//! not have deleted its snapshot. Nothing else may appear or vanish.
//!
//! `CAIRN_FAULT_CASES` sets the number of cases (default 12).

use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use repo_core::unstable::backend::{Fault, FaultPlan, FaultyBackend};
use repo_core::unstable::forget::RetentionPolicy;
use repo_core::unstable::prune::PruneOptions;
use repo_core::{
    CheckOptions, GroupBy, MemoryBackend, OpenOptions, Repository, SnapshotFilter, SnapshotId,
};

use super::{
    Files, XorShift, check_clean, init_memory, random_bytes, read_tree, restored, write_tree,
};

#[derive(Debug, Clone)]
enum Action {
    /// Back up a tree generated from this seed.
    Backup(u64),
    /// Forget the snapshot at this position (modulo the count).
    Forget(usize),
    Prune,
    Check,
    /// Restore the snapshot at this position (modulo the count).
    Restore(usize),
}

#[derive(Debug, Clone)]
struct Step {
    action: Action,
    /// Fault at this backend operation of the step, if any.
    fault: Option<(u64, Fault)>,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => any::<u64>().prop_map(Action::Backup),
        2 => any::<usize>().prop_map(Action::Forget),
        2 => Just(Action::Prune),
        1 => Just(Action::Check),
        2 => any::<usize>().prop_map(Action::Restore),
    ]
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        Just(Fault::Error(io::ErrorKind::Other)),
        Just(Fault::Error(io::ErrorKind::TimedOut)),
        Just(Fault::NoSpace),
        Just(Fault::Crash),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (action(), prop::option::weighted(0.5, (0u64..24, fault())))
        .prop_map(|(action, fault)| Step { action, fault })
}

/// A small tree: some files share content across trees (a pool of eight),
/// some are new, some empty, some in subdirectories.
fn tree_of(seed: u64) -> Files {
    let mut x = XorShift::new(seed | 1);
    let mut next = || x.next_u64();
    let mut f = Files::new();
    for i in 0..1 + next() % 6 {
        let name = match next() % 3 {
            0 => format!("f{i}"),
            1 => format!("d{}/f{i}", next() % 2),
            _ => format!("d0/e/f{i}"),
        };
        let data = match next() % 4 {
            0 => random_bytes(20_000, 5000 + next() % 8), // pooled: deduplicated
            1 => Vec::new(),
            _ => random_bytes((next() % 60_000) as usize, next()),
        };
        f.insert(name, data);
    }
    f
}

/// Snapshot id → (its unique tag, its files).
type Model = std::collections::BTreeMap<SnapshotId, (String, Files)>;

static CASES: AtomicU64 = AtomicU64::new(0);
static STEPS: AtomicU64 = AtomicU64::new(0);
static INJECTED: AtomicU64 = AtomicU64::new(0);
static FAILED_STEPS: AtomicU64 = AtomicU64::new(0);
static COMMITTED_DESPITE_FAILURE: AtomicU64 = AtomicU64::new(0);

fn session(b: &FaultyBackend<MemoryBackend>) -> Repository {
    b.set_plan(FaultPlan::none());
    Repository::open(b.clone(), b"pw", OpenOptions::default()).unwrap()
}

fn run_case(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let scratch = dir.path().join("scratch");
    let (mem, repo) = init_memory();
    drop(repo);
    let fb = FaultyBackend::new(mem.clone());
    let mut model = Model::new();
    let mut tag_no = 0u32;
    for (i, st) in steps.iter().enumerate() {
        let what = format!("step {i} {st:?}");
        let repo = session(&fb);
        let ids: Vec<SnapshotId> = model.keys().copied().collect();
        fb.set_plan(match st.fault {
            Some((n, f)) => FaultPlan::at(n, f),
            None => FaultPlan::none(),
        });
        let mut backed_up: Option<(String, Files)> = None;
        let mut forgotten: Option<SnapshotId> = None;
        let result: repo_core::Result<()> = match &st.action {
            Action::Backup(seed) => {
                let files = tree_of(*seed);
                write_tree(&src, &files);
                tag_no += 1;
                let tag = format!("s{tag_no}");
                backed_up = Some((tag.clone(), files));
                repo.backup().path(&src).tag(tag).run().map(|_| ())
            }
            Action::Forget(k) if !ids.is_empty() => {
                let target = ids[k % ids.len()];
                forgotten = Some(target);
                let mut keep: Vec<String> = model
                    .iter()
                    .filter(|(id, _)| **id != target)
                    .map(|(_, (t, _))| t.clone())
                    .collect();
                keep.push("no-such-tag".into());
                let policy = RetentionPolicy {
                    keep_tags: keep,
                    ..Default::default()
                };
                repo.forget_plan(
                    &policy,
                    GroupBy::NONE,
                    repo_core::UtcOffset::UTC,
                    &SnapshotFilter::default(),
                )
                .and_then(|plan| {
                    let removed: Vec<_> = plan.removed().map(|r| r.id).collect();
                    assert_eq!(removed, vec![target], "{what}: forget plan");
                    repo.forget(&plan).map(|_| ())
                })
            }
            Action::Forget(_) => Ok(()),
            Action::Prune => repo
                .prune_plan(&PruneOptions {
                    grace: Duration::ZERO,
                    ..Default::default()
                })
                .and_then(|p| repo.prune(p).map(|_| ())),
            // Under a fault a check may report what it could not read; it
            // must not panic, and must not fail where nothing was injected.
            Action::Check => repo.check(&CheckOptions::default()).run().map(|r| {
                if fb.injected().is_empty() {
                    assert!(r.is_ok(), "{what}: check without a fault:\n{r}");
                }
            }),
            Action::Restore(k) if !ids.is_empty() => {
                // Under a fault a restore may fail, but never yields wrong bytes.
                let id = ids[k % ids.len()];
                let out = scratch.join("faulted");
                let _ = std::fs::remove_dir_all(&out);
                let snap = repo.snapshot(&id);
                match snap.and_then(|s| repo.restore(&s).to(&out).run()) {
                    Ok(_) => {
                        let got = read_tree(&out.join(src.strip_prefix("/").unwrap()));
                        assert!(got == model[&id].1, "{what}: restore gave wrong bytes");
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Action::Restore(_) => Ok(()),
        };
        drop(repo);
        let injected = fb.injected().len() as u64;
        INJECTED.fetch_add(injected, Ordering::Relaxed);
        STEPS.fetch_add(1, Ordering::Relaxed);
        if result.is_err() {
            FAILED_STEPS.fetch_add(1, Ordering::Relaxed);
            prop_assert!(injected > 0, "{what}: failed without a fault: {result:?}");
        }
        // Reboot onto what survived, without faults.
        let repo = session(&fb);
        let listed: BTreeSet<SnapshotId> = repo
            .snapshots()
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        let new: Vec<SnapshotId> = listed
            .iter()
            .filter(|id| !model.contains_key(id))
            .copied()
            .collect();
        match (&result, backed_up) {
            (Ok(()), Some(b)) => {
                prop_assert_eq!(new.len(), 1, "{}: backup made no snapshot", what);
                model.insert(new[0], b);
            }
            (Err(_), Some(b)) => {
                prop_assert!(new.len() <= 1, "{}: {} new snapshots", what, new.len());
                if let Some(id) = new.first() {
                    // Committed before a later step failed: the listing decides.
                    COMMITTED_DESPITE_FAILURE.fetch_add(1, Ordering::Relaxed);
                    model.insert(*id, b);
                }
            }
            (_, None) => prop_assert!(new.is_empty(), "{}: snapshots appeared", what),
        }
        if let Some(t) = forgotten {
            if result.is_ok() {
                prop_assert!(!listed.contains(&t), "{}: forgotten snapshot listed", what);
            }
            if !listed.contains(&t) {
                model.remove(&t);
            }
        }
        let expected: BTreeSet<SnapshotId> = model.keys().copied().collect();
        prop_assert_eq!(
            &listed,
            &expected,
            "{}: snapshots differ from the model",
            what
        );
        if let Err(r) = check_clean(&repo) {
            return Err(TestCaseError::fail(format!("{what}: check:\n{r}")));
        }
        for (id, (_, files)) in &model {
            let got = restored(&repo, id, &src, &scratch);
            prop_assert!(
                got == *files,
                "{}: snapshot {} restores wrong bytes",
                what,
                id
            );
        }
    }
    CASES.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[test]
fn random_operations_with_faults_never_lose_a_committed_snapshot() {
    let cases = std::env::var("CAIRN_FAULT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let r = runner.run(&prop::collection::vec(step(), 3..10), run_case);
    eprintln!(
        "fault model: {} cases passed, {} steps, {} faults injected, {} steps failed, \
         {} failed backups committed before failing",
        CASES.load(Ordering::Relaxed),
        STEPS.load(Ordering::Relaxed),
        INJECTED.load(Ordering::Relaxed),
        FAILED_STEPS.load(Ordering::Relaxed),
        COMMITTED_DESPITE_FAILURE.load(Ordering::Relaxed),
    );
    if let Err(e) = r {
        panic!("{e}");
    }
}
