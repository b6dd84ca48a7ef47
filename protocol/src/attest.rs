//! Nonce-fresh attestation: the hasher's signed statement of its latest completed scan, which
//! the api can delay but not forge.
//!
//! Encoding: `payload` is the compact JSON of [`Attestation`] with its fields in declaration
//! order; `hmac` is hex HMAC-SHA256, keyed with the raw key file bytes, over
//! `integrity-monitor.attestation.v5\n` followed by the payload bytes (v5 added
//! `rollback_anchor` and `tpm_counter`).

use serde::{Deserialize, Serialize};

use crate::report::Violation;

/// Domain separator prefixed to the payload before signing.
pub const DOMAIN: &[u8] = b"integrity-monitor.attestation.v5\n";
/// Shortest nonce accepted, in bytes.
pub const MIN_NONCE: usize = 16;
/// Longest nonce accepted, in bytes.
pub const MAX_NONCE: usize = 64;

/// What the hasher attests to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    /// The verifier's nonce, hex.
    pub nonce: String,
    /// Sequence number of the hasher's latest completed scan.
    pub scan_seq: u64,
    /// When that scan completed (RFC 3339, UTC): the appliance's wall clock, for people.
    pub scan_completed_at: String,
    /// Milliseconds from that scan's completion to the signing of this attestation, on the
    /// hasher's monotonic clock: freshness that no wall-clock jump can fake or break.
    pub scan_age_ms: u64,
    /// SHA-256 (hex) of the baseline manifest it compared against.
    pub baseline_digest: String,
    /// The store generation of that baseline: a verifier pins the oldest it accepts.
    pub baseline_generation: u64,
    /// The OS image's release commit in force with that baseline, if one is recorded: a
    /// verifier pins the commits it allows (commits have no order).
    pub release: Option<String>,
    /// What guards that baseline against a rollback: `tpm` (the TPM's NV counter, which the
    /// store's generation is pinned to) or `audit-log` (the api's files only).
    pub rollback_anchor: String,
    /// The TPM counter's value, when it is the anchor.
    pub tpm_counter: Option<u64>,
    /// Violations it found, all of them.
    pub violation_count: u32,
    /// The first 256 violations.
    pub violations: Vec<Violation>,
    /// The policy's degradation_threshold.
    pub degradation_threshold: u32,
    /// The audit chain head the api reported when it asked: its `seq`.
    pub audit_seq: u64,
    /// The audit chain head: hex SHA-256 of the last record's line.
    pub audit_head: String,
    /// When the hasher signed this (RFC 3339, UTC).
    pub issued_at: String,
}

/// True when `nonce` is 16 to 64 bytes of hex.
pub fn nonce_ok(nonce: &str) -> bool {
    crate::hexfmt::decode(nonce).is_some_and(|b| (MIN_NONCE..=MAX_NONCE).contains(&b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a verifier checks: the payload's bytes (fields in declaration order) and both
    /// signatures over them. A refactor that moves one byte fails here.
    #[test]
    fn an_attestation_is_pinned_byte_for_byte() {
        let attestation = Attestation {
            nonce: "0f".repeat(16),
            scan_seq: 7,
            scan_completed_at: "2026-01-01T00:00:00Z".into(),
            scan_age_ms: 1234,
            baseline_digest: "a".repeat(64),
            baseline_generation: 3,
            release: Some("c0ffee".into()),
            rollback_anchor: "tpm".into(),
            tpm_counter: Some(3),
            violation_count: 1,
            violations: vec![crate::report::tests::violation()],
            degradation_threshold: 3,
            audit_seq: 42,
            audit_head: "b".repeat(64),
            issued_at: "2026-01-01T00:00:01Z".into(),
        };
        let payload = serde_json::to_vec(&attestation).unwrap_or_default();
        assert_eq!(String::from_utf8_lossy(&payload), GOLDEN_PAYLOAD);
        let key = [7u8; 32];
        assert_eq!(
            crate::sign::hmac_hex(&key, &[DOMAIN, &payload]),
            GOLDEN_HMAC
        );
        assert_eq!(
            crate::fleet::Signer::derive(&key).sign(&[DOMAIN, &payload]),
            GOLDEN_ED25519
        );
    }

    const GOLDEN_PAYLOAD: &str = "{\"nonce\":\"0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f\",\"scan_seq\":7,\"scan_completed_at\":\"2026-01-01T00:00:00Z\",\"scan_age_ms\":1234,\"baseline_digest\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"baseline_generation\":3,\"release\":\"c0ffee\",\"rollback_anchor\":\"tpm\",\"tpm_counter\":3,\"violation_count\":1,\"violations\":[{\"detected_at\":\"2026-01-01T00:00:00Z\",\"category\":\"model_file\",\"path\":\"/var/lib/m/a.gguf\",\"expected_hash\":\"none\",\"actual_hash\":\"unregistered\",\"action\":\"quarantine_model\"}],\"degradation_threshold\":3,\"audit_seq\":42,\"audit_head\":\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\",\"issued_at\":\"2026-01-01T00:00:01Z\"}";
    const GOLDEN_HMAC: &str = "80465f3987013c19d2446f992f6c2399a116a9384f4822a53e7ff6264dc99e33";
    const GOLDEN_ED25519: &str = "f18326268ce6b993:340f1be46419e76594133e461674a3eb3d0f557087d2c994700f0528303f398dc5fbd95505393b7dc08538dea4b8438b1d384cf1de304a97fbd12c56696bd600";
}
