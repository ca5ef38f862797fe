//! The RDB stream check of the Redis exporter: the `REDIS` magic and
//! version, the `0xFF` EOF opcode and the CRC-64 trailer.
//!
//! Self-contained (std only), and part of the crate's small library
//! (`repo_cli::exporters::rdb`): the fuzz target `rdb_stream` checks it
//! (`cairn_testkit::fuzz::rdb_stream`).

use std::io::{self, Read};

pub mod crc64;

/// `REDIS` + 4 version digits.
pub const HEADER_LEN: usize = 9;
/// The CRC64 trailer after the `0xFF` EOF opcode.
pub const TRAILER_LEN: usize = 8;

fn bad_data(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Streams an RDB through, checking it: the `REDIS` magic and a 4-digit
/// version up front (in [`RdbReader::new`]), and at the end the `0xFF` EOF
/// opcode and the CRC64 trailer over everything before it. A bad or missing
/// trailer makes the final read an error, so a stream backup fed by this
/// reader fails and writes no snapshot. A zero trailer means the server has
/// `rdbchecksum no`; Redis itself skips the check then, and so do we.
pub struct RdbReader<R> {
    inner: R,
    header: Vec<u8>,
    header_pos: usize,
    /// The last bytes read, held back: they may be the trailer.
    tail: Vec<u8>,
    crc: u64,
    last_released: Option<u8>,
    total: u64,
    version: u32,
    finished: bool,
}

impl<R: Read> RdbReader<R> {
    /// Reads and checks the header.
    pub fn new(mut inner: R) -> io::Result<Self> {
        let mut header = vec![0; HEADER_LEN];
        inner.read_exact(&mut header).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                bad_data("RDB shorter than its header")
            } else {
                e
            }
        })?;
        let version = parse_header(&header)?;
        Ok(Self {
            inner,
            header,
            header_pos: 0,
            tail: Vec::new(),
            crc: 0,
            last_released: None,
            total: 0,
            version,
            finished: false,
        })
    }

    /// The RDB format version from the header (10 for Redis 7.0).
    pub fn version(&self) -> u32 {
        self.version
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.tail.len() < TRAILER_LEN || self.last_released != Some(0xff) {
            return Err(bad_data(format!(
                "RDB truncated: {} bytes and no EOF opcode with CRC64 trailer",
                self.total
            )));
        }
        let want = u64::from_le_bytes(self.tail[..TRAILER_LEN].try_into().expect("8 bytes"));
        if want != 0 && want != self.crc {
            return Err(bad_data(format!(
                "RDB checksum mismatch: trailer {want:016x}, computed {:016x}",
                self.crc
            )));
        }
        Ok(())
    }
}

/// Checks `REDIS` + 4 digits and returns the version.
pub fn parse_header(h: &[u8]) -> io::Result<u32> {
    if h.len() < HEADER_LEN || &h[..5] != b"REDIS" {
        return Err(bad_data("not an RDB: no REDIS magic"));
    }
    let digits = &h[5..HEADER_LEN];
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad_data("not an RDB: bad version digits"));
    }
    Ok(std::str::from_utf8(digits)
        .expect("digits")
        .parse()
        .expect("digits"))
}

impl<R: Read> Read for RdbReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.finished {
                // The checked trailer is part of the RDB file.
                let n = self.tail.len().min(buf.len());
                buf[..n].copy_from_slice(&self.tail[..n]);
                self.tail.drain(..n);
                return Ok(n);
            }
            let mut chunk = vec![0; buf.len()];
            let n = if self.header_pos < self.header.len() {
                let n = (self.header.len() - self.header_pos).min(chunk.len());
                chunk[..n].copy_from_slice(&self.header[self.header_pos..self.header_pos + n]);
                self.header_pos += n;
                n
            } else {
                self.inner.read(&mut chunk)?
            };
            if n == 0 {
                self.finish()?;
                self.finished = true;
                continue;
            }
            self.tail.extend_from_slice(&chunk[..n]);
            // At most TRAILER_LEN bytes were held before, so this fits `buf`.
            let release = self.tail.len().saturating_sub(TRAILER_LEN).min(buf.len());
            if release == 0 {
                continue;
            }
            buf[..release].copy_from_slice(&self.tail[..release]);
            self.tail.drain(..release);
            self.crc = crc64::update(self.crc, &buf[..release]);
            self.last_released = Some(buf[release - 1]);
            self.total += release as u64;
            return Ok(release);
        }
    }
}

/// A valid RDB stream around `body`: the header for `version` (taken
/// modulo 10000, four digits), `body`, the `0xFF` EOF opcode and the CRC-64
/// trailer over all of it.
pub fn seal(version: u32, body: &[u8]) -> Vec<u8> {
    let mut v = format!("REDIS{:04}", version % 10_000).into_bytes();
    v.extend_from_slice(body);
    v.push(0xff);
    let crc = crc64::update(0, &v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// Helpers for the exporter's unit tests in the binary, which cannot see
/// this library's `#[cfg(test)]` items. Not an API.
#[doc(hidden)]
pub mod test_support {
    use std::io::{self, Read};

    /// A valid version-10 RDB around `body`, with its CRC-64 trailer.
    pub fn rdb(body: &[u8]) -> Vec<u8> {
        super::seal(10, body)
    }

    /// Reads `r` to the end in 3-byte reads.
    pub fn read_all(r: impl Read) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        // Small reads exercise the hold-back logic across boundaries.
        let mut r = r;
        let mut buf = [0u8; 3];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{rdb, read_all};
    use super::*;
    use std::io::Cursor;

    #[test]
    fn rdb_validation() {
        let good = rdb(b"\xfe\x00\xfb\x01\x00\x00\x01k\x01v");
        assert_eq!(
            read_all(RdbReader::new(Cursor::new(good.clone())).unwrap()).unwrap(),
            good
        );
        // Flipped byte: checksum mismatch at the end.
        let mut bad = good.clone();
        bad[12] ^= 1;
        let e = read_all(RdbReader::new(Cursor::new(bad)).unwrap()).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        // Truncated: no trailer.
        let e = read_all(RdbReader::new(Cursor::new(good[..good.len() - 5].to_vec())).unwrap())
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // Zero trailer: checksums disabled on the server, accepted.
        let mut nocrc = good.clone();
        let l = nocrc.len();
        nocrc[l - 8..].fill(0);
        assert!(read_all(RdbReader::new(Cursor::new(nocrc)).unwrap()).is_ok());
        // Bad magic or version.
        assert!(RdbReader::new(Cursor::new(b"REDIX0010\xff".to_vec())).is_err());
        assert!(RdbReader::new(Cursor::new(b"REDIS00a0\xff".to_vec())).is_err());
        assert!(RdbReader::new(Cursor::new(b"RED".to_vec())).is_err());
    }
}
