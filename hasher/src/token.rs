//! The operator's service token: read once at start, before the sandbox, kept only as its
//! SHA-256. The hasher compares it itself before it makes a baseline: the api, facing the
//! network, is not trusted with that decision.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Largest token file read.
const MAX_LEN: usize = 4096;
/// Below this, a token is accepted with a warning (the Go service took any length).
const SHORT: usize = 16;

/// SHA-256 of the trimmed token.
#[derive(Clone)]
pub struct Token(zeroize::Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The token in `text` (surrounding whitespace ignored); `None` when empty.
    pub fn from_text(text: &[u8]) -> Option<Token> {
        let t = text.trim_ascii();
        (!t.is_empty()).then(|| Token(zeroize::Zeroizing::new(Sha256::digest(t).into())))
    }

    /// Constant-time check of a presented token.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.trim_ascii()).into();
        bool::from(self.0.as_slice().ct_eq(digest.as_slice()))
    }

    /// Hex digest, for the api's gate (the digest of a random token reveals nothing usable).
    pub fn digest_hex(&self) -> String {
        protocol::hexfmt::encode(self.0.as_slice())
    }
}

/// Loads the token; `Ok(None)` (logged) when there is none: then only a first initialization
/// can make a baseline and the api keeps its token-gated endpoints closed. A token file others
/// may read or its group write is refused, as the key is (`credentials::exposed`).
pub fn load(path: &Path) -> Result<Option<Token>, crate::error::TokenError> {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if let Some(dir) = imsys::paths::world_writable_parent(path) {
            return Err(crate::error::TokenError::OpenDir {
                path: path.to_owned(),
                dir,
            });
        }
        let mode = m.permissions().mode() & 0o7777;
        if crate::credentials::exposed(mode) {
            return Err(crate::error::TokenError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
    }
    match crate::fsread::read_secret(path, MAX_LEN) {
        Err(why) => {
            tracing::warn!(path = %path.display(), why = %why, "no service token: rebaseline, scan and reload stay closed");
            Ok(None)
        }
        Ok(bytes) => {
            let token = if crate::credentials::is_unprovisioned(&bytes) {
                None
            } else {
                Token::from_text(&bytes)
            };
            let len = bytes.trim_ascii().len();
            match &token {
                None => match crate::credentials::missing_source(path) {
                    Some(missing) => {
                        tracing::error!(error = %missing, "no service token: rebaseline, scan and reload stay closed")
                    }
                    None => {
                        tracing::warn!(path = %path.display(), "service token file is empty: rebaseline, scan and reload stay closed")
                    }
                },
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
    fn matches_only_the_exact_token() {
        let t = Token::from_text(b"  0123456789abcdef0123\n").expect("not empty");
        assert!(t.matches(b"0123456789abcdef0123"));
        assert!(!t.matches(b"0123456789abcdef012"));
        assert!(!t.matches(b""));
        assert!(Token::from_text(b" \n").is_none());
        assert!(Token::from_text(b"x").is_some_and(|t| t.matches(b"x")));
    }

    #[test]
    fn our_units_marker_for_a_missing_source_is_no_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("service-token");
        std::fs::write(&p, b"(not provisioned)").expect("write");
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        assert!(load(&p).expect("not exposed").is_none(), "no token at all");
        std::fs::write(&p, b"0123456789abcdef0123\n").expect("write");
        assert!(load(&p).expect("a token").is_some());
    }
}
