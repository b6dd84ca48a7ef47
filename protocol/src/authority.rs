//! The rebaseline authority: a key only root and the hasher hold, never the api. It is
//! derived from the HMAC key (HKDF-SHA256 under a label of its own: nothing new to provision
//! or rotate, and knowing it reveals neither the HMAC key nor the service token). A client
//! proves it holds the key with an HMAC over a challenge the hasher issued, the digest of the
//! signed plan it approved (`crate::plan`) and the generation that plan is adopted at: a
//! proof adopts that exact candidate at that generation or nothing, and the generation moves
//! with the first adoption, so the bytes of one ceremony authorise nothing a second time.

use sha2::Sha256;
use subtle::ConstantTimeEq;

/// HKDF `info` of the rebaseline authority.
const LABEL: &[u8] = b"integrity-monitor rebaseline authority v1";
/// Domain of a proof (v1 proofs covered a challenge and the word "rebaseline" only).
const DOMAIN: &[u8] = b"integrity-monitor rebaseline proof v2\0";
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

    /// The proof (hex) for `challenge` (hex, as issued) approving the plan of digest `plan`
    /// (hex) at `generation`.
    pub fn prove(&self, challenge: &str, plan: &str, generation: u64) -> String {
        crate::hexfmt::encode(&self.mac(challenge, plan, generation))
    }

    /// Whether `proof` (hex) is this authority's for `challenge`, `plan` and `generation`,
    /// compared in constant time.
    pub fn verify(&self, challenge: &str, plan: &str, generation: u64, proof: &str) -> bool {
        let Some(presented) = crate::hexfmt::Sha256Digest::from_hex(proof) else {
            return false;
        };
        bool::from(self.mac(challenge, plan, generation).ct_eq(&presented.0))
    }

    fn mac(&self, challenge: &str, plan: &str, generation: u64) -> [u8; 32] {
        mac_under(self.0.as_slice(), challenge, plan, generation)
    }
}

fn mac_under(key: &[u8], challenge: &str, plan: &str, generation: u64) -> [u8; 32] {
    let generation = generation.to_string();
    crate::sign::hmac_raw(
        key,
        &[
            DOMAIN,
            challenge.as_bytes(),
            b"\0",
            plan.as_bytes(),
            b"\0",
            generation.as_bytes(),
        ],
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
    fn a_proof_holds_for_its_challenge_plan_and_generation_only() {
        let key = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n";
        let a = Authority::derive(key);
        let c = "ab".repeat(32);
        let plan = "ef".repeat(32);
        let p = a.prove(&c, &plan, 3);
        assert!(a.verify(&c, &plan, 3, &p));
        assert!(
            !a.verify(&"cd".repeat(32), &plan, 3, &p),
            "another challenge"
        );
        assert!(!a.verify(&c, &"12".repeat(32), 3, &p), "another plan");
        assert!(!a.verify(&c, &plan, 4, &p), "another generation");
        assert!(!Authority::derive(b"another appliance's key........").verify(&c, &plan, 3, &p));
        let mut flipped = p.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        assert!(!a.verify(&c, &plan, 3, &String::from_utf8(flipped).expect("ascii")));
        assert!(!a.verify(&c, &plan, 3, "not hex"));
        // The authority is neither the HMAC key nor the key's SHA-256 (which, for a key over
        // 64 bytes, is an equivalent HMAC key): a proof made with either is refused.
        for stand_in in [key.to_vec(), crate::sign::sha256_hex(key).into_bytes()] {
            let forged = crate::hexfmt::encode(&mac_under(&stand_in, &c, &plan, 3));
            assert!(!a.verify(&c, &plan, 3, &forged));
        }
    }
}
