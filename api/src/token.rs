//! The bearer token: read once at start, compared in constant time, never logged.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Default token file.
pub const DEFAULT_TOKEN_FILE: &str = "/run/secure-ai/service-token";
/// Shortest token accepted.
const MIN_LEN: usize = 16;
const MAX_LEN: u64 = 4096;

/// The token, held only as its SHA-256 so comparisons take the same time for any input length.
pub struct Token([u8; 32]);

impl Token {
    /// A token from its text (surrounding whitespace removed).
    pub fn from_text(text: &str) -> Option<Token> {
        let t = text.trim();
        (t.len() >= MIN_LEN).then(|| Token(Sha256::digest(t.as_bytes()).into()))
    }

    /// True when `presented` is the token.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        bool::from(self.0.ct_eq(&digest))
    }
}

/// Picks the token file: `--token-file`, else `$CREDENTIALS_DIRECTORY/service-token`, else the default.
pub fn token_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_owned();
    }
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) => Path::new(&dir).join("service-token"),
        None => PathBuf::from(DEFAULT_TOKEN_FILE),
    }
}

/// Loads the token; on any problem the mutating endpoints stay closed (503), never open.
pub fn load(path: &Path) -> Option<Token> {
    use std::io::Read;
    let mut text = String::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(MAX_LEN).read_to_string(&mut text));
    match read {
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "no service token: scan, rebaseline and reload answer 503");
            None
        }
        Ok(_) => {
            let token = Token::from_text(&text);
            if token.is_none() {
                tracing::warn!(path = %path.display(), "service token shorter than 16 characters: refused; scan, rebaseline and reload answer 503");
            }
            token
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_exact_token() {
        let t = Token::from_text("  0123456789abcdef0123\n").expect("long enough");
        assert!(t.matches(b"0123456789abcdef0123"));
        assert!(!t.matches(b"0123456789abcdef012"));
        assert!(!t.matches(b""));
        assert!(Token::from_text("short").is_none());
    }
}
