//! Sorted run files: the cache's blob index (SPEC §12.1).
//!
//! A run is an immutable file of fixed-size records sorted by blob id, with
//! the pack ids its records point to, a fence (the first 8 id bytes of every
//! 4 KiB block) and a blocked Bloom filter of one byte per record. The pack
//! table, fence and filter are held in memory, about 1.1 bytes per blob and
//! 32 per pack: a lookup of an absent id (most of a backup's lookups)
//! usually ends in the filter without touching the file, and one of a
//! present id binary-searches the fence and reads one block with a
//! positioned read. The records stay on disk, so the index never has to fit
//! in RAM (a SQLite B-tree did the same job at
//! a fifth of the speed and grew slower to fill as it grew).
//!
//! Not a memory map: random lookups would make the whole file resident in
//! the process (the kernel maps 16 neighbouring pages per fault, even with
//! MADV_RANDOM), and the resident set would grow with the repository.
//! Runs are merged k ways in a streaming pass, like an LSM tree's levels.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::blob::BlobKind;
use crate::id::{BlobId, PackId};
use crate::pack::PackEntry;

/// First bytes of a run file.
pub const RUN_MAGIC: [u8; 8] = *b"CAIRNRN\x1a";
/// Run file format version.
pub const RUN_VERSION: u32 = 1;
/// Header length: magic, version, reserved, record and pack counts, the
/// offsets of the records and the fence, and the filter's block count.
pub const HEADER_LEN: u64 = 56;
/// One record: id (32), kind (1), zero padding (3), pack number, offset,
/// length and raw length (u32 LE each).
pub const RECORD_LEN: usize = 52;
/// Records per fence block: 78 × 52 = 4,056 bytes, one page read.
pub const BLOCK_RECORDS: usize = 78;
/// Bytes per filter block: one cache line, so a query misses the CPU
/// cache once.
pub const FILTER_BLOCK: usize = 64;
/// Bits a filter query tests (and an insert sets) within its block: with
/// 8 bits per record, about 2–3 % of absent ids pass the filter.
pub const FILTER_PROBES: u32 = 6;

/// One blob's location, with the pack as a number into the run's pack table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The blob id's bytes (the sort key).
    pub id: [u8; 32],
    /// The blob kind's byte (SPEC §6.3).
    pub kind: u8,
    /// Index into the run's pack table.
    pub pack_no: u32,
    /// Byte offset of the sealed blob in its pack.
    pub offset: u32,
    /// Sealed length.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
}

impl Record {
    fn encode(&self, out: &mut [u8]) {
        out[..32].copy_from_slice(&self.id);
        out[32] = self.kind;
        out[33..36].fill(0);
        out[36..40].copy_from_slice(&self.pack_no.to_le_bytes());
        out[40..44].copy_from_slice(&self.offset.to_le_bytes());
        out[44..48].copy_from_slice(&self.length.to_le_bytes());
        out[48..52].copy_from_slice(&self.raw_length.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Self {
        let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut id = [0; 32];
        id.copy_from_slice(&b[..32]);
        Self {
            id,
            kind: b[32],
            pack_no: u(36),
            offset: u(40),
            length: u(44),
            raw_length: u(48),
        }
    }

    /// The pack entry this record describes, if its kind byte is valid.
    pub fn entry(&self) -> Option<PackEntry> {
        Some(PackEntry {
            kind: BlobKind::from_byte(self.kind)?,
            id: BlobId::from_bytes(self.id),
            offset: self.offset,
            length: self.length,
            raw_length: self.raw_length,
        })
    }
}

fn damaged(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("cache run {}: {what}", path.display()),
    )
}

fn prefix(id: &[u8; 32]) -> [u8; 8] {
    let mut p = [0; 8];
    p.copy_from_slice(&id[..8]);
    p
}

/// The filter block of `id` and the bits it tests there. Blob ids are keyed
/// hashes, uniformly distributed: their bytes serve as the hash values
/// (bytes 8..16 pick the block, bytes 16..24 the bits; bytes 0..8 already
/// sort the records).
fn filter_slot(id: &[u8; 32], blocks: u64) -> (usize, [u16; FILTER_PROBES as usize]) {
    let word = |i: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&id[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let block = ((u128::from(word(8)) * u128::from(blocks)) >> 64) as usize;
    let bits = word(16);
    let mut probes = [0u16; FILTER_PROBES as usize];
    for (i, p) in probes.iter_mut().enumerate() {
        *p = ((bits >> (9 * i)) & 511) as u16;
    }
    (block, probes)
}

/// Filter blocks for `records` records: one byte per record.
fn filter_blocks(records: u64) -> u64 {
    records.div_ceil(FILTER_BLOCK as u64).max(1)
}

/// An open run file.
#[derive(Debug)]
pub struct Run {
    name: String,
    file: File,
    records: u64,
    records_offset: u64,
    pack_table: Vec<PackId>,
    fence: Vec<[u8; 8]>,
    filter: Vec<u8>,
    /// The records themselves, for a run small enough to hold whole (see
    /// [`HELD_RUN_BYTES`]); `None` reads each lookup's block from the file.
    held: Option<Vec<u8>>,
}

/// Runs whose records take at most this many bytes (about 80,000 blobs)
/// are read into memory when opened: a backup of unchanged files looks up
/// every chunk of every file, and a `pread` per lookup was 10 % of such a
/// backup's CPU time. Larger runs keep memory flat by reading one block per
/// lookup; with at most six runs this holds at most 24 MiB.
pub const HELD_RUN_BYTES: u64 = 4 << 20;

impl Run {
    /// Opens and validates the run `dir/name`: magic, version, and that the
    /// file's length matches its header. Reads the fence and the filter.
    pub fn open(dir: &Path, name: &str) -> io::Result<Self> {
        Self::open_holding(dir, name, HELD_RUN_BYTES)
    }

    /// [`Run::open`], holding the records in memory if they take at most
    /// `hold_limit` bytes.
    fn open_holding(dir: &Path, name: &str, hold_limit: u64) -> io::Result<Self> {
        let path = dir.join(name);
        let file = File::open(&path)?;
        let mut h = [0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut h, 0)
            .map_err(|_| damaged(&path, "truncated header"))?;
        let u64_at = |i: usize| {
            let mut b = [0; 8];
            b.copy_from_slice(&h[i..i + 8]);
            u64::from_le_bytes(b)
        };
        if h[..8] != RUN_MAGIC || h[8..12] != RUN_VERSION.to_le_bytes() {
            return Err(damaged(&path, "not a run file of this version"));
        }
        let (records, packs, records_offset, fence_offset, filter) =
            (u64_at(16), u64_at(24), u64_at(32), u64_at(40), u64_at(48));
        let fence_len = records.div_ceil(BLOCK_RECORDS as u64) * 8;
        let expect_records = packs
            .checked_mul(32)
            .and_then(|p| p.checked_add(HEADER_LEN));
        let expect_fence = records
            .checked_mul(RECORD_LEN as u64)
            .and_then(|r| r.checked_add(records_offset));
        let expect_len = filter
            .checked_mul(FILTER_BLOCK as u64)
            .and_then(|f| f.checked_add(fence_len))
            .and_then(|f| f.checked_add(fence_offset));
        let len = file.metadata()?.len();
        if expect_records != Some(records_offset)
            || expect_fence != Some(fence_offset)
            || expect_len != Some(len)
            || filter == 0
        {
            return Err(damaged(&path, "length does not match its header"));
        }
        let mut raw = vec![0u8; fence_len as usize];
        file.read_exact_at(&mut raw, fence_offset)?;
        let fence = raw.chunks_exact(8).map(|c| c.try_into().unwrap_or([0; 8]));
        let mut bloom = vec![0u8; (filter * FILTER_BLOCK as u64) as usize];
        file.read_exact_at(&mut bloom, fence_offset + fence_len)?;
        // Read in pieces: a whole copy of a large table would double the peak.
        let mut pack_table = Vec::with_capacity(packs as usize);
        let mut r = BufReader::with_capacity(
            1 << 16,
            AtReader {
                file: &file,
                pos: HEADER_LEN,
            },
        );
        let mut b = [0u8; 32];
        for _ in 0..packs {
            r.read_exact(&mut b)?;
            pack_table.push(PackId::from_bytes(b));
        }
        drop(r);
        let records_len = records * RECORD_LEN as u64;
        let held = if records_len <= hold_limit {
            let mut b = vec![0u8; records_len as usize];
            file.read_exact_at(&mut b, records_offset)?;
            Some(b)
        } else {
            None
        };
        Ok(Self {
            pack_table,
            name: name.to_string(),
            file,
            records,
            records_offset,
            fence: fence.collect(),
            filter: bloom,
            held,
        })
    }

    /// The file name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of records.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes of memory the open run holds (pack table, fence, filter and,
    /// for a small run, its records).
    pub fn memory(&self) -> usize {
        self.pack_table.len() * 32
            + self.fence.len() * 8
            + self.filter.len()
            + self.held.as_ref().map_or(0, Vec::len)
    }

    /// False if the run certainly has no record for `id`.
    pub fn may_contain(&self, id: &[u8; 32]) -> bool {
        let (block, probes) = filter_slot(id, (self.filter.len() / FILTER_BLOCK) as u64);
        let b = &self.filter[block * FILTER_BLOCK..(block + 1) * FILTER_BLOCK];
        probes
            .iter()
            .all(|&p| b[usize::from(p / 8)] & (1 << (p % 8)) != 0)
    }

    /// The record for `id`, if the run has one.
    pub fn find(&self, id: &[u8; 32]) -> io::Result<Option<Record>> {
        if !self.may_contain(id) {
            return Ok(None);
        }
        let key = prefix(id);
        // Blocks before the last one whose first prefix is below `key` hold
        // only smaller ids; a block whose first prefix equals `key` may share
        // it with the previous block's tail, so scanning starts one earlier.
        let first = self.fence.partition_point(|f| f < &key).saturating_sub(1);
        let mut buf = [0u8; BLOCK_RECORDS * RECORD_LEN];
        for b in first..self.fence.len() {
            if self.fence[b] > key {
                return Ok(None);
            }
            let start = b as u64 * BLOCK_RECORDS as u64;
            let n = (self.records - start).min(BLOCK_RECORDS as u64) as usize;
            let bytes: &[u8] = match &self.held {
                Some(h) => {
                    let at = start as usize * RECORD_LEN;
                    &h[at..at + n * RECORD_LEN]
                }
                None => {
                    let bytes = &mut buf[..n * RECORD_LEN];
                    self.file
                        .read_exact_at(bytes, self.records_offset + start * RECORD_LEN as u64)?;
                    bytes
                }
            };
            let ids = |i: usize| &bytes[i * RECORD_LEN..i * RECORD_LEN + 32];
            let (mut lo, mut hi) = (0, n);
            while lo < hi {
                let mid = (lo + hi) / 2;
                match ids(mid).cmp(id.as_slice()) {
                    std::cmp::Ordering::Less => lo = mid + 1,
                    std::cmp::Ordering::Greater => hi = mid,
                    std::cmp::Ordering::Equal => {
                        return Ok(Some(Record::decode(
                            &bytes[mid * RECORD_LEN..(mid + 1) * RECORD_LEN],
                        )));
                    }
                }
            }
            if lo < n {
                // A larger id in this block: `id` would have been here.
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Pack `no` of the pack table.
    pub fn pack(&self, no: u32) -> io::Result<PackId> {
        self.pack_table
            .get(no as usize)
            .copied()
            .ok_or_else(|| damaged(Path::new(&self.name), "pack number out of range"))
    }

    /// Calls `f` with every pack id of the pack table, in order.
    pub fn for_each_pack(&self, mut f: impl FnMut(PackId)) -> io::Result<()> {
        self.pack_table.iter().for_each(|p| f(*p));
        Ok(())
    }

    fn reader(&self, offset: u64) -> BufReader<AtReader<'_>> {
        BufReader::with_capacity(
            1 << 16,
            AtReader {
                file: &self.file,
                pos: offset,
            },
        )
    }
}

/// Reads a file from a position of its own: merges read runs that lookups
/// are reading at the same time, so the shared file offset is never used.
struct AtReader<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for AtReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Writes a run from records in ascending id order; a record whose id
/// equals the previous one is dropped (the first location wins, SPEC §12).
struct Writer {
    tmp: PathBuf,
    out: BufWriter<File>,
    records: u64,
    packs: u64,
    fence: Vec<[u8; 8]>,
    /// Sized by the records offered; duplicates dropped leave it sparser.
    filter: Vec<u8>,
    last: Option<[u8; 32]>,
}

impl Writer {
    fn create(dir: &Path, packs: u64, max_records: u64) -> io::Result<Self> {
        let tmp = dir.join(format!(".tmp-{}", hex::encode(rand::random::<[u8; 8]>())));
        let mut out = BufWriter::with_capacity(1 << 16, File::create(&tmp)?);
        out.write_all(&[0u8; HEADER_LEN as usize])?;
        Ok(Self {
            tmp,
            out,
            records: 0,
            packs,
            fence: Vec::new(),
            filter: vec![0u8; filter_blocks(max_records) as usize * FILTER_BLOCK],
            last: None,
        })
    }

    fn pack(&mut self, id: &PackId) -> io::Result<()> {
        self.out.write_all(id.as_bytes())
    }

    fn record(&mut self, r: &Record) -> io::Result<()> {
        if let Some(last) = &self.last {
            debug_assert!(last <= &r.id, "run records out of order");
            if last == &r.id {
                return Ok(());
            }
        }
        if self.records.is_multiple_of(BLOCK_RECORDS as u64) {
            self.fence.push(prefix(&r.id));
        }
        let mut b = [0u8; RECORD_LEN];
        r.encode(&mut b);
        self.out.write_all(&b)?;
        self.records += 1;
        let (block, probes) = filter_slot(&r.id, (self.filter.len() / FILTER_BLOCK) as u64);
        for p in probes {
            self.filter[block * FILTER_BLOCK + usize::from(p / 8)] |= 1 << (p % 8);
        }
        self.last = Some(r.id);
        Ok(())
    }

    /// Writes the fence, filter and header and names the file; returns the
    /// name.
    fn finish(mut self, dir: &Path) -> io::Result<String> {
        for f in &self.fence {
            self.out.write_all(f)?;
        }
        let blocks = (self.filter.len() / FILTER_BLOCK) as u64;
        self.out.write_all(&self.filter)?;
        let records_offset = HEADER_LEN + self.packs * 32;
        let fence_offset = records_offset + self.records * RECORD_LEN as u64;
        let mut h = Vec::with_capacity(HEADER_LEN as usize);
        h.extend_from_slice(&RUN_MAGIC);
        h.extend_from_slice(&RUN_VERSION.to_le_bytes());
        h.extend_from_slice(&[0; 4]);
        for v in [
            self.records,
            self.packs,
            records_offset,
            fence_offset,
            blocks,
        ] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&h)?;
        drop(file);
        // No fsync: the cache is disposable, and a run torn by a crash fails
        // its length check on open, which rebuilds the cache.
        let name = format!("run-{}.bin", hex::encode(rand::random::<[u8; 12]>()));
        std::fs::rename(&self.tmp, dir.join(&name))?;
        Ok(name)
    }
}

/// Writes a run of the blobs of `packs` (sorted here) in `dir`; returns
/// its name and record count.
pub fn build(dir: &Path, packs: &[(PackId, Vec<PackEntry>)]) -> io::Result<(String, u64)> {
    let mut recs: Vec<Record> = Vec::with_capacity(packs.iter().map(|p| p.1.len()).sum());
    for (no, (_, entries)) in packs.iter().enumerate() {
        recs.extend(entries.iter().map(|e| Record {
            id: *e.id.as_bytes(),
            kind: e.kind.to_byte(),
            pack_no: no as u32,
            offset: e.offset,
            length: e.length,
            raw_length: e.raw_length,
        }));
    }
    // Stable: of two locations of one blob, the first listed is kept.
    recs.sort_by_key(|r| r.id);
    let mut w = Writer::create(dir, packs.len() as u64, recs.len() as u64)?;
    for (p, _) in packs {
        w.pack(p)?;
    }
    for r in &recs {
        w.record(r)?;
    }
    let n = w.records;
    Ok((w.finish(dir)?, n))
}

/// Merges `runs` into one new run in `dir` in a single streaming pass;
/// returns its name and record count. Where runs share a blob id, the
/// earliest run's record is kept.
pub fn merge(dir: &Path, runs: &[&Run]) -> io::Result<(String, u64)> {
    let total_packs = runs.iter().map(|r| r.pack_table.len() as u64).sum();
    let offered = runs.iter().map(|r| r.records).sum();
    let mut w = Writer::create(dir, total_packs, offered)?;
    let mut bases = Vec::with_capacity(runs.len());
    let mut base = 0u64;
    for r in runs {
        bases.push(u32::try_from(base).map_err(|_| damaged(dir, "too many packs"))?);
        for p in &r.pack_table {
            w.pack(p)?;
        }
        base += r.pack_table.len() as u64;
    }
    let mut heads: Vec<(BufReader<AtReader<'_>>, u64, Option<Record>)> = runs
        .iter()
        .map(|r| (r.reader(r.records_offset), r.records, None))
        .collect();
    let next = |h: &mut (BufReader<AtReader<'_>>, u64, Option<Record>), base: u32| {
        h.2 = None;
        if h.1 > 0 {
            let mut b = [0u8; RECORD_LEN];
            h.0.read_exact(&mut b)?;
            let mut r = Record::decode(&b);
            r.pack_no += base;
            h.1 -= 1;
            h.2 = Some(r);
        }
        io::Result::Ok(())
    };
    for (h, b) in heads.iter_mut().zip(&bases) {
        next(h, *b)?;
    }
    // k is small (a handful of runs): a linear scan for the minimum beats a heap.
    loop {
        let mut min: Option<usize> = None;
        for (i, h) in heads.iter().enumerate() {
            if let Some(r) = &h.2
                && min.is_none_or(|m| heads[m].2.is_some_and(|mr| r.id < mr.id))
            {
                min = Some(i);
            }
        }
        let Some(i) = min else { break };
        if let Some(r) = heads[i].2 {
            w.record(&r)?;
        }
        next(&mut heads[i], bases[i])?;
    }
    let n = w.records;
    Ok((w.finish(dir)?, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: [u8; 32], n: u32) -> PackEntry {
        PackEntry {
            kind: BlobKind::Data,
            id: BlobId::from_bytes(id),
            offset: n,
            length: n + 1,
            raw_length: n + 2,
        }
    }

    fn random_ids(seed: u64, n: usize) -> Vec<[u8; 32]> {
        let mut x = cairn_testkit::rng::XorShift::new(seed);
        (0..n)
            .map(|_| {
                let mut id = [0u8; 32];
                x.fill(&mut id);
                id
            })
            .collect()
    }

    #[test]
    fn finds_every_record_and_no_absent_one_across_blocks() {
        let d = tempfile::tempdir().unwrap();
        let ids = random_ids(7, 5000);
        let packs: Vec<(PackId, Vec<PackEntry>)> = ids
            .chunks(100)
            .enumerate()
            .map(|(p, c)| {
                let entries = c.iter().enumerate().map(|(i, id)| entry(*id, i as u32));
                (PackId::from_bytes([p as u8; 32]), entries.collect())
            })
            .collect();
        let (name, n) = build(d.path(), &packs).unwrap();
        assert_eq!(n, 5000);
        // Once held in memory, once read block by block from the file.
        for hold_limit in [HELD_RUN_BYTES, 0] {
            let run = Run::open_holding(d.path(), &name, hold_limit).unwrap();
            assert_eq!(run.held.is_some(), hold_limit > 0);
            assert_eq!(run.fence.len(), 5000usize.div_ceil(BLOCK_RECORDS));
            for (p, (pack, entries)) in packs.iter().enumerate() {
                for e in entries {
                    let r = run
                        .find(e.id.as_bytes())
                        .unwrap()
                        .expect("present id found");
                    assert_eq!(r.entry(), Some(*e));
                    assert_eq!(r.pack_no as usize, p);
                    assert_eq!(run.pack(r.pack_no).unwrap(), *pack);
                }
            }
            let absent = random_ids(8, 20_000);
            for id in &absent {
                assert_eq!(run.find(id).unwrap(), None);
            }
            // The filter passes every present id and few absent ones.
            assert!(ids.iter().all(|id| run.may_contain(id)));
            let passed = absent.iter().filter(|id| run.may_contain(id)).count();
            assert!(passed < 20_000 / 20, "{passed} of 20000 absent ids passed");
            assert_eq!(run.find(&[0; 32]).unwrap(), None);
            assert_eq!(run.find(&[0xff; 32]).unwrap(), None);
        }
    }

    #[test]
    fn shared_prefixes_straddling_a_block_boundary_are_found() {
        let d = tempfile::tempdir().unwrap();
        // 300 ids with one 8-byte prefix: they fill several blocks, and the
        // fence alone cannot tell which block holds which.
        let mut ids = random_ids(3, 300);
        for id in &mut ids {
            id[..8].copy_from_slice(&[5; 8]);
        }
        ids.extend(random_ids(4, 300));
        let entries: Vec<PackEntry> = ids.iter().map(|id| entry(*id, 1)).collect();
        let (name, _) = build(d.path(), &[(PackId::from_bytes([1; 32]), entries)]).unwrap();
        for hold_limit in [HELD_RUN_BYTES, 0] {
            let run = Run::open_holding(d.path(), &name, hold_limit).unwrap();
            for id in &ids {
                assert!(run.find(id).unwrap().is_some());
            }
            let mut absent = [5u8; 32];
            absent[31] = 0;
            absent[30] = 0xaa;
            assert!(!ids.contains(&absent));
            assert_eq!(run.find(&absent).unwrap(), None);
        }
    }

    #[test]
    fn merge_keeps_every_id_once_and_remaps_packs() {
        let d = tempfile::tempdir().unwrap();
        let a_ids = random_ids(11, 700);
        let mut b_ids = random_ids(12, 500);
        b_ids.extend_from_slice(&a_ids[..50]); // duplicates: a's location wins
        let pa = PackId::from_bytes([0xa; 32]);
        let pb = PackId::from_bytes([0xb; 32]);
        let e = |ids: &[[u8; 32]], n| ids.iter().map(|id| entry(*id, n)).collect::<Vec<_>>();
        let (a, _) = build(d.path(), &[(pa, e(&a_ids, 1))]).unwrap();
        let (b, _) = build(d.path(), &[(pb, e(&b_ids, 2))]).unwrap();
        let (ra, rb) = (
            Run::open(d.path(), &a).unwrap(),
            Run::open(d.path(), &b).unwrap(),
        );
        let (m, n) = merge(d.path(), &[&ra, &rb]).unwrap();
        assert_eq!(n, 1200);
        let run = Run::open(d.path(), &m).unwrap();
        assert_eq!(run.pack_table.len(), 2);
        for id in &a_ids {
            let r = run.find(id).unwrap().unwrap();
            assert_eq!((run.pack(r.pack_no).unwrap(), r.offset), (pa, 1));
        }
        for id in &b_ids[..500] {
            let r = run.find(id).unwrap().unwrap();
            assert_eq!((run.pack(r.pack_no).unwrap(), r.offset), (pb, 2));
        }
    }

    /// The byte layout of SPEC §12.1, written out by hand.
    #[test]
    fn golden_run_file() {
        let d = tempfile::tempdir().unwrap();
        let e = PackEntry {
            kind: BlobKind::Tree,
            id: BlobId::from_bytes([0x22; 32]),
            offset: 8,
            length: 0x0102,
            raw_length: 0x0304_0506,
        };
        let (name, _) = build(d.path(), &[(PackId::from_bytes([0x11; 32]), vec![e])]).unwrap();
        assert!(name.starts_with("run-") && name.ends_with(".bin") && name.len() == 32);
        let want = [
            "434149524e524e1a",                 // magic
            "01000000",                         // version
            "00000000",                         // reserved
            "0100000000000000",                 // records
            "0100000000000000",                 // packs
            "5800000000000000",                 // records offset: 56 + 32
            "8c00000000000000",                 // fence offset: 88 + 52
            "0100000000000000",                 // filter blocks
            &"11".repeat(32),                   // the pack table
            &"22".repeat(32),                   // the record: id,
            "01000000",                         // kind 1 (tree), padding,
            "00000000080000000201000006050403", // pack 0, offset, length, raw length
            "2222222222222222",                 // the fence
            // The filter: block 0 of 1; bytes 16..24 of the id give probes
            // 0x022 = 34, 0x111 = 273, 0x088 = 136, 0x044 = 68, 0x022 = 34,
            // 0x111 = 273: bits 34, 68, 136, 273, i.e. byte 4 = 0x04,
            // byte 8 = 0x10, byte 17 = 0x01, byte 34 = 0x02.
            "00000000040000001000000000000000",
            "00010000000000000000000000000000",
            "00000200000000000000000000000000",
            "00000000000000000000000000000000",
        ]
        .concat();
        let got = hex::encode(std::fs::read(d.path().join(&name)).unwrap());
        assert_eq!(got, want);
    }

    #[test]
    fn a_truncated_or_foreign_file_is_rejected_on_open() {
        let d = tempfile::tempdir().unwrap();
        let entries: Vec<PackEntry> = random_ids(1, 200).iter().map(|i| entry(*i, 0)).collect();
        let (name, _) = build(d.path(), &[(PackId::from_bytes([1; 32]), entries)]).unwrap();
        let p = d.path().join(&name);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(
            Run::open(d.path(), &name).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let mut other = bytes.clone();
        other[0] ^= 1;
        std::fs::write(&p, other).unwrap();
        assert_eq!(
            Run::open(d.path(), &name).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        std::fs::write(&p, &bytes[..10]).unwrap();
        assert!(Run::open(d.path(), &name).is_err());
    }
}
