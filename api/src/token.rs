//! The api's gate for token-protected endpoints. It holds no token: the hasher, which reads
//! the service token, hands over its SHA-256, and the api compares the SHA-256 of what a client
//! presents, in constant time. The hasher checks the token again before it makes a baseline.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// SHA-256 of the service token.
#[derive(Clone, Copy)]
pub struct Token([u8; 32]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The gate for a hex SHA-256 digest; `None` when it is not one.
    pub fn from_digest_hex(hex: &str) -> Option<Token> {
        let bytes = protocol::hexfmt::decode(hex)?;
        Some(Token(bytes.try_into().ok()?))
    }

    /// Constant-time check of a presented token (surrounding whitespace ignored, as when the
    /// hasher read the file).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.trim_ascii()).into();
        bool::from(self.0.ct_eq(&digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_exact_token() {
        let hex = protocol::hexfmt::encode(&Sha256::digest(b"0123456789abcdef0123"));
        let t = Token::from_digest_hex(&hex).expect("a digest");
        assert!(t.matches(b"0123456789abcdef0123"));
        assert!(!t.matches(b"0123456789abcdef012"));
        assert!(!t.matches(b""));
        assert!(Token::from_digest_hex("abc").is_none());
    }
}
