//! External sort for `check` (docs/check.md §1): records are collected in memory
//! up to a byte budget; past it, each full buffer is sorted and written as
//! a run file in the check's scratch directory, and the runs (with what is
//! left in memory) are merged k ways into one ascending stream. The check
//! then holds one buffer, not the repository's index, so its memory stays
//! flat however many blobs the repository has.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rayon::slice::ParallelSliceMut;

/// A fixed-size record, sorted by its `Ord` (its key fields first).
pub(super) trait Record: Ord + Copy + Send {
    /// Encoded length.
    const LEN: usize;
    /// Writes exactly `LEN` bytes.
    fn encode(&self, out: &mut [u8]);
    /// Reads what `encode` wrote.
    fn decode(b: &[u8]) -> Self;
}

/// Runs merged at once: each open run holds a read buffer, and the heap
/// compares one record per run. More runs are merged in rounds.
const MAX_FAN_IN: usize = 64;
/// Read and write buffer per run file.
const IO_BUF: usize = 64 << 10;

/// A sorter that spills to run files past its budget.
pub(super) struct Spill<T: Record> {
    dir: PathBuf,
    name: &'static str,
    /// Records held in memory before a run is written (at least one).
    cap: usize,
    buf: Vec<T>,
    /// Run files not yet merged, with their record counts.
    runs: Vec<(PathBuf, u64)>,
    /// Run files written, intermediate merges included.
    files: u64,
}

impl<T: Record> Spill<T> {
    /// A sorter writing runs named `name-N.run` in `dir`, holding at most
    /// `budget` bytes of records in memory.
    pub(super) fn new(dir: &Path, name: &'static str, budget: usize) -> Self {
        Self {
            dir: dir.to_path_buf(),
            name,
            cap: (budget / size_of::<T>()).max(1),
            buf: Vec::new(),
            runs: Vec::new(),
            files: 0,
        }
    }

    /// Adds a record; writes a run when the buffer is full.
    pub(super) fn push(&mut self, r: T) -> io::Result<()> {
        if self.buf.len() == self.buf.capacity() {
            // Grow in steps up to the budget, never past it (a doubling
            // `Vec` could reserve twice the budget).
            let more = self.buf.len().clamp(1024, 1 << 20);
            self.buf
                .reserve_exact(more.min(self.cap - self.buf.len()).max(1));
        }
        self.buf.push(r);
        if self.buf.len() >= self.cap {
            self.write_run()?;
        }
        Ok(())
    }

    /// Run files written so far.
    #[cfg(test)]
    fn files(&self) -> u64 {
        self.files
    }

    /// Once some runs are on disk, writes the rest too and frees the
    /// buffer, so memory is free for the next step before the merge.
    pub(super) fn seal(&mut self) -> io::Result<()> {
        if !self.runs.is_empty() {
            if !self.buf.is_empty() {
                self.write_run()?;
            }
            self.buf = Vec::new();
        }
        Ok(())
    }

    fn new_run(&mut self) -> io::Result<(PathBuf, BufWriter<File>)> {
        let path = self.dir.join(format!("{}-{}.run", self.name, self.files));
        self.files += 1;
        let w = BufWriter::with_capacity(IO_BUF, File::create(&path)?);
        Ok((path, w))
    }

    fn write_run(&mut self) -> io::Result<()> {
        self.buf.par_sort_unstable();
        let (path, mut w) = self.new_run()?;
        let mut b = vec![0u8; T::LEN];
        for r in &self.buf {
            r.encode(&mut b);
            w.write_all(&b)?;
        }
        w.flush()?;
        self.runs.push((path, self.buf.len() as u64));
        self.buf.clear();
        Ok(())
    }

    /// The records in ascending order, and the number of run files
    /// written. Runs beyond [`MAX_FAN_IN`] are first merged into larger
    /// runs.
    pub(super) fn finish(mut self) -> io::Result<(Merge<T>, u64)> {
        self.buf.par_sort_unstable();
        while self.runs.len() > MAX_FAN_IN {
            let group: Vec<(PathBuf, u64)> = self.runs.drain(..MAX_FAN_IN).collect();
            let mut m: Merge<T> = Merge::new(&group, Vec::new())?;
            let (path, mut w) = self.new_run()?;
            let mut b = vec![0u8; T::LEN];
            let mut n = 0u64;
            for r in &mut m {
                r?.encode(&mut b);
                w.write_all(&b)?;
                n += 1;
            }
            w.flush()?;
            for (p, _) in &group {
                let _ = std::fs::remove_file(p);
            }
            self.runs.push((path, n));
        }
        let m = Merge::new(&self.runs, std::mem::take(&mut self.buf))?;
        Ok((m, self.files))
    }
}

/// One input of a merge.
enum Source<T> {
    File(BufReader<File>, u64, Vec<u8>),
    Memory(std::vec::IntoIter<T>),
}

impl<T: Record> Source<T> {
    fn next(&mut self) -> io::Result<Option<T>> {
        match self {
            Source::Memory(it) => Ok(it.next()),
            Source::File(_, 0, _) => Ok(None),
            Source::File(r, left, b) => {
                r.read_exact(b)?;
                *left -= 1;
                Ok(Some(T::decode(b)))
            }
        }
    }
}

/// The ascending merge of a spill's runs and its in-memory rest.
pub(super) struct Merge<T: Record> {
    sources: Vec<Source<T>>,
    heap: BinaryHeap<Reverse<(T, usize)>>,
    failed: bool,
}

impl<T: Record> Merge<T> {
    fn new(runs: &[(PathBuf, u64)], rest: Vec<T>) -> io::Result<Self> {
        let mut sources = Vec::with_capacity(runs.len() + 1);
        for (p, n) in runs {
            sources.push(Source::File(
                BufReader::with_capacity(IO_BUF, File::open(p)?),
                *n,
                vec![0u8; T::LEN],
            ));
        }
        sources.push(Source::Memory(rest.into_iter()));
        let mut heap = BinaryHeap::with_capacity(sources.len());
        for (i, s) in sources.iter_mut().enumerate() {
            if let Some(r) = s.next()? {
                heap.push(Reverse((r, i)));
            }
        }
        Ok(Self {
            sources,
            heap,
            failed: false,
        })
    }
}

impl<T: Record> Iterator for Merge<T> {
    type Item = io::Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let Reverse((r, i)) = self.heap.pop()?;
        match self.sources[i].next() {
            Ok(Some(n)) => self.heap.push(Reverse((n, i))),
            Ok(None) => {}
            Err(e) => {
                self.failed = true;
                return Some(Err(e));
            }
        }
        Some(Ok(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    struct R(u64, u32);

    impl Record for R {
        const LEN: usize = 12;
        fn encode(&self, out: &mut [u8]) {
            out[..8].copy_from_slice(&self.0.to_le_bytes());
            out[8..12].copy_from_slice(&self.1.to_le_bytes());
        }
        fn decode(b: &[u8]) -> Self {
            let mut a = [0; 8];
            a.copy_from_slice(&b[..8]);
            let mut c = [0; 4];
            c.copy_from_slice(&b[8..12]);
            R(u64::from_le_bytes(a), u32::from_le_bytes(c))
        }
    }

    fn input(n: u32) -> Vec<R> {
        let mut x = cairn_testkit::rng::XorShift::new(0x9e37_79b9);
        (0..n)
            .map(|i| R(x.below(1000), i)) // many equal keys
            .collect()
    }

    fn sorted(budget: usize, v: &[R]) -> (Vec<R>, u64) {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spill::new(d.path(), "t", budget);
        for r in v {
            s.push(*r).unwrap();
        }
        let (m, files) = s.finish().unwrap();
        (m.map(Result::unwrap).collect(), files)
    }

    #[test]
    fn spilled_and_in_memory_sorts_agree_with_a_plain_sort() {
        let v = input(20_000);
        let mut want = v.clone();
        want.sort();
        let (mem, files) = sorted(1 << 30, &v);
        assert_eq!(files, 0);
        assert_eq!(mem, want);
        // 16 records per run: 1,250 runs, merged in rounds of 64.
        let (spilled, files) = sorted(16 * size_of::<R>(), &v);
        assert!(files > 1250, "{files} run files"); // 1,250 + 19 merged
        assert_eq!(spilled, want);
        // A budget below one record still sorts, a record per run.
        let (tiny, _) = sorted(1, &v[..300]);
        let mut w = v[..300].to_vec();
        w.sort();
        assert_eq!(tiny, w);
    }

    #[test]
    fn seal_writes_the_rest_once_spilling() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spill::new(d.path(), "t", 10 * size_of::<R>());
        let v = input(25);
        for r in &v {
            s.push(*r).unwrap();
        }
        s.seal().unwrap();
        assert_eq!(s.files(), 3);
        assert!(s.buf.capacity() == 0);
        // Without runs, the records stay in memory.
        let mut small = Spill::new(d.path(), "u", 1 << 20);
        small.push(R(1, 1)).unwrap();
        small.seal().unwrap();
        assert_eq!(small.files(), 0);
        assert_eq!(small.finish().unwrap().0.count(), 1);
        let out: Vec<R> = s.finish().unwrap().0.map(Result::unwrap).collect();
        let mut want = v;
        want.sort();
        assert_eq!(out, want);
    }
}
