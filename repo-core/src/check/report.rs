//! Integrity reports for auditors (docs/check.md §5): snapshot metadata, a BLAKE3
//! Merkle root over the tree, and the ledger's last check and drill.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::cache::{CheckRecord, DrillRecord};
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, SnapshotId, TreeId};
use crate::repository::{Repository, now_ns};
use crate::size::format_bytes as human_bytes;
use crate::snapshot::{SnapshotEntry, SnapshotSummary};
use crate::tree::{NodeKind, Tree, fold_trees};

/// Domain prefix of every Merkle tree hash (docs/check.md §5).
pub const MERKLE_DOMAIN: &[u8] = b"cairn merkle v1";

/// A BLAKE3 Merkle root over a snapshot's tree (docs/check.md §5).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MerkleRoot([u8; 32]);

impl MerkleRoot {
    /// The raw hash.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for MerkleRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for MerkleRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MerkleRoot({})", &self.to_hex()[..8])
    }
}

impl serde::Serialize for MerkleRoot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

/// The Merkle hash of one tree whose directories' roots are `child_root`
/// (docs/check.md §5). Pure, so auditors' tools and tests can recompute it.
pub fn merkle_tree_hash(
    tree: &Tree,
    child_root: &mut dyn FnMut(&TreeId) -> Result<MerkleRoot>,
) -> Result<MerkleRoot> {
    let mut h = blake3::Hasher::new();
    h.update(MERKLE_DOMAIN);
    h.update(&(tree.nodes.len() as u64).to_le_bytes());
    for n in &tree.nodes {
        h.update(&(n.name.len() as u32).to_le_bytes());
        h.update(&n.name);
        h.update(&[n.kind as u8]);
        h.update(&n.size.to_le_bytes());
        h.update(&(n.content.len() as u32).to_le_bytes());
        for c in &n.content {
            h.update(c.as_bytes());
        }
        h.update(&(n.symlink_target.len() as u32).to_le_bytes());
        h.update(&n.symlink_target);
        if n.kind == NodeKind::Dir
            && let Some(sub) = &n.subtree
        {
            h.update(child_root(sub)?.as_bytes());
        }
    }
    Ok(MerkleRoot(*h.finalize().as_bytes()))
}

/// Totals of one tree and everything below it.
#[derive(Debug, Clone, Copy)]
struct TreeTotals {
    root: MerkleRoot,
    files: u64,
    dirs: u64,
    others: u64,
    bytes: u64,
}

/// The last check as an integrity report shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckSummary {
    /// When it ran, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// Whether it read pack data.
    pub read_data: bool,
    /// Packs named by the index then.
    pub packs: u64,
    /// Packs whose data it verified.
    pub packs_verified: u64,
    /// Errors found.
    pub errors: u64,
    /// Warnings found.
    pub warnings: u64,
    /// True when it found no errors.
    pub clean: bool,
}

impl From<CheckRecord> for CheckSummary {
    fn from(r: CheckRecord) -> Self {
        Self {
            time_ns: r.time_ns,
            read_data: r.read_data,
            packs: r.packs,
            packs_verified: r.packs_verified,
            errors: r.errors,
            warnings: r.warnings,
            clean: r.errors == 0,
        }
    }
}

/// The last drill as an integrity report shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrillSummary {
    /// The snapshot drilled.
    pub snapshot: SnapshotId,
    /// When it ran, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// Files restored and compared.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Wall time.
    pub duration_ns: u64,
    /// True when every file came back identical.
    pub ok: bool,
}

impl From<DrillRecord> for DrillSummary {
    fn from(r: DrillRecord) -> Self {
        Self {
            snapshot: r.snapshot,
            time_ns: r.time_ns,
            files: r.files,
            bytes: r.bytes,
            duration_ns: r.duration_ns,
            ok: r.ok,
        }
    }
}

/// An integrity report on one snapshot, for auditors (docs/check.md §5).
#[derive(Debug, Clone, serde::Serialize)]
pub struct IntegrityReport {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// Its time, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// Host it was taken on.
    pub host: String,
    /// User who took it.
    pub username: String,
    /// Paths or stream names (lossy UTF-8).
    pub paths: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Its parent snapshot, if any.
    pub parent: Option<SnapshotId>,
    /// Root tree id (keyed BLAKE3 of the root tree's encoding).
    pub tree: TreeId,
    /// BLAKE3 Merkle root over names, kinds, sizes, chunk ids and link
    /// targets of the whole tree (docs/check.md §5).
    pub merkle_root: MerkleRoot,
    /// Regular files (and streams).
    pub files: u64,
    /// Directories below the root.
    pub dirs: u64,
    /// Other entries (symlinks, devices, fifos, sockets).
    pub others: u64,
    /// Bytes of file content.
    pub total_size: u64,
    /// Distinct blobs the snapshot references (trees and data).
    pub blobs: u64,
    /// Distinct packs holding them (per the local index).
    pub packs: u64,
    /// Of those, packs the ledger records as verified.
    pub packs_verified: u64,
    /// Oldest verification among them, if all are verified.
    pub oldest_verification_ns: Option<i64>,
    /// Counters the backup recorded.
    pub summary: SnapshotSummary,
    /// Program that wrote the snapshot.
    pub snapshot_program: String,
    /// Program that wrote this report.
    pub report_program: String,
    /// When this report was made, nanoseconds since the Unix epoch.
    pub generated_ns: i64,
    /// Free-form metadata the backup recorded.
    pub metadata: Vec<(String, String)>,
    /// The latest check of this repository from this machine's ledger.
    pub last_check: Option<CheckSummary>,
    /// The latest check that read pack data.
    pub last_data_check: Option<CheckSummary>,
    /// The latest restore drill of this snapshot.
    pub last_drill: Option<DrillSummary>,
    /// Where this report read the repository (SPEC §32).
    pub location: String,
    /// The newest check, drill and exporter verify results of every
    /// location, from the repository's verification records (SPEC §32).
    pub verification: Vec<crate::verification::LocationSummary>,
}

/// `2025-01-02 03:04:05 UTC`.
fn utc(ns: i64) -> String {
    let fmt =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| ns.to_string())
}

impl IntegrityReport {
    /// The report as a Markdown document.
    pub fn to_markdown(&self) -> String {
        use std::fmt::Write;
        let mut m = String::new();
        let yes_no = |b: bool| if b { "yes" } else { "**no**" };
        let _ = writeln!(
            m,
            "# Integrity report: snapshot {}\n",
            self.snapshot.short()
        );
        let _ = writeln!(m, "| Field | Value |\n|---|---|");
        let mut row = |k: &str, v: String| {
            let v = v.replace('|', "\\|");
            let _ = writeln!(m, "| {k} | {v} |");
        };
        row("Snapshot id", format!("`{}`", self.snapshot));
        row("Time", utc(self.time_ns));
        row("Host", self.host.clone());
        row("User", self.username.clone());
        row("Paths", self.paths.join(", "));
        row("Tags", self.tags.join(", "));
        row(
            "Parent",
            self.parent.map_or("none".into(), |p| format!("`{p}`")),
        );
        row("Root tree id", format!("`{}`", self.tree));
        row("Merkle root (BLAKE3)", format!("`{}`", self.merkle_root));
        row("Files", self.files.to_string());
        row("Directories", self.dirs.to_string());
        row("Other entries", self.others.to_string());
        row(
            "Total size",
            format!(
                "{} ({} bytes)",
                human_bytes(self.total_size),
                self.total_size
            ),
        );
        row("Written by", self.snapshot_program.clone());
        for (k, v) in &self.metadata {
            row(&format!("Metadata `{k}`"), v.clone());
        }
        let s = &self.summary;
        let _ = writeln!(m, "\n## Backup counters\n");
        let _ = writeln!(
            m,
            "| New files | Changed | Unmodified | Bytes read | Bytes added | Stored | Errors | Duration |\n|---|---|---|---|---|---|---|---|"
        );
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {} | {:.1}s |",
            s.files_new,
            s.files_changed,
            s.files_unmodified,
            human_bytes(s.bytes_read),
            human_bytes(s.bytes_added),
            human_bytes(s.bytes_added_packed),
            s.errors,
            s.duration_ns as f64 / 1e9
        );
        let _ = writeln!(m, "\n## Verification\n");
        let _ = writeln!(
            m,
            "- Storage: {} blobs in {} packs; {} of those packs verified by a data check{}.",
            self.blobs,
            self.packs,
            self.packs_verified,
            self.oldest_verification_ns
                .map_or(String::new(), |t| format!(
                    ", the oldest verification on {}",
                    utc(t)
                ))
        );
        match &self.last_check {
            Some(c) => {
                let _ = writeln!(
                    m,
                    "- Last check: {} ({}), {} errors, {} warnings; clean: {}.",
                    utc(c.time_ns),
                    if c.read_data {
                        format!("data of {} of {} packs read", c.packs_verified, c.packs)
                    } else {
                        "structure only".into()
                    },
                    c.errors,
                    c.warnings,
                    yes_no(c.clean)
                );
            }
            None => {
                let _ = writeln!(m, "- Last check: **none recorded on this machine**.");
            }
        }
        match &self.last_data_check {
            Some(c) => {
                let _ = writeln!(
                    m,
                    "- Last data check: {}, {} of {} packs verified; clean: {}.",
                    utc(c.time_ns),
                    c.packs_verified,
                    c.packs,
                    yes_no(c.clean)
                );
            }
            None => {
                let _ = writeln!(m, "- Last data check: **none recorded on this machine**.");
            }
        }
        match &self.last_drill {
            Some(d) => {
                let _ = writeln!(
                    m,
                    "- Last restore drill: {}, {} files ({}) in {:.1}s; identical: {}.",
                    utc(d.time_ns),
                    d.files,
                    human_bytes(d.bytes),
                    d.duration_ns as f64 / 1e9,
                    yes_no(d.ok)
                );
            }
            None => {
                let _ = writeln!(
                    m,
                    "- Last restore drill: **none recorded on this machine**."
                );
            }
        }
        let _ = writeln!(
            m,
            "\n## Verification history\n\nFrom the repository's records (SPEC §32); this report reads it at `{}`.\n",
            self.location
        );
        if self.verification.is_empty() {
            let _ = writeln!(m, "- **No verification recorded in the repository.**");
        }
        for loc in &self.verification {
            let _ = writeln!(m, "- Location `{}`:", loc.location);
            for r in loc.records() {
                let _ = writeln!(
                    m,
                    "  - {} on {}: {}; clean: {}.",
                    utc(r.time_ns),
                    r.host,
                    r.describe(),
                    yes_no(r.ok())
                );
            }
        }
        let _ = writeln!(
            m,
            "\nGenerated {} by {}. The Merkle root is defined in cairn's docs/check.md §5; \
             with the repository key it can be recomputed from the snapshot's trees.",
            utc(self.generated_ns),
            self.report_program
        );
        m
    }
}

impl Repository {
    /// An integrity report on `snapshot` (docs/check.md §5): its metadata, the
    /// Merkle root of its tree, file count and size, how many of its packs
    /// the ledger records as verified, and the last check and drill this
    /// machine's cache remembers.
    pub fn report(&self, snapshot: &SnapshotEntry) -> Result<IntegrityReport> {
        let mut memo: HashMap<TreeId, TreeTotals> = HashMap::new();
        let mut blobs: HashSet<BlobId> = HashSet::new();
        let root = self.tree_totals(&snapshot.snapshot.tree, &mut memo, &mut blobs)?;
        let mut packs: HashSet<PackId> = HashSet::new();
        for b in &blobs {
            if let Some(loc) = self.index().lookup(b)? {
                packs.insert(loc.pack);
            }
        }
        let cache = self.index().cache();
        // This machine's ledger counts only if it was filled here, and the
        // repository's records add what other machines verified here (SPEC §32).
        let location = self.verification_location();
        cache.claim_ledger(crate::verification::location_tag(&location))?;
        let history = self.verification_history()?;
        let mut times = cache.verification_times()?;
        for (p, t) in history.pack_times(&location) {
            let e = times.entry(p).or_insert(t);
            *e = (*e).max(t);
        }
        let verified: Vec<i64> = packs.iter().filter_map(|p| times.get(p).copied()).collect();
        let oldest = (verified.len() == packs.len())
            .then(|| verified.iter().min().copied())
            .flatten();
        let s = &snapshot.snapshot;
        Ok(IntegrityReport {
            snapshot: snapshot.id,
            time_ns: s.time_ns,
            host: s.host.clone(),
            username: s.username.clone(),
            paths: s.paths_lossy(),
            tags: s.tags.clone(),
            parent: s.parent,
            tree: s.tree,
            merkle_root: root.root,
            files: root.files,
            dirs: root.dirs,
            others: root.others,
            total_size: root.bytes,
            blobs: blobs.len() as u64,
            packs: packs.len() as u64,
            packs_verified: verified.len() as u64,
            oldest_verification_ns: oldest,
            summary: s.summary.clone(),
            snapshot_program: s.program_version.clone(),
            report_program: format!("cairn {}", env!("CARGO_PKG_VERSION")),
            generated_ns: now_ns(),
            metadata: s.metadata.clone(),
            last_check: cache.last_check(false)?.map(Into::into),
            last_data_check: cache.last_check(true)?.map(Into::into),
            last_drill: cache.last_drill(Some(&snapshot.id))?.map(Into::into),
            location,
            verification: history.summaries(),
        })
    }

    /// Merkle root and totals of `id`, memoised: a shared subtree is read
    /// once. Children are done before their parent with an explicit stack,
    /// not recursion, so no nesting depth can overflow the thread's stack.
    fn tree_totals(
        &self,
        id: &TreeId,
        memo: &mut HashMap<TreeId, TreeTotals>,
        blobs: &mut HashSet<BlobId>,
    ) -> Result<TreeTotals> {
        fold_trees(
            id,
            memo,
            |id| self.load_tree(id),
            |id, tree, memo| self.finish_totals(id, tree, memo, blobs),
        )
    }

    /// Totals of `tree` once every subtree's are in `memo`. Sums saturate:
    /// recorded sizes are claims a damaged tree may inflate past 2^64.
    fn finish_totals(
        &self,
        id: &TreeId,
        tree: &Tree,
        memo: &HashMap<TreeId, TreeTotals>,
        blobs: &mut HashSet<BlobId>,
    ) -> Result<TreeTotals> {
        blobs.insert(id.as_blob());
        let mut totals = TreeTotals {
            root: MerkleRoot([0; 32]),
            files: 0,
            dirs: 0,
            others: 0,
            bytes: 0,
        };
        for n in &tree.nodes {
            match n.kind {
                NodeKind::File => {
                    totals.files += 1;
                    totals.bytes = totals.bytes.saturating_add(n.size);
                    blobs.extend(n.content.iter().copied());
                }
                NodeKind::Dir => totals.dirs += 1,
                _ => totals.others += 1,
            }
        }
        let mut below = Vec::new();
        totals.root = merkle_tree_hash(tree, &mut |sub| {
            let t = memo
                .get(sub)
                .copied()
                .ok_or_else(|| Error::InvalidArgument(format!("subtree {sub} was not walked")))?;
            below.push(t);
            Ok(t.root)
        })?;
        for t in below {
            totals.files = totals.files.saturating_add(t.files);
            totals.dirs = totals.dirs.saturating_add(t.dirs);
            totals.others = totals.others.saturating_add(t.others);
            totals.bytes = totals.bytes.saturating_add(t.bytes);
        }
        Ok(totals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Node;

    #[test]
    fn merkle_root_covers_names_content_and_children() {
        let mut f = Node::new(b"a".to_vec(), NodeKind::File);
        f.size = 3;
        f.content = vec![BlobId::from_bytes([1; 32])];
        let mut d = Node::new(b"d".to_vec(), NodeKind::Dir);
        d.subtree = Some(TreeId::from_bytes([2; 32]));
        let t = Tree {
            nodes: vec![f.clone(), d.clone()],
        };
        let child = MerkleRoot([9; 32]);
        let r = merkle_tree_hash(&t, &mut |_| Ok(child)).unwrap();
        // Recomputed by hand from the docs/check.md §5 definition.
        let mut h = blake3::Hasher::new();
        h.update(b"cairn merkle v1");
        h.update(&2u64.to_le_bytes());
        h.update(&1u32.to_le_bytes());
        h.update(b"a");
        h.update(&[0]);
        h.update(&3u64.to_le_bytes());
        h.update(&1u32.to_le_bytes());
        h.update(&[1; 32]);
        h.update(&0u32.to_le_bytes());
        h.update(&1u32.to_le_bytes());
        h.update(b"d");
        h.update(&[1]);
        h.update(&0u64.to_le_bytes());
        h.update(&0u32.to_le_bytes());
        h.update(&0u32.to_le_bytes());
        h.update(&[9; 32]);
        assert_eq!(r.as_bytes(), h.finalize().as_bytes());
        // The vector docs/check.md §5 prints.
        assert_eq!(
            r.to_hex(),
            "590574bd13609ef321ef7c9f42ada717d2e9bcafc327a853cd7889fe552b067a"
        );
        // Metadata is not covered; content and child roots are.
        let mut t2 = t.clone();
        t2.nodes[0].mtime_ns = 12345;
        assert_eq!(merkle_tree_hash(&t2, &mut |_| Ok(child)).unwrap(), r);
        t2.nodes[0].content = vec![BlobId::from_bytes([3; 32])];
        assert_ne!(merkle_tree_hash(&t2, &mut |_| Ok(child)).unwrap(), r);
        assert_ne!(
            merkle_tree_hash(&t, &mut |_| Ok(MerkleRoot([8; 32]))).unwrap(),
            r
        );
    }
}
