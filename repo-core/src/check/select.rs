//! Which packs a data check reads: subsets, age limits and the ledger's
//! rotation cycles (docs/check.md §3).

use std::collections::HashMap;

use super::{CheckOptions, ReadData};
use crate::id::PackId;

/// A rotation cycle of partial data checks: when it began, and how many
/// runs it has had (docs/check.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cycle {
    pub(super) start_ns: i64,
    pub(super) runs: u64,
}

/// The packs a data check reads, and the rotation cycle to store after it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Selection {
    pub(super) packs: Vec<(PackId, u64)>,
    pub(super) cycle: Option<Cycle>,
}

/// Chooses packs to read (docs/check.md §3). `candidates` are the indexed packs
/// that exist and passed the structure check, with their sizes, in random
/// order; `ledger` maps packs to their last verification time.
pub(super) fn select_packs(
    mut candidates: Vec<(PackId, u64)>,
    ledger: &HashMap<PackId, i64>,
    opts: &CheckOptions,
    now: i64,
    cycle: Option<Cycle>,
) -> Selection {
    let last = |p: &PackId| ledger.get(p).copied();
    // Never verified first, then oldest verification first; the caller's
    // random order breaks ties, so equal packs are drawn at random.
    candidates.sort_by_key(|(p, _)| last(p).unwrap_or(i64::MIN));
    let total = candidates.len();
    let stale_before = opts
        .max_age
        .map(|a| now.saturating_sub(a.as_nanos().min(i64::MAX as u128) as i64));
    let is_stale = |p: &PackId| match (stale_before, last(p)) {
        (None, _) | (_, None) => true,
        (Some(before), Some(t)) => t < before,
    };
    let rotating = matches!(opts.read_data, ReadData::Fraction(_) | ReadData::Bytes(_))
        && stale_before.is_none();
    let mut next_cycle = None;
    let pool: Vec<(PackId, u64)> = match opts.read_data {
        ReadData::None => Vec::new(),
        ReadData::Subset(n, m) => candidates
            .into_iter()
            .filter(|(p, _)| u32::from(p.as_bytes()[0]) % m == n - 1 && is_stale(p))
            .collect(),
        _ if !rotating => candidates
            .into_iter()
            .filter(|(p, _)| is_stale(p))
            .collect(),
        _ => {
            // Packs not verified since the cycle began are pending; when
            // none are, a new cycle begins now with every pack pending.
            let pending: Vec<_> = match cycle {
                Some(c) => candidates
                    .iter()
                    .filter(|(p, _)| last(p).is_none_or(|t| t < c.start_ns))
                    .copied()
                    .collect(),
                None => Vec::new(),
            };
            let (c, pool) = match cycle {
                Some(c) if !pending.is_empty() => (c, pending),
                _ => (
                    Cycle {
                        start_ns: now,
                        runs: 0,
                    },
                    candidates,
                ),
            };
            next_cycle = Some(c);
            pool
        }
    };
    let packs = match opts.read_data {
        ReadData::Fraction(f) => {
            let per_run = ((f * total as f64).ceil() as usize).max(1);
            let want = match next_cycle {
                // Spread what is pending over the runs the cycle has left
                // (1/f runs in all), so 1/f runs read every pack once.
                Some(c) => {
                    let runs = ((1.0 / f) - 1e-9).ceil().max(1.0) as u64;
                    let left = runs.saturating_sub(c.runs).max(1) as usize;
                    pool.len().div_ceil(left).clamp(1, per_run)
                }
                None => per_run,
            };
            pool.into_iter().take(want).collect()
        }
        ReadData::Bytes(budget) => {
            let mut sum = 0u64;
            let mut out = Vec::new();
            for (p, size) in pool {
                if !out.is_empty() && sum.saturating_add(size) > budget {
                    break;
                }
                sum = sum.saturating_add(size);
                out.push((p, size));
            }
            out
        }
        _ => pool,
    };
    Selection {
        packs,
        cycle: next_cycle.map(|c| Cycle {
            runs: c.runs + 1,
            ..c
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;

    fn pid(b: u8) -> PackId {
        let mut x = [0u8; 32];
        x[0] = b;
        x[1] = 0x5a;
        PackId::from_bytes(x)
    }

    fn opts(read_data: ReadData) -> CheckOptions {
        CheckOptions {
            read_data,
            ..Default::default()
        }
    }

    #[test]
    fn subset_partitions_by_first_byte() {
        let packs: Vec<(PackId, u64)> = (0..=255u8).map(|b| (pid(b), 10)).collect();
        let mut all = HashSet::new();
        for n in 1..=3 {
            let s = select_packs(
                packs.clone(),
                &HashMap::new(),
                &opts(ReadData::Subset(n, 3)),
                0,
                None,
            );
            assert!(s.cycle.is_none());
            for (p, _) in &s.packs {
                assert_eq!(u32::from(p.as_bytes()[0]) % 3, n - 1);
                assert!(all.insert(*p), "pack in two subsets");
            }
        }
        assert_eq!(all.len(), 256);
    }

    /// Runs `runs` selections of `f`, verifying what each selects one
    /// nanosecond later; returns every pack verified, in order.
    fn rotate(count: u8, f: f64, runs: i64) -> Vec<PackId> {
        let packs: Vec<(PackId, u64)> = (0..count).map(|b| (pid(b), 10)).collect();
        let mut ledger: HashMap<PackId, i64> = HashMap::new();
        let mut cycle = None;
        let mut seen = Vec::new();
        for run in 0..runs {
            let now = 1000 + run * 10;
            let s = select_packs(
                packs.clone(),
                &ledger,
                &opts(ReadData::Fraction(f)),
                now,
                cycle,
            );
            cycle = s.cycle.or(cycle);
            assert!(!s.packs.is_empty(), "run {run} selected nothing");
            for (p, _) in s.packs {
                ledger.insert(p, now + 1);
                seen.push(p);
            }
        }
        seen
    }

    #[test]
    fn fraction_rotates_through_every_pack_once_per_cycle() {
        for count in [4u8, 5, 7, 8, 10, 13, 17, 100] {
            let seen = rotate(count, 0.25, 4);
            let distinct: HashSet<_> = seen.iter().collect();
            assert_eq!(
                distinct.len(),
                usize::from(count),
                "{count} packs: not all covered"
            );
            assert_eq!(
                seen.len(),
                usize::from(count),
                "{count} packs: a pack verified twice"
            );
            // The fifth run starts the next cycle with the oldest packs.
            let again = rotate(count, 0.25, 5);
            assert_eq!(
                again[count as usize], again[0],
                "{count}: next cycle not oldest first"
            );
        }
        // Ten runs of 10% over 95 packs: each pack exactly once.
        let seen = rotate(95, 0.10, 10);
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 95);
        assert_eq!(seen.len(), 95);
        // Fewer packs than runs: each run still verifies one.
        let seen = rotate(3, 0.25, 4);
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 3);
    }

    #[test]
    fn max_age_and_bytes_pick_stale_packs_oldest_first() {
        let packs: Vec<(PackId, u64)> = (0..6u8).map(|b| (pid(b), 100)).collect();
        let day = 86_400_000_000_000i64;
        let now = 100 * day;
        let mut ledger = HashMap::new();
        ledger.insert(pid(0), now - 40 * day);
        ledger.insert(pid(1), now - 10 * day);
        ledger.insert(pid(2), now - 35 * day);
        // 3, 4, 5 never verified.
        let o = CheckOptions {
            read_data: ReadData::All,
            max_age: Some(Duration::from_secs(30 * 86_400)),
            ..Default::default()
        };
        let s = select_packs(packs.clone(), &ledger, &o, now, None);
        let got: Vec<PackId> = s.packs.iter().map(|p| p.0).collect();
        assert_eq!(got.len(), 5);
        assert!(!got.contains(&pid(1)));
        assert_eq!(
            &got[3..],
            &[pid(0), pid(2)],
            "oldest verification first after never-verified"
        );
        let c = Some(Cycle {
            start_ns: now - day,
            runs: 1,
        });
        let s = select_packs(packs, &ledger, &opts(ReadData::Bytes(250)), now, c);
        assert_eq!(
            s.cycle,
            Some(Cycle {
                start_ns: now - day,
                runs: 2
            })
        );
        assert_eq!(s.packs.len(), 2);
        assert!(s.packs.iter().all(|(p, _)| !ledger.contains_key(p)));
    }
}
