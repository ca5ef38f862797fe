//! Counts the keys of an RDB per database, with the expiry time of each
//! key that has one, by walking the file and skipping every value.
//!
//! `redis verify` and `redis restore --url` compare what a scratch server
//! loaded with these counts: the RDB itself is the reference, not a count
//! taken before SYNC (writes land in between), and only a key whose expiry
//! time has passed may legitimately be missing (SPEC.md §25).

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read};
use std::path::Path;

use super::rdb::{HEADER_LEN, parse_header};

/// The keys of one database.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DbKeys {
    /// All keys, with or without expiry.
    pub keys: u64,
    /// Absolute expiry (Unix ms) of each key that has one.
    pub expires_at: Vec<i64>,
}

impl DbKeys {
    /// Keys without expiry.
    pub fn persistent(&self) -> u64 {
        self.keys - self.expires_at.len() as u64
    }

    /// Keys with expiry.
    pub fn volatile(&self) -> u64 {
        self.expires_at.len() as u64
    }

    /// Keys whose expiry time is at or before `now_ms`.
    pub fn expired_by(&self, now_ms: i64) -> u64 {
        self.expires_at.iter().filter(|&&t| t <= now_ms).count() as u64
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Counts the keys of the RDB file at `path`.
pub fn count_file(path: &Path) -> io::Result<BTreeMap<u32, DbKeys>> {
    count(BufReader::with_capacity(
        256 * 1024,
        std::fs::File::open(path)?,
    ))
}

/// Counts the keys of an RDB read from `r` (up to its `0xFF` opcode; the
/// checksum is the stream check's business, `rdb.rs`).
pub fn count(r: impl Read) -> io::Result<BTreeMap<u32, DbKeys>> {
    let mut p = Parser { r };
    let mut header = [0u8; HEADER_LEN];
    p.r.read_exact(&mut header)?;
    let version = parse_header(&header)?;
    let mut dbs: BTreeMap<u32, DbKeys> = BTreeMap::new();
    let mut db = 0u32;
    let mut expire: Option<i64> = None;
    loop {
        let op = p.byte()?;
        match op {
            0xff => return Ok(dbs),
            // SELECTDB
            0xfe => {
                db = u32::try_from(p.len()?).map_err(|_| bad("RDB database number too large"))?
            }
            // EXPIRETIME (seconds, 4 bytes) and EXPIRETIME_MS (8 bytes), little-endian.
            0xfd => expire = Some(i64::from(i32::from_le_bytes(p.array()?)) * 1000),
            0xfc => expire = Some(i64::from_le_bytes(p.array()?)),
            // RESIZEDB: hash table size hints.
            0xfb => {
                p.len()?;
                p.len()?;
            }
            // AUX field.
            0xfa => {
                p.string()?;
                p.string()?;
            }
            // FREQ (LFU counter) and IDLE (LRU idle time) of the next key.
            0xf9 => {
                p.byte()?;
            }
            0xf8 => {
                p.len()?;
            }
            // MODULE_AUX: module id, when-opcode, when, then opcode-framed data.
            0xf7 => {
                p.len()?;
                p.len()?;
                p.len()?;
                p.module_value()?;
            }
            // FUNCTION2: one library's code.
            0xf5 => p.string()?,
            // SLOT_INFO: slot id and two sizes.
            0xf4 => {
                for _ in 0..3 {
                    p.len()?;
                }
            }
            t => {
                p.string()?; // the key
                p.value(t, version)?;
                let d = dbs.entry(db).or_default();
                d.keys += 1;
                if let Some(at) = expire.take() {
                    d.expires_at.push(at);
                }
            }
        }
    }
}

struct Parser<R> {
    r: R,
}

impl<R: Read> Parser<R> {
    fn byte(&mut self) -> io::Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b)?;
        Ok(b)
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        let got = io::copy(&mut (&mut self.r).take(n), &mut io::sink())?;
        if got != n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "RDB ends inside a value",
            ));
        }
        Ok(())
    }

    /// A length, or a special string encoding (`Err(kind)` inside `Ok`).
    #[expect(
        clippy::big_endian_bytes,
        reason = "RDB's 32- and 64-bit lengths are big-endian"
    )]
    fn len_or_enc(&mut self) -> io::Result<Result<u64, u8>> {
        let b = self.byte()?;
        Ok(match b >> 6 {
            0 => Ok(u64::from(b & 0x3f)),
            1 => Ok((u64::from(b & 0x3f) << 8) | u64::from(self.byte()?)),
            2 => match b {
                0x80 => Ok(u64::from(u32::from_be_bytes(self.array()?))),
                0x81 => Ok(u64::from_be_bytes(self.array()?)),
                _ => return Err(bad(format!("bad RDB length byte {b:#04x}"))),
            },
            _ => Err(b & 0x3f),
        })
    }

    fn len(&mut self) -> io::Result<u64> {
        self.len_or_enc()?
            .map_err(|_| bad("RDB length expected, found an encoded string"))
    }

    fn string(&mut self) -> io::Result<()> {
        match self.len_or_enc()? {
            Ok(n) => self.skip(n),
            // Integers of 1, 2 and 4 bytes.
            Err(0) => self.skip(1),
            Err(1) => self.skip(2),
            Err(2) => self.skip(4),
            // LZF: compressed length, original length, compressed bytes.
            Err(3) => {
                let clen = self.len()?;
                self.len()?;
                self.skip(clen)
            }
            Err(e) => Err(bad(format!("unknown RDB string encoding {e}"))),
        }
    }

    /// `n` times `f`.
    fn repeat(&mut self, f: impl Fn(&mut Self) -> io::Result<()>) -> io::Result<()> {
        let n = self.len()?;
        for _ in 0..n {
            f(self)?;
        }
        Ok(())
    }

    /// Module data framed by type opcodes, up to the EOF opcode.
    fn module_value(&mut self) -> io::Result<()> {
        loop {
            match self.len()? {
                0 => return Ok(()),
                1 | 2 => drop(self.len()?),
                3 => self.skip(4)?,
                4 => self.skip(8)?,
                5 => self.string()?,
                o => return Err(bad(format!("unknown RDB module opcode {o}"))),
            }
        }
    }

    fn value(&mut self, t: u8, version: u32) -> io::Result<()> {
        match t {
            // STRING, and the single-blob encodings: zipmap, ziplists,
            // intset, listpacks.
            0 | 9..=13 | 16 | 17 | 20 => self.string(),
            // LIST, SET, LIST_QUICKLIST: n strings.
            1 | 2 | 14 => self.repeat(Self::string),
            // ZSET: member and a textual double (length byte; 253-255 are
            // NaN and infinities without digits).
            3 => self.repeat(|p| {
                p.string()?;
                match p.byte()? {
                    253..=255 => Ok(()),
                    n => p.skip(u64::from(n)),
                }
            }),
            // HASH: field, value.
            4 => self.repeat(|p| {
                p.string()?;
                p.string()
            }),
            // ZSET_2: member and a binary double.
            5 => self.repeat(|p| {
                p.string()?;
                p.skip(8)
            }),
            // MODULE_2: module id, then opcode-framed data.
            7 => {
                self.len()?;
                self.module_value()
            }
            // LIST_QUICKLIST_2: container kind, node blob.
            18 => self.repeat(|p| {
                p.len()?;
                p.string()
            }),
            15 | 19 | 21 => self.stream(t),
            _ => Err(bad(format!(
                "RDB value type {t} (RDB version {version}) is not supported by the key count"
            ))),
        }
    }

    /// STREAM_LISTPACKS (15), _2 (19), _3 (21).
    fn stream(&mut self, t: u8) -> io::Result<()> {
        // Radix tree nodes: key and listpack.
        self.repeat(|p| {
            p.string()?;
            p.string()
        })?;
        // Length, last id.
        for _ in 0..3 {
            self.len()?;
        }
        if t >= 19 {
            // First id, max deleted id, entries added.
            for _ in 0..5 {
                self.len()?;
            }
        }
        // Consumer groups.
        self.repeat(|p| {
            p.string()?;
            p.len()?;
            p.len()?;
            if t >= 19 {
                p.len()?; // entries read
            }
            // Group PEL: raw id, delivery time, delivery count.
            p.repeat(|p| {
                p.skip(16 + 8)?;
                p.len().map(drop)
            })?;
            // Consumers: name, seen time, (v3) active time, PEL of raw ids.
            p.repeat(|p| {
                p.string()?;
                p.skip(if t >= 21 { 16 } else { 8 })?;
                p.repeat(|p| p.skip(16))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporters::rdb::test_support::rdb;
    use std::io::Cursor;

    #[test]
    fn counts_keys_and_expiry_per_database() {
        let mut body = Vec::new();
        body.extend_from_slice(b"\xfa\x09redis-ver\x067.0.15");
        body.extend_from_slice(b"\xfe\x00\xfb\x03\x01");
        body.extend_from_slice(b"\x00\x01a\x01v"); // string
        body.extend_from_slice(b"\xfc");
        body.extend_from_slice(&1_700_000_000_123i64.to_le_bytes());
        body.extend_from_slice(b"\x00\x01b\xc0\x07"); // int-encoded string, with expiry
        body.extend_from_slice(b"\x04\x01h\x02\x01f\x01v\x01g\x01w"); // hash of 2
        body.extend_from_slice(b"\xfe\x03");
        body.extend_from_slice(b"\xfd");
        body.extend_from_slice(&1_600_000_000i32.to_le_bytes());
        body.extend_from_slice(b"\xf8\x05\xf9\x02"); // idle, freq
        body.extend_from_slice(b"\x03\x01z\x01\x01m\x03"); // zset: m → 1.5 as "1.5"
        body.extend_from_slice(b"1.5");
        body.extend_from_slice(b"\x0e\x01l\x01\x03abc"); // quicklist of one node
        body.extend_from_slice(b"\x00\x01c\xc3\x02\x05xy"); // LZF string
        let file = rdb(&body);
        let dbs = count(Cursor::new(&file)).unwrap();
        assert_eq!(dbs.len(), 2);
        assert_eq!((dbs[&0].keys, dbs[&0].persistent()), (3, 2));
        assert_eq!(dbs[&0].expires_at, [1_700_000_000_123]);
        assert_eq!(dbs[&3].keys, 3);
        assert_eq!(dbs[&3].expires_at, [1_600_000_000_000]);
        assert_eq!(dbs[&3].expired_by(1_600_000_000_000), 1);
        assert_eq!(dbs[&3].expired_by(1_599_999_999_999), 0);
        // Cut anywhere before the end: an error, never a short count.
        for cut in HEADER_LEN..file.len() - 9 {
            assert!(count(Cursor::new(&file[..cut])).is_err(), "cut at {cut}");
        }
        // A type we do not know is named.
        let e = count(Cursor::new(rdb(b"\xfe\x00\x63\x01k\x00"))).unwrap_err();
        assert!(e.to_string().contains("type 99"), "{e}");
    }
}
