//! The appliance's public-key signature, beside the HMAC: Ed25519 over exactly the bytes the
//! HMAC covers (the same domain separator, then the same payload), so a fleet verifier checks
//! an attestation or a scan report with the public key alone and cannot forge one. Those bytes
//! are hashed first (SHA-256, at the speed the HMAC runs), and the signed message is
//! [`PREHASH`] followed by that digest: a 125 KB report then costs one SHA-256 pass and a
//! 32-byte signature, not Ed25519's two SHA-512 passes over it (0.9 ms here, measured by
//! `cargo bench -p integrity-hasher --bench sign`). The signing
//! key is derived from the HMAC key (HKDF-SHA256 under a label of its own: nothing new to
//! provision or rotate) and exists only in the hasher and in `integrity-monitor public-key`.
//!
//! Text forms: a public key is `ed25519:<64 hex>`; its id is the first 8 bytes of its SHA-256,
//! in hex; a signature is `<id>:<128 hex>`, so a verifier holding many appliances' keys knows
//! which one was meant, and another appliance's key is refused by name.

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// HKDF `info` of the signing key.
const LABEL: &[u8] = b"integrity-monitor ed25519 signing key v1";
/// What the Ed25519 message begins with, before the SHA-256 of the signed bytes.
pub const PREHASH: &[u8] = b"integrity-monitor.ed25519.sha256.v1\n";
/// How a public key's text begins.
pub const KEY_PREFIX: &str = "ed25519:";

/// Why a signature or a public key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FleetError {
    /// The public key's text is not `ed25519:` and 64 hex digits of a valid point.
    #[error("not an Ed25519 public key (want `ed25519:` and 64 hex digits)")]
    BadKey,
    /// The signature's text is not `<id>:<128 hex>`.
    #[error("not an Ed25519 signature (want `<key id>:<128 hex digits>`)")]
    BadSignature,
    /// Signed under another key.
    #[error("signed by key {found}, not by this appliance's key {expected}")]
    OtherKey {
        /// The id the signature names.
        found: String,
        /// The id of the key given.
        expected: String,
    },
    /// The bytes are not the ones signed (altered, forged).
    #[error("the Ed25519 signature does not verify: forged or altered")]
    Mismatch,
}

/// The appliance's signing key, derived from the HMAC key's bytes (wiped when dropped).
pub struct Signer(SigningKey);

impl Signer {
    /// Derives the signing key from the HMAC key file's bytes, exactly as read.
    pub fn derive(hmac_key: &[u8]) -> Signer {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        // 32 bytes are far below HKDF-SHA256's limit: expand cannot fail.
        let _ = hkdf::Hkdf::<Sha256>::new(None, hmac_key).expand(LABEL, seed.as_mut_slice());
        Signer(SigningKey::from_bytes(&seed))
    }

    /// The public key a verifier holds.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The signature (text form) of the concatenation of `parts`.
    pub fn sign(&self, parts: &[&[u8]]) -> String {
        let sig = self.0.sign(&message(parts));
        format!(
            "{}:{}",
            self.public().id(),
            crate::hexfmt::encode(&sig.to_bytes())
        )
    }
}

/// The Ed25519 message for `parts`: [`PREHASH`], then SHA-256 of their concatenation.
fn message(parts: &[&[u8]]) -> Vec<u8> {
    let mut sha = Sha256::new();
    for part in parts {
        sha.update(part);
    }
    [PREHASH, sha.finalize().as_slice()].concat()
}

/// An appliance's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// The key's id: hex of the first 8 bytes of SHA-256 of its 32 bytes.
    pub fn id(&self) -> String {
        crate::hexfmt::encode(&Sha256::digest(self.0.as_bytes())[..8])
    }

    /// Parses `ed25519:<64 hex>` (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<PublicKey, FleetError> {
        let hex = text
            .trim()
            .strip_prefix(KEY_PREFIX)
            .ok_or(FleetError::BadKey)?;
        let bytes: [u8; 32] = crate::hexfmt::decode(hex)
            .and_then(|b| b.try_into().ok())
            .ok_or(FleetError::BadKey)?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| FleetError::BadKey)
    }

    /// Checks `signature` (text form) over the concatenation of `parts` (strict: no
    /// malleable or small-order forms).
    pub fn verify(&self, parts: &[&[u8]], signature: &str) -> Result<(), FleetError> {
        let (id, hex) = signature.split_once(':').ok_or(FleetError::BadSignature)?;
        if id != self.id() {
            return Err(FleetError::OtherKey {
                found: id.to_owned(),
                expected: self.id(),
            });
        }
        let bytes: [u8; 64] = crate::hexfmt::decode(hex)
            .and_then(|b| b.try_into().ok())
            .ok_or(FleetError::BadSignature)?;
        let sig = ed25519_dalek::Signature::from_bytes(&bytes);
        self.0
            .verify_strict(&message(parts), &sig)
            .map_err(|_| FleetError::Mismatch)
    }

    /// Whether `text` has the form of a signature.
    pub fn signature_form_ok(text: &str) -> bool {
        text.split_once(':').is_some_and(|(id, sig)| {
            id.len() == 16
                && sig.len() == 128
                && id.bytes().chain(sig.bytes()).all(|c| c.is_ascii_hexdigit())
        })
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{KEY_PREFIX}{}",
            crate::hexfmt::encode(self.0.as_bytes())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_key_verifies_what_its_appliance_signed_and_nothing_else() {
        let signer = Signer::derive(&[7u8; 32]);
        let public = PublicKey::parse(&signer.public().to_string()).expect("round trip");
        assert_eq!(public, signer.public());
        let sig = signer.sign(&[b"domain\n", b"payload"]);
        assert!(PublicKey::signature_form_ok(&sig));
        assert_eq!(public.verify(&[b"domain\npayload"], &sig), Ok(()));
        // Altered bytes, another domain, an altered signature: refused.
        assert_eq!(
            public.verify(&[b"domain\npayloaD"], &sig),
            Err(FleetError::Mismatch)
        );
        let mut bad = sig.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
        let bad = String::from_utf8(bad).expect("ascii");
        assert_eq!(
            public.verify(&[b"domain\npayload"], &bad),
            Err(FleetError::Mismatch)
        );
        // Another appliance's key (another HMAC key) is named, not tried.
        let other = Signer::derive(&[8u8; 32]).public();
        assert!(matches!(
            other.verify(&[b"domain\npayload"], &sig),
            Err(FleetError::OtherKey { .. })
        ));
        // Deterministic: the same key and bytes give the same signature (RFC 8032).
        assert_eq!(sig, signer.sign(&[b"domain\npayload"]));
        assert_eq!(PublicKey::parse("ed25519:00"), Err(FleetError::BadKey));
        assert_eq!(
            public.verify(&[b"x"], "nocolon"),
            Err(FleetError::BadSignature)
        );
    }

    #[test]
    fn the_signing_key_is_not_the_hmac_key_and_follows_it() {
        let hmac_key = [7u8; 32];
        let signer = Signer::derive(&hmac_key);
        assert_ne!(signer.0.to_bytes(), hmac_key);
        // Each label derives its own key from the same HMAC key.
        assert_ne!(
            Signer::derive(&hmac_key).public(),
            Signer::derive(&[7u8; 33]).public()
        );
    }
}
