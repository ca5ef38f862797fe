//! Key rotation and retirement: data-key epochs as a repository changes
//! them (SPEC §29).
//!
//! Rotation order, so a crash never loses access: the session's own key
//! file re-wrapped with a public key first (if it has none), then the new
//! epoch's grants for every key file, then the config that lists the epoch
//! (one atomic [`Backend::replace`](crate::backend::Backend::replace)),
//! and only then the old key file deleted. A crash before the config leaves
//! unused grants; the next rotation numbers past them.

use std::collections::BTreeMap;

use rand::RngCore;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::backend::ObjectKind;
use crate::crypto::{self, DataKeys, KeyFile};
use crate::error::{Error, Result};
use crate::format::{
    CONFIG_MAGIC, DICT_MAGIC, EPOCH_VERSION, FILE_PREFIX_LEN, INDEX_MAGIC, MARK_MAGIC,
    PACK_TRAILER_LEN, SNAPSHOT_MAGIC,
};
use crate::id::{ID_LEN, KeyId};
use crate::keyring::{EpochKeys, EpochSecret};
use crate::keys::PasswordChange;
use crate::repository::{Repository, hostname, now_ns, username};

/// What [`Repository::rotate_key`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rotation {
    /// The new epoch, under which everything is sealed from now on.
    pub epoch: u32,
    /// The live epochs after the rotation.
    pub live: Vec<u32>,
    /// Key files the new epoch was granted to.
    pub granted: Vec<KeyId>,
    /// The session's key file, when it had no public key and was
    /// re-wrapped under the same password (its id changes).
    #[serde(skip)]
    pub rewrapped: Option<PasswordChange>,
}

/// How many objects are sealed under each epoch (SPEC §29.5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EpochCensus {
    /// Objects per epoch, for every epoch seen.
    pub per_epoch: BTreeMap<u32, u64>,
    /// Up to [`EpochCensus::EXAMPLES`] objects per epoch, `kind/name`.
    pub examples: BTreeMap<u32, Vec<String>>,
    /// Objects that opened under no live epoch, `kind/name`.
    pub unreadable: Vec<String>,
    /// Every object counted, with its epoch (for `rekey`: what to rewrite).
    #[serde(skip)]
    pub objects: Vec<(ObjectKind, String, u32)>,
}

impl EpochCensus {
    /// Objects named per epoch.
    pub const EXAMPLES: usize = 5;

    fn count(&mut self, epoch: u32, kind: ObjectKind, name: &str) {
        *self.per_epoch.entry(epoch).or_default() += 1;
        self.objects.push((kind, name.to_string(), epoch));
        let ex = self.examples.entry(epoch).or_default();
        if ex.len() < Self::EXAMPLES {
            ex.push(format!("{}/{name}", kind.dir_or_config()));
        }
    }
}

impl ObjectKind {
    fn dir_or_config(self) -> &'static str {
        match self {
            ObjectKind::Config => "config",
            k => k.dir(),
        }
    }
}

impl Repository {
    /// Seals epoch `epoch`'s `secret` to key file `key` (public key
    /// `public`); durable when it returns.
    pub(crate) fn write_grant(
        &self,
        key: &KeyId,
        public: &[u8; 32],
        epoch: u32,
        secret: &[u8; 32],
    ) -> Result<()> {
        let g = crypto::seal_grant(public, &self.id(), key, epoch, secret)?;
        self.backend()
            .write(ObjectKind::Keyring, &crypto::grant_name(key, epoch), &g)?;
        Ok(())
    }

    /// Deletes every grant of key file `key` (after the key file itself).
    pub(crate) fn delete_grants(&self, key: &KeyId) -> Result<()> {
        for info in self.backend().list(ObjectKind::Keyring)? {
            if crypto::parse_grant_name(&info.name).is_some_and(|(k, _)| k == *key) {
                match self.backend().delete(ObjectKind::Keyring, &info.name) {
                    Err(e) if !e.is_not_found() => return Err(e.into()),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The epochs each key file holds a grant of, by the grants' names
    /// (not opened; epoch 0 needs none).
    pub fn granted_epochs(&self) -> Result<BTreeMap<KeyId, Vec<u32>>> {
        let mut out: BTreeMap<KeyId, Vec<u32>> = BTreeMap::new();
        for info in self.backend().list(ObjectKind::Keyring)? {
            if let Some((k, e)) = crypto::parse_grant_name(&info.name) {
                out.entry(k).or_default().push(e);
            }
        }
        for v in out.values_mut() {
            v.sort_unstable();
        }
        Ok(out)
    }

    /// Starts a new data-key epoch (`cairn key rotate`, SPEC §29.4):
    /// everything written from now on is sealed under it, and every key
    /// file holds it. `password` is this session's: a key file of the
    /// version without a public key is re-wrapped under it first (it must
    /// be the password that opened the session). Other such key files
    /// make it refuse ([`Error::KeysWithoutPublicKey`]). The repository
    /// becomes version 4, which earlier builds refuse to open.
    pub fn rotate_key(&mut self, password: &[u8]) -> Result<Rotation> {
        let own = self.key_id();
        let mut files = Vec::new();
        let mut blockers = Vec::new();
        for k in self.list_keys(true)? {
            if !k.is_usable() {
                continue;
            }
            let bytes = self.backend().read(ObjectKind::Key, &k.id.to_hex())?;
            let kf = KeyFile::decode(&bytes).map_err(|e| Error::CorruptObject {
                kind: ObjectKind::Key,
                name: k.id.to_hex(),
                source: e.into(),
            })?;
            if kf.public.is_none() && k.id != own {
                blockers.push(k.id);
            }
            files.push((k.id, kf));
        }
        if !blockers.is_empty() {
            return Err(Error::KeysWithoutPublicKey(blockers));
        }
        let mut rewrapped = None;
        if let Some(pos) = files
            .iter()
            .position(|(id, kf)| *id == own && kf.public.is_none())
        {
            let old = &files[pos].1;
            // The password must be this session's: a re-wrap under any
            // other would replace a working key with an unknown one.
            let unlocked = old.unlock(password).map_err(|_| Error::WrongPassword)?;
            if unlocked.data_key() != self.master_key().data_key() {
                return Err(Error::WrongPassword);
            }
            let kf = KeyFile::create_v4(
                self.master_key(),
                password,
                self.id(),
                old.header.kdf,
                hostname(),
                username(),
                now_ns(),
            )?;
            let bytes = kf.encode();
            let new_key = KeyId::hash_of(&bytes);
            // Grants of the live epochs first, so it opens everything.
            let public = kf.public.expect("a version-4 key file");
            for (epoch, secret) in self.epoch_secrets() {
                self.write_grant(&new_key, &public, *epoch, secret)?;
            }
            self.backend()
                .write(ObjectKind::Key, &new_key.to_hex(), &bytes)?;
            self.set_key_id(new_key);
            files[pos] = (new_key, kf);
            rewrapped = Some(PasswordChange {
                new_key,
                old_key: own,
            });
        }
        // Past every epoch ever granted: a crashed rotation's grants hold
        // another secret under the next number.
        let mut live = self.config().live_epochs();
        let granted_max = self
            .granted_epochs()?
            .values()
            .filter_map(|v| v.last().copied())
            .max()
            .unwrap_or(0);
        let epoch = live.iter().copied().max().unwrap_or(0).max(granted_max) + 1;
        if epoch > crypto::MAX_EPOCH {
            return Err(Error::InvalidArgument(format!(
                "no epoch number left (the limit is {})",
                crypto::MAX_EPOCH
            )));
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(secret.as_mut());
        let mut granted = Vec::new();
        for (id, kf) in &files {
            let public = kf.public.as_ref().expect("checked above");
            self.write_grant(id, public, epoch, &secret)?;
            granted.push(*id);
        }
        live.push(epoch);
        let mut secrets: Vec<EpochSecret> = self
            .epoch_secrets()
            .iter()
            .map(|(n, s)| (*n, s.clone()))
            .collect();
        secrets.push((epoch, secret));
        let cipher = self.data_keys().cipher();
        let keys = EpochKeys::of(cipher, self.master_key(), &live, secrets)
            .map_err(|e| Error::InvalidArgument(format!("epoch {e} has no secret")))?;
        let mut config = self.config().clone();
        config.version = EPOCH_VERSION;
        config.epochs = live.clone();
        config.validate()?;
        self.backend().replace(
            ObjectKind::Config,
            "config",
            &config.to_file(&keys.data_keys),
        )?;
        self.set_epochs(config, keys);
        if let Some(r) = &rewrapped {
            match self.backend().delete(ObjectKind::Key, &r.old_key.to_hex()) {
                Err(e) if e.is_not_found() => {}
                r => r?,
            }
        }
        Ok(Rotation {
            epoch,
            live,
            granted,
            rewrapped,
        })
    }

    /// Counts the small sealed objects per epoch (SPEC §29.5): config,
    /// snapshots, index files, pack headers (which stand for their blobs:
    /// one writer seals both under one epoch), dictionaries, marks and
    /// archived WAL. Each is opened, so the count is authenticated.
    pub fn epoch_census(&self) -> Result<EpochCensus> {
        let keys = self.data_keys();
        let b = self.backend();
        let mut c = EpochCensus::default();
        let note = |c: &mut EpochCensus, kind: ObjectKind, name: &str, e: Option<u32>| match e {
            Some(e) => c.count(e, kind, name),
            None => c
                .unreadable
                .push(format!("{}/{name}", kind.dir_or_config())),
        };
        let cbytes = b.read(ObjectKind::Config, "config")?;
        let clear = FILE_PREFIX_LEN + ID_LEN + usize::from(self.config().version >= EPOCH_VERSION);
        note(
            &mut c,
            ObjectKind::Config,
            "config",
            sealed_epoch(keys, &cbytes, clear, &CONFIG_MAGIC),
        );
        for (kind, magic) in [
            (ObjectKind::Snapshot, SNAPSHOT_MAGIC),
            (ObjectKind::Index, INDEX_MAGIC),
            (ObjectKind::Dict, DICT_MAGIC),
            (ObjectKind::Mark, MARK_MAGIC),
        ] {
            for info in b.list(kind)? {
                let bytes = match b.read(kind, &info.name) {
                    Ok(x) => x,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
                note(
                    &mut c,
                    kind,
                    &info.name,
                    sealed_epoch(keys, &bytes, FILE_PREFIX_LEN, &magic),
                );
            }
        }
        for info in b.list(ObjectKind::Pack)? {
            note(
                &mut c,
                ObjectKind::Pack,
                &info.name,
                self.pack_header_epoch(&info.name, info.size)?,
            );
        }
        for kind in [ObjectKind::Audit, ObjectKind::Verify] {
            for info in b.list(kind)? {
                let bytes = match b.read(kind, &info.name) {
                    Ok(x) => x,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
                let epoch = if kind == ObjectKind::Audit {
                    crate::audit::sealed_part(&info.name, &bytes)
                        .and_then(|(at, ad)| keys_epoch(keys, &ad, &bytes[at..]))
                } else {
                    sealed_epoch(keys, &bytes, FILE_PREFIX_LEN, &crate::format::VERIFY_MAGIC)
                };
                note(&mut c, kind, &info.name, epoch);
            }
        }
        for info in b.list(ObjectKind::Wal)? {
            let bytes = match b.read(ObjectKind::Wal, &info.name) {
                Ok(x) => x,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            note(
                &mut c,
                ObjectKind::Wal,
                &info.name,
                crate::wal::object_epoch(keys, &info.name, &bytes),
            );
        }
        Ok(c)
    }

    /// The epoch of a pack's header: two ranged reads of its tail.
    fn pack_header_epoch(&self, name: &str, size: u64) -> Result<Option<u32>> {
        let b = self.backend();
        if size < (FILE_PREFIX_LEN + PACK_TRAILER_LEN) as u64 {
            return Ok(None);
        }
        let trailer = b.read_range(
            ObjectKind::Pack,
            name,
            size - PACK_TRAILER_LEN as u64,
            PACK_TRAILER_LEN as u32,
        )?;
        let hlen = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let Some(start) = size.checked_sub(u64::from(hlen) + PACK_TRAILER_LEN as u64) else {
            return Ok(None);
        };
        if start < FILE_PREFIX_LEN as u64 || hlen as usize > crate::format::MAX_PACK_HEADER {
            return Ok(None);
        }
        let sealed = b.read_range(ObjectKind::Pack, name, start, hlen)?;
        Ok(keys_epoch(
            self.data_keys(),
            crate::pack::PACK_HEADER_AD,
            &sealed,
        ))
    }

    /// Retires `epoch` (`cairn key retire`, SPEC §29.5): refused for the
    /// newest epoch, one not live, or one any object is still sealed
    /// under ([`Error::EpochInUse`], with the count); otherwise the config
    /// is rewritten without it, then its grants are deleted. From then on
    /// nothing sealed under it opens, and a saved copy of its key opens
    /// nothing written later.
    pub fn retire_epoch(&mut self, epoch: u32) -> Result<EpochCensus> {
        let live = self.config().live_epochs();
        if !live.contains(&epoch) {
            return Err(Error::CannotRetire {
                epoch,
                reason: "it is not a live epoch",
            });
        }
        if epoch == self.data_keys().newest_epoch() {
            return Err(Error::CannotRetire {
                epoch,
                reason: "it is the newest epoch, which new objects are sealed under",
            });
        }
        let census = self.epoch_census()?;
        if let Some(&count) = census.per_epoch.get(&epoch).filter(|&&n| n > 0) {
            return Err(Error::EpochInUse {
                epoch,
                count,
                examples: census.examples[&epoch].join(", "),
            });
        }
        // A backup or copy that opened the repository before the rotation
        // still seals under the old epoch; what it writes after this would
        // never open again. Its heartbeat (SPEC §22) says it may be running.
        let now = crate::lock::storage_now(self.backend())?;
        if crate::lock::Heartbeat::list(self.backend())?
            .iter()
            .any(|h| h.is_alive(now))
        {
            return Err(Error::CannotRetire {
                epoch,
                reason: "a backup is running (its heartbeat in locks/ is alive) and may still \
                         seal objects under it; retry when it has ended",
            });
        }
        let remaining: Vec<u32> = live.into_iter().filter(|&e| e != epoch).collect();
        let secrets: Vec<EpochSecret> = self
            .epoch_secrets()
            .iter()
            .filter(|(n, _)| *n != epoch)
            .map(|(n, s)| (*n, s.clone()))
            .collect();
        let cipher = self.data_keys().cipher();
        let keys = EpochKeys::of(cipher, self.master_key(), &remaining, secrets)
            .map_err(|e| Error::InvalidArgument(format!("epoch {e} has no secret")))?;
        let mut config = self.config().clone();
        config.epochs = remaining;
        config.validate()?;
        self.backend().replace(
            ObjectKind::Config,
            "config",
            &config.to_file(&keys.data_keys),
        )?;
        self.set_epochs(config, keys);
        if epoch != 0 {
            for info in self.backend().list(ObjectKind::Keyring)? {
                if crypto::parse_grant_name(&info.name).is_some_and(|(_, e)| e == epoch) {
                    match self.backend().delete(ObjectKind::Keyring, &info.name) {
                        Err(e) if !e.is_not_found() => return Err(e.into()),
                        _ => {}
                    }
                }
            }
        }
        Ok(census)
    }
}

/// The epoch `sealed` opens under with `ad`, if any.
fn keys_epoch(keys: &DataKeys, ad: &[u8], sealed: &[u8]) -> Option<u32> {
    keys.open(ad, sealed).ok().map(|(_, e)| e)
}

/// The epoch of a file whose first `clear` bytes (after `magic`) are its
/// associated data and the rest its sealed body.
fn sealed_epoch(keys: &DataKeys, bytes: &[u8], clear: usize, magic: &[u8]) -> Option<u32> {
    if bytes.len() < clear || !bytes.starts_with(magic) {
        return None;
    }
    let (ad, sealed) = bytes.split_at(clear);
    keys_epoch(keys, ad, sealed)
}
