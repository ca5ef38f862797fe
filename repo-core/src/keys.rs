//! Key management: several passwords per repository (SPEC §4.1).
//!
//! Every key file wraps the same master key, so adding, removing or
//! re-wrapping a key never touches packs, index or snapshot files. Two rules
//! keep a repository openable: the last usable key is never removed, and a
//! password change writes the new key file before it deletes the old one.

use crate::backend::ObjectKind;
use crate::crypto::{KdfParams, KeyFile};
use crate::error::{Error, Result};
use crate::format::EPOCH_VERSION;
use crate::id::KeyId;
use crate::repository::{Repository, hostname, now_ns, username};

/// One key file as [`Repository::keys`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key file's id, which is also its name in `keys/`.
    pub id: KeyId,
    /// True for the key file that unlocked this session.
    pub current: bool,
    /// Its public header, or why it cannot be used.
    pub status: KeyStatus,
}

impl KeyInfo {
    /// True when the key file decodes and belongs to this repository, so a
    /// password may open the repository through it.
    pub fn is_usable(&self) -> bool {
        matches!(self.status, KeyStatus::Usable(_))
    }
}

/// Whether a listed key file can be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStatus {
    /// A well-formed key file of this repository.
    Usable(KeyDetails),
    /// The file cannot be read or decoded, or it belongs to another
    /// repository; the reason says which. It never counts as a key that
    /// opens the repository.
    Damaged(String),
}

/// The public (unencrypted) header fields of a key file (SPEC §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDetails {
    /// Creation time, nanoseconds since the Unix epoch, UTC.
    pub created_ns: i64,
    /// Host that created the key (informational).
    pub host: String,
    /// User that created the key (informational).
    pub username: String,
    /// argon2id parameters that stretch its password.
    pub kdf: KdfParams,
    /// True for a key file with a public key (version 4, SPEC §29.2),
    /// which data-key epochs can be granted to.
    pub public_key: bool,
}

/// What [`Repository::change_password`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordChange {
    /// The new key file.
    pub new_key: KeyId,
    /// The key file it replaced (the one that unlocked this session).
    pub old_key: KeyId,
}

impl Repository {
    /// Every key file, oldest first, damaged ones last. A damaged key file is
    /// listed with the reason rather than failing the listing, so it can be
    /// seen and removed.
    pub fn keys(&self) -> Result<Vec<KeyInfo>> {
        self.list_keys(false)
    }

    /// [`Repository::keys`]; with `strict`, a key file that cannot be read
    /// (other than gone) is an error rather than listed as damaged, for
    /// decisions that a transient read failure must not sway.
    pub(crate) fn list_keys(&self, strict: bool) -> Result<Vec<KeyInfo>> {
        let backend = self.backend();
        let repo_id = self.config().repo_id;
        let mut out = Vec::new();
        for obj in backend.list(ObjectKind::Key)? {
            // cairn only ever writes key files under their id; anything else
            // in keys/ is not a key file and cannot be addressed by an id.
            let Ok(id) = obj.name.parse::<KeyId>() else {
                continue;
            };
            let bytes = match backend.read(ObjectKind::Key, &obj.name) {
                Ok(b) => b,
                // Removed by another client since the listing.
                Err(e) if e.is_not_found() => continue,
                Err(e) if strict => return Err(e.into()),
                Err(e) => {
                    out.push(KeyInfo {
                        id,
                        current: false,
                        status: KeyStatus::Damaged(e.to_string()),
                    });
                    continue;
                }
            };
            let hash = KeyId::hash_of(&bytes);
            let current = hash == self.key_id();
            let status = match KeyFile::decode(&bytes) {
                Err(e) => KeyStatus::Damaged(e.to_string()),
                // Named by its hash when written (SPEC §4): any change to
                // its bytes since, in clear fields too, shows here.
                Ok(_) if hash != id => KeyStatus::Damaged(format!(
                    "its content does not match its name (hash {})",
                    hash.short()
                )),
                Ok(kf) if kf.header.repo_id != repo_id => KeyStatus::Damaged(format!(
                    "belongs to another repository ({})",
                    kf.header.repo_id.short()
                )),
                Ok(kf) => KeyStatus::Usable(KeyDetails {
                    created_ns: kf.header.created_ns,
                    host: kf.header.host,
                    username: kf.header.username,
                    kdf: kf.header.kdf,
                    public_key: kf.public.is_some(),
                }),
            };
            out.push(KeyInfo {
                id,
                current,
                status,
            });
        }
        out.sort_by_key(|k| {
            let created = match &k.status {
                KeyStatus::Usable(d) => d.created_ns,
                KeyStatus::Damaged(_) => i64::MAX,
            };
            (created, k.id)
        });
        Ok(out)
    }

    /// Resolves a full key id or a unique prefix of one among the listed key
    /// files (damaged ones included, so they can be removed).
    pub fn find_key(&self, spec: &str) -> Result<KeyId> {
        let spec_l = spec.to_ascii_lowercase();
        if spec_l.is_empty() || !spec_l.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::KeyNotFound(spec.into()));
        }
        let mut m = self
            .keys()?
            .into_iter()
            .filter(|k| k.id.to_hex().starts_with(&spec_l));
        match (m.next(), m.next()) {
            (Some(k), None) => Ok(k.id),
            (Some(_), Some(_)) => Err(Error::AmbiguousKey(spec.into())),
            _ => Err(Error::KeyNotFound(spec.into())),
        }
    }

    /// Adds a key file that wraps this repository's master key under
    /// `password`, and returns its id. Existing keys keep working.
    ///
    /// In a version-4 repository the key file carries a public key, and
    /// every live epoch is granted to it before it is written (SPEC §29.3),
    /// so it opens everything from the moment it exists. Before version 4
    /// it is the key file earlier builds read.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        let create = if self.config().version >= EPOCH_VERSION {
            KeyFile::create_v4
        } else {
            KeyFile::create
        };
        let kf = create(
            self.master_key(),
            password,
            self.config().repo_id,
            kdf,
            hostname(),
            username(),
            now_ns(),
        )?;
        let bytes = kf.encode();
        let id = KeyId::hash_of(&bytes);
        if let Some(public) = &kf.public {
            for (epoch, secret) in self.epoch_secrets() {
                self.write_grant(&id, public, *epoch, secret)?;
            }
        }
        // Durable when write returns (Backend contract), so the new password
        // works from here on.
        self.backend()
            .write(ObjectKind::Key, &id.to_hex(), &bytes)?;
        Ok(id)
    }

    /// Deletes key file `id`. Refused with [`Error::LastKey`] when no other
    /// usable key file would remain, and with [`Error::KeyInUse`] for the
    /// key that unlocked this session (use [`Repository::change_password`]
    /// to replace that one). Damaged key files can always be removed.
    pub fn remove_key(&self, id: &KeyId) -> Result<()> {
        let last_key_rule = |keys: &[KeyInfo]| -> Result<()> {
            let target = keys
                .iter()
                .find(|k| k.id == *id)
                .ok_or_else(|| Error::KeyNotFound(id.to_hex()))?;
            // Only well-formed keys of this repository count: a damaged file
            // left behind would not open anything.
            if target.is_usable() && !keys.iter().any(|k| k.id != *id && k.is_usable()) {
                return Err(Error::LastKey(*id));
            }
            // This session's key under another name (a renamed file is
            // listed as damaged, yet still opens): never removable here.
            if target.current {
                return Err(Error::KeyInUse(*id));
            }
            Ok(())
        };
        // Strict listing: a usable key that failed to read once must not
        // count as damaged (always removable) nor as missing from the usable ones.
        last_key_rule(&self.list_keys(true)?)?;
        if *id == self.key_id() {
            return Err(Error::KeyInUse(*id));
        }
        // Two sessions removing each other's key at once both see the other
        // key usable, and would leave none. So keep this session's key file
        // (named by its hash) and put it back if it is gone after the
        // removal: of any such pair, the one that checks last restores its
        // key (SPEC §4.1).
        let own = self.key_id().to_hex();
        let own_bytes = match self.backend().read(ObjectKind::Key, &own) {
            Ok(b) => Some(b),
            // Removed since the listing: the rule must hold without it.
            Err(e) if e.is_not_found() => {
                last_key_rule(&self.list_keys(true)?)?;
                None
            }
            Err(e) => return Err(e.into()),
        };
        self.backend().delete(ObjectKind::Key, &id.to_hex())?;
        self.delete_grants(id)?;
        if let Some(bytes) = own_bytes {
            match self.backend().size(ObjectKind::Key, &own) {
                Err(e) if e.is_not_found() => {
                    self.backend().write(ObjectKind::Key, &own, &bytes)?
                }
                r => {
                    r?;
                }
            }
        }
        Ok(())
    }

    /// Replaces the password of the key that unlocked this session: wraps
    /// the same master key under `new_password` in a new key file, then
    /// deletes the old one. No pack, index or snapshot file is touched.
    ///
    /// SPEC §4.1 write order: the new key file is durable before the old
    /// one is deleted, so a crash in between leaves two working keys, never
    /// none. This session keeps its master key and goes on working; from
    /// the moment the new key file is written, its [`Repository::key_id`]
    /// names the new key (so [`Repository::keys`] marks it current and
    /// [`Repository::remove_key`] protects it).
    pub fn change_password(&self, new_password: &[u8], kdf: KdfParams) -> Result<PasswordChange> {
        let old_key = self.key_id();
        let new_key = self.add_key(new_password, kdf)?;
        self.set_key_id(new_key);
        if new_key != old_key {
            match self.backend().delete(ObjectKind::Key, &old_key.to_hex()) {
                // Another client removed it already: the outcome is the same.
                Err(e) if e.is_not_found() => {}
                r => r?,
            }
            self.delete_grants(&old_key)?;
        }
        Ok(PasswordChange { new_key, old_key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, MemoryBackend};
    use crate::repository::{InitOptions, OpenOptions};

    fn weak() -> KdfParams {
        KdfParams::INSECURE_TEST
    }

    fn init(backend: &MemoryBackend) -> Repository {
        let opts = InitOptions {
            kdf: weak(),
            ..Default::default()
        };
        Repository::init(backend.clone(), b"first", opts).unwrap()
    }

    fn open(backend: &MemoryBackend, pw: &[u8]) -> Result<Repository> {
        Repository::open(backend.clone(), pw, OpenOptions::default())
    }

    #[test]
    fn listing_marks_current_and_damaged_keys() {
        let b = MemoryBackend::new();
        let repo = init(&b);
        let second = repo.add_key(b"second", weak()).unwrap();
        // A truncated key file and one of another repository.
        let junk = b"CAIRNKY\x1a\x01\x00";
        let junk_id = KeyId::hash_of(junk);
        b.write(ObjectKind::Key, &junk_id.to_hex(), junk).unwrap();
        let other = init(&MemoryBackend::new());
        let foreign = other
            .backend()
            .read(ObjectKind::Key, &other.key_id().to_hex())
            .unwrap();
        let foreign_id = KeyId::hash_of(&foreign);
        b.write(ObjectKind::Key, &foreign_id.to_hex(), &foreign)
            .unwrap();

        let keys = repo.keys().unwrap();
        assert_eq!(keys.len(), 4);
        assert_eq!(keys[0].id, repo.key_id());
        assert!(keys[0].current && keys[0].is_usable());
        assert_eq!(keys[1].id, second);
        assert!(!keys[1].current && keys[1].is_usable());
        let KeyStatus::Usable(d) = &keys[1].status else {
            panic!("second key not usable")
        };
        assert_eq!(d.kdf, weak());
        assert_eq!(d.host, hostname());
        let damaged: Vec<_> = keys[2..].iter().map(|k| k.id).collect();
        assert!(damaged.contains(&junk_id) && damaged.contains(&foreign_id));
        assert!(keys[2..].iter().all(|k| !k.is_usable() && !k.current));
        let reason = keys
            .iter()
            .find(|k| k.id == foreign_id)
            .map(|k| k.status.clone());
        assert!(
            matches!(&reason, Some(KeyStatus::Damaged(r)) if r.contains("another repository")),
            "{reason:?}"
        );
        // Damaged files can be removed even though they are not usable.
        repo.remove_key(&junk_id).unwrap();
        assert_eq!(repo.keys().unwrap().len(), 3);
    }

    #[test]
    fn damaged_files_are_removable_even_when_no_usable_key_is_left() {
        let b = MemoryBackend::new();
        let repo = init(&b);
        let junk = b"junk";
        let junk_id = KeyId::hash_of(junk);
        b.write(ObjectKind::Key, &junk_id.to_hex(), junk).unwrap();
        // Another client deleted this session's key file behind its back.
        b.delete(ObjectKind::Key, &repo.key_id().to_hex()).unwrap();
        repo.remove_key(&junk_id).unwrap();
        assert!(b.list(ObjectKind::Key).unwrap().is_empty());
    }

    #[test]
    fn find_key_by_prefix() {
        let b = MemoryBackend::new();
        let repo = init(&b);
        let id = repo.key_id();
        assert_eq!(repo.find_key(&id.to_hex()[..6]).unwrap(), id);
        assert_eq!(repo.find_key(&id.to_hex().to_uppercase()).unwrap(), id);
        assert!(matches!(repo.find_key(""), Err(Error::KeyNotFound(_))));
        assert!(matches!(repo.find_key("xyz"), Err(Error::KeyNotFound(_))));
        // A second file whose id starts with the same digit makes a
        // one-digit prefix ambiguous (about one try in sixteen finds one).
        let first = id.to_hex().as_bytes()[0];
        let other = (0u32..)
            .map(|i| i.to_le_bytes())
            .find(|b| KeyId::hash_of(b).to_hex().as_bytes()[0] == first)
            .expect("some seed matches");
        b.write(ObjectKind::Key, &KeyId::hash_of(&other).to_hex(), &other)
            .unwrap();
        assert!(matches!(
            repo.find_key(&id.to_hex()[..1]),
            Err(Error::AmbiguousKey(_))
        ));
    }

    #[test]
    fn remove_refuses_last_and_current_key() {
        let b = MemoryBackend::new();
        let repo = init(&b);
        let first = repo.key_id();
        assert!(matches!(repo.remove_key(&first), Err(Error::LastKey(id)) if id == first));
        let second = repo.add_key(b"second", weak()).unwrap();
        assert!(matches!(repo.remove_key(&first), Err(Error::KeyInUse(id)) if id == first));
        // From a session opened with the second password, the first can go.
        let other = open(&b, b"second").unwrap();
        assert_eq!(other.key_id(), second);
        other.remove_key(&first).unwrap();
        assert!(matches!(open(&b, b"first"), Err(Error::WrongPassword)));
        assert!(matches!(other.remove_key(&second), Err(Error::LastKey(_))));
        assert!(matches!(
            other.remove_key(&first),
            Err(Error::KeyNotFound(_))
        ));
    }

    #[test]
    fn change_password_replaces_the_session_key() {
        let b = MemoryBackend::new();
        let repo = init(&b);
        let spare = repo.add_key(b"spare", weak()).unwrap();
        let first = repo.key_id();
        let change = repo.change_password(b"new", weak()).unwrap();
        assert_eq!(change.old_key, first);
        assert_ne!(change.new_key, change.old_key);
        // The session now stands on the new key file: it is current and
        // protected, not the deleted one.
        assert_eq!(repo.key_id(), change.new_key);
        let current: Vec<_> = repo
            .keys()
            .unwrap()
            .into_iter()
            .filter(|k| k.current)
            .map(|k| k.id)
            .collect();
        assert_eq!(current, vec![change.new_key]);
        assert!(matches!(
            repo.remove_key(&change.new_key),
            Err(Error::KeyInUse(id)) if id == change.new_key
        ));
        let ids: Vec<_> = repo.keys().unwrap().iter().map(|k| k.id).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&spare) && ids.contains(&change.new_key));
        assert!(matches!(open(&b, b"first"), Err(Error::WrongPassword)));
        assert_eq!(open(&b, b"new").unwrap().key_id(), change.new_key);
        assert_eq!(open(&b, b"spare").unwrap().key_id(), spare);
    }

    #[test]
    fn a_failed_read_does_not_make_the_last_usable_key_removable() {
        use crate::backend::{Fault, FaultPlan, FaultyBackend, OpKind};
        let b = MemoryBackend::new();
        let fb = FaultyBackend::new(b.clone());
        let opts = InitOptions {
            kdf: weak(),
            ..Default::default()
        };
        let repo = Repository::init(fb.clone(), b"first", opts).unwrap();
        let second = repo.add_key(b"second", weak()).unwrap();
        // Another client removed this session's key file: `second` is the
        // last usable key.
        b.delete(ObjectKind::Key, &repo.key_id().to_hex()).unwrap();
        // Reading it fails once: it must not pass for a damaged file.
        fb.set_plan(FaultPlan::none().and_nth(
            Some(OpKind::Read),
            Some(ObjectKind::Key),
            0,
            Fault::Error(std::io::ErrorKind::Other),
        ));
        assert!(matches!(repo.remove_key(&second), Err(Error::Backend(_))));
        assert_eq!(fb.injected().len(), 1);
        assert_eq!(open(&b, b"second").unwrap().key_id(), second);
        fb.set_plan(FaultPlan::none());
        assert!(matches!(repo.remove_key(&second), Err(Error::LastKey(_))));
    }

    #[test]
    fn bad_kdf_params_write_nothing() {
        let b = MemoryBackend::new();
        let repo = init(&b);
        let bad = KdfParams {
            iterations: 0,
            ..weak()
        };
        assert!(matches!(repo.add_key(b"x", bad), Err(Error::Crypto(_))));
        assert!(matches!(
            repo.change_password(b"x", bad),
            Err(Error::Crypto(_))
        ));
        assert_eq!(b.list(ObjectKind::Key).unwrap().len(), 1);
        open(&b, b"first").unwrap();
    }
}
