//! The one binary encoding of structured records (SPEC §2.2).
//!
//! bincode 2 with fixed-width little-endian integers: u8..u64 and i64 as 1..8
//! little-endian bytes, `bool` as one byte, `[u8; N]` as N raw bytes,
//! `Vec<T>`/`String` as a u64 count followed by the items, `Option<T>` as a
//! 0/1 byte followed by the value. Decoding must consume the whole input.
//!
//! Hostile lengths: bincode reserves a container's memory when it reads the
//! count, before the items, charging it against the config's limit. The
//! limit here scales with the input — [`DECODE_EXPANSION`] × its length,
//! rounded up a power-of-four ladder — so a few bytes can never reserve more
//! than a few hundred KiB.

use bincode::config::{self, Configuration, Fixint, LittleEndian, NoLimit};

use crate::format::FormatError;

/// How many bytes of memory decoding may reserve per input byte. Every
/// record type's in-memory size is within this factor of its smallest
/// encoding (a tree node: 248 bytes in memory, at least 137 encoded).
pub const DECODE_EXPANSION: usize = 8;

/// Smallest decode limit (for tiny inputs).
const MIN_LIMIT: usize = 64 * 1024;

const fn base() -> Configuration<LittleEndian, Fixint, NoLimit> {
    config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
}

/// Encodes `value` canonically.
pub fn encode<T: bincode::Encode>(value: &T) -> Vec<u8> {
    // Encoding into a Vec cannot fail for our types (no fallible maps, no
    // limit on encoding); storing empty bytes instead would lose data.
    #[allow(clippy::expect_used)]
    bincode::encode_to_vec(value, base()).expect("encoding to a Vec cannot fail")
}

fn decode_limited<T: bincode::Decode<()>, const N: usize>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    bincode::decode_from_slice(bytes, base().with_limit::<N>())
}

/// Decodes a whole `bytes` as `T`; trailing bytes are an error.
pub fn decode<T: bincode::Decode<()>>(bytes: &[u8], what: &'static str) -> Result<T, FormatError> {
    let want = bytes.len().saturating_mul(DECODE_EXPANSION).max(MIN_LIMIT);
    // Const-generic limits: pick the smallest rung that covers `want`.
    let (limit, result) = match want {
        n if n <= 1 << 16 => (1 << 16, decode_limited::<T, { 1 << 16 }>(bytes)),
        n if n <= 1 << 18 => (1 << 18, decode_limited::<T, { 1 << 18 }>(bytes)),
        n if n <= 1 << 20 => (1 << 20, decode_limited::<T, { 1 << 20 }>(bytes)),
        n if n <= 1 << 22 => (1 << 22, decode_limited::<T, { 1 << 22 }>(bytes)),
        n if n <= 1 << 24 => (1 << 24, decode_limited::<T, { 1 << 24 }>(bytes)),
        n if n <= 1 << 26 => (1 << 26, decode_limited::<T, { 1 << 26 }>(bytes)),
        n if n <= 1 << 28 => (1 << 28, decode_limited::<T, { 1 << 28 }>(bytes)),
        n if n <= 1 << 30 => (1 << 30, decode_limited::<T, { 1 << 30 }>(bytes)),
        _ => (1usize << 31, decode_limited::<T, { 1 << 31 }>(bytes)),
    };
    let (value, used) = result.map_err(|e| match e {
        bincode::error::DecodeError::UnexpectedEnd { .. } => FormatError::Truncated { what },
        bincode::error::DecodeError::LimitExceeded => FormatError::TooLarge {
            what,
            len: bytes.len() as u64,
            limit: (limit / DECODE_EXPANSION) as u64,
        },
        other => FormatError::Malformed {
            what,
            reason: other.to_string(),
        },
    })?;
    if used != bytes.len() {
        return Err(FormatError::Malformed {
            what,
            reason: format!("{} trailing bytes", bytes.len() - used),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_count_is_refused_not_allocated() {
        // A Vec<u64> claiming 2^40 items in 8 bytes.
        let mut b = (1u64 << 40).to_le_bytes().to_vec();
        b.extend_from_slice(&[0; 8]);
        assert!(matches!(
            decode::<Vec<u64>>(&b, "t"),
            Err(FormatError::TooLarge { .. })
        ));
        // A Vec<u8> claiming 1 GiB is refused before allocating.
        let b = (1u64 << 30).to_le_bytes();
        assert!(decode::<Vec<u8>>(&b, "t").is_err());
        // Legitimate values round-trip.
        let v: Vec<(u32, String)> = (0..1000).map(|i| (i, format!("n{i}"))).collect();
        assert_eq!(decode::<Vec<(u32, String)>>(&encode(&v), "t").unwrap(), v);
    }
}
