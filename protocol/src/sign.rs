//! HMAC-SHA256 over the exact bytes each artifact defines, compared in constant time.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::hexfmt;

/// The `hmac` value of an artifact made while no key file existed.
pub const UNSIGNED: &str = "unsigned";

/// Shortest key accepted: 256 bits, the HMAC-SHA256 block-security level.
pub const MIN_KEY_LEN: usize = 32;

/// Longest key file read; anything longer is a misconfiguration, not a key.
pub const MAX_KEY_LEN: usize = 4096;

/// Domain separator prefixed to a scan report's JSON before signing, so a report can never
/// be passed off as a baseline or the other way round.
pub const REPORT_DOMAIN: &[u8] = b"integrity-monitor.scan-report.v1\n";

/// Hex HMAC-SHA256 of the concatenation of `parts` under `key`.
pub fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    hexfmt::encode(&hmac_raw(key, parts))
}

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
pub fn hmac_raw(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; new_from_slice cannot fail for Hmac<Sha256>.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable_key(),
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// An HMAC-SHA256 that serializers write into, so a manifest of a million entries is signed
/// without its signed bytes ever being held whole. Writing never fails.
pub struct MacWriter(Hmac<Sha256>);

impl MacWriter {
    /// A MAC under `key`.
    pub fn new(key: &[u8]) -> MacWriter {
        match Hmac::<Sha256>::new_from_slice(key) {
            Ok(mac) => MacWriter(mac),
            Err(_) => unreachable_key(),
        }
    }

    /// The MAC of everything written.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into_bytes().into()
    }

    /// True when `claimed` is the hex MAC of everything written; compared in constant time.
    pub fn matches_hex(self, claimed: &str) -> bool {
        matches_hex(&self.finish(), claimed)
    }
}

impl std::io::Write for MacWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cold]
fn unreachable_key() -> ! {
    // Hmac::new_from_slice only fails for fixed-key-size MACs, which HMAC is not.
    std::process::abort()
}

/// True when `claimed` is the hex HMAC of `parts` under `key`; compared in constant time.
pub fn verify_hex(key: &[u8], parts: &[&[u8]], claimed: &str) -> bool {
    matches_hex(&hmac_raw(key, parts), claimed)
}

/// True when `claimed` is the hex of `expected`; compared in constant time.
fn matches_hex(expected: &[u8; 32], claimed: &str) -> bool {
    let Some(claimed) = hexfmt::decode(claimed) else {
        return false;
    };
    claimed.len() == expected.len() && bool::from(expected.ct_eq(&claimed[..]))
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hexfmt::encode(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mac = hmac_hex(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            mac,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify_hex(
            b"Jefe",
            &[b"what do ya want for nothing?"],
            &mac
        ));
        assert!(!verify_hex(
            b"Jefx",
            &[b"what do ya want for nothing?"],
            &mac
        ));
        assert!(!verify_hex(
            b"Jefe",
            &[b"what do ya want for nothing?"],
            "unsigned"
        ));
        assert!(!verify_hex(
            b"Jefe",
            &[b"what do ya want for nothing?"],
            &mac[..62]
        ));
    }
}
