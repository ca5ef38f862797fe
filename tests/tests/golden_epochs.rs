//! Test vectors (r) of SPEC §20 for data-key epochs (§29): an epoch's
//! sealing key and an epoch-tagged sealed object, a version-4 key file, a
//! grant and a version-4 config. Like `golden.rs`, each is a hex literal
//! that SPEC.md must print; random bytes are replaced by fixed ones.

use cairn_testkit::WEAK_KDF;
use repo_core::unstable::KdfDerive as _;
use repo_core::unstable::compress;
use repo_core::unstable::config::Config;
use repo_core::unstable::crypto::{self, CryptoError, DataKeys, KeyFile, MasterKey};
use repo_core::unstable::format::{self, CONFIG_MAGIC, EPOCH_VERSION, GRANT_MAGIC};
use repo_core::unstable::id::{KeyId, RepoId};

/// The epoch-1 secret of every vector.
const SECRET: [u8; 32] = [0x71; 32];

const R_CONTEXT_EPOCH_SEAL: &str = "cairn 2026-12 epoch sealing key v4";
const R_CONTEXT_GRANT: &str = "cairn 2026-12 epoch grant key v4";
const R_MAGIC_GRANT: &str = "434149524e47521a";
const R_EPOCH1_KEY: &str = "46ffca1ee01302e3c839b2e8a481c1cdb46dc39e7010bad3d138aacdd504af8f";
const R_TAGGED_OBJECT: &str = "010000007272727272727272727272727272727272727272c70e1d26f223be45\
    caebc95423724f4fe4a4b9e3b99ee9dad1";
const R_KEY_FILE_V4: &str = "434149524e4b591a040000005757575757575757575757575757575757575757\
    57575757575757575757575700002a36fe9c9717010000000000000068010000\
    0000000000754000000001000000010000007373737373737373737373737373\
    7373737373737373737373737373737373733d41a359ccbb4064475bf7ea5f93\
    928fb04d4753780af7d12e3e301736f786026800000000000000757575757575\
    757575757575757575757575757575757575c9726c70989a81984391cc2a6428\
    eb46a8dd6151422033520aec1e83817afe1c794b55c5fae8aa50755d56717394\
    52afd8cec713c7d25c049b69e909d9b2885b2ca2ae96982d35cb51d7831a2721\
    acf9";
const R_KEY_FILE_V4_ID: &str = "7def106fa1826ef0e3ab414e6261d95b38101ca69b89e0b9353434e1590da781";
const R_GRANT: &str = "434149524e47521a040000006c1ab7a99d35f766053628b1159a8d454c13a980\
    6f7f2767077189ac326588087777777777777777777777777777777777777777\
    77777777b3a1f02869742c787b767c2c20eff3bbc322be70f1d7afa92e404c5c\
    7e2267978d60241754f6e9d528b380d90aaa82b5";
const R_CONFIG_V4_FILE: &str = "434149524e43461a040000005858585858585858585858585858585858585858\
    5858585858585858585858580001000000787878787878787878787878787878\
    787878787824519f47de85fb6fb56e7ffd6ff832f57cef4d70afb352f7b0747f\
    6a58cc597245310986963584a351d93312f6b14882ce8136903d1f3ae99ef5cf\
    bfd760d015db9cfcf531fb39b7e98d2488f445501a9feef5d4882acad0692d79\
    79e99a71176bb467475ce2f6567395d7f5487c77c2518eb7fe17508874c0dab6\
    85dfea0613b0eca69d5343e63c685a8535ca1c3346a9caba712b7ca80784f812\
    2455d763413bdd794ded115caf9198";

const VECTORS: &[(&str, &str)] = &[
    ("R_CONTEXT_EPOCH_SEAL", R_CONTEXT_EPOCH_SEAL),
    ("R_CONTEXT_GRANT", R_CONTEXT_GRANT),
    ("R_MAGIC_GRANT", R_MAGIC_GRANT),
    ("R_EPOCH1_KEY", R_EPOCH1_KEY),
    ("R_TAGGED_OBJECT", R_TAGGED_OBJECT),
    ("R_KEY_FILE_V4", R_KEY_FILE_V4),
    ("R_KEY_FILE_V4_ID", R_KEY_FILE_V4_ID),
    ("R_GRANT", R_GRANT),
    ("R_CONFIG_V4_FILE", R_CONFIG_V4_FILE),
];

fn squash(s: &str) -> String {
    s.split_whitespace().collect()
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(squash(s)).unwrap()
}

fn key() -> MasterKey {
    MasterKey::from_bytes([0x11; 32])
}

fn epoch_keys() -> DataKeys {
    DataKeys::new(Some(key().data_key()), &[(1, SECRET)]).unwrap()
}

/// Epoch 1's nonce: the tag 1 (u32 LE), then 20 fixed bytes.
fn tagged_nonce(fill: u8) -> [u8; 24] {
    let mut n = [fill; 24];
    n[..4].copy_from_slice(&1u32.to_le_bytes());
    n
}

fn check(name: &str, got: &str, want: &str) {
    if want == "TODO" {
        println!("{name} = {got}");
    } else {
        assert_eq!(got, squash(want), "{name}");
    }
}

#[test]
fn r_contexts_and_magic() {
    assert_eq!(crypto::CONTEXT_EPOCH_SEAL, R_CONTEXT_EPOCH_SEAL);
    assert_eq!(crypto::CONTEXT_GRANT, R_CONTEXT_GRANT);
    assert_eq!(hex::encode(GRANT_MAGIC), R_MAGIC_GRANT);
    assert_eq!(EPOCH_VERSION, 4);
}

/// (r1) Epoch 1's sealing key from its secret, and `seal` of the bytes
/// `epoch one` with AD `ad` under epoch 1: the nonce starts `01000000`.
#[test]
fn r_tagged_object() {
    let k = crypto::epoch_sealing_key(&SECRET);
    check("R_EPOCH1_KEY", &hex::encode(*k), R_EPOCH1_KEY);
    let sealed = crypto::seal_with_nonce(&k, &tagged_nonce(0x72), b"ad", b"epoch one");
    check("R_TAGGED_OBJECT", &hex::encode(&sealed), R_TAGGED_OBJECT);
    let sealed = unhex_or(R_TAGGED_OBJECT, sealed);
    assert_eq!(
        epoch_keys().open(b"ad", &sealed).unwrap(),
        (b"epoch one".to_vec(), 1)
    );
    // The tag is authenticated, and epoch 0 alone does not open it.
    let mut t = sealed.clone();
    t[0] = 2;
    assert_eq!(epoch_keys().open(b"ad", &t), Err(CryptoError::AuthFailed));
    assert!(key().data_keys().open(b"ad", &sealed).is_err());
}

fn unhex_or(want: &str, got: Vec<u8>) -> Vec<u8> {
    if want == "TODO" { got } else { unhex(want) }
}

/// (r2) A version-4 key file: password `password`, the test KDF, salt
/// 0x73.., X25519 secret 0x74.., nonce 0x75.., created 1.7e18 ns on host
/// `h` by user `u`, for repository 0x57...
fn key_file_v4() -> KeyFile {
    let salt = [0x73; 32];
    let kek = WEAK_KDF.derive(b"password", &salt).unwrap();
    KeyFile::create_v4_with(
        &key(),
        &kek,
        RepoId::from_bytes([0x57; 32]),
        WEAK_KDF,
        "h".into(),
        "u".into(),
        1_700_000_000_000_000_000,
        salt,
        &[0x74; 32],
        Some(&[0x75; 24]),
    )
}

#[test]
fn r_key_file_v4() {
    let bytes = key_file_v4().encode();
    check("R_KEY_FILE_V4", &hex::encode(&bytes), R_KEY_FILE_V4);
    let bytes = unhex_or(R_KEY_FILE_V4, bytes);
    check(
        "R_KEY_FILE_V4_ID",
        &KeyId::hash_of(&bytes).to_hex(),
        R_KEY_FILE_V4_ID,
    );
    let kf = KeyFile::decode(&bytes).unwrap();
    assert_eq!(kf.version, 4);
    assert_eq!(kf.public, Some(crypto::public_key(&[0x74; 32])));
    let u = kf.unlock_full(b"password").unwrap();
    assert_eq!(u.master.data_key(), key().data_key());
    assert_eq!(*u.dh.unwrap().0, [0x74; 32]);
}

/// (r3) The grant of epoch 1 (secret 0x71..) to the key file of (r2):
/// ephemeral X25519 secret 0x76.., nonce 0x77...
#[test]
fn r_grant() {
    let kf = key_file_v4();
    let id = KeyId::hash_of(&kf.encode());
    let repo = RepoId::from_bytes([0x57; 32]);
    let g = crypto::seal_grant_with(
        &[0x76; 32],
        &[0x77; 24],
        &kf.public.unwrap(),
        &repo,
        &id,
        1,
        &SECRET,
    )
    .unwrap();
    check("R_GRANT", &hex::encode(&g), R_GRANT);
    let g = unhex_or(R_GRANT, g);
    assert_eq!(g.len(), crypto::GRANT_LEN);
    assert_eq!(
        *crypto::open_grant(&[0x74; 32], &repo, &id, 1, &g).unwrap(),
        SECRET
    );
    assert!(crypto::open_grant(&[0x74; 32], &repo, &id, 2, &g).is_err());
    assert_eq!(
        crypto::grant_name(&id, 1),
        format!("{}-00000001", id.to_hex())
    );
}

/// (r4) A version-4 config: the version-1 config (j) of repository
/// 0x58.. made version 4 with live epochs [0, 1], sealed under epoch 1
/// with nonce `01000000` || 0x78...
#[test]
fn r_config_v4() {
    let mut c = Config::new(RepoId::from_bytes([0x58; 32]), 1_700_000_000_000_000_000);
    c.version = 4;
    c.epochs = vec![0, 1];
    let mut f = Vec::new();
    format::write_prefix(&mut f, &CONFIG_MAGIC, 4);
    f.extend_from_slice(c.repo_id.as_bytes());
    f.push(0);
    let sealed = crypto::seal_with_nonce(
        &crypto::epoch_sealing_key(&SECRET),
        &tagged_nonce(0x78),
        &f.clone(),
        &compress::compress(&c.encode_body(), 0),
    );
    f.extend_from_slice(&sealed);
    check("R_CONFIG_V4_FILE", &hex::encode(&f), R_CONFIG_V4_FILE);
    let f = unhex_or(R_CONFIG_V4_FILE, f);
    assert_eq!(Config::from_file(&epoch_keys(), &f).unwrap(), c);
    assert!(Config::from_file(&key().data_keys(), &f).is_err());
}

#[test]
fn spec_prints_every_epoch_vector() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../SPEC.md");
    let spec = squash(&std::fs::read_to_string(path).unwrap());
    let missing: Vec<&str> = VECTORS
        .iter()
        .filter(|(_, v)| *v == "TODO" || !spec.contains(&squash(v)))
        .map(|(name, _)| *name)
        .collect();
    assert!(
        missing.is_empty(),
        "SPEC.md §20 does not print: {missing:?}"
    );
}
