//! Renderers: human text and `--json`. Everything a command prints on
//! stdout goes through here, and every write returns its error, so a closed
//! pipe (`cairn ls … | head`) ends the command instead of panicking.

use std::io::{self, Write};
use std::sync::OnceLock;

use repo_core::{Node, NodeKind, SnapshotEntry, SnapshotSummary};
use serde::Serialize;
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// How the user wants output.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// `--json`: data on stdout as JSON, no text.
    pub json: bool,
    /// `-q`: no text, no progress, no warnings.
    pub quiet: bool,
    /// `-v` count.
    pub verbose: u8,
}

impl Output {
    /// True when human text should be printed on stdout.
    pub fn text(&self) -> bool {
        !self.json && !self.quiet
    }

    /// Prints one line of human text on stdout (nothing with `--json` or `-q`).
    pub fn line(&self, s: impl AsRef<str>) -> io::Result<()> {
        if self.text() {
            let mut out = io::stdout().lock();
            out.write_all(s.as_ref().as_bytes())?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Prints a note on stderr when at least `level` `-v` were given.
    pub fn verbose(&self, level: u8, s: impl AsRef<str>) {
        if !self.quiet && self.verbose >= level {
            eprintln!("{}", s.as_ref());
        }
    }

    /// Prints a warning on stderr unless `-q`.
    pub fn warn(&self, s: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("cairn: warning: {}", s.as_ref());
        }
    }

    /// Prints `value` as pretty JSON on stdout.
    pub fn json_value(&self, value: &impl Serialize) -> io::Result<()> {
        let mut out = io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, value).map_err(io::Error::from)?;
        out.write_all(b"\n")?;
        out.flush()
    }
}

/// A name or path for human output: control characters, which could move
/// the cursor or rewrite the terminal (C0, DEL, and C1 when the name is
/// UTF-8), become `\xNN` escapes; every other byte, non-UTF-8 ones
/// included, is kept as it is. `--json` carries names exactly.
pub fn escape_controls(name: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let plain = |c: char| !c.is_control();
    if name.utf8_chunks().all(|ch| ch.valid().chars().all(plain)) {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut out = Vec::with_capacity(name.len() + 8);
    for ch in name.utf8_chunks() {
        for c in ch.valid().chars() {
            if plain(c) {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            } else {
                out.extend_from_slice(format!("\\x{:02x}", u32::from(c)).as_bytes());
            }
        }
        out.extend_from_slice(ch.invalid());
    }
    std::borrow::Cow::Owned(out)
}

/// Sizes in binary units: `12 B`, `800 KiB`, `1.2 MiB` (the library's
/// one formatter, [`repo_core::HumanBytes`]).
pub fn bytes(n: u64) -> String {
    repo_core::format_bytes(n)
}

/// A text table: columns as wide as their widest cell (counted in
/// characters), two spaces apart, left-aligned unless marked right-aligned,
/// trailing blanks trimmed. The one table layout of `snapshots`, `key list`, ….
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| h.to_string()).collect(),
            right: vec![false; header.len()],
            rows: Vec::new(),
        }
    }

    /// Right-aligns column `col` (sizes, counts).
    pub fn right(mut self, col: usize) -> Self {
        self.right[col] = true;
        self
    }

    /// Appends a row (missing cells are empty).
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// Each column's width.
    pub fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in w.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        w
    }

    /// The width of a full line (for rules).
    pub fn total_width(&self) -> usize {
        let w = self.widths();
        w.iter().sum::<usize>() + 2 * w.len().saturating_sub(1)
    }

    fn line(&self, cells: &[String], widths: &[usize]) -> String {
        let mut line = String::new();
        for (i, &w) in widths.iter().enumerate() {
            let c = cells.get(i).map_or("", String::as_str);
            let pad = w.saturating_sub(c.chars().count());
            if i > 0 {
                line.push_str("  ");
            }
            if self.right[i] {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(c);
            } else {
                line.push_str(c);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        line.trim_end().to_string()
    }

    /// The header line.
    pub fn header_line(&self) -> String {
        self.line(&self.header, &self.widths())
    }

    /// The row lines.
    pub fn row_lines(&self) -> Vec<String> {
        let w = self.widths();
        self.rows.iter().map(|r| self.line(r, &w)).collect()
    }
}

/// Wall time as `m:ss`, or `h:mm:ss` from an hour on.
pub fn duration(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// Seconds as a float, for JSON.
pub fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

const RFC3339_NANOS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");
const LOCAL: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

static LOCAL_OFFSET: OnceLock<UtcOffset> = OnceLock::new();

/// Records the local UTC offset. Call at startup: the `time` crate can only
/// read it soundly while the process has a single thread.
pub fn init_local_offset() {
    let off = UtcOffset::current_local_offset().unwrap_or(UtcOffset::UTC);
    let _ = LOCAL_OFFSET.set(off);
}

fn datetime(ns: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// RFC 3339, UTC, nanosecond precision: `2025-01-02T03:04:05.123456789Z`.
pub fn rfc3339(ns: i64) -> String {
    datetime(ns).format(RFC3339_NANOS).unwrap_or_default()
}

/// Local time to the second, for tables: `2025-01-02 04:04:05`.
pub fn local_time(ns: i64) -> String {
    let off = LOCAL_OFFSET.get().copied().unwrap_or(UtcOffset::UTC);
    datetime(ns)
        .to_offset(off)
        .format(LOCAL)
        .unwrap_or_default()
}

/// `ls -l` style permissions: `drwxr-xr-x`, `-rwsr-x---`, `lrwxrwxrwx`.
pub fn mode_string(kind: NodeKind, mode: u32) -> String {
    let t = match kind {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::CharDevice => 'c',
        NodeKind::BlockDevice => 'b',
        NodeKind::Socket => 's',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    // (read bit, write bit, exec bit, special bit, special char when exec, when not)
    let triads = [
        (0o400, 0o200, 0o100, 0o4000, 's', 'S'),
        (0o040, 0o020, 0o010, 0o2000, 's', 'S'),
        (0o004, 0o002, 0o001, 0o1000, 't', 'T'),
    ];
    for (r, w, x, special, on, off) in triads {
        s.push(if mode & r != 0 { 'r' } else { '-' });
        s.push(if mode & w != 0 { 'w' } else { '-' });
        s.push(match (mode & x != 0, mode & special != 0) {
            (true, true) => on,
            (false, true) => off,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// Name of a node kind in JSON.
pub fn kind_name(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::File => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::CharDevice => "chardev",
        NodeKind::BlockDevice => "blockdev",
        NodeKind::Socket => "socket",
    }
}

/// A snapshot as `snapshots --json` and `cat snapshot` print it.
#[derive(Debug, Serialize)]
pub struct SnapshotJson<'a> {
    /// Full id.
    pub id: String,
    /// First 8 hex digits.
    pub short_id: String,
    /// RFC 3339 UTC with nanoseconds.
    pub time: String,
    /// Host name.
    pub host: &'a str,
    /// User name.
    pub username: &'a str,
    /// Paths or stream names (lossy UTF-8).
    pub paths: Vec<String>,
    /// Tags.
    pub tags: &'a [String],
    /// Parent snapshot id.
    pub parent: Option<String>,
    /// Root tree id.
    pub tree: String,
    /// Program that wrote it.
    pub program_version: &'a str,
    /// Backup counters, with the wall time as `duration_s` (seconds, the
    /// contract's unit) instead of the library's `duration_ns`.
    #[serde(serialize_with = "summary_in_seconds")]
    pub summary: &'a SnapshotSummary,
    /// Free-form key/value pairs.
    pub metadata: std::collections::BTreeMap<&'a str, &'a str>,
    /// For a copy (`cairn copy`), the id of the snapshot it was copied
    /// from, in the repository that first held it; `null` otherwise.
    pub original: Option<String>,
}

/// `summary` as JSON, `duration_ns` replaced by `duration_s`.
fn summary_in_seconds<S: serde::Serializer>(
    summary: &&SnapshotSummary,
    ser: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::Error;
    let mut v = serde_json::to_value(summary).map_err(S::Error::custom)?;
    if let Some(m) = v.as_object_mut()
        && let Some(ns) = m.remove("duration_ns")
    {
        m.insert(
            "duration_s".into(),
            seconds(ns.as_u64().unwrap_or(0)).into(),
        );
    }
    v.serialize(ser)
}

impl<'a> SnapshotJson<'a> {
    /// Builds the JSON view of `e`.
    pub fn new(e: &'a SnapshotEntry) -> Self {
        let s = &e.snapshot;
        Self {
            id: e.id.to_hex(),
            short_id: e.id.short(),
            time: rfc3339(s.time_ns),
            host: &s.host,
            username: &s.username,
            paths: s.paths_lossy(),
            tags: &s.tags,
            parent: s.parent.map(|p| p.to_hex()),
            tree: s.tree.to_hex(),
            program_version: &s.program_version,
            summary: &s.summary,
            metadata: s
                .metadata
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            original: s.original.map(|o| o.to_hex()),
        }
    }
}

/// One `ls --json` line.
#[derive(Debug, Serialize)]
pub struct NodeJson<'a> {
    /// Full path in the snapshot (lossy UTF-8).
    pub path: String,
    /// `file`, `dir`, `symlink`, …
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// `ls -l` style permissions.
    pub permissions: String,
    /// Content size.
    pub size: u64,
    /// Modification time, RFC 3339 UTC.
    pub mtime: String,
    /// Owner id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Owner name (may be empty).
    pub user: &'a str,
    /// Group name (may be empty).
    pub group: &'a str,
    /// Symlink target (lossy UTF-8), for symlinks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

impl<'a> NodeJson<'a> {
    /// The JSON view of `node` at `path`.
    pub fn new(path: &[u8], node: &'a Node) -> Self {
        Self {
            path: String::from_utf8_lossy(path).into_owned(),
            kind: kind_name(node.kind),
            mode: node.mode,
            permissions: mode_string(node.kind, node.mode),
            size: node.size,
            mtime: rfc3339(node.mtime_ns),
            uid: node.uid,
            gid: node.gid,
            user: &node.user,
            group: &node.group,
            link_target: (node.kind == NodeKind::Symlink)
                .then(|| String::from_utf8_lossy(&node.symlink_target).into_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_other_bytes_kept() {
        assert_eq!(&*escape_controls(b"/a/caf\xe9 \xff"), b"/a/caf\xe9 \xff");
        assert_eq!(&*escape_controls("/é".as_bytes()), "/é".as_bytes());
        assert_eq!(
            &*escape_controls(b"/x\x1b[2J\ny\x7f\xff"),
            b"/x\\x1b[2J\\x0ay\\x7f\xff"
        );
        // U+009B is CSI on terminals that honour C1 controls.
        assert_eq!(&*escape_controls("a\u{9b}31m".as_bytes()), b"a\\x9b31m");
    }

    #[test]
    fn durations_and_times() {
        assert_eq!(duration(12_400_000_000), "0:12");
        assert_eq!(duration(3_725_000_000_000), "1:02:05");
        assert_eq!(
            rfc3339(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn tables_align_by_characters() {
        let mut t = Table::new(&["ID", "Host", "Size"]).right(2);
        t.row(["ab", "hé", "1.0 KiB"]);
        t.row(["abcd", "", "12 B"]);
        assert_eq!(t.header_line(), "ID    Host     Size");
        assert_eq!(
            t.row_lines(),
            ["ab    hé    1.0 KiB", "abcd           12 B"]
        );
        assert_eq!(t.total_width(), 4 + 2 + 4 + 2 + 7);
    }

    #[test]
    fn modes() {
        assert_eq!(mode_string(NodeKind::File, 0o644), "-rw-r--r--");
        assert_eq!(mode_string(NodeKind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(NodeKind::File, 0o4750), "-rwsr-x---");
        assert_eq!(mode_string(NodeKind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(NodeKind::File, 0o2640), "-rw-r-S---");
    }
}
