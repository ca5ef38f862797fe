//! Keyed content-defined chunking with FastCDC 2020 (SPEC §6.1).
//!
//! The gear table is XOR-ed with a seed derived from the master key, so chunk
//! boundaries (and thus chunk sizes visible in packs) cannot be predicted
//! from known plaintext. A cut depends only on the bytes from the chunk's
//! start, so reading in buffers of any size gives the same chunks as long as
//! at least `max` bytes (or the rest of the input) are in view.

use std::borrow::Cow;
use std::cell::Cell;
use std::io::{self, Read};

use fastcdc::v2020::{self, Normalization};

use crate::format::{FormatError, MAX_CHUNK_SIZE};

thread_local! {
    // The reading buffer of the last input streamed on this thread, reused by
    // the next: a fresh one per file cost a backup of the benchmark corpus
    // about 3 % of its CPU in page faults on newly mapped, zeroed memory.
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Minimum, average and maximum chunk size of one profile (SPEC §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode, serde::Serialize)]
pub struct ChunkerParams {
    /// Smallest chunk, except a stream's last.
    pub min: u32,
    /// Target average.
    pub avg: u32,
    /// Largest chunk.
    pub max: u32,
}

impl ChunkerParams {
    /// The default profile for files: 512 KiB / 1 MiB / 8 MiB.
    pub const DEFAULT: Self = Self {
        min: 512 * 1024,
        avg: 1024 * 1024,
        max: 8 * 1024 * 1024,
    };
    /// Small chunks for database dumps and snapshots: 16 / 64 / 512 KiB.
    pub const SMALL: Self = Self {
        min: 16 * 1024,
        avg: 64 * 1024,
        max: 512 * 1024,
    };
    /// Tiny chunks for files rewritten in place at random offsets: 4 / 16 / 128 KiB.
    pub const TINY: Self = Self {
        min: 4 * 1024,
        avg: 16 * 1024,
        max: 128 * 1024,
    };

    /// Checks the values against FastCDC's supported ranges.
    pub fn validate(&self) -> Result<(), FormatError> {
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        let ok = (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&min)
            && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&avg)
            && (v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX.min(MAX_CHUNK_SIZE)).contains(&max)
            && min <= avg
            && avg <= max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0;
        if ok {
            Ok(())
        } else {
            Err(FormatError::Malformed {
                what: "chunker parameters",
                reason: format!("{self:?} outside FastCDC's ranges or not min<=avg<=max, even"),
            })
        }
    }
}

/// A seeded FastCDC chunker; cheap to clone and share.
#[derive(Debug, Clone)]
pub struct Chunker {
    params: ChunkerParams,
    mask_s: u64,
    mask_l: u64,
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
}

impl Chunker {
    /// A chunker for validated `params` and the repository's `seed`.
    pub fn new(params: ChunkerParams, seed: u64) -> Result<Self, FormatError> {
        params.validate()?;
        let (mask_s, mask_l) = v2020::select_masks(params.avg as usize, Normalization::Level1);
        let (gear, gear_ls) = v2020::get_gear_with_seed(seed);
        Ok(Self {
            params,
            mask_s,
            mask_l,
            gear,
            gear_ls,
        })
    }

    /// The profile's parameters.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the first chunk of `data`, given that `data` holds at least
    /// `max` bytes or is the rest of the input.
    pub fn cut(&self, data: &[u8]) -> usize {
        if data.is_empty() {
            return 0;
        }
        let (_, n) = v2020::cut_gear(
            data,
            self.params.min as usize,
            self.params.avg as usize,
            self.params.max as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        n.clamp(1, data.len())
    }

    /// Splits all of `data` into chunk lengths.
    pub fn split_slice<'a>(&'a self, data: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut rest = data;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let n = self.cut(rest);
            let (c, r) = rest.split_at(n);
            rest = r;
            Some(c)
        })
    }

    /// Reads `reader` to its end and calls `each` with every chunk in order.
    /// Returns the number of bytes read.
    pub fn stream<R: Read, E: From<io::Error>>(
        &self,
        reader: R,
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        self.stream_batches(reader, None, |batch| batch.iter().try_for_each(|c| each(c)))
    }

    /// Reads `reader` to its end and calls `each` with batches of
    /// consecutive chunks, borrowed from one reused buffer of `2 × max` bytes
    /// (less when `size_hint` says the input is smaller), so a caller can
    /// process a batch in parallel without copying. Returns the bytes read.
    pub fn stream_batches<R: Read, E: From<io::Error>>(
        &self,
        mut reader: R,
        size_hint: Option<u64>,
        mut each: impl FnMut(&[&[u8]]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let max = self.params.max as usize;
        let full = 2 * max;
        // One byte more than the hint lets us see EOF without a second buffer.
        let cap = size_hint.map_or(full, |h| (h as usize).saturating_add(1).clamp(1, full));
        let mut buf = SPARE.with(Cell::take);
        // Only bytes read into it are ever looked at: what the last input
        // left there needs no zeroing, and a longer buffer stays as long.
        if buf.len() < cap {
            buf.resize(cap, 0);
        }
        let r = self.fill_and_cut(&mut reader, &mut buf, cap, &mut each);
        SPARE.with(|s| {
            // A nested call (rayon runs other files while `each` waits) may
            // have put one back: keep the larger.
            let other = s.take();
            s.set(if other.capacity() > buf.capacity() {
                other
            } else {
                buf
            });
        });
        r
    }

    fn fill_and_cut<R: Read, E: From<io::Error>>(
        &self,
        reader: &mut R,
        buf: &mut Vec<u8>,
        mut limit: usize,
        each: &mut impl FnMut(&[&[u8]]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let max = self.params.max as usize;
        let full = 2 * max;
        let (mut start, mut end, mut eof, mut total) = (0usize, 0usize, false, 0u64);
        let mut batch: Vec<(usize, usize)> = Vec::new();
        loop {
            if !eof && end - start < max {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
                if end == limit && limit < full {
                    // The hint was wrong (file grew): widen the window.
                    limit = full;
                    if buf.len() < full {
                        buf.resize(full, 0);
                    }
                }
                while end < limit {
                    match reader.read(&mut buf[end..limit]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => {
                            end += n;
                            total += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            // Cut every chunk that has `max` bytes (or the rest) in view.
            batch.clear();
            while start < end && (eof || end - start >= max) {
                let n = self.cut(&buf[start..end]);
                batch.push((start, n));
                start += n;
            }
            if !batch.is_empty() {
                let slices: Vec<&[u8]> = batch.iter().map(|&(s, n)| &buf[s..s + n]).collect();
                each(&slices)?;
            }
            if eof && start == end {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_testkit::rng::random_bytes;
    use proptest::prelude::*;

    fn small() -> Chunker {
        Chunker::new(
            ChunkerParams {
                min: 256,
                avg: 1024,
                max: 4096,
            },
            42,
        )
        .unwrap()
    }

    proptest! {
        #[test]
        fn chunks_concatenate_to_input(data in proptest::collection::vec(any::<u8>(), 0..20_000)) {
            let c = small();
            let mut out = Vec::new();
            c.stream::<_, io::Error>(&data[..], |ch| { out.extend_from_slice(ch); Ok(()) }).unwrap();
            prop_assert_eq!(&out, &data);
            let joined: Vec<u8> = c.split_slice(&data).flatten().copied().collect();
            prop_assert_eq!(joined, data);
        }
    }

    #[test]
    fn stream_and_slice_agree_and_respect_bounds() {
        let c = small();
        let data = random_bytes(300_000, 9);
        let a: Vec<usize> = c.split_slice(&data).map(|s| s.len()).collect();
        let mut b = Vec::new();
        // A reader that returns tiny pieces must not change the boundaries.
        struct Dribble<'a>(&'a [u8]);
        impl Read for Dribble<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = out.len().min(7).min(self.0.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        c.stream::<_, io::Error>(Dribble(&data), |ch| {
            b.push(ch.len());
            Ok(())
        })
        .unwrap();
        assert_eq!(a, b);
        assert!(a.len() > 100, "expected many chunks, got {}", a.len());
        for &n in &a[..a.len() - 1] {
            assert!((256..=4096).contains(&n), "chunk of {n} bytes");
        }
    }

    /// The reading buffer outlives one input and is reused by the next on
    /// the same thread; what an earlier, longer input left in it never shows
    /// up in a later one's chunks, with or without a (wrong) size hint.
    #[test]
    fn reading_buffer_is_reused_and_stale_bytes_never_leak() {
        let c = small();
        let chunks = |data: &[u8], hint: Option<u64>| {
            let mut out = Vec::new();
            c.stream_batches::<_, io::Error>(data, hint, |b| {
                out.extend(b.iter().map(|ch| ch.to_vec()));
                Ok(())
            })
            .unwrap();
            out
        };
        let spare = || {
            SPARE.with(|s| {
                let b = s.take();
                let r = (b.as_ptr(), b.len());
                s.set(b);
                r
            })
        };
        SPARE.with(Cell::take);
        let long = random_bytes(50_000, 11);
        assert_eq!(
            chunks(&long, None),
            c.split_slice(&long).map(<[u8]>::to_vec).collect::<Vec<_>>()
        );
        let (at, len) = spare();
        assert_eq!(len, 2 * 4096, "the buffer of 2 × max is kept");
        for (data, hint) in [
            (random_bytes(3000, 12), Some(3000)),
            (random_bytes(900, 13), None),
            // The input grew after its size was taken.
            (random_bytes(20_000, 14), Some(100)),
            (Vec::new(), Some(0)),
        ] {
            let want: Vec<Vec<u8>> = c.split_slice(&data).map(<[u8]>::to_vec).collect();
            assert_eq!(
                chunks(&data, hint),
                want,
                "{} bytes, hint {hint:?}",
                data.len()
            );
            assert_eq!(spare(), (at, len), "a new buffer was allocated");
        }
    }

    #[test]
    fn seed_changes_boundaries() {
        let p = ChunkerParams {
            min: 256,
            avg: 1024,
            max: 4096,
        };
        let data = random_bytes(100_000, 3);
        let a: Vec<usize> = Chunker::new(p, 1)
            .unwrap()
            .split_slice(&data)
            .map(|s| s.len())
            .collect();
        let b: Vec<usize> = Chunker::new(p, 2)
            .unwrap()
            .split_slice(&data)
            .map(|s| s.len())
            .collect();
        assert_ne!(a, b);
    }

    #[test]
    fn insert_shifts_only_nearby_chunks() {
        let c = small();
        let data = random_bytes(200_000, 5);
        let mut edited = data.clone();
        edited.splice(100_000..100_000, b"one more line\n".iter().copied());
        let ids = |d: &[u8]| -> std::collections::HashSet<Vec<u8>> {
            c.split_slice(d).map(|s| s.to_vec()).collect()
        };
        let (a, b) = (ids(&data), ids(&edited));
        let new = b.difference(&a).count();
        assert!(new <= 3, "{new} new chunks after a small insert");
    }

    #[test]
    fn profiles_are_valid() {
        for p in [
            ChunkerParams::DEFAULT,
            ChunkerParams::SMALL,
            ChunkerParams::TINY,
        ] {
            p.validate().unwrap();
        }
        assert!(
            ChunkerParams {
                min: 10,
                avg: 20,
                max: 30
            }
            .validate()
            .is_err()
        );
    }
}
