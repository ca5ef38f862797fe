//! Reading a stored file back as a stream: [`FileReader`] implements
//! [`std::io::Read`] over a file node's chunks (SPEC §9), fetching and
//! verifying one chunk at a time, so a file of any size is read in memory
//! bounded by its largest chunk.

use std::io::{self, Read};

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repository::Repository;
use crate::snapshot::SnapshotEntry;
use crate::tree::{Node, NodeKind};

/// The content of a stored regular file, as an [`io::Read`].
///
/// Each chunk is decrypted and checked against its id before any of its
/// bytes are returned: a damaged or missing chunk makes `read` fail with an
/// [`io::Error`] (kind [`io::ErrorKind::InvalidData`], its source the
/// library's [`Error`]), never yield wrong bytes. Made by
/// [`Repository::open_file`] or [`Repository::read_node`].
#[derive(Debug)]
pub struct FileReader<'r> {
    repo: &'r Repository,
    chunks: std::vec::IntoIter<BlobId>,
    buf: Vec<u8>,
    pos: usize,
    size: u64,
}

impl FileReader<'_> {
    /// The file's size as recorded at backup time.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Read for FileReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(id) = self.chunks.next() else {
                return Ok(0);
            };
            // As `dump_node`: only data blobs may be file content. Copied
            // into the buffer it had: a fresh one per chunk cost a mapping,
            // its page faults and an unmap each time.
            let buf = &mut self.buf;
            self.repo
                .locate_data(&id)
                .and_then(|loc| {
                    self.repo.with_blob_at(&loc, |plain| {
                        buf.clear();
                        buf.extend_from_slice(plain);
                    })
                })
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Repository {
    /// Opens the regular file at `path` in `snapshot` for reading.
    ///
    /// `path` is the file's path as backed up, components separated by `/`
    /// (a leading `/` is optional): a file backed up as `/home/me/notes.txt`
    /// is `"/home/me/notes.txt"`; a stream stored as `pg/main.dump` is
    /// `"pg/main.dump"`. Fails with [`Error::PathNotFound`] if there is no
    /// such node and [`Error::InvalidArgument`] if it is not a regular file.
    pub fn open_file(
        &self,
        snapshot: &SnapshotEntry,
        path: impl AsRef<[u8]>,
    ) -> Result<FileReader<'_>> {
        let node = self.find_node(&snapshot.snapshot.tree, path)?;
        self.read_node(&node)
    }

    /// A reader over the content of `node`, a regular file found with
    /// [`Repository::find_node`] or [`Repository::walk`].
    pub fn read_node(&self, node: &Node) -> Result<FileReader<'_>> {
        if node.kind != NodeKind::File {
            return Err(Error::InvalidArgument(format!(
                "{} is not a regular file",
                node.name_lossy()
            )));
        }
        Ok(FileReader {
            repo: self,
            chunks: node.content.clone().into_iter(),
            buf: Vec::new(),
            pos: 0,
            size: node.size,
        })
    }
}
