//! PostgreSQL physical base backups for point-in-time recovery:
//! `pg_basebackup -Ft -D - -X none` streamed into the repository, and a
//! base backup extracted into a new data directory with the recovery
//! settings that replay archived WAL from the repository.
//!
//! WAL is not in the base backup (`-X none`): it comes from the archive
//! (`cairn pg archive-wal`), which also makes the base backup consistent.
//! With `-D -` pg_basebackup writes one tar and appends the
//! `backup_manifest` to it as its last member, so the manifest is stored
//! inside `postgres/base.tar` and lands in the data directory on
//! extraction, where `pg_verifybackup` looks for it. The stream is watched
//! on its way into the repository for `backup_label` and the manifest,
//! whose WAL range gives the snapshot's start and stop positions.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use repo_core::{BackupOutcome, Node, Repository, SnapshotEntry};

use super::postgres::{Server, meta};
use super::process::CommandReader;
use crate::commands::describe_status;

/// Snapshot tag of base backups (the contract with the WAL archive).
pub const TAG: &str = "postgres-base";
/// The stream path of a base backup in its snapshot.
pub const PATH: &str = "postgres/base.tar";
/// Largest `backup_label` / `backup_manifest` kept from the stream; the
/// manifest takes about 150 bytes per file of the cluster.
const MAX_CAPTURE: u64 = 1 << 30;

/// A WAL position, printed as PostgreSQL does (`16/B374D848`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| anyhow!("{s:?} is not a WAL position (expected X/Y in hex)"))?;
        let hi = u32::from_str_radix(hi, 16).with_context(|| format!("bad WAL position {s:?}"))?;
        let lo = u32::from_str_radix(lo, 16).with_context(|| format!("bad WAL position {s:?}"))?;
        Ok(Self((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The WAL segment file name holding byte `lsn` on timeline `tli`
/// (PostgreSQL's `XLogFileName`).
pub fn wal_file_name(tli: u32, lsn: Lsn, seg_size: u64) -> String {
    let seg = lsn.0 / seg_size;
    let per_xlogid = 0x1_0000_0000 / seg_size;
    format!("{tli:08X}{:08X}{:08X}", seg / per_xlogid, seg % per_xlogid)
}

/// What a base backup snapshot records (its `pg.*` metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseInfo {
    /// The cluster's `system_identifier`.
    pub system_identifier: u64,
    /// Timeline at the backup's end.
    pub timeline: u32,
    /// Where replay starts (the backup's checkpoint redo point).
    pub start_lsn: Lsn,
    /// Where the backup becomes consistent: recovery must reach this.
    pub stop_lsn: Lsn,
    /// Segment of `start_lsn`.
    pub start_wal: String,
    /// Segment holding the last byte before `stop_lsn`.
    pub stop_wal: String,
    /// `wal_segment_size` in bytes.
    pub wal_segment_size: u64,
    /// `server_version_num`.
    pub server_version_num: u32,
    /// When the stream ended, RFC 3339: no later than the backup's end,
    /// so no recovery target before it can be reached.
    pub stop_time: String,
}

impl BaseInfo {
    /// The snapshot metadata pairs.
    pub fn metadata(&self) -> Vec<(String, String)> {
        [
            ("pg.system_identifier", self.system_identifier.to_string()),
            ("pg.timeline", self.timeline.to_string()),
            ("pg.start_lsn", self.start_lsn.to_string()),
            ("pg.stop_lsn", self.stop_lsn.to_string()),
            ("pg.start_wal", self.start_wal.clone()),
            ("pg.stop_wal", self.stop_wal.clone()),
            ("pg.wal_segment_size", self.wal_segment_size.to_string()),
            ("pg.server_version_num", self.server_version_num.to_string()),
            ("pg.stop_time", self.stop_time.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Reads the metadata of a base backup snapshot.
    pub fn from_snapshot(snap: &SnapshotEntry) -> Result<Self> {
        let get = |k: &str| {
            meta(snap, k).with_context(|| {
                format!(
                    "snapshot {} is not a PostgreSQL base backup (no {k})",
                    snap.id.short()
                )
            })
        };
        let num = |k: &str| -> Result<u64> {
            get(k)?
                .parse()
                .with_context(|| format!("snapshot {}: bad {k}", snap.id.short()))
        };
        Ok(Self {
            system_identifier: num("pg.system_identifier")?,
            timeline: u32::try_from(num("pg.timeline")?)?,
            start_lsn: get("pg.start_lsn")?.parse()?,
            stop_lsn: get("pg.stop_lsn")?.parse()?,
            start_wal: get("pg.start_wal")?.to_string(),
            stop_wal: get("pg.stop_wal")?.to_string(),
            wal_segment_size: num("pg.wal_segment_size")?,
            server_version_num: u32::try_from(num("pg.server_version_num")?)?,
            stop_time: get("pg.stop_time")?.to_string(),
        })
    }
}

/// `dsn` as a physical replication connection (what pg_basebackup opens),
/// for `IDENTIFY_SYSTEM` and `SHOW`: only the REPLICATION privilege is needed.
fn replication_dsn(dsn: &str) -> String {
    if dsn.contains("://") {
        let sep = if dsn.contains('?') { '&' } else { '?' };
        format!("{dsn}{sep}replication=true")
    } else {
        format!("{dsn} replication=true")
    }
}

/// A size setting as `SHOW` prints it (`16MB`, `1GB`, `8192`).
fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().with_context(|| format!("bad size {s:?}"))?;
    let mul = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        u => bail!("bad size unit {u:?} in {s:?}"),
    };
    Ok(n * mul)
}

/// What the tar stream revealed on its way into the repository.
#[derive(Debug, Default)]
pub(crate) struct Watched {
    label: Option<Vec<u8>>,
    manifest: Option<Vec<u8>>,
    /// Regular members: name, offset of the data in the stream, size.
    pub(crate) members: Vec<(String, u64, u64)>,
}

/// Passes a tar stream through unchanged while keeping the contents of
/// the top-level `backup_label` and `backup_manifest` members.
pub(crate) struct TarWatcher<R> {
    inner: R,
    found: Arc<Mutex<Watched>>,
    pos: u64,
    header: Vec<u8>,
    /// Data bytes left in the current member, then its padding.
    data_left: u64,
    pad_left: u64,
    capture: Option<(bool, Vec<u8>)>,
    ended: bool,
}

impl<R: Read> TarWatcher<R> {
    pub(crate) fn new(inner: R, found: Arc<Mutex<Watched>>) -> Self {
        Self {
            inner,
            found,
            pos: 0,
            header: Vec::with_capacity(512),
            data_left: 0,
            pad_left: 0,
            capture: None,
            ended: false,
        }
    }

    fn observe(&mut self, mut b: &[u8]) {
        while !b.is_empty() && !self.ended {
            if self.data_left > 0 {
                let n = b
                    .len()
                    .min(usize::try_from(self.data_left).unwrap_or(usize::MAX));
                if let Some((_, buf)) = &mut self.capture {
                    buf.extend_from_slice(&b[..n]);
                }
                self.data_left -= n as u64;
                self.pos += n as u64;
                b = &b[n..];
                if self.data_left == 0
                    && let Some((is_label, buf)) = self.capture.take()
                {
                    let mut f = self.found.lock().unwrap_or_else(|e| e.into_inner());
                    *if is_label {
                        &mut f.label
                    } else {
                        &mut f.manifest
                    } = Some(buf);
                }
            } else if self.pad_left > 0 {
                let n = b
                    .len()
                    .min(usize::try_from(self.pad_left).unwrap_or(usize::MAX));
                self.pad_left -= n as u64;
                self.pos += n as u64;
                b = &b[n..];
            } else {
                let n = b.len().min(512 - self.header.len());
                self.header.extend_from_slice(&b[..n]);
                self.pos += n as u64;
                b = &b[n..];
                if self.header.len() == 512 {
                    let h = std::mem::take(&mut self.header);
                    self.start_member(&h);
                }
            }
        }
    }

    fn start_member(&mut self, h: &[u8]) {
        if h.iter().all(|&x| x == 0) {
            self.ended = true;
            return;
        }
        let field = |r: std::ops::Range<usize>| {
            let f = &h[r];
            let end = f.iter().position(|&x| x == 0).unwrap_or(f.len());
            String::from_utf8_lossy(&f[..end]).into_owned()
        };
        let size = field(124..136);
        let size = u64::from_str_radix(size.trim(), 8).unwrap_or(0);
        let name = field(0..100);
        let name = name.strip_prefix("./").unwrap_or(&name);
        self.data_left = size;
        self.pad_left = (512 - size % 512) % 512;
        let regular = matches!(h[156], b'0' | 0);
        if regular {
            let mut f = self.found.lock().unwrap_or_else(|e| e.into_inner());
            f.members.push((name.to_string(), self.pos, size));
        }
        self.capture = match name {
            "backup_label" if regular && size <= MAX_CAPTURE => Some((true, Vec::new())),
            "backup_manifest" if regular && size <= MAX_CAPTURE => Some((false, Vec::new())),
            _ => None,
        };
        if size == 0
            && let Some((is_label, buf)) = self.capture.take()
        {
            let mut f = self.found.lock().unwrap_or_else(|e| e.into_inner());
            *if is_label {
                &mut f.label
            } else {
                &mut f.manifest
            } = Some(buf);
        }
    }
}

impl<R> TarWatcher<R> {
    /// The reader it wraps.
    pub(crate) fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for TarWatcher<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n]);
        Ok(n)
    }
}

/// The WAL range of a backup manifest: (first timeline, start, last
/// timeline, end).
fn manifest_wal_range(manifest: &[u8]) -> Result<(u32, Lsn, u32, Lsn)> {
    let v: serde_json::Value =
        serde_json::from_slice(manifest).context("the backup_manifest is not JSON")?;
    let ranges = v
        .get("WAL-Ranges")
        .and_then(|r| r.as_array())
        .filter(|r| !r.is_empty())
        .context("the backup_manifest has no WAL-Ranges")?;
    let part = |r: &serde_json::Value, k: &str| -> Result<String> {
        Ok(match r.get(k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => bail!("the backup_manifest's WAL-Ranges entry has no {k}"),
        })
    };
    let (first, last) = (&ranges[0], &ranges[ranges.len() - 1]);
    Ok((
        part(first, "Timeline")?.parse()?,
        part(first, "Start-LSN")?.parse()?,
        part(last, "Timeline")?.parse()?,
        part(last, "End-LSN")?.parse()?,
    ))
}

/// The archive of one cluster, as monitoring wants it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct WalSummary {
    /// Archived files (segments, partials, history and backup files).
    pub files: u64,
    /// Their stored bytes.
    pub bytes: u64,
    /// The newest segment by position.
    pub newest_segment: Option<String>,
    /// When it was stored (the storage's clock), Unix seconds.
    pub newest_segment_unix: Option<f64>,
}

/// The archived WAL of cluster `system_identifier`: one listing.
pub fn wal_summary(repo: &Repository, system_identifier: u64) -> Result<WalSummary> {
    let store = repo.wal();
    let cluster = store.cluster(system_identifier);
    let listing = store.list().context("cannot list the archived WAL")?;
    let mut s = WalSummary::default();
    let mut newest: Option<&repo_core::WalObject> = None;
    for o in listing.objects.iter().filter(|o| o.cluster == cluster) {
        s.files += 1;
        s.bytes += o.size;
        if o.file.kind() == repo_core::WalFileKind::Segment
            && newest.is_none_or(|n| {
                (o.file.timeline(), o.file.position()) > (n.file.timeline(), n.file.position())
            })
        {
            newest = Some(o);
        }
    }
    if let Some(n) = newest {
        s.newest_segment = Some(n.file.as_str().to_string());
        s.newest_segment_unix = Some(n.modified_ns as f64 / 1e9);
    }
    Ok(s)
}

/// The server's own archiving record (`pg_stat_archiver`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ArchiverStats {
    /// Files archived since the statistics were reset.
    pub archived_count: u64,
    /// Failed `archive_command` runs since then.
    pub failed_count: u64,
    /// The last file archived.
    pub last_archived_wal: Option<String>,
    /// When, Unix seconds.
    pub last_archived_unix: Option<f64>,
    /// The last file whose archiving failed.
    pub last_failed_wal: Option<String>,
    /// When, Unix seconds.
    pub last_failed_unix: Option<f64>,
}

/// Reads `pg_stat_archiver` (readable by every role).
pub fn archiver_stats(server: &Server) -> Result<ArchiverStats> {
    let line = server.clients.query(
        &server.dsn,
        "SELECT json_build_object('archived_count', archived_count, 'failed_count', failed_count, \
         'last_archived_wal', last_archived_wal, \
         'last_archived_unix', extract(epoch FROM last_archived_time), \
         'last_failed_wal', last_failed_wal, \
         'last_failed_unix', extract(epoch FROM last_failed_time))::text FROM pg_stat_archiver",
    )?;
    serde_json::from_str(line.trim()).context("unexpected pg_stat_archiver answer")
}

/// What `pg basebackup --json` adds for monitoring (read by `cairn run`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PitrFacts {
    /// The cluster's archived WAL after the backup.
    pub wal: Option<WalSummary>,
    /// The server's archiver statistics.
    pub archiver: Option<ArchiverStats>,
    /// Segments compressed again since the previous base backup (SPEC §28.6).
    #[serde(default)]
    pub wal_recompressed: Option<super::pg_recompress::WalRecompressed>,
}

/// How to take a base backup.
#[derive(Debug, Default)]
pub struct BaseBackupOptions {
    /// `--checkpoint=fast`: start now instead of after a spread checkpoint.
    pub fast_checkpoint: bool,
    /// `--max-rate` for pg_basebackup (e.g. `50M`).
    pub max_rate: Option<String>,
    /// Extra tags.
    pub tags: Vec<String>,
    /// Host name to record.
    pub host: Option<String>,
}

/// Streams `pg_basebackup -Ft -D - -X none` into a snapshot tagged
/// [`TAG`]; the snapshot is written only when pg_basebackup succeeded and
/// the stream held a `backup_manifest` with the WAL range.
pub fn base_backup(
    repo: &Repository,
    server: &Server,
    o: &BaseBackupOptions,
) -> Result<(BackupOutcome, BaseInfo)> {
    let rep = replication_dsn(&server.dsn);
    let ident = server
        .clients
        .query(&rep, "IDENTIFY_SYSTEM")
        .context("cannot open a replication connection (the role needs REPLICATION and pg_hba.conf a `replication` line)")?;
    let system_identifier: u64 = ident
        .split('|')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .with_context(|| format!("unexpected IDENTIFY_SYSTEM answer {ident:?}"))?;
    let seg_size = parse_size(&server.clients.query(&rep, "SHOW wal_segment_size")?)?;
    if seg_size == 0 || !seg_size.is_power_of_two() {
        bail!("unexpected wal_segment_size {seg_size}");
    }
    let mut cmd = server.clients.cmd("pg_basebackup");
    cmd.arg("-d").arg(&server.dsn).args([
        "-Ft",
        "-D",
        "-",
        "-X",
        "none",
        "-l",
        "cairn base backup",
    ]);
    if o.fast_checkpoint {
        cmd.arg("--checkpoint=fast");
    }
    if let Some(r) = &o.max_rate {
        cmd.arg("--max-rate").arg(r);
    }
    let (delta, depth) = super::pg_delta::source(repo, system_identifier)?;
    let found = delta.watched();
    let reader = TarWatcher::new(CommandReader::from_command(cmd)?, found.clone());
    let version = server.version_num;
    let late = move || -> io::Result<Vec<(String, String)>> {
        let stop_time = crate::output::rfc3339(repo_core_now_ns());
        let f = found.lock().unwrap_or_else(|e| e.into_inner());
        let manifest = f.manifest.as_deref().ok_or_else(|| {
            io::Error::other(
                "the stream holds no backup_manifest (pg_basebackup 13 or newer is needed)",
            )
        })?;
        if f.label.is_none() {
            return Err(io::Error::other("the stream holds no backup_label"));
        }
        let (start_tli, start, tli, stop) =
            manifest_wal_range(manifest).map_err(|e| io::Error::other(format!("{e:#}")))?;
        let info = BaseInfo {
            system_identifier,
            timeline: tli,
            start_lsn: start,
            stop_lsn: stop,
            start_wal: wal_file_name(start_tli, start, seg_size),
            stop_wal: wal_file_name(tli, Lsn(stop.0.saturating_sub(1)), seg_size),
            wal_segment_size: seg_size,
            server_version_num: version,
            stop_time,
        };
        let mut m = info.metadata();
        m.push((super::pg_delta::DEPTH_KEY.into(), depth.to_string()));
        Ok(m)
    };
    let mut b = repo
        .backup()
        .stream(PATH, reader)
        // PostgreSQL rewrites 8 KiB pages in place, scattered over its
        // files: the smallest chunks keep the untouched pages between them.
        .profile("tiny")
        .delta_source(&delta)
        .tag(TAG)
        .metadata_after(late);
    for t in &o.tags {
        b = b.tag(t);
    }
    if let Some(h) = &o.host {
        b = b.host(h);
    }
    let outcome = b
        .run()
        .context("pg_basebackup failed; no snapshot was written")?;
    let info = BaseInfo::from_snapshot(&outcome.snapshot)?;
    Ok((outcome, info))
}

fn repo_core_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The user and group to give the restored files: `owner` by name, else
/// those of the data directory (or its parent when it does not exist yet).
pub fn resolve_owner(owner: Option<&str>, pgdata: &Path) -> Result<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    if let Some(name) = owner {
        let u = nix::unistd::User::from_name(name)
            .with_context(|| format!("cannot look up user {name:?}"))?
            .with_context(|| format!("no user named {name:?}"))?;
        return Ok((u.uid.as_raw(), u.gid.as_raw()));
    }
    let probe = if pgdata.exists() {
        pgdata.to_path_buf()
    } else {
        pgdata
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    };
    let m =
        std::fs::metadata(&probe).with_context(|| format!("cannot stat {}", probe.display()))?;
    Ok((m.uid(), m.gid()))
}

/// Fails unless `pgdata` is missing or an empty directory.
pub fn check_empty(pgdata: &Path) -> Result<()> {
    match std::fs::read_dir(pgdata) {
        Ok(mut it) => {
            if it.next().is_some() {
                bail!(
                    "data directory {} is not empty: restore-cluster only writes into a new or empty directory",
                    pgdata.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", pgdata.display())),
    }
}

/// Extracts the base backup `node` into `pgdata` (created 0700 if
/// missing), every file then owned by `owner` when we are root.
pub fn extract(repo: &Repository, node: &Node, pgdata: &Path, owner: (u32, u32)) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(pgdata)
        .with_context(|| format!("cannot create {}", pgdata.display()))?;
    std::fs::set_permissions(pgdata, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot chmod {}", pgdata.display()))?;
    super::pg_extract::unpack(repo, node, pgdata)?;
    if nix::unistd::geteuid().is_root() {
        chown_tree(pgdata, owner)?;
    }
    Ok(())
}

fn chown_tree(p: &Path, (uid, gid): (u32, u32)) -> Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .with_context(|| format!("cannot chown {}", p.display()))?;
    if std::fs::symlink_metadata(p)?.is_dir() {
        for e in std::fs::read_dir(p)? {
            chown_tree(&e?.path(), (uid, gid))?;
        }
    }
    Ok(())
}

/// Runs `pg_verifybackup` on an extracted data directory, without parsing
/// WAL (it is in the archive, not there yet); as `owner` when we are root,
/// so it can read the files.
pub fn verify_backup(bindir: &Path, pgdata: &Path, owner: (u32, u32)) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let prog = bindir.join("pg_verifybackup");
    let mut cmd = std::process::Command::new(&prog);
    cmd.args(["-n", "-q"]).arg(pgdata);
    if nix::unistd::geteuid().is_root() {
        cmd.uid(owner.0).gid(owner.1);
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", prog.display()))?;
    if !out.status.success() {
        bail!(
            "pg_verifybackup {}: {}",
            describe_status(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// How far the archived WAL reaches from a base backup, on its timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveReach {
    /// The last segment of the unbroken run from `pg.start_wal`.
    pub last_segment: String,
    /// Where that segment ends.
    pub end_lsn: Lsn,
    /// When it was stored (the storage's clock): its records are older.
    pub stored_ns: i64,
    /// A later timeline is archived too (recovery may follow it).
    pub later_timelines: bool,
}

/// The archived segments of the base backup's cluster and timeline from
/// `pg.start_wal` on, without a gap; an error when they do not reach
/// `pg.stop_wal` (the backup could never become consistent).
pub fn archive_reach(repo: &Repository, info: &BaseInfo) -> Result<ArchiveReach> {
    let store = repo.wal();
    let listing = store.list().context("cannot list the archived WAL")?;
    let cluster = store.cluster(info.system_identifier);
    let seg_size = info.wal_segment_size;
    let start = repo_core::WalFileName::parse(&info.start_wal)?;
    let stop = repo_core::WalFileName::parse(&info.stop_wal)?;
    let mut later_timelines = false;
    let mut segs: Vec<&repo_core::WalObject> = Vec::new();
    for o in listing.objects.iter().filter(|o| o.cluster == cluster) {
        if o.file.timeline() > info.timeline {
            later_timelines = true;
        } else if o.file.timeline() == info.timeline
            && o.file.kind() == repo_core::WalFileKind::Segment
            && o.file.position() >= start.position()
        {
            segs.push(o);
        }
    }
    segs.sort_by_key(|o| o.file.position());
    let mut want = start.segment_number(seg_size);
    let mut last: Option<&repo_core::WalObject> = None;
    for o in segs {
        let n = o.file.segment_number(seg_size);
        if n != want {
            break;
        }
        last = Some(o);
        want += 1;
    }
    let missing = repo_core::WalFileName::segment(
        info.timeline,
        repo_core::WalFileName::position_of(want, seg_size),
    );
    match last {
        Some(o) if o.file.position() >= stop.position() => Ok(ArchiveReach {
            last_segment: o.file.as_str().to_string(),
            end_lsn: Lsn((o.file.segment_number(seg_size) + 1) * seg_size),
            stored_ns: o.modified_ns,
            later_timelines,
        }),
        _ => bail!(
            "the archived WAL lacks segment {missing}, which the base backup needs to become \
             consistent ({}..{}): is archive_command set to `cairn pg archive-wal %p`? \
             Nothing was written",
            info.start_wal,
            info.stop_wal
        ),
    }
}

/// Fails when the archived WAL cannot reach `target` from the base
/// backup `info`: segments missing up to the backup's end, or a time or
/// position beyond the last segment archived without a gap. With a later
/// timeline archived, recovery may go on there: only the backup's end is
/// checked then.
pub fn check_archive_reaches(repo: &Repository, info: &BaseInfo, target: &Target) -> Result<()> {
    let reach = archive_reach(repo, info)?;
    if reach.later_timelines {
        return Ok(());
    }
    match target {
        Target::Lsn(l) if *l > reach.end_lsn => bail!(
            "the target LSN {l} is beyond the archived WAL: the last segment archived without a \
             gap is {} (ending at {}); nothing was written",
            reach.last_segment,
            reach.end_lsn
        ),
        Target::Time(t) if *t > reach.stored_ns => bail!(
            "the target time {} is beyond the archived WAL: the last segment archived without a \
             gap, {}, was stored at {} (the server archives its current segment when it is full, \
             after archive_timeout or after `SELECT pg_switch_wal()`); nothing was written",
            crate::output::rfc3339(*t),
            reach.last_segment,
            crate::output::rfc3339(reach.stored_ns)
        ),
        _ => Ok(()),
    }
}

/// A recovery target (`recovery_target_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Replay every archived segment.
    End,
    /// `recovery_target_time`, nanoseconds since the epoch.
    Time(i64),
    /// `recovery_target_lsn`.
    Lsn(Lsn),
    /// `recovery_target_xid`.
    Xid(String),
    /// `recovery_target_name` (a `pg_create_restore_point`).
    Name(String),
}

/// Parses a recovery target time: RFC 3339, or PostgreSQL's
/// `2026-12-07 12:00:00+00` with an explicit zone.
pub fn parse_time(s: &str) -> Result<i64> {
    let t = s.trim().replacen(' ', "T", 1);
    // `+01` and `+0100` are PostgreSQL's, RFC 3339 wants `+01:00`.
    let zoned = match t.rfind(['+', '-']) {
        Some(i) if i > 10 => {
            let (head, zone) = t.split_at(i);
            let digits = &zone[1..];
            match digits.len() {
                2 if digits.bytes().all(|b| b.is_ascii_digit()) => format!("{t}:00"),
                4 if digits.bytes().all(|b| b.is_ascii_digit()) => {
                    format!("{head}{}{}:{}", &zone[..1], &digits[..2], &digits[2..])
                }
                _ => t.clone(),
            }
        }
        _ => t.clone(),
    };
    crate::output::parse_rfc3339(&zoned).with_context(|| {
        format!(
            "cannot read {s:?} as a time with its zone (RFC 3339, e.g. 2026-12-07T12:00:00Z or \
             '2026-12-07 12:00:00+00')"
        )
    })
}

/// A time as PostgreSQL reads it: microseconds at most, zone `+00`.
pub fn pg_time(ns: i64) -> String {
    let t = crate::output::rfc3339(ns);
    let t = t.trim_end_matches('Z').replacen('T', " ", 1);
    match t.split_once('.') {
        Some((head, frac)) => format!("{head}.{}+00", &frac[..frac.len().min(6)]),
        None => format!("{t}+00"),
    }
}

/// The `postgresql.auto.conf` value of a string setting.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// Recovery settings for a restored cluster.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// `restore_command` (with `%f` and `%p`).
    pub restore_command: String,
    /// `recovery_end_command` (removes the read-ahead spool), if any.
    pub end_command: Option<String>,
    /// What to stop at.
    pub target: Target,
    /// `recovery_target_action`: `promote`, `pause` or `shutdown`.
    pub action: String,
    /// `recovery_target_inclusive = off` (stop just before the target).
    pub exclusive: bool,
    /// `archive_mode = off`: a copy that must not archive into the repository.
    pub no_archive: bool,
    /// Written into the comment line (snapshot id).
    pub origin: String,
}

impl Recovery {
    /// The lines appended to `postgresql.auto.conf`.
    pub fn conf_lines(&self) -> String {
        let mut s = format!(
            "\n# Recovery settings written by cairn pg restore-cluster ({}).\n\
             restore_command = {}\n",
            self.origin,
            quote(&self.restore_command)
        );
        if let Some(c) = &self.end_command {
            s.push_str(&format!("recovery_end_command = {}\n", quote(c)));
        }
        let target = match &self.target {
            Target::End => None,
            Target::Time(ns) => Some(("recovery_target_time", pg_time(*ns))),
            Target::Lsn(l) => Some(("recovery_target_lsn", l.to_string())),
            Target::Xid(x) => Some(("recovery_target_xid", x.clone())),
            Target::Name(n) => Some(("recovery_target_name", n.clone())),
        };
        if let Some((k, v)) = target {
            s.push_str(&format!("{k} = {}\n", quote(&v)));
            s.push_str(&format!(
                "recovery_target_action = {}\n",
                quote(&self.action)
            ));
            if self.exclusive {
                s.push_str("recovery_target_inclusive = off\n");
            }
        }
        if self.no_archive {
            s.push_str("archive_mode = off\n");
        }
        s
    }

    /// Writes `recovery.signal` and appends the settings to
    /// `postgresql.auto.conf` (later lines win over the restored ones).
    pub fn write(&self, pgdata: &Path, owner: (u32, u32)) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let conf = pgdata.join("postgresql.auto.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&conf)
            .with_context(|| format!("cannot open {}", conf.display()))?;
        f.write_all(self.conf_lines().as_bytes())
            .with_context(|| format!("cannot write {}", conf.display()))?;
        let signal = pgdata.join("recovery.signal");
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&signal)
            .with_context(|| format!("cannot create {}", signal.display()))?;
        if nix::unistd::geteuid().is_root() {
            for p in [&conf, &signal] {
                std::os::unix::fs::lchown(p, Some(owner.0), Some(owner.1))
                    .with_context(|| format!("cannot chown {}", p.display()))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_and_segment_names_match_postgresql() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!(wal_file_name(1, l, 16 << 20), "0000000100000016000000B3");
        assert_eq!(
            wal_file_name(2, "0/2000028".parse().unwrap(), 16 << 20),
            "000000020000000000000002"
        );
        // 64 MiB segments: 64 per xlogid.
        assert_eq!(
            wal_file_name(1, "1/8000000".parse().unwrap(), 64 << 20),
            "000000010000000100000002"
        );
        assert!("12".parse::<Lsn>().is_err());
        assert_eq!(parse_size("16MB").unwrap(), 16 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1 << 30);
        assert!(parse_size("16XB").is_err());
    }

    #[test]
    fn target_times_take_rfc3339_and_postgresql_forms() {
        let z = parse_time("2026-12-07T12:00:00Z").unwrap();
        assert_eq!(parse_time("2026-12-07 12:00:00+00").unwrap(), z);
        assert_eq!(parse_time("2026-12-07 13:00:00+0100").unwrap(), z);
        assert_eq!(parse_time("2026-12-07 14:00:00+02:00").unwrap(), z);
        assert_eq!(
            parse_time("2026-12-07 12:00:00.5+00").unwrap(),
            z + 500_000_000
        );
        assert!(parse_time("2026-12-07 12:00:00").is_err(), "no zone");
        // PostgreSQL refuses nanoseconds.
        assert_eq!(pg_time(z + 123_456_789), "2026-12-07 12:00:00.123456+00");
        assert_eq!(parse_time(&pg_time(z + 5_000)).unwrap(), z + 5_000);
    }

    #[test]
    fn the_watcher_finds_label_and_manifest_across_reads() {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("base/1/1234", vec![7u8; 3000]),
            ("backup_label", b"START WAL LOCATION: 0/2000028\n".to_vec()),
            ("pg_wal/", Vec::new()),
            ("backup_manifest", br#"{"WAL-Ranges": [{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }]}"#.to_vec()),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_entry_type(if name.ends_with('/') {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            h.set_cksum();
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let found = Arc::new(Mutex::new(Watched::default()));
        let mut w = TarWatcher::new(&tar[..], found.clone());
        // Odd-sized reads split headers and members.
        let mut out = Vec::new();
        let mut buf = [0u8; 97];
        loop {
            let n = w.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, tar, "the stream passes through unchanged");
        let f = found.lock().unwrap();
        assert_eq!(
            f.label.as_deref(),
            Some(&b"START WAL LOCATION: 0/2000028\n"[..])
        );
        let (t0, start, t1, stop) = manifest_wal_range(f.manifest.as_deref().unwrap()).unwrap();
        assert_eq!((t0, t1), (1, 1));
        assert_eq!(
            (start.to_string(), stop.to_string()),
            ("0/2000028".into(), "0/2000100".into())
        );
    }

    #[test]
    fn recovery_settings_quote_and_name_the_target() {
        let r = Recovery {
            restore_command: "/usr/bin/cairn -r '/backups/it''s' pg restore-wal %f %p".into(),
            end_command: Some("/usr/bin/cairn pg restore-wal --clean-spool".into()),
            target: Target::Lsn("0/3000060".parse().unwrap()),
            action: "promote".into(),
            exclusive: false,
            no_archive: true,
            origin: "snapshot 1234abcd".into(),
        };
        let s = r.conf_lines();
        assert!(
            s.contains(
                "restore_command = '/usr/bin/cairn -r ''/backups/it''''s'' pg restore-wal %f %p'\n"
            ),
            "{s}"
        );
        assert!(s.contains("recovery_target_lsn = '0/3000060'\n"), "{s}");
        assert!(s.contains("recovery_target_action = 'promote'\n"), "{s}");
        assert!(s.contains("archive_mode = off\n"), "{s}");
        assert!(
            s.contains("recovery_end_command = '/usr/bin/cairn pg restore-wal --clean-spool'\n"),
            "{s}"
        );
        let end = Recovery {
            target: Target::End,
            no_archive: false,
            ..r
        };
        let s = end.conf_lines();
        assert!(!s.contains("recovery_target"), "{s}");
        assert!(!s.contains("archive_mode"), "{s}");
    }
}
