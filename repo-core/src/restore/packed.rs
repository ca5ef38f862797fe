//! Pack-ordered writing of restored files (SPEC §16): the chunks of a batch
//! of files are grouped by the pack that holds them; each pack's needed
//! bytes are fetched once, nearby blobs merged into one span read with one
//! request; each blob is opened and verified once and written at every
//! offset of every file that needs it. Spans are read in parallel, up to
//! the repository's connections on remote storage.
//!
//! Memory is bounded by the batch (at most [`batch_files`] files and
//! [`BATCH_CHUNKS`] chunk references) and by one span per reading thread.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use rayon::prelude::*;

use crate::backend::{BackendErrorKind, ObjectKind};
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crate::pack::PackEntry;
use crate::progress::Progress;
use crate::repository::Repository;

use super::nonzero_runs;

/// Files written together: their descriptors stay open until the batch is
/// done, so a batch takes at most three quarters of the process's limit of
/// open files.
/// A pack whose blobs belong to files of several batches is read once per
/// batch, so on object storage fewer, larger batches mean fewer requests
/// (the CLI raises its soft limit to the hard one for this).
pub(super) fn batch_files() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    usize::try_from(soft / 4 * 3)
        .unwrap_or(MAX_BATCH_FILES)
        .clamp(MIN_BATCH_FILES, MAX_BATCH_FILES)
}
const MIN_BATCH_FILES: usize = 16;
const MAX_BATCH_FILES: usize = 32 << 10;
/// Chunk references planned at once (about 100 bytes each).
pub(super) const BATCH_CHUNKS: usize = 1 << 16;

/// On remote storage a round trip costs more than reading this many bytes
/// that nobody needs: blobs closer than this share one request.
const REMOTE_GAP: u64 = 1 << 20;
/// Locally, only blobs that (nearly) touch share a read.
const LOCAL_GAP: u64 = 64 << 10;
/// Largest span read at once (a blob larger than this is read alone):
/// a default pack (16 MiB plus its last blob) in one request on remote
/// storage; smaller locally, where requests are cheap.
const REMOTE_SPAN: u64 = 24 << 20;
const LOCAL_SPAN: u64 = 8 << 20;

/// One place a chunk goes: file `file` of the batch at offset `at`;
/// `slot` is its flag in [`Batch::done`].
#[derive(Clone, Copy)]
struct Place {
    file: u32,
    at: u64,
    slot: u32,
}

/// A chunk reference, sortable into pack order.
struct Ref {
    pack: PackId,
    entry: PackEntry,
    place: Place,
}

/// The content of one batch of files to write.
pub(super) struct Batch<'f> {
    /// Open files, in batch order, and their paths (for messages).
    files: &'f [File],
    paths: &'f [PathBuf],
    /// Per file: the range of its chunks' slots in `done`, and each
    /// chunk's offset (`starts[slot]`).
    slots: Vec<std::ops::Range<usize>>,
    starts: Vec<u64>,
    /// Chunks written and verified.
    done: Vec<AtomicBool>,
    refs: Vec<Ref>,
    /// The first chunk that could not even be located.
    missing: Option<Error>,
}

impl<'f> Batch<'f> {
    /// Locates every chunk of `contents` (one list of chunk ids per file of
    /// `files`, in order). A chunk that cannot be located is left out and
    /// reported by [`Batch::write`] once everything else is written.
    pub(super) fn plan(
        repo: &Repository,
        files: &'f [File],
        paths: &'f [PathBuf],
        contents: &[&[BlobId]],
    ) -> Self {
        let mut b = Batch {
            files,
            paths,
            slots: Vec::with_capacity(files.len()),
            starts: Vec::new(),
            done: Vec::new(),
            refs: Vec::new(),
            missing: None,
        };
        for (i, chunks) in contents.iter().enumerate() {
            let first = b.starts.len();
            let mut pos = 0u64;
            for id in chunks.iter() {
                let slot = b.starts.len();
                b.starts.push(pos);
                match repo.locate_data(id) {
                    Ok(loc) => {
                        pos += u64::from(loc.entry.raw_length);
                        b.refs.push(Ref {
                            pack: loc.pack,
                            entry: loc.entry,
                            place: Place {
                                file: i as u32,
                                at: b.starts[slot],
                                slot: slot as u32,
                            },
                        });
                    }
                    Err(e) => {
                        // Nothing after it has a known offset.
                        b.missing.get_or_insert(e);
                        break;
                    }
                }
            }
            b.slots.push(first..b.starts.len());
        }
        b.done = (0..b.starts.len())
            .map(|_| AtomicBool::new(false))
            .collect();
        b
    }

    /// Reads every needed span once and writes each chunk where it goes.
    /// On failure each file is cut where its written chunks stop (as a
    /// sequential restore would leave it) and the first error returned.
    pub(super) fn write(mut self, repo: &Repository, progress: &dyn Progress) -> Result<()> {
        self.refs
            .sort_unstable_by_key(|r| (r.pack, r.entry.offset, r.place.file, r.place.at));
        let remote = repo.backend().is_remote();
        let (gap, max) = if remote {
            (REMOTE_GAP, REMOTE_SPAN)
        } else {
            (LOCAL_GAP, LOCAL_SPAN)
        };
        let spans = spans(&self.refs, gap, max);
        // With spans enough for every thread, a span's blobs are opened on
        // its own thread: a thread waiting for its blobs in a nested
        // parallel loop would steal and read another span, so more spans
        // than threads would be held at once (peak RSS 157 MiB against 135
        // on the 1 GiB corpus over S3).
        let nested = spans.len() < rayon::current_num_threads();
        let r = spans
            .par_iter()
            .try_for_each(|s| self.write_span(repo, &self.refs[s.clone()], nested, progress));
        let r = r.and_then(|()| self.missing.take().map_or(Ok(()), Err));
        if r.is_err() {
            for (f, slots) in self.files.iter().zip(&self.slots) {
                if let Some(i) = slots.clone().find(|&i| !self.done[i].load(Relaxed)) {
                    let _ = f.set_len(self.starts[i]);
                }
            }
        }
        r
    }

    /// One request for the span of `refs` (all of one pack, in offset
    /// order), then each blob opened once (on all threads if `nested`) and
    /// written everywhere it goes.
    fn write_span(
        &self,
        repo: &Repository,
        refs: &[Ref],
        nested: bool,
        progress: &dyn Progress,
    ) -> Result<()> {
        thread_local! {
            static SPAN: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let pack = refs[0].pack;
        let start = u64::from(refs[0].entry.offset);
        let end = refs
            .iter()
            .map(|r| u64::from(r.entry.offset) + u64::from(r.entry.length))
            .max()
            .unwrap_or(start);
        let len = u32::try_from(end - start).map_err(|_| Error::CorruptPack {
            pack,
            reason: format!("span {start}..{end} is too large"),
        })?;
        SPAN.with(|cell| {
            let mut fresh = Vec::new();
            let mut guard = cell.try_borrow_mut();
            let buf = match guard {
                Ok(ref mut b) => &mut **b,
                Err(_) => &mut fresh,
            };
            repo.backend()
                .read_span_into(ObjectKind::Pack, &pack.to_hex(), start, len, buf)
                .map_err(|err| match err.error_kind {
                    BackendErrorKind::NotFound => Error::Backend(err),
                    _ => Error::CorruptPack {
                        pack,
                        reason: format!("blob {}: {err}", refs[0].entry.id.short()),
                    },
                })?;
            // Each blob's sealed bytes, split off the span in offset order.
            let mut blobs: Vec<(&[Ref], &mut [u8])> = Vec::new();
            let mut rest: &mut [u8] = buf.as_mut_slice();
            let mut at = start;
            let mut i = 0;
            while i < refs.len() {
                let e = &refs[i].entry;
                let n = refs[i..]
                    .iter()
                    .take_while(|r| r.entry.offset == e.offset)
                    .count();
                let skip = (u64::from(e.offset) - at) as usize;
                let (_, tail) = std::mem::take(&mut rest).split_at_mut(skip);
                let (sealed, tail) = tail.split_at_mut(e.length as usize);
                rest = tail;
                at = u64::from(e.offset) + u64::from(e.length);
                blobs.push((&refs[i..i + n], sealed));
                i += n;
            }
            let one = |(same, sealed): (&[Ref], &mut [u8])| {
                self.write_blob(repo, pack, same, sealed, progress)
            };
            let r = if nested {
                blobs.into_par_iter().try_for_each(one)
            } else {
                blobs.into_iter().try_for_each(one)
            };
            // Keep at most one span's worth per thread.
            if buf.capacity() > REMOTE_SPAN as usize {
                *buf = Vec::new();
            }
            r
        })
    }

    /// Opens one blob (all of `same` refer to it) and writes it at each of
    /// their places; all-zero blocks are left as holes.
    fn write_blob(
        &self,
        repo: &Repository,
        pack: PackId,
        same: &[Ref],
        sealed: &mut [u8],
        progress: &dyn Progress,
    ) -> Result<()> {
        thread_local! {
            static PLAIN: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let e = &same[0].entry;
        PLAIN.with(|cell| {
            let mut fresh = Vec::new();
            let mut guard = cell.try_borrow_mut();
            let plain = match guard {
                Ok(ref mut b) => &mut **b,
                Err(_) => &mut fresh,
            };
            repo.open_sealed(pack, e, sealed, plain)?;
            for r in same {
                let p = r.place;
                let f = &self.files[p.file as usize];
                for (off, run) in nonzero_runs(plain, p.at) {
                    f.write_all_at(run, p.at + off as u64)
                        .map_err(|source| Error::Target {
                            path: self.paths[p.file as usize].clone(),
                            source,
                        })?;
                }
                self.done[p.slot as usize].store(true, Relaxed);
                progress.add_bytes(u64::from(e.raw_length));
            }
            Ok(())
        })
    }
}

/// Splits `refs` (sorted by pack and offset) into spans: runs of one pack
/// whose blobs lie at most `gap` bytes apart and cover at most `max` bytes.
fn spans(refs: &[Ref], gap: u64, max: u64) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut first = 0;
    let mut start = 0u64;
    let mut end = 0u64;
    for (i, r) in refs.iter().enumerate() {
        let off = u64::from(r.entry.offset);
        let blob_end = off + u64::from(r.entry.length);
        let joins = i > first
            && r.pack == refs[first].pack
            && off <= end.saturating_add(gap)
            && blob_end.max(end) - start <= max;
        if i > first && !joins {
            out.push(first..i);
            first = i;
        }
        if i == first {
            start = off;
            end = blob_end;
        } else {
            end = end.max(blob_end);
        }
    }
    if first < refs.len() {
        out.push(first..refs.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobKind;

    fn r(pack: u8, offset: u32, length: u32) -> Ref {
        Ref {
            pack: PackId::from_bytes([pack; 32]),
            entry: PackEntry {
                kind: BlobKind::Data,
                id: BlobId::from_bytes([offset as u8; 32]),
                offset,
                length,
                raw_length: length,
            },
            place: Place {
                file: 0,
                at: 0,
                slot: 0,
            },
        }
    }

    #[test]
    fn spans_merge_near_blobs_of_one_pack_only() {
        let refs = [
            r(1, 0, 100),
            r(1, 0, 100), // the same blob, a second place
            r(1, 150, 100),
            r(1, 1000, 100), // too far
            r(2, 1100, 100), // another pack
            r(2, 1200, 901), // would make the span too long
        ];
        let s = spans(&refs, 60, 1000);
        assert_eq!(s, vec![0..3, 3..4, 4..5, 5..6]);
        assert_eq!(spans(&refs, 10_000, 10_000), vec![0..4, 4..6]);
        assert!(spans(&[], 1, 1).is_empty());
    }
}
