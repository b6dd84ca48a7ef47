//! The service token, as both processes check it: only its SHA-256 is held, and what a client
//! presents is hashed and compared in constant time (surrounding whitespace ignored, as when
//! the token file was read). The hasher makes it from the file; the api gets only the digest.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What the shipped units' `SetCredential=` puts in a credential (the HMAC key, the service
/// token, the incident recorder's token) whose `LoadCredential=` source is missing: systemd 252
/// refuses an empty value. Never a secret: a 17-byte key is refused for its length, and a
/// token with this text is no token.
pub const UNPROVISIONED: &str = "(not provisioned)";

/// SHA-256 of the service token, wiped when dropped.
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

    /// The gate for a hex SHA-256 digest (what the hasher hands the api); `None` when it is
    /// not one.
    pub fn from_digest_hex(hex: &str) -> Option<Token> {
        let d = crate::hexfmt::Sha256Digest::from_hex(hex)?;
        Some(Token(zeroize::Zeroizing::new(d.0)))
    }

    /// Constant-time check of a presented token.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.trim_ascii()).into();
        bool::from(self.0.as_slice().ct_eq(digest.as_slice()))
    }

    /// Hex digest, for the api's gate (the digest of a random token reveals nothing usable).
    pub fn digest_hex(&self) -> String {
        crate::hexfmt::encode(self.0.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_exact_token_from_text_or_digest() {
        let t = Token::from_text(b"  0123456789abcdef0123\n").expect("not empty");
        let gate = Token::from_digest_hex(&t.digest_hex()).expect("a digest");
        for t in [t, gate] {
            assert!(t.matches(b"0123456789abcdef0123"));
            assert!(!t.matches(b"0123456789abcdef012"));
            assert!(!t.matches(b""));
        }
        assert!(Token::from_text(b" \n").is_none());
        assert!(Token::from_digest_hex("abc").is_none());
        assert!(Token::from_text(b"x").is_some_and(|t| t.matches(b"x")));
    }
}
