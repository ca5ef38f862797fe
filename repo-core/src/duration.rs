//! Durations as people type them: `30d`, `1y2m`, `12h`, `1h40min`, `90s`.
//!
//! One grammar for every duration cairn reads (`forget --keep-within`,
//! `prune --grace`, `check --max-age`/`--max-duration`, plan cadences and
//! timeouts), and one formatter whose output that grammar reads back:
//! `parse_duration(&format_duration(d)) == d` for every whole number of
//! seconds.

use std::fmt;
use std::time::Duration;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// Units, longest name first so `min` is not read as `m` followed by `in`.
/// `m` is 30 days and `y` 365 days, as in restic's `--keep-within`.
const UNITS: [(&str, u64); 7] = [
    ("min", MINUTE),
    ("y", 365 * DAY),
    ("m", 30 * DAY),
    ("w", 7 * DAY),
    ("d", DAY),
    ("h", HOUR),
    ("s", 1),
];

/// A duration that does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (use e.g. 30d, 1y2m, 12h, 1h30min, 90s, or 0)")]
pub struct DurationError {
    /// The text given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses a duration: `0`, or numbers each followed by a unit, in any
/// order: `y` (365 days), `m` (30 days), `w`, `d`, `h`, `min`, `s`.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    parse(s, true)
}

/// [`parse_duration`] without `y` and `m`, for run times (`--max-duration`,
/// plan timeouts), where `10m` is far more likely meant as ten minutes than
/// as 300 days: it is refused instead.
pub fn parse_run_time(s: &str) -> Result<Duration, DurationError> {
    parse(s, false)
}

fn parse(s: &str, calendar: bool) -> Result<Duration, DurationError> {
    let bad = |reason| DurationError {
        input: s.to_owned(),
        reason,
    };
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut secs: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("expected a number"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| bad("number too large"))?;
        rest = &rest[digits..];
        if rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(bad("a number needs a unit (y, m, w, d, h, min, s)"));
        }
        let Some((unit, mult)) = UNITS.iter().find(|(u, _)| rest.starts_with(u)) else {
            return Err(bad("units are y, m, w, d, h, min, s"));
        };
        if !calendar && matches!(*unit, "y" | "m") {
            return Err(bad(
                "y and m (30 days) are not used for run times; write min for minutes",
            ));
        }
        rest = &rest[unit.len()..];
        secs = n
            .checked_mul(*mult)
            .and_then(|v| secs.checked_add(v))
            .ok_or_else(|| bad("too long"))?;
    }
    Ok(Duration::from_secs(secs))
}

/// Deserializes an optional [`parse_duration`] text (for serde's
/// `deserialize_with`): a present value must parse.
pub fn deserialize_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    parse_duration(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// `30d`, `2d12h`, `1h40min`, `90s` → `1min30s`: whole days, hours,
/// minutes, then seconds (below a second is dropped). Years and months are
/// not used, as `1m` reads as 30 days to cairn but as a calendar month to a
/// person. Zero is `0s`.
pub fn format_duration(d: Duration) -> String {
    HumanDuration(d).to_string()
}

/// [`format_duration`] as a `Display` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        if s == 0 {
            return f.write_str("0s");
        }
        let parts = [
            (s / DAY, "d"),
            (s % DAY / HOUR, "h"),
            (s % HOUR / MINUTE, "min"),
            (s % MINUTE, "s"),
        ];
        for (n, u) in parts.iter().filter(|(n, _)| *n > 0) {
            write!(f, "{n}{u}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: &str) -> u64 {
        parse_duration(s).unwrap().as_secs()
    }

    #[test]
    fn every_unit_parses() {
        assert_eq!(secs("30d"), 30 * DAY);
        assert_eq!(secs("1y2m"), (365 + 60) * DAY);
        assert_eq!(secs("12h"), 12 * HOUR);
        assert_eq!(secs("2w1d"), 15 * DAY);
        assert_eq!(secs("90min"), 90 * MINUTE);
        assert_eq!(secs("1h30min"), 90 * MINUTE);
        assert_eq!(secs("1m1min"), 30 * DAY + MINUTE);
        assert_eq!(secs("45s"), 45);
        assert_eq!(secs(" 2d "), 2 * DAY);
        assert_eq!(secs("0"), 0);
        assert_eq!(secs("0s"), 0);
    }

    #[test]
    fn malformed_durations_are_refused() {
        for bad in [
            "",
            "d",
            "30",
            "30x",
            "3d-",
            "1h30",
            "99999999999999999999y",
            "600000000000y",
            "-1d",
            "1.5h",
            "mins",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        for bad in ["10m", "1y", "1h1m"] {
            assert!(parse_run_time(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_run_time("1h30min").unwrap().as_secs(), 90 * MINUTE);
        assert_eq!(parse_run_time("2w").unwrap().as_secs(), 14 * DAY);
        let e = parse_duration("3x").unwrap_err();
        assert!(e.to_string().contains("\"3x\""), "{e}");
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration(Duration::from_secs(30 * DAY)), "30d");
        assert_eq!(
            format_duration(Duration::from_secs(2 * DAY + 12 * HOUR)),
            "2d12h"
        );
        assert_eq!(format_duration(Duration::from_secs(100 * 60)), "1h40min");
        assert_eq!(format_duration(Duration::from_secs(90)), "1min30s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s");
    }

    /// The formatter's output was once refused by one of the parsers
    /// (`1h40min` by `--keep-within`): it must always read back.
    #[test]
    fn format_round_trips_small_values_exhaustively() {
        for s in 0..3 * DAY {
            let d = Duration::from_secs(s);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{s}");
            assert_eq!(parse_run_time(&format_duration(d)), Ok(d), "{s}");
        }
    }

    proptest! {
        #[test]
        fn format_round_trips(s in any::<u64>()) {
            let d = Duration::from_secs(s);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
            prop_assert_eq!(parse_run_time(&format_duration(d)), Ok(d));
        }
    }
}
