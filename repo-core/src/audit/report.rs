//! Signed reports (SPEC §31.6): the report's bytes, then one line
//! `cairn-signature: ed25519 <public key hex> <signature hex>`. The
//! signature covers every byte before that line, so any change to the
//! report, even in white space, fails verification.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use super::AuditError;

const REPORT_DOMAIN: &[u8] = b"cairn signed report v1\0";
const LINE_PREFIX: &str = "cairn-signature: ed25519 ";

/// A verified signed report.
#[derive(Debug, Clone)]
pub struct SignedReport {
    /// The report's bytes, as signed.
    pub report: Vec<u8>,
    /// The key that signed it.
    pub public_key: VerifyingKey,
}

/// `report` (a newline is added if it lacks one) followed by its signature line.
pub fn sign_report_with(key: &SigningKey, report: &[u8]) -> Vec<u8> {
    let mut out = report.to_vec();
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    let sig = key.sign(&[REPORT_DOMAIN, &out].concat());
    out.extend_from_slice(
        format!(
            "{LINE_PREFIX}{} {}\n",
            hex::encode(key.verifying_key().to_bytes()),
            hex::encode(sig.to_bytes())
        )
        .as_bytes(),
    );
    out
}

/// Checks a signed report against `key`; without a key, against the key it
/// names (which proves only that it is intact, not who signed it).
pub fn verify_signed_report(
    bytes: &[u8],
    key: Option<&VerifyingKey>,
) -> Result<SignedReport, AuditError> {
    let bad = |why: &str| AuditError::BadReport(why.to_string());
    let body = bytes
        .strip_suffix(b"\n")
        .ok_or_else(|| bad("no signature line at the end"))?;
    let at = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let (report, line) = bytes.split_at(at);
    let line = std::str::from_utf8(&line[..line.len() - 1])
        .map_err(|_| bad("signature line is not text"))?;
    let rest = line
        .strip_prefix(LINE_PREFIX)
        .ok_or_else(|| bad("no signature line at the end"))?;
    let (pk, sig) = rest
        .split_once(' ')
        .ok_or_else(|| bad("signature line has no signature"))?;
    let named = super::signer::parse_public(pk)?;
    if key.is_some_and(|k| *k != named) {
        return Err(bad("it was signed by another key"));
    }
    let sig: [u8; 64] = hex::decode(sig)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("the signature is not 64 bytes of hex"))?;
    named
        .verify(
            &[REPORT_DOMAIN, report].concat(),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| bad("the signature does not match the report (altered)"))?;
    Ok(SignedReport {
        report: report.to_vec(),
        public_key: named,
    })
}
