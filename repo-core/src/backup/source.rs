//! Reading file-system metadata into tree nodes (SPEC §9.1).

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Mutex;

use crate::tree::{Node, NodeKind, Xattr};
use crate::warning::Warning;

/// Caches uid/gid → name lookups (NSS calls are slow).
#[derive(Debug, Default)]
pub(crate) struct Names {
    users: Mutex<HashMap<u32, String>>,
    groups: Mutex<HashMap<u32, String>>,
}

impl Names {
    fn user(&self, uid: u32) -> String {
        let mut m = self.users.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_default()
            })
            .clone()
    }
    fn group(&self, gid: u32) -> String {
        let mut m = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(gid.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name)
                    .unwrap_or_default()
            })
            .clone()
    }
}

/// The node kind of a file type, `None` for unknown types.
pub(crate) fn kind_of(md: &Metadata) -> Option<NodeKind> {
    let ft = md.file_type();
    Some(if ft.is_file() {
        NodeKind::File
    } else if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        return None;
    })
}

fn ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// Builds a node from `lstat` metadata; reads the link target and xattrs.
/// Problems reading xattrs are returned as a warning, not an error.
///
/// `prev` is the same name's node in the parent snapshot. When its inode,
/// device and ctime match, the xattrs and link target are taken from it
/// instead of being read again: changing either updates the ctime, and on
/// an unchanged tree these calls would cost as much as the `lstat` itself.
pub(crate) fn node_from(
    path: &Path,
    name: &[u8],
    md: &Metadata,
    names: &Names,
    prev: Option<&Node>,
) -> std::io::Result<(Node, Option<Warning>)> {
    let kind = kind_of(md).ok_or_else(|| std::io::Error::other("unknown file type"))?;
    let mut n = Node::new(name.to_vec(), kind);
    n.mode = md.mode() & 0o7777;
    n.uid = md.uid();
    n.gid = md.gid();
    n.user = names.user(md.uid());
    n.group = names.group(md.gid());
    n.mtime_ns = ns(md.mtime(), md.mtime_nsec());
    n.ctime_ns = ns(md.ctime(), md.ctime_nsec());
    n.device = md.dev();
    n.inode = md.ino();
    n.links = md.nlink();
    if kind == NodeKind::File {
        n.size = md.size();
    }
    if matches!(kind, NodeKind::CharDevice | NodeKind::BlockDevice) {
        n.rdev = md.rdev();
    }
    let same = prev.filter(|p| {
        p.kind == kind && p.ctime_ns == n.ctime_ns && p.inode == n.inode && p.device == n.device
    });
    if let Some(p) = same {
        n.symlink_target = p.symlink_target.clone();
        n.xattrs = p.xattrs.clone();
        return Ok((n, None));
    }
    if kind == NodeKind::Symlink {
        n.symlink_target = std::fs::read_link(path)?.as_os_str().as_bytes().to_vec();
    }
    let mut warning = None;
    if matches!(kind, NodeKind::File | NodeKind::Dir | NodeKind::Symlink) {
        match read_xattrs(path) {
            Ok(x) => n.xattrs = x,
            Err(e) => {
                warning = Some(Warning::UnreadableXattrs {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        }
    }
    Ok((n, warning))
}

/// `user.*` attributes, sorted; file systems without xattrs give none.
fn read_xattrs(path: &Path) -> std::io::Result<Vec<Xattr>> {
    let names = match xattr::list(path) {
        Ok(l) => l,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        let raw = name.as_bytes();
        if !raw.starts_with(b"user.") {
            continue;
        }
        if let Some(value) = xattr::get(path, &name)? {
            out.push(Xattr {
                name: raw.to_vec(),
                value,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
