//! Directory trees: one blob per directory, its nodes sorted by name, encoded
//! canonically so identical directories get identical ids (SPEC §9).

use std::collections::HashMap;

use crate::encoding;
use crate::format::FormatError;
use crate::id::{BlobId, TreeId};

/// What a node is (SPEC §9.1). The discriminant is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Regular file (hard links share `device` and `inode`).
    File = 0,
    /// Directory; `subtree` names its tree.
    Dir = 1,
    /// Symbolic link; `symlink_target` holds the raw target.
    Symlink = 2,
    /// Named pipe.
    Fifo = 3,
    /// Character device; `rdev` holds its number.
    CharDevice = 4,
    /// Block device; `rdev` holds its number.
    BlockDevice = 5,
    /// Unix socket: noted, never restored.
    Socket = 6,
}

impl NodeKind {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::File,
            1 => Self::Dir,
            2 => Self::Symlink,
            3 => Self::Fifo,
            4 => Self::CharDevice,
            5 => Self::BlockDevice,
            6 => Self::Socket,
            _ => return None,
        })
    }
}

impl bincode::Encode for NodeKind {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        e: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        (*self as u8).encode(e)
    }
}
impl<C> bincode::Decode<C> for NodeKind {
    fn decode<D: bincode::de::Decoder<Context = C>>(
        d: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let b = u8::decode(d)?;
        Self::from_byte(b).ok_or(bincode::error::DecodeError::Other("unknown node kind"))
    }
}
bincode::impl_borrow_decode!(NodeKind);

/// One extended attribute (only the `user.` namespace is backed up).
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Xattr {
    /// Raw attribute name, e.g. `user.comment`.
    pub name: Vec<u8>,
    /// Raw value.
    pub value: Vec<u8>,
}

/// One directory entry (SPEC §9.1). Field order is the encoding order.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Node {
    /// File name as raw bytes: non-UTF-8 and newline-containing names survive.
    pub name: Vec<u8>,
    /// What this entry is.
    pub kind: NodeKind,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Owner name, empty if unknown.
    pub user: String,
    /// Group name, empty if unknown.
    pub group: String,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the Unix epoch.
    pub ctime_ns: i64,
    /// Device id of the file system holding the entry.
    pub device: u64,
    /// Inode number.
    pub inode: u64,
    /// Hard-link count at backup time.
    pub links: u64,
    /// Content size in bytes (files; 0 otherwise).
    pub size: u64,
    /// Device number for char/block devices.
    pub rdev: u64,
    /// Raw symlink target.
    pub symlink_target: Vec<u8>,
    /// `user.*` extended attributes, sorted by name.
    pub xattrs: Vec<Xattr>,
    /// Index of the chunker profile in the config that cut `content`.
    pub chunker: u8,
    /// Content chunk ids in order (files).
    pub content: Vec<BlobId>,
    /// The directory's tree (dirs).
    pub subtree: Option<TreeId>,
}

impl Node {
    /// The subtree of a directory node (`None` for every other kind).
    pub fn dir_subtree(&self) -> Option<TreeId> {
        self.subtree.filter(|_| self.kind == NodeKind::Dir)
    }

    /// An empty node of `kind` named `name`, every other field zero.
    pub fn new(name: Vec<u8>, kind: NodeKind) -> Self {
        Self {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            mtime_ns: 0,
            ctime_ns: 0,
            device: 0,
            inode: 0,
            links: 0,
            size: 0,
            rdev: 0,
            symlink_target: Vec::new(),
            xattrs: Vec::new(),
            chunker: 0,
            content: Vec::new(),
            subtree: None,
        }
    }

    /// The name for display (lossy for non-UTF-8 names).
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// Smallest encoding of a node: one-byte name, no xattrs, content or
/// subtree (SPEC §9.1). The decoder may reserve `DECODE_EXPANSION` bytes of
/// memory per input byte, which must cover a node's in-memory size.
const MIN_NODE_ENCODED: usize = 8 + 1 + 1 + 4 * 3 + 8 * 2 + 8 * 9 + 1 + 8 + 1;
const _: () = assert!(size_of::<Node>() <= crate::encoding::DECODE_EXPANSION * MIN_NODE_ENCODED);

/// A directory's entries, sorted by name bytes, names unique.
#[derive(Debug, Clone, PartialEq, Eq, Default, bincode::Encode, bincode::Decode)]
pub struct Tree {
    /// Entries in byte order of their names.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Sorts entries into canonical order.
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        for n in &mut self.nodes {
            n.xattrs.sort_by(|a, b| a.name.cmp(&b.name));
        }
    }

    /// Canonical encoding (SPEC §9.2).
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(self)
    }

    /// Decodes and checks canonical order, so one tree has one encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let t: Tree = encoding::decode(bytes, "tree")?;
        for w in t.nodes.windows(2) {
            if w[0].name >= w[1].name {
                return Err(FormatError::Malformed {
                    what: "tree",
                    reason: "entries not in strictly increasing name order".into(),
                });
            }
        }
        for n in &t.nodes {
            // Each name is one path component that restore can create:
            // `/` would reach elsewhere and NUL cannot be passed to the OS.
            if n.name.is_empty()
                || n.name.contains(&b'/')
                || n.name.contains(&0)
                || n.name == b"."
                || n.name == b".."
            {
                return Err(FormatError::Malformed {
                    what: "tree",
                    reason: format!("invalid entry name {:?}", n.name_lossy()),
                });
            }
            if n.xattrs.windows(2).any(|w| w[0].name >= w[1].name) {
                return Err(FormatError::Malformed {
                    what: "tree",
                    reason: format!(
                        "entry {:?}: xattrs not in strictly increasing name order",
                        n.name_lossy()
                    ),
                });
            }
            if (n.kind == NodeKind::Dir) != n.subtree.is_some() {
                return Err(FormatError::Malformed {
                    what: "tree",
                    reason: format!(
                        "entry {:?}: subtree only and always on directories",
                        n.name_lossy()
                    ),
                });
            }
        }
        Ok(t)
    }

    /// The entry named `name`.
    pub fn get(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

/// Folds the tree `root` and everything below it into one value per tree,
/// children before their parent, with an explicit stack: trees may nest
/// deeper than a thread's stack allows. `memo` keeps each finished tree's
/// value, so a subtree shared by several directories (or snapshots) is
/// loaded and finished once; `finish` finds every subtree's value in it.
pub fn fold_trees<T: Clone, E>(
    root: &TreeId,
    memo: &mut HashMap<TreeId, T>,
    mut load: impl FnMut(&TreeId) -> Result<Tree, E>,
    mut finish: impl FnMut(&TreeId, &Tree, &HashMap<TreeId, T>) -> Result<T, E>,
) -> Result<T, E> {
    enum Frame {
        Visit(TreeId),
        Finish(TreeId, Tree),
    }
    let mut stack = vec![Frame::Visit(*root)];
    while let Some(frame) = stack.pop() {
        match frame {
            Frame::Visit(id) => {
                if memo.contains_key(&id) {
                    continue;
                }
                let tree = load(&id)?;
                let subs: Vec<TreeId> = tree
                    .nodes
                    .iter()
                    .filter_map(Node::dir_subtree)
                    .filter(|s| !memo.contains_key(s))
                    .collect();
                stack.push(Frame::Finish(id, tree));
                stack.extend(subs.into_iter().map(Frame::Visit));
            }
            Frame::Finish(id, tree) => {
                // A subtree listed twice in one tree is finished once.
                if !memo.contains_key(&id) {
                    let value = finish(&id, &tree, memo)?;
                    memo.insert(id, value);
                }
            }
        }
    }
    Ok(memo
        .get(root)
        .cloned()
        .expect("the loop ends only after the root is finished"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_node() -> impl Strategy<Value = Node> {
        (
            proptest::collection::vec(1u8..=255, 1..20),
            0u8..7,
            any::<(u32, u32, u32, i64, i64, u64, u64)>(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..4),
            proptest::collection::vec(
                (
                    proptest::collection::vec(any::<u8>(), 1..8),
                    proptest::collection::vec(any::<u8>(), 0..8),
                ),
                0..3,
            ),
        )
            .prop_map(
                |(mut name, k, (mode, uid, gid, mt, ct, ino, size), content, xattrs)| {
                    name.retain(|&b| b != b'/');
                    if name.is_empty() || name == b"." || name == b".." {
                        name = b"x".to_vec();
                    }
                    let kind = NodeKind::from_byte(k).unwrap();
                    let mut n = Node::new(name, kind);
                    n.mode = mode;
                    n.uid = uid;
                    n.gid = gid;
                    n.mtime_ns = mt;
                    n.ctime_ns = ct;
                    n.inode = ino;
                    n.size = size;
                    n.content = content.into_iter().map(BlobId::from_bytes).collect();
                    n.xattrs = xattrs
                        .into_iter()
                        .map(|(name, value)| Xattr { name, value })
                        .collect();
                    // A file has each xattr name once.
                    n.xattrs.sort_by(|a, b| a.name.cmp(&b.name));
                    n.xattrs.dedup_by(|a, b| a.name == b.name);
                    if kind == NodeKind::Dir {
                        n.subtree = Some(BlobId::from_bytes([9; 32]));
                    }
                    n
                },
            )
    }

    proptest! {
        #[test]
        fn decode_encode_round_trip(nodes in proptest::collection::vec(arb_node(), 0..8)) {
            let mut t = Tree { nodes };
            t.nodes.sort_by(|a, b| a.name.cmp(&b.name));
            t.nodes.dedup_by(|a, b| a.name == b.name);
            t.sort();
            let bytes = t.encode();
            prop_assert_eq!(Tree::decode(&bytes).unwrap(), t);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Tree::decode(&bytes);
        }
    }

    #[test]
    fn rejects_unsorted_and_bad_names() {
        let t = Tree {
            nodes: vec![
                Node::new(b"b".to_vec(), NodeKind::File),
                Node::new(b"a".to_vec(), NodeKind::File),
            ],
        };
        assert!(Tree::decode(&t.encode()).is_err());
        for bad in [&b"a/b"[..], b"a\0b", b"\0", b"", b".", b".."] {
            let t = Tree {
                nodes: vec![Node::new(bad.to_vec(), NodeKind::File)],
            };
            assert!(
                matches!(
                    Tree::decode(&t.encode()),
                    Err(FormatError::Malformed { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn fold_trees_finishes_children_first_and_shared_subtrees_once() {
        let id = |n: u8| TreeId::from_bytes([n; 32]);
        let dir = |name: &[u8], sub: u8| {
            let mut n = Node::new(name.to_vec(), NodeKind::Dir);
            n.subtree = Some(id(sub));
            n
        };
        // 1 -> {a: 2, b: 3}, 2 -> {c: 3}, 3 -> {}; and a chain 10 -> 11 -> ... deep.
        let mut trees: HashMap<TreeId, Tree> = HashMap::new();
        trees.insert(
            id(1),
            Tree {
                nodes: vec![dir(b"a", 2), dir(b"b", 3)],
            },
        );
        trees.insert(
            id(2),
            Tree {
                nodes: vec![dir(b"c", 3)],
            },
        );
        trees.insert(
            id(3),
            Tree {
                nodes: vec![Node::new(b"f".to_vec(), NodeKind::File)],
            },
        );
        let (mut loads, mut finished) = (Vec::new(), Vec::new());
        let mut memo = HashMap::new();
        let files = fold_trees(
            &id(1),
            &mut memo,
            |t| {
                loads.push(*t);
                trees.get(t).cloned().ok_or("missing")
            },
            |t, tree, memo: &HashMap<TreeId, u32>| {
                finished.push(*t);
                Ok(tree
                    .nodes
                    .iter()
                    .map(|n| n.dir_subtree().map_or(1, |s| memo[&s]))
                    .sum())
            },
        )
        .unwrap();
        assert_eq!(files, 2, "a/c/f and b/f");
        assert_eq!(finished.last(), Some(&id(1)), "the root is finished last");
        assert_eq!(finished.iter().filter(|t| **t == id(3)).count(), 1);
        assert!(
            finished.iter().position(|t| *t == id(3)) < finished.iter().position(|t| *t == id(2))
        );
        // A missing tree is the loader's error, not a panic.
        let mut memo = HashMap::new();
        let err = fold_trees(
            &id(9),
            &mut memo,
            |_| Err::<Tree, _>("missing"),
            |_, _, _| Ok(0u32),
        );
        assert_eq!(err, Err("missing"));
    }
}
