//! The one binary encoding of structured records (SPEC §2.2).
//!
//! bincode 2 with fixed-width little-endian integers and a decode limit: u8..u64
//! and i64 as 1..8 little-endian bytes, `bool` as one byte, `[u8; N]` as N raw
//! bytes, `Vec<T>`/`String` as a u64 count followed by the items, `Option<T>`
//! as a 0/1 byte followed by the value, enums as a u32 variant index followed
//! by the fields. Decoding must consume the whole input.

use bincode::config::{self, Configuration, Fixint, Limit, LittleEndian};

use crate::format::{FormatError, MAX_META_FILE};

type Cfg = Configuration<LittleEndian, Fixint, Limit<MAX_META_FILE>>;

const fn cfg() -> Cfg {
    config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<MAX_META_FILE>()
}

/// Encodes `value` canonically.
pub fn encode<T: bincode::Encode>(value: &T) -> Vec<u8> {
    // Encoding into a Vec cannot fail for our types (no fallible maps, no
    // limit on encoding); storing empty bytes instead would lose data.
    #[allow(clippy::expect_used)]
    bincode::encode_to_vec(value, cfg()).expect("encoding to a Vec cannot fail")
}

/// Decodes a whole `bytes` as `T`; trailing bytes are an error.
pub fn decode<T: bincode::Decode<()>>(bytes: &[u8], what: &'static str) -> Result<T, FormatError> {
    let (value, used) = bincode::decode_from_slice(bytes, cfg()).map_err(|e| match e {
        bincode::error::DecodeError::UnexpectedEnd { .. } => FormatError::Truncated { what },
        bincode::error::DecodeError::LimitExceeded => FormatError::TooLarge {
            what,
            len: bytes.len() as u64,
            limit: MAX_META_FILE as u64,
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
