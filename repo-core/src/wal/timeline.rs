//! Which archived WAL the base backups need (SPEC §28): continuity per
//! timeline, the path from the newest base backup to the newest timeline,
//! and what retention may release. Pure functions of a listing, the base
//! backups' metadata and timeline history files.

use std::collections::{BTreeMap, BTreeSet};

use super::{WalFileKind, WalFileName, WalObject};
use crate::snapshot::SnapshotEntry;

/// Tag of base backup snapshots (the contract with `pg basebackup`).
pub const BASE_BACKUP_TAG: &str = "postgres-base";
/// Segment size assumed when a base backup does not record one.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

/// A base backup, from its snapshot's metadata (`pg.*`, SPEC §26, §28).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BaseBackupRef {
    /// The snapshot.
    pub snapshot: String,
    /// Its time, ns since the epoch.
    pub time_ns: i64,
    /// `pg.system_identifier`.
    pub system_identifier: u64,
    /// `pg.timeline`.
    pub timeline: u32,
    /// `pg.start_wal`: the first segment recovery from it reads.
    #[serde(serialize_with = "as_str")]
    pub start_wal: WalFileName,
    /// `pg.stop_wal`: the last segment it needs to be consistent.
    #[serde(serialize_with = "as_opt_str")]
    pub stop_wal: Option<WalFileName>,
    /// `pg.wal_segment_size` (16 MiB when absent).
    pub segment_size: u64,
}

fn as_str<S: serde::Serializer>(w: &WalFileName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(w.as_str())
}
fn as_opt_str<S: serde::Serializer>(w: &Option<WalFileName>, s: S) -> Result<S::Ok, S::Error> {
    match w {
        Some(w) => s.serialize_str(w.as_str()),
        None => s.serialize_none(),
    }
}

impl BaseBackupRef {
    /// The base backup a snapshot records: `None` when it is not tagged
    /// `postgres-base`, an error naming the field when its metadata is
    /// missing or unreadable.
    pub fn from_entry(e: &SnapshotEntry) -> Option<Result<Self, String>> {
        let s = &e.snapshot;
        if !s.tags.iter().any(|t| t == BASE_BACKUP_TAG) {
            return None;
        }
        let get = |k: &str| {
            s.metadata
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let snapshot = e.id.to_hex();
        let need = |k: &str| get(k).ok_or_else(|| format!("base backup {snapshot} has no {k}"));
        let parse = || -> Result<Self, String> {
            let bad = |k: &str| format!("base backup {snapshot}: {k} is not valid");
            let start = WalFileName::parse(need("pg.start_wal")?)
                .ok()
                .filter(|w| w.kind() == WalFileKind::Segment)
                .ok_or_else(|| bad("pg.start_wal"))?;
            let stop = match get("pg.stop_wal") {
                Some(v) => Some(
                    WalFileName::parse(v)
                        .ok()
                        .filter(|w| w.kind() == WalFileKind::Segment)
                        .ok_or_else(|| bad("pg.stop_wal"))?,
                ),
                None => None,
            };
            let segment_size = match get("pg.wal_segment_size") {
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| n.is_power_of_two() && (1 << 20..=1 << 30).contains(n))
                    .ok_or_else(|| bad("pg.wal_segment_size"))?,
                None => DEFAULT_SEGMENT_SIZE,
            };
            Ok(Self {
                snapshot: snapshot.clone(),
                time_ns: s.time_ns,
                system_identifier: need("pg.system_identifier")?
                    .parse()
                    .map_err(|_| bad("pg.system_identifier"))?,
                timeline: need("pg.timeline")?
                    .parse()
                    .map_err(|_| bad("pg.timeline"))?,
                start_wal: start,
                stop_wal: stop,
                segment_size,
            })
        };
        Some(parse())
    }

    /// Every base backup among `snapshots`; the first unreadable one is an
    /// error (retention then releases nothing).
    pub fn all(snapshots: &[SnapshotEntry]) -> Result<Vec<Self>, String> {
        snapshots.iter().filter_map(Self::from_entry).collect()
    }
}

/// A timeline history file (`TTTTTTTT.history`): the ancestors of a
/// timeline, each with the WAL position where it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistory {
    /// The timeline this file describes.
    pub timeline: u32,
    /// `(ancestor timeline, LSN where it switched to the next)`, oldest first.
    pub switches: Vec<(u32, u64)>,
}

impl TimelineHistory {
    /// Parses PostgreSQL's format: `parentTLI <tab> X/Y <tab> reason` per
    /// line, `#` comments and blank lines skipped.
    pub fn parse(timeline: u32, text: &str) -> Result<Self, String> {
        let mut switches = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(tli), Some(lsn)) = (fields.next(), fields.next()) else {
                return Err(format!("history of timeline {timeline}: bad line {line:?}"));
            };
            let tli: u32 = tli
                .parse()
                .map_err(|_| format!("history of timeline {timeline}: bad timeline {tli:?}"))?;
            let lsn = parse_lsn(lsn)
                .ok_or_else(|| format!("history of timeline {timeline}: bad LSN {lsn:?}"))?;
            switches.push((tli, lsn));
        }
        Ok(Self { timeline, switches })
    }
}

/// `X/Y` as PostgreSQL prints an LSN.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// Missing segments: `from..=to` on one timeline.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WalGap {
    /// The timeline.
    pub timeline: u32,
    /// First missing segment.
    pub from: String,
    /// Last missing segment.
    pub to: String,
    /// How many.
    pub segments: u64,
    /// Recovery from the newest base backup needs them.
    pub required: bool,
}

/// One timeline's archived segments.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TimelineReport {
    /// The timeline.
    pub timeline: u32,
    /// First and last archived segment.
    pub first: String,
    /// Last archived segment.
    pub last: String,
    /// Segments archived.
    pub segments: u64,
    /// `.partial` segments archived.
    pub partial: u64,
    /// Its history file is archived (timeline 1 has none).
    pub history: bool,
    /// Missing runs between `first` and `last`.
    pub gaps: Vec<WalGap>,
}

/// One cluster's archived WAL, judged against its newest base backup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterReport {
    /// The cluster part of object names.
    pub cluster: String,
    /// Its system identifier, when a base backup names it.
    pub system_identifier: Option<u64>,
    /// Segment size used to count segments.
    pub segment_size: u64,
    /// Files and bytes stored.
    pub files: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Per timeline, oldest first.
    pub timelines: Vec<TimelineReport>,
    /// The newest base backup, which recovery would start from.
    pub base_backup: Option<BaseBackupRef>,
    /// Timelines recovery follows from it to the newest one.
    pub path: Vec<u32>,
    /// What makes recovery from the newest base backup impossible: gaps
    /// it needs, a missing history file. Empty is good.
    pub errors: Vec<String>,
}

/// Segment numbers of `objects` on each timeline (segments only).
fn segments_by_timeline(objects: &[&WalObject], seg_size: u64) -> BTreeMap<u32, Vec<u64>> {
    let mut by: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for o in objects {
        if o.file.kind() == WalFileKind::Segment {
            by.entry(o.file.timeline())
                .or_default()
                .push(o.file.segment_number(seg_size));
        }
    }
    for v in by.values_mut() {
        v.sort_unstable();
        v.dedup();
    }
    by
}

/// Missing runs in sorted `segs` within `lo..=hi`.
fn missing(segs: &[u64], lo: u64, hi: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut next = lo;
    let start = segs.partition_point(|&s| s < lo);
    for &s in &segs[start..] {
        if s > hi {
            break;
        }
        if s > next {
            out.push((next, s - 1));
        }
        next = s + 1;
    }
    if next <= hi {
        out.push((next, hi));
    }
    out
}

/// Judges one cluster's `objects` against its base backups. `history`
/// gives the parsed history file of a timeline when it is archived
/// (`None` when it is not, `Some(Err)` when it does not parse).
pub fn verify(
    cluster: &str,
    objects: &[&WalObject],
    bases: &[&BaseBackupRef],
    history: &dyn Fn(u32) -> Option<Result<TimelineHistory, String>>,
) -> ClusterReport {
    let newest = bases
        .iter()
        .max_by_key(|b| (b.time_ns, &b.snapshot))
        .copied();
    let seg_size = newest.map_or(DEFAULT_SEGMENT_SIZE, |b| b.segment_size);
    let name = |tli: u32, segno: u64| {
        WalFileName::segment(tli, WalFileName::position_of(segno, seg_size)).to_string()
    };
    let by_tli = segments_by_timeline(objects, seg_size);
    let histories: BTreeSet<u32> = objects
        .iter()
        .filter(|o| o.file.kind() == WalFileKind::History)
        .map(|o| o.file.timeline())
        .collect();
    let mut errors = Vec::new();
    let mut path = Vec::new();
    // Required range per timeline on the path from the newest base backup.
    let mut required: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    if let Some(b) = newest {
        let start = b.start_wal.segment_number(seg_size);
        let stop = b
            .stop_wal
            .as_ref()
            .map_or(start, |w| w.segment_number(seg_size));
        let newest_tli = by_tli
            .keys()
            .chain(histories.iter())
            .copied()
            .max()
            .unwrap_or(b.timeline)
            .max(b.timeline);
        // (timeline, first segment it serves) along the path.
        let mut legs: Vec<(u32, u64)> = vec![(b.timeline, start)];
        if newest_tli != b.timeline {
            match history(newest_tli) {
                None => errors.push(format!(
                    "the history file of timeline {newest_tli} ({newest_tli:08X}.history) is not archived: recovery cannot follow it"
                )),
                Some(Err(e)) => errors.push(e),
                Some(Ok(h)) => match h.switches.iter().position(|&(t, _)| t == b.timeline) {
                    None => errors.push(format!(
                        "timeline {newest_tli} does not descend from timeline {} of base backup {}",
                        b.timeline,
                        &b.snapshot[..8]
                    )),
                    Some(k) => {
                        for (i, &(_, lsn)) in h.switches[k..].iter().enumerate() {
                            let next = h.switches.get(k + i + 1).map_or(newest_tli, |s| s.0);
                            legs.push((next, (lsn / seg_size).max(start)));
                        }
                    }
                },
            }
        }
        for (i, &(tli, from)) in legs.iter().enumerate() {
            let to = match legs.get(i + 1) {
                Some(&(_, next_from)) => next_from.checked_sub(1),
                None => by_tli
                    .get(&tli)
                    .and_then(|v| v.last().copied())
                    .map(|last| last.max(stop))
                    .or(Some(stop)),
            };
            path.push(tli);
            if let Some(to) = to.filter(|&to| to >= from) {
                required.insert(tli, (from, to));
            }
        }
    }
    let mut timelines = Vec::new();
    let tlis: BTreeSet<u32> = by_tli.keys().chain(required.keys()).copied().collect();
    for tli in tlis {
        let segs = by_tli.get(&tli).map(Vec::as_slice).unwrap_or(&[]);
        let mut gaps: Vec<WalGap> = match (segs.first(), segs.last()) {
            (Some(&f), Some(&l)) => missing(segs, f, l)
                .into_iter()
                .map(|(a, z)| WalGap {
                    timeline: tli,
                    from: name(tli, a),
                    to: name(tli, z),
                    segments: z - a + 1,
                    required: false,
                })
                .collect(),
            _ => Vec::new(),
        };
        if let Some(&(lo, hi)) = required.get(&tli) {
            for (a, z) in missing(segs, lo, hi) {
                let gap = WalGap {
                    timeline: tli,
                    from: name(tli, a),
                    to: name(tli, z),
                    segments: z - a + 1,
                    required: true,
                };
                errors.push(if a == z {
                    format!("timeline {tli}: segment {} is missing", gap.from)
                } else {
                    format!(
                        "timeline {tli}: segments {} to {} ({}) are missing",
                        gap.from, gap.to, gap.segments
                    )
                });
                // A required run replaces the informational one it overlaps.
                gaps.retain(|g| !(g.from <= gap.to && gap.from <= g.to));
                gaps.push(gap);
            }
            gaps.sort_by(|a, b| a.from.cmp(&b.from));
        }
        timelines.push(TimelineReport {
            timeline: tli,
            first: segs.first().map(|&s| name(tli, s)).unwrap_or_default(),
            last: segs.last().map(|&s| name(tli, s)).unwrap_or_default(),
            segments: segs.len() as u64,
            partial: objects
                .iter()
                .filter(|o| o.file.kind() == WalFileKind::Partial && o.file.timeline() == tli)
                .count() as u64,
            history: histories.contains(&tli),
            gaps,
        });
    }
    ClusterReport {
        cluster: cluster.to_string(),
        system_identifier: newest.map(|b| b.system_identifier),
        segment_size: seg_size,
        files: objects.len() as u64,
        bytes: objects.iter().map(|o| o.size).sum(),
        timelines,
        base_backup: newest.cloned(),
        path,
        errors,
    }
}

/// What retention releases: files older than every kept base backup of
/// their cluster.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WalRelease {
    /// The objects to delete.
    #[serde(skip)]
    pub objects: Vec<WalObject>,
    /// How many.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Clusters with WAL but no base backup: nothing of theirs is released.
    pub clusters_without_base_backup: usize,
    /// Why nothing is released at all (a base backup's metadata is unreadable).
    pub skipped: Option<String>,
}

/// The files no base backup needs: per cluster, segments, `.partial`
/// segments and backup labels positioned before the earliest start
/// segment of that cluster's base backups (recovery from a base backup
/// never reads WAL before its start, on any timeline). History files are
/// kept, and so is everything of a cluster without a base backup.
/// `cluster_of` maps a system identifier to its cluster name.
pub fn plan_release(
    objects: &[WalObject],
    bases: &[BaseBackupRef],
    cluster_of: &dyn Fn(u64) -> String,
) -> WalRelease {
    let mut cutoff: BTreeMap<String, u64> = BTreeMap::new();
    for b in bases {
        let c = cutoff
            .entry(cluster_of(b.system_identifier))
            .or_insert(u64::MAX);
        *c = (*c).min(b.start_wal.position());
    }
    let mut out = WalRelease::default();
    let mut orphans = BTreeSet::new();
    for o in objects {
        let Some(&cut) = cutoff.get(&o.cluster) else {
            orphans.insert(&o.cluster);
            continue;
        };
        if o.file.kind() != WalFileKind::History && o.file.position() < cut {
            out.bytes += o.size;
            out.objects.push(o.clone());
        }
    }
    out.files = out.objects.len();
    out.clusters_without_base_backup = orphans.len();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_runs() {
        assert_eq!(missing(&[1, 2, 5, 9], 1, 9), vec![(3, 4), (6, 8)]);
        assert_eq!(missing(&[1, 2], 0, 4), vec![(0, 0), (3, 4)]);
        assert_eq!(missing(&[], 3, 3), vec![(3, 3)]);
        assert_eq!(missing(&[3], 3, 3), vec![]);
    }

    #[test]
    fn history_and_lsn() {
        let h = TimelineHistory::parse(
            3,
            "1\t0/3000000\tno recovery target specified\n\n2\t1/A0000060\tat restore point\n",
        )
        .unwrap();
        assert_eq!(h.switches, vec![(1, 0x300_0000), (2, 0x1_a000_0060)]);
        assert!(TimelineHistory::parse(2, "x\t0/1\n").is_err());
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_b374_d848));
    }
}
