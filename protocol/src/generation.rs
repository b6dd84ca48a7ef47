//! The generation record kept beside the baseline in the hasher's store: which baseline is the
//! current one and how many commits the store has seen. A validly signed but older baseline put
//! back, a deleted baseline, or a record that disagrees with the baseline is then recognised.
//!
//! Encoding: compact JSON `{"generation":N,"baseline_digest":"<hex SHA-256 of baseline.json>",
//! "release":"<commit>","tpm":{"index":N,"name":"<hex>","base":N},"hmac":…}` (`release` only
//! when the OS image's release is recorded in force with this baseline, `tpm` only once the
//! store is enrolled with a TPM counter, so records written before either existed verify as
//! they are);
//! `hmac` is hex HMAC-SHA256 (raw key file bytes) over `integrity-monitor.generation.v1\n`
//! followed by the compact JSON of the fields before it, or `"unsigned"` when no key is
//! configured. The release named here is why a deleted release history (`releases.bin`) is
//! noticed rather than started afresh.

use serde::{Deserialize, Serialize};

use crate::hexfmt::is_sha256_hex;
use crate::sign::{self, UNSIGNED};

/// Domain separator prefixed before signing.
pub const DOMAIN: &[u8] = b"integrity-monitor.generation.v1\n";
/// Longest TPM Name accepted, in bytes (a SHA-512 name: 2 + 64).
pub const MAX_NAME: usize = 66;
/// Largest record accepted, in bytes.
pub const MAX_LEN: usize = 1024;

/// The store's current generation and the digest of the baseline that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationRecord {
    /// Commits so far; the current baseline's `generation`.
    pub generation: u64,
    /// Hex SHA-256 of the current `baseline.json` bytes.
    pub baseline_digest: String,
    /// The OS release commit recorded in force with that baseline, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// The TPM NV counter this store is pinned to, once enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmPin>,
    /// Hex HMAC-SHA256 over the domain and the fields above, or `"unsigned"`.
    pub hmac: String,
}

/// The TPM NV counter a store is pinned to: the counter must read `base + generation` (one
/// less only between a commit and its increment). A counter cannot be set, only increased,
/// and its first increment starts it at the highest count any counter on that TPM held, so
/// `base` is whatever it read at enrolment; the Name (from `TPM2_NV_ReadPublic`: the name
/// algorithm and a digest of the public area, attributes included) keeps another index at the
/// same handle, e.g. an ordinary one whose bytes root could write, from standing in for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmPin {
    /// The NV index's handle.
    pub index: u32,
    /// Hex of the index's Name.
    pub name: String,
    /// The count at generation 0.
    pub base: u64,
}

impl TpmPin {
    /// What the counter must read at `generation` (`None`: past the counter's range).
    pub fn target(&self, generation: u64) -> Option<u64> {
        self.base.checked_add(generation)
    }
}

#[derive(Serialize)]
struct Signed<'a> {
    generation: u64,
    baseline_digest: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    release: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tpm: Option<&'a TpmPin>,
}

impl GenerationRecord {
    /// A record for `generation` and the baseline whose bytes hash to `baseline_digest`.
    pub fn new(generation: u64, baseline_digest: String, key: Option<&[u8]>) -> GenerationRecord {
        GenerationRecord::with_release(generation, baseline_digest, None, key)
    }

    /// As [`GenerationRecord::new`], naming the release in force with the baseline.
    pub fn with_release(
        generation: u64,
        baseline_digest: String,
        release: Option<String>,
        key: Option<&[u8]>,
    ) -> GenerationRecord {
        GenerationRecord::pinned(generation, baseline_digest, release, None, key)
    }

    /// As [`GenerationRecord::with_release`], pinned to a TPM counter.
    pub fn pinned(
        generation: u64,
        baseline_digest: String,
        release: Option<String>,
        tpm: Option<TpmPin>,
        key: Option<&[u8]>,
    ) -> GenerationRecord {
        let mut r = GenerationRecord {
            generation,
            baseline_digest,
            release,
            tpm,
            hmac: String::new(),
        };
        r.hmac = match key {
            Some(k) => sign::hmac_hex(k, &[DOMAIN, &r.signing_bytes()]),
            None => UNSIGNED.to_owned(),
        };
        r
    }

    fn signing_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&Signed {
            generation: self.generation,
            baseline_digest: &self.baseline_digest,
            release: self.release.as_deref(),
            tpm: self.tpm.as_ref(),
        })
        .unwrap_or_default()
    }

    /// The stored form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and checks the record: form, then the HMAC against `key` (an unsigned record is
    /// accepted only without a key, a signed one only with it).
    pub fn parse_verified(
        bytes: &[u8],
        key: Option<&[u8]>,
    ) -> Result<GenerationRecord, RecordError> {
        if bytes.len() > MAX_LEN {
            return Err(RecordError::TooLarge);
        }
        let r: GenerationRecord =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Malformed(e.to_string()))?;
        if !is_sha256_hex(&r.baseline_digest)
            || r.generation == 0
            || r.release
                .as_deref()
                .is_some_and(|c| !crate::standing::commit_ok(c))
            || r.tpm.as_ref().is_some_and(|t| {
                t.name.len() > 2 * MAX_NAME || crate::hexfmt::decode(&t.name).is_none()
            })
        {
            return Err(RecordError::OutOfForm);
        }
        match key {
            Some(k)
                if r.hmac != UNSIGNED
                    && sign::verify_hex(k, &[DOMAIN, &r.signing_bytes()], &r.hmac) =>
            {
                Ok(r)
            }
            Some(_) => Err(RecordError::BadHmac),
            None if r.hmac == UNSIGNED => Ok(r),
            None => Err(RecordError::KeyMissing),
        }
    }
}

/// Why a generation record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Larger than any record written.
    #[error("larger than {MAX_LEN} bytes")]
    TooLarge,
    /// Not JSON of the record's shape.
    #[error("not a generation record: {0}")]
    Malformed(String),
    /// A field out of form.
    #[error("baseline_digest or generation out of form")]
    OutOfForm,
    /// The HMAC does not match the key.
    #[error("HMAC does not verify (altered, unsigned, or signed with another key)")]
    BadHmac,
    /// Signed, but there is no key to check it with.
    #[error("signed, but no HMAC key is configured to check it")]
    KeyMissing,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = [3u8; 32];
        let r = GenerationRecord::new(4, "a".repeat(64), Some(&key));
        let back = GenerationRecord::parse_verified(&r.to_json(), Some(&key)).expect("verifies");
        assert_eq!(back, r);
        let edited = String::from_utf8(r.to_json())
            .unwrap_or_default()
            .replace("\"generation\":4", "\"generation\":5");
        let refused =
            |bytes: &[u8], key: Option<&[u8]>| GenerationRecord::parse_verified(bytes, key).err();
        assert_eq!(
            refused(edited.as_bytes(), Some(&key)),
            Some(RecordError::BadHmac)
        );
        assert_eq!(
            refused(&r.to_json(), Some(&[4u8; 32])),
            Some(RecordError::BadHmac)
        );
        assert_eq!(refused(&r.to_json(), None), Some(RecordError::KeyMissing));
        // The release it names is signed too; a record without one reads as before.
        let with =
            GenerationRecord::with_release(4, "a".repeat(64), Some("c0ffee".into()), Some(&key));
        assert_eq!(
            GenerationRecord::parse_verified(&with.to_json(), Some(&key)).ok(),
            Some(with.clone())
        );
        let swapped = String::from_utf8(with.to_json())
            .unwrap_or_default()
            .replace("c0ffee", "deadbeef");
        assert_eq!(
            refused(swapped.as_bytes(), Some(&key)),
            Some(RecordError::BadHmac)
        );
        let stripped = String::from_utf8(with.to_json())
            .unwrap_or_default()
            .replace(",\"release\":\"c0ffee\"", "");
        assert_eq!(
            refused(stripped.as_bytes(), Some(&key)),
            Some(RecordError::BadHmac)
        );
        assert!(!r.to_json().windows(7).any(|w| w == b"release"));
        // The TPM pin is signed too: a record re-pinned to another index, another base, or
        // stripped of its pin (to switch the TPM check off) no longer verifies.
        let pin = TpmPin {
            index: 0x013f_4d49,
            name: "000b".to_owned() + &"ab".repeat(32),
            base: 41,
        };
        let pinned = GenerationRecord::pinned(4, "a".repeat(64), None, Some(pin), Some(&key));
        assert_eq!(
            GenerationRecord::parse_verified(&pinned.to_json(), Some(&key)).ok(),
            Some(pinned.clone())
        );
        assert_eq!(pinned.tpm.as_ref().and_then(|t| t.target(4)), Some(45));
        let text = String::from_utf8(pinned.to_json()).unwrap_or_default();
        for forged in [
            text.replace("\"base\":41", "\"base\":43"),
            text.replace("\"index\":20925769", "\"index\":20925770"),
            text.replace(&"ab".repeat(32), &"cd".repeat(32)),
            text.replace(
                &format!(
                    ",\"tpm\":{{\"index\":20925769,\"name\":\"000b{}\",\"base\":41}}",
                    "ab".repeat(32)
                ),
                "",
            ),
        ] {
            assert_ne!(forged, text);
            assert_eq!(
                refused(forged.as_bytes(), Some(&key)),
                Some(RecordError::BadHmac)
            );
        }
        let unsigned = GenerationRecord::new(1, "b".repeat(64), None);
        assert_eq!(
            refused(&unsigned.to_json(), Some(&key)),
            Some(RecordError::BadHmac)
        );
        assert!(GenerationRecord::parse_verified(&unsigned.to_json(), None).is_ok());
    }
}
