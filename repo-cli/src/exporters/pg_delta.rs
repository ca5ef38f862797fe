//! Delta compression of a base backup against the previous one of the same
//! cluster (SPEC §6.6, §26.1). pgbench-like workloads change most 8 KiB
//! pages every day, so most chunks are new, but each differs from
//! yesterday's version of the same file range in a few hundred bytes: a
//! chunk is compressed with the previous backup's chunks covering the same
//! range of the same tar member as its zstd prefix.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use repo_core::{BlobId, DeltaSource, Repository};

use super::pg_base::{PATH, TAG, TarWatcher, Watched};

/// Metadata key: how many base backups this one's deltas chain through
/// (0: compressed alone; SPEC §26.1).
pub const DEPTH_KEY: &str = "pg.delta_depth";

/// A base backup at this depth is followed by one compressed alone, so a
/// restore reads at most this many references per chunk.
pub const MAX_DEPTH: u32 = 3;

/// Reference plaintexts kept in memory (neighbouring chunks share them).
const CACHE: usize = 256;

/// The previous base backup, as laid out in its stream.
struct Previous<'a> {
    repo: &'a Repository,
    /// Chunks: offset in the stream, length, id; in stream order.
    chunks: Vec<(u64, u64, BlobId)>,
    /// Tar members: name → offset of the data.
    members: HashMap<String, u64>,
    cache: Mutex<HashMap<BlobId, Arc<Vec<u8>>>>,
}

/// The [`DeltaSource`] of one `pg basebackup` run. Without a previous base
/// backup (or after [`MAX_DEPTH`]) it names no references, but it is still
/// given, so the snapshot lists the references of the delta blobs it
/// shares with earlier ones.
pub struct PgDelta<'a> {
    prev: Option<Previous<'a>>,
    now: Arc<Mutex<Watched>>,
}

impl PgDelta<'_> {
    /// What the watcher of the new stream fills in: its tar members.
    pub fn watched(&self) -> Arc<Mutex<Watched>> {
        self.now.clone()
    }
}

/// The delta source for a new base backup of cluster `system_identifier`,
/// and its depth.
pub fn source(repo: &Repository, system_identifier: u64) -> Result<(PgDelta<'_>, u32)> {
    let now = Arc::new(Mutex::new(Watched::default()));
    let sid = system_identifier.to_string();
    let prev = repo
        .snapshots()?
        .into_iter()
        .filter(|s| {
            s.snapshot.tags.iter().any(|t| t == TAG)
                && s.snapshot
                    .metadata
                    .iter()
                    .any(|(k, v)| k == "pg.system_identifier" && *v == sid)
        })
        .max_by_key(|s| s.snapshot.time_ns);
    let Some(prev) = prev else {
        return Ok((PgDelta { prev: None, now }, 0));
    };
    let depth: u32 = prev
        .snapshot
        .metadata
        .iter()
        .find(|(k, _)| k == DEPTH_KEY)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    if depth >= MAX_DEPTH {
        return Ok((PgDelta { prev: None, now }, 0));
    }
    let node = repo.find_node(&prev.snapshot.tree, PATH)?;
    let layout = Previous::load(repo, &node.content)
        .with_context(|| format!("cannot read the previous base backup {}", prev.id))?;
    Ok((
        PgDelta {
            prev: Some(layout),
            now,
        },
        depth + 1,
    ))
}

/// Reads a stream chunk by chunk, recording where each starts.
struct Chunks<'a, 'b> {
    repo: &'a Repository,
    ids: std::slice::Iter<'b, BlobId>,
    buf: Vec<u8>,
    at: usize,
    offset: u64,
    out: Vec<(u64, u64, BlobId)>,
}

impl Read for Chunks<'_, '_> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        while self.at == self.buf.len() {
            let Some(id) = self.ids.next() else {
                return Ok(0);
            };
            self.buf = self.repo.read_blob(id).map_err(io::Error::other)?;
            self.at = 0;
            self.out.push((self.offset, self.buf.len() as u64, *id));
            self.offset += self.buf.len() as u64;
        }
        let n = b.len().min(self.buf.len() - self.at);
        b[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl<'a> Previous<'a> {
    fn load(repo: &'a Repository, content: &[BlobId]) -> Result<Self> {
        let found = Arc::new(Mutex::new(Watched::default()));
        let mut w = TarWatcher::new(
            Chunks {
                repo,
                ids: content.iter(),
                buf: Vec::new(),
                at: 0,
                offset: 0,
                out: Vec::new(),
            },
            found.clone(),
        );
        io::copy(&mut w, &mut io::sink())?;
        let chunks = w.into_inner().out;
        let members = std::mem::take(&mut found.lock().unwrap_or_else(|e| e.into_inner()).members)
            .into_iter()
            .map(|(name, at, _)| (name, at))
            .collect();
        Ok(Self {
            repo,
            chunks,
            members,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn plaintext(&self, id: &BlobId) -> Option<Arc<Vec<u8>>> {
        if let Some(p) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            return Some(p.clone());
        }
        let p = Arc::new(self.repo.read_blob(id).ok()?);
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if c.len() >= CACHE {
            c.clear();
        }
        c.insert(*id, p.clone());
        Some(p)
    }
}

impl DeltaSource for PgDelta<'_> {
    fn references(&self, offset: u64, chunk: &[u8]) -> Vec<(BlobId, Arc<Vec<u8>>)> {
        let Some(prev) = &self.prev else {
            return Vec::new();
        };
        // The same range of the same member in the previous backup; outside
        // members (headers), the same offset.
        let at = {
            let now = self.now.lock().unwrap_or_else(|e| e.into_inner());
            let i = now
                .members
                .partition_point(|(_, start, _)| *start <= offset);
            i.checked_sub(1)
                .map(|i| &now.members[i])
                .filter(|(_, start, size)| offset < start + size)
                .and_then(|(name, start, _)| {
                    prev.members.get(name).map(|old| old + (offset - start))
                })
                .unwrap_or(offset)
        };
        let end = at + chunk.len() as u64;
        let first = prev.chunks.partition_point(|(o, n, _)| o + n <= at);
        prev.chunks[first..]
            .iter()
            .take_while(|(o, _, _)| *o < end)
            .take(repo_core::MAX_DELTA_REFS)
            .filter_map(|(_, _, id)| Some((*id, prev.plaintext(id)?)))
            .collect()
    }
}
