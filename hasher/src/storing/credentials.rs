//! Where the hasher's two secrets come from, and which file modes it accepts for them.
//!
//! The appliance keeps every secret in its credential store (`/var/lib/secure-ai/credentials/`,
//! root only) and hands each service a private copy by `LoadCredential=`; the operations
//! guide's older `/run/secure-ai/` files keep working as fallbacks. One order for both, so
//! `check-config` looks where the service will:
//! an explicit path (flag or `HMAC_KEY_PATH` / `SERVICE_TOKEN_PATH`), then the unit's
//! credential, then the appliance's store, then the legacy path.

use std::path::{Path, PathBuf};

/// The appliance's credential store.
pub(super) const STORE: &str = "/var/lib/secure-ai/credentials";
/// Where the operations guide keeps the service token (the fallback after the store).
pub(super) const LEGACY_TOKEN_FILE: &str = "/run/secure-ai/service-token";
/// The HMAC key's file in the store, and its credential id in our units.
pub(crate) const KEY: (&str, &str) = ("integrity-hmac.key", "integrity-hmac-key");
/// The service token's file in the store, and its credential id in our units.
pub(super) const TOKEN: (&str, &str) = ("integrity-monitor.token", "service-token");

/// Where to read a secret: `explicit`, else the first of the unit's credential `id`, the
/// store's `file` that exists, else `legacy` (which may not exist: the caller says so).
fn resolve(
    explicit: Option<&Path>,
    (file, id): (&str, &str),
    store: &Path,
    legacy: &Path,
) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    let credential = std::env::var_os("CREDENTIALS_DIRECTORY").map(|d| Path::new(&d).join(id));
    credential
        .into_iter()
        .chain([store.join(file)])
        .find(|p| p.exists())
        .unwrap_or_else(|| legacy.to_owned())
}

/// The HMAC key file; `legacy` is the policy's `hmac_key_path`.
pub(crate) fn key_path(explicit: Option<&Path>, legacy: &Path) -> PathBuf {
    resolve(explicit, KEY, Path::new(STORE), legacy)
}

/// The service token file.
pub(crate) fn token_path(explicit: Option<&Path>) -> PathBuf {
    resolve(
        explicit,
        TOKEN,
        Path::new(STORE),
        Path::new(LEGACY_TOKEN_FILE),
    )
}

/// Whether a secret's content is our units' stand-in for a missing source
/// ([`protocol::token::UNPROVISIONED`]).
pub(super) fn is_unprovisioned(content: &[u8]) -> bool {
    content.trim_ascii() == protocol::token::UNPROVISIONED.as_bytes()
}

/// What a credential at `path` holding [`protocol::token::UNPROVISIONED`] means, in one line: which store file
/// our unit found missing (the caller has read the content; nothing is read here).
pub(super) fn missing_source(path: &Path) -> String {
    let id = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    match [KEY, TOKEN].into_iter().find(|(_, i)| *i == id) {
        Some((file, id)) => format!(
            "credential {id} holds no secret: its source {STORE}/{file} was not there when the unit started \
             (provision it, or point the unit at the old /run/secure-ai file: docs/replacing-go.md)"
        ),
        None => format!(
            "{}: holds our units' marker for a missing credential, not a secret",
            path.display()
        ),
    }
}

/// Whether a secret with these permission bits is open to too many: any access by others, or
/// writes by its group. Group read is accepted (the operations guide's rotation steps leave
/// `chmod 0640`), as the appliance's own services accept it.
pub(super) fn exposed(mode: u32) -> bool {
    mode & 0o027 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_world_access_or_group_write_is_exposed() {
        for ok in [0o400, 0o600, 0o640, 0o440] {
            assert!(!exposed(ok), "{ok:o}");
        }
        for bad in [0o604, 0o644, 0o660, 0o602, 0o601, 0o666] {
            assert!(exposed(bad), "{bad:o}");
        }
    }

    #[test]
    fn the_store_wins_over_the_legacy_path_and_an_explicit_path_over_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("credentials");
        let legacy = dir.path().join("run/integrity-hmac-key");
        assert_eq!(
            resolve(None, KEY, &store, &legacy),
            legacy,
            "nothing there: legacy"
        );
        std::fs::create_dir_all(&store).expect("mkdir");
        std::fs::write(store.join(KEY.0), "k").expect("write");
        assert_eq!(resolve(None, KEY, &store, &legacy), store.join(KEY.0));
        let flag = dir.path().join("flag");
        assert_eq!(resolve(Some(&flag), KEY, &store, &legacy), flag);
    }
}
