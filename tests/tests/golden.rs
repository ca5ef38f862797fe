//! scratch
#![allow(missing_docs)]

use repo_core::blob::{self, BlobKind};
use repo_core::chunker::{Chunker, ChunkerParams};
use repo_core::compress;
use repo_core::config::Config;
use repo_core::crypto::{self, KdfParams, KeyFile, MasterKey};
use repo_core::encoding;
use repo_core::format::{self, CONFIG_MAGIC, FORMAT_VERSION, INDEX_MAGIC, KEY_MAGIC, PACK_MAGIC, SNAPSHOT_MAGIC};
use repo_core::hash::ContentHasher;
use repo_core::id::{BlobId, IndexId, PackId, RepoId, SnapshotId, TreeId};
use repo_core::pack::{PackEntry, PackHeader};
use repo_core::snapshot::{Snapshot, SnapshotSummary};
use repo_core::tree::{Node, NodeKind, Tree, Xattr};

fn key() -> MasterKey {
    MasterKey::from_bytes([0x11; 32])
}

fn golden_tree() -> Tree {
    let h = ContentHasher::new(&key());
    let mut n = Node::new(b"hello.txt".to_vec(), NodeKind::File);
    n.mode = 0o644;
    n.uid = 1000;
    n.gid = 100;
    n.user = "alice".into();
    n.group = "users".into();
    n.mtime_ns = 1_700_000_000_000_000_000;
    n.ctime_ns = 1_700_000_000_500_000_000;
    n.device = 0x803;
    n.inode = 42;
    n.links = 1;
    n.size = 11;
    n.xattrs = vec![Xattr { name: b"user.k".to_vec(), value: b"v".to_vec() }];
    n.chunker = 0;
    n.content = vec![h.chunk_id(b"hello cairn")];
    Tree { nodes: vec![n] }
}

fn golden_snapshot() -> Snapshot {
    Snapshot {
        time_ns: 1_700_000_000_000_000_000,
        host: "h".into(),
        username: "u".into(),
        paths: vec![b"/srv".to_vec()],
        tags: vec!["t".into()],
        parent: Some(SnapshotId::from_bytes([0x77; 32])),
        tree: TreeId::from_bytes([0x88; 32]),
        program_version: "cairn 0.1.0".into(),
        summary: SnapshotSummary {
            files_new: 1,
            files_changed: 2,
            files_unmodified: 3,
            dirs_new: 4,
            dirs_changed: 5,
            dirs_unmodified: 6,
            data_blobs: 7,
            tree_blobs: 8,
            bytes_read: 9,
            bytes_added: 10,
            bytes_added_packed: 11,
            total_files: 12,
            total_bytes: 13,
            errors: 14,
            duration_ns: 15,
        },
        metadata: vec![("k".into(), "v".into())],
    }
}

fn prefix(magic: &[u8; 8]) -> Vec<u8> {
    let mut v = Vec::new();
    format::write_prefix(&mut v, magic, FORMAT_VERSION);
    v
}

fn golden_pack() -> Vec<u8> {
    let k = key();
    let h = ContentHasher::new(&k);
    let data = b"hello cairn";
    let id = h.chunk_id(data);
    let mut ad = vec![0u8];
    ad.extend_from_slice(id.as_bytes());
    let mut pack = prefix(&PACK_MAGIC);
    let sealed = crypto::seal_with_nonce(k.data_key(), &[0x66; 24], &ad, &compress::compress(data, 0));
    let entry = PackEntry { kind: BlobKind::Data, id, offset: pack.len() as u32, length: sealed.len() as u32, raw_length: data.len() as u32 };
    pack.extend_from_slice(&sealed);
    let header = PackHeader { entries: vec![entry] }.encode();
    let sh = crypto::seal_with_nonce(k.data_key(), &[0x77; 24], b"cairn pack header v1", &compress::compress(&header, 0));
    pack.extend_from_slice(&sh);
    pack.extend_from_slice(&(sh.len() as u32).to_le_bytes());
    pack
}

#[test]
#[ignore]
fn print_vectors() {
    let k = key();
    println!("id_key {}", hex::encode(k.id_key()));
    println!("tree_key {}", hex::encode(k.tree_key()));
    println!("data_key {}", hex::encode(k.data_key()));
    println!("seed {:016x}", k.chunker_seed());
    let h = ContentHasher::new(&k);
    println!("chunk_id {}", h.chunk_id(b"hello cairn"));
    println!("empty tree {} id {}", hex::encode(Tree::default().encode()), h.tree_id(&Tree::default().encode()));
    println!("sealed {}", hex::encode(crypto::seal_with_nonce(&[0x22; 32], &[0x33; 24], b"ad", b"plaintext")));
    let t = golden_tree().encode();
    println!("tree {} len {} id {}", hex::encode(&t), t.len(), h.tree_id(&t));
    let e = PackEntry { kind: BlobKind::Tree, id: BlobId::from_bytes([0xab; 32]), offset: 12, length: 0x0102_0304, raw_length: 0x0a0b_0c0d };
    println!("packheader {}", hex::encode(PackHeader { entries: vec![e] }.encode()));
    let kek = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 }.derive(b"password", &[0x44; 32]).unwrap();
    println!("kek {}", hex::encode(*kek));
    let s = encoding::encode(&golden_snapshot());
    println!("snapshot {} len {}", hex::encode(&s), s.len());
    let p = golden_pack();
    println!("pack {} len {} id {}", hex::encode(&p), p.len(), PackId::hash_of(&p));
    println!("{:?}", PackHeader::from_pack(k.data_key(), &p));
    let _ = (CONFIG_MAGIC, INDEX_MAGIC, KEY_MAGIC, SNAPSHOT_MAGIC, RepoId::from_bytes([0; 32]), IndexId::from_bytes([0; 32]), Config::new, KeyFile::decode, blob::open_file, Chunker::new, ChunkerParams::SMALL);
    println!("node size {}", std::mem::size_of::<Node>());
}


fn xorshift_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect()
}

#[test]
#[ignore]
fn print_more() {
    let k = key();
    let data = xorshift_bytes(1 << 20);
    println!("input hash {}", PackId::hash_of(&data));
    for (name, p, len) in [("small", ChunkerParams::SMALL, 1usize << 20), ("tiny", ChunkerParams::TINY, 1 << 18), ("default", ChunkerParams::DEFAULT, 8 << 20)] {
        let data = xorshift_bytes(len);
        let c = Chunker::new(p, k.chunker_seed()).unwrap();
        let lens: Vec<String> = c.split_slice(&data).map(|s| s.len().to_string()).collect();
        println!("{name} {}", lens.join(","));
    }
    // key file
    let kek = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 }.derive(b"password", &[0x44; 32]).unwrap();
    let header = (RepoId::from_bytes([0x55; 32]), 1_700_000_000_000_000_000i64, String::from("h"), String::from("u"), KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 }, [0x44u8; 32]);
    let mut ad = prefix(&KEY_MAGIC);
    ad.extend_from_slice(&encoding::encode(&header));
    let sealed = crypto::seal_with_nonce(&kek, &[0x99; 24], &ad, &[0x11; 32]);
    let mut kf = prefix(&KEY_MAGIC);
    kf.extend_from_slice(&encoding::encode(&(&header, &sealed)));
    println!("keyfile {} len {}", hex::encode(&kf), kf.len());
    let dk = KeyFile::decode(&kf).unwrap().unlock(b"password").unwrap();
    assert_eq!(dk.data_key(), k.data_key());
    // config
    let c = Config::new(RepoId::from_bytes([0x55; 32]), 1_700_000_000_000_000_000);
    let mut cf = prefix(&CONFIG_MAGIC);
    cf.extend_from_slice(c.repo_id.as_bytes());
    let body = encoding::encode(&c);
    println!("config body len {}", body.len());
    let s = crypto::seal_with_nonce(k.data_key(), &[0xaa; 24], &cf, &compress::compress(&body, 0));
    cf.extend_from_slice(&s);
    println!("config {} len {}", hex::encode(&cf), cf.len());
    assert_eq!(Config::from_file(k.data_key(), &cf).unwrap(), c);
    // index
    let p = golden_pack();
    let hdr = PackHeader::from_pack(k.data_key(), &p).unwrap();
    let ib = (vec![(PackId::hash_of(&p), hdr.entries.clone())], vec![IndexId::from_bytes([0x99; 32])]);
    let body = encoding::encode(&ib);
    println!("index body {} len {}", hex::encode(&body), body.len());
    let mut f = prefix(&INDEX_MAGIC);
    let s = crypto::seal_with_nonce(k.data_key(), &[0xbb; 24], &f.clone(), &compress::compress(&body, 0));
    f.extend_from_slice(&s);
    println!("index file {} len {} id {}", hex::encode(&f), f.len(), IndexId::hash_of(&f));
    // snapshot file
    let body = encoding::encode(&golden_snapshot());
    let mut f = prefix(&SNAPSHOT_MAGIC);
    let s = crypto::seal_with_nonce(k.data_key(), &[0xcc; 24], &f.clone(), &compress::compress(&body, 0));
    f.extend_from_slice(&s);
    println!("snapshot file len {} id {}", f.len(), SnapshotId::hash_of(&f));
    assert_eq!(Snapshot::from_file(k.data_key(), &f).unwrap(), golden_snapshot());
    let _ = blob::open_file;
}
