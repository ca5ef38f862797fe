//! Unattended keys: credentials for services such as `archive_command` and
//! nightly plans, which must open the repository many times a minute
//! without a person and without paying argon2's cost each time (SPEC §4.2).
//!
//! An unattended key is an ordinary key file (SPEC §4) whose "password" is
//! 256 random bits and whose argon2id parameters are the smallest there
//! are ([`KdfParams::UNATTENDED`]). Its holder keeps a token naming the key
//! file and carrying the secret, so an open reads and unlocks that one key
//! file and never stretches anything for the others.

use std::fmt;

use rand::RngCore;
use zeroize::Zeroizing;

use crate::backend::Backend;
use crate::crypto::KdfParams;
use crate::error::{Error, Result};
use crate::id::KeyId;
use crate::repository::{OpenOptions, Repository};
use crate::wal::WalStore;

/// What every token starts with; the `1` is the token layout's version.
const TOKEN_PREFIX: &str = "cairn-unattended-1:";

/// Length of the secret in bytes (hex-encoded in the token).
const SECRET_LEN: usize = 32;

/// The credential of an unattended key: which key file, and its secret
/// (SPEC §4.2). Printed as one line,
/// `cairn-unattended-1:<key id, 64 hex>:<secret, 64 hex>`; its `Debug`
/// hides the secret.
#[derive(Clone)]
pub struct ServiceToken {
    key: KeyId,
    /// The key file's password: 64 lowercase hex digits.
    secret: Zeroizing<String>,
}

impl fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceToken({}, ..)", self.key.short())
    }
}

impl ServiceToken {
    /// Parses a token from the first line of `text` (surrounding
    /// whitespace ignored). Anything else — a password, a truncated or
    /// edited token — is [`Error::BadServiceToken`].
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| Error::BadServiceToken(why.to_string());
        let line = text.lines().next().unwrap_or("").trim();
        let rest = line
            .strip_prefix(TOKEN_PREFIX)
            .ok_or_else(|| bad("it does not start with \"cairn-unattended-1:\""))?;
        let (id, secret) = rest
            .split_once(':')
            .ok_or_else(|| bad("it has no secret after the key id"))?;
        let key = id
            .parse::<KeyId>()
            .map_err(|_| bad("its key id is not 64 hex digits"))?;
        if secret.len() != 2 * SECRET_LEN || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("its secret is not 64 hex digits (truncated?)"));
        }
        Ok(Self {
            key,
            secret: Zeroizing::new(secret.to_ascii_lowercase()),
        })
    }

    /// The key file this token unlocks.
    pub fn key_id(&self) -> KeyId {
        self.key
    }

    /// The token as one line, without a newline.
    pub fn to_line(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{TOKEN_PREFIX}{}:{}",
            self.key.to_hex(),
            self.secret.as_str()
        ))
    }
}

impl Repository {
    /// Adds an unattended key: a fresh 256-bit secret wrapped with
    /// [`KdfParams::UNATTENDED`]. The returned token is the only copy of
    /// the secret. Other keys keep working; `remove_key` revokes it.
    pub fn add_unattended_key(&self) -> Result<ServiceToken> {
        let mut raw = Zeroizing::new([0u8; SECRET_LEN]);
        rand::rngs::OsRng.fill_bytes(raw.as_mut());
        let mut secret = Zeroizing::new(String::with_capacity(2 * SECRET_LEN));
        for b in raw.iter() {
            secret.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            secret.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
        }
        let key = self.add_key(secret.as_bytes(), KdfParams::UNATTENDED)?;
        Ok(ServiceToken { key, secret })
    }

    /// [`Repository::rotate_key`] for a session opened with `token`: its
    /// secret is the password. Returns the token of the re-wrapped key
    /// file when the rotation re-wrapped it (its id changed), which the
    /// service must be given.
    pub fn rotate_key_unattended(
        &mut self,
        token: &ServiceToken,
    ) -> Result<(crate::epochs::Rotation, Option<ServiceToken>)> {
        let r = self.rotate_key(token.secret.as_bytes())?;
        let new = r.rewrapped.map(|c| ServiceToken {
            key: c.new_key,
            secret: token.secret.clone(),
        });
        Ok((r, new))
    }

    /// Opens the repository with `token`: only the key file it names is
    /// read and unlocked (SPEC §4.2), whatever other key files cost. A
    /// key file that is gone (removed, or the token is of another
    /// repository) is [`Error::ServiceKeyGone`]; a wrong secret is
    /// [`Error::WrongPassword`]. `opts.key` is ignored.
    pub fn open_unattended(
        backend: impl Backend + 'static,
        token: &ServiceToken,
        opts: OpenOptions,
    ) -> Result<Self> {
        token.named(Self::open(
            backend,
            token.secret.as_bytes(),
            token.options(opts),
        ))
    }
}

impl WalStore {
    /// [`WalStore::open`] with an unattended key's token, as
    /// [`Repository::open_unattended`] does it: `archive_command` runs once
    /// per WAL segment and must not stretch a password each time.
    pub fn open_unattended(
        backend: impl Backend + 'static,
        token: &ServiceToken,
        opts: &OpenOptions,
    ) -> Result<Self> {
        let opts = token.options(opts.clone());
        token.named(Self::open(backend, token.secret.as_bytes(), &opts))
    }
}

impl ServiceToken {
    /// `opts` naming the token's key file, so only that one is tried.
    fn options(&self, opts: OpenOptions) -> OpenOptions {
        OpenOptions {
            key: Some(self.key.to_hex()),
            ..opts
        }
    }

    /// An open's result, with the named key file missing said as such.
    fn named<T>(&self, r: Result<T>) -> Result<T> {
        match r {
            Err(Error::KeyNotFound(_)) => Err(Error::ServiceKeyGone(self.key)),
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_refusals() {
        let line = format!("{TOKEN_PREFIX}{}:{}", "ab".repeat(32), "0F".repeat(32));
        let t = ServiceToken::parse(&format!("  {line}\nignored")).unwrap();
        assert_eq!(t.key_id().to_hex(), "ab".repeat(32));
        assert_eq!(t.to_line().as_str(), line.replace("0F", "0f"));
        assert!(!format!("{t:?}").contains("0f0f"), "Debug hides the secret");
        for bad in [
            "hunter2".to_string(),
            format!("{TOKEN_PREFIX}{}", "ab".repeat(32)),
            format!("{TOKEN_PREFIX}{}:{}", "ab".repeat(31), "00".repeat(32)),
            format!("{TOKEN_PREFIX}{}:{}", "ab".repeat(32), "00".repeat(31)),
            format!("{TOKEN_PREFIX}{}:{}x", "ab".repeat(32), "00".repeat(32)),
        ] {
            assert!(
                matches!(ServiceToken::parse(&bad), Err(Error::BadServiceToken(_))),
                "{bad}"
            );
        }
    }
}
