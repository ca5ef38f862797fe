//! The epoch grants of `keyring/` as an open reads them: which data-key
//! epochs the unlocked key file holds, and the config they open
//! (SPEC §29.3, §29.4).

use zeroize::Zeroizing;

use crate::backend::{Backend, ObjectKind};
use crate::blob::BlobError;
use crate::config::Config;
use crate::crypto::{self, Cipher, DataKeys, MasterKey, Unlocked};
use crate::error::{Error, Result};
use crate::format::{self, CONFIG_MAGIC, EPOCH_VERSION, FILE_PREFIX_LEN, NONCE_LEN};
use crate::id::{ID_LEN, KeyId, RepoId};

/// The secret of a data-key epoch n >= 1.
pub(crate) type EpochSecret = (u32, Zeroizing<[u8; 32]>);

/// The sealing keys of a session, and the secrets of its epochs n >= 1
/// (which `key add` grants to a new key file).
pub(crate) struct EpochKeys {
    /// What every object is sealed and opened with.
    pub data_keys: DataKeys,
    /// The live epochs' secrets, ascending (epoch 0 has none).
    pub secrets: Vec<EpochSecret>,
}

impl EpochKeys {
    /// The keys of `live` epochs: epoch 0 from the master key, the others
    /// from `secrets`, which must hold each.
    pub(crate) fn of(
        cipher: Cipher,
        master: &MasterKey,
        live: &[u32],
        secrets: Vec<EpochSecret>,
    ) -> std::result::Result<Self, u32> {
        let secrets: Vec<EpochSecret> = secrets
            .into_iter()
            .filter(|(n, _)| live.contains(n))
            .collect();
        if let Some(&missing) = live
            .iter()
            .find(|&&n| n != 0 && !secrets.iter().any(|(s, _)| *s == n))
        {
            return Err(missing);
        }
        let plain: Vec<(u32, [u8; 32])> = secrets.iter().map(|(n, s)| (*n, **s)).collect();
        let data_keys =
            DataKeys::new_with(cipher, live.contains(&0).then(|| master.data_key()), &plain)
                .map_err(|_| live.first().copied().unwrap_or(0))?;
        Ok(Self { data_keys, secrets })
    }
}

/// The grants of key file `key` that its X25519 secret `dh` opens; a
/// damaged grant is left out (the epoch is then missing, and named).
pub(crate) fn load_grants(
    backend: &dyn Backend,
    repo: &RepoId,
    key: &KeyId,
    dh: &[u8; 32],
) -> Result<Vec<EpochSecret>> {
    let mut out = Vec::new();
    for info in backend.list(ObjectKind::Keyring)? {
        let Some((k, epoch)) = crypto::parse_grant_name(&info.name) else {
            continue;
        };
        if k != *key {
            continue;
        }
        let bytes = match backend.read(ObjectKind::Keyring, &info.name) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        if let Ok(s) = crypto::open_grant(dh, repo, key, epoch, &bytes) {
            out.push((epoch, s));
        }
    }
    out.sort_by_key(|(n, _)| *n);
    Ok(out)
}

/// The epoch a config file's nonce names (SPEC §29.1), when it names one.
fn config_epoch_tag(bytes: &[u8]) -> Option<u32> {
    let at = FILE_PREFIX_LEN + ID_LEN + 1;
    let tag = bytes.get(at..at + NONCE_LEN)?;
    Some(u32::from_le_bytes([tag[0], tag[1], tag[2], tag[3]]))
}

/// Decrypts the config `cbytes` with what key file `key_id` unlocked: in
/// version 4, with the epochs its grants hold (one listing of `keyring/`
/// and a read per grant); before, with epoch 0 alone, at no extra request.
pub(crate) fn open_config(
    backend: &dyn Backend,
    repo: &RepoId,
    unlocked: &Unlocked,
    key_id: &KeyId,
    cbytes: &[u8],
) -> Result<(Config, EpochKeys)> {
    let corrupt = |source: BlobError| Error::CorruptObject {
        kind: ObjectKind::Config,
        name: "config".into(),
        source,
    };
    let (version, _) =
        format::read_prefix(cbytes, &CONFIG_MAGIC, "config").map_err(|e| corrupt(e.into()))?;
    let master = &unlocked.master;
    if version < EPOCH_VERSION {
        let keys = EpochKeys {
            data_keys: master.data_keys(),
            secrets: Vec::new(),
        };
        let config = Config::from_file(&keys.data_keys, cbytes).map_err(corrupt)?;
        return Ok((config, keys));
    }
    let missing_newest = || Error::MissingGrant {
        key: *key_id,
        epoch: config_epoch_tag(cbytes).unwrap_or(0),
    };
    let Some((dh, _)) = &unlocked.dh else {
        // A key file without a public key can hold no grant.
        return Err(missing_newest());
    };
    let cipher = Config::peek_cipher(cbytes).map_err(|e| corrupt(e.into()))?;
    let secrets = load_grants(backend, repo, key_id, dh)?;
    let plain: Vec<(u32, [u8; 32])> = secrets.iter().map(|(n, s)| (*n, **s)).collect();
    let all = DataKeys::new_with(cipher, Some(master.data_key()), &plain)
        .map_err(|_| missing_newest())?;
    let config = match Config::from_file(&all, cbytes) {
        Ok(c) => c,
        Err(BlobError::Crypto(_))
            if config_epoch_tag(cbytes).is_some_and(|t| t != 0 && !all.is_live(t)) =>
        {
            return Err(missing_newest());
        }
        Err(e) => return Err(corrupt(e)),
    };
    let keys = EpochKeys::of(cipher, master, &config.epochs, secrets).map_err(|epoch| {
        Error::MissingGrant {
            key: *key_id,
            epoch,
        }
    })?;
    Ok((config, keys))
}
