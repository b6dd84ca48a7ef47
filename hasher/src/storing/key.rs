//! The HMAC key: absent means "unsigned" mode, present-but-unusable means refuse to start.

use std::io::ErrorKind;
use std::path::Path;

use protocol::sign::{MAX_KEY_LEN, MIN_KEY_LEN};

use crate::error::KeyError;

/// Key bytes, wiped when dropped.
pub(crate) struct Key(zeroize::Zeroizing<Vec<u8>>, protocol::fleet::Signer);

impl Key {
    /// The key made of `bytes`, with the Ed25519 signing key derived from it once.
    fn new(bytes: zeroize::Zeroizing<Vec<u8>>) -> Key {
        let signer = protocol::fleet::Signer::derive(&bytes);
        Key(bytes, signer)
    }

    /// The raw key bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The Ed25519 signing key derived from these bytes (see [`protocol::fleet`]).
    pub(crate) fn signer(&self) -> &protocol::fleet::Signer {
        &self.1
    }

    /// A key from bytes in memory, for unit tests.
    #[cfg(test)]
    pub(super) fn for_test(bytes: Vec<u8>) -> Key {
        Key::new(zeroize::Zeroizing::new(bytes))
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({} bytes)", self.0.len())
    }
}

/// Loads the key: `Ok(None)` when the file does not exist.
pub(crate) fn load(path: &Path) -> Result<Option<Key>, KeyError> {
    load_with(path, None)
}

/// As [`load`], for the key the process will use: it is remembered in `secrets`, so no
/// watched file that is it (or a copy of it) is ever digested where others can see it.
pub(crate) fn load_in_use(
    path: &Path,
    secrets: &mut crate::reading::Secrets,
) -> Result<Option<Key>, KeyError> {
    load_with(path, Some(secrets))
}

fn load_with(
    path: &Path,
    in_use: Option<&mut crate::reading::Secrets>,
) -> Result<Option<Key>, KeyError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(KeyError::Unreadable {
                path: path.to_owned(),
                why: e.to_string(),
            })
        }
        Ok(m) => {
            use std::os::unix::fs::PermissionsExt;
            if let Some(dir) = imsys::paths::world_writable_parent(path) {
                return Err(KeyError::OpenDir {
                    path: path.to_owned(),
                    dir,
                });
            }
            let mode = m.permissions().mode() & 0o7777;
            if crate::storing::credentials::exposed(mode) {
                return Err(KeyError::Exposed {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
    }
    let (bytes, file) =
        crate::reading::read_secret_file(path, MAX_KEY_LEN).map_err(|e| match e {
            crate::reading::ReadError::TooLarge { .. } => KeyError::BadLength {
                path: path.to_owned(),
                len: MAX_KEY_LEN + 1,
            },
            e => KeyError::Unreadable {
                path: path.to_owned(),
                why: e.to_string(),
            },
        })?;
    if crate::storing::credentials::is_unprovisioned(&bytes) {
        return Err(KeyError::NotProvisioned {
            why: crate::storing::credentials::missing_source(path),
        });
    }
    if bytes.len() < MIN_KEY_LEN {
        return Err(KeyError::BadLength {
            path: path.to_owned(),
            len: bytes.len(),
        });
    }
    if let Some(secrets) = in_use {
        secrets.remember(file, &bytes);
    }
    Ok(Some(Key::new(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_short_and_good_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("k");
        assert!(load(&p).expect("absent is fine").is_none());
        std::fs::write(&p, [1u8; 31]).expect("write");
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        assert!(matches!(load(&p), Err(KeyError::BadLength { len: 31, .. })));
        std::fs::write(&p, [1u8; 32]).expect("write");
        assert_eq!(load(&p).expect("good").map(|k| k.bytes().len()), Some(32));
        std::fs::write(&p, vec![1u8; MAX_KEY_LEN + 1]).expect("write");
        assert!(matches!(load(&p), Err(KeyError::BadLength { .. })));
        std::fs::write(&p, [1u8; 65]).expect("write");
        // Group read is the operations guide's rotation mode; world read is not.
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o640))
            .expect("chmod");
        assert_eq!(load(&p).expect("0640").map(|k| k.bytes().len()), Some(65));
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod");
        assert!(matches!(
            load(&p),
            Err(KeyError::Exposed { mode: 0o644, .. })
        ));
        let d = dir.path().join("dir");
        std::fs::create_dir(&d).expect("mkdir");
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chmod");
        assert!(matches!(load(&d), Err(KeyError::Unreadable { .. })));
    }

    #[test]
    fn our_units_marker_for_a_missing_source_names_the_store_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("integrity-hmac-key");
        std::fs::write(&p, protocol::token::UNPROVISIONED).expect("write");
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        let e = load(&p).expect_err("no key").to_string();
        assert!(
            e.contains("/var/lib/secure-ai/credentials/integrity-hmac.key was not there"),
            "{e}"
        );
    }
}
