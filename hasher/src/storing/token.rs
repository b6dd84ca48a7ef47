//! The operator's service token: read once at start, before the sandbox, kept only as its
//! SHA-256. The hasher compares it itself before it makes a baseline: the api, facing the
//! network, is not trusted with that decision.

use std::path::Path;

/// Largest token file read.
const MAX_LEN: usize = 4096;
/// Below this, a token is accepted with a warning (the Go service took any length).
const SHORT: usize = 16;

pub(crate) use protocol::token::Token;

/// Loads the token; `Ok(None)` (logged) when there is none: then only a first initialization
/// can make a baseline and the api keeps its token-gated endpoints closed. A token file others
/// may read or its group write is refused, as the key is (`credentials::exposed`).
pub(crate) fn load(path: &Path) -> Result<Option<Token>, crate::error::TokenError> {
    load_with(path, None)
}

/// As [`load`], for the token the process will use: it is remembered in `secrets`, so no
/// watched file that is it is ever digested where others can see it.
pub(crate) fn load_in_use(
    path: &Path,
    secrets: &mut crate::reading::Secrets,
) -> Result<Option<Token>, crate::error::TokenError> {
    load_with(path, Some(secrets))
}

fn load_with(
    path: &Path,
    in_use: Option<&mut crate::reading::Secrets>,
) -> Result<Option<Token>, crate::error::TokenError> {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if let Some(dir) = imsys::paths::world_writable_parent(path) {
            return Err(crate::error::TokenError::OpenDir {
                path: path.to_owned(),
                dir,
            });
        }
        let mode = m.permissions().mode() & 0o7777;
        if crate::storing::credentials::exposed(mode) {
            return Err(crate::error::TokenError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
    }
    match crate::reading::read_secret_file(path, MAX_LEN) {
        Err(why) => {
            tracing::warn!(path = %path.display(), why = %why, "no service token: rebaseline, scan and reload stay closed");
            Ok(None)
        }
        Ok((bytes, file)) => {
            let unprovisioned = crate::storing::credentials::is_unprovisioned(&bytes);
            let token = if unprovisioned {
                None
            } else {
                Token::from_text(&bytes)
            };
            if let (Some(secrets), Some(_)) = (in_use, &token) {
                secrets.remember(file, &bytes);
            }
            let len = bytes.trim_ascii().len();
            match &token {
                None if unprovisioned => {
                    let missing = crate::storing::credentials::missing_source(path);
                    tracing::error!(error = %missing, "no service token: rebaseline, scan and reload stay closed")
                }
                None => {
                    tracing::warn!(path = %path.display(), "service token file is empty: rebaseline, scan and reload stay closed")
                }
                Some(_) if len < SHORT => {
                    tracing::warn!(path = %path.display(), len, "service token is short; use 32 random bytes (e.g. `openssl rand -hex 32`)")
                }
                Some(_) => {}
            }
            Ok(token)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_units_marker_for_a_missing_source_is_no_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("service-token");
        std::fs::write(&p, protocol::token::UNPROVISIONED).expect("write");
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        assert!(load(&p).expect("not exposed").is_none(), "no token at all");
        std::fs::write(&p, b"0123456789abcdef0123\n").expect("write");
        assert!(load(&p).expect("a token").is_some());
    }
}
