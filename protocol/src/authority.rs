//! The rebaseline authority: a key only root and the hasher hold, never the api. It is
//! derived from the HMAC key (HKDF-SHA256 under a label of its own: nothing new to provision
//! or rotate, and knowing it reveals neither the HMAC key nor the service token). A client
//! proves it holds the key with an HMAC over a one-time challenge the hasher issued and over
//! what it asks for, so the bytes of one ceremony authorise nothing a second time.

use sha2::Sha256;
use subtle::ConstantTimeEq;

/// HKDF `info` of the rebaseline authority.
const LABEL: &[u8] = b"integrity-monitor rebaseline authority v1";
/// Domain of a proof.
const DOMAIN: &[u8] = b"integrity-monitor rebaseline proof v1\0";
/// What a proof asks for: a new baseline of the current files.
pub const REBASELINE: &str = "rebaseline";
/// Bytes of a challenge (sent as hex).
pub const CHALLENGE_LEN: usize = 32;

/// The rebaseline authority derived from the HMAC key's bytes, wiped when dropped.
pub struct Authority(zeroize::Zeroizing<[u8; 32]>);

impl Authority {
    /// Derives the authority from the HMAC key file's bytes, exactly as read.
    pub fn derive(hmac_key: &[u8]) -> Authority {
        let mut out = zeroize::Zeroizing::new([0u8; 32]);
        // 32 bytes are far below HKDF-SHA256's 8160-byte limit: expand cannot fail.
        let _ = hkdf::Hkdf::<Sha256>::new(None, hmac_key).expand(LABEL, out.as_mut_slice());
        Authority(out)
    }

    /// The proof (hex) for `challenge` (hex, as issued) asking for `action`.
    pub fn prove(&self, challenge: &str, action: &str) -> String {
        crate::hexfmt::encode(&self.mac(challenge, action))
    }

    /// Whether `proof` (hex) is this authority's for `challenge` and `action`, compared in
    /// constant time.
    pub fn verify(&self, challenge: &str, action: &str, proof: &str) -> bool {
        let Some(presented) = crate::hexfmt::Sha256Digest::from_hex(proof) else {
            return false;
        };
        bool::from(self.mac(challenge, action).ct_eq(&presented.0))
    }

    fn mac(&self, challenge: &str, action: &str) -> [u8; 32] {
        mac_under(self.0.as_slice(), challenge, action)
    }
}

fn mac_under(key: &[u8], challenge: &str, action: &str) -> [u8; 32] {
    crate::sign::hmac_raw(
        key,
        &[DOMAIN, challenge.as_bytes(), b"\0", action.as_bytes()],
    )
}

/// Whether `text` has the form of a challenge: [`CHALLENGE_LEN`] bytes of lower-case hex.
pub fn challenge_ok(text: &str) -> bool {
    crate::hexfmt::is_sha256_hex(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_holds_for_its_challenge_and_action_only() {
        let key = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n";
        let a = Authority::derive(key);
        let c = "ab".repeat(32);
        let p = a.prove(&c, REBASELINE);
        assert!(a.verify(&c, REBASELINE, &p));
        assert!(
            !a.verify(&"cd".repeat(32), REBASELINE, &p),
            "another challenge"
        );
        assert!(!a.verify(&c, "something else", &p), "another action");
        assert!(!Authority::derive(b"another appliance's key........").verify(&c, REBASELINE, &p));
        let mut flipped = p.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        assert!(!a.verify(&c, REBASELINE, &String::from_utf8(flipped).expect("ascii")));
        assert!(!a.verify(&c, REBASELINE, "not hex"));
        // The authority is neither the HMAC key nor the key's SHA-256 (which, for a key over
        // 64 bytes, is an equivalent HMAC key): a proof made with either is refused.
        for stand_in in [key.to_vec(), crate::sign::sha256_hex(key).into_bytes()] {
            let forged = crate::hexfmt::encode(&mac_under(&stand_in, &c, REBASELINE));
            assert!(!a.verify(&c, REBASELINE, &forged));
        }
    }
}
