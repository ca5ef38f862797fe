//! `Repository::open_file`: a stored file read back through `impl Read`.

use std::io::{self, Read};

use repo_core::ObjectKind;
use repo_core::unstable::RepositoryInternals as _;

use super::{init_repo, open_repo, random_bytes};

/// Reads `r` to its end through a small, odd-sized buffer, so reads cross
/// chunk boundaries; returns what was read before the end or an error.
fn read_in_pieces(mut r: impl Read) -> (Vec<u8>, io::Result<()>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 7919];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return (out, Ok(())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Err(e)),
        }
    }
}

#[test]
fn a_multi_chunk_file_reads_back_byte_for_byte() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let data = random_bytes(12 << 20, 5);
    repo.backup()
        .stream("db/dump.bin", &data[..])
        .run()
        .unwrap();
    let snap = repo.find_snapshot("latest", &Default::default()).unwrap();
    let node = repo.find_node(&snap.snapshot.tree, "db/dump.bin").unwrap();
    assert!(node.content.len() >= 3, "{} chunks", node.content.len());

    let reader = repo.open_file(&snap, "db/dump.bin").unwrap();
    assert_eq!(reader.size(), data.len() as u64);
    let (back, end) = read_in_pieces(reader);
    end.unwrap();
    assert!(back == data, "bytes differ");

    // Not a file: refused rather than read as empty.
    assert!(matches!(
        repo.open_file(&snap, "db"),
        Err(repo_core::Error::InvalidArgument(_))
    ));
    assert!(matches!(
        repo.open_file(&snap, "db/missing"),
        Err(repo_core::Error::PathNotFound(_))
    ));
}

#[test]
fn a_damaged_chunk_is_an_io_error_never_wrong_bytes() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let data = random_bytes(12 << 20, 6);
    repo.backup().stream("big", &data[..]).run().unwrap();
    let snap = repo.find_snapshot("latest", &Default::default()).unwrap();
    let node = repo.find_node(&snap.snapshot.tree, "big").unwrap();
    assert!(node.content.len() >= 3);

    // Flip one byte inside the second chunk's stored blob.
    let loc = repo.locate(&node.content[1]).unwrap();
    let name = loc.pack.to_hex();
    let mut pack = repo.backend().read(ObjectKind::Pack, &name).unwrap();
    pack[loc.entry.offset as usize + loc.entry.length as usize / 2] ^= 0x01;
    repo.backend().delete(ObjectKind::Pack, &name).unwrap();
    repo.backend()
        .write(ObjectKind::Pack, &name, &pack)
        .unwrap();
    drop(repo);

    let repo = open_repo(d.path(), b"pw").unwrap();
    let (back, end) = read_in_pieces(repo.open_file(&snap, "big").unwrap());
    let err = end.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(
        err.get_ref().is_some_and(|e| e.is::<repo_core::Error>()),
        "{err:?}"
    );
    // Only verified chunks were returned: a prefix of the original, which
    // stops before the damaged chunk.
    assert!(back.len() < data.len());
    assert!(back == data[..back.len()], "wrong bytes returned");
}

/// File content naming a tree blob (a forged snapshot) is refused, as by
/// `dump_node` and restore: the reader never returns a directory listing
/// as file data.
#[test]
fn content_naming_a_tree_blob_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let inner = repo_core::Tree {
        nodes: vec![repo_core::Node::new(
            b"x".to_vec(),
            repo_core::NodeKind::File,
        )],
    }
    .encode();
    let ids = repo
        .forge_blobs(&[(repo_core::unstable::blob::BlobKind::Tree, &inner)])
        .unwrap();
    let mut f = repo_core::Node::new(b"f".to_vec(), repo_core::NodeKind::File);
    f.content = ids;
    f.size = inner.len() as u64;
    let (back, end) = read_in_pieces(repo.read_node(&f).unwrap());
    let err = end.unwrap_err();
    assert!(back.is_empty());
    let inner_err = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<repo_core::Error>());
    assert!(
        matches!(inner_err, Some(repo_core::Error::TreeAsContent(_))),
        "{err:?}"
    );
}
