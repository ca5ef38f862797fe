//! Unattended keys (SPEC §4.2): a token opens the repository through its
//! own key file only, without stretching; removing the key revokes it.

use repo_core::unstable::crypto::kdf_spent;
use repo_core::{Error, KdfParams, LocalBackend, OpenOptions, Repository, ServiceToken, WalStore};

use super::{WEAK_KDF, init_repo, open_repo};

fn open_token(dir: &std::path::Path, token: &ServiceToken) -> repo_core::Result<Repository> {
    Repository::open_unattended(
        LocalBackend::open(dir.join("repo")),
        token,
        OpenOptions::default(),
    )
}

/// The token with one hex digit of its secret changed.
fn flipped(token: &ServiceToken) -> ServiceToken {
    let mut line = token.to_line().to_string();
    let last = line.pop().expect("not empty");
    line.push(if last == '0' { '1' } else { '0' });
    ServiceToken::parse(&line).expect("still well-formed")
}

#[test]
fn token_opens_through_its_own_key_without_stretching_until_removed() {
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let first = repo.key_id();
    let second = repo.add_key(b"second pw", WEAK_KDF).unwrap();
    let token = repo.add_unattended_key().unwrap();
    drop(repo);

    // The key is listed as unattended; the passwords' keys are not.
    let repo = open_repo(d.path(), b"second pw").unwrap();
    let kinds: Vec<_> = repo
        .keys()
        .unwrap()
        .into_iter()
        .map(|k| match k.status {
            repo_core::KeyStatus::Usable(d) => (k.id, d.kdf.is_unattended()),
            repo_core::KeyStatus::Damaged(r) => panic!("damaged: {r}"),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![(first, false), (second, false), (token.key_id(), true)]
    );

    // Opening with the token runs the KDF once, over its own key file, at
    // the smallest cost argon2 has: no other key file is tried.
    let before = kdf_spent();
    let via_token = open_token(d.path(), &token).unwrap();
    let after = kdf_spent();
    assert_eq!(via_token.key_id(), token.key_id());
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, KdfParams::UNATTENDED.cost())
    );
    assert_eq!(KdfParams::UNATTENDED.cost(), 8, "8 KiB, one pass");

    // The WAL store of archive_command opens the same way.
    let before = kdf_spent();
    WalStore::open_unattended(
        LocalBackend::open(d.path().join("repo")),
        &token,
        &OpenOptions::default(),
    )
    .unwrap();
    assert_eq!(kdf_spent().0 - before.0, 1);

    // A wrong secret fails like a wrong password, again without trying
    // the other key files.
    let before = kdf_spent();
    assert!(matches!(
        open_token(d.path(), &flipped(&token)),
        Err(Error::WrongPassword)
    ));
    assert_eq!(kdf_spent().0 - before.0, 1);

    // A reader that knows nothing of tokens opens it with the secret as a
    // password and the key named (SPEC §4.2, older readers).
    let line = token.to_line();
    let secret = line.rsplit(':').next().unwrap();
    let old_reader = Repository::open(
        LocalBackend::open(d.path().join("repo")),
        secret.as_bytes(),
        OpenOptions {
            key: Some(token.key_id().to_hex()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(old_reader.key_id(), token.key_id());

    // Removing the key revokes the token; the passwords keep working.
    repo.remove_key(&token.key_id()).unwrap();
    let err = open_token(d.path(), &token).unwrap_err();
    assert!(
        matches!(err, Error::ServiceKeyGone(id) if id == token.key_id()),
        "{err}"
    );
    assert!(matches!(
        WalStore::open_unattended(
            LocalBackend::open(d.path().join("repo")),
            &token,
            &OpenOptions::default()
        ),
        Err(Error::ServiceKeyGone(_))
    ));
    assert_eq!(open_repo(d.path(), b"pw").unwrap().key_id(), first);
    assert_eq!(open_repo(d.path(), b"second pw").unwrap().key_id(), second);
}

#[test]
fn a_token_of_another_repository_opens_nothing() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    init_repo(a.path());
    let other = init_repo(b.path()).add_unattended_key().unwrap();
    let err = open_token(a.path(), &other).unwrap_err();
    assert!(matches!(err, Error::ServiceKeyGone(_)), "{err}");
    // Each token is a fresh secret for a fresh key file.
    let again = init_repo(tempfile::tempdir().unwrap().path())
        .add_unattended_key()
        .unwrap();
    assert_ne!(again.to_line().as_str(), other.to_line().as_str());
}
