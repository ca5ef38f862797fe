//! What cairn reads inside PostgreSQL's files: the long page header at the
//! start of every WAL segment, and the system identifier at the start of
//! `global/pg_control` (SPEC §28). Host byte order is little-endian on every
//! platform PostgreSQL and cairn share here; both are read as such.

use super::{WalError, WalFileName};

/// `XLP_LONG_HEADER` in `xlp_info`: the page starts a segment.
const XLP_LONG_HEADER: u16 = 0x0002;
/// `XLogLongPageHeaderData`: the 24-byte short header (with padding), then
/// `xlp_sysid` (u64), `xlp_seg_size` (u32), `xlp_xlog_blcksz` (u32).
const LONG_HEADER_LEN: usize = 40;

/// What a segment's first page says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The cluster's system identifier (`xlp_sysid`).
    pub system_identifier: u64,
    /// The segment size (`xlp_seg_size`).
    pub segment_size: u64,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads and checks the long page header of the segment (or `.partial`
/// segment) `name` holding `bytes`: the page address must be where the
/// name puts the segment and the file exactly one segment long, so a file
/// archived under the wrong name is refused.
pub fn parse_segment(name: &WalFileName, bytes: &[u8]) -> Result<SegmentHeader, WalError> {
    let bad = |reason: String| WalError::NotASegment {
        name: name.to_string(),
        reason,
    };
    if bytes.len() < LONG_HEADER_LEN {
        return Err(bad(format!("only {} bytes", bytes.len())));
    }
    if u16_at(bytes, 2) & XLP_LONG_HEADER == 0 {
        return Err(bad("its first page has no long header".into()));
    }
    let sysid = u64_at(bytes, 24);
    let seg_size = u64::from(u32_at(bytes, 32));
    let block = u32_at(bytes, 36);
    if !seg_size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&seg_size) {
        return Err(bad(format!("segment size {seg_size} is not valid")));
    }
    if !block.is_power_of_two() || !(1024..=32768).contains(&block) {
        return Err(bad(format!("block size {block} is not valid")));
    }
    let addr = u64_at(bytes, 8);
    let want = name.segment_number(seg_size) * seg_size;
    if addr != want {
        return Err(bad(format!(
            "it starts at WAL position {:X}/{:X}, its name says {:X}/{:X}",
            addr >> 32,
            addr as u32,
            want >> 32,
            want as u32
        )));
    }
    if bytes.len() as u64 != seg_size {
        return Err(bad(format!(
            "it is {} bytes long, its header says segments are {seg_size}",
            bytes.len()
        )));
    }
    Ok(SegmentHeader {
        system_identifier: sysid,
        segment_size: seg_size,
    })
}

/// The system identifier from the start of a `global/pg_control` file
/// (`ControlFileData.system_identifier`, its first field).
pub fn control_file_system_identifier(bytes: &[u8]) -> Option<u64> {
    (bytes.len() >= 8).then(|| u64_at(bytes, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment as PostgreSQL writes one: a long header, zeros after it.
    pub(crate) fn fake(name: &str, sysid: u64, seg_size: u32) -> Vec<u8> {
        let n = WalFileName::parse(name).unwrap();
        let mut b = vec![0u8; seg_size as usize];
        b[..2].copy_from_slice(&0xd110u16.to_le_bytes());
        b[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        b[4..8].copy_from_slice(&n.timeline().to_le_bytes());
        let addr = n.segment_number(u64::from(seg_size)) * u64::from(seg_size);
        b[8..16].copy_from_slice(&addr.to_le_bytes());
        b[24..32].copy_from_slice(&sysid.to_le_bytes());
        b[32..36].copy_from_slice(&seg_size.to_le_bytes());
        b[36..40].copy_from_slice(&8192u32.to_le_bytes());
        b
    }

    #[test]
    fn header_is_checked_against_the_name() {
        let name = WalFileName::parse("000000010000000100000002").unwrap();
        let seg = fake(name.as_str(), 7, 1 << 20);
        let h = parse_segment(&name, &seg).unwrap();
        assert_eq!((h.system_identifier, h.segment_size), (7, 1 << 20));
        let other = WalFileName::parse("000000010000000100000003").unwrap();
        assert!(parse_segment(&other, &seg).is_err());
        assert!(parse_segment(&name, &seg[..seg.len() - 1]).is_err());
        assert!(parse_segment(&name, &vec![0u8; 1 << 20]).is_err());
        assert_eq!(control_file_system_identifier(&7u64.to_le_bytes()), Some(7));
    }
}
