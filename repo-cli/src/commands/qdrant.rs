//! `cairn qdrant`: back up Qdrant collections through collection snapshots,
//! upload them back, and verify them in a scratch collection (the REST
//! client is in `crate::exporters::qdrant`).

use std::collections::HashSet;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use repo_core::{Node, NodeKind, Repository, SnapshotEntry};
use serde::Serialize;

use super::{Status, filter, find_node, open};
use crate::cli::{
    FilterArgs, GlobalArgs, QdrantArgs, QdrantBackupArgs, QdrantCommand, QdrantRestoreArgs,
    QdrantServerArgs, QdrantVerifyArgs,
};
use crate::contract::{BackupReport, FailedSource, SavedSnapshot, SourceDetails};
use crate::exporters::qdrant::{Client, CollectionInfo, VerifyingReader};
use crate::output::{self, Output};
use crate::progress::TermProgress;

/// The tag every Qdrant snapshot carries.
const TAG: &str = "qdrant";

/// Metadata keys (SPEC.md §27).
const META_SERVER: &str = "qdrant.server";
const META_VERSION: &str = "qdrant.version";
const META_COLLECTION: &str = "qdrant.collection";
const META_POINTS: &str = "qdrant.points_count";
const META_CONFIG: &str = "qdrant.config";
const META_SNAPSHOT_NAME: &str = "qdrant.snapshot_name";
const META_CHECKSUM: &str = "qdrant.checksum";

/// Runs a `cairn qdrant` subcommand.
pub fn run(g: &GlobalArgs, out: Output, a: &QdrantArgs) -> Result<Status> {
    match &a.command {
        QdrantCommand::Backup(b) => backup(g, out, b),
        QdrantCommand::Restore(r) => restore(g, out, r),
        QdrantCommand::Verify(v) => verify(g, out, v),
    }
}

/// The stream a collection is stored under.
fn stream_path(collection: &str) -> String {
    format!("qdrant/{collection}.snapshot")
}

/// Collection names become a file name in the snapshot: refuse the few that
/// cannot be one (Qdrant itself refuses `/` in names).
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        bail!("invalid collection name {name:?}");
    }
    Ok(())
}

fn client(s: &QdrantServerArgs) -> Result<Client> {
    Client::new(&s.url, s.api_key.clone())
}

fn backup(g: &GlobalArgs, out: Output, a: &QdrantBackupArgs) -> Result<Status> {
    let client = client(&a.server)?;
    let version = client.version()?;
    let collections = if a.all {
        client.collections()?
    } else {
        let mut seen = HashSet::new();
        a.collections
            .iter()
            .filter(|c| seen.insert(c.as_str()))
            .cloned()
            .collect()
    };
    // Every name first, so a typo fails before anything is written.
    let mut infos = Vec::new();
    for c in &collections {
        check_name(c)?;
        infos.push(client.collection_info(c)?);
    }
    let repo = open(g, out)?;
    let mut report = BackupReport::default();
    for (c, info) in collections.iter().zip(&infos) {
        match backup_collection(&repo, &client, &version, c, info, a, out) {
            Ok(s) => {
                if out.text()
                    && let SourceDetails::Qdrant {
                        points_count,
                        qdrant_snapshot,
                        ..
                    } = &s.source
                {
                    out.line(format!(
                        "{c}: {points_count} points, snapshot {qdrant_snapshot} ({}), {} added, snapshot {} saved",
                        output::bytes(s.total_bytes),
                        output::bytes(s.bytes_added),
                        &s.snapshot_id[..8]
                    ))?;
                }
                report.snapshots.push(s);
            }
            Err(e) => report.failed.push(FailedSource {
                source: c.clone(),
                error: crate::message(&e),
            }),
        }
    }
    if out.json {
        report.repository_warnings = crate::contract::warnings_json(&repo.warnings());
        report.requests = repo.request_stats();
        out.json_value(&report)?;
    } else if collections.is_empty() {
        out.line(format!("no collections on {}", client.url()))?;
    }
    if !report.failed.is_empty() {
        let msgs: Vec<String> = report
            .failed
            .iter()
            .map(|f| format!("collection {:?}: {}", f.source, f.error))
            .collect();
        bail!(
            "Qdrant backup of {} of {} collection(s) failed; no snapshot written for them: {}",
            report.failed.len(),
            collections.len(),
            msgs.join("; ")
        );
    }
    Ok(Status::Ok)
}

/// Snapshot on the server → download → repository, then delete the
/// server-side file whatever happened.
fn backup_collection(
    repo: &Repository,
    client: &Client,
    version: &str,
    collection: &str,
    info: &CollectionInfo,
    a: &QdrantBackupArgs,
    out: Output,
) -> Result<SavedSnapshot> {
    let start = Instant::now();
    let points = client.count_points(collection)?;
    // Two snapshots created in the same second get the same name, the second
    // overwriting the first. If ours took the name of one that was there
    // before, it is not ours to delete.
    let before: HashSet<String> = client
        .list_snapshots(collection)?
        .into_iter()
        .map(|s| s.name)
        .collect();
    let desc = client.create_snapshot(collection)?;
    let preexisting = before.contains(&desc.name);
    let result = (|| {
        let mut checksum = desc.checksum.clone();
        let mut size = desc.size;
        if checksum.is_none() {
            // Older servers leave it out of the create answer; the list has it.
            if let Some(d) = client
                .list_snapshots(collection)?
                .into_iter()
                .find(|s| s.name == desc.name)
            {
                checksum = d.checksum;
                size = size.or(d.size);
            }
        }
        let checksum = checksum.map(|c| c.to_ascii_lowercase());
        if checksum.is_none() {
            out.warn(format!(
                "{collection}: the server reported no checksum for {}; only its size is checked",
                desc.name
            ));
        }
        let download = client.download_snapshot(collection, &desc.name)?;
        let reader = VerifyingReader::new(download, checksum.as_deref(), size);
        let config = serde_json::to_string(&info.config)?;
        let progress = TermProgress::new(out);
        let mut b = repo
            .backup()
            .progress(&progress)
            // Measured on a real Qdrant 1.18 (docs/exporters.md): a
            // snapshot after +1 % points had 4 % new bytes at 16 KiB chunks,
            // 9 % at 64 KiB, 43 % at 1 MiB.
            .profile("tiny")
            .tag(TAG)
            .metadata(META_SERVER, client.url())
            .metadata(META_VERSION, version)
            .metadata(META_COLLECTION, collection)
            .metadata(META_POINTS, points.to_string())
            .metadata(META_CONFIG, config)
            .metadata(META_SNAPSHOT_NAME, &desc.name);
        if let Some(c) = &checksum {
            b = b.metadata(META_CHECKSUM, c);
        }
        for t in &a.tags {
            b = b.tag(t);
        }
        if let Some(h) = &a.host {
            b = b.host(h);
        }
        let outcome = b
            .stream(stream_path(collection), reader)
            .run()
            .with_context(|| format!("server snapshot {}", desc.name))?;
        progress.finish();
        Ok::<_, anyhow::Error>((outcome, checksum))
    })();
    if preexisting {
        out.warn(format!(
            "{collection}: snapshot name {} existed on the server before (same-second name \
             collision); it now holds this backup's data and is left on the server",
            desc.name
        ));
    } else if let Err(e) = client.delete_snapshot(collection, &desc.name) {
        out.warn(format!(
            "{collection}: could not delete snapshot {} on the server: {e:#}",
            desc.name
        ));
    }
    let (outcome, checksum) = result?;
    let mut saved = SavedSnapshot::new(
        &outcome,
        SourceDetails::Qdrant {
            server: client.url(),
            qdrant_version: version.to_string(),
            collection: collection.to_string(),
            qdrant_snapshot: desc.name,
            checksum,
            points_count: points,
        },
    );
    saved.duration_s = start.elapsed().as_secs_f64();
    Ok(saved)
}

fn meta<'a>(snap: &'a SnapshotEntry, key: &str) -> Option<&'a str> {
    snap.snapshot
        .metadata
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A Qdrant snapshot: `latest` means the latest tagged `qdrant` (and
/// matching the filters).
struct Stored {
    snap: SnapshotEntry,
    collection: String,
    node: Node,
    points: u64,
    checksum: Option<String>,
    file_name: String,
}

fn stored(repo: &Repository, spec: &str, f: &FilterArgs) -> Result<Stored> {
    let mut sf = filter(f)?;
    if !sf.tags.iter().any(|t| t == TAG) {
        sf.tags.push(TAG.into());
    }
    let snap = repo.find_snapshot(spec, &sf)?;
    let not_ours = || {
        format!(
            "snapshot {} is not a Qdrant backup (no {META_COLLECTION} / {META_POINTS} metadata)",
            snap.id.short()
        )
    };
    let collection = meta(&snap, META_COLLECTION)
        .with_context(not_ours)?
        .to_string();
    let points: u64 = meta(&snap, META_POINTS)
        .with_context(not_ours)?
        .parse()
        .with_context(not_ours)?;
    let path = stream_path(&collection);
    let node = find_node(repo, &snap, std::ffi::OsStr::new(&path))
        .with_context(|| format!("snapshot {} holds no {path}", snap.id.short()))?;
    if node.kind != NodeKind::File {
        bail!("{path} in snapshot {} is not a file", snap.id.short());
    }
    let checksum = meta(&snap, META_CHECKSUM).map(str::to_string);
    let file_name = meta(&snap, META_SNAPSHOT_NAME)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{collection}.snapshot"));
    Ok(Stored {
        snap,
        collection,
        node,
        points,
        checksum,
        file_name,
    })
}

/// Uploads the stored tar into `target`, streamed from the repository
/// (no temporary file). A failed read from the repository cuts the upload
/// short, which the server rejects.
fn upload(repo: &Repository, client: &Client, s: &Stored, target: &str) -> Result<()> {
    // An authenticated request first: a server that refuses the key may
    // answer an upload before reading its body and close the connection,
    // which a client sees as a broken pipe instead of the 401.
    client.collections()?;
    let mut reader = Remembering {
        inner: repo.read_node(&s.node)?,
        failed: None,
    };
    let up = client.upload_snapshot(
        target,
        &s.file_name,
        &mut reader,
        s.node.size,
        s.checksum.as_deref(),
    );
    match (up, reader.failed) {
        (_, Some(read)) => Err(anyhow::Error::from(read).context("reading the snapshot")),
        (up, None) => up,
    }
}

/// A reader that keeps a copy of its first error: the HTTP client reports a
/// failed body read as its own error, and the user should see why.
struct Remembering<R> {
    inner: R,
    failed: Option<std::io::Error>,
}

impl<R: std::io::Read> std::io::Read for Remembering<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            self.failed
                .get_or_insert_with(|| std::io::Error::new(e.kind(), e.to_string()));
        })
    }
}

#[derive(Serialize)]
struct RestoreJson {
    snapshot_id: String,
    collection: String,
    target_collection: String,
    bytes: u64,
    recorded_points_count: u64,
    points_count: u64,
    duration_s: f64,
}

fn restore(g: &GlobalArgs, out: Output, a: &QdrantRestoreArgs) -> Result<Status> {
    let repo = open(g, out)?;
    let s = stored(&repo, &a.snapshot, &a.filter)?;
    let target = a.collection.clone().unwrap_or_else(|| s.collection.clone());
    check_name(&target)?;
    let client = client(&a.server)?;
    let start = Instant::now();
    upload(&repo, &client, &s, &target).with_context(|| {
        format!(
            "restore of snapshot {} into collection {target:?} at {} failed",
            s.snap.id.short(),
            client.url()
        )
    })?;
    let points = client.count_points(&target)?;
    if out.json {
        out.json_value(&RestoreJson {
            snapshot_id: s.snap.id.to_hex(),
            collection: s.collection.clone(),
            target_collection: target.clone(),
            bytes: s.node.size,
            recorded_points_count: s.points,
            points_count: points,
            duration_s: start.elapsed().as_secs_f64(),
        })?;
    } else {
        out.line(format!(
            "restored collection {:?} from snapshot {} into {target:?} at {} ({}): {points} points \
             ({} recorded)",
            s.collection,
            s.snap.id.short(),
            client.url(),
            output::bytes(s.node.size),
            s.points
        ))?;
    }
    Ok(Status::Ok)
}

#[derive(Serialize)]
struct VerifyJson<'a> {
    snapshot_id: String,
    collection: &'a str,
    scratch_collection: &'a str,
    qdrant_version: Option<&'a str>,
    recorded_points_count: u64,
    restored_points_count: u64,
    ok: bool,
}

/// A scratch collection name that no one else uses.
fn scratch_name(collection: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let r = crate::exporters::qdrant::hex(
        &sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(format!(
            "{collection}-{nanos}-{}",
            std::process::id()
        )))[..4],
    );
    format!("{collection}-cairn-verify-{r}")
}

fn verify(g: &GlobalArgs, out: Output, a: &QdrantVerifyArgs) -> Result<Status> {
    let started = super::verify_record::Started::now();
    let repo = open(g, out)?;
    let s = stored(&repo, &a.snapshot, &a.filter)?;
    let client = client(&a.server)?;
    let scratch = scratch_name(&s.collection);
    let restored = upload(&repo, &client, &s, &scratch)
        .and_then(|()| client.count_points(&scratch))
        .with_context(|| {
            format!(
                "verify of snapshot {}: restore into scratch collection {scratch:?} failed",
                s.snap.id.short()
            )
        });
    // The scratch collection goes whatever happened; a failed upload may
    // not have created it.
    if let Err(e) = client.delete_collection(&scratch)
        && restored.is_ok()
    {
        out.warn(format!(
            "could not delete scratch collection {scratch:?}: {e:#}"
        ));
    }
    let restored = restored?;
    let ok = restored == s.points;
    started.record(
        &repo,
        out,
        "qdrant verify",
        s.snap.id,
        ok,
        format!(
            "{}: {} points recorded, {restored} restored",
            s.collection, s.points
        ),
    );
    if out.json {
        out.json_value(&VerifyJson {
            snapshot_id: s.snap.id.to_hex(),
            collection: &s.collection,
            scratch_collection: &scratch,
            qdrant_version: meta(&s.snap, META_VERSION),
            recorded_points_count: s.points,
            restored_points_count: restored,
            ok,
        })?;
    } else {
        out.line(format!(
            "{}: {} points recorded, {restored} restored in scratch collection {scratch}{}",
            s.collection,
            s.points,
            if ok { "" } else { "  MISMATCH" }
        ))?;
        out.line(format!(
            "snapshot {}: {}",
            s.snap.id.short(),
            if ok {
                "verified"
            } else {
                "points count differs"
            }
        ))?;
    }
    if !ok {
        bail!(
            "Qdrant snapshot {} restores with {restored} points, {} recorded",
            s.snap.id.short(),
            s.points
        );
    }
    Ok(Status::Ok)
}
