//! `cairn check`: verify the repository's structure and, optionally, data.

use std::time::Duration;

use anyhow::{Result, bail};
use repo_core::{CheckOptions, CheckReport, ReadData};
use serde::Serialize;

use super::{Status, open};
use crate::cli::{CheckArgs, GlobalArgs};
use crate::output::{self, Output};
use crate::progress::TermProgress;

#[derive(Serialize)]
struct CheckJson<'a> {
    /// What data was selected: `none`, `all`, `n/m`, `x%` or a size.
    read_data: String,
    duration_s: f64,
    #[serde(flatten)]
    report: &'a CheckReport,
}

/// Parses `--max-duration`: numbers with units `d`, `h`, `min` and `s`,
/// e.g. `1h`, `90min`, `1h30min`. `m` is refused: elsewhere (`--max-age`,
/// `--keep-within`) it means 30 days.
pub fn parse_run_time(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("invalid duration {s:?}: {why} (use e.g. 1h, 90min, 1h30min)");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad("empty"));
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
        let units: [(&str, u64); 4] = [("min", 60), ("d", 86_400), ("h", 3600), ("s", 1)];
        let Some((u, mult)) = units.iter().find(|(u, _)| rest.starts_with(u)) else {
            return Err(bad("units are d, h, min, s"));
        };
        rest = &rest[u.len()..];
        secs = n
            .checked_mul(*mult)
            .and_then(|v| secs.checked_add(v))
            .ok_or_else(|| bad("too long"))?;
    }
    Ok(Duration::from_secs(secs))
}

/// Runs the check, prints the report, and fails (exit 1) on any error.
pub fn run(g: &GlobalArgs, out: Output, a: &CheckArgs) -> Result<Status> {
    let repo = open(g, out)?;
    let read_data = match (a.read_data, a.read_data_subset) {
        (_, Some(subset)) => subset,
        (true, None) => ReadData::All,
        (false, None) => ReadData::None,
    };
    let opts = CheckOptions {
        read_data,
        max_age: a.max_age,
        max_duration: a.max_duration,
        ..Default::default()
    };
    out.verbose(1, format!("checking (read data: {read_data})"));
    let progress = TermProgress::new(out);
    let report = repo.check(&opts, &progress)?;
    progress.finish();
    if out.json {
        out.json_value(&CheckJson {
            read_data: read_data.to_string(),
            duration_s: output::seconds(report.duration.as_nanos() as u64),
            report: &report,
        })?;
    } else if out.quiet {
        // Errors still reach stderr through the failure below.
        for p in &report.errors {
            eprintln!("cairn: check: {p}");
        }
    } else {
        out.line(report.to_string())?;
    }
    if !report.is_ok() {
        let n = report.errors.len();
        bail!(
            "check found {n} error{} (see the report above)",
            if n == 1 { "" } else { "s" }
        );
    }
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_time_units() {
        assert_eq!(parse_run_time("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_run_time("90min"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_run_time("1h30min"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_run_time("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_run_time("45s"), Ok(Duration::from_secs(45)));
        for bad in ["", "1", "1m", "h", "1y", "1h x"] {
            assert!(parse_run_time(bad).is_err(), "{bad:?} accepted");
        }
    }
}
