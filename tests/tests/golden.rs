//! Golden vectors of the on-disk format (SPEC §20): version 1, and (n) for
//! the dictionaries of version 2.
//!
//! Each test recomputes one vector from fixed inputs and compares it with a
//! hex literal; `spec_prints_every_vector` checks that SPEC.md prints the same
//! literals, so the spec and the code cannot drift apart. A failing vector
//! means the format changed: that needs a new format version (SPEC §19), not
//! a new literal.
//!
//! Random nonces and salts are replaced by fixed bytes through
//! `crypto::seal_with_nonce`; everything else goes through the public API.

use std::io;

use cairn_testkit::WEAK_KDF;
use cairn_testkit::rng::XorShift;
use repo_core::unstable::blob::{self, BlobKind};
use repo_core::unstable::chunker::{Chunker, ChunkerParams};
use repo_core::unstable::compress;
use repo_core::unstable::config::{Config, ContentKeys};
use repo_core::unstable::crypto::{self, CryptoError, KdfParams, KeyFile, MasterKey};
use repo_core::unstable::encoding;
use repo_core::unstable::format::{
    self, CONFIG_MAGIC, COPY_VERSION, DICT_MAGIC, DICTIONARY_VERSION, FILE_PREFIX_LEN,
    FILE_VERSION, FORMAT_VERSION, INDEX_MAGIC, KEY_MAGIC, PACK_MAGIC, REFERENCES_VERSION,
    SEAL_OVERHEAD, SNAPSHOT_MAGIC,
};
use repo_core::unstable::hash::ContentHasher;
use repo_core::unstable::id::{BlobId, DictId, IndexId, PackId, RepoId, SnapshotId, TreeId};
use repo_core::unstable::index::{IndexFile, IndexPack, PackReferences};
use repo_core::unstable::pack::{DeltaRefs, PackEntry, PackHeader};
use repo_core::unstable::snapshot::{Snapshot, SnapshotSummary};
use repo_core::unstable::tree::{Node, NodeKind, Tree, Xattr};
use repo_core::unstable::{KdfDerive as _, SnapshotFile as _};

// --- §20 (a) key derivation -------------------------------------------------
const CONTEXT_CHUNK_ID: &str = "cairn 2026-11 chunk id key v1";
const CONTEXT_TREE_ID: &str = "cairn 2026-11 tree id key v1";
const CONTEXT_CHUNKER_SEED: &str = "cairn 2026-11 chunker gear seed v1";
const CONTEXT_DATA: &str = "cairn 2026-11 data encryption key v1";
const A_ID_KEY: &str = "09c64287bb090f75d106f7ee90deaa6a82c64e79b0ede0b990e47510c6501a37";
const A_TREE_KEY: &str = "2ac72fa9aef687838766176cd6b68a4425e4074e97c68ec4ec9ffa03a4cab9fc";
const A_DATA_KEY: &str = "eca2a356b01ff988eab17fd679007e2220162f55876631b6f5d5de1e3e86221a";
const A_CHUNKER_SEED: &str = "0xf787b841e596b526";

// --- (b) blob ids ---------------------------------------------------------------
const B_CHUNK_ID: &str = "b95bb5354e164b00b2e673e91d65546ca64c38c3fb586cc7413faaee99a3ff75";
const B_EMPTY_TREE_ID: &str = "b373805347e9eb69cf454e196a6e54a4e82a5d191ea278da5cae0ecd3c821158";

// --- (c) AEAD -------------------------------------------------------------------
const C_SEALED: &str = "333333333333333333333333333333333333333333333333e2964504abb000fe\
                        d41fbc35eb6b8b7287f1d5dbab6678ea10";

// --- (d) tree encoding ----------------------------------------------------------
const D_TREE: &str = "0100000000000000090000000000000068656c6c6f2e74787400a4010000e803\
                      0000640000000500000000000000616c69636505000000000000007573657273\
                      00002a36fe9c97170065f753fe9c971703080000000000002a00000000000000\
                      01000000000000000b0000000000000000000000000000000000000000000000\
                      01000000000000000600000000000000757365722e6b01000000000000007600\
                      0100000000000000b95bb5354e164b00b2e673e91d65546ca64c38c3fb586cc7\
                      413faaee99a3ff7500";
const D_TREE_ID: &str = "5c51c1f7c12c0eeed0da37d138ceeb48c831729f42963befcba254a640bad820";

// --- (e) pack header ------------------------------------------------------------
const E_PACK_HEADER: &str = "0100000001ababababababababababababababababababababababababababab\
                             ababababab0c000000040302010d0c0b0a";

// --- (f) key-encryption key -----------------------------------------------------
const F_KEK: &str = "b4d1d75f9c2d1d22d10d3169173f3ad0cacee7fe5334ec954f7609f25e4c4615";

// --- (g) snapshot body ----------------------------------------------------------
const G_SNAPSHOT: &str = "00002a36fe9c9717010000000000000068010000000000000075010000000000\
                          000004000000000000002f737276010000000000000001000000000000007401\
                          7777777777777777777777777777777777777777777777777777777777777777\
                          8888888888888888888888888888888888888888888888888888888888888888\
                          0b00000000000000636169726e20302e312e3001000000000000000200000000\
                          0000000300000000000000040000000000000005000000000000000600000000\
                          0000000700000000000000080000000000000009000000000000000a00000000\
                          0000000b000000000000000c000000000000000d000000000000000e00000000\
                          0000000f00000000000000010000000000000001000000000000006b01000000\
                          0000000076";

// --- (h) a whole pack -----------------------------------------------------------
const H_PACK: &str = "434149524e504b1a010000006666666666666666666666666666666666666666\
                      6666666673d722370862d0cd664cbeadfbbe761a951fed88229c6a68f31b194a\
                      7777777777777777777777777777777777777777777777775aab55beb2ac7c64\
                      f11149e7b91063574094df19739746d600b63a07eec57df5f6e31a873bf45fa3\
                      7f5633aaeadfd44aae91dd26d45dd0016cc1ca1fa298dca59d735a000000";
const H_PACK_ID: &str = "b100222a641913622fd03a3af9ab8a21ac18be8e6b4bfb9d3589a5afe3c288f2";

// --- (i) a key file -------------------------------------------------------------
const I_KEY_FILE: &str = "434149524e4b591a010000005555555555555555555555555555555555555555\
                          55555555555555555555555500002a36fe9c9717010000000000000068010000\
                          0000000000754000000001000000010000004444444444444444444444444444\
                          4444444444444444444444444444444444444800000000000000999999999999\
                          9999999999999999999999999999999999990c559dfd091fd1fba6a33ede6de7\
                          a0c473b88eeed972ffa9d97d2578a45e1772bd9cd7f39106eee3485be56fb145\
                          aa81";

// --- (j) a config file ----------------------------------------------------------
const J_CONFIG_FILE: &str = "434149524e43461a010000005555555555555555555555555555555555555555\
                             555555555555555555555555aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\
                             aaaaaaaaa122237e2526743cd5a33a158a3a105ee91261415aff57b5f92d4254\
                             d86090ae83ef9b41956187d32c069aa5026484fea58a24215f182d91a5e14c75\
                             5d6b36aa44378e35da913ead86444c8dc9e3bd4a4505f296233cb5f4829a8840\
                             873901ab454c4250d291d0f037f1a22265cb344d44361401a8e83d7a38e2bd9f\
                             4dd2831b8d7e25363665a79ceacc93c3f89dd5123e51064518a3330b73";

// --- (k) an index file ----------------------------------------------------------
const K_INDEX_BODY: &str = "0100000000000000b100222a641913622fd03a3af9ab8a21ac18be8e6b4bfb9d\
                            3589a5afe3c288f2010000000000000000b95bb5354e164b00b2e673e91d6554\
                            6ca64c38c3fb586cc7413faaee99a3ff750c000000340000000b000000010000\
                            0000000000999999999999999999999999999999999999999999999999999999\
                            9999999999";
const K_INDEX_FILE: &str = "434149524e49581a01000000bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\
                            bbbbbbbbdfd2edf0fb867aa3c3600b732fb429b457bdab9c94e10cd09c52341e\
                            69d04323457fd88801c5008f101da4fbb27d79d32c70e29fba2091ad2acf3077\
                            97aac9c37493ace3e7641bf6ee70c3505589fe8bb8ea717a7f32196bbc79a9bc\
                            30125a0e847b3875b1d90186585724de7ed3146595c69ae37d8abd2a55e450e2\
                            20021149f37007a9ef20bff16bfc42e256e8c3d98766f6cbda19";
const K_INDEX_ID: &str = "38754c0afae136368bc7d95f14eda62b96c6fd4a70121fdefdffbb304c739206";

// --- (l) a snapshot file (346 bytes: only its id is printed) --------------------
const L_SNAPSHOT_FILE_ID: &str = "fb92bfe3d9cdda370dd4b71fd394161186a7f2a67192868e4bea732da4015c01";

// --- (o) a copied snapshot (§10, version 3) -----------------------------------------
/// Appended to the body of (g): `Some(original)`, the original `99…99`.
const O_ORIGINAL_TAIL: &str = "01999999999999999999999999999999999999999999999999999999999999\
                               9999";
const O_COPY_SNAPSHOT_FILE_ID: &str =
    "5f77338c833a5cc220c882239c9410975e007379adefb6aa5260cdb06e1b6e02";

// --- (p) a config with shared content keys (§5, version 3) ---------------------------
const CONTEXT_CONTENT_FINGERPRINT: &str = "cairn 2026-12 content keys fingerprint v3";
const P_CONFIG_V3_FILE: &str = "434149524e43461a030000005656565656565656565656565656565656565656\
                                565656565656565656565656abababababababababababababababababababab\
                                ababababf92320440a3937ef33ff5a63a63d84ce94dd3798674b5c91c2dddba8\
                                a4c157af0d8ab6092d83ab7780fa0a7e40b279cdcd7b838e4be8c972fc772653\
                                189fcedc6d8bc08b1540e90514b74968dbdf793e4efaef09af179eae0372d176\
                                fde7398f70bf6f3c1bef74b4e6ecf01716765331df6a8e3c8d4c6318918abac5\
                                eafc543b94f574d5d257b3e23e8bf8f46088d97a56ed824e31ac059f52a424ce\
                                c77ab795a9618cb10ec5137c8349a11d653ea15a466653c0ceb1db78531be9c5\
                                ec67d962d500e4bf91da29fbdd61d1343e915b9ba341a90d2dc32bb7f2f1c4ba\
                                951b9411c948";
const P_CONTENT_FINGERPRINT: &str = "a2773233161313a6";

// --- (m) chunk boundaries ---------------------------------------------------------
const M_INPUT_1MIB_HASH: &str = "4d4cc0193f5989250244730b4bf1a6b7489baec13582c78520d220c30325af33";
const M_CHUNKS_SMALL: &str =
    "49518,60991,36308,46665,53874,77857,84939,18245,95225,30350,132798,35410,47000,95820,183576";
const M_CHUNKS_TINY: &str =
    "29654,16450,42725,4822,16416,4344,19141,12260,43751,34239,23554,9751,5037";
const M_CHUNKS_DEFAULT: &str = "1492952,1629127,1562175,960663,1059256,548206,1136229";

// --- (n) a dictionary and a blob compressed with it (§6.4, version 2) --------------
const CONTEXT_DICT_ID: &str = "cairn 2026-12 dictionary id key v2";
const N_DICT_KEY: &str = "fc6eaa9d18bfb66cd304c3da1ba5e24bc2603869f5b2743040c48c77b251599c";
/// 256 bytes trained by zstd 1.5.7 on 200 lines like `N_PLAIN`; pinned, not retrained.
const N_DICT: &str = "37a430ec77e18e1e1510e00ae9ffffffffffffc61142f64e5236c00bad057305\
                      000000c8b12c00000004000011000f000080128029000000000400231a00d103\
                      00000f21070000008900000000000024b21b0000000000000000000000000000\
                      0001000000040000000800000065727665725d0a686f7374203d206e6f646535\
                      2e6578616d706c652e6f72670a706f7274203d20383030340a6c6f675f6c6565\
                      727665725d0a686f7374203d206e6f6465302e6578616d706c652e6f72670a70\
                      6f7274203d20383030320a6c6f675f6c65727665725d0a686f7374203d206e6f\
                      646531322e6578616d706c652e6f72670a706f7274203d20383030330a6c6f67";
const N_DICT_ID: &str = "10142272a906d54622fff7559f459d94de2069d04a49519144c52bd0fa377bfe";
const N_DICT_FILE: &str = "434149524e44431a02000000dddddddddddddddddddddddddddddddddddddddd\
                           dddddddda065a6fe23de28eca17f637728ef056bb3d56a3be46b5243431a0b1e\
                           05e47ca8174203cdae19b1c83594f6225bd84b0a6a69738754f6637cc6b93b8c\
                           db26c97f16fafb837727dc53311372ed0de2cabb20f26d5feec391b4ed7b11ae\
                           c2069418425ba4398d3cb0ca3d67bed6c78fa5f5b9331885ecd397cbdd902190\
                           1730d1652383a37bb44c8f9e9f1dedb8a95fed5c024d5a8d34e90943a7ba459c\
                           0718c0170ea782e7a7f5adbc00e7b4ae4a43caa18742d793cb3dd470a387bb1b\
                           f10d34e90fac13a0e29697a9aa5d69032d6cf67d6e2e0525f3e304249c506781\
                           0c6868d0794030406b0f46bac485d40784211a2e8d940e7d77f37031831cc4d7\
                           7bb9fb689111a2ae05d38666515866d37c772cfda2";
const N_PLAIN: &str = "[server]\nhost = node5.example.org\nport = 8004\nlog_level = info\n";
const N_PAYLOAD: &str =
    "0210142272a906d54628b52ffd203fbd0000685b7376656c203d20696e666f0a02fc1816808a0bfc7f";
const N_SEALED_BLOB: &str = "cccccccccccccccccccccccccccccccccccccccccccccccc1568b9498de794bd\
                             9bdd04a7ad7f1695f918521cd3c8544f3e3aacb86c1f57b9e771338e3d4a0f5b\
                             d27992dbc1aae561410161efbd13b2a09d";

// --- magics (§2) -----------------------------------------------------------------
const MAGIC_CONFIG: &str = "434149524e43461a";
const MAGIC_KEY: &str = "434149524e4b591a";
const MAGIC_PACK: &str = "434149524e504b1a";
const MAGIC_INDEX: &str = "434149524e49581a";
const MAGIC_SNAPSHOT: &str = "434149524e534e1a";
const MAGIC_DICT: &str = "434149524e44431a";
const MAGIC_WAL: &str = "434149524e574c1a";
const PACK_HEADER_AD: &str = "cairn pack header v1";

/// Every literal SPEC.md must print (compared with whitespace removed).
const VECTORS: &[(&str, &str)] = &[
    ("CONTEXT_CHUNK_ID", CONTEXT_CHUNK_ID),
    ("CONTEXT_TREE_ID", CONTEXT_TREE_ID),
    ("CONTEXT_CHUNKER_SEED", CONTEXT_CHUNKER_SEED),
    ("CONTEXT_DATA", CONTEXT_DATA),
    ("A_ID_KEY", A_ID_KEY),
    ("A_TREE_KEY", A_TREE_KEY),
    ("A_DATA_KEY", A_DATA_KEY),
    ("A_CHUNKER_SEED", A_CHUNKER_SEED),
    ("B_CHUNK_ID", B_CHUNK_ID),
    ("B_EMPTY_TREE_ID", B_EMPTY_TREE_ID),
    ("C_SEALED", C_SEALED),
    ("D_TREE", D_TREE),
    ("D_TREE_ID", D_TREE_ID),
    ("E_PACK_HEADER", E_PACK_HEADER),
    ("F_KEK", F_KEK),
    ("G_SNAPSHOT", G_SNAPSHOT),
    ("H_PACK", H_PACK),
    ("H_PACK_ID", H_PACK_ID),
    ("I_KEY_FILE", I_KEY_FILE),
    ("J_CONFIG_FILE", J_CONFIG_FILE),
    ("K_INDEX_BODY", K_INDEX_BODY),
    ("K_INDEX_FILE", K_INDEX_FILE),
    ("K_INDEX_ID", K_INDEX_ID),
    ("L_SNAPSHOT_FILE_ID", L_SNAPSHOT_FILE_ID),
    ("M_INPUT_1MIB_HASH", M_INPUT_1MIB_HASH),
    ("M_CHUNKS_SMALL", M_CHUNKS_SMALL),
    ("M_CHUNKS_TINY", M_CHUNKS_TINY),
    ("M_CHUNKS_DEFAULT", M_CHUNKS_DEFAULT),
    ("MAGIC_CONFIG", MAGIC_CONFIG),
    ("MAGIC_KEY", MAGIC_KEY),
    ("MAGIC_PACK", MAGIC_PACK),
    ("MAGIC_INDEX", MAGIC_INDEX),
    ("MAGIC_SNAPSHOT", MAGIC_SNAPSHOT),
    ("MAGIC_DICT", MAGIC_DICT),
    ("MAGIC_WAL", MAGIC_WAL),
    ("CONTEXT_DICT_ID", CONTEXT_DICT_ID),
    ("N_DICT_KEY", N_DICT_KEY),
    ("N_DICT", N_DICT),
    ("N_DICT_ID", N_DICT_ID),
    ("N_DICT_FILE", N_DICT_FILE),
    ("N_PAYLOAD", N_PAYLOAD),
    ("N_SEALED_BLOB", N_SEALED_BLOB),
    ("PACK_HEADER_AD", PACK_HEADER_AD),
    ("O_ORIGINAL_TAIL", O_ORIGINAL_TAIL),
    ("O_COPY_SNAPSHOT_FILE_ID", O_COPY_SNAPSHOT_FILE_ID),
    ("CONTEXT_CONTENT_FINGERPRINT", CONTEXT_CONTENT_FINGERPRINT),
    ("P_CONFIG_V3_FILE", P_CONFIG_V3_FILE),
    ("P_CONTENT_FINGERPRINT", P_CONTENT_FINGERPRINT),
    ("CONTEXT_WAL", CONTEXT_WAL),
    ("Q_WAL_KEY", Q_WAL_KEY),
    ("Q_CLUSTER", Q_CLUSTER),
    ("Q_MAC", Q_MAC),
    ("Q_OBJECT_NAME", Q_OBJECT_NAME),
    ("Q_OBJECT", Q_OBJECT),
    ("T_PACK_HEADER", T_PACK_HEADER),
    ("T_INDEX_BODY", T_INDEX_BODY),
];

// --- (t) delta references (version 5, §6.6, §7.2, §8) -------------------------
const T_PACK_HEADER: &str = "0200000000212121212121212121212121212121212121212121212121212121\
                             21212121210c000000640000002c010000002222222222222222222222222222\
                             22222222222222222222222222222222222270000000280000002c0100000100\
                             0000222222222222222222222222222222222222222222222222222222222222\
                             2222012121212121212121212121212121212121212121212121212121212121\
                             212121";
const T_INDEX_BODY: &str = "0100000000000000232323232323232323232323232323232323232323232323\
                            2323232323232323020000000000000000212121212121212121212121212121\
                            21212121212121212121212121212121210c000000640000002c010000002222\
                            2222222222222222222222222222222222222222222222222222222222227000\
                            0000280000002c01000000000000000000000100000000000000232323232323\
                            2323232323232323232323232323232323232323232323232323010000000000\
                            0000222222222222222222222222222222222222222222222222222222222222\
                            2222010000000000000021212121212121212121212121212121212121212121\
                            21212121212121212121";

// --- (q) archived WAL (§28) ---------------------------------------------------
const CONTEXT_WAL: &str = "cairn 2026-12 wal archive key v1";
const Q_WAL_KEY: &str = "962df8c536601fa75c7923f24baa1cc00cef04249aa3e79c3346481a57f5994f";
const Q_SYSID: u64 = 7_301_234_567_890_123_456;
const Q_CLUSTER: &str = "32df67b1cf257f10";
const Q_HISTORY: &[u8] = b"1\t0/3000000\tno recovery target specified\n";
const Q_MAC: &str = "983dcf5d02c1e63470563a4df300fc8bf7d88086f63f9d94207497bc88ae95d8";
const Q_OBJECT_NAME: &str = "32df67b1cf257f10-00000002_history";
const Q_OBJECT: &str = "434149524e574c1a01000000983dcf5d02c1e63470563a4df300fc8bf7d88086\
                        f63f9d94207497bc88ae95d84444444444444444444444444444444444444444\
                        4444444492ebce9850b97f588f0ed0d9371a4c0b9f62f0b717a89ebe66eb213e\
                        5e708976c2da5e0ac3f17a197691eca173e6c0b5eddc16cc136cf8fc3d9f";

fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(squash(s)).expect("vector literal is hex")
}

fn key() -> MasterKey {
    MasterKey::from_bytes([0x11; 32])
}

fn prefix(magic: &[u8; format::MAGIC_LEN]) -> Vec<u8> {
    let mut v = Vec::new();
    format::write_prefix(&mut v, magic, FILE_VERSION);
    v
}

/// `prefix || seal_with_nonce(key, AD = prefix, raw marker || body)`: a
/// §2.3 sealed file with a fixed nonce and no compression.
fn sealed_file(magic: &[u8; format::MAGIC_LEN], key: &[u8; 32], nonce: u8, body: &[u8]) -> Vec<u8> {
    let mut f = prefix(magic);
    let sealed =
        crypto::seal_with_nonce(key, &[nonce; 24], &f.clone(), &compress::compress(body, 0));
    f.extend_from_slice(&sealed);
    f
}

/// (d): one regular file, every field set.
fn golden_tree() -> Tree {
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
    n.rdev = 0;
    n.xattrs = vec![Xattr {
        name: b"user.k".to_vec(),
        value: b"v".to_vec(),
    }];
    n.chunker = 0;
    n.content = vec![ContentHasher::new(&key()).chunk_id(b"hello cairn")];
    Tree { nodes: vec![n] }
}

/// (g): every field set, counters 1..=15 in declaration order.
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
        original: None,
    }
}

/// (e): one tree entry with distinct byte patterns in every field.
fn golden_entry() -> PackEntry {
    PackEntry {
        kind: BlobKind::Tree,
        id: BlobId::from_bytes([0xab; 32]),
        offset: 12,
        length: 0x0102_0304,
        raw_length: 0x0a0b_0c0d,
    }
}

/// (h): the data blob `hello cairn`, stored raw, then the header.
fn golden_pack() -> Vec<u8> {
    let k = key();
    let data = b"hello cairn";
    let id = ContentHasher::new(&k).chunk_id(data);
    let mut blob_ad = vec![BlobKind::Data.to_byte()];
    blob_ad.extend_from_slice(id.as_bytes());
    let mut pack = prefix(&PACK_MAGIC);
    let sealed = crypto::seal_with_nonce(
        k.data_key(),
        &[0x66; 24],
        &blob_ad,
        &compress::compress(data, 0),
    );
    let entry = PackEntry {
        kind: BlobKind::Data,
        id,
        offset: pack.len() as u32,
        length: sealed.len() as u32,
        raw_length: data.len() as u32,
    };
    pack.extend_from_slice(&sealed);
    let header = PackHeader {
        entries: vec![entry],
        references: Vec::new(),
    }
    .encode();
    let sealed_header = crypto::seal_with_nonce(
        k.data_key(),
        &[0x77; 24],
        PACK_HEADER_AD.as_bytes(),
        &compress::compress(&header, 0),
    );
    pack.extend_from_slice(&sealed_header);
    pack.extend_from_slice(&(sealed_header.len() as u32).to_le_bytes());
    pack
}

/// (i): the key-file header fields, in encoding order. `KeyFileHeader` is
/// not reachable from outside repo-core, so the same fields are encoded as a
/// tuple, which bincode encodes identically.
type KeyHeaderFields = (RepoId, i64, String, String, KdfParams, [u8; 32]);

fn golden_key_header() -> KeyHeaderFields {
    (
        RepoId::from_bytes([0x55; 32]),
        1_700_000_000_000_000_000,
        "h".into(),
        "u".into(),
        WEAK_KDF,
        [0x44; 32],
    )
}

fn golden_key_file() -> Vec<u8> {
    let header = golden_key_header();
    let kek = WEAK_KDF.derive(b"password", &header.5).unwrap();
    let mut ad = prefix(&KEY_MAGIC);
    ad.extend_from_slice(&encoding::encode(&header));
    let sealed_master = crypto::seal_with_nonce(&kek, &[0x99; 24], &ad, &[0x11; 32]);
    let mut f = prefix(&KEY_MAGIC);
    f.extend_from_slice(&encoding::encode(&(&header, &sealed_master)));
    f
}

/// A version-1 config (which this build still writes for `--no-dictionary`).
fn golden_config() -> Config {
    let mut c = Config::new(RepoId::from_bytes([0x55; 32]), 1_700_000_000_000_000_000);
    c.version = 1;
    c
}

/// (j): `prefix || repo id || seal(AD = the 44 bytes before it)`.
fn golden_config_file() -> Vec<u8> {
    let c = golden_config();
    let mut f = prefix(&CONFIG_MAGIC);
    f.extend_from_slice(c.repo_id.as_bytes());
    let sealed = crypto::seal_with_nonce(
        key().data_key(),
        &[0xaa; 24],
        &f.clone(),
        &compress::compress(&c.encode_body(), 0),
    );
    f.extend_from_slice(&sealed);
    f
}

/// (p): a version-3 config holding content keys shared with another
/// repository (`init --copy-chunker-params`).
fn golden_config_v3() -> Config {
    let mut c = Config::new(RepoId::from_bytes([0x56; 32]), 1_700_000_000_000_000_000);
    c.version = 3;
    c.content_keys = Some(ContentKeys {
        id_key: [0x21; 32],
        tree_key: [0x22; 32],
        chunker_seed: 0x2323_2323_2323_2323,
    });
    c
}

fn golden_config_v3_file() -> Vec<u8> {
    let c = golden_config_v3();
    let mut f = Vec::new();
    format::write_prefix(&mut f, &CONFIG_MAGIC, 3);
    f.extend_from_slice(c.repo_id.as_bytes());
    let sealed = crypto::seal_with_nonce(
        key().data_key(),
        &[0xab; 24],
        &f.clone(),
        &compress::compress(&c.encode_body(), 0),
    );
    f.extend_from_slice(&sealed);
    f
}

/// (k): the pack of (h), superseding index file `99…99`.
fn golden_index() -> IndexFile {
    let pack = unhex(H_PACK);
    IndexFile {
        packs: vec![IndexPack {
            id: PackId::hash_of(&pack),
            entries: PackHeader::from_pack(&key().data_keys(), &pack)
                .unwrap()
                .entries,
        }],
        supersedes: vec![IndexId::from_bytes([0x99; 32])],
        references: Vec::new(),
    }
}

/// (m): xorshift64 (13, 7, 17) from 0x9e3779b97f4a7c15, top byte of each state.
fn xorshift_bytes(n: usize) -> Vec<u8> {
    XorShift::new(0x9e37_79b9_7f4a_7c15).top_bytes(n)
}

fn chunk_lengths(params: ChunkerParams, len: usize) -> String {
    let data = xorshift_bytes(len);
    let c = Chunker::new(params, key().chunker_seed()).unwrap();
    let lens: Vec<String> = c.split_slice(&data).map(|s| s.len().to_string()).collect();
    lens.join(",")
}

#[test]
fn a_key_derivation() {
    let k = key();
    assert_eq!(hex::encode(k.id_key()), A_ID_KEY);
    assert_eq!(hex::encode(k.tree_key()), A_TREE_KEY);
    assert_eq!(hex::encode(k.data_key()), A_DATA_KEY);
    assert_eq!(format!("{:#018x}", k.chunker_seed()), A_CHUNKER_SEED);
    // The context strings printed in SPEC §3.1 are the ones the code uses.
    let m = [0x11; 32];
    assert_eq!(blake3::derive_key(CONTEXT_CHUNK_ID, &m), *k.id_key());
    assert_eq!(blake3::derive_key(CONTEXT_TREE_ID, &m), *k.tree_key());
    assert_eq!(blake3::derive_key(CONTEXT_DATA, &m), *k.data_key());
    let seed = blake3::derive_key(CONTEXT_CHUNKER_SEED, &m);
    assert_eq!(
        u64::from_le_bytes(seed[..8].try_into().unwrap()),
        k.chunker_seed()
    );
}

#[test]
fn b_blob_ids() {
    let k = key();
    let h = ContentHasher::new(&k);
    assert_eq!(h.chunk_id(b"hello cairn").to_hex(), B_CHUNK_ID);
    assert_eq!(Tree::default().encode(), [0u8; 8]);
    assert_eq!(
        h.tree_id(&Tree::default().encode()).to_hex(),
        B_EMPTY_TREE_ID
    );
    assert_eq!(
        *h.chunk_id(b"hello cairn").as_bytes(),
        *blake3::keyed_hash(k.id_key(), b"hello cairn").as_bytes()
    );
    // Data and tree ids of the same bytes differ (different keys).
    assert_ne!(h.chunk_id(&[0; 8]), h.tree_id(&[0; 8]).into());
}

#[test]
fn c_aead_and_tamper() {
    let sealed = crypto::seal_with_nonce(&[0x22; 32], &[0x33; 24], b"ad", b"plaintext");
    assert_eq!(hex::encode(&sealed), squash(C_SEALED));
    let v = unhex(C_SEALED);
    assert_eq!(v.len(), 24 + b"plaintext".len() + 16);
    assert_eq!(crypto::open(&[0x22; 32], b"ad", &v).unwrap(), b"plaintext");
    for i in 0..v.len() {
        let mut t = v.clone();
        t[i] ^= 0x01;
        assert_eq!(
            crypto::open(&[0x22; 32], b"ad", &t),
            Err(CryptoError::AuthFailed),
            "byte {i}"
        );
    }
    assert_eq!(
        crypto::open(&[0x22; 32], b"ae", &v),
        Err(CryptoError::AuthFailed)
    );
    assert_eq!(
        crypto::open(&[0x22; 32], b"ad", &v[..39]),
        Err(CryptoError::Truncated)
    );
}

#[test]
fn d_tree_encoding() {
    let t = golden_tree();
    let bytes = t.encode();
    assert_eq!(hex::encode(&bytes), squash(D_TREE));
    assert_eq!(
        ContentHasher::new(&key()).tree_id(&bytes).to_hex(),
        D_TREE_ID
    );
    assert_eq!(Tree::decode(&unhex(D_TREE)).unwrap(), t);
    // One trailing byte, or a cut, is refused.
    let mut long = unhex(D_TREE);
    long.push(0);
    assert!(Tree::decode(&long).is_err());
    assert!(Tree::decode(&unhex(D_TREE)[..100]).is_err());
}

#[test]
fn e_pack_header() {
    let h = PackHeader {
        entries: vec![golden_entry()],
        references: Vec::new(),
    };
    assert_eq!(hex::encode(h.encode()), squash(E_PACK_HEADER));
    let blobs_end = 12 + 0x0102_0304;
    assert_eq!(
        PackHeader::decode(&unhex(E_PACK_HEADER), blobs_end).unwrap(),
        h
    );
    assert!(PackHeader::decode(&unhex(E_PACK_HEADER), blobs_end + 1).is_err());
}

#[test]
fn f_kdf() {
    let kek = WEAK_KDF.derive(b"password", &[0x44; 32]).unwrap();
    assert_eq!(hex::encode(*kek), F_KEK);
}

#[test]
fn g_snapshot_body() {
    let s = golden_snapshot();
    let (version, body) = s.encode_body();
    assert_eq!(version, 1, "a snapshot that is no copy keeps version 1");
    assert_eq!(hex::encode(body), squash(G_SNAPSHOT));
    let back = Snapshot::decode_body(1, &unhex(G_SNAPSHOT)).unwrap();
    assert_eq!(back, s);
}

#[test]
fn h_pack() {
    let pack = golden_pack();
    assert_eq!(hex::encode(&pack), squash(H_PACK));
    assert_eq!(PackId::hash_of(&pack).to_hex(), H_PACK_ID);
    let k = key();
    let header = PackHeader::from_pack(&k.data_keys(), &unhex(H_PACK)).unwrap();
    assert_eq!(header.entries.len(), 1);
    let e = header.entries[0];
    assert_eq!(
        (e.kind, e.offset, e.length, e.raw_length),
        (BlobKind::Data, 12, 52, 11)
    );
    let sealed = &pack[e.offset as usize..(e.offset + e.length) as usize];
    let plain = blob::open_blob(
        &k.data_keys(),
        &ContentHasher::new(&k),
        e.kind,
        &e.id,
        sealed,
        e.raw_length,
    )
    .unwrap();
    assert_eq!(plain, b"hello cairn");
    // The trailer is the sealed header's length: 41 + 4 + 45 per entry.
    assert_eq!(
        u32::from_le_bytes(pack[pack.len() - 4..].try_into().unwrap()) as usize,
        SEAL_OVERHEAD + 4 + 45
    );
}

#[test]
fn i_key_file() {
    let f = golden_key_file();
    assert_eq!(hex::encode(&f), squash(I_KEY_FILE));
    let kf = KeyFile::decode(&unhex(I_KEY_FILE)).unwrap();
    let (repo_id, created_ns, host, username, kdf, salt) = golden_key_header();
    assert_eq!(kf.header.repo_id, repo_id);
    assert_eq!(kf.header.created_ns, created_ns);
    assert_eq!(
        (kf.header.host.as_str(), kf.header.username.as_str()),
        (host.as_str(), username.as_str())
    );
    assert_eq!((kf.header.kdf, kf.header.salt), (kdf, salt));
    assert_eq!(kf.encode(), f);
    assert_eq!(kf.unlock(b"password").unwrap().data_key(), key().data_key());
    assert_eq!(
        kf.unlock(b"Password").unwrap_err(),
        CryptoError::WrongPassword
    );
}

#[test]
fn j_config_file() {
    let f = golden_config_file();
    assert_eq!(hex::encode(&f), squash(J_CONFIG_FILE));
    assert_eq!(Config::peek_id(&f).unwrap(), RepoId::from_bytes([0x55; 32]));
    assert_eq!(
        Config::from_file(&key().data_keys(), &unhex(J_CONFIG_FILE)).unwrap(),
        golden_config()
    );
    let mut t = f.clone();
    t[FILE_PREFIX_LEN] ^= 1; // the clear repository id is authenticated
    assert!(Config::from_file(&key().data_keys(), &t).is_err());
}

#[test]
fn k_index_file() {
    let idx = golden_index();
    let (version, body) = idx.encode_versioned();
    assert_eq!(version, FILE_VERSION, "no references: a version-1 file");
    assert_eq!(hex::encode(&body), squash(K_INDEX_BODY));
    let f = sealed_file(&INDEX_MAGIC, key().data_key(), 0xbb, &body);
    assert_eq!(hex::encode(&f), squash(K_INDEX_FILE));
    assert_eq!(IndexId::hash_of(&f).to_hex(), K_INDEX_ID);
    assert_eq!(
        IndexFile::from_file(&key().data_keys(), &unhex(K_INDEX_FILE)).unwrap(),
        idx
    );
    assert_eq!(
        blob::open_file(&INDEX_MAGIC, "index", &key().data_keys(), &f).unwrap(),
        body
    );
    // Index files and snapshots share a key: the magic in the AD keeps them apart.
    let mut as_snapshot = f.clone();
    as_snapshot[..8].copy_from_slice(&SNAPSHOT_MAGIC);
    assert!(
        blob::open_file(
            &SNAPSHOT_MAGIC,
            "snapshot",
            &key().data_keys(),
            &as_snapshot
        )
        .is_err()
    );
}

#[test]
fn l_snapshot_file() {
    let f = sealed_file(
        &SNAPSHOT_MAGIC,
        key().data_key(),
        0xcc,
        &golden_snapshot().encode_body().1,
    );
    assert_eq!(f.len(), 12 + SEAL_OVERHEAD + squash(G_SNAPSHOT).len() / 2);
    assert_eq!(SnapshotId::hash_of(&f).to_hex(), L_SNAPSHOT_FILE_ID);
    assert_eq!(
        Snapshot::from_file(&key().data_keys(), &f).unwrap(),
        golden_snapshot()
    );
}

#[test]
fn o_copied_snapshot() {
    let mut s = golden_snapshot();
    s.original = Some(SnapshotId::from_bytes([0x99; 32]));
    let (version, body) = s.encode_body();
    assert_eq!(version, 3, "a copy is a version-3 snapshot");
    assert_eq!(
        hex::encode(&body),
        squash(G_SNAPSHOT) + &squash(O_ORIGINAL_TAIL),
        "the body of (g), then Some(original)"
    );
    let mut f = Vec::new();
    format::write_prefix(&mut f, &SNAPSHOT_MAGIC, 3);
    let sealed = crypto::seal_with_nonce(
        key().data_key(),
        &[0xcd; 24],
        &f.clone(),
        &compress::compress(&body, 0),
    );
    f.extend_from_slice(&sealed);
    assert_eq!(SnapshotId::hash_of(&f).to_hex(), O_COPY_SNAPSHOT_FILE_ID);
    assert_eq!(Snapshot::from_file(&key().data_keys(), &f).unwrap(), s);
}

#[test]
fn p_config_with_content_keys() {
    let f = golden_config_v3_file();
    assert_eq!(hex::encode(&f), squash(P_CONFIG_V3_FILE));
    assert_eq!(
        Config::from_file(&key().data_keys(), &unhex(P_CONFIG_V3_FILE)).unwrap(),
        golden_config_v3()
    );
    let keys = golden_config_v3().content_keys.unwrap();
    assert_eq!(keys.fingerprint(), P_CONTENT_FINGERPRINT);
    let mut h = blake3::Hasher::new_derive_key(CONTEXT_CONTENT_FINGERPRINT);
    h.update(&[0x21; 32]);
    h.update(&[0x22; 32]);
    h.update(&[0x23; 8]);
    assert_eq!(&h.finalize().to_hex()[..16], P_CONTENT_FINGERPRINT);
    // Its body is the version-2 body (with version 3), then Some(keys).
    let mut v2 = golden_config_v3();
    v2.version = 2;
    v2.content_keys = None;
    let mut want = v2.encode_body();
    want[..4].copy_from_slice(&3u32.to_le_bytes());
    want.push(1);
    want.extend_from_slice(&[0x21; 32]);
    want.extend_from_slice(&[0x22; 32]);
    want.extend_from_slice(&[0x23; 8]);
    assert_eq!(golden_config_v3().encode_body(), want);
}

#[test]
fn m_chunk_boundaries() {
    assert_eq!(
        PackId::hash_of(&xorshift_bytes(1 << 20)).to_hex(),
        M_INPUT_1MIB_HASH
    );
    assert_eq!(chunk_lengths(ChunkerParams::SMALL, 1 << 20), M_CHUNKS_SMALL);
    assert_eq!(chunk_lengths(ChunkerParams::TINY, 1 << 18), M_CHUNKS_TINY);
    assert_eq!(
        chunk_lengths(ChunkerParams::DEFAULT, 8 << 20),
        M_CHUNKS_DEFAULT
    );
    // Streaming through a reader cuts at the same places.
    let data = xorshift_bytes(1 << 20);
    let c = Chunker::new(ChunkerParams::SMALL, key().chunker_seed()).unwrap();
    let mut lens = Vec::new();
    c.stream::<_, io::Error>(&data[..], |ch| {
        lens.push(ch.len().to_string());
        Ok(())
    })
    .unwrap();
    assert_eq!(lens.join(","), M_CHUNKS_SMALL);
}

#[test]
fn magics() {
    for (magic, hex_literal) in [
        (CONFIG_MAGIC, MAGIC_CONFIG),
        (KEY_MAGIC, MAGIC_KEY),
        (PACK_MAGIC, MAGIC_PACK),
        (INDEX_MAGIC, MAGIC_INDEX),
        (SNAPSHOT_MAGIC, MAGIC_SNAPSHOT),
        (DICT_MAGIC, MAGIC_DICT),
        (repo_core::unstable::wal::WAL_MAGIC, MAGIC_WAL),
    ] {
        assert_eq!(hex::encode(magic), hex_literal);
    }
    assert_eq!(
        (
            FORMAT_VERSION,
            FILE_VERSION,
            DICTIONARY_VERSION,
            COPY_VERSION,
            REFERENCES_VERSION,
            FILE_PREFIX_LEN,
            SEAL_OVERHEAD
        ),
        (5, 1, 2, 3, 5, 12, 41)
    );
}

/// (n): dictionary id, dictionary file and a marker-2 blob. The frame was
/// made once by zstd 1.5.7 at level 3; encoders may differ, so only the
/// decoding side is pinned: any reader must turn `N_SEALED_BLOB` back into
/// `N_PLAIN` with `N_DICT`.
#[test]
fn n_dictionary_and_dictionary_blob() {
    let k = key();
    assert_eq!(
        hex::encode(blake3::derive_key(CONTEXT_DICT_ID, &[0x11; 32])),
        N_DICT_KEY
    );
    assert_eq!(hex::encode(k.dict_key()), N_DICT_KEY);
    let dict = unhex(N_DICT);
    repo_core::unstable::dict::validate(&dict).unwrap();
    let h = ContentHasher::new(&k);
    let dict_id = h.dict_id(&dict);
    assert_eq!(dict_id.to_hex(), N_DICT_ID);

    let mut file = Vec::new();
    format::write_prefix(&mut file, &DICT_MAGIC, DICTIONARY_VERSION);
    let sealed = crypto::seal_with_nonce(
        k.data_key(),
        &[0xdd; 24],
        &file.clone(),
        &compress::compress(&dict, 0),
    );
    file.extend_from_slice(&sealed);
    assert_eq!(hex::encode(&file), N_DICT_FILE);
    let opened = repo_core::unstable::dict::from_file(&k.data_keys(), &h, &dict_id, &file).unwrap();
    assert_eq!(opened.bytes(), dict);

    let plain = N_PLAIN.as_bytes();
    let id = h.chunk_id(plain);
    let payload = unhex(N_PAYLOAD);
    assert_eq!(payload[0], compress::MARKER_ZSTD_DICT);
    assert_eq!(payload[1..9], dict_id.as_bytes()[..8]);
    let sealed_blob = crypto::seal_with_nonce(
        k.data_key(),
        &[0xcc; 24],
        &blob::blob_ad(BlobKind::Data, &id),
        &payload,
    );
    assert_eq!(hex::encode(&sealed_blob), N_SEALED_BLOB);

    struct One(std::sync::Arc<compress::Dictionary>);
    impl compress::DictionarySource for One {
        fn dictionary(
            &self,
            r: compress::DictRef,
        ) -> Result<std::sync::Arc<compress::Dictionary>, format::FormatError> {
            assert_eq!(r, self.0.reference());
            Ok(self.0.clone())
        }
    }
    let src = One(std::sync::Arc::new(compress::Dictionary::new(
        DictId::from_bytes(*dict_id.as_bytes()),
        dict.clone(),
    )));
    let raw = plain.len() as u32;
    let got = blob::open_blob_with(
        &k.data_keys(),
        &h,
        BlobKind::Data,
        &id,
        &unhex(N_SEALED_BLOB),
        raw,
        &src,
    )
    .unwrap();
    assert_eq!(got, plain);
    // Without the dictionary the blob cannot be read, and says so.
    assert!(matches!(
        blob::open_blob(&k.data_keys(), &h, BlobKind::Data, &id, &sealed_blob, raw),
        Err(blob::BlobError::Format(
            format::FormatError::Dictionary { .. }
        ))
    ));
    // Today's encoder, for regenerating: prints the payload it would write.
    let mut now = Vec::new();
    compress::compress_into_dict(plain, 3, &src.0, &mut now);
    println!("N_PAYLOAD now: {}", hex::encode(&now));
}

#[test]
fn q_archived_wal() {
    use repo_core::unstable::wal::{self, WalFileName};
    let k = key();
    assert_eq!(blake3::derive_key(CONTEXT_WAL, &[0x11; 32]), *k.wal_key());
    let cluster = wal::cluster_name(k.wal_key(), Q_SYSID);
    let file = WalFileName::parse("00000002.history").unwrap();
    let mac = wal::content_mac(k.wal_key(), &file, Q_HISTORY);
    let name = wal::object_name(&cluster, &file);
    let object = wal::encode_with_nonce(&k.data_keys(), &[0x44; 24], &mac, &name, Q_HISTORY, 0);
    assert_eq!(hex::encode(k.wal_key()), Q_WAL_KEY);
    assert_eq!(cluster, Q_CLUSTER);
    assert_eq!(hex::encode(mac), Q_MAC);
    assert_eq!(name, Q_OBJECT_NAME);
    assert_eq!(hex::encode(&object), squash(Q_OBJECT));
    // Independent of the code: the MAC and cluster as SPEC §28 defines them.
    let mut h = blake3::Hasher::new_keyed(k.wal_key());
    h.update(b"content\0");
    h.update(&16u64.to_le_bytes());
    h.update(b"00000002.history");
    h.update(Q_HISTORY);
    assert_eq!(hex::encode(h.finalize().as_bytes()), Q_MAC);
    let mut h = blake3::Hasher::new_keyed(k.wal_key());
    h.update(b"cluster\0");
    h.update(&Q_SYSID.to_le_bytes());
    assert_eq!(&h.finalize().to_hex()[..16], Q_CLUSTER);
    // prefix || MAC || nonce || raw marker and content, encrypted || tag.
    assert_eq!(&object[..8], b"CAIRNWL\x1a");
    assert_eq!(&object[12..44], &mac);
    assert_eq!(object.len(), 44 + 24 + 1 + Q_HISTORY.len() + 16);
    let mut ad = object[..44].to_vec();
    ad.extend_from_slice(name.as_bytes());
    let plain = crypto::open(k.data_key(), &ad, &object[44..]).unwrap();
    assert_eq!((plain[0], &plain[1..]), (0, Q_HISTORY));
    ad.extend_from_slice(b"x");
    assert!(crypto::open(k.data_key(), &ad, &object[44..]).is_err());
}

#[test]
fn spec_prints_every_vector() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../SPEC.md");
    let spec = squash(&std::fs::read_to_string(path).expect("SPEC.md at the workspace root"));
    let missing: Vec<&str> = VECTORS
        .iter()
        .filter(|(_, v)| !spec.contains(&squash(v)))
        .map(|(name, _)| *name)
        .collect();
    assert!(
        missing.is_empty(),
        "SPEC.md §20 does not print these vectors: {missing:?}"
    );
}

/// (t): two data blobs, `0x21` × 32 (100 sealed bytes at 12, 300 plain)
/// and `0x22` × 32 (40 at 112, 300 plain), the second a delta of the first.
fn golden_delta_pack() -> PackHeader {
    let entry = |id: u8, offset: u32, length: u32| PackEntry {
        kind: BlobKind::Data,
        id: BlobId::from_bytes([id; 32]),
        offset,
        length,
        raw_length: 300,
    };
    PackHeader {
        entries: vec![entry(0x21, 12, 100), entry(0x22, 112, 40)],
        references: vec![DeltaRefs {
            id: BlobId::from_bytes([0x22; 32]),
            refs: vec![BlobId::from_bytes([0x21; 32])],
        }],
    }
}

#[test]
fn t_delta_references() {
    let h = golden_delta_pack();
    assert_eq!(hex::encode(h.encode()), squash(T_PACK_HEADER));
    assert_eq!(PackHeader::decode(&unhex(T_PACK_HEADER), 152).unwrap(), h);
    assert_eq!(h.version(), REFERENCES_VERSION);
    // Builds before version 5 required exactly the entries: the section
    // makes them refuse the header rather than drop it.
    assert_eq!(unhex(T_PACK_HEADER).len(), 4 + 2 * 45 + 4 + 33 + 32);
    // The index file of that pack, id `0x23` × 32, records the same.
    let f = IndexFile {
        packs: vec![IndexPack {
            id: PackId::from_bytes([0x23; 32]),
            entries: h.entries.clone(),
        }],
        supersedes: Vec::new(),
        references: vec![PackReferences {
            pack: PackId::from_bytes([0x23; 32]),
            blobs: h.references.clone(),
        }],
    };
    let (version, body) = f.encode_versioned();
    assert_eq!(version, REFERENCES_VERSION);
    assert_eq!(hex::encode(&body), squash(T_INDEX_BODY));
    assert_eq!(
        IndexFile::decode_versioned(REFERENCES_VERSION, &body).unwrap(),
        f
    );
    // A version-1 reading of it fails (trailing bytes), and a version-5
    // file whose references name a blob of no pack in it is refused.
    assert!(IndexFile::decode_versioned(FILE_VERSION, &body).is_err());
    let mut stray = f.clone();
    stray.references[0].blobs[0].id = BlobId::from_bytes([0x24; 32]);
    let (_, stray) = stray.encode_versioned();
    assert!(IndexFile::decode_versioned(REFERENCES_VERSION, &stray).is_err());
}
