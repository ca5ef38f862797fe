//! Sizes for people: `12 B`, `800 KiB`, `1.2 MiB`. The one byte formatter,
//! used by the library's reports and by the CLI.

use std::fmt;

/// A byte count shown in binary units: below 1 KiB exact (`12 B`), else one
/// decimal below 100 of the unit (`1.2 MiB`), none from 100 on (`800 KiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanBytes(pub u64);

impl fmt::Display for HumanBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        let n = self.0;
        if n < 1024 {
            return write!(f, "{n} B");
        }
        let mut v = n as f64 / 1024.0;
        let mut unit = UNITS[0];
        for u in &UNITS[1..] {
            if v < 1024.0 {
                break;
            }
            v /= 1024.0;
            unit = u;
        }
        // `99.96` would print as `100.0`: switch to no decimal there too.
        if v < 100.0 && format!("{v:.1}") != "100.0" {
            write!(f, "{v:.1} {unit}")
        } else {
            write!(f, "{v:.0} {unit}")
        }
    }
}

/// [`HumanBytes`] as a string.
pub fn format_bytes(n: u64) -> String {
    HumanBytes(n).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(800 * 1024), "800 KiB");
        assert_eq!(format_bytes(1_258_291), "1.2 MiB");
        assert_eq!(format_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(format_bytes(1023 * 1024 + 1000), "1024 KiB");
        assert_eq!(format_bytes(u64::MAX), "16.0 EiB");
    }
}
