//! The check's view of the index (docs/check.md §1), built from the index files
//! without holding their entries in memory.
//!
//! Every pack description of every index file is a *slot*: its entries are
//! appended to an entries file in the scratch directory (45 bytes each, in
//! pack order) and its blobs go, by id, into an external sort (`spill`).
//! Memory holds one small record per slot, the locations of tree blobs
//! (the walk loads trees by id; there are few of them), and the sort's
//! buffer. Once every file is read, each pack's *winning* slot is the first
//! one in a file no other file supersedes; a later slot that lists other
//! entries is a conflict. Per-pack questions (size, header) read the
//! winner's entries back with one positioned read; per-blob questions (is
//! a referenced chunk indexed, and as data?) are answered by merging the
//! sorted references with the sorted locations.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::spill::{Merge, Record, Spill};
use crate::blob::BlobKind;
use crate::id::{BlobId, PackId};
use crate::index::IndexPack;
use crate::pack::{BlobLocation, PACK_ENTRY_LEN, PackEntry};

/// One pack as one index file describes it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    /// The pack.
    pub pack: PackId,
    /// Number of the index file (in name order).
    pub file: u32,
    /// Its first entry's number in the entries file.
    first: u64,
    /// Its entry count.
    pub count: u32,
}

/// One location of a blob, sorted by id (then slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Located {
    id: [u8; 32],
    slot: u32,
    kind: u8,
}

impl Record for Located {
    const LEN: usize = 32 + 4 + 1;
    fn encode(&self, out: &mut [u8]) {
        out[..32].copy_from_slice(&self.id);
        out[32..36].copy_from_slice(&self.slot.to_le_bytes());
        out[36] = self.kind;
    }
    fn decode(b: &[u8]) -> Self {
        let mut id = [0; 32];
        id.copy_from_slice(&b[..32]);
        Self {
            id,
            slot: u32::from_le_bytes([b[32], b[33], b[34], b[35]]),
            kind: b[36],
        }
    }
}

/// A data blob a file references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Ref(pub [u8; 32]);

impl Record for Ref {
    const LEN: usize = 32;
    fn encode(&self, out: &mut [u8]) {
        out.copy_from_slice(&self.0);
    }
    fn decode(b: &[u8]) -> Self {
        let mut id = [0; 32];
        id.copy_from_slice(b);
        Self(id)
    }
}

/// Entries in the entries file: the pack header's entry layout (SPEC §7.2).
fn encode_entry(e: &PackEntry, out: &mut [u8; PACK_ENTRY_LEN]) {
    out[0] = e.kind.to_byte();
    out[1..33].copy_from_slice(e.id.as_bytes());
    out[33..37].copy_from_slice(&e.offset.to_le_bytes());
    out[37..41].copy_from_slice(&e.length.to_le_bytes());
    out[41..45].copy_from_slice(&e.raw_length.to_le_bytes());
}

fn decode_entry(b: &[u8]) -> io::Result<PackEntry> {
    let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut id = [0; 32];
    id.copy_from_slice(&b[1..33]);
    Ok(PackEntry {
        kind: BlobKind::from_byte(b[0])
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "check scratch: bad kind"))?,
        id: BlobId::from_bytes(id),
        offset: u(33),
        length: u(37),
        raw_length: u(41),
    })
}

/// Collects the index files' packs, in index file name order.
pub(super) struct ViewBuilder {
    out: BufWriter<File>,
    path: std::path::PathBuf,
    written: u64,
    slots: Vec<Slot>,
    by_id: Spill<Located>,
    trees: HashMap<BlobId, Vec<(u32, PackEntry)>>,
}

impl ViewBuilder {
    /// A builder writing into `dir`, sorting in `budget` bytes of memory.
    pub(super) fn new(dir: &Path, budget: usize) -> io::Result<Self> {
        let path = dir.join("entries.bin");
        Ok(Self {
            out: BufWriter::with_capacity(1 << 16, File::create(&path)?),
            path,
            written: 0,
            slots: Vec::new(),
            by_id: Spill::new(dir, "blobs", budget),
            trees: HashMap::new(),
        })
    }

    /// Adds one pack of index file number `file`.
    pub(super) fn add(&mut self, file: u32, pack: &IndexPack) -> io::Result<()> {
        let slot = u32::try_from(self.slots.len())
            .map_err(|_| io::Error::other("check scratch: too many packs"))?;
        let mut b = [0u8; PACK_ENTRY_LEN];
        for e in &pack.entries {
            encode_entry(e, &mut b);
            self.out.write_all(&b)?;
            self.by_id.push(Located {
                id: *e.id.as_bytes(),
                slot,
                kind: e.kind.to_byte(),
            })?;
            if e.kind == BlobKind::Tree {
                self.trees.entry(e.id).or_default().push((slot, *e));
            }
        }
        self.slots.push(Slot {
            pack: pack.id,
            file,
            first: self.written,
            count: pack.entries.len() as u32,
        });
        self.written += pack.entries.len() as u64;
        Ok(())
    }

    /// Picks each pack's winning slot, skipping the files `superseded`
    /// marks; returns the view and the conflicts found, as (winning slot,
    /// other slot) in slot order.
    pub(super) fn finish(
        mut self,
        superseded: &[bool],
    ) -> io::Result<(IndexView, Vec<(u32, u32)>)> {
        self.out.flush()?;
        drop(self.out);
        let entries = File::open(&self.path)?;
        self.by_id.seal()?;
        let live = |s: &Slot| !superseded.get(s.file as usize).copied().unwrap_or(false);
        let mut order: Vec<u32> = (0..self.slots.len() as u32).collect();
        order.sort_unstable_by_key(|&i| (self.slots[i as usize].pack, i));
        let mut winner = vec![false; self.slots.len()];
        let mut packs = Vec::new();
        let mut conflicts = Vec::new();
        let mut view = IndexView {
            entries,
            slots: Vec::new(),
            winner: Vec::new(),
            packs: Vec::new(),
            by_id: Some(self.by_id),
            trees: HashMap::new(),
        };
        let mut i = 0;
        while i < order.len() {
            let pack = self.slots[order[i] as usize].pack;
            let mut j = i;
            let mut first: Option<u32> = None;
            while j < order.len() && self.slots[order[j] as usize].pack == pack {
                let s = order[j];
                if live(&self.slots[s as usize]) {
                    match first {
                        None => first = Some(s),
                        Some(w) => {
                            let a = view.read(&self.slots[w as usize])?;
                            if a != view.read(&self.slots[s as usize])? {
                                conflicts.push((w, s));
                            }
                        }
                    }
                }
                j += 1;
            }
            if let Some(w) = first {
                winner[w as usize] = true;
                packs.push(w);
            }
            i = j;
        }
        conflicts.sort_unstable_by_key(|&(_, s)| s);
        self.trees.retain(|_, locs| {
            locs.retain(|(s, _)| winner[*s as usize]);
            !locs.is_empty()
        });
        view.slots = self.slots;
        view.winner = winner;
        view.packs = packs;
        view.trees = self.trees;
        Ok((view, conflicts))
    }
}

/// What the index says about a referenced data blob that is not simply
/// indexed as data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum RefIssue {
    /// In no index file.
    Missing,
    /// Indexed only as a tree, first in this pack.
    WrongKind(PackId),
}

/// What the index says about a tree that has no tree location.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum TreeIssue {
    /// In no index file.
    Missing,
    /// Indexed as a data blob in this (good) pack.
    DataBlob(PackId),
    /// Indexed only in packs known to be bad.
    InBadPack,
}

/// What the join found.
pub(super) struct Joined {
    /// References not indexed as data, ascending.
    pub refs: Vec<(BlobId, RefIssue)>,
    /// What each tree without a tree location is.
    pub trees: HashMap<BlobId, TreeIssue>,
    /// Run files the index's sort wrote.
    pub files: u64,
}

/// The index as the check sees it.
pub(super) struct IndexView {
    entries: File,
    slots: Vec<Slot>,
    winner: Vec<bool>,
    /// Winning slots, in pack id order.
    packs: Vec<u32>,
    /// Every location by blob id; taken by the join.
    by_id: Option<Spill<Located>>,
    trees: HashMap<BlobId, Vec<(u32, PackEntry)>>,
}

impl IndexView {
    fn read(&self, s: &Slot) -> io::Result<Vec<PackEntry>> {
        let mut buf = vec![0u8; s.count as usize * PACK_ENTRY_LEN];
        self.entries
            .read_exact_at(&mut buf, s.first * PACK_ENTRY_LEN as u64)?;
        buf.chunks_exact(PACK_ENTRY_LEN).map(decode_entry).collect()
    }

    /// A slot by number.
    pub(super) fn slot(&self, n: u32) -> &Slot {
        &self.slots[n as usize]
    }

    /// Indexed packs (each by its winning slot), in pack id order.
    pub(super) fn packs(&self) -> impl ExactSizeIterator<Item = &Slot> + '_ {
        self.packs.iter().map(|&s| &self.slots[s as usize])
    }

    /// The indexed pack `id`.
    pub(super) fn find(&self, id: &PackId) -> Option<&Slot> {
        self.packs
            .binary_search_by(|&s| self.slots[s as usize].pack.cmp(id))
            .ok()
            .map(|i| &self.slots[self.packs[i] as usize])
    }

    /// The entries of a slot, in pack order.
    pub(super) fn entries(&self, s: &Slot) -> io::Result<Vec<PackEntry>> {
        self.read(s)
    }

    /// Every indexed location of tree `id` (winning slots only).
    pub(super) fn tree_locations(&self, id: &BlobId) -> impl Iterator<Item = BlobLocation> + '_ {
        self.trees
            .get(id)
            .into_iter()
            .flatten()
            .map(|(s, e)| BlobLocation {
                pack: self.slots[*s as usize].pack,
                entry: *e,
            })
    }

    /// Joins the sorted references and the trees that have no tree location
    /// with every indexed location. Runs once: it consumes the sort.
    pub(super) fn join(
        &mut self,
        refs: Merge<Ref>,
        trees: &BTreeSet<BlobId>,
        bad_pack: &dyn Fn(&PackId) -> bool,
    ) -> io::Result<Joined> {
        let sort = self
            .by_id
            .take()
            .ok_or_else(|| io::Error::other("check scratch: index joined twice"))?;
        let (locs, files) = sort.finish()?;
        let winner = &self.winner;
        let mut locs = locs.filter(|r| r.as_ref().map_or(true, |l| winner[l.slot as usize]));
        let mut refs = refs.peekable();
        let mut trees = trees.iter().peekable();
        let (mut ref_out, mut tree_out) = (Vec::new(), HashMap::new());
        let mut pending = locs.next().transpose()?;
        let mut group: Vec<Located> = Vec::new();
        // Next distinct reference.
        // The next distinct reference.
        fn next_ref(refs: &mut std::iter::Peekable<Merge<Ref>>) -> io::Result<Option<[u8; 32]>> {
            let Some(r) = refs.next().transpose()? else {
                return Ok(None);
            };
            while refs
                .next_if(|n| n.as_ref().is_ok_and(|n| n.0 == r.0))
                .is_some()
            {}
            Ok(Some(r.0))
        }
        let mut cur_ref = next_ref(&mut refs)?;
        loop {
            group.clear();
            let Some(first) = pending else { break };
            while let Some(l) = pending.filter(|l| l.id == first.id) {
                group.push(l);
                pending = locs.next().transpose()?;
            }
            let id = first.id;
            while let Some(r) = cur_ref.filter(|r| *r <= id) {
                if r < id {
                    ref_out.push((BlobId::from_bytes(r), RefIssue::Missing));
                } else if group.iter().all(|l| l.kind != BlobKind::Data.to_byte()) {
                    let pack = self.slots[group[0].slot as usize].pack;
                    ref_out.push((BlobId::from_bytes(r), RefIssue::WrongKind(pack)));
                }
                cur_ref = next_ref(&mut refs)?;
            }
            while let Some(t) = trees.next_if(|t| *t.as_bytes() <= id) {
                let issue = if *t.as_bytes() < id {
                    TreeIssue::Missing
                } else {
                    match group
                        .iter()
                        .map(|l| self.slots[l.slot as usize].pack)
                        .find(|p| !bad_pack(p))
                    {
                        Some(p) => TreeIssue::DataBlob(p),
                        None => TreeIssue::InBadPack,
                    }
                };
                tree_out.insert(*t, issue);
            }
        }
        while let Some(r) = cur_ref {
            ref_out.push((BlobId::from_bytes(r), RefIssue::Missing));
            cur_ref = next_ref(&mut refs)?;
        }
        for t in trees {
            tree_out.insert(*t, TreeIssue::Missing);
        }
        Ok(Joined {
            refs: ref_out,
            trees: tree_out,
            files,
        })
    }
}
