//! Every backend in the workspace passes the public conformance suite
//! (`repo_core::conformance`, feature `conformance`), run from
//! outside the crate as a backend in another crate would run it (issue 13).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn_testkit::backend::Hooked;
use repo_core::unstable::backend::{FaultPlan, FaultyBackend};
use repo_core::{LocalBackend, MemoryBackend, conformance};

#[test]
fn the_local_backend_conforms() {
    let d = tempfile::tempdir().unwrap();
    conformance::run(&LocalBackend::create(d.path().join("repo")).unwrap());
}

#[test]
fn the_memory_backend_conforms() {
    conformance::run(&MemoryBackend::new());
}

#[test]
fn the_fault_injector_conforms_when_no_fault_is_planned() {
    let b = FaultyBackend::new(MemoryBackend::new());
    b.set_plan(FaultPlan::none());
    conformance::run(&b);
    assert!(b.injected().is_empty());
}

#[test]
fn the_test_kits_pass_through_backend_conforms_and_sees_every_call() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let b = Hooked::new(MemoryBackend::new()).before(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    conformance::run(&b);
    assert!(calls.load(Ordering::SeqCst) > 100);
}

/// The suite is not a formality: a backend that breaks a promise fails it.
#[test]
#[should_panic(expected = "an existing key was replaced")]
fn a_backend_that_overwrites_fails_the_suite() {
    use repo_core::{Backend, ObjectKind};
    let inner = MemoryBackend::new();
    let target = inner.clone();
    // Replaces an existing key file by deleting it before the write lands
    // (packs may be rewritten: their bytes are the same, SPEC §11.3).
    let b = Hooked::new(inner).before(move |call| {
        if let cairn_testkit::backend::Call::Write(kind, name, _) = *call
            && target.size(kind, name).is_ok()
            && kind == ObjectKind::Key
        {
            target.delete(kind, name)?;
        }
        Ok(())
    });
    conformance::never_overwrites(&b);
}
