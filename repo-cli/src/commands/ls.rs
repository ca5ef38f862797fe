//! `cairn ls`: list the paths in a snapshot, as raw name bytes (control
//! characters escaped; `--json` is exact).

use std::ffi::OsStr;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;

use anyhow::Result;
use repo_core::{Node, NodeKind};

use super::{Status, find_node, open, select};
use crate::cli::{GlobalArgs, LsArgs};
use crate::output::{self, NodeJson, Output};

/// Lists the entries below the path (or the entry itself, for a file).
pub fn run(g: &GlobalArgs, out: Output, a: &LsArgs) -> Result<Status> {
    let repo = open(g, out)?;
    let snap = select(&repo, &a.snapshot, &a.filter)?;
    let path = a.path.as_deref().unwrap_or(OsStr::new("/"));
    let node = find_node(&repo, &snap, path)?;
    let prefix = canonical(path.as_bytes());

    let mut w = BufWriter::new(io::stdout().lock());
    let mut print = |p: &[u8], n: &Node| -> io::Result<()> {
        if out.json {
            serde_json::to_writer(&mut w, &NodeJson::new(p, n))?;
        } else if a.long {
            let who = |name: &str, id: u32| {
                if name.is_empty() {
                    id.to_string()
                } else {
                    name.to_string()
                }
            };
            write!(
                w,
                "{} {:<8} {:<8} {:>12} {} ",
                output::mode_string(n.kind, n.mode),
                who(&n.user, n.uid),
                who(&n.group, n.gid),
                n.size,
                output::local_time(n.mtime_ns)
            )?;
            w.write_all(&output::escape_controls(p))?;
            if n.kind == NodeKind::Symlink {
                w.write_all(b" -> ")?;
                w.write_all(&output::escape_controls(&n.symlink_target))?;
            }
        } else {
            w.write_all(&output::escape_controls(p))?;
        }
        w.write_all(b"\n")
    };

    match node.subtree {
        Some(root) if node.kind == NodeKind::Dir => {
            // The walk's callback can only return a library error; keep the
            // real I/O error (often a closed pipe) and stop the walk with a marker.
            let mut failed: Option<io::Error> = None;
            let mut full = prefix.clone();
            let r = repo.walk(&root, &mut |rel, n| {
                full.truncate(prefix.len());
                full.extend_from_slice(rel);
                if let Err(e) = print(&full, n) {
                    failed = Some(e);
                    return Err(repo_core::Error::InvalidArgument("output failed".into()));
                }
                Ok(a.recursive)
            });
            if let Some(e) = failed {
                return Err(e.into());
            }
            r?;
        }
        _ => print(if prefix.is_empty() { b"/" } else { &prefix }, &node)?,
    }
    w.flush()?;
    Ok(Status::Ok)
}

/// `a//b/./c/` → `/a/b/c`; the root becomes empty, so children print as `/x`.
fn canonical(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
    {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn canonical_paths() {
        assert_eq!(super::canonical(b"/"), b"");
        assert_eq!(super::canonical(b"a//b/./c/"), b"/a/b/c");
    }
}
