//! PostgreSQL's WAL file names and how they map to object names (SPEC §28).

use std::cmp::Ordering;
use std::fmt;

/// What a file PostgreSQL archives is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WalFileKind {
    /// A whole segment, `TTTTTTTTLLLLLLLLSSSSSSSS`.
    Segment,
    /// The last, incomplete segment of a timeline left by a promotion,
    /// `TTTTTTTTLLLLLLLLSSSSSSSS.partial`.
    Partial,
    /// A backup history file, `TTTTTTTTLLLLLLLLSSSSSSSS.OOOOOOOO.backup`.
    Backup,
    /// A timeline history file, `TTTTTTTT.history`.
    History,
}

/// A valid WAL file name, as PostgreSQL passes it to `archive_command`
/// (`%f`) and asks for it in `restore_command`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WalFileName {
    name: String,
    kind: WalFileKind,
    timeline: u32,
    /// The 16 hex digits after the timeline (`0` for history files):
    /// high 32 bits the "log", low 32 bits the segment within it. Orders
    /// segments by position whatever the segment size.
    position: u64,
}

/// A name that is not one of PostgreSQL's WAL file names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a WAL file name (segment, .partial, .backup or .history)")]
pub struct BadWalName(pub String);

fn hex_u32(s: &str) -> Option<u32> {
    // Upper case, as PostgreSQL writes them: one spelling per file.
    (s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
    .then(|| u32::from_str_radix(s, 16).ok())
    .flatten()
}

impl WalFileName {
    /// Parses a file name; upper-case hex as PostgreSQL writes it.
    pub fn parse(name: &str) -> Result<Self, BadWalName> {
        let bad = || BadWalName(name.to_string());
        let parts: Vec<&str> = name.split('.').collect();
        let segment = |s: &str| -> Option<(u32, u64)> {
            if s.len() != 24 {
                return None;
            }
            let tli = hex_u32(&s[..8])?;
            let log = hex_u32(&s[8..16])?;
            let seg = hex_u32(&s[16..])?;
            Some((tli, (u64::from(log) << 32) | u64::from(seg)))
        };
        let (kind, timeline, position) = match parts.as_slice() {
            [s] => {
                let (t, p) = segment(s).ok_or_else(bad)?;
                (WalFileKind::Segment, t, p)
            }
            [s, "partial"] => {
                let (t, p) = segment(s).ok_or_else(bad)?;
                (WalFileKind::Partial, t, p)
            }
            [s, offset, "backup"] if hex_u32(offset).is_some() => {
                let (t, p) = segment(s).ok_or_else(bad)?;
                (WalFileKind::Backup, t, p)
            }
            [t, "history"] => (WalFileKind::History, hex_u32(t).ok_or_else(bad)?, 0),
            _ => return Err(bad()),
        };
        // Timeline 0 does not exist; PostgreSQL starts at 1.
        if timeline == 0 {
            return Err(bad());
        }
        Ok(Self {
            name: name.to_string(),
            kind,
            timeline,
            position,
        })
    }

    /// The segment file name of `timeline` at `position` (see
    /// [`WalFileName::position`]).
    pub fn segment(timeline: u32, position: u64) -> Self {
        Self::parse(&format!(
            "{timeline:08X}{:08X}{:08X}",
            position >> 32,
            position & 0xffff_ffff
        ))
        .expect("a formatted segment name parses")
    }

    /// The file name, as PostgreSQL writes it.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// What the file is.
    pub fn kind(&self) -> WalFileKind {
        self.kind
    }

    /// Its timeline.
    pub fn timeline(&self) -> u32 {
        self.timeline
    }

    /// The 16 hex digits after the timeline as a number (`log << 32 |
    /// seg`), 0 for a history file. Segment names compare by it.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The segment number (PostgreSQL's `XLogSegNo`) for segments of
    /// `segment_size` bytes (a power of two from 1 MiB to 1 GiB).
    pub fn segment_number(&self, segment_size: u64) -> u64 {
        let per_log = (1u64 << 32) / segment_size.max(1);
        (self.position >> 32) * per_log + (self.position & 0xffff_ffff)
    }

    /// The position of segment number `segno` for `segment_size` bytes.
    pub fn position_of(segno: u64, segment_size: u64) -> u64 {
        let per_log = (1u64 << 32) / segment_size.max(1);
        ((segno / per_log) << 32) | (segno % per_log)
    }

    /// The object name's file part: `.` becomes `_`, which no WAL file
    /// name contains, so the mapping is reversible and the result is a
    /// valid object name (SPEC §11).
    pub(crate) fn object_part(&self) -> String {
        self.name.replace('.', "_")
    }

    /// Inverse of [`WalFileName::object_part`].
    pub(crate) fn from_object_part(part: &str) -> Result<Self, BadWalName> {
        Self::parse(&part.replace('_', "."))
    }
}

impl fmt::Display for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl PartialOrd for WalFileName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Timeline, then position, then kind, then name: a timeline's files in
/// the order PostgreSQL writes them.
impl Ord for WalFileName {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.timeline, self.position, self.kind, &self.name).cmp(&(
            other.timeline,
            other.position,
            other.kind,
            &other.name,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_map_to_objects() {
        let s = WalFileName::parse("00000002000000010000003F").unwrap();
        assert_eq!(
            (s.kind(), s.timeline(), s.position()),
            (WalFileKind::Segment, 2, (1 << 32) | 0x3f)
        );
        assert_eq!(s.segment_number(16 << 20), 256 + 0x3f);
        assert_eq!(WalFileName::position_of(256 + 0x3f, 16 << 20), s.position());
        assert_eq!(WalFileName::segment(2, s.position()), s);
        for (n, kind) in [
            ("000000010000000000000003.partial", WalFileKind::Partial),
            (
                "000000010000000000000002.00000028.backup",
                WalFileKind::Backup,
            ),
            ("00000002.history", WalFileKind::History),
        ] {
            let w = WalFileName::parse(n).unwrap();
            assert_eq!(w.kind(), kind);
            let part = w.object_part();
            assert!(crate::backend::valid_name(&part), "{part}");
            assert_eq!(WalFileName::from_object_part(&part).unwrap(), w);
        }
        for bad in [
            "",
            "00000001000000000000000",
            "0000000100000000000000001",
            "000000010000000000000001.gz",
            "00000000000000000000000A",
            "00000001000000000000000a",
            "0000000G.history",
            "00000000.history",
            "../00000001.history",
            "000000010000000000000002.0000028.backup",
        ] {
            assert!(WalFileName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
