//! CRC-64 as Redis computes it (Jones polynomial, reflected, init 0, no
//! final xor): the trailer of an RDB file and of a `DUMP` payload.

/// The Jones polynomial in reflected (LSB-first) form.
const POLY: u64 = 0x95ac_9329_ac4b_c9b5;

/// One lookup entry per byte value, built at compile time.
const TABLE: [u64; 256] = table();

const fn table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        t[i] = crc;
        i += 1;
    }
    t
}

/// Continues the CRC `crc` over `data` (start with 0).
pub fn update(mut crc: u64, data: &[u8]) -> u64 {
    for &b in data {
        crc = TABLE[((crc ^ u64::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// The CRC of `data`.
#[cfg(test)]
pub fn crc64(data: &[u8]) -> u64 {
    update(0, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_matches_redis() {
        // src/crc64.c's self test: crc64(0, "123456789", 9) == 0xe9c6d914c4b8d9ca.
        assert_eq!(crc64(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
    }

    #[test]
    fn incremental_equals_whole() {
        let data = b"REDIS0010 some payload bytes \xff";
        let (a, b) = data.split_at(7);
        assert_eq!(update(update(0, a), b), crc64(data));
        assert_eq!(crc64(b""), 0);
    }
}
