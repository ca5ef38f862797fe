//! A fault-injecting decorator over any backend, for tests (feature
//! `fault-injection`; issue 6).
//!
//! Every call is one operation, numbered from 0 in the order calls arrive
//! (`read_range` counts as a read, `size` as a stat). A [`FaultPlan`] says
//! which operations fail and how. Two families of faults:
//! - *errors*: the operation fails and has no effect; later ones run;
//! - *crashes*: the operation and every later one fail, as if the process
//!   died there. By the [`Backend`] contract every operation that returned
//!   is durable (the local backend fsyncs the file and its directory before
//!   returning), so the wrapped backend already holds exactly what survives
//!   a crash: a test "reboots" by opening a repository on it.
//!
//! Torn writes store a prefix of the object under its name and then fail.
//! No conforming backend does this (writes are atomic: the local backend
//! writes a temporary file and links it into place), so a torn write models
//! storage that breaks that promise, and shows what `check` makes of it.
//!
//! Numbering is deterministic for a deterministic sequence of calls; a
//! caller that issues calls from several threads may interleave them
//! differently from run to run, so tests assert properties that hold for
//! whichever operation gets the fault.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};

use super::{Backend, BackendError, ObjectInfo, ObjectKind};

/// Kinds of backend operation, as counted by a [`FaultyBackend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// `read` and `read_range`.
    Read,
    /// `write`.
    Write,
    /// `list`.
    List,
    /// `delete`.
    Delete,
    /// `stat` and `size`.
    Stat,
}

impl OpKind {
    /// Every kind.
    pub const ALL: [OpKind; 5] = [
        OpKind::Read,
        OpKind::Write,
        OpKind::List,
        OpKind::Delete,
        OpKind::Stat,
    ];
}

/// What happens to an operation chosen by a [`FaultPlan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails with an I/O error of this kind; nothing happens.
    Error(io::ErrorKind),
    /// Fails with `ENOSPC` (raw OS error 28); nothing is written.
    NoSpace,
    /// A write stores its first `keep` bytes (at most all but one) under
    /// its name, then fails; other operations fail as [`Fault::Error`]
    /// with `Interrupted`.
    TornWrite {
        /// Bytes kept.
        keep: usize,
    },
    /// The process dies before the operation has any effect: it and every
    /// later operation fail.
    Crash,
    /// The process dies during the operation; a write leaves its first
    /// `keep` bytes (at most all but one) under its name.
    CrashTorn {
        /// Bytes kept.
        keep: usize,
    },
}

impl Fault {
    fn is_crash(self) -> bool {
        matches!(self, Fault::Crash | Fault::CrashTorn { .. })
    }
}

/// One scheduled fault: the `nth` (from 0) operation that matches.
#[derive(Debug, Clone, Copy)]
struct Rule {
    op: Option<OpKind>,
    object: Option<ObjectKind>,
    nth: u64,
    seen: u64,
    fault: Fault,
    fired: bool,
}

/// A schedule of faults; deterministic for a given sequence of calls.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    rules: Vec<Rule>,
    /// `(seed, per_million, faults)`: each operation independently gets one
    /// of `faults` with this probability, decided by a hash of the seed and
    /// the operation's number (so it does not depend on earlier draws).
    random: Option<(u64, u32, Vec<Fault>)>,
}

impl FaultPlan {
    /// No faults: a counting pass.
    pub fn none() -> Self {
        Self::default()
    }

    /// `fault` at operation number `n` (any kind, any object).
    pub fn at(n: u64, fault: Fault) -> Self {
        Self::none().and_at(n, fault)
    }

    /// Adds `fault` at operation number `n`.
    pub fn and_at(self, n: u64, fault: Fault) -> Self {
        self.and_nth(None, None, n, fault)
    }

    /// Adds `fault` at the `n`th (from 0) operation of kind `op` (any kind
    /// when `None`) on objects of kind `object` (any when `None`).
    pub fn and_nth(
        mut self,
        op: Option<OpKind>,
        object: Option<ObjectKind>,
        n: u64,
        fault: Fault,
    ) -> Self {
        self.rules.push(Rule {
            op,
            object,
            nth: n,
            seen: 0,
            fault,
            fired: false,
        });
        self
    }

    /// Each operation fails with probability `per_million / 1e6`, with one
    /// of `faults` picked by the same hash.
    pub fn random(seed: u64, per_million: u32, faults: Vec<Fault>) -> Self {
        Self {
            rules: Vec::new(),
            random: Some((seed, per_million, faults)),
        }
    }

    /// The fault for operation `seq`, advancing the rules' counters.
    fn pick(&mut self, seq: u64, op: OpKind, object: ObjectKind) -> Option<Fault> {
        let mut chosen = None;
        for r in &mut self.rules {
            if r.fired || r.op.is_some_and(|o| o != op) || r.object.is_some_and(|k| k != object) {
                continue;
            }
            if r.seen == r.nth && chosen.is_none() {
                r.fired = true;
                chosen = Some(r.fault);
            }
            r.seen += 1;
        }
        if chosen.is_none()
            && let Some((seed, per_million, faults)) = &self.random
            && !faults.is_empty()
        {
            let h = splitmix(seed ^ splitmix(seq));
            if (h % 1_000_000) < u64::from(*per_million) {
                chosen = Some(faults[((h >> 32) % faults.len() as u64) as usize]);
            }
        }
        chosen
    }
}

/// SplitMix64: a well-mixed hash of a counter.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An injected fault, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// Operation number.
    pub seq: u64,
    /// Operation kind.
    pub op: OpKind,
    /// Object kind.
    pub object: ObjectKind,
    /// Object name (empty for listings).
    pub name: String,
    /// The fault.
    pub fault: Fault,
}

#[derive(Debug, Default)]
struct State {
    plan: FaultPlan,
    seq: u64,
    ops: Vec<(OpKind, ObjectKind)>,
    injected: Vec<Injected>,
    crashed: bool,
}

/// Wraps a backend and injects the faults of a [`FaultPlan`]. Clones share
/// the plan, the counters and the wrapped backend.
pub struct FaultyBackend<B> {
    inner: Arc<B>,
    state: Arc<Mutex<State>>,
}

impl<B> Clone for FaultyBackend<B> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            state: Arc::clone(&self.state),
        }
    }
}

impl<B: Backend> fmt::Debug for FaultyBackend<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyBackend")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// What an operation should do after consulting the plan.
enum Verdict {
    Run,
    Fail(io::Error),
    Tear(usize, io::Error),
}

fn crashed_error() -> io::Error {
    io::Error::other("simulated crash: the process is gone")
}

impl<B: Backend> FaultyBackend<B> {
    /// Wraps `inner` with no faults planned.
    pub fn new(inner: B) -> Self {
        Self {
            inner: Arc::new(inner),
            state: Arc::default(),
        }
    }

    /// The wrapped backend: after a crash, what survived ("reboot" onto it).
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Replaces the plan and resets the counters and the crashed state.
    pub fn set_plan(&self, plan: FaultPlan) {
        let mut st = self.lock();
        *st = State {
            plan,
            ..State::default()
        };
    }

    /// Operations seen since the plan was set (faulted ones included).
    pub fn ops(&self) -> u64 {
        self.lock().seq
    }

    /// Every operation since the plan was set, in order: `(kind, object)`.
    pub fn log(&self) -> Vec<(OpKind, ObjectKind)> {
        self.lock().ops.clone()
    }

    /// Operations of kind `op` seen since the plan was set.
    pub fn ops_of(&self, op: OpKind) -> u64 {
        self.lock().ops.iter().filter(|(o, _)| *o == op).count() as u64
    }

    /// Operations of kind `op` on objects of kind `object` since the plan was set.
    pub fn ops_on(&self, op: OpKind, object: ObjectKind) -> u64 {
        self.lock()
            .ops
            .iter()
            .filter(|(o, k)| *o == op && *k == object)
            .count() as u64
    }

    /// Faults injected since the plan was set.
    pub fn injected(&self) -> Vec<Injected> {
        self.lock().injected.clone()
    }

    /// True once a crash fault fired.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers the operation and decides its fate.
    fn admit(&self, op: OpKind, object: ObjectKind, name: &str, len: usize) -> Verdict {
        let mut st = self.lock();
        let seq = st.seq;
        st.seq += 1;
        st.ops.push((op, object));
        if st.crashed {
            return Verdict::Fail(crashed_error());
        }
        let Some(fault) = st.plan.pick(seq, op, object) else {
            return Verdict::Run;
        };
        st.injected.push(Injected {
            seq,
            op,
            object,
            name: name.to_string(),
            fault,
        });
        if fault.is_crash() {
            st.crashed = true;
        }
        let keep_of = |keep: usize| keep.min(len.saturating_sub(1));
        match fault {
            Fault::Error(kind) => Verdict::Fail(io::Error::new(kind, "injected fault")),
            Fault::NoSpace => Verdict::Fail(io::Error::from_raw_os_error(28)),
            Fault::TornWrite { keep } if op == OpKind::Write => Verdict::Tear(
                keep_of(keep),
                io::Error::new(io::ErrorKind::Interrupted, "injected torn write"),
            ),
            Fault::TornWrite { .. } => {
                Verdict::Fail(io::Error::new(io::ErrorKind::Interrupted, "injected fault"))
            }
            Fault::Crash => Verdict::Fail(crashed_error()),
            Fault::CrashTorn { keep } if op == OpKind::Write => {
                Verdict::Tear(keep_of(keep), crashed_error())
            }
            Fault::CrashTorn { .. } => Verdict::Fail(crashed_error()),
        }
    }

    fn gate(
        &self,
        op: OpKind,
        opname: &'static str,
        kind: ObjectKind,
        name: &str,
    ) -> Result<(), BackendError> {
        match self.admit(op, kind, name, 0) {
            Verdict::Run => Ok(()),
            Verdict::Fail(e) | Verdict::Tear(_, e) => Err(BackendError::io(opname, kind, name, e)),
        }
    }
}

impl<B: Backend> Backend for FaultyBackend<B> {
    fn location(&self) -> String {
        format!("faulty:{}", self.inner.location())
    }
    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }

    fn read(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>, BackendError> {
        self.gate(OpKind::Read, "read", kind, name)?;
        self.inner.read(kind, name)
    }

    fn read_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, BackendError> {
        self.gate(OpKind::Read, "read", kind, name)?;
        self.inner.read_range(kind, name, offset, len)
    }

    fn size(&self, kind: ObjectKind, name: &str) -> Result<u64, BackendError> {
        self.gate(OpKind::Stat, "stat", kind, name)?;
        self.inner.size(kind, name)
    }

    fn stat(&self, kind: ObjectKind, name: &str) -> Result<ObjectInfo, BackendError> {
        self.gate(OpKind::Stat, "stat", kind, name)?;
        self.inner.stat(kind, name)
    }

    fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        match self.admit(OpKind::Write, kind, name, data.len()) {
            Verdict::Run => self.inner.write(kind, name, data),
            Verdict::Fail(e) => Err(BackendError::io("write", kind, name, e)),
            Verdict::Tear(keep, e) => {
                // The prefix lands under the real name; the caller sees an error.
                self.inner.write(kind, name, &data[..keep])?;
                Err(BackendError::io("write", kind, name, e))
            }
        }
    }

    /// A write fault; a planned tear fails it whole, as the operation is
    /// atomic (the old bytes stay).
    fn replace(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<(), BackendError> {
        match self.admit(OpKind::Write, kind, name, data.len()) {
            Verdict::Run => self.inner.replace(kind, name, data),
            Verdict::Fail(e) | Verdict::Tear(_, e) => {
                Err(BackendError::io("replace", kind, name, e))
            }
        }
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>, BackendError> {
        self.gate(OpKind::List, "list", kind, "")?;
        self.inner.list(kind)
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<(), BackendError> {
        self.gate(OpKind::Delete, "delete", kind, name)?;
        self.inner.delete(kind, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;

    #[test]
    fn nth_operation_fails_once_and_is_counted() {
        let b = FaultyBackend::new(MemoryBackend::new());
        b.set_plan(FaultPlan::none().and_nth(
            Some(OpKind::Write),
            Some(ObjectKind::Pack),
            1,
            Fault::NoSpace,
        ));
        b.write(ObjectKind::Pack, "a", b"1").unwrap();
        b.write(ObjectKind::Index, "b", b"2").unwrap();
        let e = b.write(ObjectKind::Pack, "c", b"3").unwrap_err();
        assert_eq!(e.error_kind, crate::backend::BackendErrorKind::NoSpace);
        assert_eq!(e.source.raw_os_error(), Some(28));
        assert!(b.inner().read(ObjectKind::Pack, "c").is_err());
        b.write(ObjectKind::Pack, "c", b"3").unwrap();
        assert_eq!(b.ops(), 4);
        assert_eq!(b.ops_on(OpKind::Write, ObjectKind::Pack), 3);
        let inj = b.injected();
        assert_eq!(inj.len(), 1);
        assert_eq!((inj[0].seq, inj[0].name.as_str()), (2, "c"));
    }

    #[test]
    fn crash_stops_everything_and_torn_writes_keep_a_prefix() {
        let b = FaultyBackend::new(MemoryBackend::new());
        b.set_plan(FaultPlan::at(1, Fault::CrashTorn { keep: 2 }));
        b.write(ObjectKind::Pack, "a", b"first").unwrap();
        assert!(b.write(ObjectKind::Pack, "b", b"second").is_err());
        assert!(b.crashed());
        assert!(b.read(ObjectKind::Pack, "a").is_err(), "crashed: no reads");
        assert!(b.delete(ObjectKind::Pack, "a").is_err());
        // What survived: the first write whole, a prefix of the second.
        assert_eq!(b.inner().read(ObjectKind::Pack, "a").unwrap(), b"first");
        assert_eq!(b.inner().read(ObjectKind::Pack, "b").unwrap(), b"se");
        assert_eq!(b.injected().len(), 1);
    }

    #[test]
    fn random_plans_repeat_exactly() {
        let run = |seed| {
            let b = FaultyBackend::new(MemoryBackend::new());
            b.set_plan(FaultPlan::random(
                seed,
                200_000,
                vec![Fault::Error(io::ErrorKind::Other), Fault::NoSpace],
            ));
            (0..200)
                .map(|i| b.write(ObjectKind::Pack, &format!("p{i}"), b"x").is_ok())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let failed = run(7).iter().filter(|ok| !**ok).count();
        assert!((10..80).contains(&failed), "{failed} of 200 at 20%");
    }
}
