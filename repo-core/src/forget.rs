//! Retention: which snapshots a policy keeps, and forgetting the others
//! (docs/retention.md). Only snapshot files are deleted here; the data they referenced
//! stays until `prune`.
//!
//! The rules are restic's `forget`: snapshots are grouped (by host and paths
//! unless told otherwise), each group is sorted newest first, and every rule
//! walks the whole group independently; a snapshot is kept if any rule keeps
//! it, and the plan records every rule that did. [`plan_forget`] is pure, so
//! the calendar arithmetic is tested without a repository.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::backend::ObjectKind;
use crate::duration::format_duration;
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::repository::{Repository, SnapshotFilter};
use crate::snapshot::SnapshotEntry;

/// Which snapshots to keep. A count of `None` or `Some(0)` and a
/// `keep_within` of `None` or zero are "no rule", as in restic. A policy with
/// no rule at all is refused ([`RetentionPolicy::validate`]) rather than
/// read as "forget everything".
///
/// It deserializes from a table of the same names (a plan's `[retention]`),
/// unknown names refused and `keep_within` in the duration grammar
/// ([`parse_duration`](crate::parse_duration)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Keep the N newest snapshots.
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N newest hours that have one.
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest days that have one.
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the N newest ISO 8601 weeks
    /// (Monday to Sunday) that have one.
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest months that have one.
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest years that have one.
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot taken less than this long before the newest
    /// snapshot of its group (not before now: a repository that stopped
    /// receiving backups does not lose them all to time).
    #[serde(deserialize_with = "crate::duration::deserialize_opt")]
    pub keep_within: Option<Duration>,
    /// Keep snapshots carrying a tag list: each entry is one tag or several
    /// separated by commas (`"a,b"` needs both `a` and `b`); a snapshot
    /// matching any entry is kept.
    pub keep_tags: Vec<String>,
}

/// The counted rules, in the order their reasons are listed.
const PERIODS: [Period; 6] = [
    Period::Last,
    Period::Hourly,
    Period::Daily,
    Period::Weekly,
    Period::Monthly,
    Period::Yearly,
];

impl RetentionPolicy {
    fn count(&self, p: Period) -> u32 {
        let c = match p {
            Period::Last => self.keep_last,
            Period::Hourly => self.keep_hourly,
            Period::Daily => self.keep_daily,
            Period::Weekly => self.keep_weekly,
            Period::Monthly => self.keep_monthly,
            Period::Yearly => self.keep_yearly,
        };
        c.unwrap_or(0)
    }

    fn within(&self) -> Option<Duration> {
        self.keep_within.filter(|d| !d.is_zero())
    }

    /// True when no rule is given.
    pub fn is_empty(&self) -> bool {
        PERIODS.iter().all(|&p| self.count(p) == 0)
            && self.within().is_none()
            && self.keep_tags.is_empty()
    }

    /// Refuses a policy with no rule (it would forget every snapshot) and
    /// empty tag lists (which restic would match against every snapshot).
    pub fn validate(&self) -> Result<()> {
        if self.is_empty() {
            return Err(Error::InvalidArgument(
                "no keep rule given: refusing to forget every snapshot \
                 (use --keep-last, --keep-daily, --keep-within, --keep-tag, …)"
                    .into(),
            ));
        }
        if self.keep_tags.iter().any(|t| tag_list(t).is_empty()) {
            return Err(Error::InvalidArgument(
                "an empty --keep-tag would keep every snapshot".into(),
            ));
        }
        Ok(())
    }
}

impl fmt::Display for RetentionPolicy {
    /// `keep 2 latest, 7 daily snapshots, all snapshots within 30d of the
    /// newest and all snapshots with tags [keep]`, like restic's header.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts: Vec<String> = PERIODS
            .iter()
            .filter(|&&p| self.count(p) > 0)
            .map(|&p| {
                let name = if p == Period::Last {
                    "latest"
                } else {
                    p.name()
                };
                match self.count(p) {
                    u32::MAX => format!("all {name}"),
                    n => format!("{n} {name}"),
                }
            })
            .collect();
        let mut parts = Vec::new();
        if !counts.is_empty() {
            parts.push(format!("{} snapshots", counts.join(", ")));
        }
        if let Some(d) = self.within() {
            parts.push(format!(
                "all snapshots within {} of the newest",
                format_duration(d)
            ));
        }
        if !self.keep_tags.is_empty() {
            parts.push(format!(
                "all snapshots with tags [{}]",
                self.keep_tags.join("] or [")
            ));
        }
        if parts.is_empty() {
            return f.write_str("keep nothing");
        }
        write!(f, "keep {}", parts.join(" and "))
    }
}

/// The tags of one `keep_tags` entry.
fn tag_list(entry: &str) -> Vec<&str> {
    entry
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

/// Which snapshot fields make up a group. The policy is applied to each
/// group on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GroupBy {
    /// Snapshots of different hosts are in different groups.
    pub host: bool,
    /// Snapshots of different path sets (order ignored) are in different groups.
    pub paths: bool,
    /// Snapshots with different tag sets are in different groups.
    pub tags: bool,
}

impl Default for GroupBy {
    /// Host and paths, as restic.
    fn default() -> Self {
        Self {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl GroupBy {
    /// One group holding every snapshot.
    pub const NONE: GroupBy = GroupBy {
        host: false,
        paths: false,
        tags: false,
    };

    fn key(&self, e: &SnapshotEntry) -> GroupKey {
        let s = &e.snapshot;
        GroupKey {
            host: self.host.then(|| s.host.clone()),
            paths: self.paths.then(|| {
                let mut p = s.paths.clone();
                p.sort();
                p.dedup();
                p
            }),
            tags: self.tags.then(|| {
                let mut t = s.tags.clone();
                t.sort();
                t.dedup();
                t
            }),
        }
    }
}

impl FromStr for GroupBy {
    type Err = Error;

    /// A comma-separated subset of `host`, `paths`, `tags`; empty for one
    /// group of everything.
    fn from_str(s: &str) -> Result<Self> {
        let mut g = GroupBy::NONE;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" | "path" => g.paths = true,
                "tags" | "tag" => g.tags = true,
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "cannot group by {other:?}: use host, paths, tags (comma-separated) or \"\""
                    )));
                }
            }
        }
        Ok(g)
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = [
            (self.host, "host"),
            (self.paths, "paths"),
            (self.tags, "tags"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
        f.write_str(&parts.join(","))
    }
}

/// What the snapshots of one group share. A field is `None` when the
/// grouping does not use it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GroupKey {
    /// Host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Paths, sorted (raw bytes; lossy UTF-8 in JSON).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_paths")]
    pub paths: Option<Vec<Vec<u8>>>,
    /// Tags, sorted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

fn ser_paths<S: Serializer>(p: &Option<Vec<Vec<u8>>>, s: S) -> Result<S::Ok, S::Error> {
    p.as_ref()
        .map(|v| {
            v.iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect::<Vec<_>>()
        })
        .serialize(s)
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(h) = &self.host {
            parts.push(format!("host {h}"));
        }
        if let Some(p) = &self.paths {
            let p: Vec<_> = p.iter().map(|b| String::from_utf8_lossy(b)).collect();
            parts.push(format!("paths [{}]", p.join(", ")));
        }
        if let Some(t) = &self.tags {
            parts.push(format!("tags [{}]", t.join(", ")));
        }
        if parts.is_empty() {
            return f.write_str("all snapshots");
        }
        f.write_str(&parts.join(", "))
    }
}

/// A snapshot the policy keeps, and every rule that kept it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its time, nanoseconds since the epoch (RFC 3339 UTC in JSON).
    #[serde(rename = "time", serialize_with = "ser_time")]
    pub time_ns: i64,
    /// Why, e.g. `daily snapshot`, `oldest yearly snapshot`, `within 30d`,
    /// `has tags [keep]`, in the order of docs/retention.md.
    pub reasons: Vec<String>,
}

/// A snapshot the policy does not keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its time, nanoseconds since the epoch (RFC 3339 UTC in JSON).
    #[serde(rename = "time", serialize_with = "ser_time")]
    pub time_ns: i64,
}

/// The decision for one group, newest first in both lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForgetGroup {
    /// What the group's snapshots share.
    pub key: GroupKey,
    /// Snapshots kept, with reasons.
    pub keep: Vec<Kept>,
    /// Snapshots to forget.
    pub remove: Vec<Removed>,
}

/// What [`Repository::forget`] will do: computed first, printed or
/// serialized, then executed (or dropped for a dry run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForgetPlan {
    /// One entry per group, ordered by group key.
    pub groups: Vec<ForgetGroup>,
    /// The UTC offset calendar periods were computed in (`+02:00`).
    #[serde(serialize_with = "ser_offset")]
    pub utc_offset: UtcOffset,
}

impl ForgetPlan {
    /// Every kept snapshot.
    pub fn kept(&self) -> impl Iterator<Item = &Kept> {
        self.groups.iter().flat_map(|g| g.keep.iter())
    }

    /// Every snapshot to forget.
    pub fn removed(&self) -> impl Iterator<Item = &Removed> {
        self.groups.iter().flat_map(|g| g.remove.iter())
    }
}

/// What [`Repository::forget`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ForgetSummary {
    /// Snapshot files deleted.
    pub removed: Vec<SnapshotId>,
    /// Snapshots of the plan that were already gone (another client forgot
    /// them first).
    pub already_gone: Vec<SnapshotId>,
}

fn datetime(ns: i64) -> OffsetDateTime {
    // Every i64 nanosecond count is within the `time` crate's range.
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A fixed offset from UTC, in which [`plan_forget`] computes calendar
/// periods (days, weeks, ...). Prints as `+02:00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcOffset(time::UtcOffset);

impl UtcOffset {
    /// UTC itself.
    pub const UTC: Self = Self(time::UtcOffset::UTC);

    /// The offset `seconds` east of UTC; fails outside ±25:59:59.
    pub fn from_seconds(seconds: i32) -> Result<Self> {
        time::UtcOffset::from_whole_seconds(seconds)
            .map(Self)
            .map_err(|_| {
                Error::InvalidArgument(format!("UTC offset of {seconds} s is out of range"))
            })
    }

    /// Seconds east of UTC.
    pub fn seconds(self) -> i32 {
        self.0.whole_seconds()
    }
}

impl std::fmt::Display for UtcOffset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&offset_string(*self))
    }
}

/// The wall-clock fields of `ns` at `offset`. Shifting the instant and
/// reading it as UTC cannot overflow the way `to_offset` can.
fn local(ns: i64, offset: UtcOffset) -> OffsetDateTime {
    let shifted = i128::from(ns) + i128::from(offset.seconds()) * 1_000_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(shifted).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn ser_time<S: Serializer>(ns: &i64, s: S) -> Result<S::Ok, S::Error> {
    let f =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");
    datetime(*ns)
        .format(f)
        .map_err(serde::ser::Error::custom)?
        .serialize(s)
}

fn offset_string(o: UtcOffset) -> String {
    let (h, m, _) = o.0.as_hms();
    let sign = if o.0.is_negative() { '-' } else { '+' };
    format!("{sign}{:02}:{:02}", h.unsigned_abs(), m.unsigned_abs())
}

fn ser_offset<S: Serializer>(o: &UtcOffset, s: S) -> Result<S::Ok, S::Error> {
    offset_string(*o).serialize(s)
}

/// A counted rule and its calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Last => "last",
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// A number that is equal for two snapshots exactly when they fall in the
    /// same period at `offset`; for `Last`, every snapshot is its own period.
    fn bucket(self, ns: i64, nr: usize, offset: UtcOffset) -> i64 {
        let t = local(ns, offset);
        let (y, m, d, h) = (
            i64::from(t.year()),
            i64::from(u8::from(t.month())),
            i64::from(t.day()),
            i64::from(t.hour()),
        );
        match self {
            Period::Last => nr as i64,
            Period::Hourly => ((y * 100 + m) * 100 + d) * 100 + h,
            Period::Daily => (y * 100 + m) * 100 + d,
            Period::Weekly => {
                // ISO 8601: weeks start on Monday, and the days of a week
                // that straddles New Year belong to the year of its Thursday.
                let (iy, w, _) = t.to_iso_week_date();
                i64::from(iy) * 100 + i64::from(w)
            }
            Period::Monthly => y * 100 + m,
            Period::Yearly => y,
        }
    }
}

/// Decides, for every snapshot in `snapshots`, whether `policy` keeps it
/// (docs/retention.md). Calendar periods are those of wall-clock time at `offset`.
/// Pure: no I/O, no clock. Fails on an empty policy.
pub fn plan_forget(
    snapshots: &[SnapshotEntry],
    policy: &RetentionPolicy,
    group_by: GroupBy,
    offset: UtcOffset,
) -> Result<ForgetPlan> {
    policy.validate()?;
    let mut groups: BTreeMap<GroupKey, Vec<&SnapshotEntry>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for e in snapshots {
        // A snapshot listed twice must not be decided (or deleted) twice.
        if seen.insert(e.id) {
            groups.entry(group_by.key(e)).or_default().push(e);
        }
    }
    let groups = groups
        .into_iter()
        .map(|(key, mut list)| {
            // Newest first; equal times in id order, so the plan does not
            // depend on the order of the input.
            list.sort_by(|a, b| {
                b.snapshot
                    .time_ns
                    .cmp(&a.snapshot.time_ns)
                    .then(a.id.cmp(&b.id))
            });
            apply(key, &list, policy, offset)
        })
        .collect();
    Ok(ForgetPlan {
        groups,
        utc_offset: offset,
    })
}

/// Applies the policy to one group, sorted newest first.
fn apply(
    key: GroupKey,
    list: &[&SnapshotEntry],
    policy: &RetentionPolicy,
    offset: UtcOffset,
) -> ForgetGroup {
    let mut keep = Vec::new();
    let mut remove = Vec::new();
    // Remaining count and the period of the last snapshot kept, per rule.
    let mut left: Vec<(Period, u32, Option<i64>)> = PERIODS
        .iter()
        .map(|&p| (p, policy.count(p), None))
        .collect();
    // Measured from the group's newest snapshot (restic), so it is the same
    // plan whenever it is computed.
    let within_cut = policy.within().and_then(|d| {
        let newest = list.first()?.snapshot.time_ns;
        Some(i128::from(newest) - d.as_nanos() as i128)
    });
    let tag_lists: Vec<(&String, Vec<&str>)> =
        policy.keep_tags.iter().map(|t| (t, tag_list(t))).collect();
    for (nr, e) in list.iter().enumerate() {
        let s = &e.snapshot;
        let oldest = nr + 1 == list.len();
        let mut reasons = Vec::new();
        for (entry, tags) in &tag_lists {
            if tags.iter().all(|t| s.tags.iter().any(|st| st == t)) {
                reasons.push(format!("has tags [{entry}]"));
            }
        }
        if let (Some(cut), Some(d)) = (within_cut, policy.within())
            && i128::from(s.time_ns) > cut
        {
            reasons.push(format!("within {}", format_duration(d)));
        }
        for (period, count, last) in &mut left {
            if *count == 0 {
                continue;
            }
            let b = period.bucket(s.time_ns, nr, offset);
            // A new period is kept; so is the group's oldest snapshot while
            // the rule has counts left, which keeps the longest history the
            // counts allow (restic ≥ 0.15).
            if Some(b) != *last {
                reasons.push(format!("{} snapshot", period.name()));
            } else if oldest {
                reasons.push(format!("oldest {} snapshot", period.name()));
            } else {
                continue;
            }
            *last = Some(b);
            if *count != u32::MAX {
                *count -= 1;
            }
        }
        if reasons.is_empty() {
            remove.push(Removed {
                id: e.id,
                time_ns: s.time_ns,
            });
        } else {
            keep.push(Kept {
                id: e.id,
                time_ns: s.time_ns,
                reasons,
            });
        }
    }
    ForgetGroup { key, keep, remove }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl fmt::Display for ForgetPlan {
    /// Per group, the kept snapshots with their reasons, then the removed
    /// ones; times are wall-clock at the plan's offset.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fmt_t = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
        let time = |ns: i64| local(ns, self.utc_offset).format(fmt_t).unwrap_or_default();
        if self.groups.is_empty() {
            return writeln!(f, "no snapshots");
        }
        for (i, g) in self.groups.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "snapshots for {}:", g.key)?;
            writeln!(f, "keep {} snapshot{}:", g.keep.len(), plural(g.keep.len()))?;
            for k in &g.keep {
                writeln!(
                    f,
                    "  {}  {}  {}",
                    k.id.short(),
                    time(k.time_ns),
                    k.reasons.join(", ")
                )?;
            }
            if g.remove.is_empty() {
                writeln!(f, "remove nothing")?;
            } else {
                writeln!(
                    f,
                    "remove {} snapshot{}:",
                    g.remove.len(),
                    plural(g.remove.len())
                )?;
                for r in &g.remove {
                    writeln!(f, "  {}  {}", r.id.short(), time(r.time_ns))?;
                }
            }
        }
        writeln!(
            f,
            "(times at UTC{}; {} kept, {} to remove)",
            offset_string(self.utc_offset),
            self.kept().count(),
            self.removed().count()
        )
    }
}

impl Repository {
    /// The forget plan for the snapshots passing `filter` (docs/retention.md).
    /// Snapshots the filter excludes are neither kept nor removed.
    pub fn forget_plan(
        &self,
        policy: &RetentionPolicy,
        group_by: GroupBy,
        offset: UtcOffset,
        filter: &SnapshotFilter,
    ) -> Result<ForgetPlan> {
        policy.validate()?;
        let snaps: Vec<SnapshotEntry> = self
            .snapshots()?
            .into_iter()
            .filter(|s| filter.matches(&s.snapshot))
            .collect();
        plan_forget(&snaps, policy, group_by, offset)
    }

    /// Deletes the snapshot files `plan` removes, and nothing else: data
    /// stays until `prune`. A snapshot already gone is not an error
    /// (another client may have forgotten it). Backups may run meanwhile:
    /// they only add snapshot files, which the plan does not name.
    pub fn forget(&self, plan: &ForgetPlan) -> Result<ForgetSummary> {
        let kept: BTreeSet<SnapshotId> = plan.kept().map(|k| k.id).collect();
        if let Some(r) = plan.removed().find(|r| kept.contains(&r.id)) {
            return Err(Error::InvalidArgument(format!(
                "forget plan both keeps and removes snapshot {}",
                r.id
            )));
        }
        let mut summary = ForgetSummary::default();
        for r in plan.removed() {
            match self.backend().delete(ObjectKind::Snapshot, &r.id.to_hex()) {
                Ok(()) => summary.removed.push(r.id),
                Err(e) if e.is_not_found() => summary.already_gone.push(r.id),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::crypto::KdfParams;
    use crate::id::TreeId;
    use crate::repository::InitOptions;
    use crate::snapshot::{Snapshot, SnapshotSummary};
    use time::macros::{datetime, offset};

    fn snap(host: &str, paths: &[&str], tags: &[&str], t: OffsetDateTime) -> Snapshot {
        Snapshot {
            time_ns: t.unix_timestamp_nanos() as i64,
            host: host.into(),
            username: "u".into(),
            paths: paths.iter().map(|p| p.as_bytes().to_vec()).collect(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            parent: None,
            tree: TreeId::from_bytes([7; 32]),
            program_version: "cairn test".into(),
            summary: SnapshotSummary::default(),
            metadata: Vec::new(),
            original: None,
        }
    }

    /// A snapshot whose id is derived from its label, so results can be
    /// compared by label.
    fn entry(
        label: &str,
        host: &str,
        paths: &[&str],
        tags: &[&str],
        t: OffsetDateTime,
    ) -> SnapshotEntry {
        SnapshotEntry {
            id: SnapshotId::hash_of(label.as_bytes()),
            snapshot: snap(host, paths, tags, t),
        }
    }

    /// The synthetic two-year calendar, all in one group (host `h`, path
    /// `/data`). Times are UTC; the comments give weekday, ISO week, and the
    /// wall clock at UTC+02:00 where it falls on another day.
    fn calendar() -> Vec<SnapshotEntry> {
        // (label, tags, time UTC)   weekday, ISO week; wall clock at UTC+2 when it is another day
        let table: [(&str, &[&str], OffsetDateTime); 23] = [
            // Sun, ISO 2022-W52 (Jan 1 2023 is a Sunday)
            ("a01", &[], datetime!(2023-01-01 00:30 UTC)),
            // Sun, 2022-W52; +2: Mon 2023-01-02 00:30, 2023-W01
            ("a02", &[], datetime!(2023-01-01 22:30 UTC)),
            // Sun, 2023-W02
            ("a03", &["manual"], datetime!(2023-01-15 12:00 UTC)),
            // Tue, W09; +2: Wed 03-01 01:00 (month end)
            ("a04", &[], datetime!(2023-02-28 23:00 UTC)),
            // Fri, W13 (month end); then a gap: April and May 2023
            ("a05", &[], datetime!(2023-03-31 10:00 UTC)),
            // Sat, W23
            ("a06", &["keep"], datetime!(2023-06-10 08:00 UTC)),
            // Sat, W23, the same day as a06
            ("a07", &[], datetime!(2023-06-10 20:00 UTC)),
            // Sun, W23; +2: Mon 06-12 01:30, W24
            ("a08", &[], datetime!(2023-06-11 23:30 UTC)),
            // Mon, W24; then a gap: July to December 2023
            (
                "a09",
                &["manual", "release"],
                datetime!(2023-06-12 09:00 UTC),
            ),
            // Sun, 2023-W52; +2: Mon 2024-01-01 01:50, 2024-W01
            ("a10", &[], datetime!(2023-12-31 23:50 UTC)),
            // Mon, 2024-W01
            ("a11", &[], datetime!(2024-01-01 00:10 UTC)),
            // Wed, W09
            ("a12", &[], datetime!(2024-02-28 18:00 UTC)),
            // Thu, W09, leap day
            ("a13", &["keep", "leap"], datetime!(2024-02-29 12:00 UTC)),
            // Thu, W09; +2: Fri 03-01 01:30
            ("a14", &[], datetime!(2024-02-29 23:30 UTC)),
            // Fri, W09; then a gap: most of March and April 2024
            ("a15", &[], datetime!(2024-03-01 06:00 UTC)),
            // Tue, W18; +2: Wed 05-01 00:15 (month end)
            ("a16", &[], datetime!(2024-04-30 22:15 UTC)),
            // Wed, W18; then a gap: May to December 2024
            ("a17", &[], datetime!(2024-05-01 07:00 UTC)),
            // Sun, 2024-W52
            ("a18", &[], datetime!(2024-12-29 10:00 UTC)),
            // Sun, 2024-W52 (+2: 23:00, still Sunday)
            ("a19", &[], datetime!(2024-12-29 21:00 UTC)),
            // Mon, ISO 2025-W01 although still 2024
            ("a20", &[], datetime!(2024-12-30 08:00 UTC)),
            // Tue, 2025-W01
            ("a21", &[], datetime!(2024-12-31 09:00 UTC)),
            // Tue, 2025-W01, hour 10
            ("a22", &[], datetime!(2024-12-31 10:00 UTC)),
            // Tue, 2025-W01, hour 10 like a22
            ("a23", &[], datetime!(2024-12-31 10:40 UTC)),
        ];
        table
            .iter()
            .map(|(label, tags, t)| entry(label, "h", &["/data"], tags, *t))
            .collect()
    }

    fn label_of(entries: &[SnapshotEntry], id: &SnapshotId) -> String {
        let n = entries
            .iter()
            .position(|e| &e.id == id)
            .expect("id in calendar");
        format!("a{:02}", n + 1)
    }

    /// Kept labels, newest first, for a single-group plan.
    fn kept(policy: RetentionPolicy, offset: UtcOffset) -> Vec<String> {
        let cal = calendar();
        let plan = plan_forget(&cal, &policy, GroupBy::default(), offset).unwrap();
        assert_eq!(plan.groups.len(), 1);
        let g = &plan.groups[0];
        // Every snapshot is decided exactly once.
        assert_eq!(g.keep.len() + g.remove.len(), cal.len());
        g.keep.iter().map(|k| label_of(&cal, &k.id)).collect()
    }

    fn labels(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    const UTC: UtcOffset = UtcOffset::UTC;
    const DAY: u64 = 86_400;
    const PLUS2: UtcOffset = UtcOffset(offset!(+2));

    #[test]
    fn calendar_labels_match_positions() {
        // label_of relies on the calendar being listed in label order.
        let cal = calendar();
        assert_eq!(cal.len(), 23);
        assert!(
            cal.windows(2)
                .all(|w| w[0].snapshot.time_ns < w[1].snapshot.time_ns)
        );
    }

    #[test]
    fn keep_last() {
        // The five newest, whatever their periods: a23 a22 a21 a20 a19.
        let p = RetentionPolicy {
            keep_last: Some(5),
            ..Default::default()
        };
        assert_eq!(kept(p, UTC), labels(&["a23", "a22", "a21", "a20", "a19"]));
        // More than there are: everything is kept.
        let p = RetentionPolicy {
            keep_last: Some(100),
            ..Default::default()
        };
        assert_eq!(kept(p, UTC).len(), 23);
    }

    #[test]
    fn keep_hourly() {
        // Hours newest first: 2024-12-31 10h holds a23 and a22, a23 is the
        // newest of it [1]; 09h a21 [2]; 12-30 08h a20 [3]; 12-29 21h a19 [4].
        let p = RetentionPolicy {
            keep_hourly: Some(4),
            ..Default::default()
        };
        assert_eq!(kept(p, UTC), labels(&["a23", "a21", "a20", "a19"]));
    }

    #[test]
    fn keep_daily() {
        // Days (UTC) newest first: 12-31 {a23,a22,a21} -> a23 [1];
        // 12-30 a20 [2]; 12-29 {a19,a18} -> a19 [3]; then June to November,
        // empty, cost nothing: 05-01 a17 [4]; 04-30 a16 [5].
        let p = RetentionPolicy {
            keep_daily: Some(5),
            ..Default::default()
        };
        assert_eq!(kept(p, UTC), labels(&["a23", "a20", "a19", "a17", "a16"]));
    }

    #[test]
    fn keep_daily_depends_on_the_offset() {
        // UTC: as keep_daily, then 03-01 a15 [6]; 02-29 {a14,a13} -> a14
        // [7] (leap day); 02-28 a12 [8].
        let p = RetentionPolicy {
            keep_daily: Some(8),
            ..Default::default()
        };
        assert_eq!(
            kept(p.clone(), UTC),
            labels(&["a23", "a20", "a19", "a17", "a16", "a15", "a14", "a12"])
        );
        // UTC+2: a16 (22:15 UTC) is 05-01 00:15, the same day as a17, so
        // a17 keeps 05-01 [4] and a16 goes; a14 (23:30 UTC) is 03-01 01:30,
        // the same day as a15 [5]; 02-29 is a13 alone [6]; 02-28 a12 [7];
        // 2024-01-01 holds a11 and a10 (23:50 UTC on Dec 31 is 01:50 on
        // Jan 1) -> a11 [8].
        assert_eq!(
            kept(p, PLUS2),
            labels(&["a23", "a20", "a19", "a17", "a15", "a13", "a12", "a11"])
        );
    }

    #[test]
    fn keep_weekly() {
        // ISO weeks (UTC) newest first: 2025-W01 (Mon 2024-12-30 .. ) holds
        // a23 a22 a21 a20 -> a23 [1]; Sunday 12-29 is 2024-W52 {a19,a18}
        // -> a19 [2]; W18 {a17,a16} -> a17 [3]; W09 {a15,a14,a13,a12} ->
        // a15 [4]; 2024-W01 a11 (Monday) [5]; a10 is Sunday 2023-12-31, still
        // 2023-W52 [6]; W24 a09 (Monday) [7]; W23 {a08 (Sunday), a07, a06}
        // -> a08 [8].
        let p = RetentionPolicy {
            keep_weekly: Some(8),
            ..Default::default()
        };
        assert_eq!(
            kept(p.clone(), UTC),
            labels(&["a23", "a19", "a17", "a15", "a11", "a10", "a09", "a08"])
        );
        // UTC+2: a10 moves to Monday 2024-01-01 (W01, behind a11) and a08 to
        // Monday 06-12 (W24, behind a09), so W23 is kept by a07 [7] and the
        // eighth week is W13, a05.
        assert_eq!(
            kept(p, PLUS2),
            labels(&["a23", "a19", "a17", "a15", "a11", "a09", "a07", "a05"])
        );
    }

    #[test]
    fn keep_monthly() {
        // Months (UTC): 2024-12 a23 [1]; 2024-05 a17 [2]; 2024-04 a16 [3];
        // 2024-03 a15 [4]; 2024-02 {a14,a13,a12} -> a14 [5]; 2024-01 a11 [6].
        let p = RetentionPolicy {
            keep_monthly: Some(6),
            ..Default::default()
        };
        assert_eq!(
            kept(p.clone(), UTC),
            labels(&["a23", "a17", "a16", "a15", "a14", "a11"])
        );
        // UTC+2: a16 is in May (behind a17) and a14 in March (behind a15),
        // so 2024-02 is a13 [4], 2024-01 a11 [5] (a10 is January too), and
        // the sixth month is 2023-06, a09.
        assert_eq!(
            kept(p, PLUS2),
            labels(&["a23", "a17", "a15", "a13", "a11", "a09"])
        );
        // More counts than months: each of the 11 months with a snapshot
        // keeps its newest (2023-01 is a03); counts remain, so the group's
        // oldest snapshot a01 is kept too ("oldest monthly snapshot").
        let p = RetentionPolicy {
            keep_monthly: Some(30),
            ..Default::default()
        };
        assert_eq!(
            kept(p, UTC),
            labels(&[
                "a23", "a17", "a16", "a15", "a14", "a11", "a10", "a09", "a05", "a04", "a03", "a01"
            ])
        );
    }

    #[test]
    fn keep_yearly() {
        // UTC: 2024 a23 [1]; a10 (23:50 on Dec 31) is 2023's newest [2].
        let p = RetentionPolicy {
            keep_yearly: Some(2),
            ..Default::default()
        };
        assert_eq!(kept(p, UTC), labels(&["a23", "a10"]));
        // With a count left after the last year, the oldest snapshot is
        // kept as well.
        let p = RetentionPolicy {
            keep_yearly: Some(3),
            ..Default::default()
        };
        assert_eq!(kept(p.clone(), UTC), labels(&["a23", "a10", "a01"]));
        // UTC+2: a10 is 2024-01-01 01:50, so 2023's newest is a09.
        assert_eq!(kept(p, PLUS2), labels(&["a23", "a09", "a01"]));
    }

    #[test]
    fn keep_within() {
        // Measured from the newest snapshot a23 (2024-12-31 10:40), not from
        // now: the cut is 2024-12-29 10:40, so a19 (21:00) stays and a18
        // (10:00) goes.
        let p = RetentionPolicy {
            keep_within: Some(Duration::from_secs(2 * DAY)),
            ..Default::default()
        };
        assert_eq!(kept(p, UTC), labels(&["a23", "a22", "a21", "a20", "a19"]));
        // 1h40m before a23 is exactly a21's time: "within" is strict.
        let p = RetentionPolicy {
            keep_within: Some(Duration::from_secs(100 * 60)),
            ..Default::default()
        };
        assert_eq!(kept(p, UTC), labels(&["a23", "a22"]));
    }

    #[test]
    fn keep_tags() {
        let p = RetentionPolicy {
            keep_tags: vec!["keep".into()],
            ..Default::default()
        };
        assert_eq!(kept(p, UTC), labels(&["a13", "a06"]));
        // A comma list needs all its tags: a03 has `manual` only.
        let p = RetentionPolicy {
            keep_tags: vec!["manual,release".into()],
            ..Default::default()
        };
        assert_eq!(kept(p, UTC), labels(&["a09"]));
        // Several lists: any of them.
        let p = RetentionPolicy {
            keep_tags: vec!["keep".into(), "manual,release".into()],
            ..Default::default()
        };
        assert_eq!(kept(p, UTC), labels(&["a13", "a09", "a06"]));
    }

    #[test]
    fn combined_policy_lists_every_reason() {
        // Each rule walks the whole group on its own:
        //  within 1d (cut 2024-12-30 10:40): a23 a22 a21
        //  last 2: a23 a22
        //  daily 3: a23 (12-31) a20 (12-30) a19 (12-29)
        //  weekly 2: a23 (2025-W01) a19 (2024-W52)
        //  monthly 3: a23 (2024-12) a17 (2024-05) a16 (2024-04)
        //  yearly 5: a23 (2024) a10 (2023), counts left -> oldest a01
        //  tag keep: a13 a06
        let p = RetentionPolicy {
            keep_last: Some(2),
            keep_daily: Some(3),
            keep_weekly: Some(2),
            keep_monthly: Some(3),
            keep_yearly: Some(5),
            keep_within: Some(Duration::from_secs(DAY)),
            keep_tags: vec!["keep".into()],
            ..Default::default()
        };
        let cal = calendar();
        let plan = plan_forget(&cal, &p, GroupBy::default(), UTC).unwrap();
        let g = &plan.groups[0];
        let got: Vec<(String, Vec<&str>)> = g
            .keep
            .iter()
            .map(|k| {
                (
                    label_of(&cal, &k.id),
                    k.reasons.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        let want: Vec<(String, Vec<&str>)> = vec![
            (
                "a23",
                vec![
                    "within 1d",
                    "last snapshot",
                    "daily snapshot",
                    "weekly snapshot",
                    "monthly snapshot",
                    "yearly snapshot",
                ],
            ),
            ("a22", vec!["within 1d", "last snapshot"]),
            ("a21", vec!["within 1d"]),
            ("a20", vec!["daily snapshot"]),
            ("a19", vec!["daily snapshot", "weekly snapshot"]),
            ("a17", vec!["monthly snapshot"]),
            ("a16", vec!["monthly snapshot"]),
            ("a13", vec!["has tags [keep]"]),
            ("a10", vec!["yearly snapshot"]),
            ("a06", vec!["has tags [keep]"]),
            ("a01", vec!["oldest yearly snapshot"]),
        ]
        .into_iter()
        .map(|(l, r)| (l.to_string(), r))
        .collect();
        assert_eq!(got, want);
        let removed: Vec<String> = g.remove.iter().map(|r| label_of(&cal, &r.id)).collect();
        assert_eq!(
            removed,
            labels(&[
                "a18", "a15", "a14", "a12", "a11", "a09", "a08", "a07", "a05", "a04", "a03", "a02"
            ])
        );
    }

    #[test]
    fn empty_policy_is_refused() {
        let cal = calendar();
        for p in [
            RetentionPolicy::default(),
            RetentionPolicy {
                keep_daily: Some(0),
                keep_within: Some(Duration::ZERO),
                ..Default::default()
            },
        ] {
            match plan_forget(&cal, &p, GroupBy::default(), UTC) {
                Err(Error::InvalidArgument(m)) => {
                    assert!(m.starts_with("no keep rule given"), "{m}")
                }
                other => panic!("expected InvalidArgument, got {other:?}"),
            }
        }
        let p = RetentionPolicy {
            keep_tags: vec![" , ".into()],
            ..Default::default()
        };
        assert!(matches!(
            plan_forget(&cal, &p, GroupBy::default(), UTC),
            Err(Error::InvalidArgument(_))
        ));
    }

    fn grouping_set() -> Vec<SnapshotEntry> {
        vec![
            entry("g1", "h1", &["/a"], &[], datetime!(2024-01-01 01:00 UTC)),
            entry("g2", "h1", &["/a"], &["x"], datetime!(2024-01-02 01:00 UTC)),
            entry(
                "g3",
                "h1",
                &["/b", "/a"],
                &[],
                datetime!(2024-01-03 01:00 UTC),
            ),
            entry(
                "g4",
                "h1",
                &["/a", "/b"],
                &[],
                datetime!(2024-01-04 01:00 UTC),
            ),
            entry("g5", "h2", &["/a"], &[], datetime!(2024-01-05 01:00 UTC)),
            entry("g6", "h2", &["/a"], &["x"], datetime!(2024-01-06 01:00 UTC)),
        ]
    }

    /// Per group (in key order), the kept labels.
    fn kept_by_group(group_by: GroupBy) -> Vec<(String, Vec<String>)> {
        let set = grouping_set();
        let p = RetentionPolicy {
            keep_last: Some(1),
            ..Default::default()
        };
        let plan = plan_forget(&set, &p, group_by, UTC).unwrap();
        let label = |id: &SnapshotId| {
            let n = set.iter().position(|e| &e.id == id).unwrap();
            format!("g{}", n + 1)
        };
        plan.groups
            .iter()
            .map(|g| {
                (
                    g.key.to_string(),
                    g.keep.iter().map(|k| label(&k.id)).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn grouping_by_host_and_paths() {
        // Default: host and the set of paths (order ignored: g3 and g4 are
        // one group). keep-last 1 keeps each group's newest.
        let s = |a: &str, b: &[&str]| (a.to_string(), labels(b));
        assert_eq!(
            kept_by_group(GroupBy::default()),
            vec![
                s("host h1, paths [/a]", &["g2"]),
                s("host h1, paths [/a, /b]", &["g4"]),
                s("host h2, paths [/a]", &["g6"]),
            ]
        );
        let host_only: GroupBy = "host".parse().unwrap();
        assert_eq!(
            kept_by_group(host_only),
            vec![s("host h1", &["g4"]), s("host h2", &["g6"])]
        );
        let tags_only: GroupBy = "tags".parse().unwrap();
        assert_eq!(
            kept_by_group(tags_only),
            vec![s("tags []", &["g5"]), s("tags [x]", &["g6"])]
        );
        assert_eq!(
            kept_by_group(GroupBy::NONE),
            vec![s("all snapshots", &["g6"])]
        );
        assert_eq!("".parse::<GroupBy>().unwrap(), GroupBy::NONE);
        assert_eq!("host,paths".parse::<GroupBy>().unwrap(), GroupBy::default());
        assert!("hosts".parse::<GroupBy>().is_err());
    }

    #[test]
    fn plan_serializes_and_prints() {
        let cal = calendar();
        let p = RetentionPolicy {
            keep_last: Some(1),
            ..Default::default()
        };
        let plan = plan_forget(&cal[..2], &p, GroupBy::default(), UtcOffset(offset!(-5))).unwrap();
        let v = serde_json::to_value(&plan).unwrap();
        assert_eq!(v["utc_offset"], "-05:00");
        let g = &v["groups"][0];
        assert_eq!(g["key"]["host"], "h");
        assert_eq!(g["key"]["paths"][0], "/data");
        assert!(g["key"].get("tags").is_none());
        assert_eq!(g["keep"][0]["id"], cal[1].id.to_hex());
        assert_eq!(g["keep"][0]["time"], "2023-01-01T22:30:00.000000000Z");
        assert_eq!(g["keep"][0]["reasons"][0], "last snapshot");
        assert_eq!(g["remove"][0]["id"], cal[0].id.to_hex());
        let text = plan.to_string();
        // Times print at the plan's offset: a02 is 17:30 at UTC-5.
        assert!(
            text.contains(&format!(
                "{}  2023-01-01 17:30:00  last snapshot",
                cal[1].id.short()
            )),
            "{text}"
        );
        assert!(text.contains("remove 1 snapshot:"), "{text}");
        assert_eq!(p.to_string(), "keep 1 latest snapshots");
    }

    fn weak_repo() -> Repository {
        let opts = InitOptions {
            kdf: KdfParams::INSECURE_TEST,
            ..Default::default()
        };
        Repository::init(MemoryBackend::new(), b"pw", opts).unwrap()
    }

    #[test]
    fn forget_deletes_exactly_the_removed_snapshots() {
        let repo = weak_repo();
        let mut ids = Vec::new();
        for (i, host) in ["h1", "h1", "h1", "h2"].iter().enumerate() {
            let t = datetime!(2024-06-01 12:00 UTC) + time::Duration::days(i as i64);
            ids.push(repo.save_snapshot(&snap(host, &["/d"], &[], t)).unwrap());
        }
        let p = RetentionPolicy {
            keep_last: Some(1),
            ..Default::default()
        };
        // Only h1 is considered: h2's snapshot is neither kept nor removed.
        let filter = SnapshotFilter {
            host: Some("h1".into()),
            ..Default::default()
        };
        let plan = repo
            .forget_plan(&p, GroupBy::default(), UTC, &filter)
            .unwrap();
        let removed: Vec<_> = plan.removed().map(|r| r.id).collect();
        assert_eq!(removed, vec![ids[1], ids[0]]);
        assert_eq!(plan.kept().map(|k| k.id).collect::<Vec<_>>(), vec![ids[2]]);
        // Planning alone deletes nothing.
        assert_eq!(repo.snapshots().unwrap().len(), 4);
        let sum = repo.forget(&plan).unwrap();
        assert_eq!(sum.removed, vec![ids[1], ids[0]]);
        assert!(sum.already_gone.is_empty());
        let left: Vec<_> = repo
            .snapshots()
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(left, vec![ids[2], ids[3]]);
        // Running the same plan again: nothing left to delete, no error.
        let again = repo.forget(&plan).unwrap();
        assert!(again.removed.is_empty());
        assert_eq!(again.already_gone, vec![ids[1], ids[0]]);
    }

    #[test]
    fn forget_refuses_a_contradictory_plan() {
        let repo = weak_repo();
        let id = repo
            .save_snapshot(&snap("h", &["/d"], &[], datetime!(2024-06-01 12:00 UTC)))
            .unwrap();
        let plan = ForgetPlan {
            groups: vec![ForgetGroup {
                key: GroupKey {
                    host: None,
                    paths: None,
                    tags: None,
                },
                keep: vec![Kept {
                    id,
                    time_ns: 0,
                    reasons: vec!["x".into()],
                }],
                remove: vec![Removed { id, time_ns: 0 }],
            }],
            utc_offset: UTC,
        };
        assert!(matches!(repo.forget(&plan), Err(Error::InvalidArgument(_))));
        assert_eq!(repo.snapshots().unwrap().len(), 1);
    }
}
