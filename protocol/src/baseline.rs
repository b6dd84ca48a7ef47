//! The baseline manifest: its JSON form on disk, the exact bytes its HMAC covers, and checks.
//!
//! Anyone holding the key can verify a manifest without this code: the HMAC is hex
//! HMAC-SHA256, keyed with the raw key file bytes, over the compact JSON
//! `{"created_at":…,"generation":…,"entries":[{"path":…,"hash":…,"category":…,"size":…},…]}`;
//! `generation` (the store's commit counter, 1 for the first baseline) is absent from
//! manifests made before it existed, and then absent from the signed bytes too.

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crate::entries::{Entries, Entry, MAX_ENTRIES};
use crate::hexfmt::is_sha256_hex;
use crate::report::{check_path, MAX_TIME_LEN};
use crate::sign::{self, UNSIGNED};

/// A baseline manifest as stored and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// When it was made (RFC 3339, UTC).
    pub created_at: String,
    /// The store's commit counter: each new baseline gets the previous one's plus one, so an
    /// older (validly signed) baseline put back is recognised. `None` in older manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Entries sorted by path, paths unique.
    pub entries: Entries,
    /// Hex HMAC-SHA256 of [`Manifest::signing_bytes`], or `"unsigned"`.
    pub hmac: String,
}

#[derive(Serialize)]
struct Signed<'a> {
    created_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: Option<u64>,
    entries: &'a Entries,
}

/// The Go service's signed object: ours with a trailing empty `hmac`.
#[derive(Serialize)]
struct GoSigned<'a> {
    created_at: &'a str,
    entries: Option<&'a Entries>,
    hmac: &'a str,
}

/// Go's `json.Marshal` escapes these even inside strings (HTML-safe output); serde_json does
/// not. They occur in the serialized manifest only inside strings (keys are plain ASCII), so a
/// replacement over the whole text is exact.
fn go_html_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Why a manifest was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BaselineError {
    /// Not JSON of the manifest's shape.
    #[error("baseline is not a valid manifest: {0}")]
    Malformed(String),
    /// A field is out of form or bounds.
    #[error("baseline field `{field}` is invalid: {why}")]
    Field {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The manifest says "unsigned" but a key exists: it could have been written by anyone.
    #[error("baseline is unsigned but an HMAC key is configured; an unsigned baseline is never accepted once a key exists")]
    UnsignedWithKey,
    /// The manifest is signed but no key is configured, so it cannot be checked.
    #[error("baseline is signed but no HMAC key is configured, so it cannot be verified; restore the key file")]
    KeyMissing,
    /// The HMAC does not match: the manifest was altered or signed with another key.
    #[error("baseline HMAC does not verify: the manifest was altered or signed with another key")]
    BadHmac,
}

impl Manifest {
    /// Builds and signs a manifest; `entries` are sorted here.
    pub fn new(created_at: String, entries: Vec<Entry>, key: Option<&[u8]>) -> Manifest {
        Manifest::with_generation(created_at, None, entries, key)
    }

    /// Builds and signs a manifest of store generation `generation`; `entries` are sorted here.
    pub fn with_generation(
        created_at: String,
        generation: Option<u64>,
        entries: Vec<Entry>,
        key: Option<&[u8]>,
    ) -> Manifest {
        Manifest::of_entries(created_at, generation, entries.into(), key)
    }

    /// As [`Manifest::with_generation`], from entries already in columns (sorted here).
    pub fn of_entries(
        created_at: String,
        generation: Option<u64>,
        mut entries: Entries,
        key: Option<&[u8]>,
    ) -> Manifest {
        entries.sort();
        let mut manifest = Manifest {
            created_at,
            generation,
            entries,
            hmac: String::new(),
        };
        manifest.hmac = match key {
            Some(key) => crate::hexfmt::encode(&manifest.mac(key).finish()),
            None => UNSIGNED.to_owned(),
        };
        manifest
    }

    /// The MAC over [`Manifest::signing_bytes`], serialized straight into it.
    fn mac(&self, key: &[u8]) -> sign::MacWriter {
        let mut mac = sign::MacWriter::new(key);
        // Writing into a MAC never fails, and a struct of strings and integers serializes.
        let _ = serde_json::to_writer(&mut mac, &self.signed());
        mac
    }

    fn signed(&self) -> Signed<'_> {
        Signed {
            created_at: &self.created_at,
            generation: self.generation,
            entries: &self.entries,
        }
    }

    /// The exact bytes the HMAC covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        // A struct of strings and integers always serializes.
        serde_json::to_vec(&self.signed()).unwrap_or_default()
    }

    /// The stored form (compact JSON, `hmac` last).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and checks the form of every field; the HMAC is checked by [`Manifest::verify`].
    pub fn parse(bytes: &[u8]) -> Result<Manifest, BaselineError> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| BaselineError::Malformed(e.to_string()))?;
        manifest.check_form()?;
        Ok(manifest)
    }

    /// As [`Manifest::parse`], from bytes as a reader yields them (a stored manifest of a
    /// million entries is parsed without being held whole beside what it parses into).
    pub fn parse_from(reader: impl std::io::Read) -> Result<Manifest, BaselineError> {
        let manifest: Manifest =
            serde_json::from_reader(reader).map_err(|e| BaselineError::Malformed(e.to_string()))?;
        manifest.check_form()?;
        Ok(manifest)
    }

    fn check_form(&self) -> Result<(), BaselineError> {
        let field = |field, why: &str| BaselineError::Field {
            field,
            why: why.to_owned(),
        };
        if self.created_at.is_empty() || self.created_at.len() > MAX_TIME_LEN {
            return Err(field("created_at", "empty or too long"));
        }
        if self.hmac != UNSIGNED && !is_sha256_hex(&self.hmac) {
            return Err(field(
                "hmac",
                "neither 64 lower-case hex digits nor \"unsigned\"",
            ));
        }
        if self.entries.len() > MAX_ENTRIES {
            return Err(field("entries", "more than the maximum of 2000000"));
        }
        for entry in self.entries.iter() {
            // The hash is a digest by its type: its form was checked as it was parsed.
            check_path("path", entry.path).map_err(|e| field("entries.path", &e.to_string()))?;
        }
        if !self.entries.is_sorted_unique() {
            return Err(field("entries", "not sorted by path or a path repeats"));
        }
        Ok(())
    }

    /// Checks the HMAC: with a key, it must verify; without one, the manifest must say unsigned.
    pub fn verify(&self, key: Option<&[u8]>) -> Result<(), BaselineError> {
        match key {
            Some(_) if self.hmac == UNSIGNED => Err(BaselineError::UnsignedWithKey),
            Some(key) if self.mac(key).matches_hex(&self.hmac) => Ok(()),
            Some(_) => Err(BaselineError::BadHmac),
            None if self.hmac == UNSIGNED => Ok(()),
            None => Err(BaselineError::KeyMissing),
        }
    }

    /// The bytes the Go service signed: compact `json.Marshal` of
    /// `{"created_at","entries","hmac":""}` with Go's HTML-safe escaping (a nil entry list is
    /// `null` there, so both forms are returned for an empty manifest).
    pub fn go_signing_bytes(&self) -> Vec<Vec<u8>> {
        let render = |entries: Option<&Entries>| {
            let json = serde_json::to_string(&GoSigned {
                created_at: &self.created_at,
                entries,
                hmac: "",
            })
            .unwrap_or_default();
            go_html_escape(&json).into_bytes()
        };
        let mut forms = vec![render(Some(&self.entries))];
        if self.entries.is_empty() {
            forms.push(render(None));
        }
        forms
    }

    /// Checks the HMAC the way the Go service signed (see [`Manifest::go_signing_bytes`]): for
    /// a stored baseline of an appliance upgraded from it. Just as strict: the key must verify.
    pub fn verify_go(&self, key: &[u8]) -> bool {
        self.generation.is_none()
            && self.hmac != UNSIGNED
            && self
                .go_signing_bytes()
                .iter()
                .any(|bytes| sign::verify_hex(key, &[bytes], &self.hmac))
    }

    /// True when signed with a key.
    pub fn is_signed(&self) -> bool {
        self.hmac != UNSIGNED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::category::Category;
    use crate::hexfmt::Sha256Digest;

    fn with_size(entries: &Entries, i: usize, size: u64) -> Entries {
        let mut v = entries.to_vec();
        v[i].size = size;
        v.into()
    }

    fn sample(key: Option<&[u8]>) -> Manifest {
        let entries = vec![
            Entry {
                path: "/b".into(),
                hash: Sha256Digest::from_hex(&"b".repeat(64)).expect("hex"),
                category: Category::PolicyFile,
                size: 2,
            },
            Entry {
                path: "/a".into(),
                hash: Sha256Digest::from_hex(&"a".repeat(64)).expect("hex"),
                category: Category::ServiceBinary,
                size: 1,
            },
        ];
        Manifest::new("2026-01-01T00:00:00Z".into(), entries, key)
    }

    /// The file on disk, which `/api/v1/baseline` serves as it is: signed and unsigned.
    #[test]
    fn the_stored_baseline_is_pinned_byte_for_byte() {
        assert_eq!(
            String::from_utf8(
                Manifest::of_entries(
                    "2026-01-01T00:00:00Z".into(),
                    Some(3),
                    sample(None).entries,
                    Some(&[7u8; 32])
                )
                .to_json()
            )
            .unwrap_or_default(),
            GOLDEN_SIGNED
        );
        assert_eq!(
            String::from_utf8(sample(None).to_json()).unwrap_or_default(),
            GOLDEN_UNSIGNED
        );
    }

    const GOLDEN_SIGNED: &str = "{\"created_at\":\"2026-01-01T00:00:00Z\",\"generation\":3,\"entries\":[{\"path\":\"/a\",\"hash\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"category\":\"service_binary\",\"size\":1},{\"path\":\"/b\",\"hash\":\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\",\"category\":\"policy_file\",\"size\":2}],\"hmac\":\"11230da1687252ddb5823baecc9309fec472c7a05e65b2d3e999f85a54252aad\"}";
    const GOLDEN_UNSIGNED: &str = "{\"created_at\":\"2026-01-01T00:00:00Z\",\"entries\":[{\"path\":\"/a\",\"hash\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"category\":\"service_binary\",\"size\":1},{\"path\":\"/b\",\"hash\":\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\",\"category\":\"policy_file\",\"size\":2}],\"hmac\":\"unsigned\"}";

    #[test]
    fn canonical_bytes_are_the_documented_json() {
        let m = sample(None);
        let expected = format!(
            "{{\"created_at\":\"2026-01-01T00:00:00Z\",\"entries\":[{{\"path\":\"/a\",\"hash\":\"{}\",\"category\":\"service_binary\",\"size\":1}},{{\"path\":\"/b\",\"hash\":\"{}\",\"category\":\"policy_file\",\"size\":2}}]}}",
            "a".repeat(64),
            "b".repeat(64)
        );
        assert_eq!(
            String::from_utf8(m.signing_bytes()).unwrap_or_default(),
            expected
        );
    }

    #[test]
    fn an_entry_hash_that_is_not_lower_case_hex_is_refused_naming_it() {
        let json = String::from_utf8(sample(None).to_json()).unwrap_or_default();
        for bad in ["A".repeat(64), "a".repeat(63), "g".repeat(64)] {
            let text = json.replacen(&"a".repeat(64), &bad, 1);
            match Manifest::parse(text.as_bytes()) {
                Err(BaselineError::Malformed(why)) => {
                    assert!(why.contains("not 64 lower-case hex digits"), "{why}")
                }
                other => panic!("{bad}: {other:?}"),
            }
            assert!(Manifest::parse_from(text.as_bytes()).is_err());
        }
    }

    #[test]
    fn the_streamed_hmac_is_the_hmac_of_the_documented_bytes() {
        let key = [7u8; 32];
        let m = sample(Some(&key));
        assert_eq!(m.hmac, sign::hmac_hex(&key, &[&m.signing_bytes()]));
        assert_eq!(m.verify(Some(&key)), Ok(()));
        let mut altered = m.clone();
        altered.entries = with_size(&m.entries, 0, 2);
        assert_eq!(altered.verify(Some(&key)), Err(BaselineError::BadHmac));
        assert_eq!(m.verify(Some(&[8u8; 32])), Err(BaselineError::BadHmac));
    }

    #[test]
    fn go_signed_baselines_verify_strictly() {
        let key = [5u8; 32];
        let entries = vec![Entry {
            path: "/m/a<b>&c\u{2028}".into(),
            hash: Sha256Digest::from_hex(&"a".repeat(64)).expect("hex"),
            category: Category::ModelFile,
            size: 1,
        }];
        let mut m = Manifest::new("2026-01-01T00:00:00.123456789Z".into(), entries, None);
        let go = String::from_utf8(m.go_signing_bytes().remove(0)).unwrap_or_default();
        assert_eq!(
            go,
            format!("{{\"created_at\":\"2026-01-01T00:00:00.123456789Z\",\"entries\":[{{\"path\":\"/m/a\\u003cb\\u003e\\u0026c\\u2028\",\"hash\":\"{}\",\"category\":\"model_file\",\"size\":1}}],\"hmac\":\"\"}}", "a".repeat(64))
        );
        m.hmac = sign::hmac_hex(&key, &[go.as_bytes()]);
        assert!(m.verify_go(&key));
        assert!(!m.verify_go(&[6u8; 32]), "another key");
        assert_eq!(
            m.verify(Some(&key)),
            Err(BaselineError::BadHmac),
            "not our format"
        );
        let mut edited = m.clone();
        edited.entries = with_size(&m.entries, 0, 2);
        assert!(!edited.verify_go(&key), "an edited entry");
        let empty = Manifest::new("t".into(), vec![], None);
        let forms = empty.go_signing_bytes();
        assert!(String::from_utf8_lossy(&forms[1]).contains("\"entries\":null"));
    }

    #[test]
    fn generation_is_signed_when_present() {
        let key = [1u8; 32];
        let m = Manifest::of_entries("t".into(), Some(7), sample(None).entries, Some(&key));
        let text = String::from_utf8(m.signing_bytes()).unwrap_or_default();
        assert!(text.starts_with("{\"created_at\":\"t\",\"generation\":7,\"entries\""));
        let parsed = Manifest::parse(&m.to_json()).expect("parses");
        parsed.verify(Some(&key)).expect("verifies");
        let mut older = parsed.clone();
        older.generation = Some(6);
        assert_eq!(older.verify(Some(&key)), Err(BaselineError::BadHmac));
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let key = [1u8; 32];
        let m = sample(Some(&key));
        let parsed = Manifest::parse(&m.to_json()).expect("parses");
        parsed.verify(Some(&key)).expect("verifies");
        assert_eq!(parsed.verify(Some(&[2u8; 32])), Err(BaselineError::BadHmac));
        let mut tampered = parsed.clone();
        tampered.entries = with_size(&parsed.entries, 0, 99);
        assert_eq!(tampered.verify(Some(&key)), Err(BaselineError::BadHmac));
        let unsigned = sample(None);
        assert_eq!(
            unsigned.verify(Some(&key)),
            Err(BaselineError::UnsignedWithKey)
        );
        assert!(unsigned.verify(None).is_ok());
        assert_eq!(parsed.verify(None), Err(BaselineError::KeyMissing));
    }

    #[test]
    fn rejects_bad_forms() {
        assert!(matches!(
            Manifest::parse(b"{"),
            Err(BaselineError::Malformed(_))
        ));
        let json = String::from_utf8(sample(None).to_json()).unwrap_or_default();
        let extra = json.replacen("{\"created_at\"", "{\"x\":1,\"created_at\"", 1);
        assert!(matches!(
            Manifest::parse(extra.as_bytes()),
            Err(BaselineError::Malformed(_))
        ));
        let unsorted = json.replacen("\"/a\"", "\"/c\"", 1);
        assert!(matches!(
            Manifest::parse(unsorted.as_bytes()),
            Err(BaselineError::Field { .. })
        ));
        let relative = json.replacen("\"/a\"", "\"a\"", 1);
        assert!(matches!(
            Manifest::parse(relative.as_bytes()),
            Err(BaselineError::Field { .. })
        ));
    }
}
