//! Scan reports and violations: what the hasher found, signed, and what the api accepts of it.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::category::{Action, Category};
use crate::hexfmt::is_sha256_hex;
use crate::sign::{self, UNSIGNED};

/// Most violations listed in one report; the count beyond is still given in `violation_count`.
pub const MAX_REPORTED_VIOLATIONS: usize = 256;
/// Longest path accepted anywhere in the protocol (Linux PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest timestamp string accepted.
pub const MAX_TIME_LEN: usize = 64;

/// `expected_hash` of a file the baseline does not list (the markers an `actual_hash` may
/// carry are [`crate::Finding`]'s).
pub const NONE: &str = "none";

/// Prefix of a path shown escaped because it is not UTF-8. No real watched path can begin
/// with it (they all begin with `/`), so an escaped name never collides with another.
pub const NON_UTF8_PREFIX: &str = "non-utf8:";
/// Prefix of a path shown truncated because it is too long.
pub const TOO_LONG_PREFIX: &str = "too-long:";
/// Bytes of a too-long path kept in its display.
const TOO_LONG_KEPT: usize = 512;

/// How a path's bytes are shown in reports and logs: as they are when they are UTF-8 and fit;
/// otherwise `non-utf8:` followed by the path with `\\` for a backslash and `\xNN` for each byte
/// that is not UTF-8 (an injective escape), or `too-long:` with the first 512 bytes and the
/// length. Never lossy where it matters: two different names never share a display.
pub fn display_path(bytes: &[u8]) -> String {
    let shown = match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            let mut out = String::from(NON_UTF8_PREFIX);
            for chunk in bytes.utf8_chunks() {
                for c in chunk.valid().chars() {
                    if c == '\\' {
                        out.push_str("\\\\");
                    } else {
                        out.push(c);
                    }
                }
                for b in chunk.invalid() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            out
        }
    };
    if shown.len() <= MAX_PATH_LEN {
        return shown;
    }
    let mut cut = TOO_LONG_KEPT;
    while !shown.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{TOO_LONG_PREFIX}{}…({} bytes)", &shown[..cut], bytes.len())
}

/// One file that does not match the baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// When the hasher saw it (RFC 3339, UTC).
    pub detected_at: String,
    /// Category of the watched path.
    pub category: Category,
    /// Absolute path of the file.
    pub path: String,
    /// SHA-256 hex from the baseline, or `"none"`.
    pub expected_hash: String,
    /// The digest found now, or a finding such as `"missing"` (written as today's string).
    pub actual_hash: crate::finding::Actual,
    /// Consequence, fixed by the category.
    pub action: Action,
}

/// The outcome of one complete scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanReport {
    /// Scan sequence number, counting from 1 at hasher start.
    pub seq: u64,
    /// When the scan completed (RFC 3339, UTC).
    pub completed_at: String,
    /// SHA-256 hex of the baseline manifest the scan compared against.
    pub baseline_digest: String,
    /// Files examined.
    pub watched_files: u32,
    /// Bytes read and hashed.
    pub bytes_hashed: u64,
    /// Wall time of the scan.
    pub duration_ms: u64,
    /// All violations found, including those not listed.
    pub violation_count: u32,
    /// The first [`MAX_REPORTED_VIOLATIONS`] violations, sorted by path.
    pub violations: Vec<Violation>,
    /// Files that changed and await their settle read: read again once the kernel's
    /// writeback window has passed, since a write into a page a shared mapping already dirtied
    /// moves no timestamp and raises no event. Until then they are not proven.
    #[serde(default)]
    pub unsettled: u32,
    /// Watched files proven by their fs-verity seal: found sealed, with the seal bound to
    /// their content, at their last check.
    #[serde(default)]
    pub sealed_files: u32,
}

/// A report and the hasher's HMAC over it (`"unsigned"` without a key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReport {
    /// The report.
    pub report: ScanReport,
    /// Hex HMAC-SHA256 of [`sign::REPORT_DOMAIN`] followed by the report's compact JSON.
    pub hmac: String,
    /// Ed25519 over the same bytes (`<key id>:<hex>`, see [`crate::fleet`]); empty unsigned.
    #[serde(default)]
    pub ed25519: String,
}

/// Why a received report was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReportError {
    /// A field is outside its bounds or form.
    #[error("scan report field `{field}` is invalid: {why}")]
    Field {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

fn bad(field: &'static str, why: impl Into<String>) -> ReportError {
    ReportError::Field {
        field,
        why: why.into(),
    }
}

impl ScanReport {
    /// The compact JSON the HMAC covers (after [`sign::REPORT_DOMAIN`]).
    pub fn signing_json(&self) -> Vec<u8> {
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Signs the report with `key` (HMAC) and `signer` (Ed25519, over the same bytes), or
    /// marks it unsigned.
    pub fn sign(self, key: Option<(&[u8], &crate::fleet::Signer)>) -> SignedReport {
        let json = self.signing_json();
        let (hmac, ed25519) = match key {
            Some((key, signer)) => (
                sign::hmac_hex(key, &[sign::REPORT_DOMAIN, &json]),
                signer.sign(&[sign::REPORT_DOMAIN, &json]),
            ),
            None => (UNSIGNED.to_owned(), String::new()),
        };
        SignedReport {
            report: self,
            hmac,
            ed25519,
        }
    }
}

impl SignedReport {
    /// Checks every field's form and bound; the api accepts nothing else.
    pub fn validate(&self) -> Result<(), ReportError> {
        let r = &self.report;
        if self.hmac != UNSIGNED && !is_sha256_hex(&self.hmac) {
            return Err(bad("hmac", "neither 64 hex digits nor \"unsigned\""));
        }
        if (self.hmac == UNSIGNED) != self.ed25519.is_empty()
            || !(self.ed25519.is_empty()
                || crate::fleet::PublicKey::signature_form_ok(&self.ed25519))
        {
            return Err(bad(
                "ed25519",
                "not `<key id>:<128 hex>` beside an HMAC, nor empty",
            ));
        }
        check_time("completed_at", &r.completed_at)?;
        if !is_sha256_hex(&r.baseline_digest) {
            return Err(bad("baseline_digest", "not 64 hex digits"));
        }
        if r.violations.len() > MAX_REPORTED_VIOLATIONS {
            return Err(bad(
                "violations",
                format!(
                    "{} listed, cap is {MAX_REPORTED_VIOLATIONS}",
                    r.violations.len()
                ),
            ));
        }
        if r.violations.len() > r.violation_count as usize {
            return Err(bad("violation_count", "smaller than the violations listed"));
        }
        if r.violation_count > 0 && r.violations.is_empty() {
            return Err(bad("violations", "count is non-zero but none are listed"));
        }
        if r.sealed_files > r.watched_files {
            return Err(bad("sealed_files", "more than the files watched"));
        }
        r.violations.iter().try_for_each(Violation::validate)
    }
}

impl Violation {
    /// Checks path, hashes, time and that the action matches the category.
    pub fn validate(&self) -> Result<(), ReportError> {
        check_time("detected_at", &self.detected_at)?;
        check_path("path", &self.path)?;
        // `actual_hash` is typed: its form was checked as it was read.
        let value = &self.expected_hash;
        let marker = value == NONE || crate::Finding::parse(value).is_some();
        if !is_sha256_hex(value) && !marker {
            return Err(bad(
                "expected_hash",
                "neither a SHA-256 hex digest nor a known marker",
            ));
        }
        if self.action != self.category.action() {
            return Err(bad("action", "does not match the category"));
        }
        Ok(())
    }
}

/// Rejects a path that is not absolute, too long, or carries NUL or `..` components.
pub fn check_path(field: &'static str, path: &str) -> Result<(), ReportError> {
    let path = path
        .strip_prefix(NON_UTF8_PREFIX)
        .or_else(|| path.strip_prefix(TOO_LONG_PREFIX))
        .unwrap_or(path);
    if !path.starts_with('/') {
        return Err(bad(field, "not absolute"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(bad(field, format!("longer than {MAX_PATH_LEN} bytes")));
    }
    if path.contains('\0') || path.split('/').any(|c| c == "..") {
        return Err(bad(field, "contains NUL or a `..` component"));
    }
    Ok(())
}

fn check_time(field: &'static str, value: &str) -> Result<(), ReportError> {
    if value.is_empty()
        || value.len() > MAX_TIME_LEN
        || !value.bytes().all(|c| c.is_ascii_graphic())
    {
        return Err(bad(field, "not a short printable timestamp"));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn path_display_is_injective_and_bounded() {
        assert_eq!(display_path(b"/m/ok"), "/m/ok");
        let a = display_path(b"/m/ok\xff");
        let b = display_path(b"/m/ok\xfe");
        let c = display_path("/m/ok\u{FFFD}".as_bytes());
        let d = display_path(b"/m/ok\\xff");
        assert_eq!(a, "non-utf8:/m/ok\\xff");
        assert!(a != b && a != c && b != c && a != d, "{a} {b} {c} {d}");
        assert!(check_path("p", &a).is_ok());
        let long = format!("/m/{}", "x".repeat(5000));
        let shown = display_path(long.as_bytes());
        assert!(
            shown.starts_with(TOO_LONG_PREFIX) && shown.len() < 600,
            "{shown}"
        );
        assert!(check_path("p", &shown).is_ok());
    }

    /// A violation as a scan reports one (the attestation's tests list it too).
    pub(crate) fn violation() -> Violation {
        Violation {
            detected_at: "2026-01-01T00:00:00Z".into(),
            category: Category::ModelFile,
            path: "/var/lib/m/a.gguf".into(),
            expected_hash: NONE.into(),
            actual_hash: crate::Finding::Unregistered.into(),
            action: Action::QuarantineModel,
        }
    }

    fn report(violations: Vec<Violation>) -> ScanReport {
        ScanReport {
            seq: 1,
            completed_at: "2026-01-01T00:00:00Z".into(),
            baseline_digest: "0".repeat(64),
            watched_files: 3,
            bytes_hashed: 10,
            duration_ms: 1,
            violation_count: u32::try_from(violations.len()).unwrap_or(u32::MAX),
            violations,
            unsettled: 0,
            sealed_files: 0,
        }
    }

    /// What a verifier reads: the report as served (inside `last_report`) and the bytes its
    /// HMAC and Ed25519 signature cover. A refactor that moves one byte fails here.
    #[test]
    fn a_signed_report_is_pinned_byte_for_byte() {
        let key = [7u8; 32];
        let signer = crate::fleet::Signer::derive(&key);
        let signed = report(vec![violation()]).sign(Some((&key, &signer)));
        assert_eq!(
            String::from_utf8(signed.report.signing_json()).unwrap_or_default(),
            GOLDEN_SIGNED
        );
        assert_eq!(
            serde_json::to_string(&signed).unwrap_or_default(),
            GOLDEN_SERVED
        );
    }

    const GOLDEN_SIGNED: &str = "{\"seq\":1,\"completed_at\":\"2026-01-01T00:00:00Z\",\"baseline_digest\":\"0000000000000000000000000000000000000000000000000000000000000000\",\"watched_files\":3,\"bytes_hashed\":10,\"duration_ms\":1,\"violation_count\":1,\"violations\":[{\"detected_at\":\"2026-01-01T00:00:00Z\",\"category\":\"model_file\",\"path\":\"/var/lib/m/a.gguf\",\"expected_hash\":\"none\",\"actual_hash\":\"unregistered\",\"action\":\"quarantine_model\"}],\"unsettled\":0,\"sealed_files\":0}";
    const GOLDEN_SERVED: &str = "{\"report\":{\"seq\":1,\"completed_at\":\"2026-01-01T00:00:00Z\",\"baseline_digest\":\"0000000000000000000000000000000000000000000000000000000000000000\",\"watched_files\":3,\"bytes_hashed\":10,\"duration_ms\":1,\"violation_count\":1,\"violations\":[{\"detected_at\":\"2026-01-01T00:00:00Z\",\"category\":\"model_file\",\"path\":\"/var/lib/m/a.gguf\",\"expected_hash\":\"none\",\"actual_hash\":\"unregistered\",\"action\":\"quarantine_model\"}],\"unsettled\":0,\"sealed_files\":0},\"hmac\":\"37769d810296fec3d62fe8125a5c5dfdb1eca343e4144749c8f6d433defcc553\",\"ed25519\":\"f18326268ce6b993:5f559adb3dcc3b9521c1ac491d03afafd57db81d6f86a81ff8e08ea1997a81b65ba50187da7fa0d5e5a42c5dd87f942bd30df6f519d8a6809f62aa67a6e50503\"}";

    #[test]
    fn signed_report_verifies_and_detects_change() {
        let key = [7u8; 32];
        let signer = crate::fleet::Signer::derive(&key);
        let signed = report(vec![violation()]).sign(Some((&key, &signer)));
        signed.validate().expect("valid");
        let json = signed.report.signing_json();
        assert!(sign::verify_hex(
            &key,
            &[sign::REPORT_DOMAIN, &json],
            &signed.hmac
        ));
        // The Ed25519 signature covers exactly the bytes the HMAC covers.
        let public = signer.public();
        assert_eq!(
            public.verify(&[sign::REPORT_DOMAIN, &json], &signed.ed25519),
            Ok(())
        );
        let mut forged = signed.report.clone();
        forged.violation_count = 0;
        forged.violations.clear();
        assert!(!sign::verify_hex(
            &key,
            &[sign::REPORT_DOMAIN, &forged.signing_json()],
            &signed.hmac
        ));
        assert_eq!(
            public.verify(
                &[sign::REPORT_DOMAIN, &forged.signing_json()],
                &signed.ed25519
            ),
            Err(crate::fleet::FleetError::Mismatch)
        );
        // A signed report without its Ed25519 signature is refused by its form.
        let stripped = SignedReport {
            ed25519: String::new(),
            ..signed
        };
        assert!(stripped.validate().is_err());
    }

    #[test]
    fn rejects_out_of_bounds_fields() {
        let mut v = violation();
        v.action = Action::DegradeAppliance;
        assert!(report(vec![v]).sign(None).validate().is_err());
        let mut v = violation();
        v.path = "relative/x".into();
        assert!(report(vec![v]).sign(None).validate().is_err());
        let mut v = violation();
        v.path = "/a/../etc/shadow".into();
        assert!(report(vec![v]).sign(None).validate().is_err());
        let mut v = violation();
        v.expected_hash = "<script>".into();
        assert!(report(vec![v]).sign(None).validate().is_err());
        // An actual that is neither a digest nor a finding never becomes a report.
        let json = serde_json::to_string(&violation()).unwrap_or_default();
        let forged = json.replace("\"unregistered\"", "\"<script>\"");
        assert_ne!(json, forged);
        assert!(serde_json::from_str::<Violation>(&forged).is_err());
        let many = vec![violation(); MAX_REPORTED_VIOLATIONS + 1];
        assert!(report(many).sign(None).validate().is_err());
        let mut r = report(vec![violation()]);
        r.violation_count = 0;
        assert!(r.sign(None).validate().is_err());
        let mut s = report(vec![]).sign(None);
        s.hmac = "xyz".into();
        assert!(s.validate().is_err());
    }
}
