//! What a check can find besides a digest: the markers a violation's `actual_hash` carries,
//! one enum, written as exactly the strings the Go service and earlier reports used. A new
//! kind is one arm here; every `match` on it then asks for its handling. And the `Actual` a
//! violation carries: a digest or one of these, typed inside and today's string outside.

use serde::{Deserialize, Serialize};

use crate::hexfmt::Sha256Digest;

/// A finding that is not a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// A watched file that no longer exists.
    Missing,
    /// A file under a model dir that the baseline (or the registry) does not list.
    Unregistered,
    /// A symlink where a regular file was expected (never followed).
    Symlink,
    /// A directory, fifo, socket or device where a regular file was expected.
    NotRegular,
    /// A file the hasher could not open or read (or that changed while it was read).
    Unreadable,
    /// A file whose size differs from the baseline: reported at once, unread.
    SizeChanged,
    /// A name that is not UTF-8 (its path is shown escaped).
    InvalidName,
    /// A path longer than the 4,096 bytes a report carries (shown truncated).
    PathTooLong,
    /// A directory nested deeper than the walk follows.
    TooDeep,
    /// A baselined path the policy no longer watches (a reload dropped it): a finding until a
    /// rebaseline, so narrowing the policy cannot hide a change.
    Removed,
    /// A model dir holding more entries than the walk may hold: not seen whole, not trusted.
    LimitExceeded,
    /// A registry manifest that is missing or not a regular file, unreadable, too large,
    /// invalid, of another version, or holds an entry that is not canonical or repeats a name.
    ManifestInvalid,
    /// An enrolled registry artifact that cannot be one (a symlink or hard link inside, too
    /// many entries, too large, changing while hashed…).
    ArtifactInvalid,
    /// A file larger than the policy's `max_file_size`: reported, never read.
    TooLarge,
    /// A watched file that is the hasher's HMAC key or service token: the same inode (a hard
    /// link, a bind mount) or the same bytes (a copy). Its digest is never published: SHA-256
    /// of a key longer than 64 bytes is an equivalent HMAC key.
    SecretFile,
    /// A sealed file whose fs-verity digest is not the one bound to the content the baseline
    /// names: other content (its tree or descriptor rewritten, or another sealed file put in
    /// its place), found without a read.
    SealChanged,
    /// A model file without fs-verity where the policy says `fsverity: require`.
    NotSealed,
    /// An OS image's release baseline naming another release than the one in force that
    /// cannot be believed (not on a read-only mount, not root's, the boot chain not verified
    /// in this boot, or a release older than the previous one): no release transition was
    /// made. Reported against the release file.
    ReleaseUnverified,
    /// A watched file on a filesystem whose server, not this kernel, decides what a read
    /// returns (FUSE, NFS, SMB, Ceph, 9p…): the hasher could be given other bytes than the
    /// model loader is. Never read; reported until the file is moved.
    UntrustedFilesystem,
}

impl Finding {
    /// Every finding.
    pub const ALL: [Finding; 19] = [
        Finding::Missing,
        Finding::Unregistered,
        Finding::Symlink,
        Finding::NotRegular,
        Finding::Unreadable,
        Finding::SizeChanged,
        Finding::InvalidName,
        Finding::PathTooLong,
        Finding::TooDeep,
        Finding::Removed,
        Finding::LimitExceeded,
        Finding::ManifestInvalid,
        Finding::ArtifactInvalid,
        Finding::TooLarge,
        Finding::SecretFile,
        Finding::SealChanged,
        Finding::NotSealed,
        Finding::ReleaseUnverified,
        Finding::UntrustedFilesystem,
    ];

    /// The marker as reports, the audit log and the Go service write it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Finding::Missing => "missing",
            Finding::Unregistered => "unregistered",
            Finding::Symlink => "symlink",
            Finding::NotRegular => "not_regular",
            Finding::Unreadable => "unreadable",
            Finding::SizeChanged => "size_changed",
            Finding::InvalidName => "invalid_name",
            Finding::PathTooLong => "path_too_long",
            Finding::TooDeep => "too_deep",
            Finding::Removed => "removed",
            Finding::LimitExceeded => "limit_exceeded",
            Finding::ManifestInvalid => "manifest_invalid",
            Finding::ArtifactInvalid => "artifact_invalid",
            Finding::TooLarge => "too_large",
            Finding::SecretFile => "secret_file",
            Finding::SealChanged => "seal_changed",
            Finding::NotSealed => "not_sealed",
            Finding::ReleaseUnverified => "release_unverified",
            Finding::UntrustedFilesystem => "untrusted_filesystem",
        }
    }

    /// The finding `marker` names, if any.
    pub fn parse(marker: &str) -> Option<Finding> {
        Finding::ALL.into_iter().find(|f| f.as_str() == marker)
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a check found of a file: its digest, or a finding in place of one. Written as the one
/// string reports have always carried in `actual_hash` (64 lower-case hex digits, or the
/// finding's marker), and read back from nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Actual {
    /// The file's SHA-256.
    Digest(Sha256Digest),
    /// What was found instead of a digest.
    Finding(Finding),
}

impl Actual {
    /// The actual `text` spells: a digest's 64 lower-case hex digits or a finding's marker.
    pub fn parse(text: &str) -> Option<Actual> {
        Sha256Digest::from_hex(text)
            .map(Actual::Digest)
            .or_else(|| Finding::parse(text).map(Actual::Finding))
    }

    /// The finding, when it is one.
    pub fn finding(self) -> Option<Finding> {
        match self {
            Actual::Finding(f) => Some(f),
            Actual::Digest(_) => None,
        }
    }
}

impl From<Finding> for Actual {
    fn from(f: Finding) -> Actual {
        Actual::Finding(f)
    }
}

impl From<Sha256Digest> for Actual {
    fn from(d: Sha256Digest) -> Actual {
        Actual::Digest(d)
    }
}

impl std::fmt::Display for Actual {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actual::Digest(d) => d.fmt(f),
            Actual::Finding(x) => f.write_str(x.as_str()),
        }
    }
}

// By hand, not derived: the string form is what every signed report, audit record and
// attestation already holds, in every format (the channel's postcard included).
impl Serialize for Actual {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Actual {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Actual;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a SHA-256 digest as 64 lower-case hex digits, or a finding")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Actual, E> {
                Actual::parse(v).ok_or_else(|| {
                    E::custom(format_args!(
                        "{v:?} is neither a SHA-256 hex digest nor a known finding"
                    ))
                })
            }
        }
        d.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_todays_strings_and_round_trip() {
        let today = [
            "missing",
            "unregistered",
            "symlink",
            "not_regular",
            "unreadable",
            "size_changed",
            "invalid_name",
            "path_too_long",
            "too_deep",
            "removed",
            "limit_exceeded",
            "manifest_invalid",
            "artifact_invalid",
            "too_large",
            "secret_file",
            "seal_changed",
            "not_sealed",
            "release_unverified",
            "untrusted_filesystem",
        ];
        let written: Vec<&str> = Finding::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(written, today);
        for f in Finding::ALL {
            assert_eq!(Finding::parse(f.as_str()), Some(f));
            let json = serde_json::to_string(&f).expect("serialises");
            assert_eq!(json, format!("\"{}\"", f.as_str()));
        }
        assert_eq!(
            Finding::parse("none"),
            None,
            "an expected_hash, not a finding"
        );
    }

    #[test]
    fn an_actual_is_written_and_read_as_todays_string() {
        let hex = "0123456789abcdef".repeat(4);
        let digest = Actual::Digest(Sha256Digest::from_hex(&hex).expect("digest"));
        for (actual, text) in [
            (digest, hex.as_str()),
            (Actual::Finding(Finding::Missing), "missing"),
            (Finding::UntrustedFilesystem.into(), "untrusted_filesystem"),
        ] {
            assert_eq!(actual.to_string(), text);
            let json = serde_json::to_string(&actual).expect("serialises");
            assert_eq!(json, format!("\"{text}\""));
            let back: Actual = serde_json::from_str(&json).expect("parses");
            assert_eq!(back, actual);
            let wire = postcard::to_allocvec(&actual).expect("serialises");
            assert_eq!(postcard::from_bytes::<Actual>(&wire).ok(), Some(actual));
        }
        // What validation refused as a string is now refused as it is read.
        for bad in ["none", "<script>", &hex.to_uppercase(), "", "Missing"] {
            assert_eq!(Actual::parse(bad), None, "{bad}");
            assert!(serde_json::from_str::<Actual>(&format!("\"{bad}\"")).is_err());
        }
    }
}
