//! The audit record file (SPEC §31.2): a clear, signed envelope followed
//! by the sealed body. The record's name is the BLAKE3 hash of the
//! envelope and its signature, so it names neither the ciphertext (which
//! a rekey may rewrite) nor anything an auditor without the password
//! cannot recompute.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use super::AuditError;

/// `CAIRNAU\x1a`: an audit record.
pub const RECORD_MAGIC: [u8; 8] = *b"CAIRNAU\x1a";
/// Record file version.
pub const RECORD_VERSION: u32 = 1;
/// What every record signature covers before the record's bytes, so a
/// record signature can never be taken for a report signature.
const RECORD_DOMAIN: &[u8] = b"cairn audit record v1\0";
/// Most parents a record may name (a fork of more writers is merged by
/// the next record anyway).
pub const MAX_PARENTS: usize = 1024;
const FIXED: usize = 8 + 4 + 4; // magic, version, envelope length
const ENVELOPE_FIXED: usize = 8 + 8 + 32 + 4; // time, height, commit, parent count
const SIG_LEN: usize = 64;

/// The clear part of a record: what an auditor with only the public key
/// sees and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// When the record was written, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// 0 for a record without parents, else one more than its highest parent.
    pub height: u64,
    /// BLAKE3 of the body's plaintext (which holds 16 random bytes, so the
    /// hash reveals nothing guessable).
    pub body_commit: [u8; 32],
    /// The heads the writer saw: names of earlier records, sorted.
    pub parents: Vec<[u8; 32]>,
}

/// A parsed record file.
#[derive(Debug, Clone)]
pub struct RecordFile {
    /// The clear envelope.
    pub envelope: Envelope,
    /// Its signature.
    pub signature: [u8; SIG_LEN],
    /// The record's name: BLAKE3 of everything before the sealed body.
    pub name: [u8; 32],
    /// The bytes the signature covers (after the domain).
    signed_len: usize,
    /// Where the sealed body starts.
    pub body_at: usize,
}

impl Envelope {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(ENVELOPE_FIXED + 32 * self.parents.len());
        v.extend_from_slice(&self.time_ns.to_le_bytes());
        v.extend_from_slice(&self.height.to_le_bytes());
        v.extend_from_slice(&self.body_commit);
        v.extend_from_slice(&(self.parents.len() as u32).to_le_bytes());
        for p in &self.parents {
            v.extend_from_slice(p);
        }
        v
    }
}

/// The record's head (magic … signature) and its name; the sealed body
/// follows it in the file.
pub fn encode_head(envelope: &Envelope, key: &SigningKey) -> (Vec<u8>, [u8; 32]) {
    let env = envelope.encode();
    let mut out = Vec::with_capacity(FIXED + env.len() + SIG_LEN);
    out.extend_from_slice(&RECORD_MAGIC);
    out.extend_from_slice(&RECORD_VERSION.to_le_bytes());
    out.extend_from_slice(&(env.len() as u32).to_le_bytes());
    out.extend_from_slice(&env);
    let sig = key.sign(&signed_message(&out));
    out.extend_from_slice(&sig.to_bytes());
    let name = *blake3::hash(&out).as_bytes();
    (out, name)
}

fn signed_message(head: &[u8]) -> Vec<u8> {
    [RECORD_DOMAIN, head].concat()
}

/// Parses a record file's head; checks nothing but its shape.
pub fn decode(bytes: &[u8]) -> Result<RecordFile, AuditError> {
    let bad = |why: &str| AuditError::Malformed(why.to_string());
    if bytes.len() < FIXED || bytes[..8] != RECORD_MAGIC {
        return Err(bad("not an audit record"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if version != RECORD_VERSION {
        return Err(bad(&format!("record version {version} is not supported")));
    }
    let env_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    if env_len < ENVELOPE_FIXED || bytes.len() < FIXED + env_len + SIG_LEN {
        return Err(bad("truncated"));
    }
    let env = &bytes[FIXED..FIXED + env_len];
    let n = u32::from_le_bytes(env[48..52].try_into().unwrap()) as usize;
    if n > MAX_PARENTS || env_len != ENVELOPE_FIXED + 32 * n {
        return Err(bad("envelope length does not match its parents"));
    }
    let parents = env[ENVELOPE_FIXED..]
        .chunks_exact(32)
        .map(|c| c.try_into().unwrap())
        .collect();
    let signed_len = FIXED + env_len;
    let body_at = signed_len + SIG_LEN;
    Ok(RecordFile {
        envelope: Envelope {
            time_ns: i64::from_le_bytes(env[0..8].try_into().unwrap()),
            height: u64::from_le_bytes(env[8..16].try_into().unwrap()),
            body_commit: env[16..48].try_into().unwrap(),
            parents,
        },
        signature: bytes[signed_len..body_at].try_into().unwrap(),
        name: *blake3::hash(&bytes[..body_at]).as_bytes(),
        signed_len,
        body_at,
    })
}

impl RecordFile {
    /// Whether `key` signed this record (`bytes`: the file it came from).
    pub fn signed_by(&self, bytes: &[u8], key: &VerifyingKey) -> bool {
        let sig = Signature::from_bytes(&self.signature);
        key.verify(&signed_message(&bytes[..self.signed_len]), &sig)
            .is_ok()
    }
}
